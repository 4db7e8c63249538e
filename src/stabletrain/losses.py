"""Loss functions: functional cores and their ``nn.Module`` forms (torchmetrics style).

* :func:`stability_kl` / :class:`StabilityKLLoss` — KL(P(y|x) ‖ P(y|x')), the
  stability term of classifiers (Zheng et al., 2016);
* :func:`embedding_stability` / :class:`EmbeddingStabilityLoss` — the
  feature distance, the stability term of embeddings;
* :func:`triplet_ranking_loss` / :class:`TripletRankingLoss` — the hinge loss
  of deep ranking (Wang et al., 2014);
* :func:`js_divergence` (AugMix) and :func:`consistency_regularizer`
  (Jeong and Shin, 2020).

Each drops into any training loop:

>>> import torch
>>> clean, noisy = torch.randn(4, 3), torch.randn(4, 3)
>>> loss = StabilityKLLoss()(clean, noisy)
>>> bool(loss >= 0)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import StableTrainError, check_finite

__all__ = ["stability_kl", "StabilityKLLoss", "feature_distance", "embedding_stability", "EmbeddingStabilityLoss",
           "triplet_ranking_loss", "TripletRankingLoss", "js_divergence", "consistency_regularizer", "DISTANCES"]

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
    if not bool(torch.isfinite(per_example).all()):
        # log_softmax is exact for any finite logits, so a non-finite KL means NaN or inf in the input
        which = [name for name, z in (("clean", clean_logits), ("perturbed", perturbed_logits))
                 if not bool(torch.isfinite(z.detach()).all())]
        raise StableTrainError(f"stability_kl: the {' and '.join(which) or 'given'} logits contain NaN or inf")
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


def js_divergence(*logits: torch.Tensor) -> torch.Tensor:
    """AugMix's Jensen–Shannon divergence of several predictions: ``mean_i KL(pᵢ ‖ M)``, M their clamped mean.

    Example:
        >>> a = torch.tensor([[1.0, 0.0]])
        >>> float(js_divergence(a, a, a)) < 1e-6
        True
    """
    if len(logits) < 2:
        raise StableTrainError("the Jensen–Shannon divergence needs at least two predictions")
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.clamp(sum(probs) / len(probs), 1e-7, 1.0).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


def consistency_regularizer(logits: list[torch.Tensor], lam: float = 20.0, eta: float = 0.5) -> torch.Tensor:
    """``λ·mean_i KL(p̄ ‖ pᵢ) + η·H(p̄)`` over the predictions on m noisy copies (Jeong and Shin, 2020).

    Example:
        >>> z = torch.tensor([[10.0, -10.0]])
        >>> float(consistency_regularizer([z, z])) < 1e-6   # identical, confident predictions
        True
    """
    if len(logits) < 2:
        raise StableTrainError("consistency regularization needs m >= 2 noisy copies")
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    mean = sum(probs) / len(probs)
    kl = sum(F.kl_div(F.log_softmax(z.float(), dim=1), mean, reduction="batchmean") for z in logits) / len(logits)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1).mean()
    return lam * kl + eta * entropy


