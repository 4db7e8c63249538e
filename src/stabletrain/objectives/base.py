"""The objective interface and what the two-copy methods share (batching, batch-norm statistics)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..checks import StableTrainError, check_images, check_nonnegative

__all__ = ["Objective", "bn_running_stats_frozen", "resolve_batching", "check_two_copy_options", "two_copy_forward", "BATCHINGS",
           "BN_STATS"]

@contextlib.contextmanager
def bn_running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Within the block, batch-norm layers in training mode normalize with the
    batch's own statistics but do not update their running statistics.

    Used for the perturbed pass, so that the running statistics, which the
    model uses at test time, describe clean data only.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


BATCHINGS = ("auto", "separate", "concat")
BN_STATS = ("clean", "both")


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) and m.training for m in model.modules())


def resolve_batching(batching: str, model: nn.Module, bn_stats: str = "clean") -> str:
    """How the clean and the perturbed copy go through ``model``: ``'separate'`` or ``'concat'``.

    ``'separate'`` runs two forward passes; ``'concat'`` runs one pass over
    the concatenated batch. The two compute the same objective unless the
    model normalizes over the batch: a batch-norm layer in training mode
    then takes its statistics over both copies in ``'concat'``, and lets the
    perturbed copy update the running statistics. So ``'auto'`` depends on
    the model, never on the device, and the same config trains the same
    objective on a CPU and on a GPU:

    * a model with batch norm in training mode: ``'separate'``;
    * any other model: ``'concat'`` (one larger batch per step).

    An explicit ``'concat'`` on a batch-norm model with ``bn_stats='clean'``
    is an error, since it cannot keep the perturbed copy out of the statistics.

    Example:
        >>> resolve_batching("auto", nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
        'separate'
        >>> resolve_batching("auto", nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)))
        'concat'
    """
    if batching not in BATCHINGS:
        raise StableTrainError(f"batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"resolve_batching needs the model, got {type(model).__name__}")
    batch_norm = _has_batch_norm(model)
    if batching == "auto":
        return "separate" if batch_norm else "concat"
    if batching == "concat" and batch_norm and bn_stats == "clean":
        raise StableTrainError("batching 'concat' takes batch-norm statistics over both copies, so it cannot keep "
                               "them clean: use batching 'separate' (or 'auto'), or bn_stats 'both'")
    return batching


def check_two_copy_options(alpha: float, batching: str, bn_stats: str) -> float:
    """Validate the options of the two-copy (stability) objectives; returns alpha as a float."""
    alpha = check_nonnegative(alpha, "alpha")
    if batching not in BATCHINGS:
        raise StableTrainError(f"batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")
    if bn_stats not in BN_STATS:
        raise StableTrainError(f"bn_stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
    return alpha


def two_copy_forward(model: nn.Module, clean: torch.Tensor, perturbed: torch.Tensor, batching: str,
                     bn_stats: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs on the clean and the perturbed copy, batched as :func:`resolve_batching` decides.

    With separate passes and ``bn_stats='clean'``, only the clean pass
    updates batch-norm running statistics.
    """
    if resolve_batching(batching, model, bn_stats) == "concat":
        both = model(torch.cat([clean, perturbed], dim=0))
        return both[: clean.shape[0]], both[clean.shape[0]:]
    clean_out = model(clean)
    freeze = bn_running_stats_frozen(model) if bn_stats == "clean" else contextlib.nullcontext()
    with freeze:
        perturbed_out = model(perturbed)
    return clean_out, perturbed_out


class Objective(nn.Module):
    """Base class of the training objectives.

    Subclasses implement ``forward(model, x, y, generator=None)`` and return
    a dict with at least ``'loss'`` and ``'output'``; every other entry is a
    detached scalar for logging.
    """

    method: str = ""

    def __init__(self, task_loss: nn.Module | Callable | None = None, validate: bool = True) -> None:
        super().__init__()
        self.task_loss = task_loss if task_loss is not None else nn.CrossEntropyLoss()
        self.validate = validate

    def _check(self, x: torch.Tensor) -> None:
        if self.validate:
            check_images(x)

    def hyperparameters(self) -> dict:
        """The settings that define this objective, for configs and reports."""
        return {"method": self.method}


