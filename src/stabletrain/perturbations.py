"""Training-time perturbations: the ``x'`` of stability training.

A perturbation maps a clean batch to a perturbed copy that the model should
treat the same way. It is random, so it takes an optional
:class:`torch.Generator`; the same generator state gives the same copy.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch
from torch import nn

from .checks import StableTrainError, check_nonnegative
from .registry import PERTURBATIONS
from .seeding import ExampleRNG, draw

__all__ = ["PERTURBATIONS", "GaussianNoise", "RelativeNoise", "build_perturbation", "randn_like", "rand_like",
           "noise_shard"]

# (offset, count, total) of the examples this process holds within the global batch; see noise_shard.
_SHARD: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar("noise_shard", default=None)


@contextlib.contextmanager
def noise_shard(offset: int, count: int, total: int) -> Iterator[None]:
    """Within the block, a batch of ``count`` examples gets the noise that rows
    ``offset:offset + count`` of a batch of ``total`` examples would get.

    Data-parallel training cuts each global batch into one shard per process.
    Drawing the noise of the whole global batch on every process and keeping
    this process's rows gives every example the same noise whatever the number
    of processes, so a 2-process run follows the single-process run. The cost
    is drawing ``total / count`` times more noise than needed, which is small
    next to a forward pass. A batch whose rows are a multiple of ``count``
    (triplets flattened to ``3 × count`` images) is sharded by that multiple.

    Example:
        >>> full = randn_like(torch.zeros(4, 2), torch.Generator().manual_seed(0))
        >>> with noise_shard(2, 2, 4):
        ...     part = randn_like(torch.zeros(2, 2), torch.Generator().manual_seed(0))
        >>> torch.equal(part, full[2:])
        True
    """
    if not (0 <= offset and 0 < count and offset + count <= total):
        raise StableTrainError(f"noise shard must satisfy 0 <= offset, 0 < count, offset + count <= total; got "
                               f"{offset}, {count}, {total}")
    token = _SHARD.set((offset, count, total))
    try:
        yield
    finally:
        _SHARD.reset(token)


def _draw(sample: Callable[..., torch.Tensor], x: torch.Tensor,
          generator: torch.Generator | ExampleRNG | None) -> torch.Tensor:
    if isinstance(generator, ExampleRNG):  # per-example streams: already independent of the batch and the shard
        return draw(sample, x.shape, generator, x.device, x.dtype)
    shape, rows = tuple(x.shape), None
    shard = _SHARD.get()
    if shard is not None and x.ndim > 0:
        offset, count, total = shard
        if x.shape[0] % count:
            raise StableTrainError(f"a batch of {x.shape[0]} rows cannot be a noise shard of {count} examples")
        factor = x.shape[0] // count
        shape = (total * factor, *x.shape[1:])
        rows = slice(offset * factor, (offset + count) * factor)
    device = generator.device if generator is not None else x.device
    noise = sample(shape, generator=generator, device=device, dtype=x.dtype)
    if rows is not None:
        noise = noise[rows]
    return noise if noise.device == x.device else noise.to(x.device, non_blocking=True)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``.

    The generator may live on another device than ``x`` (a CPU generator with
    a CUDA batch, say); the noise is then drawn there and moved, so the same
    seed gives the same noise on every device. Inside :func:`noise_shard` the
    noise is this process's rows of the global batch's noise.
    """
    return _draw(torch.randn, x, generator)


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [0, 1) shaped like ``x``; devices and sharding as in :func:`randn_like`."""
    return _draw(torch.rand, x, generator)


class GaussianNoise(nn.Module):
    """Additive Gaussian pixel noise, ``x' = x + N(0, sigma^2)``, the paper's perturbation.

    ``sigma`` is in **pixel units of images scaled to [0, 1]**, not in the
    units of mean/std-normalized tensors. Adding ``sigma = 0.04`` after
    ImageNet normalization (std ≈ 0.226) would really be noise of about
    0.009 in pixel units, a 4.4× weaker perturbation than intended, which is
    a common mistake in public re-implementations. In stabletrain the model
    normalizes its own input, so the noise is always added in pixel space.

    Args:
        sigma: standard deviation of the noise, in [0, 1] pixel units; ``>= 0``.
        clamp: clip the result back into [0, 1] (default). Without clamping
            the noise is exactly Gaussian but the copy may leave the valid
            pixel range.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.full((2, 1, 4, 4), 0.5)
        >>> noisy = GaussianNoise(sigma=0.04)(x, generator=g)
        >>> noisy.shape, bool((noisy - x).abs().max() < 0.3)
        (torch.Size([2, 1, 4, 4]), True)
    """

    def __init__(self, sigma: float, clamp: bool = True) -> None:
        super().__init__()
        self.sigma = check_nonnegative(sigma, "sigma (pixel units in [0, 1])")
        if self.sigma > 1.0:
            raise StableTrainError(f"sigma is a noise std in [0, 1] pixel units, so it must be <= 1; got {sigma!r} "
                                   f"(images are in [0, 1], not [0, 255])")
        if not isinstance(clamp, bool):
            raise StableTrainError(f"clamp must be true or false, got {clamp!r}")
        self.clamp = clamp

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sigma == 0.0:
            return x.clone()
        noisy = x + self.sigma * randn_like(x, generator)
        return noisy.clamp_(0.0, 1.0) if self.clamp else noisy

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, clamp={self.clamp}"


class RelativeNoise(nn.Module):
    """Multiplicative noise on occupied pixels, ``x' = x · (1 + sigma·ε)``, clipped at 0 (and 1).

    Empty pixels stay empty, so a sparse image stays exactly as sparse: the
    perturbation of a detector's energy resolution, suited to jet images,
    where additive Gaussian noise would light up every empty cell.

    Args:
        sigma: relative standard deviation, ``>= 0`` (0.2 = 20 % resolution).

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 0.5
        >>> noisy = RelativeNoise(0.2)(x, generator=torch.Generator().manual_seed(0))
        >>> int((noisy > 0).sum()), bool(noisy[0, 0, 1, 1] != 0.5)
        (1, True)
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = check_nonnegative(sigma, "sigma (relative)")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sigma == 0.0:
            return x.clone()
        return (x * (1.0 + self.sigma * randn_like(x, generator))).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


PERTURBATIONS.register("gaussian", GaussianNoise)
PERTURBATIONS.register("relative", RelativeNoise)


def build_perturbation(name: str, sigma: float) -> nn.Module:
    """A registered perturbation by name: ``'gaussian'`` → :class:`GaussianNoise`, ``'relative'`` → :class:`RelativeNoise`.

    Example:
        >>> build_perturbation("relative", 0.1)
        RelativeNoise(sigma=0.1)
    """
    return PERTURBATIONS.build(name, sigma=sigma)
