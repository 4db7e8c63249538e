"""What every attack shares: the result, input checks, the ball projections and per-example randomness."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import StableTrainError, check_images, check_nonnegative
from ..devices import device_of as _device
from ..seeding import ExampleRNG, _splitmix64, draw


@dataclass
class AttackResult:
    """The adversarial batch, which examples the attack fooled, and the final predictions.

    ``success`` includes the examples misclassified (untargeted) or already
    classified as the target (targeted) on the clean input: the clean image
    is a point of every ball, so the attack needs no step to fool the model
    there, and ``adversarial`` holds the clean image for them.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    #: the radius attacked: a number, or the per-coordinate radii
    epsilon: float | torch.Tensor
    #: model evaluations spent on each example (the query-based :func:`~stabletrain.attacks.square` fills it)
    queries: torch.Tensor | None = None
    #: for :func:`~stabletrain.attacks.autoattack`: ``{component: success mask}``, cumulative, in the order run
    components: dict[str, torch.Tensor] | None = None
    #: what an attack recorded along the way when asked (APGD: ``losses`` and ``step_sizes``, iterations × examples)
    trace: dict[str, torch.Tensor] | None = None




def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        kind = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise StableTrainError(f"the model must return a B×K logits tensor, got {kind}")
    return out


#: An L∞ radius or a box limit: one number for every coordinate, or a tensor with one value per coordinate.
Bound = Union[float, torch.Tensor]


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor,
             target: torch.Tensor | None, name: str = "epsilon", per_coordinate: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Bound]:
    """Checked inputs on the model's device. With ``per_coordinate``, ``epsilon`` may be a tensor of radii
    broadcastable to ``x`` (returned at ``x``'s full shape); otherwise it must be a number."""
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(x)
    if isinstance(epsilon, torch.Tensor) and not per_coordinate:
        raise StableTrainError(f"this attack takes one number as {name}, not a tensor of per-coordinate radii "
                               f"(apgd-ce, apgd-dlr, apgd-t, square and autoattack take one)")
    if not isinstance(epsilon, torch.Tensor):
        epsilon = check_nonnegative(epsilon, name)
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
    device = _device(model)
    if target is not None:
        target = torch.as_tensor(target).to(device)
        if target.shape != y.shape:
            raise StableTrainError(f"targets must be a vector of {len(x)} class indices, got {tuple(target.shape)}")
    x = x.detach().to(device)
    if isinstance(epsilon, torch.Tensor):
        epsilon = _coordinates(epsilon, x, name)
        if bool((epsilon < 0).any()):
            raise StableTrainError(f"{name} must be >= 0 in every coordinate")
    return x, y.to(device), target, epsilon


