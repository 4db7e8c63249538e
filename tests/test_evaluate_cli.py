"""``stabletrain evaluate``: flags that would be ignored, the baseline's checks, attack rows and the report."""

import csv
import json

import numpy as np
import pytest
import torch

from stabletrain.cli import main

TINY = ["--data", "digits", "--image-size", "16", "--width", "8", "--batch-size", "128", "--epochs", "1", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny digits classifier, and baselines that do not fit its data (other image size, other classes)."""
    root = tmp_path_factory.mktemp("evaluate-cli")
    assert main(["train", *TINY, "--method", "plain", "--out", str(root / "run")]) == 0
    other_size = [a if a != "16" else "24" for a in TINY]
    assert main(["train", *other_size, "--method", "plain", "--out", str(root / "size24")]) == 0
    size32 = [a if a != "16" else "32" for a in TINY]
    assert main(["train", *size32, "--method", "plain", "--out", str(root / "size32")]) == 0
    from stabletrain.data import load_digits

    digits = load_digits(16)
    np.savez(root / "binary.npz", x=digits.train.x.numpy(), y=(digits.train.y % 2).numpy())
    binary = ["--data", str(root / "binary.npz")] + TINY[2:]
    assert main(["train", *binary, "--method", "plain", "--out", str(root / "binary")]) == 0
    return root


@pytest.mark.parametrize("flags, message", [
    (["--epsilons", "0,0.1"], "--epsilons has no effect without the adversarial suite"),
    (["--suite", "paper,common", "--attack", "fgsm", "--attack-steps", "3"],
     "--attack, --attack-steps have no effect without the adversarial suite"),
    (["--attack-examples", "5"], "--attack-examples has no effect without the adversarial suite"),
    (["--suite", "adversarial", "--distortions", "jpeg-50"], "--distortions has no effect without the paper suite"),
    (["--corruption-set", "imagenet"], "--corruption-set has no effect without the common suite"),
    (["--layer-resolution", "reference"], "--layer-resolution has no effect without the common suite"),
    (["--chunk-size", "64"], "--chunk-size has no effect on classification"),
    (["--suite", "adversarial", "--attack", "fgsm", "--attack-steps", "3"],
     "--attack-steps has no effect with --attack fgsm"),
    (["--smoothing-amp", "bf16", "--smoothing-channels-last"],
     "--smoothing-amp, --smoothing-channels-last have no effect without the smoothing suite"),
])
def test_a_flag_without_effect_is_an_error(runs, capsys, flags, message):
    out = runs / "ignored"
    code, _, err = run(capsys, "evaluate", runs / "run", *flags, "--quiet", "--out", out)
    assert code == 2 and message in err
    assert err.startswith("stabletrain: error: ") and err.count("\n") == 1
    assert not out.exists()


def test_flags_take_effect_where_they_apply(runs, capsys):
    out = runs / "fgsm"
    code, stdout, err = run(capsys, "evaluate", runs / "run", "--suite", "paper,adversarial", "--distortions",
                            "jpeg-50", "--attack", "fgsm", "--epsilons", "0,0.05", "--attack-examples", "30",
                            "--quiet", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "model_plain.json").read_text())
    assert {k: summary["attack"][k] for k in ("name", "steps", "examples")} == {"name": "fgsm", "steps": None,
                                                                               "examples": 30}
    assert all(v <= summary["attack"]["clean_accuracy"] for v in summary["robust_accuracy"].values())
    assert list(summary["robust_accuracy"]) == ["0", "0.05"] and list(summary["paper"]) == ["jpeg-50"]


def test_the_certificate_speed_flags_are_recorded_and_keep_the_certificate(runs, capsys):
    summaries = {}
    for label, flags in (("float32", []), ("fast", ["--smoothing-amp", "bf16", "--smoothing-channels-last"])):
        out = runs / f"smoothing-{label}"
        code, _, err = run(capsys, "evaluate", runs / "run", "--suite", "smoothing", "--smoothing-n", "200",
                           "--smoothing-examples", "12", *flags, "--quiet", "--out", out)
        assert code == 0, err
        summaries[label] = json.loads((out / "model_plain.json").read_text())
    assert summaries["fast"]["settings"]["smoothing"].endswith(", bf16, channels-last")
    assert not summaries["float32"]["settings"]["smoothing"].endswith("channels-last")
    # the same noise (per-image streams) through bfloat16: the certified accuracies agree to within a few images
    plain, fast = (summaries[k]["smoothing"]["certified_accuracy"] for k in ("float32", "fast"))
    assert plain.keys() == fast.keys() and any(v > 0 for v in plain.values())
    assert all(abs(plain[r] - fast[r]) <= 2 / 12 + 1e-9 for r in plain)


def test_the_layer_resolution_takes_effect_below_the_reference_side_and_is_an_error_above(runs, capsys):
    results = {}
    for setting in ("default", "reference"):
        out = runs / f"layers-{setting}"
        flags = [] if setting == "default" else ["--layer-resolution", setting]
        code, _, err = run(capsys, "evaluate", runs / "run", "--suite", "common", *flags, "--quiet", "--out", out)
        assert code == 0, err
        summary = json.loads((out / "model_plain.json").read_text())
        assert summary["corruption_set"] == "cifar10"  # 16-px digits: below CIFAR-10-C's 32-px side
        assert summary["settings"]["corruption layers"] == ("native" if setting == "default" else "reference") + " grid"
        results[setting] = summary["corruptions"]
    layered = {"snow", "spatter", "elastic_transform"}
    assert results["default"].keys() == results["reference"].keys() and layered <= results["default"].keys()
    for name in results["default"]:  # only the three layered corruptions change, and at least one of them does
        if name not in layered:
            assert results["default"][name] == results["reference"][name], name
    assert any(results["default"][name] != results["reference"][name] for name in layered)
    # from the reference side up both settings are the same computation: the flag is rejected
    code, _, err = run(capsys, "evaluate", runs / "size32", "--suite", "common", "--layer-resolution", "reference",
                       "--quiet", "--out", runs / "layers-32")
    assert code == 2 and "--layer-resolution has no effect on 32×32 px images with the cifar10 corruptions" in err
    assert err.count("\n") == 1 and not (runs / "layers-32").exists()


@pytest.mark.parametrize("flags", [["--suite", "common"], ["--attack", "fgsm"], ["--corruption-set", "cifar10"],
                                   ["--layer-resolution", "native"]])
def test_classification_flags_are_errors_with_task_similarity(runs, capsys, flags):
    code, _, err = run(capsys, "evaluate", runs / "run", "--task", "similarity", *flags, "--quiet",
                       "--out", runs / "similarity")
    assert code == 2 and f"{flags[0]} has no effect with --task similarity" in err and err.count("\n") == 1
    assert not (runs / "similarity").exists()


@pytest.mark.parametrize("baseline, problem", [("size24", "24×24 px images"), ("binary", "2 classes")])
def test_a_baseline_that_does_not_fit_the_data_is_an_error(runs, capsys, baseline, problem):
    out = runs / f"with-{baseline}"
    code, _, err = run(capsys, "evaluate", runs / "run", "--baseline", runs / baseline, "--distortions", "jpeg-50",
                       "--quiet", "--out", out)
    assert code == 2 and err.startswith(f"stabletrain: error: --baseline {runs / baseline} expects {problem}")
    assert err.count("\n") == 1 and not out.exists()


def test_attack_rows_have_their_own_columns_and_count_the_images_attacked(runs, capsys):
    out = runs / "attacked"
    code, stdout, err = run(capsys, "evaluate", runs / "run", "--suite", "adversarial", "--epsilons", "0,0.03",
                            "--attack-steps", "2", "--attack-examples", "100000", "--quiet", "--out", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    tested = results["settings"]["test images"]
    assert results["settings"]["attack"].startswith(f"pgd, 2 steps, epsilons 0, 0.03 on {tested} images")
    summary = json.loads((out / "model_plain.json").read_text())
    assert summary["attack"]["examples"] == tested
    with open(out / "results.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["family"] == "pgd"]
    assert len(rows) == 2
    for row in rows:
        assert row["accuracy"] == row["flip_rate"] == row["mean_kl"] == ""
        assert int(row["n"]) == tested and row["attack"] == "pgd" and row["steps"] == "2"
        assert 0 <= float(row["robust_accuracy"]) <= summary["clean_accuracy"]
        assert 0 <= float(row["attack_success_rate"]) <= 1
    attacks = results["models"]["plain"]["attacks"]
    assert [a["epsilon"] for a in attacks.values()] == [0.0, 0.03]
    report = (out / "report.md").read_text()
    assert "## Robust accuracy (%) under attack" in report and f"{tested} attacked images" in report
    assert "robust accuracy (%) under pgd" in stdout


def test_a_degenerate_model_is_flagged(runs, capsys):
    checkpoint = torch.load(runs / "run" / "checkpoint.pt", weights_only=True)
    state = checkpoint["state_dict"]
    head = [k for k in state if k.startswith("head") and k.endswith("weight")][-1]
    state[head].zero_()
    bias = head[:-len("weight")] + "bias"
    state[bias].zero_()
    state[bias][3] = 5.0  # always class 3
    (runs / "constant").mkdir()
    torch.save(checkpoint, runs / "constant" / "checkpoint.pt")
    out = runs / "constant-eval"
    code, _, err = run(capsys, "evaluate", runs / "constant", "--distortions", "jpeg-50", "--quiet", "--out", out)
    assert code == 0
    expected = "plain: predicts class 3 for 100 % of clean test images"
    assert expected in err
    results = json.loads((out / "results.json").read_text())
    assert any(expected in line for line in results["warnings"]) and any(expected in line for line in results["summary"])
    assert expected in (out / "report.md").read_text()
    # a working model is not flagged
    code, _, err = run(capsys, "evaluate", runs / "run", "--distortions", "jpeg-50", "--quiet", "--out",
                       runs / "fine")
    assert code == 0 and "warning" not in err
    assert json.loads((runs / "fine" / "results.json").read_text())["warnings"] == []


def _metrics(path):
    with open(path) as handle:
        return {(r["model"], r["distortion"]): tuple(float(r[k]) for k in ("accuracy", "mean_kl", "flip_rate"))
                for r in csv.DictReader(handle)}


def test_bn_reestimate_changes_the_results_only_through_the_batchnorm_statistics(runs, capsys):
    from stabletrain.data import load_data
    from stabletrain.evaluation.bn_adapt import reestimate_batchnorm
    from stabletrain.training import load_model

    flags = ["--distortions", "jpeg-50,gaussian-0.1", "--batch-size", "32", "--quiet"]
    code, _, err = run(capsys, "evaluate", runs / "run", "--bn-reestimate", "64", *flags, "--out", runs / "bn")
    assert code == 0 and "warning" not in err, err
    code, _, err = run(capsys, "evaluate", runs / "run", *flags, "--out", runs / "no-bn")
    assert code == 0, err
    # the same statistics computed by hand on the first 64 training images, stored in a checkpoint
    model, checkpoint = load_model(runs / "run" / "checkpoint.pt", device="cpu")
    config = checkpoint["config"]
    data = load_data(config["data"], image_size=config["image_size"], split_seed=config.get("split_seed", 0),
                     test_fraction=config.get("test_fraction", 0.2))
    adapted = reestimate_batchnorm(model, data.train, examples=64, batch_size=32)
    state = checkpoint["state_dict"]
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, state[k])}
    assert changed and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    state.update(adapted.state_dict())
    (runs / "by-hand").mkdir()
    torch.save(checkpoint, runs / "by-hand" / "checkpoint.pt")
    code, _, err = run(capsys, "evaluate", runs / "by-hand", *flags, "--out", runs / "by-hand-eval")
    assert code == 0, err

    reestimated, plain = _metrics(runs / "bn" / "results.csv"), _metrics(runs / "no-bn" / "results.csv")
    assert reestimated == _metrics(runs / "by-hand-eval" / "results.csv")
    assert reestimated.keys() == plain.keys() and reestimated != plain
    results = json.loads((runs / "bn" / "results.json").read_text())
    recorded = {"images": 64, "layers": 3, "requested": 64}
    assert results["suite_summaries"]["plain"]["bn_reestimate"] == recorded
    assert json.loads((runs / "bn" / "model_plain.json").read_text())["bn_reestimate"] == recorded
    line = "running statistics recomputed on 64 clean training images (plain: 3 layers)"
    assert results["settings"]["BatchNorm re-estimation"] == line
    assert f"| BatchNorm re-estimation | {line} |" in (runs / "bn" / "report.md").read_text()
    without = json.loads((runs / "no-bn" / "results.json").read_text())
    assert "BatchNorm re-estimation" not in without["settings"]
    assert "bn_reestimate" not in without["suite_summaries"]["plain"]


@pytest.mark.parametrize("flags, message", [
    (["--bn-reestimate", "0"], "--bn-reestimate must be a positive integer (training images), got '0'"),
    (["--bn-reestimate", "-5"], "--bn-reestimate must be a positive integer (training images), got '-5'"),
    (["--bn-reestimate", "ten"], "--bn-reestimate must be a positive integer (training images), got 'ten'"),
    (["--bn-reestimate", "2.5"], "--bn-reestimate must be a positive integer (training images), got '2.5'"),
    (["--bn-reestimate", "8", "--split", "all"], "--bn-reestimate re-estimates on training images, but --split all"),
    (["--bn-reestimate", "8", "--task", "similarity"], "--bn-reestimate is not supported with --task similarity"),
])
def test_a_bad_bn_reestimate_is_one_error_line(runs, capsys, flags, message):
    out = runs / "bad-bn"
    code, _, err = run(capsys, "evaluate", runs / "run", *flags, "--distortions", "jpeg-50", "--quiet", "--out", out)
    assert code == 2 and err.startswith(f"stabletrain: error: {message}")
    assert err.count("\n") == 1 and not out.exists()


def test_bn_reestimate_warns_about_a_model_without_batchnorm(runs, capsys):
    spec = ["--model", "small_cnn", "--model-args", "norm=group", "width=4", "--data", "digits", "--image-size",
            "16", "--mean", "0.5", "--std", "0.25", "--distortions", "jpeg-50", "--quiet"]
    code, _, err = run(capsys, "evaluate", *spec, "--bn-reestimate", "16", "--out", runs / "spec-all")
    assert code == 2 and err.endswith("use --split test (--model evaluates all of --data by default)\n")
    out = runs / "group-norm"
    code, _, err = run(capsys, "evaluate", *spec, "--split", "test", "--bn-reestimate", "16", "--out", out)
    assert code == 0, err
    assert ("stabletrain: warning: model small_cnn has no BatchNorm layers with running statistics; nothing to "
            "re-estimate, the model is unchanged\n") in err
    results = json.loads((out / "results.json").read_text())
    assert results["suite_summaries"]["small_cnn"]["bn_reestimate"] == {"images": 0, "layers": 0, "requested": 16}
    assert results["settings"]["BatchNorm re-estimation"] == ("--bn-reestimate 16: no BatchNorm layers, the model "
                                                              "is unchanged")


def test_the_report_says_whether_training_had_converged(runs, capsys):
    checkpoint = torch.load(runs / "run" / "checkpoint.pt", weights_only=True)
    checkpoint["history"] = [{**checkpoint["history"][0], "epoch": e + 1, "train_accuracy": 0.6 + 0.1 * e,
                              "test_accuracy": 0.5 + 0.1 * e} for e in range(3)]
    (runs / "rising").mkdir(exist_ok=True)
    torch.save(checkpoint, runs / "rising" / "checkpoint.pt")
    out = runs / "rising-eval"
    code, _, err = run(capsys, "evaluate", runs / "rising", "--distortions", "jpeg-50", "--quiet", "--out", out)
    assert code == 0
    assert "plain: test accuracy still rising over the last 3 epochs (+20.0 points)" in err
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["training"].startswith("3 epochs; final train accuracy 80.0 %") and "(still rising)" in settings["training"]
