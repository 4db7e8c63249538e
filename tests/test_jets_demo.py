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
    assert len(result["checks"]) == 3
    report = (out / "report.md").read_text()
    assert "mass-window" in report and (out / "plots" / "attacks_auc.png").exists()
    assert (out / "attacks.csv").exists() and (out / "sparsity.csv").exists()
