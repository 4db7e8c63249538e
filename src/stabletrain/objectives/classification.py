"""Classification objectives: plain training, Gaussian augmentation (two variants) and stability training."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..losses import StabilityKLLoss
from ..perturbations import GaussianNoise
from .base import Objective, check_two_copy_options, two_copy_forward

__all__ = ["PlainObjective", "GaussianAugmentation", "NoisyOnlyAugmentation", "StabilityObjective", "DEFAULT_ALPHA", "DEFAULT_SIGMA"]

#: The defaults of stability training and of its Gaussian baseline, everywhere: these classes, build_objective,
#: ``stabletrain train`` and YAML configs all take them from here. They were chosen by the sweep on digits in
#: docs/results.md. The paper's values for fine-tuning ImageNet networks are alpha = 0.01, sigma = 0.04: pass
#: them explicitly there.
DEFAULT_ALPHA = 4.0
DEFAULT_SIGMA = 0.2


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
    """Data augmentation with Gaussian noise, the baseline as stability training describes it.

    The data set is enlarged with Gaussian-perturbed copies: the originals
    stay in it, and the task loss is evaluated on clean and perturbed images
    alike, ``(L0(x) + L0(x')) / 2`` with ``x' = clip(x + N(0, sigma^2), 0, 1)``.
    That is the same two passes over the same perturbed samples as
    stability training, at equal compute; only the objective differs. The
    variant that sees noisy copies only is :class:`NoisyOnlyAugmentation`
    (``gaussian-noisy``).

    Args:
        task_loss: the task loss (default cross-entropy).
        sigma: noise standard deviation in [0, 1] pixel units.
        clamp: clip the noisy copy into [0, 1].
        perturbation: any module ``(x, generator) -> x'`` to replace the noise.
        batching: ``'concat'`` (default: one pass over both copies, so batch
            norm normalizes the mixed batches of the enlarged data set and
            its running statistics see both), ``'separate'`` or ``'auto'``
            (see :func:`~stabletrain.objectives.base.resolve_batching`).
        bn_stats: ``'both'`` (default) or, with separate passes, ``'clean'``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = GaussianAugmentation(sigma=0.1)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> sorted(out), out["loss"].requires_grad
        (['clean_loss', 'loss', 'noisy_loss', 'output', 'task_loss'], True)
    """

    method = "gaussian"

    def __init__(self, task_loss: nn.Module | Callable | None = None, sigma: float = DEFAULT_SIGMA, clamp: bool = True,
                 validate: bool = True, perturbation: nn.Module | None = None, batching: str = "concat",
                 bn_stats: str = "both") -> None:
        super().__init__(task_loss, validate)
        check_two_copy_options(0.0, batching, bn_stats)
        self.perturbation = perturbation if perturbation is not None else GaussianNoise(sigma, clamp=clamp)
        self.batching, self.bn_stats = batching, bn_stats

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        perturbed = self.perturbation(x, generator)
        clean_out, noisy_out = two_copy_forward(model, x, perturbed, self.batching, self.bn_stats)
        clean_loss, noisy_loss = self.task_loss(clean_out, y), self.task_loss(noisy_out, y)
        loss = 0.5 * (clean_loss + noisy_loss)
        return {"loss": loss, "output": clean_out, "task_loss": loss.detach(), "clean_loss": clean_loss.detach(),
                "noisy_loss": noisy_loss.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "sigma": getattr(self.perturbation, "sigma", None),
                "batching": self.batching, "bn_stats": self.bn_stats}


class NoisyOnlyAugmentation(Objective):
    """Gaussian augmentation on noisy copies only: the task loss on ``x'``, never on the clean image.

    A second baseline (``gaussian-noisy``): the model, and its batch-norm
    statistics, never see a clean image. :class:`GaussianAugmentation` is
    the baseline as the method describes it.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = NoisyOnlyAugmentation(sigma=0.1)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> out["loss"].requires_grad
        True
    """

    method = "gaussian-noisy"

    def __init__(self, task_loss: nn.Module | Callable | None = None, sigma: float = DEFAULT_SIGMA, clamp: bool = True,
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
            over both copies) or ``'auto'`` (separate for models with batch
            norm, else concat; never by device, see
            :func:`~stabletrain.objectives.base.resolve_batching`).
        bn_stats: ``'clean'`` (default) lets only the clean pass update
            batch-norm running statistics; ``'both'`` lets both passes update
            them. ``'concat'`` on a batch-norm model needs ``'both'``.
        clamp: clip the noisy copy into [0, 1] (default): ``x' = clip(x + N(0, sigma^2), 0, 1)``.
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
        alpha: float = DEFAULT_ALPHA,
        sigma: float = DEFAULT_SIGMA,
        *,
        perturbation: nn.Module | None = None,
        detach_clean: bool = False,
        batching: str = "auto",
        bn_stats: str = "clean",
        clamp: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__(task_loss, validate)
        self.alpha = check_two_copy_options(alpha, batching, bn_stats)
        self.perturbation = perturbation if perturbation is not None else GaussianNoise(sigma, clamp=clamp)
        self.stability_loss = StabilityKLLoss(detach_clean=detach_clean, validate=False)
        self.batching = batching
        self.bn_stats = bn_stats

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        perturbed = self.perturbation(x, generator)
        clean_out, perturbed_out = two_copy_forward(model, x, perturbed, self.batching, self.bn_stats)
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


