"""Training throughput of jet taggers on a large jet file: jets per second of one epoch, images against clouds.

Trains each ``--models`` tagger with each ``--methods`` objective for one epoch on the training split of
``--data`` (80 % of the file: 80,000 jets of the 100,000-jet sample) through :func:`stabletrain.training.train`,
exactly as ``stabletrain train --task jets`` does: the rows are read lazily from the HDF5 file (h5py's chunk
cache), batches of ``--batch-size``, AdamW. The figure is the epoch's training time from the run's history
(forward, backward, optimizer and data reading; the test evaluation after the epoch is not counted), as jets
per second, and the process CPU time beside it.

    python benchmarks/bench_cloud_training.py --data runs/jets/w-n100000-seed100.h5 --write-docs

Writes ``benchmarks/results/cloud_training.json``. Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from stabletrain.training import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results" / "cloud_training.json"
START, END = "<!-- cloud-training:start -->", "<!-- cloud-training:end -->"


def measure(data: str, model: str, method: str, batch_size: int, width: int | None) -> dict:
    """One epoch of training; the test evaluation the loop runs after it is timed again and taken off."""
    from stabletrain.tasks import get_task

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(task="jets", data=data, model=model, method=method, epochs=1, batch_size=batch_size,
                             seed=0, model_args={"width": width} if width else {})
        cpu, wall = time.process_time(), time.perf_counter()
        result = train(config, Path(folder) / "run", progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        started = time.perf_counter()
        get_task("jets").evaluate(result.model, result.data)
        evaluation = time.perf_counter() - started
    epoch = result.history[-1]
    return {"model": model, "method": method, "batch_size": batch_size, "train_jets": len(result.data.train.y),
            "epoch_seconds": epoch["seconds"] - evaluation, "evaluation_seconds": evaluation,
            "wall_seconds": wall, "cpu_seconds": cpu, "test_auc_after_1_epoch": epoch.get("test_auc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", default="jet_cnn,pfn,efn,particlenet")
    parser.add_argument("--methods", default="plain,stability")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            row = measure(args.data, model, method, args.batch_size, None)
            row["jets_per_second"] = row["train_jets"] / row["epoch_seconds"]
            rows.append(row)
            print(f"{model:>12} {method:>10}: {row['jets_per_second']:8.0f} jets/s "
                  f"({row['epoch_seconds']:.1f} s for {row['train_jets']} jets; CPU {row['cpu_seconds']:.0f} s; "
                  f"test AUC after one epoch {row['test_auc_after_1_epoch']})", flush=True)
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "platform": platform.platform(), "processor": platform.processor()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"data": args.data, "machine": machine, "rows": rows}, indent=2) + "\n")
    if args.write_docs:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _docs import replace_block

        n_train = rows[0]["train_jets"] if rows else 0
        lines = [f"One epoch over the {n_train:,} training jets of `{Path(args.data).name}`, batch {args.batch_size}, "
                 f"AdamW, rows read lazily from the HDF5 file; {machine['cpus']} CPU cores, {machine['torch_threads']} "
                 f"torch threads, torch {machine['torch']}, no GPU (`python benchmarks/bench_cloud_training.py`).", "",
                 "| tagger | method | jets/s | epoch (s) | CPU (s) |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['method']} | {r['jets_per_second']:.0f} | {r['epoch_seconds']:.1f} | "
                  f"{r['cpu_seconds']:.0f} |" for r in rows]
        print(replace_block(START, END, lines, "Training jet taggers on 80,000 jets (issue 14)"))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f} s")
