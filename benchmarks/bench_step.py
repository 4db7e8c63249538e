"""Time one training step of plain, gaussian and stability training on the same batch.

Stability training runs the model on two copies of the batch, so two forward
and backward passes are its natural cost: the aim is a ratio of at most 2.0
to a plain step. The two copies can go through the model as two separate
passes or as one concatenated pass; both are timed, per device.
``batching='auto'`` does not pick by speed: it picks ``separate`` for
batch-norm models (concat would mix both copies into the statistics) and
``concat`` otherwise, so the same config trains the same objective on every
device.

    python benchmarks/bench_step.py                 # CPU (and CUDA if present)
    python benchmarks/bench_step.py --write-docs    # also update docs/benchmarks.md

Results go to ``benchmarks/results/step_timing.json``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from _docs import replace_block
from stabletrain.files import write_json
from stabletrain.models import SmallCNN
from stabletrain.objectives import build_objective

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- step-timing:start -->", "<!-- step-timing:end -->"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(method: str, batching: str, device: torch.device, batch: int, channels: int, size: int,
              width: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = SmallCNN(channels, 10, width=width).to(device)
    # each method takes only its own options; concat on a batch-norm model needs bn_stats='both'
    options = {"plain": {}, "gaussian": {"sigma": 0.1}}.get(
        method, {"alpha": 1.0, "sigma": 0.1, "batching": batching, "bn_stats": "both" if batching == "concat"
                 else "clean"})
    objective = build_objective(method, **options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        loss = objective(model, x, y, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def time_block(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    """Median seconds per step over ``steps`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per block")
    parser.add_argument("--blocks", type=int, default=5, help="round-robin blocks per configuration")
    parser.add_argument("--batches", default="64,128")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    configs = [("plain", "separate"), ("gaussian", "separate"), ("stability", "separate"), ("stability", "concat")]
    results = []
    for device in devices:
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else \
            f"CPU ({platform.machine()}), {torch.get_num_threads()} threads"
        for batch in [int(b) for b in args.batches.split(",")]:
            for channels in (1, 3):
                steps = {cfg: make_step(*cfg, device, batch, channels, 32, 32) for cfg in configs}
                # Blocks run round-robin over the configurations, so a burst of load from another process
                # hits all of them alike; the fastest block of each is the least disturbed measurement.
                blocks: dict[tuple[str, str], list[float]] = {cfg: [] for cfg in configs}
                for _ in range(args.blocks):
                    for cfg, step in steps.items():
                        blocks[cfg].append(time_block(step, device, args.steps, args.warmup))
                base = min(blocks[("plain", "separate")])
                for (method, batching), values in blocks.items():
                    best = min(values)
                    results.append({"device": device.type, "device_name": name, "batch": batch,
                                    "channels": channels, "method": method, "batching": batching,
                                    "ms_per_step": 1000 * best, "ms_median_of_blocks": 1000 * statistics.median(values),
                                    "ratio_to_plain": best / base})
                    print(f"{device.type} B={batch} C={channels} {method:9s} {batching:8s} "
                          f"{1000 * best:7.1f} ms (median block {1000 * statistics.median(values):7.1f})  "
                          f"×{best / base:.2f}", flush=True)
    meta = {"torch": str(torch.__version__), "python": platform.python_version(), "model": "SmallCNN width 32",
            "image": "32×32", "steps": args.steps, "warmup": args.warmup, "blocks": args.blocks}
    write_json(ROOT / "benchmarks" / "results" / "step_timing.json", {"meta": meta, "results": results})
    if args.write_docs:
        lines = [START, "",
                 f"SmallCNN (width 32, {sum(p.numel() for p in SmallCNN(3, 10).parameters()):,} parameters), 32×32 "
                 f"images, one optimizer step (forward, backward, AdamW) on a fixed batch. Each configuration ran "
                 f"{args.blocks} blocks of {args.steps} timed steps, round-robin with the others; the table gives "
                 f"the fastest block's median (the least disturbed by other load) and the median over blocks. "
                 f"torch {meta['torch']}.",
                 "", "| device | batch | channels | method | batching | ms / step | median of blocks | × plain |",
                 "|---|---:|---:|---|---|---:|---:|---:|"]
        for r in results:
            lines.append(f"| {r['device_name']} | {r['batch']} | {r['channels']} | {r['method']} | {r['batching']} | "
                         f"{r['ms_per_step']:.1f} | {r['ms_median_of_blocks']:.1f} | {r['ratio_to_plain']:.2f} |")
        lines += ["", END]
        doc = replace_block(START, END, lines, "Cost of a stability-training step")
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
