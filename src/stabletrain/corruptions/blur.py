"""Blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur and gaussian_blur (held out).

Blur radii are in pixels of the reference side, scaled by ``ctx.scale``.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

from ._ops import (
    _LANES,
    _Context,
    _filter2d,
    _filter_lines,
    _gaussian_blur,
    _rand,
    _randint,
    _shrink_matrix,
    motion_blur_taps,
)


@lru_cache(maxsize=64)
def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    # The reference's aliased disk, normalized, then blurred by a 3×3 (5×5 above
    # radius 8) Gaussian of σ = alias_blur to anti-alias its rim.
    reach = max(math.ceil(radius), 1)
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= radius ** 2).to(torch.float64)
    disk = disk / disk.sum()
    g = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(g ** 2) / (2 * alias_blur ** 2))
    g = g / g.sum()
    kernel = F.conv2d(disk.view(1, 1, *disk.shape), (g.view(-1, 1) * g.view(1, -1)).view(1, 1, ksize, ksize),
                      padding=ksize - 1)[0, 0]
    return kernel / kernel.sum()


def defocus_kernel(radius: float, alias_blur: float, scale: float = 1.0) -> torch.Tensor:
    """The defocus kernel of the reference for an image ``scale`` times the reference side.

    At ``scale >= 1`` it is the reference's disk of radius ``radius·scale``
    (an aliased disk, normalized, then softened by a 3×3 Gaussian of
    ``σ = alias_blur·scale``; 5×5 above radius 8). Below the reference side a
    disk of under a pixel would collapse to a single tap, so the reference
    kernel is instead area-averaged onto the coarser pixel grid, as if the
    defocused reference image had been down-sampled. Returns a float64 2-D
    tensor that sums to one.

    Example:
        >>> k = defocus_kernel(3, 0.1)
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([9, 9]), 1.0)
        >>> defocus_kernel(3, 0.1, scale=32 / 224).shape
        torch.Size([3, 3])
    """
    return _defocus_kernel(round(float(radius), 9), round(float(alias_blur), 9), round(float(scale), 9)).clone()


@lru_cache(maxsize=64)
def _defocus_kernel(radius: float, alias_blur: float, scale: float) -> torch.Tensor:
    if scale >= 1.0:
        return _disk_kernel(radius * scale, alias_blur * scale)
    kernel = _disk_kernel(radius, alias_blur)
    shrink = _shrink_matrix(kernel.shape[0], scale)
    kernel = shrink @ kernel @ shrink.T
    return kernel / kernel.sum()


def _defocus_blur(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    kernel = _defocus_kernel(float(c[0]), float(c[1]), round(ctx.scale, 9))
    return _filter2d(x, kernel, "reflect101", per_example=ctx.per_example)


def _glass_blur(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    sigma, iterations = c[0] * ctx.scale, c[2]
    # Below the reference side the shuffle radius shrinks under a pixel; then
    # only that fraction of the pixels moves (by one pixel), which keeps the
    # mean displacement proportional to the image size.
    reach = c[1] * ctx.scale
    delta, moving = (max(1, round(reach)), 1.0) if reach >= 1 else (1, reach)
    x = _gaussian_blur(x, sigma)
    batch, channels, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    # The reference visits rows/columns delta+1 .. side-delta and swaps each
    # pixel with one offset by randint(-delta, delta) (so -delta .. delta-1).
    inside = ((rows > delta) & (rows <= height - delta) & (cols > delta) & (cols <= width - delta))
    for _ in range(iterations):
        move = inside
        if moving < 1.0:
            move = inside & (_rand((batch, height, width), ctx.generator, x.device, torch.float32) < moving)
        dy = _randint(-delta, delta, (batch, height, width), ctx.generator, x.device) * move
        dx = _randint(-delta, delta, (batch, height, width), ctx.generator, x.device) * move
        source = ((rows + dy) * width + cols + dx).view(batch, 1, -1).expand(batch, channels, -1)
        x = x.reshape(batch, channels, -1).gather(2, source).view(batch, channels, height, width)
    return _gaussian_blur(x, sigma)


def _motion_blur(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    angles = _rand((x.shape[0],), ctx.generator, torch.device("cpu"), torch.float64, -45.0, 45.0)
    taps = motion_blur_taps(c[0] * ctx.scale, c[1] * ctx.scale, angles)
    return _filter_lines(x, *taps, mode="edge", per_example=ctx.per_example)


def _zoom_axis(n: int, factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One axis of a bilinear zoom about the centre (``grid_sample``, border, ``align_corners=False``).

    Returns ``(i0, i1, f)``: output pixel ``j`` is ``(1 - f[j])·x[i0[j]] + f[j]·x[i1[j]]``.
    """
    j = torch.arange(n, dtype=torch.float64)
    source = ((((2 * j + 1) / n - 1) / factor + 1) * n - 1) / 2
    source = source.clamp_(0.0, n - 1.0)
    i0 = source.floor().long()
    return i0, (i0 + 1).clamp_(max=n - 1), source - i0


