"""FGSM, PGD under an L∞ or L2 ball (Madry et al.), and the label-free inner maximization of adversarial training."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG
from ._common import (AttackResult, _input_gradient, _l2_norm, _logits, _prepare, _project, _random_start, _record,
                      _succeeded)

__all__ = ["fgsm", "pgd", "maximize_loss"]


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *,
         target: torch.Tensor | None = None) -> AttackResult:
    """Fast gradient sign method: ``clip(x + ε·sign(∇ₓ L), 0, 1)`` (targeted: ``x − ε·sign(∇ₓ L(target))``).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = fgsm(model, torch.full((1, 1, 2, 2), 0.5), torch.tensor([0]), epsilon=0.1)
        >>> bool(torch.allclose((out.adversarial - 0.5).abs(), torch.tensor(0.1)))
        True
    """
    x, y, target, epsilon = _prepare(model, x, y, epsilon, target)
    with eval_mode(model):
        grad, clean_logits = _input_gradient(model, x, y, target, None)
        adversarial = (x + epsilon * grad.sign()).clamp(0.0, 1.0).detach()
        with torch.no_grad():
            predictions = _logits(model, adversarial).argmax(1)
    # the gradient's forward pass scored the clean input: where it already fools the model and the step does not,
    # the clean image is the adversarial
    clean_predictions = clean_logits.argmax(1)
    clean_fooled = _succeeded(clean_predictions, y, target) & ~_succeeded(predictions, y, target)
    adversarial[clean_fooled] = x[clean_fooled]
    predictions = torch.where(clean_fooled, clean_predictions, predictions)
    return AttackResult(adversarial, _succeeded(predictions, y, target), predictions, epsilon)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        target: torch.Tensor | None = None, generator: torch.Generator | ExampleRNG | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None) -> AttackResult:
    """Projected gradient descent (Madry et al.) under an L∞ or L2 ball, with restarts.

    Each step moves by ``step_size`` along the gradient's sign (L∞) or its
    normalized direction (L2), then projects onto the ε-ball around ``x`` and
    the [0, 1] box. An example counts as fooled if any iterate of any restart
    fooled the model; that iterate is returned. The others return the last
    iterate of the restart with the highest loss. The clean input is scored
    first (one forward pass without gradient), so an example the model gets
    wrong without attack is fooled, at the clean image, even with a random
    start.

    Args:
        epsilon: radius of the ball in [0, 1] pixel units (L∞) or in the L2
            norm of the whole image.
        norm: ``'linf'`` or ``'l2'``.
        steps: gradient steps per restart.
        step_size: defaults to ``2.5 * epsilon / steps`` (Madry et al.).
        random_start: start each restart at a uniform point of the ball.
        restarts: independent restarts; later ones only matter for examples
            not yet fooled.
        target: class indices for a targeted attack (minimize their loss).
        generator: randomness of the starts: a :class:`torch.Generator`, or an
            :class:`~stabletrain.seeding.ExampleRNG` with one stream per
            example (the result of an example is then independent of its batch).
        loss_fn: ``(logits, y, target) -> scalar`` to ascend instead of the
            summed cross-entropy (TRADES uses a KL here).
    """
    if norm not in ("linf", "l2"):
        raise StableTrainError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if int(steps) < 1 or int(restarts) < 1:
        raise StableTrainError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    x, y, target, epsilon = _prepare(model, x, y, epsilon, target)
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not 0.0 <= float(step_size) < math.inf:
        raise StableTrainError(f"step size must be a finite number >= 0, got {step_size!r}")
    with eval_mode(model):
        best = x.clone()
        # Score the clean input: with a random start no iterate is the clean image, and an example the model gets
        # wrong there must count as fooled (robust accuracy can never exceed clean accuracy).
        with torch.no_grad():
            predictions = _logits(model, x).argmax(1)
        success = _succeeded(predictions, y, target)
        if epsilon == 0.0:
            return AttackResult(best, success, predictions, epsilon)
        best_loss = torch.full((len(x),), -math.inf, device=x.device)
        for _ in range(int(restarts)):
            if bool(success.all()):
                break
            delta = _project(_random_start(x, epsilon, norm, generator), x, epsilon, norm) if random_start \
                else torch.zeros_like(x)
            for _ in range(int(steps)):
                # The forward pass of the gradient also scores the current iterate: no extra pass per step.
                grad, logits = _input_gradient(model, x + delta, y, target, loss_fn)
                _record(x + delta, logits, y, target, best, predictions, success)
                if norm == "linf":
                    delta = delta + step_size * grad.sign()
                else:
                    delta = delta + step_size * grad / (_l2_norm(grad) + 1e-12)
                delta = _project(delta, x, epsilon, norm).detach()
            with torch.no_grad():
                logits = _logits(model, x + delta)
                _record(x + delta, logits, y, target, best, predictions, success)
                per_example = F.cross_entropy(logits, y if target is None else target, reduction="none")
                per_example = per_example if target is None else -per_example
                better = ~success & (per_example > best_loss)
                best[better] = (x + delta)[better]
                predictions[better] = logits.argmax(1)[better]
                best_loss = torch.where(better, per_example, best_loss)
    return AttackResult(best.detach(), success, predictions, epsilon)


def maximize_loss(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                  epsilon: float, steps: int, step_size: float, start: torch.Tensor | None = None) -> torch.Tensor:
    """The last iterate of L∞ PGD that ascends ``loss_fn(logits)``: the inner step of adversarial training.

    Unlike :func:`pgd`, it returns the final iterate (not the first that
    fools the model) and needs no labels, which is what TRADES and Madry
    training use. The model runs in eval mode and its mode is restored; the
    result is detached.

    Args:
        loss_fn: maps the logits of the current iterate to a scalar to ascend.
        start: the first iterate (default ``x``); it is projected into the ball.
    """
    x = x.detach()
    current = x.clone() if start is None else (x + (start.detach() - x).clamp(-epsilon, epsilon)).clamp(0.0, 1.0)
    with eval_mode(model):
        for _ in range(int(steps)):
            current.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(_logits(model, current)), current)
            current = current.detach() + step_size * grad.sign()
            current = (x + (current - x).clamp(-epsilon, epsilon)).clamp(0.0, 1.0)
    return current.detach()
