import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from stabletrain.cli import main

TINY = ["--data", "digits", "--image-size", "16", "--width", "8", "--batch-size", "128", "--quiet"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_evaluate_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", *TINY, "--method", "stability", "--epochs", "2", "--alpha", "1",
                          "--sigma", "0.1", "--seed", "3", "--out", str(out))
    assert code == 0 and "test accuracy" in stdout
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == "stability" and saved["seed"] == 3 and saved["epochs"] == 2

    code, stdout, _ = run(capsys, "evaluate", str(out / "checkpoint.pt"), "--distortions",
                          "jpeg-10,jpeg-50,thumb-8,crop-10,gaussian-0.1", "--quiet")
    assert code == 0 and "jpeg-10" in stdout
    results = json.loads((out / "evaluation" / "results.json").read_text())
    model = results["models"]["stability"]
    assert 0.5 < model["clean_accuracy"] <= 1.0
    assert set(model["distortions"]) == {"jpeg-10", "jpeg-50", "thumb-8", "crop-10", "gaussian-0.1"}
    for entry in model["distortions"].values():
        assert {"accuracy", "mean_kl", "flip_rate"} <= set(entry)
    csv_lines = (out / "evaluation" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,distortion,family,param,accuracy,mean_kl,flip_rate")
    assert len(csv_lines) == 1 + 6
    report = (out / "evaluation" / "report.md").read_text()
    assert "jpeg-10" in report and "plots/accuracy_jpeg.png" in report
    assert (out / "evaluation" / "plots" / "accuracy_gaussian.png").stat().st_size > 1000


def test_train_resume_and_config_file(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("method: plain\nepochs: 1\nwidth: 8\nimage_size: 16\nbatch_size: 128\n")
    out = tmp_path / "run"
    assert run(capsys, "train", "--config", str(config), "--quiet", "--out", str(out))[0] == 0
    code, _, err = run(capsys, "train", "--config", str(config), "--quiet", "--out", str(out))
    assert code == 2 and "already holds a checkpoint" in err
    code, stdout, _ = run(capsys, "train", "--config", str(out / "config.yaml"), "--epochs", "2", "--quiet",
                          "--out", str(out), "--resume")
    assert code == 0 and "after 2 epochs" in stdout


def test_demo_quick_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = run(capsys, "demo", "--quick", "--quiet", "--out", str(out))
    assert code == 0
    assert "stability" in stdout and "gaussian-0.3" in stdout
    for name in ("report.md", "results.json", "results.csv", "config.yaml", "plots/accuracy_jpeg.png",
                 "plots/accuracy_thumb.png", "plots/accuracy_crop.png", "plots/accuracy_gaussian.png"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"plain", "gaussian", "stability"}
    assert len(results["checks"]) == 6  # clean within 1 point, 4 strongest distortions, augmentation's cost
    for check in results["checks"]:  # each decided by its interval, not by the point estimate
        assert check["verdict"] in ("held", "did not hold", "within noise") and check["low"] <= check["high"]
        expected = "held" if check["low"] > check["threshold"] else \
            "did not hold" if check["high"] < check["threshold"] else "within noise"
        assert check["verdict"] == expected and check["n"] == 359
    report = (out / "report.md").read_text()
    assert "Clean accuracy and training cost" in report and "within 1 point" in report
    assert "Paired differences against plain" in report and "95 % Wilson interval" in report
    assert "final train accuracy (%)" in report and set(results["training"]) == {"plain", "gaussian", "stability"}
    assert "NOT hold" not in stdout and ("[within noise]" in stdout or "[held]" in stdout)
    # A second run reuses the trained models.
    before = (out / "models" / "plain" / "checkpoint.pt").stat().st_mtime_ns
    assert run(capsys, "demo", "--quick", "--quiet", "--out", str(out))[0] == 0
    assert (out / "models" / "plain" / "checkpoint.pt").stat().st_mtime_ns == before


def _bad_folder(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "a" / "x.png")
    (root / "b" / "y.jpg").write_text("not really a jpeg")
    return root


@pytest.mark.parametrize("case", ["spec", "sigma", "folder", "image", "npz", "method", "method-typo", "config"])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, case):
    out = tmp_path / "out"
    args = {
        "spec": ["demo", "--distortions", "jpeg-50,blur-3", "--out", str(out)],
        "sigma": ["train", "--sigma", "-0.5", "--out", str(out)],
        "folder": ["train", "--data", str(tmp_path / "no-such-folder"), "--out", str(out)],
        "image": ["train", "--data", str(_bad_folder(tmp_path) if case == "image" else ""), "--out", str(out)],
        "npz": ["train", "--data", str(tmp_path / "d.npz"), "--out", str(out)],
        "method": ["train", "--method", "magic", "--out", str(out)],
        "method-typo": ["demo", "--methods", "plain,stabilty", "--out", str(out)],
        "config": ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)],
    }[case]
    if case == "npz":
        np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), dtype=np.uint8))
    if case == "config":
        (tmp_path / "c.yaml").write_text("epochs: [unclosed\n")
    code, stdout, err = run(capsys, *args, "--quiet")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("stabletrain: error: "), err
    assert "Traceback" not in err
    assert not out.exists()


