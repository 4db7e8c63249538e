"""The Square attack (Andriushchenko, Croce, Flammarion, Hein; ECCV 2020), L∞: random search, no gradients.

As in the paper's Algorithm 1 and AutoAttack's ``square.py``:

* the start puts every column of each channel at ``x ± ε`` (vertical
  stripes of random sign), clipped to [0, 1];
* each iteration draws a square window of side ``s = max(round(√(p·h·w)), 1)``
  at a random position (``[0, h − s)``, ``[0, w − s)``, as the reference
  code draws it) and sets it, per channel, to ``x ± ε`` with a random sign;
  the candidate is kept if it lowers the margin loss
  ``z_y − max_{i≠y} z_i``, or fools the model;
* ``p`` follows the standard schedule from ``p_init = 0.8``: halved after
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (with
  ``rescale_schedule`` these points scale with ``queries / 10000``, the
  reference code's ``resc_schedule``; AutoAttack's standard version runs 5000
  queries without rescaling).

Each example draws its own window and signs from its own stream (the
reference code draws one window per batch per iteration; each image's
window is distributed alike either way), so an example's result does not
depend on its batch. ``queries`` counts the model evaluations each example
costs the attack: the stripes start is the first, so at most ``queries``
per restart (the reference code's loop makes ``queries + 1``); the clean
scoring pass that every stabletrain attack makes is not counted.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG
from ._common import AttackResult, _Streams, _check_count, _clip, _is_zero, _limits, _logits, _margin, _prepare, _take

__all__ = ["square", "square_p"]

# the iterations (of 10000) after which the reference schedule halves p
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p(iteration: int, p_init: float = 0.8, queries: int = 5000, rescale_schedule: bool = False) -> float:
    """The share ``p`` of the image a window covers at ``iteration`` (0-based) of the standard schedule.

    Example:
        >>> [square_p(i) for i in (0, 10, 11, 51, 201, 8001)]
        [0.8, 0.8, 0.4, 0.2, 0.1, 0.0015625]
    """
    it = int(iteration / queries * 10000) if rescale_schedule else int(iteration)
    halvings = sum(it > point for point in _HALVINGS)
    return p_init / 2 ** halvings


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor, *, queries: int = 5000,
           p_init: float = 0.8, restarts: int = 1, rescale_schedule: bool = False,
           generator: torch.Generator | ExampleRNG | None = None,
           limits: tuple[float | torch.Tensor, float | torch.Tensor] | None = None) -> AttackResult:
    """Untargeted L∞ Square attack with the margin loss; ``result.queries`` holds each example's count.

    Args:
        epsilon: radius of the L∞ ball in [0, 1] pixel units, or a tensor of per-coordinate radii
            broadcastable to ``x`` (the window then sets each coordinate to ``x ± its radius``).
        queries: model evaluations per example and restart, the start included.
        p_init: the share of the image the first windows cover.
        restarts: fresh starts for the examples not fooled yet.
        rescale_schedule: stretch the schedule of ``p`` to ``queries`` (for budgets other than 10000).
        generator: the random search's randomness (see :class:`~stabletrain.seeding.ExampleRNG`).
        limits: the box every input stays in, ``(low, high)`` numbers or tensors broadcastable to ``x``
            (default ``(0, 1)``); ``x`` must lie inside it.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(4, 1, 4, 4)
        >>> out = square(model, x, torch.tensor([0, 1, 2, 0]), 0.1, queries=20)
        >>> bool((out.adversarial - x).abs().max() <= 0.1 + 1e-6), bool(out.queries.max() <= 20)
        (True, True)
    """
    queries, restarts = _check_count(queries, "queries"), _check_count(restarts, "restarts")
    if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
        raise StableTrainError(f"p_init must be in (0, 1], got {p_init!r}")
    x, y, _, epsilon = _prepare(model, x, y, epsilon, None, per_coordinate=True)
    low, high = _limits(x, limits)
    if x.ndim != 4:
        raise StableTrainError(f"the Square attack needs B×C×H×W images, got shape {tuple(x.shape)}")
    channels, height, width = x.shape[1:]
    spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with eval_mode(model), torch.no_grad():
        predictions = _logits(model, x).argmax(1)
        success = predictions != y
        adversarial = x.clone()
        if _is_zero(epsilon):
            return AttackResult(adversarial, success, predictions, epsilon, queries=spent)
        streams = _Streams(generator, len(x), x.device)
        lines_h = torch.arange(height, device=x.device)
        lines_w = torch.arange(width, device=x.device)
        for _ in range(restarts):
            rows = (~success).nonzero().flatten()
            if len(rows) == 0:
                break
            xs, ys = x[rows], y[rows]
            radius, lows, highs = _take(epsilon, rows), _take(low, rows), _take(high, rows)
            best = _clip(xs + radius * streams.signs(rows, (channels, 1, width), x.dtype), lows, highs)
            logits = _logits(model, best)
            margin = _margin(logits, ys)
            fooled = logits.argmax(1) != ys
            found = torch.where(fooled, logits.argmax(1), ys)
            spent[rows] += 1
            for iteration in range(queries - 1):
                active = (~fooled).nonzero().flatten()
                if len(active) == 0:
                    break
                who = rows[active]
                p = square_p(iteration, p_init, queries, rescale_schedule)
                side = min(max(int(round(math.sqrt(p * height * width))), 1), height, width)
                top = streams.integers(who, 1, max(height - side, 1))
                left = streams.integers(who, 1, max(width - side, 1))
                signs = streams.signs(who, (channels, 1, 1), x.dtype)
                inside = (((lines_h >= top) & (lines_h < top + side))[:, None, :, None]
                          & ((lines_w >= left) & (lines_w < left + side))[:, None, None, :])
                candidate = torch.where(inside, _clip(xs[active] + _take(radius, active) * signs,
                                                      _take(lows, active), _take(highs, active)), best[active])
                logits = _logits(model, candidate)
                new_margin = _margin(logits, ys[active])
                predicted = logits.argmax(1)
                spent[who] += 1
                broken = predicted != ys[active]
                keep = (new_margin < margin[active]) | broken
                kept = active[keep]
                best[kept] = candidate[keep]
                margin[kept] = new_margin[keep]
                found[active[broken]] = predicted[broken]
                fooled[active[broken]] = True
            adversarial[rows] = best
            predictions[rows[fooled]] = found[fooled]
            success[rows[fooled]] = True
    return AttackResult(adversarial, success, predictions, epsilon, queries=spent)
