"""Streamed image data at 224 px: throughput, memory, and the cost of the paper sweep.

Everything runs on generated JPEGs: smooth random images (several octaves of
low-frequency noise, upsampled, plus a little grain) saved by Pillow at
quality 90, 500 px on the long side like most ImageNet photos, so they decode
and compress like photographs. They are written once into ``--data-dir``
(default under /tmp) and reused while their settings match.

Sections (``--only`` picks some; the others keep their previous results in
the JSON file):

``data``   Data-only throughput (images/s) of three loaders with the same
           workers and batch size, iterated without a model: stabletrain's
           streaming pipeline (``load_stream`` → ``ImageFiles`` +
           ``TrainTransform`` → ``make_loader``; uint8 batches converted to
           float in the main process, as ``train()`` does), the same with the
           Pillow JPEG decoder, and a hand-built tutorial pipeline (a Dataset
           with ``PIL.Image.open(...).convert("RGB")``, torchvision's
           ``RandomResizedCrop`` + ``RandomHorizontalFlip`` + ``ToTensor``, a
           ``DataLoader(shuffle=True)``; float32 batches). Also the cost per
           image in one process (decode alone and decode + transform).
``train``  Training throughput (images/s) of a plain optimizer step
           (forward, backward, AdamW) of ResNet-18 fed by each pipeline, and
           of a stability-training step (``StabilityObjective``) fed by
           stabletrain's.
``rss``    Peak memory of one streamed epoch of ``stabletrain train`` in a
           subprocess, at two data set sizes: the summed RSS (and PSS) of
           the process and all its children, sampled from /proc.
``sweep``  The paper sweep (``paper_sweep(224)`` through ``evaluate_suites``)
           against one clean inference pass of the same model over the same
           streamed images, split into model and distortion time.
``gpu``    (``--device cuda`` only) bf16 stability step of ResNet-18 at
           224 px, separate against concat batching, and the corruption
           throughput on the GPU.

Configurations are run round-robin, so a burst of load from another
process hits all of them alike; tables give the least disturbed block and
the median over blocks.

    python benchmarks/bench_streaming.py                  # everything that fits the machine
    python benchmarks/bench_streaming.py --write-docs     # also update docs/benchmarks.md
    python benchmarks/bench_streaming.py --quick          # a fast smoke run

Results go to ``benchmarks/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from _docs import replace_block
from stabletrain.data.decode import _draft_scale, decoders, open_image
from stabletrain.data.streams import ImageFiles, iterate, load_stream, make_loader
from stabletrain.files import write_json
from stabletrain.models import create_model
from stabletrain.objectives import build_objective

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "streaming.json"
START, END = "<!-- streaming:start -->", "<!-- streaming:end -->"
SECTIONS = ("data", "train", "rss", "sweep", "gpu")
DATA_VERSION = 1  # bump when the generated images change
LONG_SIDE = 500
QUALITY = 90
CLASSES = 10
DECODER_ENV = "STABLETRAIN_JPEG_DECODER"


def log(text: str) -> None:
    print(text, flush=True)


def summary(values: list[float], higher_is_better: bool = True) -> dict:
    """Best (least disturbed), median, min and max of per-block values."""
    best = max(values) if higher_is_better else min(values)
    return {"best": best, "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


# ------------------------------------------------------------------------------------------- generated data


def _smooth_image(index: int) -> tuple[str, int, int, int]:
    """Write image ``index`` (a smooth random photo-like JPEG); returns (relative path, label, width, height)."""
    rng = np.random.default_rng([DATA_VERSION, index])
    short = int(rng.integers(333, 401))
    w, h = (LONG_SIDE, short) if rng.random() < 0.8 else (short, LONG_SIDE)
    out = np.empty((h, w, 3), np.float32)
    out[:] = 128 + rng.uniform(-30, 30, 3).astype(np.float32)
    for cells, amp in ((3, 80), (10, 50), (40, 28), (120, 14)):
        gw, gh = max(2, round(cells * w / max(w, h))), max(2, round(cells * h / max(w, h)))
        # mostly luminance (shared by the channels), some colour, as in photographs
        luma = rng.normal(0, 1, (gh, gw, 1))
        colour = rng.normal(0, 1, (gh, gw, 3))
        small = np.clip(128 + 40 * (0.8 * luma + 0.45 * colour), 0, 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
        out += (amp / 40) * (layer - 128)
    out += rng.normal(0, 5, (h, w, 1)).astype(np.float32) + rng.normal(0, 2, (h, w, 3)).astype(np.float32)
    label = index % CLASSES
    relative = f"images/c{label}/{index:05d}.jpg"
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(_GEN_ROOT / relative, "JPEG", quality=QUALITY)
    return relative, label, w, h


_GEN_ROOT = Path(".")


def _init_gen(root: str) -> None:
    global _GEN_ROOT
    _GEN_ROOT = Path(root)


def prepare_data(root: Path, count: int, small: int) -> dict:
    """Generate ``count`` JPEGs under ``root`` once; write file lists of all of them and of the first ``small``."""
    manifest_path = root / "manifest.json"
    settings = {"version": DATA_VERSION, "count": count, "long_side": LONG_SIDE, "quality": QUALITY,
                "classes": CLASSES}
    lists = {n: root / f"files_{n}.csv" for n in sorted({count, small})}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings and all(p.exists() for p in lists.values()):
            log(f"reusing {count} generated JPEGs in {root}")
            return manifest
    if root.exists():
        shutil.rmtree(root)
    for label in range(CLASSES):
        (root / "images" / f"c{label}").mkdir(parents=True)
    log(f"generating {count} JPEGs in {root} ...")
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1, _init_gen, (str(root),)) as pool:
        rows = pool.map(_smooth_image, range(count), chunksize=64)
    seconds = time.perf_counter() - started
    for n, path in lists.items():
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows((r[0], r[1]) for r in rows[:n])  # index % 10: the first n hold n/10 per class
    sizes = [os.path.getsize(root / r[0]) for r in rows]
    manifest = {"settings": settings, "generation_seconds": round(seconds, 1),
                "mean_file_kib": round(float(np.mean(sizes)) / 1024, 1),
                "total_mib": round(float(np.sum(sizes)) / 2 ** 20, 1),
                "sizes": sorted({f"{r[2]}x{r[3]}" for r in rows[:50]})[:6]}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"  {count} JPEGs in {seconds:.0f} s, {manifest['mean_file_kib']} KiB each on average")
    return manifest


# ------------------------------------------------------------------------------------------------ pipelines


class HandBuilt(Dataset):
    """The usual tutorial pipeline: PIL open + convert, torchvision RandomResizedCrop, flip, ToTensor (float32)."""

    def __init__(self, files: list[str], labels: list[int], size: int) -> None:
        from torchvision import transforms

        self.files, self.labels = files, labels
        self.transform = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                             transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.open(self.files[index]).convert("RGB")
        return self.transform(image), self.labels[index]


def stabletrain_batches(data: ImageFiles, batch: int, batches: int, workers: int, epoch: int,
                        decoder: str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches as ``train()`` makes them: keys (epoch, index) of a shuffled epoch, uint8 → float on the device."""
    previous = os.environ.get(DECODER_ENV)
    if decoder is not None:
        os.environ[DECODER_ENV] = decoder  # read at each decode; forked workers inherit it
    try:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist()
        keys = [[(epoch, i) for i in order[s:s + batch]] for s in range(0, batches * batch, batch)]
        loader = make_loader(data, batch_sampler=keys, workers=workers)
        stream = iterate(loader)
        try:
            for xb, yb, _ in stream:
                yield xb.float().div_(255), yb
        finally:
            stream.close()
            del loader
    finally:
        if decoder is not None:
            if previous is None:
                os.environ.pop(DECODER_ENV, None)
            else:
                os.environ[DECODER_ENV] = previous


