"""The training loop: one interface for every method, with checkpoints and resume.

>>> from stabletrain.training import TrainConfig, train
>>> result = train(TrainConfig(data="digits", method="stability", epochs=1, width=8),
...                "runs/doctest-train", progress=False, overwrite=True)   # doctest: +SKIP
>>> result.history[-1]["test_accuracy"]   # doctest: +SKIP

Every epoch ends with an atomic write of ``checkpoint.pt`` (model,
optimizer, scheduler, history, config, RNG states and the sampler position)
and of ``history.json``/``.csv``; ``checkpoint_every`` adds checkpoints
every that many steps within an epoch. Randomness comes from generators
seeded by ``(seed, stream, epoch)`` whose states are saved, so a run resumed
from any checkpoint, even one taken mid-epoch, reproduces the uninterrupted
run bitwise on the CPU.

Under ``torchrun`` (or ``stabletrain train --nproc N``) the same function
trains with DistributedDataParallel; see :mod:`stabletrain.distributed`.
``config.batch_size`` is then the global batch, cut into one shard per
process, and every example gets the noise it gets in a single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from . import distributed as dist_utils
from .checks import StableTrainError
from .data import DataSplit
from .files import atomic_torch_save, safe_torch_load, write_csv, write_json, write_yaml
from .models import NORMS, build_model, load_weights
from .objectives import available_methods, resolve_batching
from .perturbations import PERTURBATIONS, noise_shard
from .seeding import make_generator
from .tasks import METHOD_OPTIONS, TASK_NAMES, get_task

__all__ = ["TrainConfig", "TrainResult", "train", "load_checkpoint", "load_model", "resolve_device", "changed_options",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "stabletrain.checkpoint/1"
#: ``amp`` settings: full float32, or bfloat16 autocast of the forward passes (CPU and CUDA).
AMP_MODES = ("off", "bf16")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as ``config.yaml`` beside the results.

    The defaults of ``alpha`` and ``sigma`` come from the sweep recorded in
    ``docs/results.md``. The last group of options changes how a run
    executes, not what it learns (up to rounding):

    * ``norm``: ``'batch'`` or ``'group'`` normalization in ``small_cnn``.
    * ``sync_bn``: SyncBatchNorm across DDP ranks (GPUs only).
    * ``amp``: ``'bf16'`` runs forward passes under bfloat16 autocast.
    * ``compile``: run the model through ``torch.compile``.
    * ``checkpoint_every``: also checkpoint every that many steps (0: per epoch only).
    * ``workers``: DataLoader worker processes that gather batches (0: index
      the in-memory tensors directly on the device, the fastest for data that fits).
    """

    task: str = "classification"
    data: str = "digits"
    image_size: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.2
    model: str = "small_cnn"
    width: int = 32
    method: str = "stability"
    alpha: float = 4.0
    sigma: float = 0.2
    detach_clean: bool = False
    batching: str = "auto"
    bn_stats: str = "clean"
    margin: float = 0.2
    jsd_lambda: float = 12.0
    trades_beta: float = 6.0
    adv_epsilon: float = 0.031
    adv_steps: int = 10
    adv_step_size: float = 0.007
    consistency_copies: int = 2
    consistency_lambda: float = 20.0
    consistency_eta: float = 0.5
    #: Perturbation of gaussian/stability training: ``gaussian``, ``relative``, or ``auto`` (relative for jets).
    noise: str = "auto"
    #: Input transform of the jet tagger (task ``jets``): ``log`` or ``standardize``.
    jet_input: str = "log"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    norm: str = "batch"
    sync_bn: bool = False
    amp: str = "off"
    compile: bool = False
    checkpoint_every: int = 0
    workers: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build a config from a mapping (e.g. YAML); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StableTrainError(f"unknown config option(s): {', '.join(unknown)}")
        return cls(**values).validated()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validated(self) -> "TrainConfig":
        """Return self after checking every value; raises :class:`StableTrainError`."""
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise StableTrainError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def number(name: str, low: float, low_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (low_open and value == low):
                bound = f"> {low:g}" if low_open else f">= {low:g}"
                raise StableTrainError(f"{name} must be a finite number {bound}, got {value!r}")

        positive_int("epochs")
        positive_int("batch_size", 2)
        positive_int("width")
        positive_int("split_seed", 0)
        positive_int("seed", 0)
        positive_int("checkpoint_every", 0)
        positive_int("workers", 0)
        if self.norm not in NORMS:
            raise StableTrainError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.amp not in AMP_MODES:
            raise StableTrainError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("sync_bn", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise StableTrainError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.image_size is not None:
            positive_int("image_size", 8)
        number("alpha", 0.0)
        number("sigma", 0.0)
        number("lr", 0.0, low_open=True)
        number("weight_decay", 0.0)
        if not 0.0 < self.test_fraction < 1.0:
            raise StableTrainError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        number("margin", 0.0)
        for name in ("jsd_lambda", "trades_beta", "adv_epsilon", "adv_step_size", "consistency_lambda",
                     "consistency_eta"):
            number(name, 0.0)
        positive_int("adv_steps")
        positive_int("consistency_copies", 2)
        if self.task not in TASK_NAMES:
            raise StableTrainError(f"unknown task {self.task!r}; known tasks: {', '.join(TASK_NAMES)}")
        objective_task = "similarity" if self.task == "similarity" else "classification"
        if self.method not in available_methods(objective_task):
            raise StableTrainError(f"unknown method {self.method!r}; known methods for {self.task}: "
                                   f"{', '.join(available_methods(objective_task))}")
        if self.noise not in ("auto", *PERTURBATIONS):
            raise StableTrainError(f"unknown noise model {self.noise!r}; known: auto, {', '.join(PERTURBATIONS)}")
        if self.noise == "relative" and self.task != "jets":
            raise StableTrainError("noise 'relative' is meant for sparse jet images (task jets)")
        if self.jet_input not in ("log", "standardize", "linear"):
            raise StableTrainError(f"unknown jet input transform {self.jet_input!r}; known: log, standardize, linear")
        resolve_batching(self.batching, "cpu")
        if self.bn_stats not in ("clean", "both"):
            raise StableTrainError(f"bn_stats must be 'clean' or 'both', got {self.bn_stats!r}")
        resolve_device(self.device)
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    history: list[dict]
    checkpoint: Path
    config: TrainConfig
    data: DataSplit
    train_seconds: float
    resumed_from_epoch: int = 0
    extra: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; otherwise the named device, checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise StableTrainError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise StableTrainError(f"device {device!r} requested but CUDA is not available")
    return resolved


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a stabletrain checkpoint (``torch.load(weights_only=True)``)."""
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise StableTrainError(f"{path} is not a stabletrain checkpoint")
    return checkpoint


def changed_options(stored: dict[str, Any], config: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Options of ``config`` that differ from a stored run's config; options added later count as defaults."""
    defaults = TrainConfig().to_dict()
    return [k for k, v in config.to_dict().items() if k not in ignore and stored.get(k, defaults[k]) != v]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns ``(model, checkpoint)``, model in eval mode."""
    checkpoint = load_checkpoint(path)
    spec = checkpoint["model"]
    model = build_model(spec["name"], **spec["kwargs"])
    load_weights(model, checkpoint["state_dict"], str(path))
    return model.to(device).eval(), checkpoint


def _cosine(total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return factor


_RESUME_MUST_MATCH = METHOD_OPTIONS + ("task", "margin", "data", "image_size", "split_seed", "test_fraction", "model", "width", "method", "alpha",
                      "sigma", "detach_clean", "batch_size", "lr", "weight_decay", "seed", "bn_stats", "norm",
                      "noise", "jet_input")


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    data: DataSplit | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a model for ``config.task`` with ``config.method``; write checkpoints and history to ``out_dir``.

    Args:
        config: the run's settings.
        out_dir: results folder; it must not hold a checkpoint unless
            ``resume`` or ``overwrite`` is set.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists, at the
            epoch and step where it was written. The config must match the
            stored one except for ``epochs`` (which may grow) and the
            options of how the run executes (``device``, ``batching``,
            ``amp``, ``compile``, ``checkpoint_every``, ``workers``,
            ``sync_bn``; also the number of processes).
        init: a checkpoint whose weights start the run (fine-tuning).
        overwrite: start afresh even if ``out_dir`` holds a checkpoint.
        progress: show progress bars.
        data: pre-loaded data (must correspond to ``config.data``).
        log: called with one line per epoch (on rank 0 only).

    Under ``torchrun`` every rank calls this with the same arguments; rank 0
    writes the files, and every rank returns the same history.
    """
    config = config.validated()
    out = Path(out_dir)
    checkpoint_path = out / "checkpoint.pt"
    if out.exists() and not out.is_dir():
        raise StableTrainError(f"output path {out} exists and is not a folder")
    existing = checkpoint_path.exists()
    if existing and not (resume or overwrite):
        raise StableTrainError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
    stored = load_checkpoint(checkpoint_path) if existing and resume else None
    if stored is not None:
        previous = stored["config"]
        defaults = TrainConfig().to_dict()  # options added later are absent from older checkpoints
        changed = [k for k in _RESUME_MUST_MATCH if previous.get(k, defaults[k]) != getattr(config, k)]
        if changed:
            raise StableTrainError(
                f"cannot resume {out}: option(s) {', '.join(changed)} differ from the stored run")
        begun = int(stored["epoch"]) + (1 if stored.get("step", 0) else 0)  # a mid-epoch checkpoint began one more
        if config.epochs < begun:
            raise StableTrainError(f"cannot resume {out}: it already trained {begun} epochs > --epochs {config.epochs}")
    init_checkpoint = load_checkpoint(init) if init is not None and stored is None else None

    ctx = dist_utils.setup(config.device)
    device = ctx.device
    task = get_task(config.task)
    data = data if data is not None else task.load_data(config)
    spec = task.model_spec(config, data)
    if init_checkpoint is not None:
        init_spec = init_checkpoint["model"]
        same_kind = init_spec["name"] == spec["name"]
        keys = ("in_channels", "num_classes", "width") if same_kind and config.task == "classification" else \
            ("in_channels", "width")
        mismatch = [k for k in keys if init_spec["kwargs"].get(k) != spec["kwargs"].get(k)]
        fits = same_kind or (config.task == "similarity" and init_spec["name"] == "small_cnn")
        if not fits or mismatch:
            raise StableTrainError(
                f"--init {init} holds a {init_spec['name']} with {init_spec['kwargs'].get('in_channels')} channels, "
                f"{init_spec['kwargs'].get('num_classes')} classes and width {init_spec['kwargs'].get('width')}, "
                f"which does not fit {spec['name']} on {config.data} ({spec['kwargs']['in_channels']} channels, "
                f"{spec['kwargs']['num_classes']} classes, width {config.width})")
        # keep the normalization the model was trained with
        spec = {"name": spec["name"], "kwargs": {**spec["kwargs"], "mean": init_spec["kwargs"]["mean"],
                                                 "std": init_spec["kwargs"]["std"]}}
    if stored is not None:
        spec = stored["model"]

    torch.manual_seed(config.seed)
    model = build_model(spec["name"], **spec["kwargs"]).to(device)
    if init_checkpoint is not None:
        task.init_from(model, init_checkpoint, str(init))
    if config.sync_bn:
        model = dist_utils.convert_sync_bn(model, ctx)
    objective = task.objective(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(dist_utils.DistributedBatchSampler(
        task.batches(data, config.batch_size, torch.Generator().manual_seed(0)), 0, ctx.world_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(steps_per_epoch * config.epochs))

    history: list[dict] = []
    start_epoch = start_step = 0
    elapsed_before = 0.0
    resume_state: dict = {}
    if stored is not None:
        task.init_from(model, stored, str(checkpoint_path))
        optimizer.load_state_dict(stored["optimizer"])
        scheduler.load_state_dict(stored["scheduler"])
        history = list(stored["history"])
        start_epoch = int(stored["epoch"])
        start_step = int(stored.get("step", 0))
        resume_state = dict(stored.get("progress") or {})
        elapsed_before = float(stored.get("train_seconds", 0.0))
        rng = stored.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
    # no rank may touch the folder before every rank has read what was there
    dist_utils.barrier(ctx)
    if stored is None and existing and overwrite and ctx.is_main:
        checkpoint_path.unlink()

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(out / "config.yaml", {**config.to_dict(), "init": str(init) if init else None})
    forward_model = torch.compile(model) if config.compile else model
    # one DDP forward per step for every method: see distributed.ObjectiveStep
    runner = dist_utils.wrap_ddp(dist_utils.ObjectiveStep(forward_model, objective), ctx,
                                 find_unused_parameters=config.task == "similarity")  # the embedder's head is idle
    loader_kwargs: dict[str, Any] = {}
    if config.workers:
        x_source, y_source = data.train.x, data.train.y
        loader_kwargs = {"num_workers": config.workers, "pin_memory": device.type == "cuda"}
    else:
        x_source, y_source = data.train.x.to(device), data.train.y.to(device)
    emit = log if log is not None and ctx.is_main else (lambda line: None)
    if stored is not None:
        where = f"epoch {start_epoch}" + (f", step {start_step} of epoch {start_epoch + 1}" if start_step else "")
        emit(f"resuming {out} after {where}/{config.epochs}")
    last_good = (f"epoch {start_epoch}" + (f", step {start_step} of epoch {start_epoch + 1}" if start_step else "")
                 if stored is not None else "none written yet")

    def save(epoch: int, step: int, complete: bool, seconds: float, progress_state: dict | None = None) -> None:
        if not ctx.is_main:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT,
            "stabletrain_version": __version__,
            "torch_version": str(torch.__version__),
            "python_version": platform.python_version(),
            "model": spec,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "step": step,
            "progress": progress_state or {},
            "rng": rng,
            "world_size": ctx.world_size,
            "complete": complete,
            "config": config.to_dict(),
            "objective": objective.hyperparameters(),
            "data": data.describe(),
            "history": history,
            "train_seconds": seconds,
            "init": str(init) if init else None,
        }, checkpoint_path)

    def autocast() -> contextlib.AbstractContextManager:
        if config.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    started = time.perf_counter()
    global_step = start_epoch * steps_per_epoch + start_step
    for epoch in range(start_epoch, config.epochs):
        runner.train()
        shuffle = make_generator(config.seed, "shuffle", epoch)
        noise = make_generator(config.seed, "perturbation", epoch, device=device)
        first = start_step if epoch == start_epoch else 0
        totals: dict[str, float] = {}
        correct: float = 0
        seen: float = 0
        if first:
            noise.set_state(resume_state["noise"])
            if ctx.is_main:  # the stored sums are over all ranks already
                totals = dict(resume_state["totals"])
                correct, seen = resume_state["correct"], resume_state["seen"]
        sampler = dist_utils.DistributedBatchSampler(task.batches(data, config.batch_size, shuffle), ctx.rank,
                                                     ctx.world_size, start=first)
        shards = list(sampler)
        if config.workers:
            inputs: Any = torch.utils.data.DataLoader(shards, batch_size=None, collate_fn=_Gather(task, x_source,
                                                                                                   y_source),
                                                      **loader_kwargs)
        else:
            inputs = (task.inputs(x_source, y_source, shard.index.to(device)) for shard in shards)
        bar = tqdm(zip(shards, inputs), total=len(shards), desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
                   unit="batch", leave=False, disable=not progress or not ctx.is_main or None)
        for shard, (xb, yb) in bar:
            if config.workers:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True) if isinstance(yb, torch.Tensor) else yb
            n = len(shard.index)
            sharded = noise_shard(shard.offset, n, shard.total) if ctx.is_distributed else contextlib.nullcontext()
            with sharded, autocast():
                out_step = runner(xb, yb, generator=noise)
            loss = out_step["loss"]
            if ctx.is_distributed:
                # every rank sees the global loss, so a NaN on one rank stops all of them at the same step
                loss_value = dist_utils.all_reduce_sums([float(loss.detach()) * n], ctx)[0] / shard.total
            else:
                loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise StableTrainError(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {global_step + 1}; training stopped, "
                    f"the last good checkpoint ({last_good}) is kept in {checkpoint_path}")
            if ctx.is_distributed and n * ctx.world_size != shard.total:
                # DDP averages gradients over ranks; weighting each rank by its share of the batch
                # makes that average the gradient of the mean over the whole batch
                loss = loss * (n * ctx.world_size / shard.total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            for key, value in out_step.items():
                if key != "output":
                    totals[key] = totals.get(key, 0.0) + float(value.detach()) * n
            correct += task.correct(out_step["output"].detach(), yb)
            seen += n
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if config.checkpoint_every and global_step % config.checkpoint_every == 0 \
                    and shard.step + 1 < len(sampler):
                sums = _reduce_epoch(totals, correct, seen, ctx)
                save(epoch, shard.step + 1, False, time.perf_counter() - started + elapsed_before,
                     {"noise": noise.get_state(), "totals": sums[0], "correct": sums[1], "seen": sums[2]})
                last_good = f"epoch {epoch}, step {shard.step + 1} of epoch {epoch + 1}"
        totals, correct, seen = _reduce_epoch(totals, correct, seen, ctx)
        row = None
        if ctx.is_main:
            row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in totals.items()},
                   "train_accuracy": correct / max(seen, 1),
                   **task.evaluate(model, data),
                   "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - started + elapsed_before}
        row = dist_utils.broadcast_object(row, ctx)
        history.append(row)
        done = epoch + 1 == config.epochs
        save(epoch + 1, 0, done, row["seconds"])
        last_good = f"epoch {epoch + 1}"
        if ctx.is_main:
            write_json(out / "history.json", history)
            write_csv(out / "history.csv", history)
        emit(f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f} "
             f"train acc {row['train_accuracy']:.3f} {task.metric.replace('_', ' ')} {row[task.metric]:.3f}")
    total_seconds = time.perf_counter() - started + elapsed_before
    if start_epoch == config.epochs and stored is not None and not stored.get("complete"):
        save(config.epochs, 0, True, total_seconds)
    dist_utils.barrier(ctx)  # the other ranks return once the last checkpoint is on disk
    model.eval()
    return TrainResult(model=model, history=history, checkpoint=checkpoint_path, config=config, data=data,
                       train_seconds=history[-1]["seconds"] if history else total_seconds,
                       resumed_from_epoch=start_epoch, extra={"world_size": ctx.world_size, "rank": ctx.rank,
                                                              "resumed_from_step": start_step})


def _reduce_epoch(totals: dict[str, float], correct: float, seen: float,
                  ctx: dist_utils.DistContext) -> tuple[dict[str, float], float, float]:
    """The epoch's running sums over all ranks (unchanged in a single process, so its history stays bitwise)."""
    if not ctx.is_distributed:
        return dict(totals), correct, seen
    keys = list(totals)
    sums = dist_utils.all_reduce_sums([totals[k] for k in keys] + [correct, seen], ctx)
    return dict(zip(keys, sums[:-2])), sums[-2], int(sums[-1])


class _Gather:
    """DataLoader ``collate_fn``: one shard of indices → the objective's inputs (a class, so workers can pickle it)."""

    def __init__(self, task: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        self.task, self.x, self.y = task, x, y

    def __call__(self, shard: dist_utils.Shard) -> tuple[torch.Tensor, Any]:
        return self.task.inputs(self.x, self.y, shard.index)
