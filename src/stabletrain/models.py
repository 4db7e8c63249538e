"""Models that take [0, 1] images and normalize them internally.

Keeping normalization inside the model means every perturbation, distortion
and attack in stabletrain works in pixel units, and a checkpoint carries the
statistics it was trained with.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .checks import StableTrainError

__all__ = ["Normalize", "NormalizedClassifier", "SmallCNN", "build_model", "register_model", "available_models"]


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


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
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

    Example:
        >>> model = SmallCNN(in_channels=1, num_classes=10)
        >>> model(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1:
            raise StableTrainError(
                f"SmallCNN needs in_channels >= 1, num_classes >= 2 and width >= 1, got "
                f"{in_channels}, {num_classes}, {width}")
        self.normalize = Normalize(mean if mean is not None else [0.5] * in_channels,
                                   std if std is not None else [0.25] * in_channels)
        self.body = nn.Sequential(
            _conv_block(in_channels, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width), nn.MaxPool2d(2),
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


_MODELS: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make an architecture available by name, for the CLI and for checkpoints.

    The factory is called with the keyword arguments stored in the
    checkpoint (``in_channels``, ``num_classes``, ``mean``, ``std`` and any
    extra ones), so a checkpoint can rebuild the model it came from.
    """
    _MODELS[name] = factory


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_MODELS)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name.

    Example:
        >>> build_model("small_cnn", in_channels=3, num_classes=5, width=8)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 5])
    """
    if name not in _MODELS:
        raise StableTrainError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    return _MODELS[name](**kwargs)
