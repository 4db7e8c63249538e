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
    rows = evaluate_taggers({"cnn": JetTagger(width=4)}, ImageDataset(x, y), ["smear-1", "shift-1"], progress=False)
    assert {(r["model"], r["distortion"]) for r in rows} == {
        (m, d) for m in ("mass-window", "cnn") for d in ("clean", "smear-1", "shift-1")}
    assert all(0.0 <= r["auc"] <= 1.0 and r["rejection_50"] >= 1.0 for r in rows)


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
