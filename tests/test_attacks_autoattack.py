"""AutoAttack: components in order on what is left, per-component robust accuracy, batch invariance, torchattacks,
the gradient-masking check in the adversarial suite, and the CLI and compare options."""

import json

import pytest
import torch

from _attack_models import Quantized, RowwiseMLP, digits_cnn
from stabletrain.attacks import (apgd, apgd_targeted, autoattack, gradient_masking, masking_rows, masking_warnings,
                                 robustness_curve, square)
from stabletrain.checks import StableTrainError
from stabletrain.data import ImageDataset
from stabletrain.evaluation import evaluate_suites
from stabletrain.seeding import ExampleRNG


def _streams(n, *parts):
    return ExampleRNG.for_examples(range(n), 0, *parts)


SMALL = {"steps": 5, "target_classes": 3, "queries": 40}


def test_components_run_in_order_on_what_is_left():
    model, x, y = digits_cnn()
    x, y = x[:60], y[:60]
    result = autoattack(model, x, y, 0.1, generator=_streams(60, "aa"), **SMALL)
    assert list(result.components) == ["apgd-ce", "apgd-t", "square"]
    masks = list(result.components.values())
    clean_wrong = model(x).argmax(1) != y
    assert bool(masks[0][clean_wrong].all())  # misclassified clean: broken from the start
    for before, after in zip(masks[:-1], masks[1:]):
        assert bool((after | ~before).all())  # cumulative
    assert torch.equal(masks[-1], result.success)
    alone = apgd(model, x, y, 0.1, steps=5, generator=_streams(60, "aa"))
    assert torch.equal(masks[0], alone.success)  # the first component is APGD-CE on every example
    # the curve reports the robust accuracy after each component, never above the clean accuracy
    curve = robustness_curve(model, x, y, [0.0, 0.05, 0.1], attack="autoattack", generator=_streams(60, "aa"), **SMALL)
    for row in curve:
        parts = list(row["components"].values())
        assert row["clean_accuracy"] >= parts[0] >= parts[1] >= parts[2] == row["robust_accuracy"]
    assert curve[0]["robust_accuracy"] == pytest.approx(curve[0]["clean_accuracy"])


