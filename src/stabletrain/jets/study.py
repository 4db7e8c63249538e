"""Adversarial robustness of jet taggers, with physical constraints, and the sparse-versus-dense question.

Attacks on jet images must respect what a detector can produce: a cell's pT
is never negative, and an adversary with a limited energy budget can move
only so much pT in total. :func:`physical_pgd` is PGD under an L∞ ball
(ε per cell) intersected with the box ``[0, upper]`` and, optionally, an L1
budget on the total pT change per jet. :func:`sparse_energy_attack` changes
at most ``k`` cells, each by at most ``max_change``: the adversary injects
or removes energy in ``k`` cells.

:func:`attack_rows` measures, for each budget, the attack success rate (the
fraction of jets classified wrongly after the attack) and the ROC AUC of the
tagger on the attacked jets, where every jet is pushed towards the other
class.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> x = torch.rand(4, 1, 4, 4) * 0.01
    >>> adv = physical_pgd(model, x, torch.tensor([0, 1, 0, 1]), epsilon=0.002, budget=0.01, steps=5)
    >>> bool((adv >= 0).all()), bool(((adv - x).abs().flatten(1).sum(1) <= 0.01 + 1e-6).all())
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import StableTrainError, check_images
from ..devices import device_of as _device_of, eval_mode
from ..perturbations import rand_like
from .tagging import tagger_scores, tagging_metrics

__all__ = ["physical_fgsm", "attack_rows", "normalize_max", "physical_pgd", "sparse_energy_attack"]


def _check_budget(value: float | None, name: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise StableTrainError(f"{name} must be a finite number >= 0, got {value!r}")


def _to_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attacks run where the model is (a GPU model attacks on the GPU)."""
    device = _device_of(model)
    return x.detach().to(device), torch.as_tensor(y).to(device)


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _l1_shrink(delta: torch.Tensor, budget: float) -> torch.Tensor:
    """Scale each example's change down so that Σ|δ| <= budget (a feasible retraction onto the L1 ball)."""
    total = delta.abs().flatten(1).sum(1).clamp_min(1e-12)
    return delta * torch.clamp(budget / total, max=1.0).view(-1, *([1] * (delta.ndim - 1)))


