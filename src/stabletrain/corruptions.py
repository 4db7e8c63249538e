"""The common corruptions of Hendrycks & Dietterich (ICLR 2019), batched and seeded.

Fifteen corruptions (:data:`CORRUPTIONS`) make up ImageNet-C and CIFAR-10-C;
four more (:data:`HELD_OUT`) are kept for validation. Each has five
severities and two published parameter sets:

* ``"imagenet"`` — the ImageNet-C parameters as released in
  ``bethgelab/imagecorruptions`` 1.1.2, defined for 224-pixel images;
* ``"cifar10"`` — the milder CIFAR-10-C parameters of
  ``hendrycks/robustness`` (``ImageNet-C/create_c/make_cifar_c.py``),
  defined for 32-pixel images.

Every corruption is a :class:`Corruption`, a
:class:`~stabletrain.distortions.Distortion` whose spec is ``name-severity``
for the ImageNet-C set and ``c10/name-severity`` for the CIFAR-10-C set, so
both parse with :func:`stabletrain.distortions.parse_distortion`. A corruption
maps a ``B×C×H×W`` float batch in [0, 1] (C = 1 or 3, H and W at least 8) to
a new batch of the same shape, dtype and device, in [0, 1]; all randomness
comes from the ``torch.Generator`` it is given.

Spatial parameters (blur radii, layer textures, displacement fields) are in
pixels of the set's reference resolution and are scaled by
``min(H, W) / reference side``, so a corruption looks the same at every image
size and matches the reference exactly in scale at 224 px (ImageNet-C) or 32 px
(CIFAR-10-C). ``docs/corruptions.md`` lists the tables and every departure
from the reference code.

>>> x = torch.rand(2, 3, 32, 32)
>>> g = torch.Generator().manual_seed(0)
>>> y = corrupt(x, "gaussian_noise", 3, generator=g)
>>> y.shape, bool(y.min() >= 0 and y.max() <= 1)
(torch.Size([2, 3, 32, 32]), True)
>>> from stabletrain.distortions import parse_distortion
>>> parse_distortion("c10/fog-2")
Corruption('c10/fog-2')
>>> len(corruption_suite("cifar10")), len(corruption_suite(names=HELD_OUT, severities=(1, 5)))
(75, 8)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .checks import StableTrainError
from .distortions import JPEG, Distortion, register_distortion
from .perturbations import randn_like

__all__ = [
    "CORRUPTIONS",
    "HELD_OUT",
    "LAYER_RESOLUTIONS",
    "PARAMETER_SETS",
    "REFERENCE_SIDE",
    "Corruption",
    "corrupt",
    "corruption_suite",
    "defocus_kernel",
    "frost_texture",
    "motion_blur_taps",
]

#: The fifteen corruptions of ImageNet-C / CIFAR-10-C, in the paper's order.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The four held-out (validation) corruptions.
HELD_OUT: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
_ALL: tuple[str, ...] = CORRUPTIONS + HELD_OUT

#: The parameter sets; the CIFAR-10-C set may also be called ``"c10"``.
PARAMETER_SETS: tuple[str, ...] = ("imagenet", "cifar10")
#: The image side (pixels) each parameter set was written for.
REFERENCE_SIDE: dict[str, int] = {"imagenet": 224, "cifar10": 32}
#: Where snow, spatter and elastic_transform build their random layers when the
#: image is smaller than the parameter set's reference side: ``"reference"``
#: (default) on the reference grid, then resized; ``"native"`` on the image's
#: own grid, with parameters converted so the layer keeps the reference's
#: statistics (see ``docs/corruptions.md``). The two are identical when the
#: image is at least the reference side.
LAYER_RESOLUTIONS: tuple[str, ...] = ("reference", "native")


def _aranges(spec: Sequence[tuple[float, float]]) -> tuple[tuple[float, ...], ...]:
    # np.arange with a float step is what the reference uses, including its
    # float-rounding quirks (arange(1, 1.11, 0.01) has 12 entries, not 11).
    return tuple(tuple(float(v) for v in np.arange(1.0, stop, step)) for stop, step in spec)


# Each row lists severities 1..5. Pixel-valued entries are in pixels of the
# set's reference side (224 for ImageNet-C, 32 for CIFAR-10-C).
_PARAMS: dict[str, dict[str, tuple]] = {
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": _aranges(((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))),
        "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                 (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        # imagecorruptions' elastic: alpha; sigma = 0.01·side and max shift = 0.005·side.
        "elastic_transform": (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0),
                    (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
    "cifar10": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "zoom_blur": _aranges(((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01))),
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        # make_cifar_c's elastic with IMSIZE = 32: (alpha, sigma, affine shift), in pixels.
        "elastic_transform": ((32 * 0, 32 * 0, 32 * 0.08),
                              (32 * 0.05, 32 * 0.2, 32 * 0.07),
                              (32 * 0.08, 32 * 0.06, 32 * 0.06),
                              (32 * 0.1, 32 * 0.04, 32 * 0.05),
                              (32 * 0.1, 32 * 0.03, 32 * 0.03)),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
        "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    },
}

#: ITU-R 601 luma weights, as in the reference's ``rgb2gray`` and OpenCV's RGB2GRAY.
_LUMA = (0.2989, 0.5870, 0.1140)
_MIN_SIDE = 8


# --------------------------------------------------------------------------- randomness


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    # Drawn on the generator's device and moved, so a seed means the same
    # numbers whether the batch is on the CPU or a GPU.
    u = torch.rand(tuple(shape), generator=generator, device=_draw_device(generator), dtype=torch.float32)
    if (low, high) != (0.0, 1.0):
        u = u.mul_(high - low).add_(low)  # in place: the same float32 operations as low + (high - low)·u
    return u.to(device=device, dtype=dtype)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    z = torch.randn(tuple(shape), generator=generator, device=_draw_device(generator), dtype=torch.float32)
    if (mean, std) != (0.0, 1.0):
        z = z.mul_(std).add_(mean)  # in place: the same float32 operations as mean + std·z
    return z.to(device=device, dtype=dtype)


def _randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    return torch.randint(low, high, tuple(shape), generator=generator, device=_draw_device(generator)).to(device)


# --------------------------------------------------------------------------- filtering helpers


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    # Index arithmetic instead of F.pad: it works for pads wider than the
    # image (tiny images, long kernels) and covers all three border rules the
    # reference libraries use.
    idx = torch.arange(-before, n + after, device=device)
    if mode == "edge":  # skimage/scipy 'nearest', ImageMagick's default
        return idx.clamp(0, n - 1)
    if mode == "symmetric":  # scipy 'reflect': d c b a | a b c d | d c b a
        idx = torch.remainder(idx, 2 * n)
        return torch.where(idx >= n, 2 * n - 1 - idx, idx)
    if mode == "reflect101":  # OpenCV's default border: d c b | a b c d | c b a
        if n == 1:
            return torch.zeros_like(idx)
        idx = torch.remainder(idx, 2 * (n - 1))
        return torch.where(idx >= n, 2 * (n - 1) - idx, idx)
    raise ValueError(f"unknown pad mode {mode!r}")


def _pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    height, width = x.shape[-2:]
    if x.is_floating_point() and x.ndim == 4:
        # F.pad is faster where it applies: 'replicate' is our 'edge', and
        # 'reflect' our 'reflect101' while the pad is narrower than the image.
        if mode == "edge":
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        if mode == "reflect101" and max(top, bottom) < height and max(left, right) < width:
            return F.pad(x, (left, right, top, bottom), mode="reflect")
    if top or bottom:
        x = x.index_select(-2, _pad_index(height, top, bottom, mode, x.device))
    if left or right:
        x = x.index_select(-1, _pad_index(width, left, right, mode, x.device))
    return x


def _gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    # scipy.ndimage / skimage.filters.gaussian: radius int(truncate·σ + 0.5), sampled and normalized.
    radius = max(int(truncate * sigma + 0.5), 0)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


@lru_cache(maxsize=256)
def _gaussian_matrix(n: int, sigma: float, truncate: float, mode: str) -> torch.Tensor:
    # The 1-D filter with its border rule folded in, as an n×n matrix: the blur
    # is then two matrix products, which BLAS runs several times faster than
    # a depthwise conv2d with long 1-D kernels on the CPU.
    kernel = _gaussian_kernel1d(sigma, truncate)
    radius = kernel.numel() // 2
    source = _pad_index(n, radius, radius, mode, torch.device("cpu"))
    rows = torch.arange(n)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for t in range(kernel.numel()):
        matrix.index_put_((rows, source[rows + t]), kernel[t].expand(n), accumulate=True)
    return matrix


def _gaussian_blur(x: torch.Tensor, sigma_y: float, sigma_x: float | None = None, truncate: float = 4.0,
                   mode: str = "edge") -> torch.Tensor:
    """Separable Gaussian blur of each channel, like ``skimage.filters.gaussian`` (mode ``'nearest'``)."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    height, width = x.shape[-2:]
    if sigma_y > 0 and int(truncate * sigma_y + 0.5) > 0:
        x = torch.matmul(_gaussian_matrix(height, float(sigma_y), truncate, mode).to(x.device, x.dtype), x)
    if sigma_x > 0 and int(truncate * sigma_x + 0.5) > 0:
        x = torch.matmul(x, _gaussian_matrix(width, float(sigma_x), truncate, mode).to(x.device, x.dtype).T)
    return x


