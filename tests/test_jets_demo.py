import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_jets_demo_writes_the_report(jet_file, jet_cache, tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "stabletrain", "demo", "--data", "jets", "--quick", "--quiet",
                          "--sample", str(jet_file), "--out", str(out)], capture_output=True, text=True,
                         env={**__import__("os").environ, "STABLETRAIN_CACHE": str(jet_cache)})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    models = {r["model"] for r in result["detector"]}
    assert models == {"mass-window", "plain", "gaussian", "stability", "stability-additive"}
    effects = {r["distortion"] for r in result["detector"]}
    assert {"clean", "pileup-20", "smear-1", "deadcells-0.1", "threshold-2", "shift-2", "coarse-3"} <= effects
    pileup = [r for r in result["detector"] if r["distortion"] == "pileup-20"][0]
    clean = [r for r in result["detector"] if r["distortion"] == "clean"][0]
    assert pileup["occupancy"] > 5 * clean["occupancy"]          # pile-up fills the empty cells
    assert {r["attack"] for r in result["attacks"]} == {"pgd", "fgsm", "sparse", "pgd, ≤10 GeV total"}
    occupancy = {r["data"]: r["occupancy"] for r in result["sparsity"]}
    assert occupancy["digits (0–4 vs 5–9)"] > 5 * occupancy["jets"]
    # the matched-difficulty control: the same digits with 20 % of the labels flipped are harder, not sparser
    errors = {r["data"]: r["clean_error"] for r in result["sparsity"]}
    assert occupancy["digits, 20 % of labels flipped"] == occupancy["digits (0–4 vs 5–9)"]
    assert errors["digits, 20 % of labels flipped"] > errors["digits (0–4 vs 5–9)"] + 0.05
    assert len(result["checks"]) == 3
    assert all(c["verdict"] in ("held", "did not hold", "within noise") and c["intervals"] for c in result["checks"])
    counts = result["test_counts"]
    assert counts["signal"] + counts["background"] == result["test"]
    for r in result["detector"]:
        assert (r["signal"], r["background"]) == (counts["signal"], counts["background"])
        assert r["auc_low"] <= r["auc"] <= r["auc_high"]
        assert r["rejection_50"] == pytest.approx(r["background"] / max(r["passed_50"], 1))
    report = (out / "report.md").read_text()
    assert "mass-window" in report and (out / "plots" / "attacks_auc.png").exists()
    jets = f"{result['test']} test jets ({counts['signal']} signal, {counts['background']} background)"
    assert report.count(f"On the {jets}.") == 3 and f" of {counts['background']} bkg" in report
    assert (out / "attacks.csv").exists() and (out / "sparsity.csv").exists()


# ---- the checks and the report, on synthetic scores (fast: no Pythia, no training) ----

import csv  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stabletrain.jets.tagging import tagging_metrics  # noqa: E402
from stabletrain.stats import VERDICTS  # noqa: E402

SPECS = ("smear-1", "shift-1", "coarse-3")
N_JETS = 300  # 150 signal, 150 background


def _scenario(seed=0, additive_noise=0.3, tagger_noise=0.3, separated=None):
    """Scores of the mass window and three taggers on the same jets, clean and under three effects, and their rows.

    Taggers see a shared jet property ``z`` with their own noise: the smaller the noise, the higher the AUC.
    ``separated`` names a (model, effect) whose scores separate the classes completely (no background passes).
    """
    rng = np.random.default_rng(seed)
    labels = (np.arange(N_JETS) % 2).astype(np.int64)
    z = labels * 1.0 + rng.normal(size=N_JETS)
    noise = {"mass-window": 1.5, "plain": tagger_noise, "stability": tagger_noise, "stability-additive": additive_noise}
    scores, rows = {}, []
    for spec in ("clean", *SPECS):
        degraded = 1.2 if spec != "clean" else 0.0  # every effect blurs what plain and stability see
        for model, sigma in noise.items():
            extra = 0.0 if model in ("mass-window", "stability-additive") else degraded
            s = z + rng.normal(0, sigma + extra, N_JETS)
            if (model, spec) == separated:
                s = labels * 10.0 + rng.normal(0, 0.1, N_JETS)
            scores[(model, spec)] = s
            family, _, param = spec.partition("-")
            rows.append({"model": model, "distortion": spec, "family": family, "param": float(param or 0),
                         "occupancy": 0.03, **tagging_metrics(s, labels), "accuracy": None})
    return rows, scores, labels


