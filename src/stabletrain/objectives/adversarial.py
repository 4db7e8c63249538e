"""The inner attack of adversarial training, and FGSM adversarial training (``fgsm-adversarial``).

The adversarial objectives (``adversarial``, ``trades``, ``fgsm-adversarial``)
find their training examples with an *inner attack*: a callable

.. code-block:: python

    attack(model, x, loss_fn, *, epsilon, steps, step_size, start, generator) -> x_adv

that ascends ``loss_fn(logits)`` (a scalar, summed over the batch) from
``x`` and returns a detached batch of the same shape. ``epsilon``,
``steps`` and ``step_size`` are the method's ``adv_epsilon``,
``adv_steps`` and ``adv_step_size``; ``start`` is the method's random
start: ``'uniform'`` (Madry et al.: uniform in the ε-ball), ``'normal'``
(TRADES: ``x + 0.001·N(0, 1)``) or ``'none'`` (FGSM: from ``x`` itself).
The default, :class:`LinfAttack`, is L∞ PGD in the input's own units,
clipped into [0, 1]. A task whose inputs are not images in that sense hands
in its own (:meth:`stabletrain.tasks.Task.attack`): the jets task gives
particle-cloud taggers the physically constrained cloud attack of
:mod:`stabletrain.jets.cloud_attacks`, so that ε is a relative pT change
per particle rather than a box on the encoding.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x, y = torch.full((3, 1, 2, 2), 0.5), torch.tensor([0, 1, 1])
    >>> loss = lambda logits: nn.functional.cross_entropy(logits, y, reduction="sum")
    >>> x_adv = LinfAttack()(model, x, loss, epsilon=0.1, steps=1, step_size=0.1, start="none")
    >>> bool(torch.allclose((x_adv - x).abs(), torch.tensor(0.1)))   # one FGSM step
    True
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from ..checks import StableTrainError, check_nonnegative
from ..perturbations import rand_like, randn_like
from .base import Objective, check_two_copy_options, two_copy_forward

__all__ = ["ATTACK_STARTS", "InnerAttack", "LinfAttack", "FGSMAdversarialObjective", "check_attack"]

#: The random starts an inner attack takes.
ATTACK_STARTS = ("uniform", "normal", "none")


class InnerAttack(Protocol):
    """What the adversarial objectives call to find their training examples (see the module docstring)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                 epsilon: float, steps: int, step_size: float, start: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        ...


def check_attack(attack: object) -> InnerAttack:
    """``attack`` if it is callable (an inner attack), else one clear error."""
    if not callable(attack):
        raise StableTrainError(f"an inner attack must be callable as attack(model, x, loss_fn, epsilon=..., "
                               f"steps=..., step_size=..., start=..., generator=...), got {type(attack).__name__}")
    return attack  # type: ignore[return-value]


