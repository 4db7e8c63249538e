"""Training on WebDataset tar shards: fixed-length epochs, equal steps on every rank, exact mid-epoch resume."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stabletrain.training.loop as loop
from stabletrain.checks import StableTrainError
from stabletrain.cli import main
from stabletrain.training import TrainConfig, load_checkpoint, train

webdataset = pytest.importorskip("webdataset")


def _png(label: int, rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 90, (20, 18, 3)).astype(np.uint8)
    pixels[..., label] += 160  # a learnable colour cue
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(root: Path, train_sizes: tuple[int, ...] = (8, 8, 8), test_size: int = 9) -> Path:
    """``root/train/s-*.tar`` of the given sizes and one ``root/val/s-000.tar``; 3 classes."""
    rng = np.random.default_rng(0)
    n = 0
    for split, sizes in (("train", train_sizes), ("val", (test_size,))):
        (root / split).mkdir(parents=True)
        for s, size in enumerate(sizes):
            with webdataset.TarWriter(str(root / split / f"s-{s:03d}.tar")) as sink:
                for _ in range(size):
                    sink.write({"__key__": f"k{n:05d}", "png": _png(n % 3, rng), "cls": str(n % 3)})
                    n += 1
    return root


def config(root: Path, **overrides) -> TrainConfig:
    base = dict(data=str(root), stream=True, image_size=16, width=4, epochs=2, batch_size=4, method="stability",
                alpha=1.0, sigma=0.1)
    return TrainConfig(**{**base, **overrides})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_training_on_shards_takes_the_planned_steps_and_tests_on_every_test_image(tmp_path):
    root = write_shards(tmp_path / "shards")
    result = train(config(root), tmp_path / "run", progress=False)
    stored = load_checkpoint(result.checkpoint)
    assert stored["data"]["train_size"] == 24 and stored["data"]["format"] == "webdataset shards"
    assert len(result.history) == 2
    for row in result.history:
        assert round(row["train_accuracy"] * 24, 6) % 1 == 0  # 24 // 4 = 6 whole batches per epoch
        assert round(row["test_accuracy"] * 9, 6) % 1 == 0  # all 9 test images, not one rank's share
    assert stored["scheduler"]["last_epoch"] == 12 and result.history[-1]["lr"] == 0.0  # 2 x 6 cosine steps


def test_shard_training_is_the_same_in_process_and_with_one_worker(tmp_path):
    root = write_shards(tmp_path / "shards")
    a = train(config(root), tmp_path / "a", progress=False)
    b = train(config(root, workers=1), tmp_path / "b", progress=False)
    assert same_weights(a.model, b.model) and a.history[-1]["loss"] == b.history[-1]["loss"]


class Interrupt(Exception):
    pass


def _interrupt_after_saves(monkeypatch, count: int) -> None:
    real = loop.atomic_torch_save
    calls = []

    def save(obj, path):
        real(obj, path)
        calls.append(1)
        if len(calls) == count:
            raise Interrupt

    monkeypatch.setattr(loop, "atomic_torch_save", save)


def test_an_interrupted_epoch_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """Two workers, uneven shards: the resumed workers must play the batches the whole epoch gave them."""
    root = write_shards(tmp_path / "shards", train_sizes=(9, 7, 5))
    settings = dict(workers=2, checkpoint_every=2)
    straight = train(config(root, **settings), tmp_path / "straight", progress=False)
    with monkeypatch.context() as patch:
        _interrupt_after_saves(patch, 5)  # 5 steps an epoch: saves at steps 2, 4, the end of epoch 1, 6, 8
        with pytest.raises(Interrupt):
            train(config(root, **settings), tmp_path / "cut", progress=False)
    stored = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert stored["epoch"] == 1 and stored["step"] == 3 and stored["progress"]["layout"]["workers"] == 2
    resumed = train(config(root, **settings), tmp_path / "cut", resume=True, progress=False)
    assert same_weights(straight.model, resumed.model)
    assert [row["loss"] for row in resumed.history] == [row["loss"] for row in straight.history]


def test_a_mid_epoch_resume_with_other_workers_is_refused(tmp_path, monkeypatch):
    root = write_shards(tmp_path / "shards")
    with monkeypatch.context() as patch:
        _interrupt_after_saves(patch, 1)
        with pytest.raises(Interrupt):
            train(config(root, workers=2, checkpoint_every=2), tmp_path / "cut", progress=False)
    with pytest.raises(StableTrainError, match=r"in the middle of epoch 1 with 1 worker\(s\).*dealt to 2 worker"):
        train(config(root, workers=1, checkpoint_every=2), tmp_path / "cut", resume=True, progress=False)


def test_the_cli_trains_on_shards_and_warns_when_they_split_unevenly(tmp_path, capsys):
    root = write_shards(tmp_path / "shards", train_sizes=(9, 7, 5))
    code = main(["train", "--data", str(root), "--stream", "--image-size", "16", "--width", "4", "--epochs", "1",
                 "--batch-size", "4", "--workers", "2", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "stabletrain: warning: the training shards do not split into equal whole batches" in err
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["epoch"] == 1


def test_two_ranks_with_unequal_shards_take_equal_steps(tmp_path):
    """Rank 0 holds 14 samples and rank 1 holds 5 (shards 9, 5, 5 in the epoch's order): without fixed-length
    epochs one rank would wait for the other's gradients for ever."""
    root = write_shards(tmp_path / "shards", train_sizes=(9, 5, 5))
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stabletrain", "train",
            "--data", str(root), "--stream", "--image-size", "16", "--width", "4", "--epochs", "2", "--batch-size",
            "4", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    env = {**__import__("os").environ, "PYTHONPATH": __import__("os").pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    stored = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert [row["epoch"] for row in history] == [1, 2] and stored["world_size"] == 2
    assert stored["scheduler"]["last_epoch"] == 2 * (19 // 4)
    assert all(round(row["test_accuracy"] * 9, 6) % 1 == 0 for row in history)
