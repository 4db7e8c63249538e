"""Digital corruptions: contrast, elastic_transform, pixelate, jpeg_compression and saturate (held out)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..distortions import JPEG
from ._ops import _Context, _gaussian_matrix, _rand, _randn, _resize_matrix


def _contrast(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as the reference
    return (x - means) * c + means


@lru_cache(maxsize=64)
def _field_matrix(n_ref: int, n: int, sigma: float) -> torch.Tensor:
    """Smoothing on the reference grid (σ, truncate 3, symmetric borders), then resizing to ``n``: ``n×n_ref``."""
    smooth = (_gaussian_matrix(n_ref, sigma, 3.0, "symmetric") if sigma > 0 and int(3.0 * sigma + 0.5) > 0
              else torch.eye(n_ref, dtype=torch.float64))
    return _resize_matrix(n_ref, n) @ smooth


@lru_cache(maxsize=64)
def _field_root(n_ref: int, n: int, sigma: float) -> torch.Tensor:
    """The symmetric square root ``L`` of ``M·Mᵀ``, ``M = _field_matrix``: ``L·Z`` and ``M·U`` share their covariance."""
    m = _field_matrix(n_ref, n, sigma)
    values, vectors = torch.linalg.eigh(m @ m.T)
    return (vectors * values.clamp_min(0.0).sqrt()) @ vectors.T


def _elastic_transform(x: torch.Tensor, c: float | tuple, ctx: _Context) -> torch.Tensor:
    batch, _, height, width = x.shape
    rh, rw = ctx.reference_grid(height, width)
    device, dtype, gen = x.device, x.dtype, ctx.generator
    # The displacement field is defined in reference pixels on the reference
    # grid: uniform noise, smoothed, scaled by alpha, then resized to the
    # image. Smoothing and resizing are linear and separable, so they are one
    # n×n_ref matrix per axis. With native layers the field is drawn on the
    # image grid instead, as Gaussian noise shaped to the same covariance.
    affine = None
    if ctx.parameter_set == "imagenet":
        alpha, sigma_y, sigma_x, shift = float(c), 0.01 * rh, 0.01 * rw, 0.005 * rh
    else:
        alpha, sigma_y, affine_shift = c
        sigma_x, shift = sigma_y, 1.0
    if ctx.native:
        noise = _randn((batch, 2, height, width), gen, device, dtype, std=shift / math.sqrt(3.0))
        rows, cols = _field_root(rh, height, float(sigma_y)), _field_root(rw, width, float(sigma_x))
    else:
        noise = _rand((batch, 2, rh, rw), gen, device, dtype, -shift, shift)
        rows, cols = _field_matrix(rh, height, float(sigma_y)), _field_matrix(rw, width, float(sigma_x))
    if ctx.parameter_set == "cifar10":
        # make_cifar_c's random affine: three control points around the centre
        # move by U(-c, c) reference pixels; we need the map from output to source.
        centre = torch.tensor([rw // 2, rh // 2], dtype=torch.float64)
        square = min(rh, rw) // 3
        source = torch.stack([centre + square, centre + torch.tensor([square, -square]), centre - square])
        moved = source + _rand((batch, 3, 2), gen, torch.device("cpu"), torch.float64, -affine_shift, affine_shift)
        homogeneous = torch.cat([moved, torch.ones(batch, 3, 1, dtype=torch.float64)], dim=2)
        affine = torch.linalg.solve(homogeneous, source.expand(batch, 3, 2)).transpose(1, 2)  # B×2×3
        affine = affine.to(device=device, dtype=dtype)
    if alpha > 0:
        rows, cols = rows.to(device=device, dtype=dtype), cols.to(device=device, dtype=dtype)
        field = torch.matmul(torch.matmul(rows, noise), cols.T).mul_(alpha)  # (dy, dx) in reference pixels
    else:
        field = torch.zeros(batch, 2, height, width, device=device, dtype=dtype)
    sy, sx = height / rh, width / rw
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / sy - 0.5
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / sx - 0.5
    qy = ys.view(1, -1, 1) + field[:, 0]
    qx = xs.view(1, 1, -1) + field[:, 1]
    if affine is not None:
        qx, qy = (affine[:, 0, 0, None, None] * qx + affine[:, 0, 1, None, None] * qy + affine[:, 0, 2, None, None],
                  affine[:, 1, 0, None, None] * qx + affine[:, 1, 1, None, None] * qy + affine[:, 1, 2, None, None])
    # Back to image pixels, then to grid_sample's [-1, 1] (align_corners=False).
    gx = ((qx + 0.5) * sx) / width * 2 - 1
    gy = ((qy + 0.5) * sy) / height * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@lru_cache(maxsize=64)
def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling weights (``precompute_coeffs``), ``n_out×n_in``, replayed step by step.

    Output pixel i averages the input pixels whose centres fall in its
    footprint. The arithmetic follows Pillow's C code operation for
    operation, because exact ties at footprint edges decide which pixel
    counts, and the order of floating-point operations decides the ties.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    inverse = 1.0 / filterscale
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), n_in)
        row = [1.0 if -0.5 < ((x + low) - centre + 0.5) * inverse <= 0.5 else 0.0 for x in range(high - low)]
        total = sum(row)
        if total:
            weights[i, low:high] = torch.tensor(row, dtype=torch.float64) / total
    return weights


@lru_cache(maxsize=64)
def _upscale_index(n_small: int, n: int, nearest: bool) -> torch.Tensor:
    """Source pixel of each output pixel when Pillow enlarges ``n_small`` pixels to ``n``.

    Both BOX and NEAREST take about pixel ⌊(i + ½)·n_small/n⌋; they differ in
    how exact ties fall. BOX uses the footprints of :func:`_box_matrix`;
    NEAREST (Pillow's ``ImagingScaleAffine``) adds the step again and again
    in double precision, and that running sum is replayed here.
    """
    if not nearest:
        return _box_matrix(n_small, n).argmax(1)  # enlarging, each BOX footprint holds one source pixel
    step = n_small / n
    position = step * 0.5
    index = []
    for _ in range(n):
        index.append(int(position))
        position += step
    return torch.tensor(index, dtype=torch.int64).clamp_(0, n_small - 1)


@lru_cache(maxsize=64)
def _box_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_box_matrix` as taps: ``(weights, indices)``, each ``n_out×K`` for the K ≤ ⌈n_in/n_out⌉ + 1 nonzeros.

    Rows with fewer nonzeros are padded with zero weights (on valid indices).
    """
    matrix = _box_matrix(n_in, n_out)
    taps = max(1, int((matrix > 0).sum(1).max()))
    weights, indices = matrix.topk(taps, dim=1)
    return weights, indices


def _box_rows(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``matrix @ x`` along dim -2 for a box ``matrix`` given as taps: whole rows gathered and summed."""
    out = x.index_select(-2, indices[:, 0]) * weights[:, :1]
    for k in range(1, weights.shape[1]):
        out.addcmul_(x.index_select(-2, indices[:, k]), weights[:, k:k + 1])
    return out


def _pixelate(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    height, width = x.shape[-2:]
    small_h, small_w = max(1, int(height * c)), max(1, int(width * c))
    # Every step gathers whole rows (fast contiguous copies); the columns are done as rows of the transposed image.
    # A few taps per output pixel instead of a dense matrix product: the same sums, about 3× faster.
    row_w, row_i = (t.to(x.device) for t in _box_taps(height, small_h))
    col_w, col_i = (t.to(x.device) for t in _box_taps(width, small_w))
    rows = _box_rows(x, row_w.to(x.dtype), row_i).transpose(-1, -2).contiguous()  # …×W×h
    small_t = _box_rows(rows, col_w.to(x.dtype), col_i)                            # …×w×h
    # imagecorruptions enlarges with NEAREST, make_cifar_c with BOX.
    nearest = ctx.parameter_set == "imagenet"
    up_rows = _upscale_index(small_h, height, nearest).to(x.device)
    up_cols = _upscale_index(small_w, width, nearest).to(x.device)
    wide = small_t.index_select(-2, up_cols).transpose(-1, -2).contiguous()        # …×h×W
    return wide.index_select(-2, up_rows)


def _jpeg_compression(x: torch.Tensor, c: int, ctx: _Context) -> torch.Tensor:
    return JPEG(int(c)).apply(x, None)


def _saturate(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    if x.shape[1] == 1:
        # The reference turns grey into RGB, saturates and returns the red
        # channel, which is the value channel: grayscale images are unchanged.
        return x.clone()
    # With H and V fixed, every channel is V·(1 - S·w) where w depends on the
    # hue only, so setting S' = clip(a·S + b) is a closed-form rescaling.
    value = x.amax(1, keepdim=True)
    delta = value - x.amin(1, keepdim=True)
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    new_saturation = (saturation * c[0] + c[1]).clamp(0.0, 1.0)
    weights = (value - x) / delta.clamp_min(1e-12)
    # A grey pixel has hue 0 in skimage, i.e. red: w = (0, 1, 1).
    grey_weights = torch.tensor((0.0, 1.0, 1.0), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    weights = torch.where(delta > 0, weights, grey_weights)
    return value * (1 - new_saturation * weights)
