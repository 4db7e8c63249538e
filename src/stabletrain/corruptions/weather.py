"""Weather corruptions: snow, frost, fog, brightness and spatter (held out).

Snow and spatter build random layers (flakes, liquid) that are blended into
the image; frost blends in a procedural texture (:func:`frost_texture`), fog
a plasma fractal.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..checks import StableTrainError
from ..seeding import ExampleRNG
from ._ops import (
    Generator,
    _colour,
    _Context,
    _filter2d,
    _filter_lines,
    _gaussian_blur,
    _kernel_energy,
    _luma,
    _next_power_of_two,
    _pad,
    _plasma_fractal,
    _rand,
    _randn,
    _rands,
    _resize,
    _upsample_threshold_shrink,
    motion_blur_taps,
)


def _below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``, as a Python float (exactly representable in ``dtype``)."""
    v = torch.tensor(value, dtype=dtype)
    return float(torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype)))


def _snow(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    rh, rw = ctx.reference_grid(height, width)
    # The flake layer is made at the reference resolution, where its
    # parameters are defined: noise on a grid `zoom` times coarser, enlarged,
    # thresholded.
    zoom = c[2]
    small = (max(1, math.ceil(rh / zoom)), max(1, math.ceil(rw / zoom)))
    layer = _randn((batch, 1, *small), ctx.generator, x.device, x.dtype, mean=c[0], std=c[1])
    # Values below the threshold c[3] (> 0) become 0, the rest are clipped to
    # 1: F.threshold zeroes x <= t, so t is the float just below c[3]. One
    # pass, where a comparison and masked_fill took four times as long.
    threshold = _below(c[3], layer.dtype)
    if ctx.native and x.device.type == "cpu":
        # the same as the three steps below and the resize, without a B×1 reference-grid layer (3× faster)
        layer = _upsample_threshold_shrink(layer, (rh, rw), (height, width), threshold)
    else:
        if small != (rh, rw):
            layer = F.interpolate(layer, size=(rh, rw), mode="bilinear", align_corners=True)
        layer = F.threshold(layer, threshold, 0.0, inplace=True).clamp_max_(1.0)
        if ctx.native:
            layer = _resize(layer, height, width)
    angles = _rand((batch,), ctx.generator, torch.device("cpu"), torch.float64, -135.0, -45.0)
    taps = motion_blur_taps(c[4], c[5], angles)
    if ctx.native:
        # The motion blur, the costly part, runs on the image grid: the
        # thresholded layer is area-averaged first (above, without a B×1 copy
        # of the reference grid) and the line kernel is area-averaged onto the
        # image's pixels (as defocus does).
        layer = _filter_lines(layer, *taps, mode="edge", per_example=ctx.per_example, shrink=ctx.scale)
    else:
        layer = _resize(_filter_lines(layer, *taps, mode="edge", per_example=ctx.per_example), height, width)
    grey = x if channels == 1 else _luma(x)
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, grey * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


def _splat_lines(out: torch.Tensor, index: tuple[torch.Tensor, ...], values: torch.Tensor, weights: torch.Tensor,
                 dy: torch.Tensor, dx: torch.Tensor, map_offset: int = 0) -> torch.Tensor:
    """Draw a line through every seed into ``out`` (``B×M×H×W``): ``out[b, map_offset + k, p + d[t]] += weights[t] · value``.

    ``index`` is ``(b, k, y, x)``, the seeds' positions, and ``values`` their
    brightness; ``dy``/``dx`` are ``B×K×T`` offsets (one line direction per
    map k). Scattering the few seeds is much cheaper than convolving whole
    maps; parts of lines leaving the image are dropped.
    """
    height, width = out.shape[-2:]
    b, k, y, x = index
    ys = y.view(-1, 1) + dy.to(values.device)[b, k]
    xs = x.view(-1, 1) + dx.to(values.device)[b, k]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    contribution = values.view(-1, 1) * weights.to(device=values.device, dtype=values.dtype).view(1, -1)
    target = ((b * out.shape[1] + k + map_offset).view(-1, 1) * height + ys) * width + xs
    out.view(-1).index_put_((target[inside],), contribution[inside], accumulate=True)
    return out


#: The seed draws per map: the worst-case mean plus this many standard deviations plus the slack.
_SEED_MARGIN = 10.0
_SEED_SLACK = 20.0


def _bernoulli_seeds(scale: float, base: torch.Tensor, maps: int,
                    generator: Generator = None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Sparse seeds: pixel ``p`` of each of ``maps`` maps per image is a seed with chance ``scale · base[p]²``.

    ``base`` is ``B×1×H×W`` in [0, 1] and ``scale`` at most 1. Returns the
    seeds' ``(b, k, y, x)`` indices into a ``B×maps×H×W`` map and their
    brightness, uniform on [0.5, 1). The seeds are the independent per-pixel
    Bernoulli draws, sampled without a draw per pixel: in each map the
    candidates of a Bernoulli(c) process with the image's largest chance c
    are placed by geometric gaps along the raster order, and each candidate
    is kept with chance ``scale · base[p]² / c`` (thinning). The uniform that
    decides the keeping, divided by that chance, is again uniform and sets
    the brightness. The number of draws per image is fixed by the worst case
    (``base`` = 1) plus ten standard deviations, and extended in the
    vanishingly rare case that it is not enough; the frost texture makes them
    last, so that an extension cannot move any other draw.

    Example:
        >>> base = torch.full((2, 1, 64, 64), 0.5)
        >>> index, values = _bernoulli_seeds(0.04, base, 3, torch.Generator().manual_seed(0))
        >>> len(index), bool(((values >= 0.5) & (values < 1)).all())
        (4, True)
    """
    batch, _, height, width = base.shape
    n = height * width
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"_bernoulli_seeds needs a scale in [0, 1], got {scale}")
    chance = (scale * base ** 2).reshape(batch, n)
    top = chance.amax(1).to(dtype=torch.float64, device="cpu").clamp_(0.0, 1.0)  # c per image
    log_miss = torch.log1p(-top).view(batch, 1, 1)  # log(1 - c) ≤ 0
    worst = n * scale
    block = math.ceil(worst + _SEED_MARGIN * math.sqrt(worst) + _SEED_SLACK)
    found: list[tuple[torch.Tensor, torch.Tensor]] = []
    last = torch.full((batch, maps, 1), -1.0, dtype=torch.float64)
    while True:
        gaps, keep = _rands([(batch, maps, block), (batch, maps, block)], generator)
        gaps = gaps.to(device="cpu", dtype=torch.float64)
        # trials to the next success: 1 + floor(log(1 - u) / log(1 - c)); none at all where c = 0
        steps = torch.where(log_miss < 0, 1.0 + torch.floor(torch.log1p(-gaps) / log_miss.clamp(max=-1e-300)),
                            torch.full_like(gaps, float(n + 1)))
        positions = last + steps.cumsum(2)
        found.append((positions, keep.to(device="cpu", dtype=torch.float64)))
        last = positions[..., -1:]
        if bool((last >= n).all()):
            break
    positions = torch.cat([f[0] for f in found], 2)
    keep = torch.cat([f[1] for f in found], 2)
    b, k, j = (positions < n).nonzero(as_tuple=True)
    pixel = positions[b, k, j].long()
    here = chance.to(device="cpu", dtype=torch.float64)[b, pixel]
    u = keep[b, k, j] * top[b]  # uniform on [0, c)
    kept = u < here
    b, k, pixel = b[kept], k[kept], pixel[kept]
    values = (0.5 + 0.5 * u[kept] / here[kept]).to(device=base.device, dtype=base.dtype)
    device = base.device
    index = (b.to(device), k.to(device), (pixel // width).to(device), (pixel % width).to(device))
    return index, values


def frost_texture(batch: int, height: int, width: int, channels: int = 3,
                  generator: Generator = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A procedural frost texture (ice crystals on a frosted pane), ``batch×channels×height×width`` in [0, 1].

    It replaces the frost photographs the reference crops, which are not
    ours to ship. Three seeded layers are mixed:

    * a cloudy base: a diamond-square plasma (the fog generator) with slow
      decay, so it is patchy;
    * ice-crystal needles: sparse random seeds drawn out into straight lines,
      long ones (12 % of the shorter side) on three axes 60° apart as in
      hexagonal ice and shorter ones (5 %) on the axes between, the pattern
      turned by a random angle per image; seeds are denser where the base is
      bright, so the crystals cluster like frost ferns, and the needles get a
      soft glow;
    * a faint fine grain.

    Sizes are fractions of the shorter side, so the texture looks the same at
    every image size. The grey level is tinted pale blue and calibrated to
    the photographs (their mean RGB is about (0.57, 0.66, 0.70); the texture's
    is about (0.61, 0.67, 0.71), with a per-channel standard deviation of
    0.12–0.15). Grayscale output is the luma. All randomness comes from
    ``generator``; an :class:`~stabletrain.seeding.ExampleRNG` (one stream
    per texture) makes texture ``i`` depend on stream ``i`` only.

    Example:
        >>> t = frost_texture(2, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> t.shape, bool(t.min() >= 0 and t.max() <= 1)
        (torch.Size([2, 3, 32, 32]), True)
    """
    if isinstance(generator, ExampleRNG) and len(generator) != batch:
        raise StableTrainError(f"frost_texture needs one random stream per texture: {batch} textures, "
                               f"{len(generator)} streams")
    device = torch.device(device)
    side = min(height, width)
    base = _plasma_fractal(batch, _next_power_of_two(max(height, width)), 1.6, generator, device, dtype)
    base = base[:, None, :height, :width]
    # Ice grows along three axes 60° apart: long needles on those, shorter
    # side needles on the three axes in between, all turned by a random angle.
    turn = _rand((batch, 1), generator, torch.device("cpu"), torch.float64, 0.0, math.pi)
    grain = _randn((batch, 1, height, width), generator, device, dtype)
    layers = []
    for fraction, offset, density in ((0.12, 0.0, 0.05), (0.05, math.pi / 6, 0.05)):
        length = max(3, round(fraction * side))
        half = length // 2
        t = torch.arange(-half, half + 1, dtype=torch.float64)
        weights = 1.0 - 0.6 * t.abs() / max(half, 1)  # needles fade towards their tips
        theta = (turn + offset + torch.arange(3, dtype=torch.float64) * math.pi / 3).view(-1, 1)
        dy = torch.round(t * torch.sin(theta)).long().view(batch, 3, -1)
        dx = torch.round(t * torch.cos(theta)).long().view(batch, 3, -1)
        # Seed density ∝ 1/length keeps the covered area independent of the
        # image size; ∝ base² clusters the crystals in the bright patches.
        # The seeds are drawn last, because their number of draws can vary.
        index, values = _bernoulli_seeds(density / length * 3.0, base, 3, generator)
        layers.append((index, values, weights, dy, dx))

    # Both needle layers, three axes each, are drawn into the six maps of one buffer.
    needles = torch.zeros(batch, 6, height, width, device=device, dtype=dtype)
    for layer, (index, values, weights, dy, dx) in enumerate(layers):
        _splat_lines(needles, index, values, weights, dy, dx, map_offset=3 * layer)
    crystals = _gaussian_blur(needles.amax(1, keepdim=True).clamp_(0.0, 1.0), 0.5)
    glow = _gaussian_blur(crystals, 0.02 * side)  # the soft halo of a frosted pane
    grain = _gaussian_blur(grain, 0.7)
    grey = (0.47 + 0.30 * base + 0.45 * crystals + 0.6 * glow + 0.12 * grain).clamp_(0.0, 1.0)
    tint = torch.tensor((0.86, 0.95, 1.0), device=device, dtype=dtype).view(1, 3, 1, 1)
    rgb = (grey * tint).clamp_(0.0, 1.0)
    return rgb if channels == 3 else _luma(rgb)


def _frost(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    texture = frost_texture(batch, height, width, channels, ctx.generator, x.device, x.dtype)
    return c[0] * x + c[1] * texture


def _fog(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    batch, _, height, width = x.shape
    fog = _plasma_fractal(batch, _next_power_of_two(max(height, width)), c[1], ctx.generator, x.device, x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c[0] * fog[:, None, :height, :width]) * max_val / (max_val + c[0])


def _brightness(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    if x.shape[1] == 1:
        return x + c
    # Adding c to V of HSV keeps H and S, which scales the RGB triple by V'/V;
    # black (V = 0, S = 0) becomes grey V'.
    value = x.amax(1, keepdim=True)
    new_value = (value + c).clamp(0.0, 1.0)
    return torch.where(value > 0, x * new_value / value.clamp_min(1e-12), new_value.expand_as(x))


def _truncated_distance(edges: torch.Tensor, limit: float, dtype: torch.dtype) -> torch.Tensor:
    """Euclidean distance to the nearest ``True`` pixel, capped at ``limit`` (exact below the cap).

    The vertical distance to the nearest edge in each column comes from two
    running maxima of edge row indices; the horizontal min-plus pass
    ``min_k g(x + k) + k²`` only needs ``|k| <= limit`` because of the cap.
    """
    reach = math.ceil(limit)
    height = edges.shape[-2]
    rows = torch.arange(height, device=edges.device, dtype=dtype).view(-1, 1)
    never = torch.tensor(-4.0 * height - 4.0 * reach, device=edges.device, dtype=dtype)
    above = rows - torch.where(edges, rows, never).cummax(dim=-2).values
    below = (rows - torch.where(edges.flip(-2), rows, never).cummax(dim=-2).values).flip(-2)
    g = torch.minimum(above, below).clamp_(max=reach + 1) ** 2
    best = g.clone()
    for k in range(1, reach + 1):
        torch.minimum(best[..., :-k], g[..., k:] + k * k, out=best[..., :-k])
        torch.minimum(best[..., k:], g[..., :-k] + k * k, out=best[..., k:])
    return best.sqrt_().clamp_(max=limit)


def _equalize_hist(v: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image, on integer-valued float images in 0..255."""
    batch = v.shape[0]
    flat = v.reshape(batch, -1).long().clamp_(0, 255)
    # float32 like OpenCV's own scale factor (counts stay exact below 2²⁴ pixels)
    hist = torch.zeros(batch, 256, device=v.device, dtype=torch.float32)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    cdf = hist.cumsum(1)
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)
    first_count = hist.gather(1, first)
    total = float(flat.shape[1])
    # a correctly rounded float32 quotient, as OpenCV's (torch divides by multiplying with the reciprocal)
    scale = (255.0 / (total - first_count).clamp_min(1.0).double()).float()
    lut = torch.round((cdf - first_count) * scale).clamp_(0, 255)
    identity = torch.arange(256, device=v.device, dtype=torch.float32).expand(batch, -1)
    lut = torch.where(first_count == total, identity, lut)  # a constant image is left as is
    return lut.gather(1, flat).to(v.dtype).view_as(v)


def _spatter_layer(batch: int, grid: tuple[int, int], unit: float, c: tuple, generator: Generator,
                   device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The water light or the mud cover, ``batch×1×grid``; ``unit`` = grid pixels per reference pixel."""
    # Off the reference grid every length is multiplied by `unit`, and the
    # noise by the ratio of the blurs' Σg², so that the smoothed liquid has the
    # reference's mean and spread and the threshold wets the same fraction.
    spread = c[1] * _kernel_energy(c[2]) / _kernel_energy(c[2] * unit)
    liquid = _randn((batch, 1, *grid), generator, device, dtype, mean=c[0], std=spread)
    liquid = _gaussian_blur(liquid, c[2] * unit)
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    if c[5] == 0:  # water drops: pale turquoise, brighter towards one side of each drop
        liquid8 = torch.floor(liquid.clamp(0.0, 1.0) * 255)
        wet = liquid8 > 0
        # Canny on this layer finds the rims of the drops (the steps there are
        # far above its thresholds, the smooth interior far below): wet pixels
        # with a dry 4-neighbour, a one-pixel line like Canny's.
        dry = ~_pad(wet, 1, 1, 1, 1, "edge")
        rims = wet & (dry[..., :-2, 1:-1] | dry[..., 2:, 1:-1] | dry[..., 1:-1, :-2] | dry[..., 1:-1, 2:])
        # (at least 3 px: on a coarse grid a cap under a pixel would floor the
        # whole distance map to zero and leave no light)
        dist = _truncated_distance(rims, 20.0 if unit == 1.0 else max(20.0 * unit, 3.0), dtype)
        box = torch.full((3, 3), 1.0 / 9.0, dtype=torch.float64)
        dist = torch.floor(_filter2d(dist, box))
        dist = _equalize_hist(dist)
        emboss = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
        dist = torch.round(_filter2d(dist, emboss)).clamp_(0, 255)
        dist = _filter2d(dist, box)
        m = liquid8 * dist
        return m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) * c[4]
    # mud: opaque brown blotches
    m = _gaussian_blur((liquid > c[3]).to(dtype), c[4] * unit)
    return torch.where(m < 0.8, torch.zeros_like(m), m)


_CALIBRATION_IMAGES = 16


@lru_cache(maxsize=128)
def _spatter_gain(c: tuple, reference_grid: tuple[int, int], grid: tuple[int, int], unit: float) -> float:
    """Mean of the reference-grid layer over the mean of the native one, from a fixed private seed."""
    # Drops and blotches a few reference pixels wide are under a pixel on
    # the image grid, so their shapes, and with them the layer's mean, cannot
    # follow the reference there. The native layer is scaled to the
    # reference's mean light (water) or mean cover (mud).
    generator = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    reference = _spatter_layer(_CALIBRATION_IMAGES, reference_grid, 1.0, c, generator, cpu, torch.float32)
    native = _spatter_layer(_CALIBRATION_IMAGES, grid, unit, c, generator, cpu, torch.float32)
    return float(reference.mean() / native.mean().clamp_min(1e-12))


def _spatter(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    device, dtype = x.device, x.dtype
    rh, rw = ctx.reference_grid(height, width)
    if ctx.native:
        m = _spatter_layer(batch, (height, width), ctx.scale, c, ctx.generator, device, dtype)
        m = m * _spatter_gain(tuple(c), (rh, rw), (height, width), round(ctx.scale, 9))
    else:
        m = _resize(_spatter_layer(batch, (rh, rw), 1.0, c, ctx.generator, device, dtype), height, width)
    if c[5] == 0:
        water = torch.tensor((175 / 255, 238 / 255, 238 / 255), device=device, dtype=dtype).view(1, 3, 1, 1)
        if channels == 3:
            return x + m * water
        return x + _luma((m * water).clamp(0.0, 1.0))
    mud = _colour((63 / 255, 42 / 255, 20 / 255), channels, device, dtype)
    return x * (1 - m) + mud * m
