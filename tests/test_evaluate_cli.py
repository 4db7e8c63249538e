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
    (["--chunk-size", "64"], "--chunk-size has no effect on classification"),
    (["--suite", "adversarial", "--attack", "fgsm", "--attack-steps", "3"],
     "--attack-steps has no effect with --attack fgsm"),
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


@pytest.mark.parametrize("flags", [["--suite", "common"], ["--attack", "fgsm"], ["--corruption-set", "cifar10"]])
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
    expected = "model plain predicts one class (3) for 100% of test images"
    assert expected in err
    results = json.loads((out / "results.json").read_text())
    assert expected in results["warnings"] and any(expected in line for line in results["summary"])
    assert expected in (out / "report.md").read_text()
    # a working model is not flagged
    code, _, err = run(capsys, "evaluate", runs / "run", "--distortions", "jpeg-50", "--quiet", "--out",
                       runs / "fine")
    assert code == 0 and "warning" not in err
    assert json.loads((runs / "fine" / "results.json").read_text())["warnings"] == []
