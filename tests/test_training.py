import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.objectives import Objective, register_objective
from stabletrain.training import TrainConfig, load_checkpoint, load_model, train


def small(**overrides):
    base = dict(data="digits", image_size=16, width=8, epochs=3, batch_size=128, method="stability")
    base.update(overrides)
    if base["method"] == "stability":  # options of stability training only: plain takes none
        base.setdefault("alpha", 1.0)
        base.setdefault("sigma", 0.1)
    return TrainConfig(**base)


class Interrupt(Exception):
    pass


def test_training_learns_and_writes_artifacts(tmp_path, digits):
    result = train(small(epochs=2), tmp_path / "run", progress=False)
    assert result.history[-1]["test_accuracy"] > 0.5
    for name in ("checkpoint.pt", "history.json", "history.csv", "config.yaml"):
        assert (tmp_path / "run" / name).exists()
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["complete"] and checkpoint["epoch"] == 2
    assert set(result.history[-1]) >= {"loss", "task_loss", "stability_loss", "test_accuracy"}


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    straight = train(small(), tmp_path / "straight", progress=False)

    def stop_after_second_epoch(line):
        if "epoch 2/3" in line:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(small(), tmp_path / "interrupted", progress=False, log=stop_after_second_epoch)
    assert load_checkpoint(tmp_path / "interrupted" / "checkpoint.pt")["epoch"] == 2
    resumed = train(small(), tmp_path / "interrupted", resume=True, progress=False)
    assert resumed.resumed_from_epoch == 2
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_existing_run_is_never_overwritten_without_consent(tmp_path):
    train(small(epochs=1, method="plain"), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(StableTrainError, match="already holds a checkpoint"):
        train(small(epochs=1, method="plain"), tmp_path / "run", progress=False)
    with pytest.raises(StableTrainError, match="differ from the stored run"):
        train(small(epochs=1, method="plain", lr=0.1), tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_init_fine_tunes_from_a_trained_model(tmp_path):
    base = train(small(epochs=2, method="plain"), tmp_path / "base", progress=False)
    tuned = train(small(epochs=1, method="stability", lr=1e-9), tmp_path / "tuned",
                  init=tmp_path / "base" / "checkpoint.pt", progress=False)
    for key, value in base.model.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(tuned.model.state_dict()[key], value, atol=1e-6, rtol=0)
    assert tuned.history[-1]["test_accuracy"] >= base.history[-1]["test_accuracy"] - 0.05
    with pytest.raises(StableTrainError, match="does not fit"):
        train(small(epochs=1, width=16), tmp_path / "bad", init=tmp_path / "base" / "checkpoint.pt", progress=False)


class NaNAtStep(Objective):
    method = "nan-test"
    calls = 0

    def forward(self, model, x, y, generator=None):
        NaNAtStep.calls += 1
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        if NaNAtStep.calls > 15:  # the second epoch of 12 steps
            loss = loss * float("nan")
        return {"loss": loss, "output": out, "task_loss": loss.detach()}


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    register_objective("nan-test", lambda **_: NaNAtStep())
    NaNAtStep.calls = 0
    with pytest.raises(StableTrainError, match=r"loss became nan at epoch 2, step 16"):
        train(small(method="nan-test", epochs=3), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and not checkpoint["complete"]
    model, _ = load_model(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_corrupt_and_foreign_checkpoints_get_clear_errors(tmp_path):
    train(small(epochs=1, method="plain"), tmp_path / "run", progress=False)
    data = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(StableTrainError, match="cannot read checkpoint"):
        load_model(tmp_path / "truncated.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(StableTrainError, match="not a stabletrain checkpoint"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(StableTrainError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("overrides, message", [
    ({"sigma": -0.1}, "sigma"),
    ({"alpha": float("nan")}, "alpha"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 1}, "batch_size"),
    ({"method": "magic"}, "unknown method"),
    ({"device": "tpu:7"}, "device"),
])
def test_bad_config_values(overrides, message, tmp_path):
    with pytest.raises(StableTrainError, match=message):
        train(small(**overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(StableTrainError, match="unknown config option"):
        TrainConfig.from_dict({"epochz": 3})


def _straight_killed_resumed(tmp_path, args, ready, settle=0.0):
    """Run ``args`` uninterrupted, and again with a SIGKILL once ``ready(out)`` holds, then ``--resume`` it."""
    import os
    import signal
    import subprocess
    import time

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(args + ["--out", str(straight)], check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not ready(killed):
        time.sleep(0.02)
    time.sleep(settle)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    stored = load_checkpoint(killed / "checkpoint.pt")  # whatever moment the kill hit, a whole checkpoint
    subprocess.run(args + ["--out", str(killed), "--resume"], check=True, capture_output=True, timeout=300)
    a, _ = load_model(straight)
    b, _ = load_model(killed)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    return straight, killed, stored


_SIGKILL_ARGS = ["-m", "stabletrain", "train", "--data", "digits", "--image-size", "16", "--width", "8",
                 "--batch-size", "32", "--method", "stability", "--quiet"]


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    import json
    import sys

    def one_epoch_done(out):
        history = out / "history.json"
        return history.exists() and len(json.loads(history.read_text() or "[]")) >= 1

    _, _, stored = _straight_killed_resumed(tmp_path, [sys.executable, *_SIGKILL_ARGS, "--epochs", "3"],
                                            one_epoch_done, settle=0.3)  # into the second epoch
    assert stored["epoch"] >= 1


def test_sigkill_after_a_mid_epoch_checkpoint_then_resume_gives_identical_weights(tmp_path):
    import json
    import sys

    def well_into_second_epoch(out):
        try:
            position = load_checkpoint(out / "checkpoint.pt")
        except StableTrainError:  # not written yet
            return False
        return position["epoch"] == 1 and position["step"] >= 10

    straight, killed, stored = _straight_killed_resumed(
        tmp_path, [sys.executable, *_SIGKILL_ARGS, "--epochs", "2", "--checkpoint-every", "5"], well_into_second_epoch)
    assert stored["epoch"] == 1 and stored["step"] > 0, "the kill should land mid-epoch, after a step checkpoint"
    assert set(stored["progress"]) == {"noise", "totals", "correct", "seen", "layout"} and "torch" in stored["rng"]
    losses = [[row["loss"] for row in json.loads((run / "history.json").read_text())] for run in (straight, killed)]
    assert losses[0] == losses[1]  # the epoch's running sums were checkpointed too


def test_nan_loss_keeps_the_last_step_checkpoint(tmp_path):
    register_objective("nan-test", lambda **_: NaNAtStep())
    NaNAtStep.calls = 0
    # 12 steps per epoch, a checkpoint every 5 steps: the last good one is step 15 = step 3 of epoch 2
    with pytest.raises(StableTrainError, match=r"step 16; .*last good checkpoint \(epoch 1, step 3 of epoch 2\)"):
        train(small(method="nan-test", epochs=3, checkpoint_every=5), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3) and not checkpoint["complete"]
    model, _ = load_model(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_trains_and_keeps_float32_weights(tmp_path):
    result = train(small(epochs=1, amp="bf16", norm="group"), tmp_path / "run", progress=False)
    assert result.history[-1]["test_accuracy"] > 0.3  # 10 classes: well above chance after one epoch
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    model, checkpoint = load_model(tmp_path / "run")
    assert checkpoint["config"]["amp"] == "bf16" and checkpoint["model"]["kwargs"]["norm"] == "group"


@pytest.mark.parametrize("overrides, message", [
    ({"amp": "fp8"}, "amp"),
    ({"norm": "layer"}, "norm"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
    ({"workers": -2}, "workers"),
])
def test_bad_scale_options(overrides, message, tmp_path):
    with pytest.raises(StableTrainError, match=message):
        train(small(**overrides), tmp_path / "run", progress=False)


def test_dataloader_workers_give_the_same_weights(tmp_path):
    direct = train(small(epochs=1, method="plain"), tmp_path / "direct", progress=False)
    loaded = train(small(epochs=1, method="plain", workers=1), tmp_path / "loaded", progress=False)
    for key, value in direct.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
