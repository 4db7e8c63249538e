"""Markdown table of the alpha/sigma sweep (mean ± std over seeds) from ``sweep.csv``.

    python experiments/summarize_sweep.py runs/sweep/sweep.csv > runs/sweep/sweep.md
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict

COLUMNS = ["clean", "jpeg-10", "thumb-12", "thumb-8", "crop-10", "crop-20", "gaussian-0.1", "gaussian-0.3"]


def main(path: str) -> None:
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, list[float]] = defaultdict(list)
    for row in csv.DictReader(open(path)):
        cfg = row["config"]
        values[cfg][row["distortion"]].append(100 * float(row["accuracy"]))
        if row["distortion"] == "clean":
            seconds[cfg].append(float(row["train_seconds"]))
    print("| config | " + " | ".join(COLUMNS) + " | mean of all 17 distortions | train s |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    for cfg, per_spec in values.items():
        cells = []
        for col in COLUMNS:
            v = per_spec[col]
            cells.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0:.1f}")
        distorted = [statistics.mean(v) for spec, v in per_spec.items() if spec != "clean"]
        print(f"| {cfg} | " + " | ".join(cells) + f" | {statistics.mean(distorted):.1f} | "
              f"{statistics.mean(seconds[cfg]):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
