"""Deep-ranking objectives on triplets: plain, Gaussian augmentation and stability training of embeddings."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..checks import StableTrainError
from ..losses import DISTANCES, EmbeddingStabilityLoss, TripletRankingLoss
from ..perturbations import GaussianNoise
from .classification import DEFAULT_ALPHA, DEFAULT_SIGMA
from .base import Objective, check_two_copy_options, two_copy_forward

__all__ = ["TripletObjective", "TRIPLET_METHODS"]

#: The methods a TripletObjective runs.
TRIPLET_METHODS = ("plain", "gaussian", "gaussian-noisy", "stability")


def _check_triplets(triplets: torch.Tensor) -> torch.Tensor:
    if not isinstance(triplets, torch.Tensor) or triplets.ndim != 5 or triplets.shape[1] != 3:
        shape = tuple(triplets.shape) if isinstance(triplets, torch.Tensor) else type(triplets).__name__
        raise StableTrainError(f"triplet batches must be B×3×C×H×W (query, positive, negative), got {shape}")
    return triplets.flatten(0, 1)


class TripletObjective(Objective):
    """Deep-ranking training on triplets with the same three methods as classification.

    ``forward(model, triplets)`` takes a ``B×3×C×H×W`` batch of (query,
    positive, negative) images and an embedding ``model``; ``'output'`` is the
    ``B×3×D`` batch of features the task loss saw.

    * ``method='plain'``: the triplet loss on clean images.
    * ``method='gaussian'``: augmentation as the method describes it, the
      mean of the triplet loss on the clean and on the noisy triplets;
    * ``method='gaussian-noisy'``: the triplet loss on noisy copies only.
    * ``method='stability'``: the triplet loss on clean images plus
      ``alpha`` times the feature distance between each of the 3B images
      and its noisy copy.

    Example:
        >>> embedder = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        >>> objective = TripletObjective("stability", alpha=1.0, sigma=0.1)
        >>> out = objective(embedder, torch.rand(2, 3, 1, 4, 4))
        >>> tuple(out["output"].shape), sorted(out)
        ((2, 3, 4), ['loss', 'output', 'stability_loss', 'task_loss'])
    """

    def __init__(self, method: str = "stability", task_loss: nn.Module | Callable | None = None,
                 alpha: float = DEFAULT_ALPHA, sigma: float = DEFAULT_SIGMA, *, margin: float = 0.2, distance: str = "squared_l2",
                 detach_clean: bool = False, batching: str = "auto", bn_stats: str = "clean", clamp: bool = True,
                 validate: bool = True) -> None:
        super().__init__(task_loss if task_loss is not None else TripletRankingLoss(margin), validate)
        if method not in TRIPLET_METHODS:
            raise StableTrainError(f"unknown method {method!r}; known methods: {', '.join(sorted(TRIPLET_METHODS))}")
        self.method = method
        self.alpha = check_two_copy_options(alpha, batching, bn_stats)
        self.margin = float(margin)
        self.perturbation = GaussianNoise(sigma, clamp=clamp)
        self.stability_loss = EmbeddingStabilityLoss(distance, detach_clean=detach_clean, validate=False)
        self.batching, self.bn_stats = batching, bn_stats

    def forward(self, model: nn.Module, triplets: torch.Tensor, target: object = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        images = _check_triplets(triplets)
        self._check(images)
        batch = triplets.shape[0]
        if self.method == "plain":
            features = model(images)
        elif self.method == "gaussian-noisy":
            features = model(self.perturbation(images, generator))
        elif self.method == "gaussian":
            perturbed = self.perturbation(images, generator)
            features, perturbed_features = two_copy_forward(model, images, perturbed, self.batching, self.bn_stats)
            output, noisy = features.view(batch, 3, -1), perturbed_features.view(batch, 3, -1)
            clean_loss, noisy_loss = self.task_loss(output, target), self.task_loss(noisy, target)
            loss = 0.5 * (clean_loss + noisy_loss)
            return {"loss": loss, "output": output, "task_loss": loss.detach(), "clean_loss": clean_loss.detach(),
                    "noisy_loss": noisy_loss.detach()}
        else:
            perturbed = self.perturbation(images, generator)
            features, perturbed_features = two_copy_forward(model, images, perturbed, self.batching, self.bn_stats)
        output = features.view(batch, 3, -1)
        task = self.task_loss(output, target)
        result = {"loss": task, "output": output, "task_loss": task.detach()}
        if self.method == "stability":
            stability = self.stability_loss(features, perturbed_features)
            result["loss"] = task + self.alpha * stability
            result["stability_loss"] = stability.detach()
        return result

    def hyperparameters(self) -> dict:
        params = {"method": self.method, "task": "similarity", "margin": self.margin}
        if self.method != "plain":
            params["sigma"] = self.perturbation.sigma
        if self.method == "gaussian":
            params.update(batching=self.batching, bn_stats=self.bn_stats)
        if self.method == "stability":
            params.update(alpha=self.alpha, distance=self.stability_loss.distance,
                          detach_clean=self.stability_loss.detach_clean, batching=self.batching,
                          bn_stats=self.bn_stats)
        return params