class LinfAttack:
    """L∞ PGD in [0, 1] input units: the default inner attack of the adversarial objectives.

    ``start='uniform'`` begins at ``x + U(−ε, ε)``, ``'normal'`` at
    ``x + 0.001·N(0, 1)`` (both drawn from ``generator`` with
    :func:`~stabletrain.perturbations.rand_like` / ``randn_like``, so
    data-parallel shards draw the noise of the whole batch), ``'none'`` at
    ``x``. Each step adds ``step_size·sign(∇)`` and projects onto the ε-box
    around ``x`` and [0, 1] (:func:`stabletrain.attacks.maximize_loss`);
    ``steps=1, step_size=ε, start='none'`` is FGSM.
    """

    def __call__(self, model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                 epsilon: float, steps: int, step_size: float, start: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        from ..attacks import maximize_loss

        if start == "uniform":
            first: torch.Tensor | None = x + (rand_like(x, generator) * 2 - 1) * epsilon
        elif start == "normal":
            first = x + 0.001 * randn_like(x, generator)
        elif start == "none":
            first = None
        else:
            raise StableTrainError(f"start must be one of {', '.join(ATTACK_STARTS)}, got {start!r}")
        return maximize_loss(model, x, loss_fn, epsilon=epsilon, steps=steps, step_size=step_size, start=first)

    def __repr__(self) -> str:
        return "LinfAttack()"


class FGSMAdversarialObjective(Objective):
    """FGSM adversarial training: ``(1 − w)·CE(f(x), y) + w·CE(f(x_fgsm), y)``.

    The training method of Stein et al. 2022 ("Improving robustness of jet
    tagging algorithms with adversarial training", arXiv:2203.13890) for
    jet taggers, after Goodfellow et al. 2015: every batch is attacked once
    with FGSM, ``x_fgsm = x + ε·sign(∇ₓ CE)`` (no random start), and the
    model trains on the clean and the attacked copies together. ``w`` =
    ``adv_weight`` (default 0.5: clean and adversarial examples count
    equally, Goodfellow et al.'s α = 0.5); ``adv_weight=1`` trains on the
    attacked copies only.

    Why a method of its own rather than ``adversarial`` with
    ``adv_steps=1``: ``adversarial`` (Madry et al.) trains on the attacked
    copies only, from a uniform random start, with a step of
    ``adv_step_size`` inside the ε-ball, so with one step it is neither
    FGSM (no random start, step ε) nor mixed with clean examples. This
    class shares its inner attack with ``adversarial`` and ``trades`` (the
    task's, see :mod:`stabletrain.objectives.adversarial`): on images an L∞
    FGSM in [0, 1] units, on particle clouds the physical cloud FGSM
    (relative pT change ε per particle), so the three methods are compared
    under the same threat model. The attack runs with the model in eval
    mode (batch-norm statistics fixed, dropout off); the two copies then
    go through the model as ``batching`` says (default ``'concat'``, one
    pass, batch-norm statistics over both copies, as for the data set
    enlarged with its adversarial copies; see
    :func:`~stabletrain.objectives.base.resolve_batching`).

    FGSM training without a random start can overfit to its own attack
    (Wong et al. 2020, "catastrophic overfitting"): evaluate such models
    with PGD as well as with FGSM.

    Args:
        task_loss: the task loss (default cross-entropy).
        epsilon: the FGSM step (the inner attack's ε).
        adv_weight: weight ``w`` in [0, 1] of the adversarial copy.
        attack: the inner attack (default :class:`LinfAttack`).
        batching, bn_stats: how the two copies go through the model.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = FGSMAdversarialObjective(epsilon=0.1)(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> sorted(out)
        ['adversarial_loss', 'clean_loss', 'loss', 'output', 'task_loss']
    """

    method = "fgsm-adversarial"

    def __init__(self, task_loss: nn.Module | Callable | None = None, epsilon: float = 0.031,
                 adv_weight: float = 0.5, attack: InnerAttack | None = None, batching: str = "concat",
                 bn_stats: str = "both", validate: bool = True) -> None:
        super().__init__(task_loss, validate)
        self.epsilon = check_nonnegative(epsilon, "adversarial epsilon")
        weight = check_nonnegative(adv_weight, "adv_weight")
        if weight > 1.0:
            raise StableTrainError(f"adv_weight must be in [0, 1], got {adv_weight!r}")
        self.adv_weight = weight
        check_two_copy_options(0.0, batching, bn_stats)
        self.batching, self.bn_stats = batching, bn_stats
        self.attack = check_attack(attack) if attack is not None else LinfAttack()

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """The FGSM copy of ``x`` (one step of ε on the summed cross-entropy, from ``x``)."""
        return self.attack(model, x, lambda logits: nn.functional.cross_entropy(logits, y, reduction="sum"),
                           epsilon=self.epsilon, steps=1, step_size=self.epsilon, start="none", generator=generator)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(x)
        x_adv = self.adversarial(model, x, y, generator)
        clean_out, adv_out = two_copy_forward(model, x, x_adv, self.batching, self.bn_stats)
        clean_loss, adv_loss = self.task_loss(clean_out, y), self.task_loss(adv_out, y)
        loss = (1.0 - self.adv_weight) * clean_loss + self.adv_weight * adv_loss
        return {"loss": loss, "output": clean_out, "task_loss": loss.detach(), "clean_loss": clean_loss.detach(),
                "adversarial_loss": adv_loss.detach()}

    def hyperparameters(self) -> dict:
        return {"method": self.method, "epsilon": self.epsilon, "adv_weight": self.adv_weight,
                "batching": self.batching, "bn_stats": self.bn_stats, "attack": type(self.attack).__name__}
