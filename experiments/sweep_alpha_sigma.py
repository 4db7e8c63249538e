"""Sweep of alpha and sigma for stability training, against plain and Gaussian augmentation.

Chooses the defaults of ``stabletrain demo``; the outcome is recorded in
``docs/results.md``. Resumable: finished runs are loaded, not retrained.

    python experiments/sweep_alpha_sigma.py --data digits --epochs 15 --seeds 0,1,2 --out runs/sweep
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from stabletrain.data import load_data
from stabletrain.distortions import paper_sweep, parse_distortions
from stabletrain.evaluation import evaluate_distortions
from stabletrain.files import write_csv, write_json
from stabletrain.training import TrainConfig, load_checkpoint, load_model, train


def grid() -> list[dict]:
    runs = [{"method": "plain"}]
    runs += [{"method": "gaussian", "sigma": s} for s in (0.05, 0.1, 0.2)]
    runs += [{"method": "stability", "sigma": 0.04, "alpha": 0.01}]  # the paper's values
    runs += [{"method": "stability", "sigma": s, "alpha": a} for s in (0.05, 0.1, 0.2) for a in (0.1, 1.0, 4.0)]
    return runs


def label(run: dict) -> str:
    parts = [run["method"]] + [f"{k}{run[k]:g}" for k in ("sigma", "alpha") if k in run]
    return "-".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = load_data(args.data)
    sweep = parse_distortions(paper_sweep(data.image_size[0]))
    rows = []
    for run in grid():
        for seed in [int(s) for s in args.seeds.split(",")]:
            name = f"{label(run)}-s{seed}"
            run_dir = out / "models" / name
            ckpt = run_dir / "checkpoint.pt"
            if not (ckpt.exists() and load_checkpoint(ckpt).get("complete")):
                config = TrainConfig(data=args.data, epochs=args.epochs, seed=seed, **run)
                train(config, run_dir, resume=True, progress=False, data=data)
            model, checkpoint = load_model(ckpt)
            for row in evaluate_distortions({name: model}, data.test, sweep, seed=seed, progress=False):
                rows.append({**row, "config": label(run), "seed": seed,
                             "train_seconds": checkpoint["train_seconds"]})
            print(name, "done", flush=True)
    write_csv(out / "sweep.csv", rows)
    summary = {}
    for cfg in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == cfg]
        entry = {}
        for spec in dict.fromkeys(r["distortion"] for r in mine):
            values = [r["accuracy"] for r in mine if r["distortion"] == spec]
            entry[spec] = {"mean": statistics.mean(values),
                           "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        entry["train_seconds"] = statistics.mean(r["train_seconds"] for r in mine if r["distortion"] == "clean")
        summary[cfg] = entry
    write_json(out / "sweep.json", summary)


if __name__ == "__main__":
    main()
