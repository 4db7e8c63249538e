"""Data-parallel scaling on this machine: training images/s with 1 process and with 2 gloo processes.

Each configuration trains SmallCNN (width 32) on 32×32 synthetic images with the global batch fixed, through
the same pieces as ``stabletrain train``: ObjectiveStep wrapped in DDP, the distributed batch sampler and the
sharded noise. Configurations run round-robin for ``--rounds`` rounds; the table gives the fastest round
(the least disturbed by other load) and the median round.

    python benchmarks/bench_ddp.py                  # prints the table
    python benchmarks/bench_ddp.py --write-docs     # also updates docs/scaling.md

Results go to ``benchmarks/results/ddp_scaling.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stabletrain.distributed import DistContext, DistributedBatchSampler, ObjectiveStep, free_port, wrap_ddp
from stabletrain.files import atomic_write_text, write_json
from stabletrain.models import SmallCNN
from stabletrain.objectives import build_objective
from stabletrain.perturbations import noise_shard

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"
START, END = "<!-- ddp-scaling:start -->", "<!-- ddp-scaling:end -->"


def _worker(rank: int, world: int, port: int, threads: int, method: str, batch: int, steps: int, warmup: int,
            results: dict) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    torch.manual_seed(0)
    model = SmallCNN(3, 10, width=32)
    options = {} if method == "plain" else {"sigma": 0.1} if method == "gaussian" else \
        {"alpha": 1.0, "sigma": 0.1, "batching": "separate"}
    objective = build_objective(method, **options)
    runner = wrap_ddp(ObjectiveStep(model, objective), ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.rand(batch * 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(batch * 4) % 10
    batches = [torch.arange(i * batch, (i + 1) * batch) for i in range(4)] * ((steps + warmup) // 4 + 1)
    noise = torch.Generator().manual_seed(0)
    started = 0.0
    for shard in DistributedBatchSampler(batches[: steps + warmup], rank, world):
        if shard.step == warmup:
            if world > 1:
                dist.barrier()
            started = time.perf_counter()
        context = noise_shard(shard.offset, len(shard.index), shard.total) if world > 1 else _null()
        with context:
            loss = runner(data[shard.index], labels[shard.index], generator=noise)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        results["seconds"] = time.perf_counter() - started


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def measure(world: int, threads: int, method: str, batch: int, steps: int, warmup: int) -> float:
    """Images per second of one configuration."""
    results = mp.Manager().dict()
    args = (world, free_port(), threads, method, batch, steps, warmup, results)
    if world == 1:
        _worker(0, *args)
    else:
        mp.spawn(_worker, args=args, nprocs=world, join=True)
    return batch * steps / results["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    setups = [(1, cores, f"1 process × {cores} threads"), (1, 1, "1 process × 1 thread"),
              (2, max(1, cores // 2), f"2 gloo processes × {max(1, cores // 2)} thread(s)")]
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for method in ("plain", "stability"):
            for world, threads, label in setups:
                rate = measure(world, threads, method, args.batch, args.steps, args.warmup)
                runs.setdefault((method, label), []).append(rate)
                print(f"{method:9s} {label:32s} {rate:7.1f} images/s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for method in ("plain", "stability"):
        base = max(runs[(method, setups[0][2])])
        for _, _, label in setups:
            rates = runs[(method, label)]
            rows.append({"method": method, "setup": label, "best_images_per_s": max(rates),
                         "median_images_per_s": statistics.median(rates), "vs_one_process": max(rates) / base})
    info = {"cpu": platform.processor() or platform.machine(), "cores": cores, "torch": torch.__version__,
            "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "load_average_1min_after": load}
    write_json(ROOT / "benchmarks" / "results" / "ddp_scaling.json", {"info": info, "rows": rows})
    lines = [f"SmallCNN (width 32), 3×32×32 synthetic images, global batch {args.batch}, {args.steps} timed "
             f"steps after {args.warmup} warm-up steps, {args.rounds} rounds round-robin; torch {torch.__version__}, "
             f"{cores} CPU cores. Load average after the run: {load:.1f} (other jobs shared the machine).", "",
             f"| method | setup | images/s (best round) | images/s (median) | × 1 process × {cores} threads |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['setup']} | {r['best_images_per_s']:.0f} | {r['median_images_per_s']:.0f} | "
              f"{r['vs_one_process']:.2f} |" for r in rows]
    print("\n".join(lines))
    if args.write_docs:
        text = DOC.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        atomic_write_text(DOC, head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


if __name__ == "__main__":
    main()
