"""Certification throughput: noisy samples per second through the same model, stabletrain against the reference loop.

The reference is locuslab/smoothing's ``core.py`` (Cohen, Rosenfeld and
Kolter, 2019), ``Smooth._sample_noise``: for one image at a time, batches of
``batch_size`` copies (``x.repeat``), ``randn_like(batch) * sigma`` added, the
base classifier's argmax counted. It is written here the same way
(:func:`reference_counts`), with the reference's defaults (batch 1000) and at
the reference's ``N = 100,000`` samples per image.

stabletrain's :func:`stabletrain.smoothing.sample_counts` is timed on the same
images and model, with its two kinds of noise (a ``torch.Generator``, and the
per-image streams the evaluation suite uses, which make the certificate
independent of batch size), and with its speed options: ``channels_last`` and
``amp='bf16'``. As the fairest reference, the reference loop is also timed with
the same two options applied by hand (channels-last weights and batches,
bfloat16 autocast). Each variant certifies the same images; the counts of the
top class under bfloat16 are compared with float32's on the same noise.

Models: the digits SmallCNN (1×32×32, trained a few epochs, seeded) and timm's
resnet18 (3×32×32, 10 classes, random weights; throughput does not depend on
them).

    python benchmarks/bench_certify.py --write-docs            # CPU, 1 thread
    python benchmarks/bench_certify.py --device cuda --threads 8   # a GPU, where one is available
    python benchmarks/bench_certify.py --quick                 # smoke run

Results go to ``benchmarks/results/certify.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _docs import replace_block
from stabletrain.files import write_json
from stabletrain.seeding import ExampleRNG
from stabletrain.smoothing import sample_counts

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- certify:start -->", "<!-- certify:end -->"
SIGMA = 0.25


def reference_counts(model: nn.Module, x: torch.Tensor, num: int, batch_size: int, num_classes: int,
                     amp: bool = False, channels_last: bool = False) -> torch.Tensor:
    """locuslab/smoothing core.py ``_sample_noise`` for each image of ``x`` (``amp``/``channels_last``: by hand)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    out = []
    with torch.no_grad(), autocast:
        for image in x:
            counts = torch.zeros(num_classes, dtype=torch.long, device=x.device)
            remaining = num
            for _ in range(math.ceil(num / batch_size)):
                this = min(batch_size, remaining)
                remaining -= this
                batch = image.unsqueeze(0).repeat((this, 1, 1, 1)).contiguous(memory_format=layout)
                noise = torch.randn_like(batch) * SIGMA
                predictions = model(batch + noise).argmax(1)
                counts += torch.bincount(predictions, minlength=num_classes)
            out.append(counts)
    return torch.stack(out)