def handbuilt_batches(data: HandBuilt, batch: int, batches: int, workers: int,
                      epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(epoch)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    try:
        for _ in range(batches):
            yield next(iterator)
    finally:
        getattr(iterator, "_shutdown_workers", lambda: None)()
        del iterator, loader


def _round(items: dict, block: int) -> list:
    """The configurations of round ``block``: in order on even rounds, reversed on odd ones."""
    order = list(items.items())
    return order if block % 2 == 0 else order[::-1]


def fixed_batches(batch: int, size: int) -> Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """No loader: the same random batch every step (the model's cost alone)."""
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, CLASSES, (batch,), generator=torch.Generator().manual_seed(0))

    def batches(n: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(n):
            yield x, y
    return batches


def make_pipelines(split: Any, hand: HandBuilt, args: argparse.Namespace) -> dict[str, Callable]:
    return {
        "stabletrain": lambda n, epoch: stabletrain_batches(split.train, args.batch, n, args.workers, epoch),
        "stabletrain (Pillow decoder)": lambda n, epoch: stabletrain_batches(split.train, args.batch, n,
                                                                             args.workers, epoch, "pillow"),
        "hand-built": lambda n, epoch: handbuilt_batches(hand, args.batch, n, args.workers, epoch),
    }


# ------------------------------------------------------------------------------------------------- sections


def per_image_costs(split: Any, hand: HandBuilt, images: int, rounds: int) -> dict:
    """Milliseconds per image in this process, one thread: decode alone, and decode + transform per pipeline."""
    files = [split.train.files[i] for i in range(images)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tasks: dict[str, Callable[[int], Any]] = {
        "decode, simplejpeg (stabletrain)": lambda i: open_image(files[i], decoder="simplejpeg"),
        "decode, Pillow (stabletrain)": lambda i: open_image(files[i], decoder="pillow"),
        "decode, Image.open().convert('RGB')": lambda i: Image.open(files[i]).convert("RGB"),
        "item, stabletrain (simplejpeg)": lambda i: split.train[(0, i)],
        "item, hand-built": lambda i: hand[i],
    }
    times: dict[str, list[float]] = {k: [] for k in tasks}
    try:
        for _ in range(rounds):
            for name, task in tasks.items():
                task(0)
                start = time.perf_counter()
                for i in range(images):
                    task(i)
                times[name].append(1000 * (time.perf_counter() - start) / images)
    finally:
        torch.set_num_threads(threads)
    return {k: summary(v, higher_is_better=False) for k, v in times.items()}


def run_data(split: Any, hand: HandBuilt, args: argparse.Namespace) -> dict:
    log(f"== data-only throughput: batch {args.batch}, {args.workers} workers, {args.data_batches} batches a block")
    pipelines = make_pipelines(split, hand, args)
    rates: dict[str, list[float]] = {k: [] for k in pipelines}
    for block in range(args.data_repeats):
        for name, make in _round(pipelines, block):
            stream = make(args.data_batches + args.warmup_batches, 100 + block)
            for _ in range(args.warmup_batches):  # worker start-up and the first batches: not timed
                next(stream)
            start = time.perf_counter()
            seen = 0
            for xb, _ in stream:
                seen += len(xb)
            rates[name].append(seen / (time.perf_counter() - start))
            log(f"  block {block + 1}: {name:30s} {rates[name][-1]:7.1f} images/s")
    result: dict[str, Any] = {"images_per_block": args.data_batches * args.batch,
                              "pipelines": {k: summary(v) for k, v in rates.items()}}
    paired = [a / b for a, b in zip(rates["stabletrain"], rates["hand-built"])]
    result["ratio"] = {"best": result["pipelines"]["stabletrain"]["best"] / result["pipelines"]["hand-built"]["best"],
                       "paired": summary(paired)}
    log("== per-image cost in one process (1 thread)")
    result["per_image_ms"] = per_image_costs(split, hand, args.cost_images, args.data_repeats)
    for name, s in result["per_image_ms"].items():
        log(f"  {name:40s} {s['best']:6.2f} ms (median {s['median']:6.2f})")
    return result


def run_train(split: Any, hand: HandBuilt, args: argparse.Namespace) -> dict:
    log(f"== training throughput: ResNet-18, {args.image_size} px, batch {args.batch}, {args.workers} workers, "
        f"{args.train_steps} timed steps a block")
    torch.manual_seed(0)
    base = create_model("torchvision:resnet18", num_classes=CLASSES)
    pipelines = make_pipelines(split, hand, args)
    configs = {"plain, stabletrain": ("plain", pipelines["stabletrain"]),
               "plain, hand-built": ("plain", pipelines["hand-built"]),
               "plain, fixed batch (no loader)": ("plain", fixed_batches(args.batch, args.image_size)),
               "stability, stabletrain": ("stability", pipelines["stabletrain"])}
    state = {}
    for name, (method, _) in configs.items():
        model = copy.deepcopy(base).train()
        objective = build_objective(method)
        state[name] = (model, objective, torch.optim.AdamW(model.parameters(), lr=1e-3),
                       torch.Generator().manual_seed(0))
    rates: dict[str, list[float]] = {k: [] for k in configs}
    waits: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    for block in range(args.train_repeats):
        for name, (method, make) in _round(configs, block):
            model, objective, optimizer, generator = state[name]
            stream = make(args.train_steps + args.train_warmup, 200 + block)
            elapsed = waited = cpu_seconds = 0.0
            seen = 0
            for step in range(args.train_steps + args.train_warmup):
                start, cpu_start = time.perf_counter(), time.process_time()
                xb, yb = next(stream)
                got = time.perf_counter()
                if method == "plain":
                    loss = torch.nn.functional.cross_entropy(model(xb), yb)
                else:
                    loss = objective(model, xb, yb, generator=generator)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step >= args.train_warmup:
                    elapsed += time.perf_counter() - start
                    waited += got - start
                    cpu_seconds += time.process_time() - cpu_start
                    seen += len(xb)
            stream.close()
            rates[name].append(seen / elapsed)
            waits[name].append(waited / elapsed)
            cpu[name].append(1000 * cpu_seconds / seen)
            log(f"  block {block + 1}: {name:30s} {rates[name][-1]:6.2f} images/s "
                f"(waiting for data {100 * waits[name][-1]:4.1f} % of the time, "
                f"main-process CPU {cpu[name][-1]:5.0f} ms/image)")
    result: dict[str, Any] = {"configs": {k: {**summary(v), "data_wait_share": summary(waits[k], False),
                                              "main_cpu_ms_per_image": summary(cpu[k], False)}
                                          for k, v in rates.items()}}
    st, hb = rates["plain, stabletrain"], rates["plain, hand-built"]
    result["ratio"] = {"best": max(st) / max(hb), "median": statistics.median(st) / statistics.median(hb),
                       "paired": summary([a / b for a, b in zip(st, hb)])}
    fixed = rates["plain, fixed batch (no loader)"]
    result["stabletrain_over_fixed"] = {"best": max(st) / max(fixed),
                                        "median": statistics.median(st) / statistics.median(fixed)}
    stab = rates["stability, stabletrain"]
    result["stability_over_plain"] = {"best": max(stab) / max(st),
                                      "median": statistics.median(stab) / statistics.median(st)}
    log(f"  ratio stabletrain / hand-built: best {result['ratio']['best']:.3f}, median {result['ratio']['median']:.3f}")
    return result


def _children_of() -> dict[int, int]:
    """pid → parent pid of every process, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _tree(root: int) -> list[int]:
    parents = _children_of()
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _memory_kib(pid: int, pss_too: bool = True) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB, (0, 0) when it is gone; PSS 0 unless ``pss_too``."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        if not pss_too:
            return rss, 0
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return rss, pss


def rss_epoch(csv_path: Path, label: str, args: argparse.Namespace, extra: list[str]) -> dict:
    """One streamed epoch of ``stabletrain train`` in a subprocess; peak memory of it and all its children.

    RSS (``/proc/PID/status``) is read every ``args.rss_interval`` seconds; PSS (``smaps_rollup``, whose
    reading walks the page tables and costs CPU) every ``args.pss_every``-th sample.
    """
    out = Path(tempfile.mkdtemp(prefix="bench-streaming-run-"))
    exe = shutil.which("stabletrain")
    command = ([exe] if exe else [sys.executable, "-m", "stabletrain"]) + [
        "train", "--data", str(csv_path), "--stream", "--augment", "crop-flip", "--image-size", str(args.image_size),
        "--workers", str(args.workers), "--epochs", "1", "--method", "plain", "--model", args.rss_model,
        "--batch-size", str(args.rss_batch), "--out", str(out / "run"), "--quiet", "--device", "cpu",
        *(["--width", str(args.rss_width)] if args.rss_model == "small_cnn" else []), *extra]
    log(f"  {label}: {' '.join(command)}")
    started = time.perf_counter()
    with open(out / "stdout.txt", "w") as so, open(out / "stderr.txt", "w") as se:
        process = subprocess.Popen(command, stdout=so, stderr=se)
        peak = {"total_rss": 0, "main_rss": 0, "total_pss": 0, "train_total_rss": 0, "train_total_pss": 0,
                "train_main_rss": 0}
        train_workers: set[int] = set()  # the first --workers children: the training loader's workers
        eval_started = None
        samples = processes = 0
        while process.poll() is None:
            pids = _tree(process.pid)
            children = set(pids[1:])
            for pid in sorted(children - train_workers):
                if len(train_workers) < args.workers:
                    train_workers.add(pid)
                elif eval_started is None:  # more workers: the end-of-epoch evaluation's
                    eval_started = time.perf_counter() - started
            memory = {pid: _memory_kib(pid, samples % args.pss_every == 0) for pid in pids}
            total_rss = sum(m[0] for m in memory.values())
            total_pss = sum(m[1] for m in memory.values())
            main_rss = memory[process.pid][0]
            peak["total_rss"] = max(peak["total_rss"], total_rss)
            peak["total_pss"] = max(peak["total_pss"], total_pss)  # 0 on the samples without PSS
            peak["main_rss"] = max(peak["main_rss"], main_rss)
            if eval_started is None:
                peak["train_total_rss"] = max(peak["train_total_rss"], total_rss)
                peak["train_total_pss"] = max(peak["train_total_pss"], total_pss)
                peak["train_main_rss"] = max(peak["train_main_rss"], main_rss)
            processes = max(processes, len(pids))
            samples += 1
            time.sleep(args.rss_interval)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = (out / "stderr.txt").read_text()[-3000:]
        raise SystemExit(f"stabletrain train failed ({process.returncode}):\n{tail}")
    shutil.rmtree(out, ignore_errors=True)
    result = {"label": label, "seconds": seconds, "eval_started_s": eval_started, "samples": samples,
              "max_processes": processes, **{f"peak_{k}_mib": v / 1024 for k, v in peak.items()},
}
    log(f"  {label}: peak total RSS {result['peak_total_rss_mib']:.0f} MiB, main "
        f"{result['peak_main_rss_mib']:.0f} MiB, total PSS {result['peak_total_pss_mib']:.0f} MiB "
        f"(training phase: {result['peak_train_total_rss_mib']:.0f} / {result['peak_train_main_rss_mib']:.0f} / "
        f"{result['peak_train_total_pss_mib']:.0f}), {seconds:.0f} s")
    return result


def run_rss(lists: dict[int, Path], args: argparse.Namespace) -> dict:
    log(f"== peak memory of a streamed epoch ({args.rss_model}, batch {args.rss_batch}, {args.workers} workers)")
    # for scale: the peak RSS of a bare process that imports what the command imports
    probe = ("import stabletrain.cli.main, torch, torchvision\n"
             "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    baseline = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                  check=True).stdout.strip()) / 1024
    log(f"  peak RSS of a process that only imports stabletrain, torch and torchvision: {baseline:.0f} MiB")
    configs: dict[str, tuple[Path, list[str], float]] = {
        str(args.small): (lists[args.small], [], 0.2), str(args.images): (lists[args.images], [], 0.2)}
    if args.rss_control_fraction:
        # a control: the small set with a test split of at least one evaluation batch (512), like the large set's
        configs[f"{args.small}, test fraction {args.rss_control_fraction:g}"] = (
            lists[args.small], ["--test-fraction", f"{args.rss_control_fraction:g}"], args.rss_control_fraction)
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.rss_repeats):
        for label, (path, extra, _) in configs.items():  # interleaved: small, large, control, small, ...
            runs.setdefault(label, []).append(rss_epoch(path, label, args, extra))
    result: dict[str, Any] = {"import_baseline_rss_mib": baseline,
                              "model": args.rss_model, "width": args.rss_width if args.rss_model == "small_cnn"
                              else None, "batch": args.rss_batch, "eval_batch": args.rss_batch, "interval_s": args.rss_interval,
                              "pss_interval_s": args.rss_interval * args.pss_every, "runs": {}}
    for label, items in runs.items():
        path, extra, fraction = configs[label]
        split = load_stream(str(path), image_size=args.image_size, test_fraction=fraction, channels=3)
        keys = [k for k in items[0] if k.startswith("peak_")]
        result["runs"][label] = {**{k: summary([r[k] for r in items], higher_is_better=False) for k in keys},
                                 "train_images": len(split.train), "test_images": len(split.test),
                                 "extra_args": extra, "seconds": [r["seconds"] for r in items],
                                 "eval_started_s": [r["eval_started_s"] for r in items],
                                 "max_processes": max(r["max_processes"] for r in items)}
    small, large = result["runs"][str(args.small)], result["runs"][str(args.images)]
    result["ratio_large_over_small"] = {k: large[k]["median"] / small[k]["median"] for k in small
                                        if k.startswith("peak_")}
    if args.rss_control_fraction:
        control = result["runs"][list(configs)[-1]]
        result["ratio_large_over_control"] = {k: large[k]["median"] / control[k]["median"] for k in control
                                              if k.startswith("peak_")}
    return result


class TimedModel(torch.nn.Module):
    """``model`` with the seconds spent in its forward passes summed in ``seconds``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


class TimedDistortion:
    """A distortion whose calls are timed into ``seconds[family]``; everything else is the distortion's."""

    def __init__(self, distortion: Any, seconds: dict[str, float]) -> None:
        self._distortion, self._seconds = distortion, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._distortion, name)

    def __call__(self, x: torch.Tensor, generator: Any = None) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return self._distortion(x, generator)
        finally:
            family = self._distortion.family
            self._seconds[family] = self._seconds.get(family, 0.0) + time.perf_counter() - start


def run_sweep(split: Any, args: argparse.Namespace) -> dict:
    from stabletrain.distortions import paper_sweep, parse_distortions
    from stabletrain.evaluation import evaluate_suites, predict_logits
    from stabletrain.evaluation.batches import example_batches

    n = min(args.sweep_images, len(split.test))
    test = split.test
    data = ImageFiles(test.files.take(np.arange(n)), test.labels[:n], transform=test.transform, channels=3,
                      seed=0)
    specs = paper_sweep(args.image_size)
    batch = args.sweep_batch
    log(f"== paper sweep ({len(specs)} distortions) against one clean pass: {n} test images, batch {batch}, "
        f"{args.workers} workers")
    torch.manual_seed(0)
    model = TimedModel(create_model("torchvision:resnet18", num_classes=CLASSES)).eval()

    def clean_pass() -> dict:
        model.seconds = 0.0
        start = time.perf_counter()
        with torch.no_grad():
            for x, _, _ in example_batches(data, batch_size=batch, workers=args.workers):
                predict_logits(model, x, batch)
        total = time.perf_counter() - start
        return {"total": total, "model": model.seconds, "distortions": 0.0, "families": {}}

    def sweep() -> dict:
        model.seconds = 0.0
        families: dict[str, float] = {}
        distortions = [TimedDistortion(d, families) for d in parse_distortions(specs)]
        start = time.perf_counter()
        evaluate_suites({"resnet18": model}, data, ["paper"], paper_distortions=distortions, batch_size=batch,
                        workers=args.workers, progress=False)
        total = time.perf_counter() - start
        return {"total": total, "model": model.seconds, "distortions": sum(families.values()), "families": families}

    runs: dict[str, list[dict]] = {"clean": [clean_pass()], "sweep": []}
    for _ in range(args.sweep_repeats):
        runs["sweep"].append(sweep())
        runs["clean"].append(clean_pass())
        for kind in ("sweep", "clean"):
            r = runs[kind][-1]
            log(f"  {kind:5s} {r['total']:6.1f} s (model {r['model']:6.1f} s, distortions {r['distortions']:5.1f} s)")
    best = {kind: min(items, key=lambda r: r["total"]) for kind, items in runs.items()}
    passes = len(specs) + 1

    def parts(r: dict) -> dict:
        return {"model": r["model"], "distortions": r["distortions"],
                "rest": r["total"] - r["model"] - r["distortions"], "distortions_by_family": r["families"]}
    clean_t = [r["total"] for r in runs["clean"]]
    sweep_t = [r["total"] for r in runs["sweep"]]
    result = {"images": n, "batch": batch, "distortions": specs, "model_passes": passes,
              "clean_pass_s": summary(clean_t, False), "sweep_s": summary(sweep_t, False),
              "clean_images_per_s": n / min(clean_t), "sweep_images_per_s": n / min(sweep_t),
              "ratio": min(sweep_t) / min(clean_t),
              "ratio_median": statistics.median(sweep_t) / statistics.median(clean_t),
              "parts_best_clean": parts(best["clean"]), "parts_best_sweep": parts(best["sweep"]),
              "model_s_per_pass": {"clean": best["clean"]["model"], "sweep": best["sweep"]["model"] / passes},
              "extrapolated_10000": {"clean_pass_s": min(clean_t) / n * 10000, "sweep_s": min(sweep_t) / n * 10000},
              "runs": runs}
    log(f"  clean {result['clean_images_per_s']:.1f} images/s, sweep {result['sweep_images_per_s']:.2f} images/s, "
        f"ratio {result['ratio']:.1f}× (median {result['ratio_median']:.1f}×)")
    return result


def run_gpu(args: argparse.Namespace) -> dict:
    """bf16 stability step of ResNet-18 at 224 px (separate vs concat) and corruption throughput, on CUDA."""
    from stabletrain.corruptions import CORRUPTIONS, HELD_OUT, corrupt

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device)
    log(f"== GPU: {name}")

    def timed(step: Callable[[], Any], steps: int, warmup: int) -> float:
        for _ in range(warmup):
            step()
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / steps

    batch = args.gpu_batch
    x = torch.rand(batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    steps = {}
    for label, method, options in (("plain", "plain", {}),
                                   ("stability, separate", "stability", {"batching": "separate"}),
                                   ("stability, concat", "stability", {"batching": "concat", "bn_stats": "both"})):
        torch.manual_seed(0)
        model = create_model("torchvision:resnet18", num_classes=CLASSES).to(device).train()
        objective = build_objective(method, **options)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator(device=device).manual_seed(0)

        def step(model=model, objective=objective, optimizer=optimizer, generator=generator) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = objective(model, x, y, generator=generator)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        steps[label] = step
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.gpu_repeats):
        for label, step in steps.items():
            times[label].append(timed(step, 20, 5))
    result: dict[str, Any] = {"device_name": name, "batch": batch,
                              "steps": {k: {**summary([batch / t for t in v]), "ms_best": 1000 * min(v)}
                                        for k, v in times.items()}}
    images = torch.rand(args.gpu_batch, 3, args.image_size, args.image_size, device=device)
    rates = {}
    for corruption in list(CORRUPTIONS) + list(HELD_OUT):
        generator = torch.Generator(device=device).manual_seed(0)
        t = timed(lambda: corrupt(images, corruption, 3, "imagenet", generator=generator), 3, 1)
        rates[corruption] = batch / t
    result["corruption_images_per_s_severity3"] = rates
    result["corruption_sweep_images_per_s"] = 1 / sum(1 / r for r in rates.values())
    for k, v in result["steps"].items():
        log(f"  {k:22s} {v['best']:8.1f} images/s")
    return result


