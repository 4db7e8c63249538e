"""Jet tagging: the CNN tagger, its training task, the mass-window baseline and the metrics physicists quote.

The tagger reads images in TeV (see :mod:`stabletrain.jets.data`) and
transforms them inside the model, as all stabletrain models normalize their
own input:

* ``input='log'``: ``log(1 + x / 1 GeV)``, scaled to about [0, 1]; it
  compresses the steep pT spectrum of the cells, so soft structure counts;
* ``input='standardize'``: per-pixel ``(x − mean) / std`` of the training
  images, the classic jet-image preprocessing;
* ``input='linear'``: the pixel values unchanged, for images already scaled
  (the sparse-versus-dense study uses it, so no data statistics enter).

Scores are the softmax probability of the signal class. Metrics are the ROC
AUC and the background rejection ``1/ε_B`` at signal efficiencies of 30 % and
50 %. The physics baseline scores a jet by ``−|m − m_W|`` with the mass taken
from the image, so the baseline also sees every detector effect.

Example:
    >>> import torch
    >>> tagger = JetTagger(width=4)
    >>> tagger(torch.rand(2, 1, 25, 25) * 0.01).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset
from ..distortions import parse_distortions
from ..devices import device_of as _device_of
from ..evaluation import distort_examples, predict_logits
from ..metrics import background_rejection, roc_auc
from ..models import register_model
from ..tasks import ClassificationTask
from .data import PIXEL_UNIT_GEV
from .images import ImageSpec, image_mass

__all__ = [
    "EFFICIENCIES",
    "JET_INPUTS",
    "W_MASS",
    "JetTagger",
    "JetTaggingTask",
    "evaluate_taggers",
    "mass_window_scores",
    "tagger_scores",
    "tagging_metrics",
]

JET_INPUTS = ("log", "standardize", "linear")
W_MASS = 80.4
TOP_MASS = 172.5
EFFICIENCIES = (0.3, 0.5)
_GEV = 1.0 / PIXEL_UNIT_GEV


class JetTagger(nn.Module):
    """A CNN for jet images: input transform, three convolution stages, a dense head.

    Jet images are pre-processed so that position carries meaning, so the
    head is dense over the last feature map, not globally pooled.

    Args:
        in_channels: image channels (1 for pT images).
        num_classes: output logits (2: background, signal).
        width: channels of the first convolution.
        image_size: side of the square images.
        input: ``'log'``, ``'standardize'`` or ``'linear'``.
        mean, std: per-pixel statistics (``image_size²`` values) for ``'standardize'``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, image_size: int = 25,
                 input: str = "log", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if input not in JET_INPUTS:
            raise StableTrainError(f"unknown jet input transform {input!r}; known: {', '.join(JET_INPUTS)}")
        if image_size < 8 or width < 1 or num_classes < 2:
            raise StableTrainError("JetTagger needs image_size >= 8, width >= 1, num_classes >= 2")
        self.input = input
        self.image_size = image_size
        pixels = image_size * image_size
        mean_t = torch.zeros(pixels) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(pixels) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean_t.numel() != pixels or std_t.numel() != pixels:
            raise StableTrainError(f"standardization needs {pixels} per-pixel values, got {mean_t.numel()}")
        self.register_buffer("mean", mean_t.view(1, 1, image_size, image_size))
        self.register_buffer("std", std_t.clamp_min(1e-6).view(1, 1, image_size, image_size))

        def block(cin: int, cout: int, kernel: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(block(in_channels, width, 5), nn.MaxPool2d(2),
                                  block(width, 2 * width, 3), nn.MaxPool2d(2),
                                  block(2 * width, 2 * width, 3), nn.Flatten())
        side = image_size // 4
        self.feature_dim = 64
        self.embed = nn.Sequential(nn.Linear(2 * width * side * side, self.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise StableTrainError(f"JetTagger expects B×C×{self.image_size}×{self.image_size} images, "
                                   f"got {tuple(x.shape)}")
        if self.input == "log":
            return torch.log1p(x.clamp_min(0.0) / _GEV) / math.log1p(0.3 / _GEV)
        if self.input == "linear":
            return x
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(self.transform(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


register_model("jet_cnn", JetTagger)


#: Added to every pixel's std, as a fraction of the mean std over pixels (see :func:`_pixel_stats`).
STD_FLOOR = 0.1


def _pixel_stats(data: DataSplit) -> tuple[list[float], list[float]]:
    """Per-pixel mean and std of the training images, the std raised by ``STD_FLOOR`` × its mean.

    Cells that are (almost) always empty have a std near zero; dividing by it
    would turn a deposit of a fraction of a GeV there into a huge input, so a
    tagger would be trivially fooled (it was, before the floor: 0.5 % of the
    brightest cell flipped every decision).
    """
    x = data.train.x[:, 0].flatten(1).double()
    std = x.std(0)
    std = std + STD_FLOOR * std.mean()
    return [round(float(v), 9) for v in x.mean(0)], [round(float(v), 9) for v in std.clamp_min(1e-9)]


class JetTaggingTask(ClassificationTask):
    """Signal-versus-background tagging of jet images; scored by test ROC AUC.

    Args:
        noise: the perturbation of the methods that add noise (``gaussian``,
            ``stability``, ``jsd``, ``consistency``): ``'relative'``
            (default; multiplicative on occupied cells, so a sparse image
            stays as sparse) or ``'gaussian'`` (additive on every cell); the
            method's ``sigma`` is its size (relative units, or TeV).
        jet_input: the input transform of the ``jet_cnn`` tagger: ``'log'``
            (default), ``'standardize'`` or ``'linear'``.

    ``--model small_cnn`` (the default) means the jet tagger ``jet_cnn`` here.
    """

    name = "jets"
    metric = "test_auc"
    supplied_model_args = ("in_channels", "num_classes", "image_size", "input", "mean", "std")

    def __init__(self, noise: str = "relative", jet_input: str = "log") -> None:
        from ..registry import PERTURBATIONS

        if not isinstance(noise, str) or noise not in PERTURBATIONS:
            raise StableTrainError(f"unknown noise model {noise!r}; known: {', '.join(PERTURBATIONS.names())}")
        if jet_input not in JET_INPUTS:
            raise StableTrainError(f"unknown jet input transform {jet_input!r}; known: {', '.join(JET_INPUTS)}")
        self.noise, self.jet_input = noise, jet_input

    def model_name(self, model: str) -> str:
        return "jet_cnn" if model in ("small_cnn", "jet_cnn") else model

    def load_data(self, config: Any) -> DataSplit:
        from .data import load_jets

        if config.image_size is not None:
            raise StableTrainError("jet images keep their generated frame; drop --image-size for --task jets")
        return load_jets(config.data, split_seed=config.split_seed, test_fraction=config.test_fraction)

    def model_kwargs(self, config: Any, data: DataSplit) -> dict[str, Any]:
        if self.model_name(config.model) != "jet_cnn":
            return super().model_kwargs(config, data)
        kwargs: dict[str, Any] = {"in_channels": data.channels, "num_classes": data.num_classes,
                                  "image_size": data.image_size[0], "input": self.jet_input}
        if self.jet_input == "standardize":
            kwargs["mean"], kwargs["std"] = _pixel_stats(data)
        return kwargs

    def perturbation(self, method_args: dict[str, Any]) -> nn.Module | None:
        from ..perturbations import build_perturbation

        if "sigma" not in method_args:
            return None
        return build_perturbation(self.noise, method_args["sigma"])

    def evaluate(self, model: nn.Module, data: DataSplit) -> dict[str, float]:
        scores = tagger_scores(model, data.test.x)
        labels = data.test.y.numpy()
        predicted = (scores >= 0.5).astype(int)
        return {"test_accuracy": float((predicted == labels).mean()), "test_auc": roc_auc(scores, labels)}


def tagger_scores(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Signal probability of each image (softmax of the logits, class 1)."""
    return predict_logits(model, x).softmax(1)[:, 1].double().numpy()


def mass_window_scores(x: torch.Tensor, spec: ImageSpec = ImageSpec(), mass: float = W_MASS) -> np.ndarray:
    """The mass-window baseline: ``−|m − mass|`` with m the image mass in GeV (a window cut sweeps its ROC)."""
    images = x[:, 0].double().numpy() * PIXEL_UNIT_GEV
    return -np.abs(image_mass(images, spec) - mass)


def tagging_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC, and background rejection 1/ε_B at ε_S = 30 % and 50 %.

    Example:
        >>> m = tagging_metrics(np.array([0.9, 0.8, 0.4, 0.1]), np.array([1, 1, 0, 0]))
        >>> m["auc"], m["rejection_50"]
        (1.0, 2.0)
    """
    out = {"auc": roc_auc(scores, labels)}
    for eff in EFFICIENCIES:
        out[f"rejection_{round(eff * 100)}"] = background_rejection(scores, labels, eff)
    return out


def evaluate_taggers(models: Mapping[str, nn.Module], dataset: ImageDataset, specs: Sequence[str], *,
                     seed: int = 0, spec: ImageSpec = ImageSpec(), mass: float = W_MASS,
                     progress: bool = True) -> list[dict[str, Any]]:
    """Score every tagger and the mass window on ``dataset`` under each detector effect in ``specs``.

    Every model and the baseline see the same distorted copy (seeded by
    ``(seed, spec)``). Returns one row per (model, spec) with ``auc``,
    ``rejection_30``, ``rejection_50``, ``accuracy`` (taggers) and the
    fraction of occupied cells.
    """
    from tqdm.auto import tqdm

    distortions = parse_distortions(["clean", *[s for s in specs if s != "clean"]])
    labels = dataset.y.numpy()
    rows: list[dict[str, Any]] = []
    device = _device_of(next(iter(models.values()))) if models else torch.device("cpu")
    for distortion in tqdm(distortions, desc="detector effects", unit="effect", disable=not progress or None):
        # each jet's detector effect comes from its own stream: the same at any batch size
        x = distort_examples(distortion, dataset.x.to(device), 0, seed, "detector", distortion.spec).cpu()
        common = {"distortion": distortion.spec, "family": distortion.family if distortion.spec != "clean" else "clean",
                  "param": distortion.param, "occupancy": float((x > 0).float().mean())}
        baseline = tagging_metrics(mass_window_scores(x, spec, mass), labels)
        rows.append({"model": "mass-window", **common, **baseline, "accuracy": None})
        for name, model in models.items():
            scores = tagger_scores(model, x)
            rows.append({"model": name, **common, **tagging_metrics(scores, labels),
                         "accuracy": float(((scores >= 0.5).astype(int) == labels).mean())})
    return rows
