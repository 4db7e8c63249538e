"""Auto-PGD (Croce and Hein, ICML 2020): APGD-CE, APGD-DLR and the targeted APGD-DLR of AutoAttack.

APGD is PGD without a step size to tune. Following Algorithm 1 of the
paper and the reference code (fra31/auto-attack, ``autopgd_base.py``):

* the start is a random point of the ball (L∞: ``x + ε·t / max|t|`` with
  ``t`` uniform in [−1, 1]; L2: a random direction at radius ε), clipped to
  [0, 1];
* each step is a projected gradient step of size ``η`` (sign of the
  gradient for L∞, the normalized gradient for L2) followed by momentum:
  ``x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α·(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)·(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))`` with
  ``α = 0.75`` (1 on the first step); ``η`` starts at ``2ε``;
* at the checkpoints ``w_j = ⌈p_j·N⌉``, ``p₀ = 0, p₁ = 0.22,
  p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` (see
  :func:`apgd_checkpoints`), an example's step size is halved when

  1. the loss rose in at most ``ρ·(w_j − w_{j−1})`` of the steps since
     the last checkpoint (``ρ = 0.75``; the reference code's ``≤``, where the
     paper writes ``<``), or
  2. its step size was not halved at the last checkpoint and its best loss
     has not improved since;

  and an example whose step size is halved restarts from its best point
  (the iterate of highest loss so far, with that point's gradient).

One detail follows the reference code rather than the paper's formula: in
the first window, the first step's loss is compared with 0 (an unfilled slot
of the reference code's loss buffer), not with the loss at the start
``x⁽⁰⁾``. For the cross-entropy that counts as a rise, for a negative DLR
loss it does not; AutoAttack's published numbers come from that code, so
this one keeps it.

Losses: cross-entropy (``'ce'``), the difference of logits ratio
(``'dlr'``, :func:`dlr_loss`) and its targeted form
(:func:`dlr_loss_targeted`, used by :func:`apgd_targeted` against each of the
top ``target_classes`` other classes of the clean prediction, as AutoAttack's
APGD-T does). An example counts as fooled when any iterate is misclassified
(targeted runs too: AutoAttack's APGD-T stops at any wrong class).

Every random start comes from the example's own stream (see
:class:`~stabletrain.attacks._common._Streams`), so an example's result does
not depend on its batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG
from ._common import (AttackResult, Bound, _Streams, _check_count, _check_norm, _clip, _is_zero, _l2_norm, _limits,
                      _logits, _prepare, _project, _take)

__all__ = ["apgd", "apgd_targeted", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted", "APGD_LOSSES"]

APGD_LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The difference of logits ratio, per example: ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``.

    ``π`` orders the logits from the largest; the loss is invariant to
    shifting and scaling the logits. It needs at least 3 classes.

    Example:
        >>> z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
        >>> round(float(dlr_loss(z, torch.tensor([0]))), 4)  # −(3 − 1) / (3 − 0)
        -0.6667
    """
    if logits.shape[1] < 3:
        raise StableTrainError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    ordered, index = logits.sort(dim=1)
    rows = torch.arange(len(y), device=logits.device)
    top_is_true = (index[:, -1] == y).to(logits.dtype)
    best_other = ordered[:, -2] * top_is_true + ordered[:, -1] * (1.0 - top_is_true)
    return -(logits[rows, y] - best_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The targeted DLR loss, per example: ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)``. Needs 4 classes.

    Example:
        >>> z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
        >>> round(float(dlr_loss_targeted(z, torch.tensor([0]), torch.tensor([2]))), 4)  # −(3 − 0) / (3 + 0.5)
        -0.8571
    """
    if logits.shape[1] < 4:
        raise StableTrainError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    ordered = logits.sort(dim=1).values
    rows = torch.arange(len(y), device=logits.device)
    return -(logits[rows, y] - logits[rows, target]) / (
        ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD checks its step sizes: ``⌈p_j·steps⌉`` for the paper's ``p_j``.

    As in the reference code: the first window is ``max(⌊0.22·N⌋, 1)``
    steps and each next one ``max(⌊0.03·N⌋, 1)`` shorter, never shorter than
    ``max(⌊0.06·N⌋, 1)``.

    Example:
        >>> apgd_checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = _check_count(steps, "steps")
    first, shortest, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, at, window = [], 0, first
    while at + window <= steps:
        at += window
        out.append(at)
        window = max(window - shrink, shortest)
    return out


def _ball(candidate: torch.Tensor, x: torch.Tensor, epsilon: Bound, norm: str, low: Bound, high: Bound
          ) -> torch.Tensor:
    """``candidate`` projected onto the ε-ball around ``x`` and the box ``[low, high]`` (default [0, 1])."""
    return x + _project(candidate - x, x, epsilon, norm, low, high)


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: Bound, norm: str, steps: int, rho: float,
         loss_fn: Callable[[torch.Tensor], torch.Tensor], streams: _Streams, rows: torch.Tensor,
         trace: bool, low: Bound = 0.0, high: Bound = 1.0
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict | None]:
    """One APGD run on the examples ``rows`` (``x``, ``y`` are theirs): ``(fooled, adversarial, predictions,
    trace)``; the adversarial is the first misclassified iterate, else the iterate of highest loss."""
    shape = tuple(x.shape[1:])
    if norm == "linf":
        t = 2 * streams.rand(rows, shape, x.dtype) - 1
        start = x + epsilon * t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *[1] * len(shape))
    else:
        t = streams.randn(rows, shape, x.dtype)
        start = x + epsilon * t / (_l2_norm(t) + 1e-12)
    current = _clip(start, low, high)

    def gradient(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        point = point.detach().requires_grad_(True)
        logits = _logits(model, point)
        losses = loss_fn(logits)
        (grad,) = torch.autograd.grad(losses.sum(), point)
        return grad.detach(), logits.detach(), losses.detach()

    grad, logits, loss = gradient(current)
    predictions = logits.argmax(1)
    fooled = predictions != y
    adversarial = torch.where(fooled.view(-1, *[1] * len(shape)), current, x)
    best, best_loss, best_grad = current.clone(), loss.clone(), grad.clone()
    if isinstance(epsilon, torch.Tensor):  # per-coordinate radii: each coordinate's step is 2 of its radius
        eta = 2.0 * epsilon
    else:
        eta = torch.full((len(x),) + (1,) * len(shape), 2.0 * epsilon, device=x.device, dtype=x.dtype)
    previous = current.clone()
    checkpoints = set(apgd_checkpoints(steps))
    last_check, best_at_last_check = 0, best_loss.clone()
    halved_last = torch.ones(len(x), dtype=torch.bool, device=x.device)  # condition 2 does not apply at w₁
    losses, step_sizes = [loss], []
    for i in range(steps):
        with torch.no_grad():
            momentum = current - previous
            previous = current
            alpha = 0.75 if i > 0 else 1.0
            if norm == "linf":
                step = eta * grad.sign()
            else:
                step = eta * grad / (_l2_norm(grad) + 1e-12)
            z = _ball(current + step, x, epsilon, norm, low, high)
            current = _ball(current + alpha * (z - current) + (1 - alpha) * momentum, x, epsilon, norm, low, high)
        step_sizes.append(eta.flatten(1).amax(1).clone())
        grad, logits, loss = gradient(current)
        with torch.no_grad():
            predicted = logits.argmax(1)
            newly = (predicted != y) & ~fooled
            adversarial[newly] = current[newly]
            predictions[newly] = predicted[newly]
            fooled |= newly
            improved = loss > best_loss
            best[improved], best_grad[improved], best_loss[improved] = current[improved], grad[improved], loss[improved]
            losses.append(loss)
            if i + 1 in checkpoints:
                window = i + 1 - last_check
                recent = torch.stack(losses[last_check:i + 2])  # f(x^(w_{j-1})) … f(x^(w_j))
                if last_check == 0:  # the reference code's first window compares its first step with 0
                    recent = torch.cat([torch.zeros_like(recent[:1]), recent[1:]])
                rises = (recent[1:] > recent[:-1]).sum(dim=0)
                halve = (rises <= rho * window) | (~halved_last & (best_at_last_check >= best_loss))
                halved_last, best_at_last_check, last_check = halve, best_loss.clone(), i + 1
                if bool(halve.any()):
                    eta[halve] /= 2.0
                    current = current.clone()
                    current[halve], grad[halve] = best[halve], best_grad[halve]
    adversarial[~fooled] = best[~fooled]
    recorded = {"losses": torch.stack(losses), "step_sizes": torch.stack(step_sizes), "rows": rows} if trace else None
    return fooled, adversarial, predictions, recorded


def _driver(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor, *, norm: str,
            steps: int, restarts: int, rho: float, generator: torch.Generator | ExampleRNG | None, losses: list,
            min_classes: int, what: str, trace: bool = False,
            limits: tuple[float | torch.Tensor, float | torch.Tensor] | None = None) -> AttackResult:
    """Score the clean input, then run each ``(loss_fn(logits, rows), …)`` of ``losses`` ``restarts`` times, each
    run on the examples not fooled yet."""
    _check_norm(norm)
    steps, restarts = _check_count(steps, "steps"), _check_count(restarts, "restarts")
    if not (isinstance(rho, (int, float)) and 0 < rho <= 1):
        raise StableTrainError(f"rho must be in (0, 1], got {rho!r}")
    x, y, _, epsilon = _prepare(model, x, y, epsilon, None, per_coordinate=True)
    if isinstance(epsilon, torch.Tensor) and norm != "linf":
        raise StableTrainError("per-coordinate radii (a tensor epsilon) need norm='linf'")
    low, high = _limits(x, limits)
    with eval_mode(model):
        with torch.no_grad():
            clean = _logits(model, x)
        if clean.shape[1] < min_classes:
            raise StableTrainError(f"{what} needs at least {min_classes} classes, the model has {clean.shape[1]}; "
                                   f"use apgd-ce or square")
        predictions = clean.argmax(1)
        success = predictions != y
        adversarial = x.clone()
        recorded = None
        if _is_zero(epsilon):
            return AttackResult(adversarial, success, predictions, epsilon)
        streams = _Streams(generator, len(x), x.device)
        for make_loss in losses(clean, y):
            for _ in range(restarts):
                rows = (~success).nonzero().flatten()
                if len(rows) == 0:
                    break
                fooled, adv, pred, run_trace = _run(model, x[rows], y[rows], _take(epsilon, rows), norm, steps, rho,
                                                    make_loss(rows), streams, rows, trace and recorded is None,
                                                    _take(low, rows), _take(high, rows))
                recorded = recorded if recorded is not None else run_trace
                adversarial[rows] = adv
                hit = rows[fooled]
                predictions[hit] = pred[fooled]
                success[hit] = True
    return AttackResult(adversarial.detach(), success, predictions, epsilon, trace=recorded)


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor, *, loss: str = "ce",
         norm: str = "linf", steps: int = 100, restarts: int = 1, rho: float = 0.75,
         generator: torch.Generator | ExampleRNG | None = None, trace: bool = False,
         limits: tuple[float | torch.Tensor, float | torch.Tensor] | None = None) -> AttackResult:
    """Untargeted APGD with the cross-entropy (``loss='ce'``, APGD-CE) or the DLR loss (``'dlr'``, APGD-DLR).

    Args:
        epsilon: radius of the L∞ ball in [0, 1] pixel units, or of the L2 ball; for L∞ also a tensor of
            per-coordinate radii broadcastable to ``x`` (a box around each input; every step is twice its
            coordinate's radius at first, halved as the schedule halves it).
        steps: iterations per restart (AutoAttack's standard version: 100).
        restarts: runs from fresh random starts, each on the examples not fooled yet.
        rho: the share of rising steps below which the step size is halved.
        generator: the random starts (an :class:`~stabletrain.seeding.ExampleRNG` makes each example's
            result independent of its batch).
        trace: record the first run's per-iteration losses and step sizes in ``result.trace``
            (``losses``: (steps + 1) × examples, ``step_sizes``: steps × examples, ``rows``: the examples run;
            with per-coordinate radii the step size of an example's largest coordinate).
        limits: the box every input stays in, ``(low, high)`` numbers or tensors broadcastable to ``x``
            (default ``(0, 1)``); ``x`` must lie inside it.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(4, 1, 4, 4)
        >>> out = apgd(model, x, torch.tensor([0, 1, 2, 0]), 0.1, steps=5)
        >>> bool((out.adversarial - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    if loss not in APGD_LOSSES:
        raise StableTrainError(f"unknown APGD loss {loss!r}; known: {', '.join(APGD_LOSSES)}")

    def losses(clean: torch.Tensor, labels: torch.Tensor) -> list:
        if loss == "ce":
            return [lambda rows: (lambda logits: F.cross_entropy(logits, labels[rows], reduction="none"))]
        return [lambda rows: (lambda logits: dlr_loss(logits, labels[rows]))]

    return _driver(model, x, y, epsilon, norm=norm, steps=steps, restarts=restarts, rho=rho, generator=generator,
                   losses=losses, min_classes=3 if loss == "dlr" else 2, what=f"apgd-{loss}", trace=trace,
                   limits=limits)


def apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor, *,
                  norm: str = "linf", steps: int = 100, target_classes: int = 9, restarts: int = 1,
                  rho: float = 0.75, generator: torch.Generator | ExampleRNG | None = None,
                  limits: tuple[float | torch.Tensor, float | torch.Tensor] | None = None) -> AttackResult:
    """APGD-T: targeted APGD-DLR against each of the ``target_classes`` most likely other classes, in turn.

    The targets of an example are the classes ranked 2nd, 3rd, … by its
    clean logits (at most ``classes − 1`` of them); each target's runs
    attack only the examples no earlier run fooled. Success is any
    misclassification, as in AutoAttack. ``epsilon`` and ``limits`` are
    those of :func:`apgd`.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
        >>> out = apgd_targeted(model, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), 0.1, steps=4,
        ...                     target_classes=2)
        >>> out.success.shape
        torch.Size([3])
    """
    target_classes = _check_count(target_classes, "target_classes")

    def losses(clean: torch.Tensor, labels: torch.Tensor) -> list:
        order = clean.argsort(dim=1, descending=True)
        count = min(target_classes, clean.shape[1] - 1)

        def for_rank(rank: int) -> Callable:
            return lambda rows: (lambda logits: dlr_loss_targeted(logits, labels[rows], order[rows, rank]))
        return [for_rank(rank) for rank in range(1, count + 1)]

    return _driver(model, x, y, epsilon, norm=norm, steps=steps, restarts=restarts, rho=rho, generator=generator,
                   losses=losses, min_classes=4, what="apgd-t", limits=limits)