@lru_cache(maxsize=256)
def _fft_length(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= n."""
    best = 1 << (n - 1).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            two = three
            while two < n:
                two *= 2
            best = min(best, two)
            three *= 3
        five *= 5
    return best


def _filter_per_image(x: torch.Tensor, kernels: torch.Tensor, mode: str = "reflect101") -> torch.Tensor:
    """Correlate every channel of image ``b`` with ``kernels[b]`` (odd-sized; ``cv2.filter2D`` semantics).

    ``kernels`` is ``B×kh×kw`` (each image its own kernel, e.g. its own motion
    angle) or ``1×kh×kw`` (one kernel for all). Kernels with few non-zero taps
    (3×3 filters, short motion lines) are applied as a weighted sum of shifted
    views of the padded batch; larger ones (defocus at 224 px is 25×25, a
    CIFAR-10-C motion line at 224 px spans 127 pixels) by FFT, where the
    circular wrap-around only touches the padding that is cropped away. On
    the CPU both are several times faster than a depthwise ``conv2d``.
    ``mode`` is a border rule of :func:`_pad` or ``"zero"``.
    """
    height, width = x.shape[-2:]
    kh, kw = kernels.shape[-2:]
    kernels = kernels.to(device=x.device, dtype=x.dtype)
    if mode == "zero":
        xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    else:
        xp = _pad(x, kh // 2, kh // 2, kw // 2, kw // 2, mode)
    taps = (kernels != 0).any(0).nonzero().tolist()
    if len(taps) <= 25:
        out = torch.zeros_like(x)
        for a, b in taps:
            weight = kernels[:, a, b].view(-1, 1, 1, 1)
            out += weight * xp[..., a:a + height, b:b + width]
        return out
    # Transform lengths with only factors 2, 3 and 5 are several times faster;
    # the extra zeros sit beyond the padding and never reach the output.
    size = (_fft_length(xp.shape[-2]), _fft_length(xp.shape[-1]))
    spectrum = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(kernels.flip(-2, -1), s=size).unsqueeze(1)
    return torch.fft.irfft2(spectrum, s=size)[..., kh - 1:kh - 1 + height, kw - 1:kw - 1 + width]


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect101") -> torch.Tensor:
    """Correlate each channel with one odd-sized 2-D ``kernel``."""
    return _filter_per_image(x, kernel.unsqueeze(0), mode)


def _resize(layer: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if layer.shape[-2:] == (height, width):
        return layer
    smaller = height < layer.shape[-2] or width < layer.shape[-1]
    return F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False, antialias=smaller)


@lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """:func:`_resize` along one axis as an ``n_out×n_in`` float64 matrix (it is separable)."""
    # Resized along the width: torch's antialiased path on n×1 columns gives
    # other weights than its 2-D resize, while 1×n rows give the same ones.
    rows = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, 1, n_in)
    return _resize(rows, 1, n_out).view(n_in, n_out).T.contiguous()


def _kernel_energy(sigma: float, truncate: float = 4.0) -> float:
    """``Σ g²`` of the sampled 1-D Gaussian; white noise of std 1 blurred in 2-D has std ``Σ g²``."""
    if sigma <= 0 or int(truncate * sigma + 0.5) == 0:
        return 1.0
    return float((_gaussian_kernel1d(sigma, truncate) ** 2).sum())


def _luma(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _colour(rgb: Sequence[float], channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    colour = torch.tensor(rgb, device=device, dtype=dtype).view(1, 3, 1, 1)
    return colour if channels == 3 else _luma(colour)


# --------------------------------------------------------------------------- motion (line) kernels


def motion_blur_taps(radius: float, sigma: float,
                     angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The line kernel of ImageMagick's ``-motion-blur``, as weights and integer pixel offsets.

    The kernel has ``2·ceil(radius) + 1`` taps with one-sided Gaussian
    weights ``exp(-i²/2σ²)`` (normalized to sum to one), placed at
    ``i·(sin θ, cos θ)`` rounded half down, exactly as
    ``MagickMotionBlurImage`` and imagecorruptions' re-implementation place
    them. Returns ``(weights (T,), dy (N, T), dx (N, T))`` for ``N`` angles in
    degrees; the blurred pixel ``(h, w)`` is ``Σ_t weights[t] · x[h + dy[t], w + dx[t]]``,
    with the image's edge pixels repeated outside it.

    Example:
        >>> w, dy, dx = motion_blur_taps(2, 1.0, torch.tensor([0.0]))
        >>> round(float(w.sum()), 6), dy.tolist(), dx.tolist()
        (1.0, [[0, 0, 0, 0, 0]], [[0, 1, 2, 3, 4]])
    """
    width = 2 * math.ceil(radius - 1e-9) + 1 if radius > 0 else 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i ** 2) / (2.0 * sigma ** 2))
    weights = weights / weights.sum()
    theta = torch.deg2rad(angles.detach().to(device="cpu", dtype=torch.float64)).view(-1, 1)
    dy = torch.ceil(i * torch.sin(theta) - 0.5).long()
    dx = torch.ceil(i * torch.cos(theta) - 0.5).long()
    return weights, dy, dx


