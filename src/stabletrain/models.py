"""Models that take [0, 1] images and normalize them internally.

Keeping normalization inside the model means every perturbation, distortion
and attack in stabletrain works in pixel units, and a checkpoint carries the
statistics it was trained with.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .checks import StableTrainError
from .registry import MODELS

__all__ = ["Normalize", "NormalizedClassifier", "SmallCNN", "Embedder", "small_embedder", "build_model", "register_model",
           "available_models", "load_weights"]


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


class NormalizedClassifier(nn.Module):
    """Wrap any ``nn.Module`` classifier so that it accepts [0, 1] images.

    Example:
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> model = NormalizedClassifier(backbone, mean=[0.5] * 3, std=[0.2] * 3)
        >>> model(torch.rand(4, 3, 2, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


NORMS = ("batch", "group")


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    raise StableTrainError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def _conv_block(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        _norm_layer(norm, cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A compact VGG-style CNN for small images (32×32 by default, any size >= 8).

    Three stages of 3×3 convolution, batch norm and ReLU, each followed by
    2×2 max pooling, then global average pooling to a ``feature_dim``-wide
    embedding and a linear classifier. ``features(x)`` returns the embedding.

    Args:
        in_channels: 1 for grayscale, 3 for RGB.
        num_classes: number of output logits.
        width: channels of the first stage; later stages use 2× and 4×.
        mean, std: per-channel input statistics, applied inside the model.
        norm: ``'batch'`` (default) or ``'group'``. Group norm normalizes each
            example on its own, so a data-parallel run computes exactly what
            one process computes on the whole batch, with no SyncBatchNorm.

    Example:
        >>> model = SmallCNN(in_channels=1, num_classes=10)
        >>> model(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1:
            raise StableTrainError(
                f"SmallCNN needs in_channels >= 1, num_classes >= 2 and width >= 1, got "
                f"{in_channels}, {num_classes}, {width}")
        self.normalize = Normalize(mean if mean is not None else [0.5] * in_channels,
                                   std if std is not None else [0.25] * in_channels)
        self.body = nn.Sequential(
            _conv_block(in_channels, width, norm), nn.MaxPool2d(2),
            _conv_block(width, 2 * width, norm), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width, norm), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.feature_dim = 4 * width
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer embedding, ``B×feature_dim``."""
        if x.ndim != 4 or x.shape[-1] < 8 or x.shape[-2] < 8:
            raise StableTrainError(f"SmallCNN needs B×C×H×W inputs of at least 8×8 pixels, got {tuple(x.shape)}")
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Embedder(nn.Module):
    """Image → feature vector, for near-duplicate detection and ranking.

    The features are the backbone's penultimate layer (``backbone.features``
    or, timm-style, ``backbone.forward_features``), optionally followed by a
    linear projection and L2 normalization. Any classifier with such a
    method serves as an embedder, which is how a trained classifier is
    fine-tuned into a stable embedder.

    Example:
        >>> embedder = Embedder(SmallCNN(3, 10, width=8))
        >>> features = embedder(torch.rand(2, 3, 32, 32))
        >>> tuple(features.shape), bool(torch.allclose(features.norm(dim=1), torch.ones(2)))
        ((2, 32), True)
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int | None = None, l2_normalize: bool = True) -> None:
        super().__init__()
        extract = getattr(backbone, "features", None) or getattr(backbone, "forward_features", None)
        if not callable(extract):
            raise StableTrainError(
                f"{type(backbone).__name__} has no features() or forward_features() method to embed with")
        self.backbone = backbone
        feature_dim = getattr(backbone, "feature_dim", None)
        if embedding_dim is not None and feature_dim is None:
            raise StableTrainError("a projection needs the backbone's feature_dim attribute")
        self.projection = nn.Linear(feature_dim, embedding_dim) if embedding_dim else nn.Identity()
        self.l2_normalize = l2_normalize
        self.embedding_dim = embedding_dim or feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extract = getattr(self.backbone, "features", None) or self.backbone.forward_features
        features = self.projection(extract(x))
        return nn.functional.normalize(features, dim=1) if self.l2_normalize else features


def small_embedder(in_channels: int = 3, num_classes: int = 2, width: int = 32, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, embedding_dim: int | None = None,
                   l2_normalize: bool = True, norm: str = "batch") -> Embedder:
    """A :class:`SmallCNN` used as an :class:`Embedder`; ``num_classes`` only sizes the unused head,
    so that a classifier checkpoint of the same shape loads into it."""
    backbone = SmallCNN(in_channels, max(2, num_classes), width=width, mean=mean, std=std, norm=norm)
    return Embedder(backbone, embedding_dim=embedding_dim, l2_normalize=l2_normalize)


MODELS.register("small_cnn", SmallCNN)
MODELS.register("small_embedder", small_embedder)


def register_model(name: str, factory: Callable[..., nn.Module] | str) -> None:
    """Make an architecture available by name, for the CLI and for checkpoints.

    ``factory`` is a callable or a lazy ``'module:attribute'`` string. It is
    called with the keyword arguments stored in the checkpoint
    (``in_channels``, ``num_classes``, ``mean``, ``std`` and any others), so a
    checkpoint can rebuild the model it came from; they are checked against
    its signature. An extension registers its models from its
    ``stabletrain.plugins`` entry point (see :mod:`stabletrain.registry`), so
    its checkpoints load in a fresh process.
    """
    MODELS.register(name, factory, override=True)


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, the extensions' included."""
    return MODELS.names()


def build_model(name: str, /, **kwargs: object) -> nn.Module:
    """Build a registered model by name; an unknown name or keyword is a :class:`StableTrainError`.

    Example:
        >>> build_model("small_cnn", in_channels=3, num_classes=5, width=8)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 5])
        >>> build_model("small_cnn", widht=8)
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: unknown option 'widht' for model 'small_cnn'; its options: in_channels, num_classes, width, mean, std, dropout, norm
    """
    return MODELS.build(name, **kwargs)


def load_weights(model: nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming ``source`` when it does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise StableTrainError(f"checkpoint {source} does not fit this model: {first}") from None