def test_evaluate_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, "evaluate", str(tmp_path / "junk.pt"), "--quiet")
    assert code == 2 and err.startswith("stabletrain: error: cannot read checkpoint")


def test_console_script_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "stabletrain", "evaluate", "missing.pt", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "stabletrain: error: checkpoint not found: missing.pt"


def test_similarity_train_init_from_classifier_and_evaluate(tmp_path, capsys):
    small = ["--width", "8", "--batch-size", "128", "--quiet", "--epochs", "1"]
    assert run(capsys, "train", "--data", "photos", "--method", "plain", *small, "--out", str(tmp_path / "clf"))[0] == 0
    # A classifier's penultimate layer evaluated as an embedder.
    code, stdout, _ = run(capsys, "evaluate", str(tmp_path / "clf"), "--task", "similarity", "--distortions",
                          "jpeg-30,crop-10", "--quiet")
    assert code == 0 and "near-duplicate AP" in stdout
    assert (tmp_path / "clf" / "evaluation-similarity" / "plots" / "pr_curves.png").exists()
    # Fine-tune the classifier into a stable embedder.
    code, stdout, _ = run(capsys, "train", "--task", "similarity", "--data", "photos", "--method", "stability",
                          "--alpha", "1", "--sigma", "0.1", *small, "--init", str(tmp_path / "clf" / "checkpoint.pt"),
                          "--out", str(tmp_path / "emb"))
    assert code == 0 and "test triplet accuracy" in stdout
    code, _, _ = run(capsys, "evaluate", str(tmp_path / "emb"), "--distortions", "jpeg-30,thumb-16", "--quiet")
    results = json.loads((tmp_path / "emb" / "evaluation" / "results.json").read_text())
    assert code == 0 and set(results["models"]) == {"stability"}
    assert {r["family"] for r in results["rows"]} == {"jpeg", "thumb"}
    report = (tmp_path / "emb" / "evaluation" / "report.md").read_text()
    assert "One threshold for all families" in report and "distances_histogram.png" in report
    code, _, err = run(capsys, "evaluate", str(tmp_path / "emb"), "--task", "classification", "--quiet")
    assert code == 2 and "holds an embedder" in err


def test_similarity_demo_quick(tmp_path, capsys):
    out = tmp_path / "sim"
    code, stdout, _ = run(capsys, "demo", "--task", "similarity", "--quick", "--quiet", "--out", str(out))
    assert code == 0 and "average precision" in stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"plain", "gaussian", "stability"}
    assert results["checks"][0]["claim"].startswith("stability lowers the ratio")
    for name in ("report.md", "results.csv", "plots/pr_curves.png", "plots/distances_cumulative.png"):
        assert (out / name).exists(), name


