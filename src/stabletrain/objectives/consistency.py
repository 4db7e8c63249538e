"""Beyond stability training: the consistency family and adversarial training.

Each method is an :class:`~stabletrain.objectives.Objective` with the same
interface as ``plain``/``gaussian``/``stability``, registered by name:

============== ===================================================================== ============================
method         loss                                                                  published defaults
============== ===================================================================== ============================
``jsd``        ``CE(f(x), y) + λ·JS(p(x), p(x'₁), p(x'₂))`` (AugMix; the mixture is    λ = 12
               clamped to [1e-7, 1]; gradients flow through all three views)
``trades``     ``CE(f(x), y) + β·KL(p(x) ‖ p(x_adv))``, ``x_adv`` maximizes that KL by  β = 6, ε = 0.031,
               L∞ PGD from ``x + 0.001·N(0, 1)`` with the model in eval mode          10 steps of 0.007
``adversarial`` ``CE(f(x_adv), y)``, ``x_adv`` from L∞ PGD on the cross-entropy with a   ε = 0.031, 10 steps of 0.007
               uniform random start (Madry et al.)
``consistency`` ``mean_i CE(f(x+δᵢ), y) + λ·mean_i KL(p̄ ‖ pᵢ) + η·H(p̄)`` over m noisy     m = 2, λ = 20, η = 0.5
               copies ``δᵢ ~ N(0, σ²)`` (Jeong and Shin, 2020)
============== ===================================================================== ============================

In ``jsd`` the two views are AugMix augment-and-mix chains
(:class:`~stabletrain.augmix.AugMix`: width 3, depth 1–3, severity 3,
Dirichlet and Beta mixing with α = 1); ``jsd-gaussian`` keeps the earlier
Gaussian-noise views (``sigma``). Any perturbation module can replace them. In
``consistency`` the entropy is ``−Σ p̄ log p̄``: the reference code's
``'default'`` loss applies a second softmax to p̄ before taking the entropy
(its authors call this an implementation slip, kept for reproducibility).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..augmix import AugMix
from ..checks import StableTrainError, check_nonnegative
from ..losses import consistency_regularizer, js_divergence, stability_kl
from ..perturbations import GaussianNoise
from .adversarial import InnerAttack, LinfAttack, check_attack
from .base import Objective

__all__ = ["JSDObjective", "TradesObjective", "AdversarialObjective", "ConsistencyObjective"]


class JSDObjective(Objective):
    """AugMix's Jensen–Shannon consistency: ``task(f(x), y) + λ·JS(p(x), p(x'₁), p(x'₂))``.

    The two views ``x'₁, x'₂`` are two calls of the perturbation on the clean batch, drawn one
    after the other from the same generator. By default the perturbation is
    :class:`~stabletrain.augmix.AugMix` (width 3, depth 1–3, severity 3, α = 1), as in AugMix;
    ``sigma`` gives Gaussian-noise views instead (:class:`~stabletrain.perturbations.GaussianNoise`,
    the ``jsd-gaussian`` method), and ``perturbation``, when given, replaces both (a task's own noise
    model, say). The clean and the two augmented batches take three forward passes; gradients flow
    through all three.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> out = JSDObjective(lam=12.0)(model, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1]))
        >>> sorted(out)
        ['consistency_loss', 'loss', 'output', 'task_loss']
        >>> JSDObjective(sigma=0.1).perturbation
        GaussianNoise(sigma=0.1, clamp=True)
    """

    method = "jsd"

    def __init__(self, task_loss: nn.Module | Callable | None = None, lam: float = 12.0, sigma: float | None = None,
                 perturbation: nn.Module | None = None, validate: bool = True) -> None:
        super().__init__(task_loss, validate)
        self.lam = check_nonnegative(lam, "jsd lambda")
        if perturbation is not None:
            self.perturbation = perturbation
        elif sigma is not None:
            self.perturbation = GaussianNoise(sigma)
        else:
            self.perturbation = AugMix()

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        clean = model(x)
        view1 = model(self.perturbation(x, generator))
        view2 = model(self.perturbation(x, generator))
        task = self.task_loss(clean, y)
        js = js_divergence(clean, view1, view2)
        return {"loss": task + self.lam * js, "output": clean, "task_loss": task.detach(),
                "consistency_loss": js.detach()}

    def hyperparameters(self) -> dict:
        params = {"method": self.method, "lambda": self.lam, "sigma": getattr(self.perturbation, "sigma", None)}
        if isinstance(self.perturbation, AugMix):
            params.update(views="augmix", augmix_width=self.perturbation.width, augmix_depth=self.perturbation.depth,
                          augmix_severity=self.perturbation.severity, augmix_alpha=self.perturbation.alpha)
        else:
            params["views"] = "gaussian" if isinstance(self.perturbation, GaussianNoise) else \
                type(self.perturbation).__name__
        return params


class TradesObjective(Objective):
    """TRADES (Zhang et al., 2019): ``CE(f(x), y) + β·KL(p(x) ‖ p(x_adv))``.

    ``x_adv`` starts at ``x + 0.001·N(0, 1)`` and takes ``steps`` L∞ PGD steps
    of ``step_size`` that increase the KL to the (fixed) clean prediction,
    with the model in eval mode. Gradients of the outer loss reach both the
    clean and the adversarial branch, as in the reference code. ``attack``
    replaces the L∞ PGD (see :mod:`stabletrain.objectives.adversarial`).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = TradesObjective(steps=2)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> float(out["robust_loss"]) >= 0
        True
    """

    method = "trades"

    def __init__(self, task_loss: nn.Module | Callable | None = None, beta: float = 6.0, epsilon: float = 0.031,
                 steps: int = 10, step_size: float = 0.007, validate: bool = True,
                 attack: InnerAttack | None = None) -> None:
        super().__init__(task_loss, validate)
        self.attack = check_attack(attack) if attack is not None else LinfAttack()
        self.beta = check_nonnegative(beta, "trades beta")
        self.epsilon = check_nonnegative(epsilon, "adversarial epsilon")
        self.step_size = check_nonnegative(step_size, "adversarial step size")
        if int(steps) < 1:
            raise StableTrainError(f"adversarial steps must be >= 1, got {steps!r}")
        self.steps = int(steps)

    def adversarial(self, model: nn.Module, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from ..devices import eval_mode

        with torch.no_grad(), eval_mode(model):
            clean_logits = model(x)
        return self.attack(model, x, lambda logits: stability_kl(clean_logits, logits, reduction="sum"),
                           epsilon=self.epsilon, steps=self.steps, step_size=self.step_size, start="normal",
                           generator=generator)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        x_adv = self.adversarial(model, x, generator)
        clean = model(x)
        adversarial = model(x_adv)
        task = self.task_loss(clean, y)
        robust = stability_kl(clean, adversarial)
        return {"loss": task + self.beta * robust, "output": clean, "task_loss": task.detach(),
                "robust_loss": robust.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "beta": self.beta, "epsilon": self.epsilon, "steps": self.steps,
                "step_size": self.step_size}


class AdversarialObjective(Objective):
    """PGD adversarial training (Madry et al., 2018): the task loss on L∞ PGD examples.

    The examples come from ``attack`` (default :class:`~stabletrain.objectives.adversarial.LinfAttack`,
    L∞ PGD from a uniform random start in the ε-box); a task hands in its own
    (the jets task: the physical attack on particle clouds).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = AdversarialObjective(steps=2)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> out["output"].shape
        torch.Size([3, 2])
    """

    method = "adversarial"

    def __init__(self, task_loss: nn.Module | Callable | None = None, epsilon: float = 0.031, steps: int = 10,
                 step_size: float = 0.007, validate: bool = True, attack: InnerAttack | None = None) -> None:
        super().__init__(task_loss, validate)
        self.attack = check_attack(attack) if attack is not None else LinfAttack()
        self.epsilon = check_nonnegative(epsilon, "adversarial epsilon")
        self.step_size = check_nonnegative(step_size, "adversarial step size")
        if int(steps) < 1:
            raise StableTrainError(f"adversarial steps must be >= 1, got {steps!r}")
        self.steps = int(steps)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        x_adv = self.attack(model, x, lambda logits: F.cross_entropy(logits, y, reduction="sum"),
                            epsilon=self.epsilon, steps=self.steps, step_size=self.step_size, start="uniform",
                            generator=generator)
        output = model(x_adv)
        task = self.task_loss(output, y)
        return {"loss": task, "output": output, "task_loss": task.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "epsilon": self.epsilon, "steps": self.steps, "step_size": self.step_size}


class ConsistencyObjective(Objective):
    """Gaussian-noise training with consistency regularization (Jeong and Shin, NeurIPS 2020).

    The model sees ``m`` noisy copies ``x + N(0, sigma^2)`` of each input
    (``sigma`` in pixel units), **not** clipped to [0, 1]: the reference
    code (Jeong and Shin) and randomized smoothing's certification add
    unclipped noise, so training sees the noise it is certified under; the loss is the mean task loss over the copies plus
    :func:`consistency_regularizer` of their predictions. Made for
    randomized smoothing, where the base classifier must be accurate under
    noise.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = ConsistencyObjective(sigma=0.25)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> out["output"].shape
        torch.Size([3, 2])
    """

    method = "consistency"

    def __init__(self, task_loss: nn.Module | Callable | None = None, sigma: float = 0.25, copies: int = 2,
                 lam: float = 20.0, eta: float = 0.5, validate: bool = True,
                 perturbation: nn.Module | None = None) -> None:
        super().__init__(task_loss, validate)
        if int(copies) < 2:
            raise StableTrainError(f"consistency needs at least 2 noisy copies, got {copies!r}")
        self.copies = int(copies)
        self.lam = check_nonnegative(lam, "consistency lambda")
        self.eta = check_nonnegative(eta, "consistency eta")
        # unclipped, as in the reference code and in certification (stabletrain.smoothing): x + N(0, sigma^2)
        self.perturbation = perturbation if perturbation is not None else GaussianNoise(sigma, clamp=False)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        logits = [model(self.perturbation(x, generator)) for _ in range(self.copies)]
        task = sum(self.task_loss(z, y) for z in logits) / self.copies
        regularizer = consistency_regularizer(logits, self.lam, self.eta)
        return {"loss": task + regularizer, "output": logits[0], "task_loss": task.detach(),
                "consistency_loss": regularizer.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "sigma": getattr(self.perturbation, "sigma", None), "copies": self.copies,
                "lambda": self.lam, "eta": self.eta}


