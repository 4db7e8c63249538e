"""The seed's claims C1-C7 at a glance (docs/results.md, the first table), from the runs of the claims scripts.

Reads ``RUNS/claims-digits/results.json`` and ``RUNS/claims-photos/results.json`` (experiments/claims.py),
``RUNS/finetune-claims/claims.json`` (experiments/finetune_claims.py) and
``RUNS/similarity-claims/claims.json`` and ``RUNS/similarity-claims-group/claims.json``
(experiments/similarity_claims.py, BatchNorm and ``--norm group``); a run that is missing is left out.

    python experiments/claims_summary.py --runs runs
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from stabletrain.stats import format_interval

NORMS = {"batch": "BatchNorm", "group": "GroupNorm"}
#: Rows of the table; every difference is arm - reference (for C3: stability - gaussian, so > 0 means a cost).
CLASSIFICATION = [  # (claim, arm, reference, distortion or None for clean)
    ("C1 stability's clean accuracy within 1 point of plain's", "stability", "plain", "clean"),
    ("C2 stability beats plain on jpeg-10", "stability", "plain", "jpeg-10"),
    ("C2 stability beats plain on thumb-8", "stability", "plain", "thumb-8"),
    ("C2 stability beats plain on crop-20", "stability", "plain", "crop-20"),
    ("C2 stability beats plain on gaussian-0.3", "stability", "plain", "gaussian-0.3"),
    ("C3 augmentation (fair `gaussian`) costs clean accuracy against stability", "stability", "gaussian", "clean"),
    ("stability beats the fair `gaussian` on thumb-8", "stability", "gaussian", "thumb-8"),
    ("stability beats the fair `gaussian` on crop-20", "stability", "gaussian", "crop-20"),
    ("stability beats the fair `gaussian` on gaussian-0.3", "stability", "gaussian", "gaussian-0.3"),
    ("noisy-only `gaussian-noisy` costs clean accuracy against plain", "gaussian-noisy", "plain", "clean"),
]


def _split(label: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"(.*) \((\w+)\)", label)
    return (match.group(1), match.group(2)) if match else (label, None)


def _cell(c: dict) -> str:
    return f"{c['verdict']}: {format_interval(c['difference'], c['low'], c['high'], signed=True)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    args = parser.parse_args()
    columns: list[tuple[str, str]] = []
    cells: dict[tuple[str, str, str], dict] = {}
    for data in ("digits", "photos"):
        path = args.runs / f"claims-{data}" / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        for c in results["claims"]:
            arm, norm = _split(c["arm"])
            ref, _ = _split(c["reference"])
            if (data, norm) not in columns:
                columns.append((data, norm))
            cells[(f"{data}/{norm}", arm, ref, c["distortion"])] = c
    head = "| claim (difference in points, 95 % interval) | " + " | ".join(f"{d}, {NORMS.get(n, n)}" for d, n in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for claim, arm, ref, spec in CLASSIFICATION:
        row = []
        for data, norm in columns:
            key = f"{data}/{norm}"
            if claim.startswith("C3"):  # the compare claim is stability - gaussian; the cost is its sign
                c = cells.get((key, "stability", "gaussian", "clean"))
                row.append("–" if c is None else
                           f"{'held' if c['low'] > 0 else 'did not hold' if c['high'] < 0 else 'within noise'}: "
                           f"{format_interval(c['difference'], c['low'], c['high'], signed=True)}")
                continue
            if claim.startswith("noisy-only"):
                c = cells.get((key, arm, ref, spec))
                row.append("–" if c is None else
                           f"{'held' if c['high'] < 0 else 'did not hold' if c['low'] > 0 else 'within noise'}: "
                           f"{format_interval(c['difference'], c['low'], c['high'], signed=True)}")
                continue
            c = cells.get((key, arm, ref, spec))
            row.append("–" if c is None else _cell(c))
        lines.append(f"| {claim} | " + " | ".join(row) + " |")
    text = "\n".join(lines)
    extra = []
    finetune = args.runs / "finetune-claims" / "claims.json"
    if finetune.exists():
        rows = json.loads(finetune.read_text())
        extra += ["", "| C7: fine-tuning a converged plain model with stability (8 epochs) | data, norm | "
                  "difference (points), 95 % interval | verdict | seeds × images |", "|---|---|---|---|---|"]
        for r in rows:
            if r["comparison"].startswith("plain fine-tune") or r["measure"] not in (
                    "clean", "unseen (mean of jpeg, thumb, crop)"):
                continue
            against = "the base model" if r["comparison"].endswith("base") else "plain fine-tuning (the control)"
            what = (f"clean accuracy within 1 point of {against}" if r["measure"] == "clean"
                    else f"better than {against} on unseen distortions (mean of jpeg, thumb, crop)")
            extra.append(f"| {what} | {r['data']}, {r['norm']} | "
                         f"{format_interval(r['difference'], r['low'], r['high'], signed=True)} | {r['verdict']} | "
                         f"{r['seeds']} × {r['test_images']} |")
    norms = {"BatchNorm": args.runs / "similarity-claims" / "claims.json",
             "GroupNorm": args.runs / "similarity-claims-group" / "claims.json"}
    found = {norm: json.loads(path.read_text()) for norm, path in norms.items() if path.exists()}
    if found:
        extra += ["", "| C4–C6 (photos embedders), difference, 95 % interval | " + " | ".join(found) + " |",
                  "|---|" + "---|" * len(found)]
        claims = list(dict.fromkeys(r["claim"] for rows in found.values() for r in rows
                                    if r["claim"].startswith(("stability", "gaussian "))))
        for claim in claims:
            cells = []
            for rows in found.values():
                r = next((r for r in rows if r["claim"] == claim), None)
                cells.append(f"{r['verdict']}: {format_interval(r['difference'], r['low'], r['high'], percent=False, digits=3, signed=True)}"
                             if r else "not run")
            extra.append(f"| {claim} | " + " | ".join(cells) + " |")
    print(text + "\n" + "\n".join(extra))


if __name__ == "__main__":
    main()
