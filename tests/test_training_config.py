"""TrainConfig and the same-run rule: options held per method, model and task; every option takes effect or is
rejected; one source of truth for defaults; one rule for resume, the demo's reuse and compare's reuse."""

import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.cli import main
from stabletrain.objectives import StabilityObjective, build_objective, method_options
from stabletrain.training import TrainConfig, differing_options, load_checkpoint, train
from stabletrain.training.config import LEGACY_OPTIONS

TINY = dict(data="digits", image_size=16, epochs=1, batch_size=256)


@pytest.mark.parametrize("options, message", [
    ({"method": "stability", "margin": 0.5}, "'margin' has no effect with method 'stability'"),
    ({"method": "plain", "margin": 0.5}, "'margin' has no effect with method 'plain'"),
    ({"method": "jsd", "alpha": 2.0}, "'alpha' has no effect with method 'jsd'"),
    ({"method": "trades", "alpha": 2.0}, "'alpha' has no effect with method 'trades'"),
    ({"method": "adversarial", "alpha": 2.0}, "'alpha' has no effect with method 'adversarial'"),
    ({"method": "consistency", "alpha": 2.0}, "'alpha' has no effect with method 'consistency'"),
    ({"method": "plain", "detach_clean": True}, "'detach_clean' has no effect with method 'plain'"),
    ({"method": "jsd", "bn_stats": "both"}, "'bn_stats' has no effect with method 'jsd'"),
    ({"method": "gaussian-noisy", "batching": "concat"}, "'batching' has no effect with method 'gaussian-noisy'"),
    ({"method": "plain", "sigma": 0.1}, "'sigma' has no effect with method 'plain'"),
    ({"method": "plain", "noise": "gaussian"}, "'noise' has no effect with task 'classification'"),
    ({"method": "plain", "epochz": 3}, "unknown config option 'epochz'"),
])
def test_options_that_would_be_ignored_are_rejected(options, message):
    with pytest.raises(StableTrainError, match=message):
        TrainConfig(**options).validated()


def test_width_is_rejected_for_a_model_that_has_none():
    from stabletrain.models import register_model
    from stabletrain.registry import MODELS

    def flat(in_channels=1, num_classes=10, mean=None, std=None, hidden=8):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    register_model("flat_for_test", flat)
    try:
        with pytest.raises(StableTrainError, match="'width' has no effect with model 'flat_for_test'.*hidden"):
            TrainConfig(model="flat_for_test", width=8).validated()
        assert TrainConfig(model="flat_for_test", hidden=4).validated().model_args == {"hidden": 4}
    finally:
        MODELS.unregister("flat_for_test")


def test_similarity_takes_margin_and_classification_does_not():
    config = TrainConfig(task="similarity", data="photos", method="plain", margin=0.5).validated()
    assert config.method_args == {"margin": 0.5}


