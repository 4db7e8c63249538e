"""Re-measure the seed's classification claims C1-C3 under both normalizations (issue 13, item 6).

Runs ``stabletrain compare`` with a claims config (``configs/compare-claims-<data>.yaml``: plain, gaussian,
gaussian-noisy and stability, 5 seeds) and ``--norms batch,group``, then writes the claims table: each claim's
difference with its 95 % two-level paired bootstrap interval (seeds and test images resampled) and its verdict.

    python experiments/claims.py --data digits --out runs/claims-digits          # ~25 min on 2 cores
    python experiments/claims.py --data digits --out runs/claims-digits --report # the table from results.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from stabletrain.compare import load_compare_config, run_compare
from stabletrain.stats import format_interval

ROOT = Path(__file__).resolve().parents[1]


def table(results: dict) -> str:
    lines = ["| claim | difference (points), 95 % interval | verdict | seeds × test images |", "|---|---|---|---|"]
    for c in results["claims"]:
        lines.append(f"| {c['claim']} | {format_interval(c['difference'], c['low'], c['high'], signed=True)} | "
                     f"{c['verdict']} | {c['seeds']} × {c['test_images']} |")
    rows = {r["method"]: r for r in results["table"]}
    lines += ["", "| arm | clean accuracy (%) | final train accuracy (%) | test change, last 3 epochs (points) |",
              "|---|---|---:|---:|"]
    for name, r in rows.items():
        clean = r["clean accuracy"]
        spread = f" ± {100 * clean['std']:.1f} [{100 * max(clean['low'], 0):.1f}, {100 * min(clean['high'], 1):.1f}]" \
            if clean.get("std") is not None else " (one seed)"
        lines.append(f"| {name} | {100 * clean['mean']:.1f}{spread} | "
                     f"{100 * r['final train accuracy']['mean']:.1f} | "
                     f"{100 * r['test accuracy change, last epochs']['mean']:+.1f} |")
    if results.get("warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in results["warnings"]]
    return "\n".join(lines)


def accuracy_table(results: dict, out: Path) -> str:
    """Each arm's mean accuracy over seeds on clean images, the claims' strongest settings and PGD (results.csv)."""
    import csv
    import statistics

    specs = list(dict.fromkeys(c["distortion"] for c in results["claims"]))
    accuracy: dict[tuple[str, str], list[float]] = {}
    with open(out / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] == "distortion" and row["distortion"] in specs:
                accuracy.setdefault((row["method"], row["distortion"]), []).append(float(row["accuracy"]))
            elif row["kind"] == "attack" and float(row["epsilon"]) > 0:
                key = (row["method"], f"PGD ε={float(row['epsilon']):.4f}")
                accuracy.setdefault(key, []).append(float(row["robust_accuracy"]))
    columns = specs + sorted({k[1] for k in accuracy if k[1].startswith("PGD")})
    arms = [r["method"] for r in results["table"]]
    lines = ["| arm | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for arm in arms:
        cells = [f"{100 * statistics.mean(accuracy[(arm, c)]):.1f}" if (arm, c) in accuracy else "–" for c in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _split(label: str) -> tuple[str, str | None]:
    """``'stability (group)'`` -> ``('stability', 'group')``; a label without a normalization -> ``(label, None)``."""
    match = re.fullmatch(r"(.*) \((\w+)\)", label)
    return (match.group(1), match.group(2)) if match else (label, None)


def survival_table(results: dict) -> str:
    """Each claim's verdict under every normalization side by side, and whether it survives all of them.

    A conclusion "survives" when it has the same decided verdict (held, or did not hold) under every
    normalization; "within noise" anywhere means it is not established under that normalization.
    """
    by_claim: dict[tuple[str, str, str], dict[str, dict]] = {}
    norms: list[str] = []
    for c in results["claims"]:
        arm, norm = _split(c["arm"])
        reference, _ = _split(c["reference"])
        if norm is None:
            return ""
        norms += [norm] if norm not in norms else []
        by_claim.setdefault((arm, reference, c["distortion"]), {})[norm] = c
    if len(norms) < 2:
        return ""
    head = "| arm − reference | distortion | " + " | ".join(f"{n}: difference [95 %], verdict" for n in norms)
    lines = [head + " | survives every normalization |", "|---|---|" + "---|" * len(norms) + "---|"]
    for (arm, reference, spec), cells in by_claim.items():
        verdicts = [cells[n]["verdict"] if n in cells else "not run" for n in norms]
        text = [f"{format_interval(cells[n]['difference'], cells[n]['low'], cells[n]['high'], signed=True)}, "
                f"{cells[n]['verdict']}" if n in cells else "not run" for n in norms]
        if len(set(verdicts)) == 1:
            outcome = f"yes ({verdicts[0]})" if verdicts[0] in ("held", "did not hold") else f"{verdicts[0]} under each"
        else:
            outcome = "no: " + ", ".join(f"{v} with {n}" for n, v in zip(norms, verdicts))
        lines.append(f"| {arm} − {reference} | {spec} | " + " | ".join(text) + f" | {outcome} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--norms", default="batch,group")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(f"runs/claims-{args.data}")
    if not args.report:
        config = load_compare_config(ROOT / "configs" / f"compare-claims-{args.data}.yaml",
                                     {"norms": args.norms.split(",")})
        run_compare(config, out, progress=False, log=lambda line: print(line, flush=True))
    results = json.loads((out / "results.json").read_text())
    text = table(results)
    text += ("\n\nMean accuracy over seeds (%); PGD columns are robust accuracy on the first "
             f"{results['config']['evaluation'].get('attack_examples', 200)} test images:\n\n"
             + accuracy_table(results, out))
    survival = survival_table(results)
    if survival:
        text += "\n\nWhich conclusions survive both normalizations:\n\n" + survival
    (out / "claims.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
