"""A sparse attack that changes at most k pixels per image (PGD₀, Croce and Hein 2019)."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG, draw
from ._common import AttackResult, _input_gradient, _logits, _prepare, _record, _succeeded

__all__ = ["sparse_l0"]


def _pixel_topk_mask(delta: torch.Tensor, k: int) -> torch.Tensor:
    """A B×1×H×W mask of the k pixels (spatial positions) with the largest perturbation."""
    magnitude = delta.abs().sum(dim=1).flatten(1)
    k = min(k, magnitude.shape[1])
    index = magnitude.topk(k, dim=1).indices
    mask = torch.zeros_like(magnitude).scatter_(1, index, 1.0)
    return mask.view(delta.shape[0], 1, *delta.shape[2:])


def sparse_l0(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, *, steps: int = 20,
              step_size: float = 0.5, restarts: int = 1, target: torch.Tensor | None = None,
              generator: torch.Generator | ExampleRNG | None = None) -> AttackResult:
    """A sparse attack that changes at most ``k`` pixels per image (PGD₀, Croce and Hein 2019).

    A pixel is a spatial position; all its channels may change, to any value
    in [0, 1]. Each step follows the input gradient (scaled so its largest
    entry moves ``step_size``), clips to the box and keeps only the ``k``
    pixels with the largest change. Random starts perturb ``k`` random pixels.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(3, 1, 4, 4)
        >>> out = sparse_l0(model, x, torch.tensor([0, 1, 0]), k=2, steps=3)
        >>> int(((out.adversarial - x).abs() > 0).flatten(1).sum(1).max()) <= 2
        True
    """
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise StableTrainError(f"k must be an integer number of pixels >= 0, got {k!r}")
    k = int(k)
    if int(steps) < 1 or int(restarts) < 1:
        raise StableTrainError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    x, y, target, _ = _prepare(model, x, y, float(k), target, name="k")
    with eval_mode(model):
        with torch.no_grad():
            predictions = _logits(model, x).argmax(1)
        best = x.clone()
        success = _succeeded(predictions, y, target)
        if k == 0:
            return AttackResult(best, success, predictions, 0.0)
        for _ in range(int(restarts)):
            if bool(success.all()):
                break
            noise = draw(torch.rand, x.shape, generator, x.device, x.dtype)
            delta = noise - x
            chosen = draw(torch.rand, delta[:, :1].shape, generator, x.device)
            delta = delta * _pixel_topk_mask(chosen, k)
            for _ in range(int(steps)):
                grad, logits = _input_gradient(model, x + delta, y, target, None)
                _record(x + delta, logits, y, target, best, predictions, success)
                scale = grad.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1) + 1e-12
                delta = ((x + delta + step_size * grad / scale).clamp(0.0, 1.0) - x).detach()
                delta = delta * _pixel_topk_mask(delta, k)
            with torch.no_grad():
                _record(x + delta, _logits(model, x + delta), y, target, best, predictions, success)
    return AttackResult(best.detach(), success, predictions, float(k))
