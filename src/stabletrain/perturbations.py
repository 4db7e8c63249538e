"""Training-time perturbations: the ``x'`` of stability training.

A perturbation maps a clean batch to a perturbed copy that the model should
treat the same way. It is random, so it takes an optional
:class:`torch.Generator`; the same generator state gives the same copy.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_nonnegative

__all__ = ["PERTURBATIONS", "GaussianNoise", "RelativeNoise", "build_perturbation", "randn_like"]


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``.

    The generator may live on another device than ``x`` (a CPU generator with
    a CUDA batch, say); the noise is then drawn there and moved, so the same
    seed gives the same noise on every device.
    """
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device, non_blocking=True)


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


#: Perturbation names accepted by :func:`build_perturbation` (and ``--noise``).
PERTURBATIONS = ("gaussian", "relative")


def build_perturbation(name: str, sigma: float) -> nn.Module:
    """``'gaussian'`` → :class:`GaussianNoise`, ``'relative'`` → :class:`RelativeNoise`.

    Example:
        >>> build_perturbation("relative", 0.1)
        RelativeNoise(sigma=0.1)
    """
    if name == "gaussian":
        return GaussianNoise(sigma)
    if name == "relative":
        return RelativeNoise(sigma)
    from .checks import StableTrainError

    raise StableTrainError(f"unknown noise model {name!r}; known: {', '.join(PERTURBATIONS)}")
