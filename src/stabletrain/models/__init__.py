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

from ..checks import StableTrainError
from ..registry import MODELS
from .specs import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, model_factory, parse_model_spec
from .weights import WeightsReport, load_pretrained, read_weights
from .wrap import Normalize, NormalizedClassifier, classifier_layer, unwrap

__all__ = ["Normalize", "NormalizedClassifier", "SmallCNN", "Embedder", "small_embedder", "build_model", "register_model",
           "available_models", "load_weights", "create_model", "model_factory", "parse_model_spec", "ModelSpec",
           "load_pretrained", "read_weights", "WeightsReport", "classifier_layer", "unwrap", "IMAGENET_MEAN",
           "IMAGENET_STD"]


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

    The features are the backbone's pooled penultimate layer, found in this
    order: ``backbone.features`` with ``feature_dim`` (stabletrain's models
    and :class:`NormalizedClassifier`, which pools a timm backbone with
    ``forward_features`` + ``forward_head(pre_logits=True)`` and takes a
    torchvision model's input to its classifier layer); a bare timm model's
    ``forward_features`` + ``forward_head(pre_logits=True)`` with
    ``num_features``; or the input of the last ``nn.Linear``. An optional
    linear projection and L2 normalization follow. Any classifier serves as
    an embedder, which is how a trained classifier is fine-tuned into a
    stable embedder.

    Example:
        >>> embedder = Embedder(SmallCNN(3, 10, width=8))
        >>> features = embedder(torch.rand(2, 3, 32, 32))
        >>> tuple(features.shape), bool(torch.allclose(features.norm(dim=1), torch.ones(2)))
        ((2, 32), True)
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int | None = None, l2_normalize: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self._mode = self._extraction(backbone)
        feature_dim = self._feature_dim(backbone)
        if embedding_dim is not None and feature_dim is None:
            raise StableTrainError(f"a projection needs the feature width of {type(backbone).__name__} "
                                   f"(feature_dim or num_features)")
        self.projection = nn.Linear(feature_dim, embedding_dim) if embedding_dim else nn.Identity()
        self.l2_normalize = l2_normalize
        self.embedding_dim = embedding_dim or feature_dim

    @staticmethod
    def _extraction(backbone: nn.Module) -> str:
        if callable(getattr(backbone, "features", None)) and not isinstance(getattr(backbone, "features"),
                                                                            nn.Module):
            return "features"
        if callable(getattr(backbone, "forward_features", None)) and callable(getattr(backbone, "forward_head",
                                                                                      None)):
            return "timm"
        if classifier_layer(backbone) is not None:
            return "classifier_input"
        raise StableTrainError(f"{type(backbone).__name__} has no features(), forward_features() or classifier "
                               f"layer to embed with")

    @staticmethod
    def _feature_dim(backbone: nn.Module) -> int | None:
        for attribute in ("feature_dim", "num_features"):
            try:
                value = getattr(backbone, attribute, None)
            except StableTrainError:
                value = None
            if isinstance(value, int):
                return value
        head = classifier_layer(backbone)
        return int(head[1].in_features) if head is not None and isinstance(head[1], nn.Linear) else None

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled penultimate features, before projection and normalization."""
        backbone = self.backbone
        if self._mode == "features":
            features = backbone.features(x)
        elif self._mode == "timm":
            features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
        else:
            features = NormalizedClassifier.features(_AsWrapped(backbone), x)
        return features.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.projection(self.pooled_features(x))
        return nn.functional.normalize(features, dim=1) if self.l2_normalize else features


class _AsWrapped:
    """Lets :meth:`NormalizedClassifier.features` find the classifier input of a bare model (no normalization)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x


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
    """Build a model by name or spec (see :mod:`stabletrain.models.specs`); an unknown name or keyword is a
    :class:`StableTrainError`.

    Example:
        >>> build_model("small_cnn", in_channels=3, num_classes=5, width=8)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 5])
        >>> build_model("small_cnn", widht=8)
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: unknown option 'widht' for model 'small_cnn'; its options: in_channels, num_classes, width, mean, std, dropout, norm
    """
    parsed = parse_model_spec(name)
    if parsed.kind == "registered":
        return MODELS.build(name, **kwargs)
    from ..registry import check_options

    factory = model_factory(name)
    check_options(factory, dict(kwargs), f"model {name!r}")
    return factory(**kwargs)


def create_model(spec: str, /, *, num_classes: int = 1000, in_channels: int = 3, weights: str | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 **kwargs: object) -> nn.Module:
    """A model from a spec, taking [0, 1] images, optionally with pretrained weights (timm's ``create_model``).

    ``timm:``/``torchvision:`` models normalize with their pretrained
    statistics unless ``mean``/``std`` are given; registered and user
    models need ``mean``/``std`` (stabletrain's training takes them from the
    data). ``weights`` is any file :func:`load_pretrained` reads; a head of
    another class count is replaced. Other keyword arguments go to the
    model's factory.

    Example:
        >>> model = create_model("small_cnn", num_classes=4, in_channels=1, mean=[0.5], std=[0.25], width=4)
        >>> model(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 4])
    """
    from .specs import uses_data_statistics

    factory = model_factory(spec)
    args: dict = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    if mean is not None or std is not None or uses_data_statistics(factory):
        if mean is None or std is None:
            raise StableTrainError(f"model {spec!r} normalizes with given statistics: pass both mean and std")
        args.update(mean=list(mean), std=list(std))
    model = build_model(spec, **args)
    if weights is not None:
        load_pretrained(model, weights)
    return model


def load_weights(model: nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming ``source`` when it does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise StableTrainError(f"checkpoint {source} does not fit this model: {first}") from None
