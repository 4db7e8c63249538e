"""Sweep of sigma and alpha for stability-trained embedders (triplet ranking on photo tiles).

Chooses the similarity demo's defaults; the outcome is in ``docs/results.md``.
Resumable: finished runs are loaded, not retrained.

    python experiments/sweep_similarity.py --epochs 8 --seeds 0 --out runs/sweep-similarity
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stabletrain.data import load_patches
from stabletrain.files import write_csv
from stabletrain.similarity import build_benchmark, evaluate_similarity
from stabletrain.training import TrainConfig, load_checkpoint, load_model, train


def grid() -> list[dict]:
    runs = [{"method": "plain"}] + [{"method": "gaussian", "sigma": s} for s in (0.05, 0.1, 0.2)]
    runs += [{"method": "stability", "sigma": s, "alpha": a} for s in (0.1, 0.2) for a in (1.0, 4.0)]
    return runs


def label(run: dict) -> str:
    return "-".join([run["method"]] + [f"{k}{run[k]:g}" for k in ("sigma", "alpha") if k in run])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="runs/sweep-similarity")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = load_patches("photos")
    benchmark = build_benchmark(data)
    rows = []
    for run in grid():
        for seed in [int(s) for s in args.seeds.split(",")]:
            name = f"{label(run)}-s{seed}"
            ckpt = out / "models" / name / "checkpoint.pt"
            if not (ckpt.exists() and load_checkpoint(ckpt).get("complete")):
                train(TrainConfig(task="similarity", data="photos", epochs=args.epochs, seed=seed, **run),
                      ckpt.parent, resume=True, progress=False, data=data)
            model, _ = load_model(ckpt)
            result = evaluate_similarity({name: model}, benchmark, progress=False)
            summary = result["models"][name]
            row = {"config": label(run), "seed": seed, "distance_ratio": summary["distance_ratio"],
                   "ap_all": summary["average_precision_all"], "clean_triplet": summary["clean_triplet_accuracy"]}
            for r in result["rows"]:
                if r["level"] == "family":
                    row[f"ap_{r['family']}"] = r["average_precision"]
                    row[f"p1_{r['family']}"] = r["precision_at_1"]
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            write_csv(out / "sweep.csv", rows)


if __name__ == "__main__":
    main()