def _coordinates(value: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` (finite, broadcastable to ``x``) as a tensor of ``x``'s shape, device and dtype."""
    if not torch.is_floating_point(value) and value.dtype not in (torch.int32, torch.int64, torch.uint8):
        raise StableTrainError(f"{name} must be a real tensor, got dtype {value.dtype}")
    value = value.detach().to(x.device, x.dtype)
    if not bool(torch.isfinite(value).all()):
        raise StableTrainError(f"{name} must be finite in every coordinate")
    try:
        return torch.broadcast_to(value, x.shape).clone()
    except RuntimeError:
        raise StableTrainError(f"{name} of shape {tuple(value.shape)} does not broadcast to the images' shape "
                               f"{tuple(x.shape)}") from None


def _limits(x: torch.Tensor, limits: tuple[float | torch.Tensor, float | torch.Tensor] | None
            ) -> tuple[Bound, Bound]:
    """The box every attacked input stays in: ``(0, 1)`` by default, or ``(low, high)`` numbers or tensors
    broadcastable to ``x`` (returned both numbers or both full tensors); ``x`` must lie inside it."""
    if limits is None:
        return 0.0, 1.0
    if not isinstance(limits, (tuple, list)) or len(limits) != 2:
        raise StableTrainError(f"limits must be a (low, high) pair, got {limits!r}")
    low, high = limits
    if not isinstance(low, torch.Tensor) and not isinstance(high, torch.Tensor):
        low, high = _number(low, "the lower limit"), _number(high, "the upper limit")
        if low > high:
            raise StableTrainError(f"the lower limit {low:g} is above the upper limit {high:g}")
        if bool((x < low).any()) or bool((x > high).any()):
            raise StableTrainError(f"the images must lie inside the limits [{low:g}, {high:g}]")
        return low, high
    low = _coordinates(torch.as_tensor(low), x, "the lower limit")
    high = _coordinates(torch.as_tensor(high), x, "the upper limit")
    if bool((low > high).any()):
        raise StableTrainError("the lower limit is above the upper limit in some coordinate")
    if bool((x < low).any()) or bool((x > high).any()):
        raise StableTrainError("the images must lie inside the limits (low <= x <= high in every coordinate)")
    return low, high


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not math.isfinite(float(value)):
        raise StableTrainError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _clip(t: torch.Tensor, low: Bound, high: Bound) -> torch.Tensor:
    """``t`` clipped into the box ``[low, high]`` (numbers, or tensors of ``t``'s shape)."""
    if isinstance(low, torch.Tensor):
        return torch.maximum(torch.minimum(t, high), low)
    return t.clamp(low, high)


def _take(value: Bound, rows: torch.Tensor) -> Bound:
    """The rows ``rows`` of a per-coordinate bound (a number is every row's)."""
    return value[rows] if isinstance(value, torch.Tensor) else value


def _is_zero(epsilon: Bound) -> bool:
    """Whether the radius allows no change at all."""
    return not bool((epsilon > 0).any()) if isinstance(epsilon, torch.Tensor) else epsilon == 0.0


def _loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The quantity the attack ascends, summed so each example's gradient is its own."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="sum")
    return -F.cross_entropy(logits, target, reduction="sum")


def _succeeded(predictions: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return predictions != y if target is None else predictions == target


@torch.no_grad()
def _record(candidate: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
            best: torch.Tensor, predictions: torch.Tensor, success: torch.Tensor) -> None:
    """Keep the first iterate that fools the model, for each example not fooled yet (in place)."""
    predicted = logits.argmax(1)
    fooled = _succeeded(predicted, y, target) & ~success
    best[fooled] = candidate[fooled]
    predictions[fooled] = predicted[fooled]
    success |= fooled


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                    loss_fn: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logits = _logits(model, x)
    loss = loss_fn(logits, y, target) if loss_fn is not None else _loss(logits, y, target)
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project(delta: torch.Tensor, x: torch.Tensor, epsilon: Bound, norm: str, low: Bound = 0.0,
             high: Bound = 1.0) -> torch.Tensor:
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon) if not isinstance(epsilon, torch.Tensor) else \
            torch.maximum(torch.minimum(delta, epsilon), -epsilon)
    else:
        delta = delta * torch.clamp(epsilon / (_l2_norm(delta) + 1e-12), max=1.0)
    # Clipping x + δ into the box never increases |δ| in any coordinate (x is inside it), so the ball still holds.
    return _clip(x + delta, low, high) - x


def _random_start(x: torch.Tensor, epsilon: float, norm: str,
                  generator: torch.Generator | ExampleRNG | None) -> torch.Tensor:
    """A uniform point of the ε-ball around each image (L2: uniform direction, uniform radius)."""
    if norm == "linf":
        return (draw(torch.rand, x.shape, generator, x.device, x.dtype) * 2 - 1) * epsilon
    direction = draw(torch.randn, x.shape, generator, x.device, x.dtype)
    radius = draw(torch.rand, (x.shape[0],) + (1,) * (x.ndim - 1), generator, x.device, x.dtype)
    return direction / (_l2_norm(direction) + 1e-12) * radius * epsilon


def _check_count(value: object, name: str, minimum: int = 1) -> int:
    """An integer option (steps, queries, restarts…) >= ``minimum``, or one error line."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and value.is_integer()):
        raise StableTrainError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise StableTrainError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_norm(norm: str, allowed: tuple[str, ...] = ("linf", "l2")) -> str:
    if norm not in allowed:
        raise StableTrainError(f"norm must be {' or '.join(repr(a) for a in allowed)}, got {norm!r}")
    return norm


def _subset(generator: torch.Generator | ExampleRNG | None, rows: torch.Tensor) -> torch.Generator | ExampleRNG | None:
    """The streams of ``rows`` (a 1-D index) of an :class:`ExampleRNG`, sharing their states; other generators
    unchanged (they are drawn from batch after batch anyway)."""
    if not isinstance(generator, ExampleRNG):
        return generator
    index = [int(i) for i in rows.tolist()]
    sub = ExampleRNG.__new__(ExampleRNG)
    sub.seeds = [generator.seeds[i] for i in index]
    sub.device = generator.device
    sub.generators = [generator.generators[i] for i in index]
    return sub


class _Streams:
    """Counter-based random numbers, one stream per example: fast, vectorized, and independent of the batch.

    At the start of an attack every example draws one 63-bit key from its
    own stream of the :class:`~stabletrain.seeding.ExampleRNG` (or, for a
    :class:`torch.Generator`, the batch draws one key per row from it; with
    ``None`` from torch's global generator). The ``j``-th number of example
    ``i`` is then SplitMix64 of its key and ``j``, so what an example draws
    depends only on its key and on how many numbers it drew before, never on
    which examples share its batch or are still being attacked, and a
    Square attack of thousands of iterations costs no Python loop over the
    examples per iteration.
    """

    def __init__(self, generator: torch.Generator | ExampleRNG | None, n: int, device: torch.device) -> None:
        if isinstance(generator, ExampleRNG):
            if len(generator) != n:
                raise StableTrainError(f"the attack's ExampleRNG has {len(generator)} streams for {n} examples")
            keys = [int(torch.randint(0, 2 ** 63 - 1, (1,), generator=g, device=generator.device))
                    for g in generator.generators]
        else:
            where = generator.device if generator is not None else "cpu"
            keys = torch.randint(0, 2 ** 63 - 1, (n,), generator=generator, device=where).tolist()
        self.keys = np.array(keys, dtype=np.uint64)
        self.drawn = np.zeros(n, dtype=np.uint64)
        self.device = device

    def _bits(self, rows: torch.Tensor | None, size: int) -> np.ndarray:
        index = np.arange(len(self.keys)) if rows is None else rows.cpu().numpy()
        counters = self.drawn[index][:, None] + np.arange(size, dtype=np.uint64)[None, :]
        self.drawn[index] += np.uint64(size)
        with np.errstate(over="ignore"):
            return _splitmix64(_splitmix64(counters) ^ self.keys[index][:, None])

    def uniform(self, rows: torch.Tensor | None, size: int) -> np.ndarray:
        """``len(rows) × size`` numbers uniform in [0, 1) (float64), from the streams of ``rows`` (all: None)."""
        return (self._bits(rows, size) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53

    def rand(self, rows: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = len(self.keys) if rows is None else len(rows)
        values = self.uniform(rows, int(np.prod(shape)) if shape else 1)
        return torch.from_numpy(values).to(self.device, dtype).view(n, *shape)

    def randn(self, rows: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Standard normals by the Box–Muller transform of two uniforms each."""
        n = len(self.keys) if rows is None else len(rows)
        size = int(np.prod(shape)) if shape else 1
        u = self.uniform(rows, 2 * size)
        radius = np.sqrt(-2.0 * np.log1p(-u[:, :size]))  # 1 - u is in (0, 1]: the log is finite
        values = radius * np.cos(2 * math.pi * u[:, size:])
        return torch.from_numpy(values).to(self.device, dtype).view(n, *shape)

    def integers(self, rows: torch.Tensor | None, size: int, high: int) -> torch.Tensor:
        """``len(rows) × size`` integers uniform in ``[0, high)``."""
        values = np.minimum(np.floor(self.uniform(rows, size) * high), high - 1).astype(np.int64)
        return torch.from_numpy(values).to(self.device)

    def signs(self, rows: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Independent ±1 with probability 1/2 each."""
        return torch.where(self.rand(rows, shape, dtype) < 0.5, -1.0, 1.0).to(dtype)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y − max_{i≠y} z_i`` per example: negative where the model is fooled."""
    rows = torch.arange(len(y), device=logits.device)
    true = logits[rows, y]
    others = logits.clone()
    others[rows, y] = -math.inf
    return true - others.amax(dim=1)
