"""Training objectives: the stability loss and the methods built on it.

The functional core is :func:`stability_kl`. The objectives are
:class:`torch.nn.Module` s that take ``(model, x, y)`` and return a dict with
``'loss'`` (what to back-propagate), ``'output'`` (the logits the task loss
saw) and each part of the loss detached for logging. They drop into any
training loop:

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> objective = StabilityObjective(nn.CrossEntropyLoss(), alpha=0.01, sigma=0.04)
>>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
>>> out = objective(model, x, y)
>>> out["loss"].backward()
>>> sorted(out)
['loss', 'output', 'stability_loss', 'task_loss']
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .checks import StableTrainError, check_finite, check_images, check_nonnegative
from .perturbations import GaussianNoise

__all__ = [
    "stability_kl",
    "StabilityKLLoss",
    "feature_distance",
    "embedding_stability",
    "EmbeddingStabilityLoss",
    "triplet_ranking_loss",
    "TripletRankingLoss",
    "TripletObjective",
    "Objective",
    "PlainObjective",
    "GaussianAugmentation",
    "StabilityObjective",
    "build_objective",
    "register_objective",
    "available_methods",
    "bn_running_stats_frozen",
    "resolve_batching",
]

Reduction = str  # "mean" | "sum" | "none"


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise StableTrainError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def stability_kl(
    clean_logits: torch.Tensor,
    perturbed_logits: torch.Tensor,
    *,
    detach_clean: bool = False,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """KL(P(y|x) ‖ P(y|x')) from the logits of the clean and the perturbed batch.

    The clean prediction is the reference distribution: the loss pulls the
    perturbed prediction towards the clean one, as in Zheng et al. (2016).
    Computed in float32 from log-softmax, so it is exact for saturated
    predictions where probabilities underflow.

    ``detach_clean`` decides where gradients go:

    * ``False`` (default): gradients reach the model through **both**
      branches. The clean branch receives the gradient of
      ``Σ p log p − Σ p log q``, which includes the entropy of the clean
      prediction, so the clean output is also pulled towards the perturbed
      one (and towards lower entropy).
    * ``True``: the clean distribution is a fixed target. The value still is
      the KL, but the gradient equals that of the paper's cross-entropy form
      ``−Σ_j P(y_j|x) log P(y_j|x')``: the two differ only by the entropy of
      ``P(y|x)``, a constant once detached.

    Args:
        clean_logits: ``B×K`` logits of the clean inputs.
        perturbed_logits: ``B×K`` logits of the perturbed copies.
        detach_clean: treat the clean distribution as a constant target.
        reduction: ``'mean'`` over the batch (default), ``'sum'`` or ``'none'``.

    Example:
        >>> a = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(stability_kl(a, a))
        0.0
        >>> float(stability_kl(a, torch.zeros(1, 3))) > 0
        True
    """
    if clean_logits.shape != perturbed_logits.shape:
        raise StableTrainError(
            f"clean and perturbed logits must have the same shape, got {tuple(clean_logits.shape)} "
            f"and {tuple(perturbed_logits.shape)}"
        )
    if clean_logits.ndim != 2:
        raise StableTrainError(f"logits must be B×K, got shape {tuple(clean_logits.shape)}")
    log_p = F.log_softmax(clean_logits.float(), dim=-1)
    log_q = F.log_softmax(perturbed_logits.float(), dim=-1)
    if detach_clean:
        log_p = log_p.detach()
    per_example = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return _reduce(per_example, reduction)


class StabilityKLLoss(nn.Module):
    """Module form of :func:`stability_kl`.

    Example:
        >>> loss = StabilityKLLoss()
        >>> float(loss(torch.zeros(2, 4), torch.zeros(2, 4)))
        0.0
    """

    def __init__(self, detach_clean: bool = False, reduction: Reduction = "mean", validate: bool = True) -> None:
        super().__init__()
        _reduce(torch.zeros(1), reduction)  # fail at construction on a bad reduction
        self.detach_clean = detach_clean
        self.reduction = reduction
        self.validate = validate

    def forward(self, clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
        if self.validate:
            check_finite(clean_logits, "clean logits")
            check_finite(perturbed_logits, "perturbed logits")
        return stability_kl(clean_logits, perturbed_logits, detach_clean=self.detach_clean, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"detach_clean={self.detach_clean}, reduction={self.reduction!r}"


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


def resolve_batching(batching: str, device: torch.device | str) -> str:
    """Pick how the clean and perturbed copies go through the model.

    ``'separate'`` runs two forward passes; ``'concat'`` runs one pass over
    the concatenated batch. ``'auto'`` picks ``'separate'`` on the CPU,
    where two passes of B measured faster than one of 2B (see
    ``docs/benchmarks.md``), and ``'concat'`` on accelerators, where one
    larger kernel launch uses the device better.
    """
    if batching not in ("auto", "separate", "concat"):
        raise StableTrainError(f"batching must be 'auto', 'separate' or 'concat', got {batching!r}")
    if batching != "auto":
        return batching
    return "separate" if torch.device(device).type == "cpu" else "concat"


def _check_stability_options(alpha: float, batching: str, bn_stats: str) -> float:
    """Validate the options shared by the stability objectives; returns alpha as a float."""
    alpha = check_nonnegative(alpha, "alpha")
    resolve_batching(batching, "cpu")  # validates the name
    if bn_stats not in ("clean", "both"):
        raise StableTrainError(f"bn_stats must be 'clean' or 'both', got {bn_stats!r}")
    return alpha


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


class PlainObjective(Objective):
    """The task loss on clean inputs only; the baseline without any robustness term.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = PlainObjective()(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> sorted(out)
        ['loss', 'output', 'task_loss']
    """

    method = "plain"

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        output = model(x)
        loss = self.task_loss(output, y)
        return {"loss": loss, "output": output, "task_loss": loss.detach()}


class GaussianAugmentation(Objective):
    """Data augmentation with Gaussian noise: the task loss on perturbed copies.

    This is the baseline that stability training is compared with. The model
    sees only noisy inputs, which regularizes it but tends to cost accuracy on
    clean inputs.

    Args:
        task_loss: the task loss (default cross-entropy).
        sigma: noise standard deviation in [0, 1] pixel units.
        clamp: clip the noisy copy into [0, 1].

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = GaussianAugmentation(sigma=0.1)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> out["loss"].requires_grad
        True
    """

    method = "gaussian"

    def __init__(self, task_loss: nn.Module | Callable | None = None, sigma: float = 0.04, clamp: bool = True,
                 validate: bool = True, perturbation: nn.Module | None = None) -> None:
        super().__init__(task_loss, validate)
        self.perturbation = perturbation if perturbation is not None else GaussianNoise(sigma, clamp=clamp)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        output = model(self.perturbation(x, generator))
        loss = self.task_loss(output, y)
        return {"loss": loss, "output": output, "task_loss": loss.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "sigma": getattr(self.perturbation, "sigma", None)}


class StabilityObjective(Objective):
    """Stability training: ``L = L0(x) + alpha * KL(P(y|x) ‖ P(y|x'))``.

    The task loss ``L0`` is evaluated on the clean batch only. The same model
    (shared weights) runs the clean batch and a perturbed copy
    ``x' = x + N(0, sigma^2)``, and gradients flow through both branches
    unless ``detach_clean`` is set (see :func:`stability_kl`).

    Args:
        task_loss: the task loss on clean inputs (default cross-entropy).
        alpha: weight of the stability term, ``>= 0``.
        sigma: noise standard deviation in [0, 1] pixel units (ignored when
            ``perturbation`` is given).
        perturbation: any module ``(x, generator) -> x'`` to replace the
            Gaussian noise.
        detach_clean: treat the clean prediction as a constant target.
        batching: ``'separate'`` (two forward passes), ``'concat'`` (one pass
            over both copies) or ``'auto'`` (by device; see
            :func:`resolve_batching`).
        bn_stats: with separate passes, ``'clean'`` (default) lets only the
            clean pass update batch-norm running statistics; ``'both'`` lets
            both passes update them. With ``'concat'`` the batch statistics
            are necessarily shared by both copies.
        validate: check that inputs are finite and in [0, 1].

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> objective = StabilityObjective(alpha=1.0, sigma=0.1)
        >>> out = objective(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]),
        ...                 generator=torch.Generator().manual_seed(0))
        >>> bool(out["loss"] >= out["task_loss"])
        True
    """

    method = "stability"

    def __init__(
        self,
        task_loss: nn.Module | Callable | None = None,
        alpha: float = 0.01,
        sigma: float = 0.04,
        *,
        perturbation: nn.Module | None = None,
        detach_clean: bool = False,
        batching: str = "auto",
        bn_stats: str = "clean",
        clamp: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__(task_loss, validate)
        self.alpha = _check_stability_options(alpha, batching, bn_stats)
        self.perturbation = perturbation if perturbation is not None else GaussianNoise(sigma, clamp=clamp)
        self.stability_loss = StabilityKLLoss(detach_clean=detach_clean, validate=False)
        self.batching = batching
        self.bn_stats = bn_stats

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        perturbed = self.perturbation(x, generator)
        if resolve_batching(self.batching, x.device) == "concat":
            both = model(torch.cat([x, perturbed], dim=0))
            clean_out, perturbed_out = both[: x.shape[0]], both[x.shape[0]:]
        else:
            clean_out = model(x)
            freeze = bn_running_stats_frozen(model) if self.bn_stats == "clean" else contextlib.nullcontext()
            with freeze:
                perturbed_out = model(perturbed)
        task = self.task_loss(clean_out, y)
        stability = self.stability_loss(clean_out, perturbed_out)
        loss = task + self.alpha * stability
        return {
            "loss": loss,
            "output": clean_out,
            "task_loss": task.detach(),
            "stability_loss": stability.detach(),
        }

    def hyperparameters(self) -> dict:
        sigma = getattr(self.perturbation, "sigma", None)
        return {
            "method": self.method,
            "alpha": self.alpha,
            "sigma": sigma,
            "detach_clean": self.stability_loss.detach_clean,
            "batching": self.batching,
            "bn_stats": self.bn_stats,
        }


DISTANCES = ("squared_l2", "l2", "cosine")


def feature_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """Row-wise distance between two ``B×D`` feature batches.

    ``'squared_l2'`` is ``‖a − b‖²``, ``'l2'`` is ``‖a − b‖`` (with a zero
    sub-gradient at ``a = b``), ``'cosine'`` is ``1 − cos(a, b)``.

    Example:
        >>> feature_distance(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])).tolist()
        [5.0]
    """
    if a.shape != b.shape or a.ndim != 2:
        raise StableTrainError(f"features must be two B×D batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if distance == "squared_l2":
        return (a - b).pow(2).sum(dim=1)
    if distance == "l2":
        squared = (a - b).pow(2).sum(dim=1)
        # sqrt has an infinite derivative at 0; where the copies coincide the gradient is set to 0.
        safe = torch.where(squared > 0, squared, torch.ones_like(squared))
        return torch.where(squared > 0, safe.sqrt(), torch.zeros_like(squared))
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)
    raise StableTrainError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")


def embedding_stability(clean_features: torch.Tensor, perturbed_features: torch.Tensor, *,
                        distance: str = "squared_l2", detach_clean: bool = False,
                        reduction: Reduction = "mean") -> torch.Tensor:
    """The stability term for embeddings: the distance between ``f(x)`` and ``f(x')``.

    The paper uses the L2 distance of the deep-ranking features; the
    default here is its square, whose gradient is smooth at zero. Gradients
    reach both branches unless ``detach_clean`` is set.

    Example:
        >>> f = torch.randn(4, 8)
        >>> float(embedding_stability(f, f))
        0.0
    """
    if detach_clean:
        clean_features = clean_features.detach()
    return _reduce(feature_distance(clean_features, perturbed_features, distance), reduction)


class EmbeddingStabilityLoss(nn.Module):
    """Module form of :func:`embedding_stability`.

    Example:
        >>> float(EmbeddingStabilityLoss("l2")(torch.zeros(2, 3), torch.ones(2, 3)))  # doctest: +ELLIPSIS
        1.732...
    """

    def __init__(self, distance: str = "squared_l2", detach_clean: bool = False, reduction: Reduction = "mean",
                 validate: bool = True) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise StableTrainError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        _reduce(torch.zeros(1), reduction)
        self.distance, self.detach_clean, self.reduction, self.validate = distance, detach_clean, reduction, validate

    def forward(self, clean_features: torch.Tensor, perturbed_features: torch.Tensor) -> torch.Tensor:
        if self.validate:
            check_finite(clean_features, "clean features")
            check_finite(perturbed_features, "perturbed features")
        return embedding_stability(clean_features, perturbed_features, distance=self.distance,
                                   detach_clean=self.detach_clean, reduction=self.reduction)


def triplet_ranking_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *,
                         margin: float = 0.2, distance: str = "l2", reduction: Reduction = "mean") -> torch.Tensor:
    """The hinge loss of deep ranking (Wang et al., 2014): ``max(0, margin + d(q, p) − d(q, n))``.

    Wang et al. use the squared Euclidean distance; ``distance='l2'`` (the
    default here, as in ``torch.nn.TripletMarginLoss``) matches the distance
    used for near-duplicate detection.

    Example:
        >>> q, p, n = torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 3.0]])
        >>> float(triplet_ranking_loss(q, p, n, margin=1.0)), float(triplet_ranking_loss(q, n, p, margin=1.0))
        (0.0, 3.0)
    """
    if margin < 0:
        raise StableTrainError(f"margin must be >= 0, got {margin!r}")
    hinge = (margin + feature_distance(anchor, positive, distance) - feature_distance(anchor, negative, distance))
    return _reduce(hinge.clamp_min(0.0), reduction)


class TripletRankingLoss(nn.Module):
    """Module form of :func:`triplet_ranking_loss`; takes a ``B×3×D`` batch of (query, positive, negative) features."""

    def __init__(self, margin: float = 0.2, distance: str = "l2", reduction: Reduction = "mean") -> None:
        super().__init__()
        if margin < 0:
            raise StableTrainError(f"margin must be >= 0, got {margin!r}")
        if distance not in DISTANCES:
            raise StableTrainError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        self.margin, self.distance, self.reduction = float(margin), distance, reduction

    def forward(self, triplet_features: torch.Tensor, target: object = None) -> torch.Tensor:
        if triplet_features.ndim != 3 or triplet_features.shape[1] != 3:
            raise StableTrainError(f"triplet features must be B×3×D, got {tuple(triplet_features.shape)}")
        return triplet_ranking_loss(triplet_features[:, 0], triplet_features[:, 1], triplet_features[:, 2],
                                    margin=self.margin, distance=self.distance, reduction=self.reduction)


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
    * ``method='gaussian'``: the triplet loss on noisy copies (augmentation).
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

    def __init__(self, method: str = "stability", task_loss: nn.Module | Callable | None = None, alpha: float = 1.0,
                 sigma: float = 0.04, *, margin: float = 0.2, distance: str = "squared_l2",
                 detach_clean: bool = False, batching: str = "auto", bn_stats: str = "clean", clamp: bool = True,
                 validate: bool = True) -> None:
        super().__init__(task_loss if task_loss is not None else TripletRankingLoss(margin), validate)
        if method not in ("plain", "gaussian", "stability"):
            raise StableTrainError(f"unknown method {method!r}; known methods: gaussian, plain, stability")
        self.method = method
        self.alpha = _check_stability_options(alpha, batching, bn_stats)
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
        elif self.method == "gaussian":
            features = model(self.perturbation(images, generator))
        else:
            perturbed = self.perturbation(images, generator)
            if resolve_batching(self.batching, images.device) == "concat":
                both = model(torch.cat([images, perturbed]))
                features, perturbed_features = both[: len(images)], both[len(images):]
            else:
                features = model(images)
                freeze = bn_running_stats_frozen(model) if self.bn_stats == "clean" else contextlib.nullcontext()
                with freeze:
                    perturbed_features = model(perturbed)
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
        if self.method == "stability":
            params.update(alpha=self.alpha, distance=self.stability_loss.distance,
                          detach_clean=self.stability_loss.detach_clean, batching=self.batching,
                          bn_stats=self.bn_stats)
        return params


_OBJECTIVES: dict[tuple[str, str], Callable[..., Objective]] = {}
TASKS = ("classification", "similarity")


def register_objective(name: str, factory: Callable[..., Objective], task: str = "classification") -> None:
    """Make a training method available by name to :func:`build_objective` and the CLI.

    The factory receives the keyword arguments given to ``build_objective``
    and should ignore those it does not use.
    """
    _OBJECTIVES[(task, name)] = factory


def available_methods(task: str = "classification") -> list[str]:
    """The method names accepted by :func:`build_objective` for ``task``."""
    return sorted(name for t, name in _OBJECTIVES if t == task)


def build_objective(method: str, *, task: str = "classification", task_loss: nn.Module | None = None,
                    alpha: float = 0.01, sigma: float = 0.04, detach_clean: bool = False, batching: str = "auto",
                    bn_stats: str = "clean", **extra: object) -> Objective:
    """Build a training objective by name: ``'plain'``, ``'gaussian'`` or ``'stability'``.

    ``task='similarity'`` gives the triplet-ranking versions, which take
    ``B×3×C×H×W`` triplet batches; ``extra`` may then set ``margin`` and
    ``distance`` (of the stability term).

    Example:
        >>> build_objective("stability", alpha=0.1, sigma=0.05).hyperparameters()["alpha"]
        0.1
    """
    if task not in TASKS:
        raise StableTrainError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if (task, method) not in _OBJECTIVES:
        raise StableTrainError(f"unknown method {method!r}; known methods: {', '.join(available_methods(task))}")
    return _OBJECTIVES[(task, method)](task_loss=task_loss, alpha=alpha, sigma=sigma, detach_clean=detach_clean,
                                       batching=batching, bn_stats=bn_stats, **extra)


register_objective("plain", lambda task_loss=None, **_: PlainObjective(task_loss))
register_objective("gaussian", lambda task_loss=None, sigma=0.04, perturbation=None, **_:
                   GaussianAugmentation(task_loss, sigma=sigma, perturbation=perturbation))
register_objective(
    "stability",
    lambda task_loss=None, alpha=0.01, sigma=0.04, detach_clean=False, batching="auto", bn_stats="clean",
    perturbation=None, **_:
    StabilityObjective(task_loss, alpha=alpha, sigma=sigma, detach_clean=detach_clean, batching=batching,
                       bn_stats=bn_stats, perturbation=perturbation),
)


def _triplet_factory(method: str) -> Callable[..., Objective]:
    def factory(task_loss=None, alpha=1.0, sigma=0.04, detach_clean=False, batching="auto", bn_stats="clean",
                margin=0.2, distance="squared_l2", **_: object) -> Objective:
        return TripletObjective(method, task_loss, alpha=alpha, sigma=sigma, margin=margin, distance=distance,
                                detach_clean=detach_clean, batching=batching, bn_stats=bn_stats)
    return factory


for _method in ("plain", "gaussian", "stability"):
    register_objective(_method, _triplet_factory(_method), task="similarity")