def test_checks_are_three_way_verdicts_on_paired_intervals():
    from stabletrain.jets.demo import claims

    rows, scores, labels = _scenario()
    checks = claims(rows, [], scores=scores, labels=labels)
    assert [c["verdict"] for c in checks] == ["held", "within noise", "held"]
    assert all(c["verdict"] in VERDICTS and "held" not in c for c in checks)
    beats, relative, additive = checks
    # every tagger is compared with the mass window on the same clean jets, each with its own interval
    assert [i["what"] for i in beats["intervals"]] == [f"{m} − mass-window, clean"
                                                      for m in ("plain", "stability", "stability-additive")]
    assert all(i["low"] > 0 and i["verdict"] == "held" for i in beats["intervals"])
    assert "paired 95 % intervals on the 300 test jets (150 signal, 150 background)" in beats["detail"]
    # plain and stability are the same tagger up to noise: the interval of the mean difference contains 0
    mean = relative["intervals"][0]
    assert mean["what"] == "stability − plain, mean over 3 effects"
    assert mean["low"] < 0 < mean["high"]
    assert len(relative["intervals"]) == 1 + len(SPECS)
    point = np.mean([r["auc"] for r in rows if r["model"] == "stability" and r["distortion"] != "clean"]) - \
        np.mean([r["auc"] for r in rows if r["model"] == "plain" and r["distortion"] != "clean"])
    assert mean["difference"] == pytest.approx(point, abs=1e-12)
    assert f"{mean['difference']:+.3f} [{mean['low']:+.3f}, {mean['high']:+.3f}]" in relative["detail"]
    assert additive["intervals"][0]["low"] > 0


def test_a_check_fails_only_when_its_interval_is_below_zero():
    from stabletrain.jets.demo import claims

    # stability-additive is worse than everything, and plain/stability far from the mass window's level
    rows, scores, labels = _scenario(seed=1, additive_noise=4.0)
    checks = claims(rows, [], scores=scores, labels=labels)
    by_tagger = {i["what"].split(" − ")[0]: i["verdict"] for i in checks[0]["intervals"]}
    assert by_tagger["stability-additive"] == "did not hold" and by_tagger["plain"] == "held"
    assert checks[0]["verdict"] == "did not hold"  # "every tagger beats the mass window": one clearly does not
    assert checks[2]["verdict"] == "did not hold" and checks[2]["intervals"][0]["high"] < 0
    # stability beats plain on every effect by the point estimate, and on the mean: the old rule said "held";
    # the paired interval of the mean difference contains 0
    relative = checks[1]
    assert relative["intervals"][0]["difference"] > 0 and "higher point estimate on 3/3" in relative["detail"]
    assert relative["verdict"] == "within noise"
    # two taggers barely apart from the mass window: neither held nor failed
    rows, scores, labels = _scenario(seed=2, tagger_noise=1.45, additive_noise=1.45)
    first = claims(rows, [], scores=scores, labels=labels)[0]
    assert first["verdict"] == "within noise"
    assert all(i["low"] < 0 < i["high"] for i in first["intervals"])