@pytest.mark.parametrize("values, message", [
    ({"detach_clean": "no"}, "detach_clean .*must be true or false, got 'no'"),
    ({"epochs": "3"}, "epochs must be an integer"),
    ({"epochs": True}, "epochs must be an integer"),
    ({"lr": "0.1"}, "lr must be a number or null"),
    ({"compile": "yes"}, "compile must be true or false"),
    ({"alpha": "4"}, "alpha .*must be a finite number"),
    ({"method_args": ["alpha"]}, "method_args must be a mapping"),
])
def test_every_option_is_type_checked_where_configs_are_read(values, message, tmp_path):
    with pytest.raises(StableTrainError, match=message):
        TrainConfig.from_dict({"method": "stability", **values})
    # and through a YAML file on the command line: a quoted "no" is not a truthy string
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("method: stability\ndetach_clean: \"no\"\n")
    assert main(["train", "--config", str(yaml_file), "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_demo_and_compare_configs_are_type_checked():
    from stabletrain.compare import CompareConfig
    from stabletrain.demo import DemoConfig

    with pytest.raises(StableTrainError, match="quick must be true or false"):
        DemoConfig(quick="no").resolved()
    with pytest.raises(StableTrainError, match="seeds"):
        CompareConfig(seeds="0").resolved()
    with pytest.raises(StableTrainError, match="alpha.*no effect on the methods plain"):
        DemoConfig(methods=("plain", "gaussian"), alpha=2.0).resolved()


def test_demo_norm_reaches_every_model_and_its_checkpoint_config():
    from stabletrain.demo import DemoConfig

    config = DemoConfig(methods=("plain", "stability"), norm="group", quick=True).resolved()
    for method in config.methods:
        assert config.train_config(method).model_args["norm"] == "group"
    similarity = DemoConfig(task="similarity", methods=("plain",), norm="group", quick=True).resolved()
    assert similarity.train_config("plain").model_args["norm"] == "group"
    assert DemoConfig(methods=("plain",)).resolved().train_config("plain").model_args.get("norm", "batch") == "batch"
    from stabletrain.cli import main

    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line error
        main(["demo", "--norm", "layer"])
    assert exit_info.value.code == 2


def test_defaults_have_one_source_of_truth():
    resolved = TrainConfig(method="stability").validated().method_args
    objective = StabilityObjective()
    built = build_objective("stability").hyperparameters()
    assert (resolved["alpha"], resolved["sigma"]) == (objective.alpha, objective.perturbation.sigma) == \
        (built["alpha"], built["sigma"]) == (method_options("stability")["alpha"], method_options("stability")["sigma"])
    # each method keeps its own documented defaults: build_objective no longer forces sigma = 0.04 on them
    assert build_objective("jsd-gaussian").hyperparameters()["sigma"] == 0.1
    assert build_objective("jsd").hyperparameters()["views"] == "augmix"
    assert build_objective("consistency").hyperparameters()["sigma"] == 0.25
    assert TrainConfig(method="consistency").validated().method_args["sigma"] == 0.25
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    assert f"α = {resolved['alpha']:g} and σ = {resolved['sigma']:g}" in readme


def test_misspelled_objective_options_are_errors():
    with pytest.raises(StableTrainError, match="unknown option 'alhpa' for method 'stability'"):
        build_objective("stability", alhpa=100)
    with pytest.raises(StableTrainError, match="unknown option 'alpha' for method 'jsd'"):
        build_objective("jsd", alpha=1.0)


def test_every_legacy_flat_option_is_known_somewhere():
    """Old checkpoints' flat options all map to a group (or are dropped only when they had no effect)."""
    config = TrainConfig.from_stored({"method": "stability", "alpha": 2.0, "sigma": 0.1, "width": 8,
                                      "jsd_lambda": 3.0, "margin": 0.7, "noise": "auto", "norm": "group"})
    assert config.method_args["alpha"] == 2.0 and config.model_args == {"width": 8, "dropout": 0.0, "norm": "group"}
    assert "jsd_lambda" not in config.method_args and "margin" not in config.method_args
    assert set(LEGACY_OPTIONS) >= {"alpha", "sigma", "width", "norm", "noise", "jet_input"}


def test_old_checkpoints_still_load_and_resume(tmp_path):
    import shutil
    from pathlib import Path

    from stabletrain.training import load_model

    legacy = Path(__file__).parent / "data" / "legacy-0.1-jsd-small_cnn.pt"
    model, checkpoint = load_model(legacy)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)
    run = tmp_path / "old"
    run.mkdir()
    shutil.copy(legacy, run / "checkpoint.pt")
    # the stored flat config (jsd with sigma 0.15 and lambda 10) is the run's config
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["method_args"] == {"sigma": 0.15, "jsd_lambda": 10.0}
    # jsd took Gaussian-noise views then: the run resumes as jsd-gaussian, not with AugMix views
    assert resumed["config"]["method"] == "jsd-gaussian" and resumed["objective"]["views"] == "gaussian"


def test_resume_starts_from_the_stored_config(tmp_path, capsys):
    """Issue 11, item 8: ``train --out X --resume --epochs N`` failed for runs made with non-default options."""
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--image-size", "16", "--width", "4", "--batch-size", "128",
                 "--seed", "3", "--method", "stability", "--alpha", "2", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    stored = load_checkpoint(out / "checkpoint.pt")
    assert stored["epoch"] == 2 and stored["config"]["seed"] == 3 and stored["config"]["batch_size"] == 128
    assert stored["config"]["model_args"]["width"] == 4 and stored["config"]["method_args"]["alpha"] == 2.0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--alpha", "1", "--quiet"]) == 2
    assert "alpha" in capsys.readouterr().err


def test_batching_counts_when_runs_are_compared():
    stored = TrainConfig(method="stability", batching="separate").validated().to_dict()
    assert differing_options(stored, TrainConfig(method="stability", batching="concat").validated()) == ["batching"]
    assert differing_options(stored, TrainConfig(method="stability", batching="separate", device="cpu",
                                                 workers=1).validated()) == []


def test_one_rule_for_resume_demo_reuse_and_compare_reuse(tmp_path):
    """A stored run that differs only in batching is refused by all three, a device change by none."""
    from stabletrain.compare import CompareConfig, run_compare
    from stabletrain.data import load_data
    from stabletrain.demo import train_or_reuse

    base = dict(**TINY, method="stability", alpha=1.0, sigma=0.1, width=4, norm="group")
    run = tmp_path / "compare" / "models" / "stability-s0"
    first = train(TrainConfig(**base, batching="separate"), run, progress=False)
    other = TrainConfig(**base, batching="concat").validated()
    with pytest.raises(StableTrainError, match="batching"):
        train(other, run, resume=True, progress=False)
    with pytest.raises(StableTrainError, match="batching"):
        train_or_reuse(other, run, first.data, progress=False)
    compare = CompareConfig(data="digits", methods=["stability"], seeds=[0],
                            train={**TINY, "width": 4, "norm": "group", "alpha": 1.0, "sigma": 0.1,
                                   "batching": "concat"},
                            evaluation={"distortions": ["jpeg-50"], "epsilons": [0.0], "attack_steps": 1,
                                        "attack_examples": 8, "smoothing": False})
    with pytest.raises(StableTrainError, match="batching"):
        run_compare(compare, tmp_path / "compare", progress=False)
    same = TrainConfig(**base, batching="separate", device="cpu").validated()
    model, _ = train_or_reuse(same, run, load_data("digits", image_size=16), progress=False)
    assert isinstance(model, nn.Module)


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    from stabletrain.locking import output_lock

    out = tmp_path / "run"
    with output_lock(out, what="train"):
        import subprocess
        import sys

        run = subprocess.run([sys.executable, "-m", "stabletrain", "train", "--data", "digits", "--image-size", "16",
                              "--width", "4", "--epochs", "1", "--method", "plain", "--out", str(out)],
                             capture_output=True, text=True)
    assert run.returncode == 2 and "in use by another stabletrain run" in run.stderr
    assert "Traceback" not in run.stderr and not (out / "checkpoint.pt").exists()


def test_sigma_above_one_pixel_unit_is_rejected(tmp_path, capsys):
    assert main(["train", "--sigma", "5", "--out", str(tmp_path / "run")]) == 2
    assert "sigma" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_typo_inside_an_options_group_names_its_factory():
    with pytest.raises(StableTrainError, match="unknown option 'widht' for model 'small_cnn'; its options: width"):
        TrainConfig(model_args={"widht": 3}).validated()


def test_a_flat_option_no_registered_factory_knows_goes_to_a_model_with_kwargs():
    config = TrainConfig(model="timm:test_resnet", method="plain", drop_rate=0.1).validated()
    assert config.model_args == {"drop_rate": 0.1}
    with pytest.raises(StableTrainError, match="option 'width' has no effect with model 'timm:test_resnet'"):
        TrainConfig(model="timm:test_resnet", width=8).validated()  # small_cnn's option: not passed to timm
    with pytest.raises(StableTrainError, match="option 'alpha' has no effect with method 'plain'"):
        TrainConfig(model="timm:test_resnet", method="plain", alpha=1.0).validated()
    with pytest.raises(StableTrainError, match="unknown config option 'drop_rate'"):
        TrainConfig(model="small_cnn", drop_rate=0.1).validated()


def test_default_epochs_are_the_measured_converged_budgets():
    from stabletrain.training.config import CONVERGED_EPOCHS, DEFAULT_EPOCHS

    assert TrainConfig().validated().epochs == CONVERGED_EPOCHS[("classification", "digits", "batch")] == 12
    assert TrainConfig(norm="group").validated().epochs == 30  # GroupNorm needs longer to converge on digits
    assert TrainConfig(data="/somewhere/my-images", stream=False).epochs is None  # resolved when validated
    assert TrainConfig(norm="group", epochs=5).validated().epochs == 5  # a given budget always wins
    assert TrainConfig(data="photos").validated().epochs == 40
    assert TrainConfig(data="photos", norm="group").validated().epochs == 40  # unmeasured norm: BatchNorm's budget
    assert DEFAULT_EPOCHS == 12
