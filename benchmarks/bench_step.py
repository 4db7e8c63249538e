"""Time one training step of plain, gaussian and stability training on the same batch.

Stability training runs the model on two copies of the batch, so two forward
and backward passes are its natural cost: the aim is a ratio of at most 2.0
to a plain step. The two copies can go through the model as two separate
passes or as one concatenated pass; both are timed, per device, and the
faster one is what ``batching='auto'`` picks.

    python benchmarks/bench_step.py                 # CPU (and CUDA if present)
    python benchmarks/bench_step.py --write-docs    # also update docs/benchmarks.md

Results go to ``benchmarks/results/step_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from stabletrain.files import atomic_write_text, write_json
from stabletrain.models import SmallCNN
from stabletrain.objectives import build_objective

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- step-timing:start -->", "<!-- step-timing:end -->"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(method: str, batching: str, device: torch.device, batch: int, channels: int, size: int,
               width: int, steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = SmallCNN(channels, 10, width=width).to(device)
    objective = build_objective(method, alpha=1.0, sigma=0.1, batching=batching)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        loss = objective(model, x, y, generator=generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--batches", default="64,128")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    configs = [("plain", "separate"), ("gaussian", "separate"), ("stability", "separate"), ("stability", "concat")]
    results = []
    for device in devices:
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        for batch in [int(b) for b in args.batches.split(",")]:
            for channels in (1, 3):
                base = None
                for method, batching in configs:
                    times = time_steps(method, batching, device, batch, channels, 32, 32, args.steps, args.warmup)
                    median = statistics.median(times)
                    q = statistics.quantiles(times, n=4)
                    base = median if method == "plain" else base
                    results.append({"device": device.type, "device_name": name, "batch": batch,
                                    "channels": channels, "method": method, "batching": batching,
                                    "median_ms": 1000 * median, "q1_ms": 1000 * q[0], "q3_ms": 1000 * q[2],
                                    "ratio_to_plain": median / base})
                    print(f"{device.type} B={batch} C={channels} {method:9s} {batching:8s} "
                          f"{1000 * median:7.1f} ms  ×{median / base:.2f}", flush=True)
    meta = {"torch": str(torch.__version__), "python": platform.python_version(), "model": "SmallCNN width 32",
            "image": "32×32", "steps": args.steps, "warmup": args.warmup}
    write_json(ROOT / "benchmarks" / "results" / "step_timing.json", {"meta": meta, "results": results})
    if args.write_docs:
        lines = [START, "",
                 f"SmallCNN (width 32, {sum(p.numel() for p in SmallCNN(3, 10).parameters()):,} parameters), 32×32 "
                 f"images, one optimizer step (forward, backward, AdamW) on a fixed batch; median of {args.steps} "
                 f"steps after {args.warmup} warm-up steps, interquartile range in brackets. torch {meta['torch']}.",
                 "", "| device | batch | channels | method | batching | ms / step | × plain |",
                 "|---|---:|---:|---|---|---:|---:|"]
        for r in results:
            lines.append(f"| {r['device_name']} | {r['batch']} | {r['channels']} | {r['method']} | {r['batching']} | "
                         f"{r['median_ms']:.1f} [{r['q1_ms']:.1f}–{r['q3_ms']:.1f}] | {r['ratio_to_plain']:.2f} |")
        lines += ["", END]
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text() if doc.exists() else "# Benchmarks\n\n" + START + "\n" + END + "\n"
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        atomic_write_text(doc, head + "\n".join(lines) + tail)
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
