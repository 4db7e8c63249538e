"""Re-estimate BatchNorm running statistics on clean data before evaluation ("BN adaptation").

A BatchNorm model evaluates with the running mean and variance it
accumulated during training, an exponential average over the last few
hundred training batches of a model that was still changing. Recomputing
them in one pass over clean images of the final model (the remedy of
stochastic weight averaging, :func:`torch.optim.swa_utils.update_bn`)
removes that brittleness, so its share in a model's robustness to
distortions can be measured: evaluate with and without re-estimation.

:func:`reestimate_batchnorm` does exactly what ``update_bn`` does: every
BatchNorm layer's running statistics are reset and recomputed with the
cumulative average (``momentum=None``) with the whole model in train mode,
one forward pass per batch, under ``torch.no_grad``. The cumulative average
weights every *batch* equally (the running mean is the mean of the batch
means, the running variance the mean of the batches' unbiased variances),
so a short last batch counts as much as a full one; choose ``examples`` as
a multiple of ``batch_size`` for an average over images. Unlike
``update_bn`` it restores the train/eval mode of every submodule (not only
the top-level flag), restores the statistics if a forward pass fails, and
copies the model unless ``inplace=True``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import device_of
from .batches import example_batches

__all__ = ["BatchNormReport", "batchnorm_layers", "reestimate_batchnorm"]

logger = logging.getLogger("stabletrain.evaluation")


@dataclass(frozen=True)
class BatchNormReport:
    """What :func:`reestimate_batchnorm` did.

    Attributes:
        layers: BatchNorm layers whose running statistics were recomputed (0: the model has none).
        images: clean images they were recomputed on.
        batches: forward passes, each weighted equally by the cumulative average.
    """

    layers: int
    images: int
    batches: int

    def as_dict(self) -> dict[str, int]:
        """``{"images": …, "layers": …, "batches": …}`` for a results file."""
        return {"images": self.images, "layers": self.layers, "batches": self.batches}


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (``track_running_stats=True``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.BatchNorm2d(2, track_running_stats=False))
        >>> len(batchnorm_layers(net))
        1
    """
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and isinstance(m.running_mean, torch.Tensor)]


