"""Training throughput of jet taggers on a large jet file: jets per second of one epoch, images against clouds.

Trains each ``--models`` tagger with each ``--methods`` objective for one epoch on the training split of
``--data`` (80 % of the file: 80,000 jets of the 100,000-jet sample) through :func:`stabletrain.training.train`,
exactly as ``stabletrain train --task jets`` does, batches of ``--batch-size``, AdamW. The figure is the epoch's
training time from the run's history (forward, backward, optimizer and data reading; the test evaluation after
the epoch is not counted), as jets per second, and the process CPU time beside it.

``--readings`` chooses how the rows reach the model (each a separate row of the table):

* ``lazy``: read from the HDF5 file through the default decoded-chunk cache (``DEFAULT_CACHE_MB``), random
  batches: the default of ``stabletrain train --task jets``;
* ``lazy-small``: the same through a 64 MiB cache, smaller than the training set, as for a file that does not
  fit: random batches then touch about 250 storage chunks each;
* ``lazy-small-blocks``: the 64 MiB cache with the block shuffle (``--shuffle-block 256``), which reads each
  storage chunk about once per epoch;
* ``memory`` (images only): the images read whole first (``load_jets(lazy=False)``; the load is not counted).

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


READINGS = ("lazy", "lazy-small", "lazy-small-blocks", "memory")
SMALL_CACHE_MB = 64


def _split(data: str, model: str, reading: str):
    """The train/test split of ``data`` as ``reading`` reads it (``None`` for ``memory`` with clouds)."""
    from stabletrain.jets import data as jets_data
    from stabletrain.jets.clouds import load_clouds
    from stabletrain.jets.tagging import JetTaggingTask

    jets_data._DECODED.clear()   # every reading starts from a cold cache
    cache = SMALL_CACHE_MB if reading.startswith("lazy-small") else jets_data.DEFAULT_CACHE_MB
    if JetTaggingTask().is_cloud_model(model):
        return None if reading == "memory" else load_clouds(data, cache_mb=cache)
    return jets_data.load_jets(data, lazy=reading != "memory", cache_mb=cache)


def measure(data: str, model: str, method: str, batch_size: int, width: int | None, reading: str = "lazy") -> dict:
    """One epoch of training; the test evaluation the loop runs after it is timed again and taken off."""
    from stabletrain.tasks import get_task

    with tempfile.TemporaryDirectory() as folder:
        split = _split(data, model, reading)
        options = {"shuffle_block": 256} if reading.endswith("blocks") else {}
        config = TrainConfig(task="jets", data=data, model=model, method=method, epochs=1, batch_size=batch_size,
                             seed=0, model_args={"width": width} if width else {}, **options)
        cpu, wall = time.process_time(), time.perf_counter()
        result = train(config, Path(folder) / "run", progress=False, data=split)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        started = time.perf_counter()
        get_task("jets").evaluate(result.model, result.data)
        evaluation = time.perf_counter() - started
    epoch = result.history[-1]
    return {"model": model, "method": method, "reading": reading, "batch_size": batch_size,
            "train_jets": len(result.data.train.y),
            "epoch_seconds": epoch["seconds"] - evaluation, "evaluation_seconds": evaluation,
            "wall_seconds": wall, "cpu_seconds": cpu, "test_auc_after_1_epoch": epoch.get("test_auc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", default="jet_cnn,pfn,efn,particlenet")
    parser.add_argument("--methods", default="plain,stability")
    parser.add_argument("--readings", default="lazy", help=f"comma-separated, of {', '.join(READINGS)}")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    readings = args.readings.split(",")
    if set(readings) - set(READINGS):
        parser.error(f"unknown reading(s) {', '.join(sorted(set(readings) - set(READINGS)))}")
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            for reading in readings:
                if reading == "memory" and model in ("pfn", "efn", "particlenet"):
                    continue   # clouds are always read from the file
                row = measure(args.data, model, method, args.batch_size, None, reading)
                row["jets_per_second"] = row["train_jets"] / row["epoch_seconds"]
                rows.append(row)
                print(f"{model:>12} {method:>10} {reading:>17}: {row['jets_per_second']:8.0f} jets/s "
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
                 f"AdamW; {machine['cpus']} CPU cores, {machine['torch_threads']} torch threads, torch "
                 f"{machine['torch']}, no GPU (`python benchmarks/bench_cloud_training.py --readings "
                 f"{args.readings}`). Readings: `lazy` = from the file through the default "
                 f"decoded-chunk cache, random batches; `lazy-small` = a {SMALL_CACHE_MB} MiB cache, smaller than "
                 f"the training set; `-blocks` = with `--shuffle-block 256`; `memory` = images read whole first.", "",
                 "| tagger | method | reading | jets/s | epoch (s) | CPU (s) |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['method']} | {r['reading']} | {r['jets_per_second']:.0f} | "
                  f"{r['epoch_seconds']:.1f} | {r['cpu_seconds']:.0f} |" for r in rows]
        print(replace_block(START, END, lines, "Training jet taggers on 80,000 jets (issue 14)"))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f} s")