def models(device: torch.device) -> dict[str, tuple[nn.Module, torch.Tensor, int]]:
    """name → (model in eval mode, images, classes)."""
    import timm

    from stabletrain.training import TrainConfig, train

    run = train(TrainConfig(data="digits", method="plain", epochs=6, seed=0), ROOT / "runs" / "bench-certify-model",
                overwrite=True, progress=False)
    torch.manual_seed(0)
    resnet = timm.create_model("resnet18", num_classes=10)
    photos = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return {"SmallCNN (digits, 1×32×32)": (run.model.eval().to(device), run.data.test.x[:4].to(device), 10),
            "timm resnet18 (3×32×32)": (resnet.eval().to(device), photos.to(device), 10)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="noise samples per image (default 100,000)")
    parser.add_argument("--images", type=int, default=1, help="images certified per variant (default 1)")
    parser.add_argument("--batch", type=int, default=1000, help="copies per forward pass (the reference's default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = 4000 if args.quick else args.n
    results: dict[str, Any] = {}
    for name, (model, images, classes) in models(device).items():
        x = images[: args.images]

        def generator() -> torch.Generator:
            return torch.Generator(device=device).manual_seed(0)

        def streams() -> ExampleRNG:
            return ExampleRNG.for_examples(range(len(x)), 0, "bench-certify", device=device)

        variants: dict[str, Callable[[], torch.Tensor]] = {
            "reference (core.py loop)": lambda: reference_counts(model, x, n, args.batch, classes),
            "stabletrain": lambda: sample_counts(model, x, n, SIGMA, batch_size=args.batch, generator=generator()),
            "stabletrain, per-image streams": lambda: sample_counts(model, x, n, SIGMA, batch_size=args.batch,
                                                                    generator=streams()),
            "stabletrain, channels-last": lambda: sample_counts(model, x, n, SIGMA, batch_size=args.batch,
                                                                generator=streams(), channels_last=True),
            "stabletrain, bf16": lambda: sample_counts(model, x, n, SIGMA, batch_size=args.batch,
                                                       generator=streams(), amp="bf16"),
            "stabletrain, bf16 + channels-last": lambda: sample_counts(
                model, x, n, SIGMA, batch_size=args.batch, generator=streams(), amp="bf16", channels_last=True),
            "reference loop, bf16 + channels-last by hand": lambda: reference_counts(
                model, x, n, args.batch, classes, amp=True, channels_last=True),
        }
        rows: dict[str, dict[str, float]] = {}
        counts: dict[str, torch.Tensor] = {}
        for label, variant in variants.items():
            fast_layout = "channels-last" in label
            if fast_layout and "reference" in label:
                model.to(memory_format=torch.channels_last)
            with torch.no_grad():  # warm-up: kernels, allocator
                variant_x = x[:1].repeat(args.batch, 1, 1, 1)
                model(variant_x.contiguous(memory_format=torch.channels_last) if fast_layout else variant_x)
            _sync(device)
            start = time.perf_counter()
            counts[label] = variant().cpu()
            _sync(device)
            seconds = time.perf_counter() - start
            model.to(memory_format=torch.contiguous_format)
            rows[label] = {"samples_per_second": n * len(x) / seconds, "seconds": seconds}
            print(f"{name}: {label:46s} {n * len(x) / seconds:9.0f} samples/s", flush=True)
        base = rows["reference (core.py loop)"]["samples_per_second"]
        for row in rows.values():
            row["vs_reference"] = row["samples_per_second"] / base
        top = counts["stabletrain, per-image streams"].argmax(1, keepdim=True)
        agreement = {label: int((counts[label].gather(1, top) - counts["stabletrain, per-image streams"].gather(1, top))
                                .abs().max()) for label in variants if label.startswith("stabletrain, ")}
        results[name] = {"rows": rows, "top_class_count_change_vs_float32": agreement}
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.machine()}), {args.threads} thread{'s' if args.threads > 1 else ''}",
            "n": n, "images": args.images, "batch": args.batch, "sigma": SIGMA, "quick": args.quick}
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    write_json(ROOT / "benchmarks" / "results" / f"certify{suffix}.json", {"meta": meta, "results": results})
    lines = [f"Noisy samples per second through the same model: N = {n:,} samples of σ = {SIGMA} noise per image, "
             f"{args.images} image{'s' if args.images > 1 else ''} per variant, batches of {args.batch}, "
             f"{meta['device']}, torch {meta['torch']}. The reference is locuslab/smoothing `core.py`'s "
             "`_sample_noise` loop written the same way; it is also given bfloat16 autocast and channels-last by "
             "hand, as the fairest version of it. `python benchmarks/bench_certify.py --write-docs` regenerates "
             "this table.", ""]
    names = list(results)
    lines += ["| variant | " + " | ".join(f"{m}: samples/s | ×" for m in names) + " |",
              "|---|" + "---:|---:|" * len(names)]
    for label in results[names[0]]["rows"]:
        cells = [f"{results[m]['rows'][label]['samples_per_second']:,.0f} | "
                 f"{results[m]['rows'][label]['vs_reference']:.2f}" for m in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    change = "; ".join(f"{m}: " + ", ".join(f"{label.removeprefix('stabletrain, ')} {value}"
                                              for label, value in results[m]["top_class_count_change_vs_float32"].items())
                       for m in names)
    lines += ["", f"Change of the top class's count (of {n:,}) against float32 on the same per-image noise: {change}. "
              "Channels-last changes only the order of the convolution's sums; bfloat16 moves the predictions of "
              "noisy copies that lie near a decision boundary."]
    print("\n".join(lines))
    if args.write_docs and not args.quick:
        heading = "Certification throughput" + ("" if device.type == "cpu" else " on the GPU")
        start, end = (START, END) if device.type == "cpu" else (START.replace(":", "-gpu:"), END.replace(":", "-gpu:"))
        replace_block(start, end, [start, "", *lines, "", end], heading)


if __name__ == "__main__":
    main()
