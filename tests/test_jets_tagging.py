import math

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.data import ImageDataset
from stabletrain.jets.images import ImageSpec, image_mass
from stabletrain.jets.tagging import (
    JetTagger,
    evaluate_taggers,
    mass_window_scores,
    tagging_metrics,
)
from stabletrain.perturbations import RelativeNoise, build_perturbation


def test_tagging_metrics_on_a_known_ranking():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    m = tagging_metrics(scores, labels)
    from sklearn.metrics import roc_auc_score

    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["rejection_50"] == 4.0   # two of four signals pass before the first background
    assert m["rejection_30"] == 4.0   # no background passes: reported as the bound 1/(1/4)
    # what the numbers rest on: 4 + 4 jets, no background passing either cut, so only lower bounds
    assert (m["signal"], m["background"], m["passed_30"], m["passed_50"]) == (4, 4, 0, 0)
    assert m["threshold_50"] == m["threshold_30"] == 0.8   # 30 % of 4 signals needs 2 of them
    assert m["rejection_50_high"] == math.inf and m["rejection_30_high"] == math.inf
    assert m["rejection_50_low"] == pytest.approx(1 / (1 - 0.025 ** (1 / 4)))   # Clopper-Pearson, 0 of 4
    assert m["auc_low"] <= m["auc"] <= m["auc_high"]


def _consistent(row, signal, background):
    """The interval fields of one row: ordered, and reproducing the point values from the counts."""
    assert (row["signal"], row["background"]) == (signal, background)
    assert 0.0 <= row["auc_low"] <= row["auc"] <= row["auc_high"] <= 1.0
    for eff in (30, 50):
        value, low, high, passed = (row[f"rejection_{eff}"], row[f"rejection_{eff}_low"],
                                    row[f"rejection_{eff}_high"], row[f"passed_{eff}"])
        assert 0 <= passed <= background
        assert value == pytest.approx(background / max(passed, 1), rel=1e-12)
        assert low <= value and (high == math.inf) == (passed == 0)
        if passed > 0:
            assert value <= high


@pytest.mark.parametrize("seed", range(6))
def test_tagging_metrics_intervals_and_counts(seed):
    from stabletrain.metrics import background_rejection, roc_auc
    from stabletrain.stats import auc_interval, rejection_interval

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = labels * rng.uniform(0.5, 2.0) + rng.normal(size=200)
    m = tagging_metrics(scores, labels)
    _consistent(m, int(labels.sum()), int((labels == 0).sum()))
    delong = auc_interval(scores, labels)
    assert (m["auc"], m["auc_low"], m["auc_high"]) == pytest.approx((roc_auc(scores, labels), delong.low, delong.high))
    for eff in (0.3, 0.5):
        key = f"rejection_{round(eff * 100)}"
        k = m[f"passed_{round(eff * 100)}"]
        assert m[key] == background_rejection(scores, labels, eff)
        assert k == int(((scores >= m[f"threshold_{round(eff * 100)}"]) & (labels == 0)).sum())  # the same cut
        exact = rejection_interval(k, m["background"])
        assert (m[f"{key}_low"], m[f"{key}_high"]) == (exact.low, exact.high)


def test_working_point_interval_of_a_fraction_spans_both_neighbours():
    from stabletrain.jets.tagging import working_point_interval
    from stabletrain.stats import rejection_interval

    low, high = working_point_interval(7.5, 300)
    assert low == rejection_interval(8, 300).low and high == rejection_interval(7, 300).high
    assert low < 300 / 7.5 < high
    assert working_point_interval(0.5, 300) == (rejection_interval(1, 300).low, math.inf)
    assert working_point_interval(5, 300) == (rejection_interval(5, 300).low, rejection_interval(5, 300).high)


def test_report_cells_show_intervals_counts_and_the_zero_pass_case():
    from stabletrain.jets.tagging import describe_counts, format_auc, format_rejection

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    m = tagging_metrics(scores, labels)
    low = m["rejection_50_low"]
    assert format_rejection(m, 50) == f"> {low:.1f} (0 of 4 bkg pass)"
    assert "inf" not in format_rejection(m, 30) and "∞" not in format_rejection(m, 30)
    auc = format_auc(m)
    assert auc == f"{m['auc']:.3f} [{m['auc_low']:.3f}, {m['auc_high']:.3f}]"
    row = {"rejection_30": 12.5, "rejection_30_low": 8.1, "rejection_30_high": 19.62, "passed_30": 32,
           "background": 400}
    assert format_rejection(row, 30) == "12.5 [8.1, 19.6] (32 of 400 bkg)"
    fractional = {**row, "passed_30": 31.5, "rejection_30_high": math.inf}
    assert format_rejection(fractional, 30) == "12.5 [8.1, ∞) (31.5 of 400 bkg)"
    # rows from JSON (inf became null) print the same way
    assert format_rejection({**m, "rejection_50_high": None}, 50) == format_rejection(m, 50)
    assert describe_counts(3, 5) == "8 test jets (3 signal, 5 background)"


