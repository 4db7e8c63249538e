"""The tables of docs/results.md §7: the seven-method comparison on digits, with PGD-10 beside AutoAttack.

Reads a finished ``stabletrain compare --config configs/compare-digits.yaml`` run (its ``results.json``) and
the AutoAttack check of the same comparison's seed-0 models
(``experiments/gradient_masking_check.py --compare-config configs/compare-digits.yaml``), and prints
markdown:

* accuracy under the paper's distortions, certification and training cost: mean over the seeds with the
  95 % t interval of the mean (training noise only);
* stability against each other method on clean images and each family's strongest setting (paired
  bootstrap over seeds and test images, with the verdict of compare's claims; "clean" asks for "within
  1 point");
* robust accuracy: PGD-10 over all seeds (mean, t interval), and on seed 0 PGD-10 against AutoAttack with
  AutoAttack's Wilson interval and the paired (Newcombe) interval of the difference, flagged as the
  gradient-masking rule of :func:`stabletrain.attacks.gradient_masking` says.

    python experiments/family_table.py --compare runs/compare-digits --masking runs/masking-compare
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ACCURACY_COLUMNS = [("clean accuracy", "clean"), ("jpeg (mean over severities)", "jpeg"),
                    ("thumb (mean over severities)", "thumb"), ("crop (mean over severities)", "crop"),
                    ("gaussian (mean over severities)", "gaussian"), ("ACR, first 100", "ACR (σ = 0.25)"),
                    ("certified accuracy r=0.25, first 100", "cert. r = 0.25"),
                    ("certified accuracy r=0.5, first 100", "cert. r = 0.5"),
                    ("training time relative to plain", "time × plain")]


def _cell(summary: dict, percent: bool = True, digits: int = 1) -> str:
    scale = 100.0 if percent else 1.0
    mean, low, high = (scale * summary[k] for k in ("mean", "low", "high"))
    if not percent:  # ACR and time ratios are never negative
        return f"{mean:.{digits}f} [{max(low, 0.0):.{digits}f}, {high:.{digits}f}]"
    return f"{mean:.{digits}f} [{max(low, 0.0):.{digits}f}, {min(high, 100.0):.{digits}f}]"


def accuracy_table(results: dict) -> str:
    lines = ["| method | " + " | ".join(label for _, label in ACCURACY_COLUMNS) + " |",
             "|---|" + "---:|" * len(ACCURACY_COLUMNS)]
    for row in results["table"]:
        cells = []
        for column, label in ACCURACY_COLUMNS:
            if column.startswith("ACR"):
                cells.append(_cell(row[column], percent=False, digits=3))
            elif column.startswith("training time"):
                cells.append(_cell(row[column], percent=False, digits=2) + "×")
            else:
                cells.append(_cell(row[column]))
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attack_table(results: dict, masking: Path) -> str:
    """PGD-10 over all seeds (mean, t interval), then seed 0's PGD-10 against AutoAttack."""
    epsilons = [e for e in results["config"]["evaluation"]["epsilons"] if e > 0]
    header = "| method | " + " | ".join(f"ε = {round(e * 255)}/255" for e in epsilons) + " |"
    rule = "|---|" + "---:|" * len(epsilons)
    seeds = len(results["config"]["seeds"])
    pgd_lines = [f"PGD-10 robust accuracy (%), mean over {seeds} seeds [95 % t interval]:", "", header, rule]
    check_lines = ["Seed 0: PGD-10 / AutoAttack robust accuracy (%), AutoAttack's 95 % Wilson interval in brackets, "
                   "PGD − AutoAttack in points with its paired 95 % interval in parentheses:", "", header,
                   rule.replace("---:", "---")]
    for row in results["table"]:
        method = row["method"]
        pgd_lines.append(f"| {method} | " + " | ".join(_cell(row[f"robust accuracy ε={e:g}, first 200"])
                                                        for e in epsilons) + " |")
        saved = masking / f"{method}-batch-s0" / "masking-autoattack.json"
        checks = {round(r["epsilon"], 6): r for r in json.loads(saved.read_text())["rows"]} if saved.exists() else {}
        cells = []
        for eps in epsilons:
            check = checks.get(round(eps, 6))
            if check is None:
                cells.append("not run")
                continue
            text = (f"{100 * check['pgd_robust_accuracy']:.1f} / {100 * check['reference_robust_accuracy']:.1f} "
                    f"[{100 * check['reference_low']:.1f}, {100 * check['reference_high']:.1f}] "
                    f"({100 * check['difference']:+.1f} [{100 * check['difference_low']:+.1f}, "
                    f"{100 * check['difference_high']:+.1f}])")
            cells.append(f"**{text}, flagged**" if check["masking"] else text)
        check_lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(pgd_lines + [""] + check_lines)


STRONGEST = ("clean", "jpeg-10", "thumb-8", "crop-20", "gaussian-0.3")


def stability_table(compare: Path, results: dict) -> str:
    """Stability against every other method on clean images and each family's strongest setting: the paired
    two-level bootstrap of the accuracy difference (seeds and test images resampled), as compare's claims."""
    from stabletrain.compare import _unpack
    from stabletrain.stats import paired_bootstrap, verdict

    seeds = results["config"]["seeds"]
    evaluated = {(m, s): json.loads((compare / "models" / f"{m}-s{s}" / "evaluation.json").read_text())["result"]
                 for m in results["config"]["methods"] for s in seeds}
    lines = ["| stability − | " + " | ".join(STRONGEST) + " |", "|---|" + "---|" * len(STRONGEST)]
    for other in results["config"]["methods"]:
        if other == "stability":
            continue
        cells = []
        for spec in STRONGEST:
            a = np.stack([_unpack(evaluated[("stability", s)], spec) for s in seeds])
            b = np.stack([_unpack(evaluated[(other, s)], spec) for s in seeds])
            difference, low, high = paired_bootstrap(a, b, seed=0)
            threshold = -0.01 if spec == "clean" else 0.0
            cells.append(f"{100 * difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}], "
                         f"{verdict(low, high, threshold)}")
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, required=True, help="the compare run's folder (results.json)")
    parser.add_argument("--masking", type=Path, required=True, help="gradient_masking_check.py's --out folder")
    args = parser.parse_args()
    results = json.loads((args.compare / "results.json").read_text())
    print(accuracy_table(results))
    print()
    print(attack_table(results, args.masking))
    print()
    print(stability_table(args.compare, results))


if __name__ == "__main__":
    main()