# ----------------------------------------------------------------------------------------------------- docs


def _fmt(s: dict, digits: int = 1) -> str:
    return f"{s['best']:.{digits}f} | {s['median']:.{digits}f} | {s['min']:.{digits}f}–{s['max']:.{digits}f}"


def docs_lines(results: dict) -> list[str]:
    meta = results["meta"]
    lines = [START, "",
             f"Machine: {meta['machine']}; no GPU was available, so there are no GPU figures (the script's "
             f"`--device cuda` path, which times a bf16 stability step of ResNet-18 at 224 px with separate and "
             f"concat batching and the corruption throughput, has not run yet). torch {meta['torch']}, torchvision "
             f"{meta['torchvision']}, JPEG decoder {meta['decoder']} (other formats: {meta['decoder_other']}). "
             f"Data: {meta['data']['count']:,} generated JPEGs (smooth random images, several octaves of "
             f"low-frequency noise upsampled plus grain, Pillow quality {QUALITY}), {LONG_SIDE} px on the long side "
             f"and 333–400 px on the short, {meta['data']['mean_file_kib']} KiB each on average; {CLASSES} "
             f"classes; 80/20 train/test split. Images {meta['image_size']} px, {meta['workers']} DataLoader "
             f"workers. Other jobs shared the machine (load averages over 1, 5 and 15 min at the start: "
             + "; ".join(f"{r['load_before']} for {', '.join(r['sections'])}" for r in results.get("runs", []))
             + "), "
             f"so configurations ran round-robin in blocks (the order reversed every other round); tables give "
             f"the least disturbed block (best), the median block and the range.", ""]
    draft = meta.get("draft")
    if draft and draft.get("size"):
        side = draft["size"][0]
        lines += [f"JPEG draft decoding: stabletrain's `TrainTransform(224)` asks for at least {side}×{side} px "
                  f"(so that the smallest random crop still has 224 px), so a draft reduction (1/2 or more) would "
                  f"need images of {2 * draft['size'][0]} px a side or more; at {LONG_SIDE} px it never applies "
                  f"(scale {draft['scale']} on these images), and both pipelines decode the full image.", ""]
    data = results.get("data")
    if data:
        p = data["pipelines"]
        lines += ["### Data-only throughput", "",
                  f"Loader iterated without a model, batch {meta['batch']}, {meta['workers']} workers, "
                  f"{data['images_per_block']} images per block after 2 untimed batches, "
                  f"{len(p['stabletrain']['values'])} blocks each.", "",
                  "- **stabletrain**: `load_stream(csv)` → `ImageFiles` with `TrainTransform(224)` (random-resized "
                  "crop + flip, torchvision's crop parameters drawn from a per-(seed, epoch, image) generator), "
                  f"decoded with {meta['decoder']}, `make_loader` (workers with one torch thread, uint8 batches "
                  "stacked into shared memory), then `x.float().div_(255)` in the main process, as `train()` does;",
                  "- **stabletrain (Pillow decoder)**: the same with `STABLETRAIN_JPEG_DECODER=pillow`;",
                  "- **hand-built**: a torch `Dataset` with `PIL.Image.open(path).convert('RGB')`, torchvision "
                  "`RandomResizedCrop(224)` + `RandomHorizontalFlip()` + `ToTensor()` (float32 batches, 4× the "
                  "bytes between processes), `DataLoader(batch_size=B, shuffle=True, num_workers=2)`.", "",
                  "| pipeline | images/s (best) | median | range |", "|---|---:|---:|---:|"]
        for name, s in p.items():
            lines.append(f"| {name} | {_fmt(s)} |")
        r = data["ratio"]
        lines += ["", f"stabletrain / hand-built: {r['best']:.2f}× on the best blocks; per round "
                      f"{r['paired']['median']:.2f}× (median), {r['paired']['min']:.2f}–{r['paired']['max']:.2f}×.",
                  "", "Cost per image in one process, one thread (ms; best | median | range):", "",
                  "| step | ms / image (best) | median | range |", "|---|---:|---:|---:|"]
        for name, s in data["per_image_ms"].items():
            lines.append(f"| {name} | {_fmt(s, 2)} |")
        lines.append("")
    train = results.get("train")
    if train:
        c = train["configs"]
        lines += ["### Training throughput, ResNet-18", "",
                  f"torchvision ResNet-18 (`create_model('torchvision:resnet18', num_classes=10)`, random init), "
                  f"{meta['image_size']} px, batch {meta['batch']}, AdamW; {meta['train_steps']} timed steps per "
                  f"block after {meta['train_warmup']} untimed, {len(c['plain, stabletrain']['values'])} blocks "
                  f"each, round-robin (the order reversed every other round). A step's time includes waiting for "
                  f"its batch (for stabletrain also the uint8 → float conversion). The main-process CPU time (all "
                  f"its threads, `time.process_time`) is given as a cross-check; other jobs inflate it too, since "
                  f"the model's threads spin while they wait for each other. "
                  f"The plain step is the same "
                  f"code for both pipelines (`cross_entropy(model(x), y)`, backward, AdamW); the stability step is "
                  f"`StabilityObjective` with its defaults (alpha 4, sigma 0.2, separate passes for this "
                  f"batch-norm model). The model trains with {meta['threads']} torch threads in the main process "
                  f"while the {meta['workers']} workers decode on the same {meta['cores']} cores.", "",
                  "| step, pipeline | images/s (best) | median | range | waiting for data (median share) | "
                  "main-process CPU ms / image (least) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, s in c.items():
            lines.append(f"| {name} | {_fmt(s, 2)} | {100 * s['data_wait_share']['median']:.1f} % | "
                         f"{s['main_cpu_ms_per_image']['best']:.0f} |")
        r = train["ratio"]
        verdict = "meets" if r["best"] >= 0.9 and r["median"] >= 0.9 else "misses"
        fx = train["stabletrain_over_fixed"]
        wait = max(v["data_wait_share"]["median"] for v in c.values())
        costs = (results.get("data") or {}).get("per_image_ms", {})
        decode = max((v["best"] for k, v in costs.items() if k.startswith("item")), default=float("nan"))
        lines += ["", f"Plain step, stabletrain / hand-built: **{r['best']:.2f}×** on the best blocks, "
                      f"{r['median']:.2f}× on the medians, {r['paired']['min']:.2f}–{r['paired']['max']:.2f}× "
                      f"per round; this {verdict} the target of ≥ 0.9×. A stability step runs at "
                      f"{train['stability_over_plain']['best']:.2f}× the plain step's throughput (best blocks; "
                      f"{train['stability_over_plain']['median']:.2f}× on the medians). Against the same step on "
                      f"one fixed in-memory batch (no loader, no decoding), stabletrain's pipeline keeps "
                      f"{fx['best']:.2f}× of the throughput (best blocks; {fx['median']:.2f}× on the medians). The "
                      f"step is model-bound: it waits for data at most {100 * wait:.1f} % of the time (median of "
                      f"any configuration), so the pipelines can differ only by the CPU their workers take from the "
                      f"model's threads (about {decode:.1f} ms per image, against "
                      f"{1000 / c['plain, fixed batch (no loader)']['best']:.0f} ms per image of training), and "
                      f"that is far below the spread between rounds, which comes from the other jobs' load.", ""]
    rss = results.get("rss")
    if rss:
        runs = rss["runs"]
        labels = list(runs)
        small, large = labels[0], labels[1]
        model = f"{rss['model']}" + (f" (width {rss['width']})" if rss.get("width") else "")
        reps = len(runs[small]["seconds"])
        resnet = ""
        if train:
            rate = train["configs"]["plain, stabletrain"]
            train_n = runs[large]["train_images"]
            resnet = (f" (ResNet-18 trains at {rate['min']:.0f}–{rate['max']:.0f} images/s here, so its "
                      f"{train_n:,} training images would take {train_n / rate['max'] / 60:.0f}–"
                      f"{train_n / rate['min'] / 60:.0f} min)")
        lines += ["### Peak memory of a streamed epoch", "",
                  f"`stabletrain train --data files_N.csv --stream --augment crop-flip --image-size "
                  f"{meta['image_size']} --workers {meta['workers']} --epochs 1 --method plain --model {rss['model']}"
                  + (f" --width {rss['width']}" if rss.get("width") else "") +
                  f" --batch-size {rss['batch']}` in a subprocess (`files_{small}.csv` lists the first "
                  f"{int(small):,} of the {int(large):,} files). The RSS of the process and of all its children "
                  f"(the DataLoader workers) is read "
                  f"from /proc every {rss['interval_s']:g} s and summed; PSS (each shared page split between the "
                  f"processes that map it) every {rss.get('pss_interval_s', rss['interval_s']):g} s, since summed "
                  f"RSS counts the pages that the forked workers share with the main process once per process. A "
                  f"process that only imports stabletrain, torch and torchvision already peaks at "
                  f"{rss['import_baseline_rss_mib']:.0f} MiB RSS (this torch build's libraries), and every process "
                  f"of the tree maps those pages. Model {model}: the question is the data pipeline's memory, and "
                  f"a larger model would make the large epoch take much longer on 2 cores{resnet}. The epoch ends "
                  f"with the evaluation on the test split, which `train()` runs in batches "
                  + (f"of {rss.get('eval_batch', 512)} whatever `--batch-size` is" if rss.get("eval_batch", 512) == 512
                     and rss.get("batch") != 512 else f"of the training batch ({rss.get('eval_batch')})")
                  + "; \"training phase\" is the part "
                  f"before the evaluation's workers start. {reps} run(s) per configuration, interleaved"
                  + ("; medians (range)." if reps > 1 else "."), "",
                  "| data | train / test images | peak total RSS (MiB) | peak main RSS | peak total PSS | "
                  "training phase: total RSS | training phase: main RSS | training phase: total PSS | epoch (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

        def cell(s: dict) -> str:
            return f"{s['median']:.0f}" + (f" ({s['min']:.0f}–{s['max']:.0f})" if s["min"] != s["max"] else "")
        for label in labels:
            r = runs[label]
            head, _, tail = label.partition(",")
            name = f"{int(head):,} images" + (f",{tail}" if tail else "")
            lines.append(f"| {name} | {r['train_images']:,} / {r['test_images']:,} | "
                         f"{cell(r['peak_total_rss_mib'])} | {cell(r['peak_main_rss_mib'])} | "
                         f"{cell(r['peak_total_pss_mib'])} | {cell(r['peak_train_total_rss_mib'])} | "
                         f"{cell(r['peak_train_main_rss_mib'])} | {cell(r['peak_train_total_pss_mib'])} | "
                         f"{statistics.median(r['seconds']):.0f} |")
        q = rss["ratio_large_over_small"]
        flat = all(q[k] <= 1.10 for k in ("peak_train_total_rss_mib", "peak_train_main_rss_mib"))
        whole = all(q[k] <= 1.10 for k in ("peak_total_rss_mib", "peak_main_rss_mib"))
        longer = statistics.median(runs[large]["seconds"]) / statistics.median(runs[small]["seconds"])
        lines += ["", f"Ratio {int(large):,} / {int(small):,} images: training phase total RSS "
                      f"{q['peak_train_total_rss_mib']:.2f}, main RSS {q['peak_train_main_rss_mib']:.2f}, total PSS "
                      f"{q['peak_train_total_pss_mib']:.2f}; whole epoch total RSS {q['peak_total_rss_mib']:.2f}, main "
                      f"RSS {q['peak_main_rss_mib']:.2f}, total PSS {q['peak_total_pss_mib']:.2f}. The target (within "
                      f"10 %) is {'met' if flat else 'missed'} while training and {'met' if whole else 'missed'} over "
                      f"the whole epoch. (Peaks are sampled: the large epoch ran {longer:.0f}× as long, so it had "
                      f"{longer:.0f}× the chances to catch a short peak, PSS, read every "
                      f"{rss.get('pss_interval_s', rss['interval_s']):g} s, most of all.)"]
        c = rss.get("ratio_large_over_control")
        if c:
            control = labels[-1]
            n_test = runs[small]["test_images"]
            lines += [f"The control run ({int(small):,} images with a test split of {runs[control]['test_images']:,}, "
                      f"at least one full evaluation batch like the large set's) separates the data set's size from "
                      f"the evaluation batch's: {int(large):,} images / control, whole epoch: total RSS "
                      f"{c['peak_total_rss_mib']:.2f}, main RSS {c['peak_main_rss_mib']:.2f}, total PSS "
                      f"{c['peak_total_pss_mib']:.2f}. "
                      + (f"So the whole-epoch peak is set by the evaluation batch, min(test images, "
                         f"{rss.get('eval_batch', 512)}) (only {n_test} for the {int(small):,}-image set), not by "
                         f"the number of images streamed." if all(0.9 <= c[k] <= 1.1 for k in
                                                                  ("peak_total_rss_mib", "peak_main_rss_mib"))
                         and rss.get("eval_batch", 512) == 512 else
                         "The evaluation runs in batches of the training size, so every set fills its evaluation "
                         "batches alike." if rss.get("eval_batch", 512) != 512 else "")]
        lines.append("")
    sweep = results.get("sweep")
    if sweep:
        pc, ps = sweep["parts_best_clean"], sweep["parts_best_sweep"]
        reps = len(sweep["sweep_s"]["values"])
        lines += ["### Paper sweep against plain inference", "",
                  f"torchvision ResNet-18 (random init, eval mode), the first {sweep['images']} images of the "
                  f"streamed test split (`EvalTransform(224)`: shorter side to 256, centre crop), batch "
                  f"{sweep['batch']}, {meta['workers']} workers, {meta['threads']} torch threads. Sweep: "
                  f"`evaluate_suites(..., ['paper'])` with `paper_sweep(224)` = {len(sweep['distortions'])} "
                  f"distortions ({', '.join(sweep['distortions'])}): {sweep['model_passes']} model passes per "
                  f"image (clean + one per distortion) plus the distortions, each image decoded once. Clean: one "
                  f"pass of the model over the same images with the same loader (`example_batches` + "
                  f"`predict_logits`). Measured on {sweep['images']} images: {reps} sweep(s) and "
                  f"{len(sweep['clean_pass_s']['values'])} clean passes, alternating. Model and distortion time are "
                  f"summed inside the same runs (a timing wrapper around the model's forward and around each "
                  f"distortion); \"rest\" is loading, the KL and bookkeeping. The 10,000-image times are "
                  f"**extrapolated** linearly from the best runs, not measured.", "",
                  "| | seconds (best) | median | range | images/s (best) | model (s) | distortions (s) | rest (s) | "
                  "10,000 images (extrapolated) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| one clean pass | {_fmt(sweep['clean_pass_s'])} | {sweep['clean_images_per_s']:.1f} | "
                  f"{pc['model']:.1f} | – | {pc['rest']:.1f} | "
                  f"{sweep['extrapolated_10000']['clean_pass_s'] / 60:.0f} min |",
                  f"| paper sweep | {_fmt(sweep['sweep_s'])} | {sweep['sweep_images_per_s']:.2f} | "
                  f"{ps['model']:.1f} | {ps['distortions']:.1f} | {ps['rest']:.1f} | "
                  f"{sweep['extrapolated_10000']['sweep_s'] / 3600:.1f} h |", "",
                  f"Sweep / clean pass: **{sweep['ratio']:.1f}×** (best runs; {sweep['ratio_median']:.1f}× on the "
                  f"medians). Of the best sweep, the model takes {100 * ps['model'] / sweep['sweep_s']['best']:.0f} % "
                  f"({ps['model'] / sweep['model_passes']:.1f} s per pass against {pc['model']:.1f} s in the best "
                  f"clean pass), the distortions {100 * ps['distortions'] / sweep['sweep_s']['best']:.0f} % ("
                  + ", ".join(f"{k} {v:.1f} s" for k, v in ps["distortions_by_family"].items()) +
                  f"), the rest {100 * ps['rest'] / sweep['sweep_s']['best']:.0f} %. So the ratio is about the "
                  f"{sweep['model_passes']} model passes, plus the distortions.", ""]
    gpu = results.get("gpu")
    if gpu:
        lines += [f"GPU results in streaming.json ({gpu['device_name']}) are not summarized here.", ""]
    lines.append(END)
    return lines


# ----------------------------------------------------------------------------------------------------- main


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "stabletrain-bench-streaming")
    parser.add_argument("--images", type=int, default=10000, help="generated JPEGs (the large RSS run)")
    parser.add_argument("--small", type=int, default=1000, help="images of the small RSS run (a file-list subset)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="batch of the throughput runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-repeats", type=int, default=5)
    parser.add_argument("--data-batches", type=int, default=32, help="timed batches per data-only block")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--cost-images", type=int, default=48, help="images of the per-image cost timing")
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--train-warmup", type=int, default=1)
    parser.add_argument("--rss-model", default="small_cnn")
    parser.add_argument("--rss-width", type=int, default=8)
    parser.add_argument("--rss-batch", type=int, default=64)
    parser.add_argument("--rss-repeats", type=int, default=1)
    parser.add_argument("--rss-interval", type=float, default=0.2)
    parser.add_argument("--pss-every", type=int, default=5, help="read PSS every N-th RSS sample")
    parser.add_argument("--rss-control-fraction", type=float, default=0.6,
                        help="also run the small set with this test fraction (0: no control run)")
    parser.add_argument("--sweep-images", type=int, default=192)
    parser.add_argument("--sweep-batch", type=int, default=64)
    parser.add_argument("--sweep-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add the GPU section")
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--gpu-repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (writes nothing)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--docs-only", action="store_true", help="rewrite the docs block from the JSON file, measure "
                        "nothing")
    args = parser.parse_args()
    if args.docs_only:
        doc = replace_block(START, END, docs_lines(json.loads(RESULTS.read_text())),
                            "Streamed data at 224 px (`benchmarks/bench_streaming.py`)")
        log(f"updated {doc}")
        return
    if args.quick:
        args.images, args.small, args.data_repeats, args.data_batches = 400, 200, 1, 4
        args.cost_images, args.train_repeats, args.train_steps = 4, 1, 1
        args.sweep_images, args.sweep_batch = 16, 8
        args.data_dir = args.data_dir.with_name(args.data_dir.name + "-quick")
    chosen = set(SECTIONS) if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    if chosen - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(chosen - set(SECTIONS)))}")
    if args.device == "cpu":
        chosen.discard("gpu")
    elif not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")

    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    manifest = prepare_data(args.data_dir, args.images, args.small)
    lists = {n: args.data_dir / f"files_{n}.csv" for n in (args.small, args.images)}
    split = load_stream(str(lists[args.images]), image_size=args.image_size, augment="crop-flip", seed=0,
                        channels=3)
    files = [split.train.files[i] for i in range(len(split.train))]
    hand = HandBuilt(files, [int(v) for v in split.train.labels], args.image_size)
    draft = split.train._draft
    with Image.open(files[0]) as first:
        scale = _draft_scale(first.size[0], first.size[1], draft)
    import torchvision

    meta = {"machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, {_cpu_name()}), "
                       f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30)} GiB RAM",
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": str(torch.__version__),
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "decoder": decoders()["jpeg"], "decoder_other": decoders()["other"], "image_size": args.image_size,
            "batch": args.batch, "workers": args.workers, "train_steps": args.train_steps,
            "train_warmup": args.train_warmup, "load_before": load_before,
            "data": {"count": args.images, **{k: manifest[k] for k in ("mean_file_kib", "total_mib")}},
            "draft": {"size": list(draft) if draft else None, "scale": scale}}
    results: dict[str, Any] = {}
    if args.only is not None and RESULTS.exists() and not args.quick:
        results = json.loads(RESULTS.read_text())
    # which run measured which section (a run with --only keeps the other sections of earlier runs)
    earlier = results.get("runs")
    if earlier is None and "meta" in results:
        earlier = [{"sections": [k for k in SECTIONS if k in results], "load_before": results["meta"]["load_before"],
                    "seconds": results["meta"].get("seconds")}]
    runs = [dict(r, sections=[k for k in r["sections"] if k not in chosen]) for r in earlier or []]
    results["runs"] = [r for r in runs if r["sections"]]
    results["meta"] = meta
    started = time.perf_counter()
    sections: dict[str, Callable[[], dict]] = {
        "data": lambda: run_data(split, hand, args), "train": lambda: run_train(split, hand, args),
        "rss": lambda: run_rss(lists, args), "sweep": lambda: run_sweep(split, args), "gpu": lambda: run_gpu(args)}
    for section, run in sections.items():
        if section in chosen:
            load, begun = os.getloadavg()[0], time.perf_counter()
            results[section] = run()
            results[section].update(load_before=round(load, 1), seconds=round(time.perf_counter() - begun, 1))
            if not args.quick:  # kept section by section: a later failure loses only what it was measuring
                write_json(RESULTS, results)
    meta["seconds"] = round(time.perf_counter() - started, 1)
    results["runs"].append({"sections": [k for k in SECTIONS if k in chosen], "load_before": load_before,
                            "seconds": meta["seconds"]})
    log(f"done in {meta['seconds'] / 60:.1f} min")
    if args.quick:
        print("\n".join(docs_lines(results)))
        return
    write_json(RESULTS, results)
    log(f"wrote {RESULTS}")
    if args.write_docs:
        doc = replace_block(START, END, docs_lines(results),
                            "Streamed data at 224 px (`benchmarks/bench_streaming.py`)")
        log(f"updated {doc}")


if __name__ == "__main__":
    main()
