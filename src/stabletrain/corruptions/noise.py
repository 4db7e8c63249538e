"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise and speckle_noise (held out).

Every value is perturbed independently, so each draw is shaped like the batch.
"""

from __future__ import annotations

import torch

from ..perturbations import randn_like
from ._ops import _Context, _poisson, _rands


def _gaussian_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return x + c * randn_like(x, ctx.generator)


def _shot_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return _poisson(x * c, ctx.generator) / c


def _impulse_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    # skimage.util.random_noise(mode='s&p'): every value (channels independently)
    # is replaced with probability `amount`, by 1 or 0 with equal odds. One
    # uniform u per value gives both, with the same law as skimage's two draws:
    # replaced where u < amount, and then salt where u < amount / 2.
    (u,) = _rands([x.shape], ctx.generator)
    u = u.to(device=x.device)
    return x.masked_fill(u < c, 0.0).masked_fill_(u < 0.5 * c, 1.0)


def _speckle_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return x + x * c * randn_like(x, ctx.generator)