def test_empty_image_folder_for_similarity(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "train", "--task", "similarity", "--data", str(tmp_path / "empty"), "--quiet",
                       "--out", str(tmp_path / "out"))
    assert code == 2 and err.strip() == f"stabletrain: error: image folder {tmp_path / 'empty'} holds no images"
    assert not (tmp_path / "out").exists()


def test_evaluate_adversarial_suite_with_baseline(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *TINY, "--method", "plain", "--epochs", "2", "--out", str(out))[0] == 0
    # budgets as fractions too, as the help's default is written: 51/255 is the float 0.2
    code, stdout, _ = run(capsys, "evaluate", str(out), "--suite", "adversarial", "--epsilons", "0,0.02,51/255",
                          "--attack-steps", "3", "--attack-examples", "40", "--baseline", str(out), "--quiet")
    assert code == 0 and "robust acc" in stdout
    summary = json.loads((out / "evaluation" / "model_plain.json").read_text())
    robust = summary["robust_accuracy"]
    assert list(robust) == ["0", "0.02", "0.2"] and robust["0"] >= robust["0.02"] >= robust["0.2"]
    assert (out / "evaluation" / "plots" / "robust_accuracy.png").exists()
    code, _, err = run(capsys, "evaluate", str(out), "--suite", "fuzz", "--quiet")
    assert code == 2 and "unknown suite fuzz" in err
    code, _, err = run(capsys, "evaluate", str(out), "--suite", "adversarial", "--epsilons", "-1", "--quiet")
    assert code == 2 and "--epsilons must be finite numbers >= 0" in err
    for bad in ("8/0", "x/255", "0,1e"):
        code, _, err = run(capsys, "evaluate", str(out), "--suite", "adversarial", "--epsilons", bad, "--quiet")
        assert code == 2 and err.startswith("stabletrain: error: --epsilons must be comma-separated numbers"), bad


@pytest.mark.parametrize("method", ["jsd", "trades", "adversarial", "consistency"])
def test_each_method_trains_one_epoch_through_the_cli(tmp_path, capsys, method):
    out = tmp_path / method
    steps = ["--adv-steps", "2"] if method in ("trades", "adversarial") else []  # only those two take it
    code, stdout, err = run(capsys, "train", "--data", "digits", "--image-size", "16", "--width", "4",
                            "--batch-size", "256", "--epochs", "1", *steps, "--method", method,
                            "--quiet", "--out", str(out))
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


def test_evaluate_common_corruptions_suite(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *TINY, "--method", "plain", "--epochs", "1", "--out", str(out))[0] == 0
    base = tmp_path / "base"
    assert run(capsys, "train", *TINY, "--method", "plain", "--epochs", "1", "--seed", "1", "--out", str(base))[0] == 0
    code, stdout, err = run(capsys, "evaluate", str(out), "--suite", "common", "--baseline", str(base), "--quiet")
    assert code == 0, err
    summary = json.loads((out / "evaluation" / "model_plain.json").read_text())
    assert summary["corruption_set"] == "cifar10"
    assert len(summary["corruptions"]) == 19 and all(len(v) == 5 for v in summary["corruptions"].values())
    assert 0 < summary["common"]["mean_error"] < 1 and summary["common"]["mce"] > 0
    assert (out / "evaluation" / "plots" / "accuracy_corruptions.png").exists()
    rows = (out / "evaluation" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (1 + 19 * 5)
    assert "mCE vs baseline" in stdout
    # the model against the baseline on the same images, per corruption: the difference and its paired interval
    paired = json.loads((out / "evaluation" / "results.json").read_text())["paired"]
    assert len(paired) == 1 + 19 * 5 and len({p["reference"] for p in paired}) == 1
    assert all(p["difference_low"] <= p["difference"] <= p["difference_high"] and p["n"] == 359 for p in paired)
    assert "Paired differences against" in (out / "evaluation" / "report.md").read_text()
