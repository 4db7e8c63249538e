"""stabletrain: stability training and robustness evaluation for neural networks.

Stability training (Zheng, Song, Leung and Goodfellow, CVPR 2016) adds to the
task loss a term that keeps the model's output on a noisy copy of each input
close to its output on the clean input::

    L(x) = L0(x) + alpha * KL(P(y|x) || P(y|x')),   x' = x + N(0, sigma^2)

Quick use in your own loop:

>>> import torch
>>> from torch import nn
>>> from stabletrain import StabilityObjective
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> objective = StabilityObjective(nn.CrossEntropyLoss(), alpha=1.0, sigma=0.1)
>>> out = objective(model, torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))
>>> out["loss"].backward()
"""

__version__ = "0.1.0"

from .checks import StableTrainError, check_images
from .data import DataSplit, ImageDataset, load_data
from .distortions import Distortion, paper_sweep, parse_distortion, parse_distortions, register_distortion
from .evaluation import accuracy, evaluate, evaluate_distortions, evaluate_suites
from .models import NormalizedClassifier, SmallCNN, build_model
from .objectives import (
    GaussianAugmentation,
    PlainObjective,
    StabilityKLLoss,
    StabilityObjective,
    build_objective,
    stability_kl,
)
from .perturbations import GaussianNoise
from . import consistency  # noqa: E402,F401  (registers jsd, trades, adversarial and consistency)
from . import corruptions  # noqa: E402,F401  (registers the 19 corruption families as distortion specs)
from .training import TrainConfig, load_model, train

__all__ = [
    "evaluate",
    "evaluate_suites",
    "__version__",
    "StableTrainError",
    "check_images",
    "DataSplit",
    "ImageDataset",
    "load_data",
    "Distortion",
    "paper_sweep",
    "parse_distortion",
    "parse_distortions",
    "register_distortion",
    "accuracy",
    "evaluate_distortions",
    "NormalizedClassifier",
    "SmallCNN",
    "build_model",
    "GaussianAugmentation",
    "PlainObjective",
    "StabilityKLLoss",
    "StabilityObjective",
    "build_objective",
    "stability_kl",
    "GaussianNoise",
    "TrainConfig",
    "load_model",
    "train",
]
