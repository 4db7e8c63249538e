"""The training loop: one interface for every method, with checkpoints and resume."""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import __version__
from .. import distributed as dist_utils
from ..checks import StableTrainError
from ..data import DataSplit
from ..files import atomic_torch_save, ensure_output_dir, write_csv, write_json, write_yaml
from ..locking import output_lock
from ..perturbations import noise_shard
from ..seeding import make_generator
from ..tasks import get_task
from ..models.specs import file_sha256
from ..models.weights import load_pretrained
from .checkpoints import CHECKPOINT_FORMAT, build_from_spec, load_checkpoint
from .optim import build_optimizer, build_scheduler, freeze_batchnorm
from ..data.streams import iterate as iterate_batches, make_loader
from .config import TrainConfig
from .runs import differing_options
from ..progress import progress_bar

__all__ = ["TrainResult", "train"]

logger = logging.getLogger("stabletrain.training")


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
            epoch and step where it was written. The config must be the same
            run (:func:`~stabletrain.training.runs.differing_options`):
            only ``epochs`` may grow, and the execution options
            (``device``, ``compile``, ``checkpoint_every``, ``workers``,
            and the number of processes) may change.
        init: a checkpoint whose weights start the run (fine-tuning); the same as ``config.init``. Give
            it before the config is validated, so that the fine-tuning defaults of ``lr`` and
            ``warmup_epochs`` apply (see :class:`TrainConfig`).
        overwrite: start afresh even if ``out_dir`` holds a checkpoint.
        progress: show progress bars.
        data: pre-loaded data (must correspond to ``config.data``).
        log: called with one line per epoch (on rank 0 only).

    Under ``torchrun`` every rank calls this with the same arguments; rank 0
    writes the files, and every rank returns the same history.

    The folder is locked for the run (:func:`stabletrain.locking.output_lock`):
    a second run into it stops with an error, and a lock left by a killed
    run is taken over.
    """
    if init is not None:
        if config.init is not None and str(config.init) != str(init):
            raise StableTrainError(f"init={init} differs from the config's init {config.init}")
        config.init = str(init)
    config = config.validated()
    init = config.init
    with output_lock(out_dir, what="train"):
        return _train(config, out_dir, resume=resume, init=init, overwrite=overwrite, progress=progress, data=data,
                      log=log)


def _train(config: TrainConfig, out_dir: str | Path, *, resume: bool, init: str | Path | None, overwrite: bool,
           progress: bool, data: DataSplit | None, log: Callable[[str], None] | None) -> TrainResult:
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
        changed = differing_options(stored["config"], config, allow_more_epochs=True)
        if changed:
            raise StableTrainError(
                f"cannot resume {out}: option(s) {', '.join(changed)} differ from the stored run")
        begun = int(stored["epoch"]) + (1 if stored.get("step", 0) else 0)  # a mid-epoch checkpoint began one more
        if config.epochs < begun:
            raise StableTrainError(f"cannot resume {out}: it already trained {begun} epochs > --epochs {config.epochs}")
    init_checkpoint = load_checkpoint(init) if init is not None and stored is None else None

    ctx = dist_utils.setup(config.device)
    device = ctx.device
    task = get_task(config.task, **config.task_args)
    data = data if data is not None else task.load_data(config)
    spec = task.model_spec(config, data)
    if init_checkpoint is not None:
        spec = _init_spec(init_checkpoint["model"], spec, config, init)
    if stored is not None:
        spec = stored["model"]

    torch.manual_seed(config.seed)
    model = build_from_spec(spec, str(checkpoint_path if stored is not None else "of this run")).to(device)
    if init_checkpoint is not None:
        task.init_from(model, init_checkpoint, str(init))
    weights_report = None
    if config.weights is not None and stored is None:
        weights_report = load_pretrained(model, config.weights)
    if config.sync_bn:
        model = dist_utils.convert_sync_bn(model, ctx)
    objective = task.objective(config)
    optimizer = build_optimizer(model, config)
    steps_per_epoch = len(dist_utils.DistributedBatchSampler(
        task.batches(data, config.batch_size, torch.Generator().manual_seed(0)), 0, ctx.world_size))
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)

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
        ensure_output_dir(out)
        write_yaml(out / "config.yaml", config.to_dict())
    forward_model = torch.compile(model) if config.compile else model
    # one DDP forward per step for every method: see distributed.ObjectiveStep
    runner = dist_utils.wrap_ddp(dist_utils.ObjectiveStep(forward_model, objective), ctx,
                                 find_unused_parameters=task.objective_task == "similarity")  # the embedder's head is idle
    loader_kwargs: dict[str, Any] = {}
    streaming = bool(getattr(data, "streaming", False))
    # a stream that deals its own samples to ranks and workers (tar shards): fixed-length epochs, and an order
    # that depends on the number of workers and ranks (see ShardStream)
    self_dealing = streaming and hasattr(data.train, "plan_epoch")
    layout = {"workers": max(int(config.workers), 1), "world_size": ctx.world_size}  # 0 and 1 read alike
    if self_dealing and start_step and resume_state.get("layout", layout) != layout:
        then = resume_state["layout"]
        raise StableTrainError(
            f"cannot resume {out} in the middle of epoch {start_epoch + 1} with {layout['workers']} worker(s) and "
            f"{layout['world_size']} process(es): its tar-shard stream was dealt to {then['workers']} worker(s) and "
            f"{then['world_size']} process(es), and only those give the rest of that epoch; resume with them")
    if streaming:
        x_source = y_source = None
    elif config.workers:
        x_source, y_source = data.train.x, data.train.y
        loader_kwargs = {"num_workers": config.workers, "pin_memory": device.type == "cuda"}
    else:
        x_source, y_source = data.train.x.to(device), data.train.y.to(device)
    emit = log if log is not None and ctx.is_main else (lambda line: None)
    if weights_report is not None:
        for line in weights_report.lines():
            emit(line)
    if stored is not None:
        where = f"epoch {start_epoch}" + (f", step {start_step} of epoch {start_epoch + 1}" if start_step else "")
        emit(f"resuming {out} after {where}/{config.epochs}")
    last_good = (f"epoch {start_epoch}" + (f", step {start_step} of epoch {start_epoch + 1}" if start_step else "")
                 if stored is not None else "none written yet")

    weights_info = (stored or {}).get("weights") if stored is not None else (
        {**weights_report.to_dict(), "sha256": file_sha256(config.weights)} if weights_report is not None else None)

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
            "weights": weights_info,
        }, checkpoint_path)

    def autocast() -> contextlib.AbstractContextManager:
        if config.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    epoch_batches, stream_loader = _EpochBatches(), None
    started = time.perf_counter()
    global_step = start_epoch * steps_per_epoch + start_step
    for epoch in range(start_epoch, config.epochs):
        runner.train()
        if config.freeze_bn:
            freeze_batchnorm(model)
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
        if self_dealing:
            # the shards are dealt to ranks and workers by the stream itself, as len(sampler) batches of this
            # rank's share of the global batch (the same share every step); the first `first` are skipped
            local = len(shards[0].index) if shards else 1
            data.train.set_epoch(epoch)
            data.train.plan_epoch(len(sampler), local, skip=first)
            if epoch == start_epoch and ctx.is_main:
                again, left = data.train.epoch_balance(epoch, config.workers)
                if again or left:
                    logger.warning(
                        "the training shards do not split into equal whole batches over %d process(es) x %d "
                        "reader(s): this epoch rank 0 reads %d sample(s) twice and leaves %d for later epochs; "
                        "shards of equal size, in a multiple of processes x workers, avoid it",
                        ctx.world_size, max(config.workers, 1), again, left)
            if stream_loader is None:
                stream_loader = make_loader(data.train, batch_size=local, workers=config.workers, device=device)
        elif streaming:
            # images are decoded and augmented in the workers, each from its own (seed, epoch, index) stream; the
            # loader (and its persistent workers) lives for the whole run, only its batches change per epoch
            epoch_batches.keys = [[(epoch, int(i)) for i in shard.index] for shard in shards]
            if stream_loader is None:
                stream_loader = make_loader(data.train, batch_sampler=epoch_batches, workers=config.workers,
                                            device=device)
        if streaming:
            inputs: Any = ((xb.to(device, non_blocking=True).float().div_(255), yb.to(device, non_blocking=True))
                           for xb, yb, _ in iterate_batches(stream_loader))
        elif config.workers:
            inputs = torch.utils.data.DataLoader(shards, batch_size=None, collate_fn=_Gather(task, x_source,
                                                                                                   y_source),
                                                      **loader_kwargs)
        else:
            inputs = (task.inputs(x_source, y_source, shard.index.to(device)) for shard in shards)
        bar = progress_bar(zip(shards, inputs), total=len(shards), desc=f"{config.method} epoch {epoch + 1}/"
                           f"{config.epochs}", unit="batch", leave=False, enabled=progress and ctx.is_main)
        steps_done = 0
        for shard, (xb, yb) in bar:
            steps_done += 1
            if self_dealing and len(yb) != len(shard.index):
                raise StableTrainError(f"the training stream gave a batch of {len(yb)} samples at epoch {epoch + 1}, "
                                       f"step {shard.step + 1}, where {len(shard.index)} were planned")
            if config.workers and not streaming:
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
                     {"noise": noise.get_state(), "totals": sums[0], "correct": sums[1], "seen": sums[2],
                      "layout": layout})
                last_good = f"epoch {epoch}, step {shard.step + 1} of epoch {epoch + 1}"
        if steps_done != len(shards):
            raise StableTrainError(f"the training data gave {steps_done} of the {len(shards)} batches of epoch "
                                   f"{epoch + 1}; the last good checkpoint ({last_good}) is kept in {checkpoint_path}")
        totals, correct, seen = _reduce_epoch(totals, correct, seen, ctx)
        row = None
        if ctx.is_main:
            row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in totals.items()},
                   "train_accuracy": correct / max(seen, 1),
                   # streamed test images are evaluated in batches of the training size, so memory stays that of
                   # a training step whatever the size of the test set
                   **(task.evaluate(model, data, workers=config.workers, batch_size=config.batch_size) if streaming
                      else task.evaluate(model, data)),
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


def _init_spec(init_spec: dict[str, Any], spec: dict[str, Any], config: TrainConfig, init: str | Path) -> dict:
    """The model spec of a fine-tuning run from ``init``: this run's, with the normalization the model was trained
    with; an error line when the checkpoint's model does not fit."""
    same_kind = init_spec["name"] == spec["name"]
    shared = ["in_channels"] + [k for k in config.model_args if k in init_spec["kwargs"]]
    keys = (["num_classes"] + shared) if same_kind and config.task == "classification" else shared
    mismatch = [k for k in keys if init_spec["kwargs"].get(k) != spec["kwargs"].get(k)]
    # a classifier initializes the backbone of its embedder (small_cnn → small_embedder, SPEC → embed:SPEC)
    fits = same_kind or (config.task == "similarity" and (init_spec["name"] == "small_cnn"
                                                          or spec["name"] == f"embed:{init_spec['name']}"))
    if not fits or mismatch:
        def describe(s: dict) -> str:
            kwargs = s["kwargs"]
            return f"{s['name']} ({', '.join(f'{k} {kwargs.get(k)}' for k in ['num_classes', *shared])})"
        raise StableTrainError(f"--init {init} holds a {describe(init_spec)}, which does not fit this run's "
                               f"{describe(spec)} on {config.data}")
    kwargs = dict(spec["kwargs"])
    for key in ("mean", "std"):  # keep the normalization the model was trained with
        if key in init_spec["kwargs"]:
            kwargs[key] = init_spec["kwargs"][key]
    return {**spec, "kwargs": kwargs}


def _reduce_epoch(totals: dict[str, float], correct: float, seen: float,
                  ctx: dist_utils.DistContext) -> tuple[dict[str, float], float, float]:
    """The epoch's running sums over all ranks (unchanged in a single process, so its history stays bitwise)."""
    if not ctx.is_distributed:
        return dict(totals), correct, seen
    keys = list(totals)
    sums = dist_utils.all_reduce_sums([totals[k] for k in keys] + [correct, seen], ctx)
    return dict(zip(keys, sums[:-2])), sums[-2], int(sums[-1])


class _EpochBatches:
    """A batch sampler whose batches the loop replaces every epoch, so one DataLoader serves the whole run."""

    def __init__(self) -> None:
        self.keys: list[list[tuple[int, int]]] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


class _Gather:
    """DataLoader ``collate_fn``: one shard of indices → the objective's inputs (a class, so workers can pickle it)."""

    def __init__(self, task: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        self.task, self.x, self.y = task, x, y

    def __call__(self, shard: dist_utils.Shard) -> tuple[torch.Tensor, Any]:
        return self.task.inputs(self.x, self.y, shard.index)
