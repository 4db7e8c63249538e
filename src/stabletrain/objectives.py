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

from .checks import StableTrainError, check_finite, check_images
from .perturbations import GaussianNoise

__all__ = [
    "stability_kl",
    "StabilityKLLoss",
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
                 validate: bool = True) -> None:
        super().__init__(task_loss, validate)
        self.perturbation = GaussianNoise(sigma, clamp=clamp)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        output = model(self.perturbation(x, generator))
        loss = self.task_loss(output, y)
        return {"loss": loss, "output": output, "task_loss": loss.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "sigma": self.perturbation.sigma}


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
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise StableTrainError(f"alpha must be a number, got {alpha!r}") from None
        if not 0.0 <= alpha < float("inf"):
            raise StableTrainError(f"alpha must be a finite number >= 0, got {alpha!r}")
        resolve_batching(batching, "cpu")  # validates the name
        if bn_stats not in ("clean", "both"):
            raise StableTrainError(f"bn_stats must be 'clean' or 'both', got {bn_stats!r}")
        self.alpha = alpha
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


_OBJECTIVES: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str, factory: Callable[..., Objective]) -> None:
    """Make a training method available by name to :func:`build_objective` and the CLI.

    The factory receives the keyword arguments given to ``build_objective``
    and should ignore those it does not use.
    """
    _OBJECTIVES[name] = factory


def available_methods() -> list[str]:
    """The names accepted by :func:`build_objective`."""
    return sorted(_OBJECTIVES)


def build_objective(method: str, *, task_loss: nn.Module | None = None, alpha: float = 0.01, sigma: float = 0.04,
                    detach_clean: bool = False, batching: str = "auto", bn_stats: str = "clean",
                    **extra: object) -> Objective:
    """Build a training objective by name: ``'plain'``, ``'gaussian'`` or ``'stability'``.

    Example:
        >>> build_objective("stability", alpha=0.1, sigma=0.05).hyperparameters()["alpha"]
        0.1
    """
    if method not in _OBJECTIVES:
        raise StableTrainError(f"unknown method {method!r}; known methods: {', '.join(available_methods())}")
    return _OBJECTIVES[method](task_loss=task_loss, alpha=alpha, sigma=sigma, detach_clean=detach_clean,
                               batching=batching, bn_stats=bn_stats, **extra)


register_objective("plain", lambda task_loss=None, **_: PlainObjective(task_loss))
register_objective("gaussian", lambda task_loss=None, sigma=0.04, **_: GaussianAugmentation(task_loss, sigma=sigma))
register_objective(
    "stability",
    lambda task_loss=None, alpha=0.01, sigma=0.04, detach_clean=False, batching="auto", bn_stats="clean", **_:
    StabilityObjective(task_loss, alpha=alpha, sigma=sigma, detach_clean=detach_clean, batching=batching,
                       bn_stats=bn_stats),
)