def test_mass_window_baseline_scores_by_distance_to_the_w_mass():
    x = torch.zeros(2, 1, 25, 25)
    x[:, 0, 12, 12] = 0.1
    x[0, 0, 16, 12], x[1, 0, 13, 12] = 0.05, 0.05
    masses = image_mass(x[:, 0].numpy() * 1000.0, ImageSpec())
    scores = mass_window_scores(x)
    np.testing.assert_allclose(scores, -np.abs(masses - 80.4))


@pytest.mark.parametrize("transform", ["log", "standardize"])
def test_jet_tagger_inputs_and_errors(transform):
    tagger = JetTagger(width=4, input=transform)
    assert tagger(torch.rand(3, 1, 25, 25) * 0.01).shape == (3, 2)
    with pytest.raises(StableTrainError, match="25×25"):
        tagger(torch.rand(3, 1, 32, 32))
    with pytest.raises(StableTrainError, match="unknown jet input"):
        JetTagger(input="sqrt")


def test_relative_noise_keeps_sparsity_and_the_mean():
    x = torch.zeros(4000, 1, 5, 5)
    x[:, 0, 2, 2] = 0.1
    out = RelativeNoise(0.2)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out > 0, x > 0) or float((out[:, 0, 2, 2] == 0).float().mean()) < 1e-3
    assert float(out[:, 0, 2, 2].mean()) == pytest.approx(0.1, rel=0.02)
    assert float(out[:, 0, 2, 2].std()) == pytest.approx(0.02, rel=0.05)
    with pytest.raises(StableTrainError, match="unknown perturbation"):
        build_perturbation("uniform", 0.1)


def test_evaluate_taggers_rows_cover_models_baseline_and_effects():
    x = torch.rand(40, 1, 25, 25) * 0.001
    y = torch.arange(40) % 2
    y[:4] = 1  # 22 signal, 18 background
    scores = {}
    tagger = JetTagger(width=4).eval()
    rows = evaluate_taggers({"cnn": tagger}, ImageDataset(x, y), ["smear-1", "shift-1"], progress=False,
                            scores=scores)
    assert {(r["model"], r["distortion"]) for r in rows} == {
        (m, d) for m in ("mass-window", "cnn") for d in ("clean", "smear-1", "shift-1")}
    assert all(0.0 <= r["auc"] <= 1.0 and r["rejection_50"] >= 1.0 for r in rows)
    for r in rows:
        _consistent(r, 22, 18)
    # the scores kept for paired comparisons are those the rows were computed from
    assert set(scores) == {(r["model"], r["distortion"]) for r in rows}
    from stabletrain.jets.tagging import tagger_scores

    np.testing.assert_allclose(scores[("cnn", "clean")], tagger_scores(tagger, x))
    np.testing.assert_allclose(scores[("mass-window", "clean")], mass_window_scores(x))
    for r in rows:
        again = tagging_metrics(scores[(r["model"], r["distortion"])], y.numpy())
        assert {k: r[k] for k in again} == pytest.approx(again)


def test_training_through_the_common_interface(jet_file, tmp_path):
    from stabletrain.training import TrainConfig, load_model, train

    config = TrainConfig(task="jets", data=str(jet_file), method="stability", epochs=2, width=4, sigma=0.3,
                         alpha=1.0, batch_size=64)
    result = train(config, tmp_path / "run", progress=False)
    assert 0.5 < result.history[-1]["test_auc"] <= 1.0
    _model, checkpoint = load_model(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["model"]["name"] == "jet_cnn" and checkpoint["config"]["task_args"]["noise"] == "relative"
    assert checkpoint["model"]["provider"] == "stabletrain.jets"
    assert checkpoint["objective"]["sigma"] == 0.3
    with pytest.raises(StableTrainError, match="no effect with task 'classification'.*jets"):
        TrainConfig(task="classification", noise="relative").validated()


def test_jets_evaluate_command(jet_file, tmp_path):
    import json
    import subprocess
    import sys

    from stabletrain.training import TrainConfig, train

    train(TrainConfig(task="jets", data=str(jet_file), method="plain", epochs=1, width=4), tmp_path / "plain",
          progress=False)
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, "-m", "stabletrain", "jets", "evaluate", str(tmp_path / "plain"),
                          "--distortions", "smear-1,threshold-2", "--out", str(out), "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["model"], r["distortion"]) for r in rows} == {
        (m, d) for m in ("mass-window", "plain") for d in ("clean", "smear-1", "threshold-2")}
    bad = subprocess.run([sys.executable, "-m", "stabletrain", "jets", "evaluate", str(tmp_path / "plain"),
                          "--distortions", "smear-x", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "smear-x" in bad.stderr and "Traceback" not in bad.stderr


def test_jets_refuse_augmix_views_and_give_jsd_gaussian_the_detector_noise():
    from types import SimpleNamespace

    from stabletrain.checks import StableTrainError
    from stabletrain.tasks import get_task

    task = get_task("jets")
    with pytest.raises(StableTrainError, match="use --method jsd-gaussian"):
        task.objective(SimpleNamespace(method="jsd", method_args={"jsd_lambda": 12.0}))
    objective = task.objective(SimpleNamespace(method="jsd-gaussian", method_args={"sigma": 0.1, "jsd_lambda": 12.0}))
    assert type(objective.perturbation).__name__ == type(task.perturbation({"sigma": 0.1})).__name__