#: The zoom operator is built as a sparse matrix while it has at most this many entries before coalescing
#: (4 per pixel and factor: a 224-px ImageNet-C sweep needs at most 3.2 M); larger images use grid_sample.
_ZOOM_OPERATOR_ENTRIES = 4_000_000


@lru_cache(maxsize=16)
def _zoom_operator(height: int, width: int, factors: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    """The whole zoom blur as one sparse ``HW×HW`` CSR matrix: ``(I + Σ_z A_z ⊗ B_z) / (len(factors) + 1)``.

    ``A_z`` and ``B_z`` are the two axes of the zoom by ``z`` (:func:`_zoom_axis`);
    a zoom about the centre is separable, so each is a Kronecker product with
    four taps per pixel. Summed over the factors, a pixel has a few dozen
    distinct taps (about 8 at 32 px, 37 at 224 px, ImageNet-C severity 5).
    """
    pixels = torch.arange(height * width)
    rows, cols, values = [pixels], [pixels], [torch.ones(height * width, dtype=torch.float64)]
    for z in factors:
        (y0, y1, fy), (x0, x1, fx) = _zoom_axis(height, z), _zoom_axis(width, z)
        for yi, wy in ((y0, 1 - fy), (y1, fy)):
            for xi, wx in ((x0, 1 - fx), (x1, fx)):
                rows.append(pixels)
                cols.append((yi.view(-1, 1) * width + xi.view(1, -1)).flatten())
                values.append((wy.view(-1, 1) * wx.view(1, -1)).flatten())
    matrix = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(values),
                                     (height * width, height * width), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return (matrix / (len(factors) + 1)).to(dtype).to_sparse_csr()


def _zoom_blur(x: torch.Tensor, factors: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    factors = tuple(float(z) for z in factors)
    if x.device.type == "cpu" and 4 * height * width * len(factors) <= _ZOOM_OPERATOR_ENTRIES:
        # One sparse product for all factors: 20x (32 px) and 6x (224 px) faster than a grid_sample per factor
        # on the CPU, the same zooms to float rounding (the sampling positions are computed in float64 here).
        operator = _zoom_operator(height, width, factors, x.dtype)
        planes = batch * channels
        lanes = -(-planes // _LANES) * _LANES  # every column in the vectorized loops
        columns = x.new_zeros(height * width, lanes)
        columns[:, :planes] = x.reshape(planes, height * width).T
        return (operator @ columns)[:, :planes].T.reshape(batch, channels, height, width)
    out = x.clone()
    for z in factors:
        # Zoom about the image centre: each output pixel samples the input 1/z
        # of the way from the centre.
        theta = torch.tensor([[[1.0 / z, 0.0, 0.0], [0.0, 1.0 / z, 0.0]]], device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [1, channels, height, width], align_corners=False).expand(batch, -1, -1, -1)
        out += F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out / (len(factors) + 1)


def _gaussian_blur_corruption(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return _gaussian_blur(x, c * ctx.scale)
