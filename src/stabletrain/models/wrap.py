"""Wrapping any classifier so that it takes [0, 1] images, and finding its head and its penultimate features."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..checks import StableTrainError

__all__ = ["Normalize", "NormalizedClassifier", "classifier_layer", "unwrap"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, with the statistics stored as buffers.

    Example:
        >>> Normalize([0.5], [0.25])(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape:
            raise StableTrainError(f"mean and std must be equal-length lists, got {list(mean)} and {list(std)}")
        if not bool((std_t > 0).all()):
            raise StableTrainError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def classifier_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier head of ``model``: its qualified name and module, or None when none is found.

    timm models name it (``get_classifier()``); stabletrain's own models call
    it ``head``; otherwise it is the last ``nn.Linear`` (torchvision's ``fc``,
    ``classifier.N``, ``heads.head``).

    Example:
        >>> classifier_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))[0]
        '3'
    """
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # some timm models return tuples or raise for distilled heads
            head = None
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            for name, module in model.named_modules():
                if module is head:
                    return name, module
    if isinstance(getattr(model, "head", None), nn.Module):
        return "head", model.head
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name:  # the model itself is not its own head
            last = (name, module)
    return last


class NormalizedClassifier(nn.Module):
    """Wrap any ``nn.Module`` classifier so that it accepts [0, 1] images.

    ``in_channels=1`` with three-channel statistics repeats a grayscale image
    over the three channels a pretrained backbone expects.
    :meth:`features` returns the pooled penultimate features (timm's
    ``forward_features`` + ``forward_head(pre_logits=True)``, else the input
    of the classifier layer), ``feature_dim`` their width.

    Example:
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> model = NormalizedClassifier(backbone, mean=[0.5] * 3, std=[0.2] * 3)
        >>> model(torch.rand(4, 3, 2, 2)).shape, model.features(torch.rand(4, 3, 2, 2)).shape
        (torch.Size([4, 2]), torch.Size([4, 12]))
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 in_channels: int | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        channels = len(list(mean))
        self.in_channels = channels if in_channels is None else int(in_channels)
        if self.in_channels not in (1, channels):
            raise StableTrainError(f"{self.in_channels}-channel inputs cannot feed a model normalized over "
                                   f"{channels} channels")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise StableTrainError(f"the model takes B×{self.in_channels}×H×W images, got {tuple(x.shape)}")
        channels = self.normalize.mean.shape[1]
        if self.in_channels != channels:
            x = x.expand(-1, channels, -1, -1)
        return self.normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(x))

    @property
    def feature_dim(self) -> int:
        width = getattr(self.model, "num_features", None) or getattr(self.model, "feature_dim", None)
        if isinstance(width, int):
            return width
        head = classifier_layer(self.model)
        if head is None or not isinstance(head[1], nn.Linear):
            raise StableTrainError(f"{type(self.model).__name__} has no classifier layer whose input gives the "
                                   f"feature width")
        return int(head[1].in_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, ``B×feature_dim``."""
        x = self._prepare(x)
        inner = self.model
        if callable(getattr(inner, "forward_features", None)) and callable(getattr(inner, "forward_head", None)):
            return inner.forward_head(inner.forward_features(x), pre_logits=True)
        if callable(getattr(inner, "features", None)) and isinstance(getattr(inner, "feature_dim", None), int):
            return inner.features(x)
        head = classifier_layer(inner)
        if head is None:
            raise StableTrainError(f"{type(inner).__name__} has no classifier layer; cannot find its features")
        captured: list[torch.Tensor] = []
        hook = head[1].register_forward_hook(lambda module, args, output: captured.append(args[0]))
        try:
            inner(x)
        finally:
            hook.remove()
        return captured[-1].flatten(1)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP, ``torch.compile`` and :class:`NormalizedClassifier` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(model, NormalizedClassifier):
            model = model.model
        else:
            return model