def _taps_to_kernels(weights: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Dense, odd-sized, centred ``N×kh×kw`` kernels holding ``weights[t]`` at ``(dy[n, t], dx[n, t])``."""
    # Taps below 1e-7 of the largest change no output by a representable amount
    # but would widen the kernel (a long Gaussian tail at large scales).
    keep = weights >= 1e-7 * float(weights.max())
    weights, dy, dx = weights[keep], dy[:, keep], dx[:, keep]
    py, px = int(dy.abs().max()), int(dx.abs().max())
    count = dy.shape[0]
    kernels = torch.zeros(count, 2 * py + 1, 2 * px + 1, dtype=torch.float64)
    index = torch.arange(count).view(-1, 1).expand_as(dy)
    kernels.index_put_((index, dy + py, dx + px), weights.expand_as(dy).to(torch.float64), accumulate=True)
    return kernels


# --------------------------------------------------------------------------- textures


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def _plasma_fractal(batch: int, mapsize: int, decay: float, generator: torch.Generator | None,
                    device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], ``batch×mapsize×mapsize``, as in the reference's fog."""
    maps = torch.zeros(batch, mapsize, mapsize, device=device, dtype=dtype)
    step, wibble = mapsize, 100.0

    def wibbled(mean: torch.Tensor) -> torch.Tensor:
        # The reference adds wibble·U(-wibble, wibble), an amplitude of wibble².
        return mean / 4 + wibble * _rand(mean.shape, generator, device, dtype, -wibble, wibble)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled(top)
        step //= 2
        wibble /= decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = maps - low
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def _splat_lines(seeds: torch.Tensor, weights: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Draw a line through every non-zero seed: ``out[p + d[t]] += weights[t] · seeds[p]``.

    ``seeds`` is ``B×K×H×W`` and mostly zero, ``dy``/``dx`` are ``B×K×T``
    offsets (one line direction per map). Scattering the few seeds is much
    cheaper than convolving whole maps; parts of lines leaving the image are
    dropped.
    """
    batch, maps, height, width = seeds.shape
    b, k, y, x = seeds.nonzero(as_tuple=True)
    values = seeds[b, k, y, x]
    ys = y.view(-1, 1) + dy.to(seeds.device)[b, k]
    xs = x.view(-1, 1) + dx.to(seeds.device)[b, k]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    contribution = values.view(-1, 1) * weights.to(device=seeds.device, dtype=seeds.dtype).view(1, -1)
    target = ((b * maps + k).view(-1, 1) * height + ys) * width + xs
    out = torch.zeros(batch * maps * height * width, device=seeds.device, dtype=seeds.dtype)
    out.index_put_((target[inside],), contribution[inside], accumulate=True)
    return out.view(batch, maps, height, width)


def frost_texture(batch: int, height: int, width: int, channels: int = 3,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
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
    0.12–0.15). Grayscale output is the luma.

    Example:
        >>> t = frost_texture(2, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> t.shape, bool(t.min() >= 0 and t.max() <= 1)
        (torch.Size([2, 3, 32, 32]), True)
    """
    device = torch.device(device)
    side = min(height, width)
    base = _plasma_fractal(batch, _next_power_of_two(max(height, width)), 1.6, generator, device, dtype)
    base = base[:, None, :height, :width]
    # Ice grows along three axes 60° apart: long needles on those, shorter
    # side needles on the three axes in between, all turned by a random angle.
    turn = _rand((batch, 1), generator, torch.device("cpu"), torch.float64, 0.0, math.pi)
    layers = []
    for fraction, offset, density in ((0.12, 0.0, 0.05), (0.05, math.pi / 6, 0.05)):
        length = max(3, round(fraction * side))
        half = length // 2
        t = torch.arange(-half, half + 1, dtype=torch.float64)
        weights = 1.0 - 0.6 * t.abs() / max(half, 1)  # needles fade towards their tips
        theta = (turn + offset + torch.arange(3, dtype=torch.float64) * math.pi / 3).view(-1, 1)
        dy = torch.round(t * torch.sin(theta)).long()
        dx = torch.round(t * torch.cos(theta)).long()
        # Seed density ∝ 1/length keeps the covered area independent of the
        # image size; ∝ base² clusters the crystals in the bright patches.
        chance = density / length * 3.0 * base ** 2
        # One draw u gives both: a seed where u < chance, and given that,
        # u / chance is uniform, so it also sets the needle's brightness.
        u = _rand((batch, 3, height, width), generator, device, dtype)
        seeds = torch.where(u < chance, 0.5 + 0.5 * u / chance, torch.zeros_like(u))
        layers.append(_splat_lines(seeds, weights, dy.view(batch, 3, -1), dx.view(batch, 3, -1)))
    crystals = torch.cat(layers, 1).amax(1, keepdim=True).clamp_(0.0, 1.0)
    crystals = _gaussian_blur(crystals, 0.5)
    glow = _gaussian_blur(crystals, 0.02 * side)  # the soft halo of a frosted pane

    grain = _gaussian_blur(_randn((batch, 1, height, width), generator, device, dtype), 0.7)
    grey = (0.47 + 0.30 * base + 0.45 * crystals + 0.6 * glow + 0.12 * grain).clamp_(0.0, 1.0)
    tint = torch.tensor((0.86, 0.95, 1.0), device=device, dtype=dtype).view(1, 3, 1, 1)
    rgb = (grey * tint).clamp_(0.0, 1.0)
    return rgb if channels == 3 else _luma(rgb)


# --------------------------------------------------------------------------- the corruptions


@dataclass
class _Context:
    parameter_set: str
    scale: float  # min(H, W) / reference side
    generator: torch.Generator | None
    layer_resolution: str = "reference"

    @property
    def native(self) -> bool:
        """Build layers on the image grid: asked for, and the reference grid would be larger."""
        return self.layer_resolution == "native" and self.scale < 1.0

    def reference_grid(self, height: int, width: int) -> tuple[int, int]:
        """The image size in reference pixels: where fixed-resolution layers are generated."""
        return max(1, round(height / self.scale)), max(1, round(width / self.scale))


def _gaussian_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return x + c * randn_like(x, ctx.generator)


def _shot_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    rates = (x * c).to(_draw_device(ctx.generator))
    return torch.poisson(rates, generator=ctx.generator).to(x.device) / c


def _impulse_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    # skimage.util.random_noise(mode='s&p'): every value (channels independently)
    # is replaced with probability `amount`, by 1 or 0 with equal odds.
    flipped = _rand(x.shape, ctx.generator, x.device, x.dtype) < c
    salt = _rand(x.shape, ctx.generator, x.device, x.dtype) < 0.5
    out = torch.where(flipped & salt, torch.ones_like(x), x)
    return torch.where(flipped & ~salt, torch.zeros_like(x), out)


def _speckle_noise(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return x + x * c * randn_like(x, ctx.generator)


def _gaussian_blur_corruption(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    return _gaussian_blur(x, c * ctx.scale)


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


@lru_cache(maxsize=64)
def _shrink_matrix(size: int, scale: float) -> torch.Tensor:
    # Pixel u of a centred reference-resolution kernel covers [u - ½, u + ½]
    # reference pixels, i.e. [(u - ½)·s, (u + ½)·s] image pixels; A[i, u] is the
    # share of it that falls in image pixel i, so A·K·Aᵀ keeps the kernel's mass.
    centre = size // 2
    u = torch.arange(size, dtype=torch.float64) - centre
    reach = max(math.ceil((centre + 0.5) * scale - 0.5), 0)
    i = torch.arange(-reach, reach + 1, dtype=torch.float64).view(-1, 1)
    low = torch.maximum(i - 0.5, (u - 0.5) * scale)
    high = torch.minimum(i + 0.5, (u + 0.5) * scale)
    return (high - low).clamp_min(0.0) / scale


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
    return _filter2d(x, _defocus_kernel(float(c[0]), float(c[1]), round(ctx.scale, 9)), "reflect101")


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
    kernels = _taps_to_kernels(*motion_blur_taps(c[0] * ctx.scale, c[1] * ctx.scale, angles))
    return _filter_per_image(x, kernels, mode="edge")


def _zoom_blur(x: torch.Tensor, factors: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = x.clone()
    for z in factors:
        # Zoom about the image centre: each output pixel samples the input 1/z
        # of the way from the centre.
        theta = torch.tensor([[[1.0 / z, 0.0, 0.0], [0.0, 1.0 / z, 0.0]]], device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [1, channels, height, width], align_corners=False).expand(batch, -1, -1, -1)
        out += F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out / (len(factors) + 1)


def _shrink_kernels(kernels: torch.Tensor, scale: float) -> torch.Tensor:
    """Area-average centred ``N×kh×kw`` kernels onto a grid ``scale`` (< 1) times as fine; each sums to one."""
    rows = _shrink_matrix(kernels.shape[-2], scale)
    cols = _shrink_matrix(kernels.shape[-1], scale)
    shrunk = rows @ kernels @ cols.T
    return shrunk / shrunk.sum(dim=(-2, -1), keepdim=True)


def _snow(x: torch.Tensor, c: tuple, ctx: _Context) -> torch.Tensor:
    batch, channels, height, width = x.shape
    rh, rw = ctx.reference_grid(height, width)
    # The flake layer is made at the reference resolution, where its
    # parameters are defined: noise on a grid `zoom` times coarser, enlarged,
    # thresholded.
    zoom = c[2]
    small = (max(1, math.ceil(rh / zoom)), max(1, math.ceil(rw / zoom)))
    layer = _randn((batch, 1, *small), ctx.generator, x.device, x.dtype, mean=c[0], std=c[1])
    if small != (rh, rw):
        layer = F.interpolate(layer, size=(rh, rw), mode="bilinear", align_corners=True)
    layer = layer.masked_fill_(layer < c[3], 0.0).clamp_(0.0, 1.0)
    angles = _rand((batch,), ctx.generator, torch.device("cpu"), torch.float64, -135.0, -45.0)
    kernels = _taps_to_kernels(*motion_blur_taps(c[4], c[5], angles))
    if ctx.native:
        # The motion blur, the costly part, runs on the image grid: the
        # thresholded layer is area-averaged first and the line kernel is
        # area-averaged onto the image's pixels (as defocus does).
        layer = _filter_per_image(_resize(layer, height, width), _shrink_kernels(kernels, ctx.scale), mode="edge")
    else:
        layer = _resize(_filter_per_image(layer, kernels, mode="edge"), height, width)
    grey = x if channels == 1 else _luma(x)
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, grey * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


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


def _contrast(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as the reference
    return (x - means) * c + means


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


def _jpeg_compression(x: torch.Tensor, c: int, ctx: _Context) -> torch.Tensor:
    return JPEG(int(c)).apply(x, None)


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


def _pixelate(x: torch.Tensor, c: float, ctx: _Context) -> torch.Tensor:
    height, width = x.shape[-2:]
    small_h, small_w = max(1, int(height * c)), max(1, int(width * c))
    rows = _box_matrix(height, small_h).to(device=x.device, dtype=x.dtype)
    cols = _box_matrix(width, small_w).to(device=x.device, dtype=x.dtype)
    small = torch.matmul(torch.matmul(rows, x), cols.T)
    # imagecorruptions enlarges with NEAREST, make_cifar_c with BOX.
    nearest = ctx.parameter_set == "imagenet"
    up_rows = _upscale_index(small_h, height, nearest).to(x.device)
    up_cols = _upscale_index(small_w, width, nearest).to(x.device)
    return small.index_select(-2, up_rows).index_select(-1, up_cols)


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


def _spatter_layer(batch: int, grid: tuple[int, int], unit: float, c: tuple, generator: torch.Generator | None,
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


_IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, object, _Context], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur_corruption,
    "spatter": _spatter,
    "saturate": _saturate,
}


# --------------------------------------------------------------------------- public API


def _check_parameter_set(parameter_set: str) -> str:
    key = parameter_set.strip().lower() if isinstance(parameter_set, str) else parameter_set
    if key == "c10":
        key = "cifar10"
    if key not in PARAMETER_SETS:
        raise StableTrainError(
            f"unknown corruption parameter set {parameter_set!r}; known: {', '.join(PARAMETER_SETS)}")
    return key


def _check_layer_resolution(layer_resolution: str) -> str:
    if layer_resolution not in LAYER_RESOLUTIONS:
        raise StableTrainError(f"unknown layer resolution {layer_resolution!r}; "
                               f"known: {', '.join(LAYER_RESOLUTIONS)}")
    return layer_resolution


def _check_name(name: str) -> str:
    if name not in _IMPLEMENTATIONS:
        raise StableTrainError(f"unknown corruption {name!r}; known corruptions: {', '.join(_ALL)}")
    return name


def _check_severity(severity: object) -> int:
    ok = (isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)) or (
        isinstance(severity, float) and severity.is_integer())
    if not ok or not 1 <= int(severity) <= 5:
        raise StableTrainError(f"corruption severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


class Corruption(Distortion):
    """One common corruption at one severity, from the ImageNet-C or the CIFAR-10-C table.

    Args:
        name: one of :data:`CORRUPTIONS` or :data:`HELD_OUT`.
        severity: an integer in 1..5.
        parameter_set: ``"imagenet"`` (default) or ``"cifar10"`` (alias ``"c10"``).
        layer_resolution: where ``snow``, ``spatter`` and ``elastic_transform``
            build their random layers on images smaller than the reference
            side: ``"reference"`` (default; on the reference grid, then
            resized) or ``"native"`` (on the image grid, with the layer's
            statistics matched; many times faster on small images). See
            :data:`LAYER_RESOLUTIONS`.

    The spec (and family) is ``name`` for the ImageNet-C set and
    ``c10/name`` for the CIFAR-10-C set, with the severity as parameter; the
    layer resolution is not part of the spec.

    Example:
        >>> c = Corruption("zoom_blur", 2, "cifar10")
        >>> c.spec, c.severity, len(c.parameters)
        ('c10/zoom_blur-2', 2, 12)
        >>> c(torch.full((1, 3, 16, 16), 0.5)).shape
        torch.Size([1, 3, 16, 16])
        >>> Corruption("snow", 3, layer_resolution="native")
        Corruption('snow-3', layer_resolution='native')
    """

    stronger_when_larger = True

    def __init__(self, name: str, severity: int, parameter_set: str = "imagenet",
                 layer_resolution: str = "reference") -> None:
        self.name = _check_name(name)
        self.parameter_set = _check_parameter_set(parameter_set)
        self.layer_resolution = _check_layer_resolution(layer_resolution)
        self.family = name if self.parameter_set == "imagenet" else f"c10/{name}"
        super().__init__(_check_severity(severity))

    @property
    def severity(self) -> int:
        return int(self.param)

    @property
    def parameters(self):
        """This severity's row of the reference table (pixel values are at the reference side)."""
        return _PARAMS[self.parameter_set][self.name][self.severity - 1]

    @property
    def reference_side(self) -> int:
        return REFERENCE_SIDE[self.parameter_set]

    def __repr__(self) -> str:
        if self.layer_resolution == "reference":
            return super().__repr__()
        return f"{type(self).__name__}({self.spec!r}, layer_resolution={self.layer_resolution!r})"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        channels, height, width = x.shape[1:]
        if channels not in (1, 3):
            raise StableTrainError(f"{self.spec} needs 1- or 3-channel images, got {channels} channels")
        if min(height, width) < _MIN_SIDE:
            raise StableTrainError(f"{self.spec} needs images of at least {_MIN_SIDE}×{_MIN_SIDE} px, "
                                   f"got {height}×{width}")
        # Half-precision inputs are processed in float32: CPU convolutions and
        # FFTs lack float16 kernels and the fog/plasma sums need the range.
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        ctx = _Context(self.parameter_set, min(height, width) / self.reference_side, generator,
                       self.layer_resolution)
        inputs = x.detach().to(work)
        out = _IMPLEMENTATIONS[self.name](inputs, self.parameters, ctx)
        if out is inputs or out.data_ptr() == x.data_ptr():
            out = out.clone()  # never hand back (and clamp in place) the caller's tensor
        return out.clamp_(0.0, 1.0).to(x.dtype)


def corrupt(x: torch.Tensor, name: str, severity: int, parameter_set: str = "imagenet",
            generator: torch.Generator | None = None, layer_resolution: str = "reference") -> torch.Tensor:
    """Apply one corruption at one severity to a batch; a new ``B×C×H×W`` tensor in [0, 1].

    ``layer_resolution`` is that of :class:`Corruption`.

    Example:
        >>> x = torch.full((1, 1, 8, 8), 0.5)
        >>> round(float(corrupt(x, "brightness", 5, "cifar10").mean()), 4)
        0.8
    """
    return Corruption(name, severity, parameter_set, layer_resolution)(x, generator)


def corruption_suite(parameter_set: str = "imagenet", names: Iterable[str] | str | None = None,
                     severities: Sequence[int] = (1, 2, 3, 4, 5),
                     layer_resolution: str = "reference") -> list[Corruption]:
    """Corruptions for a robustness sweep: every name at every severity, name-major.

    ``names`` defaults to the fifteen :data:`CORRUPTIONS`; pass
    ``CORRUPTIONS + HELD_OUT`` for all nineteen. ``layer_resolution`` is that
    of :class:`Corruption`.

    Example:
        >>> [c.spec for c in corruption_suite("cifar10", names=["fog"], severities=(1, 5))]
        ['c10/fog-1', 'c10/fog-5']
    """
    chosen = list(CORRUPTIONS) if names is None else ([names] if isinstance(names, str) else list(names))
    if not chosen:
        raise StableTrainError("no corruptions named")
    steps = list(severities)
    if not steps:
        raise StableTrainError("no corruption severities given")
    return [Corruption(name, severity, parameter_set, layer_resolution) for name in chosen for severity in steps]


def _register() -> None:
    for name in _ALL:
        register_distortion(name, lambda severity, name=name: Corruption(name, severity, "imagenet"))
        register_distortion(f"c10/{name}", lambda severity, name=name: Corruption(name, severity, "cifar10"))


_register()
