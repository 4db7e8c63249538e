"""Mean ± std over seeds of the jets demo's results, as Markdown tables for docs/lhc.md.

    python experiments/summarize_jets.py runs/demo-jets runs/demo-jets-seed1 runs/demo-jets-seed2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _fmt(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def main(folders: list[str]) -> None:
    results = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    models = list(dict.fromkeys(r["model"] for r in results[0]["detector"]))
    families = list(dict.fromkeys(r["family"] for r in results[0]["detector"] if r["family"] != "clean"))

    def detector(model: str, pick) -> list[float]:
        return [float(np.mean([r["auc"] for r in res["detector"] if r["model"] == model and pick(r)]))
                for res in results]

    print(f"{len(results)} seed(s): {', '.join(str(r['config']['seed']) for r in results)}\n")
    print("| model | clean AUC | mean AUC, all effects | " + " | ".join(f"mean AUC, {f}" for f in families) + " |")
    print("|---|" + "---:|" * (2 + len(families)))
    for m in models:
        cells = [_fmt(detector(m, lambda r: r["family"] == "clean")), _fmt(detector(m, lambda r: r["family"] != "clean"))]
        cells += [_fmt(detector(m, lambda r, f=f: r["family"] == f)) for f in families]
        print(f"| {m} | " + " | ".join(cells) + " |")

    attack_models = list(dict.fromkeys(a["model"] for a in results[0]["attacks"]))
    picks = [("fgsm", 0.1, "FGSM ε=0.1 GeV/cell"), ("pgd", 0.1, "PGD ε=0.1 GeV/cell"),
             ("pgd, ≤10 GeV total", 1.0, "PGD ε=1 GeV/cell, ≤10 GeV total"),
             ("sparse", 1, "1 cell (≤20 GeV)"), ("sparse", 4, "4 cells (≤20 GeV each)")]
    print("\nFraction of correctly tagged jets that the attack flips, and the AUC under attack\n")
    print("| model | " + " | ".join(f"{label}: flipped / AUC" for _, _, label in picks) + " |")
    print("|---|" + "---:|" * len(picks))
    for m in attack_models:
        cells = []
        for attack, strength, _ in picks:
            rows = [[a for a in res["attacks"] if a["model"] == m and a["attack"] == attack
                     and abs(a["strength"] - strength) < 1e-9][0] for res in results]
            cells.append(f"{_fmt([r['flipped_correct'] for r in rows], 2)} / {_fmt([r['auc'] for r in rows], 2)}")
        print(f"| {m} | " + " | ".join(cells) + " |")

    datasets = list(dict.fromkeys(r["data"] for r in results[0]["sparsity"]))
    strengths = sorted({(r["attack"], r["strength"]) for r in results[0]["sparsity"]})
    print("\nSparse versus dense: fraction of correctly classified test images flipped\n")
    print("| data | occupancy | clean error | " + " | ".join(
        f"{'L∞ ε' if a == 'pgd' else 'k'}={s:g}" for a, s in strengths) + " |")
    print("|---|---:|---:|" + "---:|" * len(strengths))
    for d in datasets:
        rows = [[r for r in res["sparsity"] if r["data"] == d] for res in results]
        cells = [_fmt([rs[0]["occupancy"] for rs in rows]), _fmt([rs[0]["clean_error"] for rs in rows])]
        for a, s in strengths:
            cells.append(_fmt([[r for r in rs if r["attack"] == a and r["strength"] == s][0]["flipped_correct"]
                               for rs in rows], 2))
        print(f"| {d} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