def physical_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 10,
                 step_size: float | None = None, budget: float | None = None, upper: float = 1.0,
                 random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD with |δ| <= ``epsilon`` per cell, ``0 <= x + δ <= upper`` and Σ|δ| <= ``budget``.

    ``steps=1, step_size=epsilon`` is FGSM. Returns the adversarial batch.
    """
    check_images(x)
    _check_budget(epsilon, "epsilon")
    _check_budget(budget, "budget")
    if int(steps) < 1:
        raise StableTrainError(f"steps must be >= 1, got {steps}")
    if epsilon == 0 or budget == 0:
        return x.clone()
    x, y = _to_model(model, x, y)
    step = 2.5 * epsilon / steps if step_size is None else float(step_size)
    with eval_mode(model):
        delta = torch.zeros_like(x)
        if random_start:
            delta = (rand_like(x, generator) * 2 - 1) * epsilon
        for _ in range(int(steps)):
            delta = delta + step * _grad(model, x + delta, y).sign()
            delta = delta.clamp(-epsilon, epsilon)
            delta = (x + delta).clamp(0.0, upper) - x
            if budget is not None:
                delta = _l1_shrink(delta, budget)
            delta = delta.detach()
    return (x + delta).detach()


def physical_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *,
                  budget: float | None = None, upper: float = 1.0) -> torch.Tensor:
    """FGSM under the same constraints: one signed-gradient step of ``epsilon`` per cell, then the box and budget.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> adv = physical_fgsm(model, x, torch.tensor([0, 1]), epsilon=0.01)
        >>> bool((adv >= 0).all()) and float((adv - x).abs().max()) <= 0.01
        True
    """
    return physical_pgd(model, x, y, epsilon, steps=1, step_size=epsilon, budget=budget, upper=upper)


def sparse_energy_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, *, max_change: float,
                         steps: int = 20, upper: float = 1.0) -> torch.Tensor:
    """Change at most ``k`` cells per image, each by at most ``max_change``, keeping ``0 <= x' <= upper``.

    Each step follows the input gradient, clips to the per-cell and box
    limits, and keeps the ``k`` cells with the largest change.
    """
    check_images(x)
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise StableTrainError(f"k must be an integer number of cells >= 0, got {k!r}")
    _check_budget(max_change, "max_change")
    if k == 0 or max_change == 0:
        return x.clone()
    x, y = _to_model(model, x, y)
    flat = x[0, 0].numel()
    with eval_mode(model):
        delta = torch.zeros_like(x)
        for _ in range(int(steps)):
            grad = _grad(model, x + delta, y)
            scale = grad.flatten(1).abs().amax(1).view(-1, 1, 1, 1).clamp_min(1e-20)
            delta = (delta + 0.5 * max_change * grad / scale).clamp(-max_change, max_change)
            delta = (x + delta).clamp(0.0, upper) - x
            magnitude = delta.abs().sum(1).flatten(1)
            keep = magnitude.topk(min(int(k), flat), dim=1).indices
            mask = torch.zeros_like(magnitude).scatter_(1, keep, 1.0).view(x.shape[0], 1, *x.shape[2:])
            delta = (delta * mask).detach()
    return (x + delta).detach()


def normalize_max(x: torch.Tensor) -> torch.Tensor:
    """Scale each image so its brightest cell is 1: one budget scale for dense and sparse images alike."""
    peak = x.flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    return x / peak


def attack_rows(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *, epsilons: Sequence[float] = (),
                ks: Sequence[int] = (), max_change: float | None = None, budget: float | None = None,
                steps: int = 10, upper: float = 1.0, unit: float = 1.0, progress: bool = True,
                pgd_label: str = "pgd", fgsm_epsilons: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Success rate and AUC of each model under PGD at each ε and the sparse attack at each k.

    A jet counts as broken at a strength if the model had it wrong on the
    clean image, or the attack fooled it at that strength or at any smaller
    strength of the same attack: so the error under attack is never below the
    clean error, and it never falls as the strength grows. ``success_rate``
    is the fraction of broken jets; ``flipped_correct`` the fraction of the
    jets the model had right that the attack broke (so models of different
    clean accuracy compare fairly). AUC and rejection are those of the
    scores on the attacked images at that strength, with the intervals and
    counts of :func:`stabletrain.jets.tagging.tagging_metrics` (``auc_low``,
    ``auc_high``, ``rejection_50_low``, ``passed_50``, …, ``signal`` and
    ``background``: the jets each number rests on).

    ``unit`` converts budgets for reporting (1000 reports TeV images in GeV);
    ``pgd_label`` names the PGD rows (e.g. to tell budgets apart).
    """
    from ..progress import progress_bar

    labels = y.numpy()
    jobs = [("pgd", e) for e in sorted(epsilons)] + [("fgsm", e) for e in sorted(fgsm_epsilons)] + \
        [("sparse", k) for k in sorted(ks)]
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        clean_scores = tagger_scores(model, x)
        clean = tagging_metrics(clean_scores, labels)
        right_before = (clean_scores >= 0.5).astype(int) == labels
        broken = {attack: ~right_before for attack in ("pgd", "fgsm", "sparse")}
        for attack, strength in progress_bar(jobs, desc=f"attacks on {name}", enabled=progress):
            if attack == "pgd":
                adv = physical_pgd(model, x, y, float(strength), steps=steps, budget=budget, upper=upper)
            elif attack == "fgsm":
                adv = physical_fgsm(model, x, y, float(strength), budget=budget, upper=upper)
            else:
                cap = upper if max_change is None else max_change
                adv = sparse_energy_attack(model, x, y, int(strength), max_change=cap, steps=steps, upper=upper)
            scores = tagger_scores(model, adv.cpu())
            metrics = tagging_metrics(scores, labels)
            broken[attack] = broken[attack] | ((scores >= 0.5).astype(int) != labels)
            rows.append({"model": name, "attack": pgd_label if attack == "pgd" else attack,
                         "strength": float(strength) * (unit if attack != "sparse" else 1.0),
                         "success_rate": float(broken[attack].mean()),
                         "flipped_correct": float(broken[attack][right_before].mean()) if right_before.any()
                         else 0.0,
                         **metrics, "clean_auc": clean["auc"], "clean_auc_low": clean["auc_low"],
                         "clean_auc_high": clean["auc_high"],
                         "clean_error": float(((clean_scores >= 0.5).astype(int) != labels).mean()),
                         "changed_cells": float(((adv.cpu() - x).abs() > 0).flatten(1).sum(1).float().mean())})
    return rows