def test_report_json_and_csv_carry_intervals_counts_and_the_zero_pass_case(tmp_path, monkeypatch):
    import stabletrain.jets.demo as demo
    from stabletrain.data import DataSplit, ImageDataset

    monkeypatch.setattr(demo, "plot_severity_curves", lambda *a, **k: [])
    monkeypatch.setattr(demo, "_plot_attacks", lambda rows, key, path, *a, **k: path)
    rows, scores, labels = _scenario(separated=("stability-additive", "shift-1"))
    attack_labels = labels[:100]
    attacks = [{"model": "plain", "attack": "pgd", "strength": 0.1, "success_rate": 0.4, "flipped_correct": 0.3,
                **tagging_metrics(scores[("plain", "clean")][:100], attack_labels), "changed_cells": 3.0}]
    sparsity = [{**attacks[0], "data": "jets", "occupancy": 0.03, "clean_error": 0.2}]
    y = torch.as_tensor(labels)
    data = DataSplit("synthetic", ImageDataset(torch.zeros(10, 1, 25, 25), y[:10]),
                     ImageDataset(torch.zeros(N_JETS, 1, 25, 25), y), ["qcd", "w"], {})
    result = demo._write_report(tmp_path, demo.JetDemoConfig(), data, tmp_path / "s.h5", rows, attacks, sparsity, {},
                                1.0, scores)
    report = (tmp_path / "report.md").read_text()
    counts = "300 test jets (150 signal, 150 background)"
    assert report.count(f"On the {counts}.") == 3   # the AUC and both rejection tables
    assert "first 100 test jets (50 signal, 50 background)" in report
    assert "| jets | 100 (50 / 50) |" in report
    plain = next(r for r in rows if (r["model"], r["distortion"]) == ("plain", "clean"))
    assert f"{plain['auc']:.3f} [{plain['auc_low']:.3f}, {plain['auc_high']:.3f}]" in report
    assert (f"{plain['rejection_50']:.1f} [{plain['rejection_50_low']:.1f}, {plain['rejection_50_high']:.1f}] "
            f"({plain['passed_50']} of 150 bkg)") in report
    separated = next(r for r in rows if (r["model"], r["distortion"]) == ("stability-additive", "shift-1"))
    assert separated["passed_50"] == separated["passed_30"] == 0 and separated["rejection_50_high"] == math.inf
    assert f"> {separated['rejection_50_low']:.1f} (0 of 150 bkg pass)" in report
    assert "inf" not in report.replace("information", "")
    assert "- **held**: the CNN tagger beats the mass-window cut" in report
    assert "- **within noise**: stability training (relative noise)" in report
    assert result["table"].startswith("## Checks") and "bkg)" in result["table"]

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test_counts"] == {"signal": 150, "background": 150}
    row = next(r for r in saved["detector"] if (r["model"], r["distortion"]) == ("stability-additive", "shift-1"))
    assert row["rejection_50_high"] is None and row["passed_50"] == 0 and row["rejection_50_low"] > 1
    assert [c["verdict"] for c in saved["checks"]] == ["held", "within noise", "held"]
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for key in ("auc_low", "auc_high", "passed_30", "passed_50", "rejection_50_low", "rejection_50_high",
                "signal", "background"):
        assert key in table[0]
    cell = next(r for r in table if (r["model"], r["distortion"]) == ("plain", "clean"))
    assert float(cell["auc_low"]) <= float(cell["auc"]) <= float(cell["auc_high"])
    assert int(cell["signal"]) + int(cell["background"]) == N_JETS
    with open(tmp_path / "attacks.csv", newline="") as f:
        assert {"auc_low", "passed_50", "rejection_50_high", "signal"} <= set(next(csv.DictReader(f)))


def test_flip_labels_flips_the_rate_nested_and_per_stream():
    import torch

    from stabletrain.checks import StableTrainError
    from stabletrain.jets.demo import flip_labels

    y = torch.arange(20_000) % 2
    flipped = flip_labels(y, 0.2) != y
    assert abs(float(flipped.float().mean()) - 0.2) < 0.01     # binomial sd 0.003
    assert torch.equal(flip_labels(y, 0.0), y) and torch.equal(flip_labels(y, 1.0), 1 - y)
    assert bool(((flip_labels(y, 0.1) != y) <= flipped).all())   # nested in the rate
    assert torch.equal(flip_labels(y, 0.2), flip_labels(y, 0.2))
    assert not torch.equal(flip_labels(y, 0.2, stream=1), flip_labels(y, 0.2))
    with pytest.raises(StableTrainError, match="flip rate"):
        flip_labels(y, 1.5)


def test_demo_config_refuses_a_label_noise_at_or_above_chance():
    from stabletrain.checks import StableTrainError
    from stabletrain.jets.demo import JetDemoConfig

    with pytest.raises(StableTrainError, match="sparsity_label_noise"):
        JetDemoConfig(sparsity_label_noise=0.5).resolved()
