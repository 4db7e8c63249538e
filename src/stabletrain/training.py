"""The training loop: one interface for every method, with checkpoints and resume.

>>> from stabletrain.training import TrainConfig, train
>>> result = train(TrainConfig(data="digits", method="stability", epochs=1, width=8),
...                "runs/doctest-train", progress=False, overwrite=True)   # doctest: +SKIP
>>> result.history[-1]["test_accuracy"]   # doctest: +SKIP

Every epoch ends with an atomic write of ``checkpoint.pt`` (model,
optimizer, scheduler, history, config) and of ``history.json``/``.csv``.
Randomness comes from generators seeded by ``(seed, stream, epoch)``, so a
run resumed from the checkpoint of epoch k reproduces the uninterrupted run
exactly on the CPU.
"""

from __future__ import annotations

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
from .checks import StableTrainError
from .data import DataSplit
from .files import atomic_torch_save, safe_torch_load, write_csv, write_json, write_yaml
from .models import build_model, load_weights
from .objectives import available_methods, resolve_batching
from .perturbations import PERTURBATIONS
from .seeding import make_generator
from .tasks import METHOD_OPTIONS, TASK_NAMES, get_task

__all__ = ["TrainConfig", "TrainResult", "train", "load_checkpoint", "load_model", "resolve_device",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "stabletrain.checkpoint/1"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as ``config.yaml`` beside the results.

    The defaults of ``alpha`` and ``sigma`` come from the sweep recorded in
    ``docs/results.md``.
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
        if self.jet_input not in ("log", "standardize"):
            raise StableTrainError(f"unknown jet input transform {self.jet_input!r}; known: log, standardize")
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
                      "sigma", "detach_clean", "batch_size", "lr", "weight_decay", "seed", "bn_stats", "noise",
                      "jet_input")


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
        resume: continue from ``out_dir/checkpoint.pt`` if it exists. The
            config must match the stored one except for ``epochs`` (which
            may grow) and ``device``/``batching``.
        init: a checkpoint whose weights start the run (fine-tuning).
        overwrite: start afresh even if ``out_dir`` holds a checkpoint.
        progress: show progress bars.
        data: pre-loaded data (must correspond to ``config.data``).
        log: called with one line per epoch.
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
        changed = [k for k in _RESUME_MUST_MATCH if previous.get(k) != getattr(config, k)]
        if changed:
            raise StableTrainError(
                f"cannot resume {out}: option(s) {', '.join(changed)} differ from the stored run")
        if config.epochs < stored["epoch"]:
            raise StableTrainError(f"cannot resume {out}: it already trained {stored['epoch']} epochs > --epochs {config.epochs}")
    init_checkpoint = load_checkpoint(init) if init is not None and stored is None else None

    device = resolve_device(config.device)
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
    objective = task.objective(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(task.batches(data, config.batch_size, torch.Generator().manual_seed(0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(steps_per_epoch * config.epochs))

    history: list[dict] = []
    start_epoch = 0
    elapsed_before = 0.0
    if stored is not None:
        task.init_from(model, stored, str(checkpoint_path))
        optimizer.load_state_dict(stored["optimizer"])
        scheduler.load_state_dict(stored["scheduler"])
        history = list(stored["history"])
        start_epoch = int(stored["epoch"])
        elapsed_before = float(stored.get("train_seconds", 0.0))
    elif existing and overwrite:
        checkpoint_path.unlink()

    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "config.yaml", {**config.to_dict(), "init": str(init) if init else None})
    x_train, y_train = data.train.x.to(device), data.train.y.to(device)
    emit = log if log is not None else (lambda line: None)
    if stored is not None:
        emit(f"resuming {out} after epoch {start_epoch}/{config.epochs}")

    def save(epoch: int, complete: bool, seconds: float) -> None:
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
            "complete": complete,
            "config": config.to_dict(),
            "objective": objective.hyperparameters(),
            "data": data.describe(),
            "history": history,
            "train_seconds": seconds,
            "init": str(init) if init else None,
        }, checkpoint_path)

    started = time.perf_counter()
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        model.train()
        shuffle = make_generator(config.seed, "shuffle", epoch)
        noise = make_generator(config.seed, "perturbation", epoch, device=device)
        totals: dict[str, float] = {}
        correct = seen = 0
        batches = task.batches(data, config.batch_size, shuffle)
        bar = tqdm(batches, desc=f"{config.method} epoch {epoch + 1}/{config.epochs}", unit="batch",
                   leave=False, disable=not progress or None)
        for index in bar:
            index = index.to(device)
            xb, yb = task.inputs(x_train, y_train, index)
            out_step = objective(model, xb, yb, generator=noise)
            loss = out_step["loss"]
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise StableTrainError(
                    f"loss became {loss_value} at epoch {epoch + 1}, step {global_step + 1}; training stopped, "
                    f"the last good checkpoint (epoch {epoch}) is kept in {checkpoint_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            for key, value in out_step.items():
                if key != "output":
                    totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(index)
            correct += task.correct(out_step["output"].detach(), yb)
            seen += len(index)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in totals.items()},
               "train_accuracy": correct / max(seen, 1),
               **task.evaluate(model, data),
               "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - started + elapsed_before}
        history.append(row)
        done = epoch + 1 == config.epochs
        save(epoch + 1, done, row["seconds"])
        write_json(out / "history.json", history)
        write_csv(out / "history.csv", history)
        emit(f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f} "
             f"train acc {row['train_accuracy']:.3f} {task.metric.replace('_', ' ')} {row[task.metric]:.3f}")
    total_seconds = time.perf_counter() - started + elapsed_before
    if start_epoch == config.epochs and stored is not None and not stored.get("complete"):
        save(config.epochs, True, total_seconds)
    model.eval()
    return TrainResult(model=model, history=history, checkpoint=checkpoint_path, config=config, data=data,
                       train_seconds=history[-1]["seconds"] if history else total_seconds,
                       resumed_from_epoch=start_epoch)
