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
    # is replaced with probability `amount`, by 1 or 0 with equal odds.
    flipped, salt = (u.to(device=x.device, dtype=x.dtype) for u in _rands([x.shape, x.shape], ctx.generator))
    flipped, salt = flipped < c, salt < 0.5
    out = torch.where(flipped & salt, torch.ones_like(x), x)
    return torch.where(flipped & ~salt, torch.zeros_like(x), out)


def _speckle_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return x + x * c * randn_like(x, ctx.generator)