def test_autoattack_does_not_depend_on_the_batch_size():
    model = RowwiseMLP(classes=5)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(15, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 5  # one misclassified clean
    curves = [robustness_curve(model, x, y, [0.0, 0.05, 0.4], attack="autoattack", batch_size=size,
                               generator=_streams(15, "aa"), **SMALL) for size in (15, 4, 1)]
    assert curves[0] == curves[1] == curves[2]
    assert curves[0][0]["robust_accuracy"] == pytest.approx(14 / 15) and curves[0][2]["success_rate"] > 0


def test_autoattack_agrees_with_torchattacks_components_in_the_same_order():
    """APGD-CE, APGD-T (9 targets), Square on what is left, ε = 0.1, 10 iterations, 300 queries, 150 images,
    against torchattacks' MultiAttack of its APGD, APGDT and Square with the same settings."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_cnn()
    ours = autoattack(model, x, y, 0.1, steps=10, queries=300, generator=_streams(len(x), "aa"))
    reference = torchattacks.MultiAttack([
        torchattacks.APGD(model, eps=0.1, steps=10, loss="ce", n_restarts=1, seed=0),
        torchattacks.APGDT(model, eps=0.1, steps=10, n_classes=10, n_restarts=1, seed=0),
        torchattacks.Square(model, eps=0.1, n_queries=300, resc_schedule=False, n_restarts=1, seed=0)])
    with torch.no_grad():
        theirs = float((model(reference(x, y)).argmax(1) == y).float().mean())
    assert abs((1 - float(ours.success.float().mean())) - theirs) <= 0.01 + 1e-6


def test_masking_rows_flag_only_what_the_interval_excludes():
    n = 150
    pgd_flags = torch.tensor([[True] * 130 + [False] * 20])
    strong = torch.tensor([[True] * 18 + [False] * 132])
    slight = torch.tensor([[True] * 126 + [False] * 24])
    masked = masking_rows("m", [8 / 255], pgd_flags, strong, "square")
    fair = masking_rows("m", [8 / 255], pgd_flags, slight, "autoattack")
    assert masked[0]["masking"] and not fair[0]["masking"]
    assert masking_warnings(masked) == [
        "m: PGD overstates robustness at ε=0.03137: 86.7 % vs 12.0 % under square (gradient masking?)"]
    assert masking_warnings(fair) == [] and masked[0]["n"] == n


def test_the_masking_warning_fires_on_a_model_that_masks_its_gradients():
    model, x, y = digits_cnn()
    data = ImageDataset(x[:60], y[:60])
    models = {"quantized": Quantized(model), "plain": model}
    result = evaluate_suites(models, data, ["adversarial"], epsilons=[0.0, 0.1], attack="square",
                             attack_queries=300, progress=False)
    masked = [w for w in result["warnings"] if "gradient masking?" in w]
    assert len(masked) == 1 and masked[0].startswith("quantized: PGD overstates robustness at ε=0.1: ")
    assert "under square" in masked[0]
    summary = result["models"]["quantized"]
    assert summary["gradient_masking"][0]["masking"] and not result["models"]["plain"]["gradient_masking"][0]["masking"]
    assert summary["attack"]["queries"] == 300 and summary["attack"]["steps"] is None
    # the helper on its own says the same
    alone = gradient_masking({"quantized": Quantized(model)}, x[:60], y[:60], [0.1], reference_options={"queries": 300})
    assert alone["rows"][0]["masking"] and len(alone["warnings"]) == 1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from stabletrain.cli import main

    root = tmp_path_factory.mktemp("aa-cli")
    assert main(["train", "--data", "digits", "--image-size", "16", "--width", "8", "--batch-size", "128",
                 "--epochs", "1", "--quiet", "--method", "plain", "--out", str(root / "run")]) == 0
    return root


@pytest.mark.parametrize("flags, message", [
    (["--attack", "cw"], "unknown attack 'cw'"),
    (["--epsilons", "-0.1"], "--epsilons must be finite numbers >= 0"),
    (["--attack", "square", "--attack-steps", "3"], "--attack-steps has no effect with --attack square"),
    (["--attack-queries", "30"], "--attack-queries has no effect with --attack pgd"),
])
def test_bad_attack_flags_are_one_error_line(run_dir, capsys, flags, message):
    from stabletrain.cli import main

    code = main(["evaluate", str(run_dir / "run"), "--suite", "adversarial", *flags, "--quiet",
                 "--out", str(run_dir / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("stabletrain: error: ") and err.count("\n") == 1


def test_cli_autoattack_reports_each_component(run_dir, capsys):
    from stabletrain.cli import main

    out = run_dir / "aa"
    code = main(["evaluate", str(run_dir / "run"), "--suite", "adversarial", "--attack", "autoattack",
                 "--attack-steps", "3", "--attack-queries", "20", "--attack-examples", "24", "--epsilons", "0,0.05",
                 "--quiet", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((out / "model_plain.json").read_text())
    assert summary["attack"]["name"] == "autoattack" and summary["attack"]["queries"] == 20
    parts = summary["attack"]["components"]["0.05"]
    assert list(parts) == ["apgd-ce", "apgd-t", "square"]
    assert parts["square"] == summary["robust_accuracy"]["0.05"] <= summary["attack"]["clean_accuracy"]
    assert summary["gradient_masking"][0]["epsilon"] == 0.05
    report = (out / "report.md").read_text()
    assert "Robust accuracy after each AutoAttack component" in report and "Gradient-masking check" in report
    settings = json.loads((out / "results.json").read_text())["settings"]["attack"]
    assert settings.startswith("autoattack (apgd-ce, apgd-t, square; FAB-T left out), 3 APGD iterations, 20 queries")
    assert captured.err == ""  # --quiet: no progress at all


def test_cli_attack_progress_is_plain_lines_without_a_terminal(run_dir, capsys):
    """Under pytest stderr is not a terminal, so the tqdm bars are off; the plain progress lines still come."""
    from stabletrain.cli import main

    code = main(["evaluate", str(run_dir / "run"), "--suite", "adversarial", "--attack", "autoattack",
                 "--attack-steps", "2", "--attack-queries", "10", "--attack-examples", "16", "--epsilons", "0,0.05",
                 "--out", str(run_dir / "progress")])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert "autoattack attack on 16 examples: model plain (1 of 1)" in lines
    for part in ("apgd-ce", "apgd-t", "square"):
        assert any(line.startswith(f"autoattack ε=0.05: {part}: ") and "still robust" in line for line in lines)
    assert any(line.startswith("autoattack ε=0.05: ") and " of 16 attacked, robust accuracy " in line
               for line in lines)
    assert any(line.startswith("pgd ε=0.05: ") for line in lines)  # the gradient-masking check's PGD too


def test_compare_checks_the_attack_and_fills_its_budget():
    from stabletrain.compare import CompareConfig

    with pytest.raises(StableTrainError, match="unknown attack 'cw'"):
        CompareConfig(evaluation={"attack": "cw"}).resolved()
    with pytest.raises(StableTrainError, match="attack_steps has no effect with attack square"):
        CompareConfig(evaluation={"attack": "square", "attack_steps": 5}).resolved()
    with pytest.raises(StableTrainError, match="attack_queries has no effect with attack pgd"):
        CompareConfig(evaluation={"attack_queries": 5}).resolved()
    resolved = CompareConfig(evaluation={"attack": "autoattack"}).resolved().evaluation
    assert resolved["attack_steps"] == 100 and resolved["attack_queries"] == 5000
    assert "attack_queries" not in CompareConfig().resolved().evaluation  # pgd's cache key is unchanged