def _check_count(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StableTrainError(f"{name} must be an integer >= {minimum}, got {value!r}")


@overload
def reestimate_batchnorm(model: nn.Module, data: Any, *, examples: int | None = ..., batch_size: int = ...,
                         device: str | torch.device | None = ..., workers: int = ..., inplace: bool = ...,
                         return_report: Literal[False] = ..., name: str | None = ...) -> nn.Module: ...


@overload
def reestimate_batchnorm(model: nn.Module, data: Any, *, examples: int | None = ..., batch_size: int = ...,
                         device: str | torch.device | None = ..., workers: int = ..., inplace: bool = ...,
                         return_report: Literal[True], name: str | None = ...) -> tuple[nn.Module, BatchNormReport]: ...


def reestimate_batchnorm(model: nn.Module, data: Any, *, examples: int | None = None, batch_size: int = 256,
                         device: str | torch.device | None = None, workers: int = 0, inplace: bool = False,
                         return_report: bool = False,
                         name: str | None = None) -> nn.Module | tuple[nn.Module, BatchNormReport]:
    """Recompute the running statistics of every BatchNorm layer of ``model`` on clean images of ``data``.

    Args:
        model: any module that takes [0, 1] image batches (stabletrain's models normalize inside).
        data: an :class:`~stabletrain.data.ImageDataset` (e.g. ``DataSplit.train``), a torch ``Dataset`` of
            ``(image, label[, id])`` items, or a ``DataLoader`` that does not shuffle; iterated with
            :func:`~stabletrain.evaluation.batches.example_batches` (labels are ignored).
        examples: use the first ``examples`` images, in order (all of them for None). For a stream read
            by several DataLoader workers "first" is the order the stream delivers.
        batch_size: images per forward pass (a DataLoader keeps its own batches).
        device: where the images go (default: the device of the model's parameters).
        workers: DataLoader workers that decode a ``Dataset`` (not used for in-memory data or a DataLoader).
        inplace: update ``model`` itself; by default a deep copy is updated and ``model`` is left untouched.
        return_report: also return a :class:`BatchNormReport`.
        name: what the log messages call the model (default: its class name).

    Returns:
        The updated model (``model`` itself if ``inplace``), in the train/eval mode each of its modules
        had, with each layer's momentum as it was; with ``return_report``, ``(model, report)``. A model
        without BatchNorm layers that track running statistics is returned unchanged (copied unless
        ``inplace``), with a warning on the ``stabletrain.evaluation`` logger and ``report.layers == 0``.

    Example:
        >>> from stabletrain.data import ImageDataset
        >>> from stabletrain.models import SmallCNN
        >>> _ = torch.manual_seed(0)
        >>> model = SmallCNN(in_channels=1, num_classes=2, width=4).eval()
        >>> data = ImageDataset(torch.rand(64, 1, 8, 8), torch.zeros(64, dtype=torch.long))
        >>> adapted, report = reestimate_batchnorm(model, data, examples=32, batch_size=16, return_report=True)
        >>> report
        BatchNormReport(layers=3, images=32, batches=2)
        >>> adapted is model, adapted.training, bool(model.body[0][1].running_mean.eq(0).all())
        (False, False, True)
    """
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"reestimate_batchnorm needs a torch.nn.Module, got {type(model).__name__}")
    if examples is not None:
        _check_count(examples, "examples", 1)
    _check_count(batch_size, "batch_size", 1)
    _check_count(workers, "workers", 0)
    if data is None:
        raise StableTrainError("reestimate_batchnorm needs data: an ImageDataset, a torch Dataset or a DataLoader")
    label = name or type(model).__name__
    target = model if inplace else copy.deepcopy(model)
    layers = batchnorm_layers(target)
    if not layers:
        logger.warning(f"{label} has no BatchNorm layers with running statistics; nothing to "
                       f"re-estimate, the model is unchanged")
        report = BatchNormReport(layers=0, images=0, batches=0)
        return (target, report) if return_report else target
    device = torch.device(device) if device is not None else device_of(target)
    saved = {layer: (layer.momentum, {name: buffer.detach().clone() for name, buffer in layer.named_buffers(
        recurse=False) if buffer is not None}) for layer in layers}
    modes = {module: module.training for module in target.modules()}
    images = batches = 0
    completed = False
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        target.train()
        chunk = batch_size if examples is None else min(batch_size, examples)
        with torch.no_grad():
            for x, _, _ in example_batches(data, batch_size=chunk, device=device, workers=workers):
                if examples is not None:
                    x = x[:examples - images]
                if not len(x):
                    continue
                try:
                    target(x)
                except ValueError as err:
                    if "Expected more than 1 value per channel" in str(err):
                        raise StableTrainError(
                            f"a batch of {len(x)} image(s) has too few values per channel for BatchNorm in train "
                            f"mode; choose examples and batch_size so that no batch holds a single image") from None
                    raise
                images += len(x)
                batches += 1
                if examples is not None and images >= examples:
                    break
        if not images:
            raise StableTrainError("the data for re-estimating the BatchNorm statistics holds no images")
        completed = True
    finally:
        for layer, (momentum, buffers) in saved.items():
            layer.momentum = momentum
            if not completed:  # leave the model as it was (inplace) rather than half re-estimated
                for name, value in buffers.items():
                    getattr(layer, name).copy_(value)
        for module, training in modes.items():
            module.training = training
    report = BatchNormReport(layers=len(layers), images=images, batches=batches)
    logger.info(f"re-estimated {report.layers} BatchNorm layers of {label} on {images} images "
                f"({batches} batches)")
    return (target, report) if return_report else target
