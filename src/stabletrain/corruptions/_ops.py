"""Signal-processing primitives shared by several corruptions.

Random draws (each from one ``torch.Generator`` for the whole batch, or row by
row from an :class:`~stabletrain.seeding.ExampleRNG`), border padding,
Gaussian kernels and blurs, filtering with per-image kernels (shifted sums or
FFT), separable resizing, luma and colour helpers, the motion-blur line
kernels and the diamond-square plasma fractal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..seeding import ExampleRNG, draw, draw_poisson, draw_randint
from ._tables import DEFAULT_LAYER_RESOLUTION

#: Where a corruption's random draws come from: one generator for the whole
#: batch, one stream per example (row ``i`` draws only from stream ``i``), or
#: torch's global generator.
Generator = torch.Generator | ExampleRNG | None

#: ITU-R 601 luma weights, as in the reference's ``rgb2gray`` and OpenCV's RGB2GRAY.
_LUMA = (0.2989, 0.5870, 0.1140)


@dataclass
class _Context:
    parameter_set: str
    scale: float  # min(H, W) / reference side
    generator: Generator
    layer_resolution: str = DEFAULT_LAYER_RESOLUTION

    @property
    def native(self) -> bool:
        """Build layers on the image grid: asked for, and the reference grid would be larger."""
        return self.layer_resolution == "native" and self.scale < 1.0

    @property
    def per_example(self) -> bool:
        """Per-example streams: every image's result must not depend on the rest of the batch."""
        return isinstance(self.generator, ExampleRNG)

    def reference_grid(self, height: int, width: int) -> tuple[int, int]:
        """The image size in reference pixels: where fixed-resolution layers are generated."""
        return max(1, round(height / self.scale)), max(1, round(width / self.scale))


# --------------------------------------------------------------------------- randomness
#
# Every draw of a corruption has the batch as its leading dimension, so that
# with an ExampleRNG row i comes from stream i alone (seeding.draw checks the
# leading dimension). With a torch.Generator the draws are those of earlier
# versions, number for number.


def _draw_device(generator: Generator) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: Sequence[int], generator: Generator, device: torch.device,
          dtype: torch.dtype, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    # Drawn on the generator's device and moved, so a seed means the same
    # numbers whether the batch is on the CPU or a GPU.
    u = draw(torch.rand, shape, generator)  # one row per stream for an ExampleRNG (seeding.draw)
    if (low, high) != (0.0, 1.0):
        u = u.mul_(high - low).add_(low)  # in place: the same float32 operations as low + (high - low)·u
    return u.to(device=device, dtype=dtype)


def _rands(shapes: Sequence[Sequence[int]], generator: Generator,
           bounds: Sequence[tuple[float, float]] | None = None) -> list[torch.Tensor]:
    """:func:`_rand` for several shapes (each led by the batch) and ``(low, high)`` bounds, in order.

    The draws are float32 on the generator's device; move them with
    ``.to(device, dtype)`` as :func:`_rand` does. With a ``torch.Generator``
    they are the separate draws, number for number. With an
    :class:`ExampleRNG` every row makes one draw, which is split up: one call
    per row instead of one per row and shape (the plasma fractal makes three
    draws per octave); from a CPU stream these are again the numbers of
    separate draws.
    """
    bounds = list(bounds) if bounds is not None else [(0.0, 1.0)] * len(shapes)
    if not isinstance(generator, ExampleRNG):
        device = _draw_device(generator)
        return [_rand(shape, generator, device, torch.float32, low, high) for shape, (low, high) in zip(shapes, bounds)]
    shapes = [tuple(int(n) for n in shape) for shape in shapes]
    if any(not shape or shape[0] != len(generator) for shape in shapes):
        raise ValueError(f"per-example draws need a leading batch dimension of {len(generator)}, got {shapes}")
    sizes = [math.prod(shape[1:]) for shape in shapes]
    pool = draw(torch.rand, (len(generator), sum(sizes)), generator)
    out = []
    for part, shape, (low, high) in zip(pool.split(sizes, dim=1), shapes, bounds):
        u = part.reshape(shape)
        out.append(u.mul(high - low).add_(low) if (low, high) != (0.0, 1.0) else u)
    return out


def _randn(shape: Sequence[int], generator: Generator, device: torch.device,
           dtype: torch.dtype, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    z = draw(torch.randn, shape, generator)
    if (mean, std) != (0.0, 1.0):
        z = z.mul_(std).add_(mean)  # in place: the same float32 operations as mean + std·z
    return z.to(device=device, dtype=dtype)


def _randint(low: int, high: int, shape: Sequence[int], generator: Generator,
             device: torch.device) -> torch.Tensor:
    if isinstance(generator, ExampleRNG):
        return draw_randint(low, high, shape, generator).to(device)
    return torch.randint(low, high, tuple(shape), generator=generator, device=_draw_device(generator)).to(device)


def _poisson(rates: torch.Tensor, generator: Generator) -> torch.Tensor:
    """``torch.poisson(rates)``, drawn on the generator's device and returned on ``rates``' device."""
    if isinstance(generator, ExampleRNG):
        return draw_poisson(rates, generator)
    return torch.poisson(rates.to(_draw_device(generator)), generator=generator).to(rates.device)


# --------------------------------------------------------------------------- filtering


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


#: Along an axis of at least this many pixels, a Gaussian with at most 1/_BANDED_RATIO as many taps is applied
#: as a sum of shifted views (work ∝ taps) rather than as a dense n×n matrix product (work ∝ n). Measured on
#: one CPU core: at 224 px the shifted sum is 5× faster for 5 taps and breaks even near 45 taps; at 32 px the
#: matrix product always wins.
_BANDED_MIN_SIDE = 128
_BANDED_RATIO = 6


def _gaussian_axis(x: torch.Tensor, sigma: float, truncate: float, mode: str, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    taps = 2 * max(int(truncate * sigma + 0.5), 0) + 1
    if n < _BANDED_MIN_SIDE or taps * _BANDED_RATIO > n:
        matrix = _gaussian_matrix(n, float(sigma), truncate, mode).to(x.device, x.dtype)
        return torch.matmul(matrix, x) if dim == -2 else torch.matmul(x, matrix.T)
    kernel = _gaussian_kernel1d(float(sigma), truncate).tolist()
    radius = len(kernel) // 2
    padded = _pad(x, radius, radius, 0, 0, mode) if dim == -2 else _pad(x, 0, 0, radius, radius, mode)
    out = padded.narrow(dim, 0, n) * kernel[0]
    for t in range(1, len(kernel)):
        out.add_(padded.narrow(dim, t, n), alpha=kernel[t])
    return out


def _gaussian_blur(x: torch.Tensor, sigma_y: float, sigma_x: float | None = None, truncate: float = 4.0,
                   mode: str = "edge") -> torch.Tensor:
    """Separable Gaussian blur of each channel, like ``skimage.filters.gaussian`` (mode ``'nearest'``)."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    if sigma_y > 0 and int(truncate * sigma_y + 0.5) > 0:
        x = _gaussian_axis(x, sigma_y, truncate, mode, -2)
    if sigma_x > 0 and int(truncate * sigma_x + 0.5) > 0:
        x = _gaussian_axis(x, sigma_x, truncate, mode, -1)
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


#: Kernels with at most this many non-zero taps are applied as shifted sums, larger ones by FFT.
_MAX_SHIFTED_TAPS = 25


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
    xp = _pad_for_kernel(x, kh, kw, mode)
    taps = (kernels != 0).any(0).nonzero().tolist()
    if len(taps) <= _MAX_SHIFTED_TAPS:
        return _shifted_sums(x, xp, kernels, taps)
    # Transform lengths with only factors 2, 3 and 5 are several times faster;
    # the extra zeros sit beyond the padding and never reach the output.
    size = (_fft_length(xp.shape[-2]), _fft_length(xp.shape[-1]))
    crop = (..., slice(kh - 1, kh - 1 + height), slice(kw - 1, kw - 1 + width))
    if kernels.shape[0] == 1 and xp.shape[0] * xp.shape[1] > 1 and xp.dtype in (torch.float32, torch.float64):
        return _packed_fft_filter(xp, kernels[0].flip(-2, -1), size)[crop]
    spectrum = torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(kernels.flip(-2, -1), s=size).unsqueeze(1)
    return torch.fft.irfft2(spectrum, s=size)[crop]


def _packed_fft_filter(xp: torch.Tensor, kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The circular convolution of every plane of ``xp`` with one real ``kernel``, two planes per complex FFT.

    With one kernel for all planes, planes a and b go through one complex
    transform as a + ib: the product with the kernel's spectrum transforms back
    to (a * k) + i(b * k), both real. One complex FFT pair for two planes runs
    about 1.5× faster on the CPU than two real ones (torch's inverse real FFT
    is the slow part). Returns ``B×C×size``.
    """
    batch, channels = xp.shape[:2]
    planes = xp.reshape(batch * channels, *xp.shape[-2:])
    half = (len(planes) + 1) // 2
    second = planes[half:]
    if len(second) < half:  # an odd number of planes: the last one is paired with zeros
        second = torch.cat([second, second.new_zeros(1, *second.shape[1:])])
    spectrum = torch.fft.fft2(torch.complex(planes[:half], second), s=size) * torch.fft.fft2(kernel, s=size)
    out = torch.fft.ifft2(spectrum)
    return torch.cat([out.real, out.imag[:len(planes) - half]]).view(batch, channels, *size)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect101",
              per_example: bool = False) -> torch.Tensor:
    """Correlate each channel with one odd-sized 2-D ``kernel`` (``per_example``: see :func:`_filter_per_example`)."""
    if per_example:
        return _filter_per_example(x, kernel.unsqueeze(0), mode)
    return _filter_per_image(x, kernel.unsqueeze(0), mode)


def _filter_per_example(x: torch.Tensor, kernels: torch.Tensor, mode: str,
                        alone: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`_filter_per_image` of every image alone, ``_filter_per_image(x[b:b+1], alone(b)[None])``, bit for bit.

    The batched filter picks shifted sums or FFT, and the FFT's size, for the
    whole batch, and an FFT's rounding can depend on how many images share
    it. Here each image's own kernel decides: shifted sums of its own taps in
    its kernel's order (whatever other images' taps add, so its sums round
    as they would alone), or an FFT of the image alone with its own kernel.

    ``kernels`` is ``1×kh×kw`` (one kernel for all images) or every image's
    own kernel ``alone(b)`` zero-padded to one centred ``B×kh×kw`` size
    (``alone`` is needed then: an FFT's size follows from the kernel's).
    """
    batch = x.shape[0]
    weights = kernels.to(device=x.device, dtype=x.dtype)
    kh, kw = weights.shape[-2:]
    if weights.shape[0] == 1:  # one kernel: shifted sums over the whole batch give every image its own sums
        if int((weights != 0).sum()) <= _MAX_SHIFTED_TAPS:
            return _filter_per_image(x, kernels, mode)
        return torch.cat([_filter_per_image(x[b:b + 1], kernels, mode) for b in range(batch)])
    few = (weights != 0).flatten(1).sum(1) <= _MAX_SHIFTED_TAPS
    out = _own_shifted_sums(x, _pad_for_kernel(x, kh, kw, mode), weights, few)
    for b in (~few).nonzero().flatten().tolist():
        out[b:b + 1] = _filter_per_image(x[b:b + 1], alone(b).unsqueeze(0), mode)
    return out


#: Images of at most this many values (C·H·W) get their taps by one gather per tap rank (see below).
_GATHER_SIZE = 3 * 32 * 32


def _own_shifted_sums(x: torch.Tensor, xp: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """For the images ``chosen``, ``Σ weights[b, a, c] · xp[b, :, a:a+H, c:c+W]`` over image ``b``'s own taps.

    Each image's taps are added in its kernel's row-major order and no other
    image's taps enter its sums, so they round as they would for the image
    alone; the other images' rows stay zero. Small images take their k-th
    taps all at once, one gather per rank ``k`` (a zero weight where an
    image has fewer taps, which adds exactly nothing); larger ones, where a
    gather costs more than a Python loop, are done tap by tap.
    """
    batch, channels, height, width = x.shape
    nonzero = (weights != 0) & chosen.view(-1, 1, 1)
    image, row, col = nonzero.nonzero(as_tuple=True)  # by image, then row-major
    out = torch.zeros_like(x)
    if image.numel() == 0:
        return out
    if channels * height * width <= _GATHER_SIZE:
        counts = nonzero.flatten(1).sum(1)
        rank = torch.arange(image.numel(), device=x.device) - (counts.cumsum(0) - counts)[image]
        padded_width = xp.shape[-1]
        offsets = torch.zeros(batch, int(counts.max()), dtype=torch.long, device=x.device)
        scales = torch.zeros(batch, int(counts.max()), dtype=x.dtype, device=x.device)
        offsets[image, rank] = row * padded_width + col
        scales[image, rank] = weights[image, row, col]
        flat = xp.reshape(batch, channels, -1)
        pixels = torch.arange(height, device=x.device).view(-1, 1) * padded_width + torch.arange(width, device=x.device)
        for k in range(offsets.shape[1]):
            index = (pixels.view(1, 1, -1) + offsets[:, k].view(-1, 1, 1)).expand(batch, channels, -1)
            out += scales[:, k].view(-1, 1, 1, 1) * flat.gather(2, index).view_as(x)
        return out
    views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for value, b, a, c in zip(weights[image, row, col].unbind(), image.tolist(), row.tolist(), col.tolist()):
        if b not in views:
            views[b] = out[b:b + 1], xp[b:b + 1]
        image_out, image_in = views[b]
        image_out += value * image_in[..., a:a + height, c:c + width]
    return out


def _pad_for_kernel(x: torch.Tensor, kh: int, kw: int, mode: str) -> torch.Tensor:
    """``x`` padded for a centred ``kh×kw`` kernel: by a border rule of :func:`_pad` or with ``"zero"``."""
    if mode == "zero":
        return F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    return _pad(x, kh // 2, kh // 2, kw // 2, kw // 2, mode)


def _shifted_sums(x: torch.Tensor, xp: torch.Tensor, kernels: torch.Tensor, taps: list) -> torch.Tensor:
    """``Σ kernels[:, a, b] · xp[..., a:a+H, b:b+W]`` over the taps ``(a, b)``, in their order."""
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for a, b in taps:
        weight = kernels[:, a, b].view(-1, 1, 1, 1)
        out += weight * xp[..., a:a + height, b:b + width]
    return out


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


@lru_cache(maxsize=64)
def _sparse_resize_matrix(n_in: int, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`_resize_matrix` as a CSR matrix of ``dtype``: a few non-zero weights per row."""
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return _resize_matrix(n_in, n_out).to(dtype).to_sparse_csr()


#: The batch axis of a batch-innermost layout is padded to a multiple of this many planes, so that every plane
#: goes through the vectorized loops (16 floats fill an AVX-512 register): a scalar tail rounds differently, and
#: an image's bits would then depend on its place in the batch.
_LANES = 16


def _upsample_threshold_shrink(noise: torch.Tensor, fine: tuple[int, int], size: tuple[int, int],
                               threshold: float) -> torch.Tensor:
    """``_resize(F.threshold(upsampled, threshold, 0).clamp_max(1), *size)`` without a fine ``B×1`` layout.

    ``noise`` (``B×1×h×w``) is enlarged bilinearly (``align_corners=True``)
    to ``fine``, values ``<= threshold`` become 0 and the rest are clipped to
    1, and the result is area-averaged to ``size`` (smaller than ``fine``)
    with :func:`_resize`'s antialiased weights. The same computation as
    those three calls, to float rounding, about three times faster on the
    CPU: the batch is the innermost axis of the fine layer (torch vectorizes
    a channels-last resize over it, where a ``B×1`` layout runs one plane at
    a time), and the area average is two sparse products with the resize
    weights, which treat every column alike. No step puts images in
    different positions of one dense matrix product, whose edge tiles may
    round differently, so every image's result is independent of the rest
    of the batch, bit for bit.

    Example:
        >>> noise = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> fast = _upsample_threshold_shrink(noise, (64, 64), (16, 16), 0.5)
        >>> fine = F.interpolate(noise, size=(64, 64), mode="bilinear", align_corners=True)
        >>> slow = _resize(F.threshold(fine, 0.5, 0.0).clamp_max(1.0), 16, 16)
        >>> bool(torch.allclose(fast, slow, atol=1e-6))
        True
    """
    batch, _, h, w = noise.shape
    (fh, fw), (height, width) = fine, size
    lanes = -(-batch // _LANES) * _LANES
    planes = noise.new_zeros(1, h, w, lanes)
    planes[0, :, :, :batch] = noise[:, 0].permute(1, 2, 0)
    planes = planes.permute(0, 3, 1, 2)  # 1×lanes×h×w, channels last
    if (h, w) != (fh, fw):
        planes = F.interpolate(planes, size=(fh, fw), mode="bilinear", align_corners=True)
    layer = planes.permute(0, 2, 3, 1).reshape(fh, fw * lanes)  # the fine layer, batch innermost
    layer = F.threshold(layer, threshold, 0.0, inplace=True).clamp_max_(1.0)  # a fresh buffer either way
    rows = _sparse_resize_matrix(fh, height, noise.dtype).to(noise.device)
    cols = _sparse_resize_matrix(fw, width, noise.dtype).to(noise.device)
    out = (rows @ layer).view(height, fw, lanes).transpose(0, 1).reshape(fw, height * lanes)
    out = (cols @ out).view(width, height, lanes)
    return out[..., :batch].permute(2, 1, 0).unsqueeze(1).contiguous()


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


def _shrink_kernels(kernels: torch.Tensor, scale: float) -> torch.Tensor:
    """Area-average centred ``N×kh×kw`` kernels onto a grid ``scale`` (< 1) times as fine; each sums to one."""
    rows = _shrink_matrix(kernels.shape[-2], scale)
    cols = _shrink_matrix(kernels.shape[-1], scale)
    shrunk = rows @ kernels @ cols.T
    return shrunk / shrunk.sum(dim=(-2, -1), keepdim=True)


def _filter_lines(x: torch.Tensor, weights: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str,
                  per_example: bool, shrink: float | None = None) -> torch.Tensor:
    """Filter image ``b`` with the line kernel of taps ``(weights, dy[b], dx[b])`` (:func:`motion_blur_taps`).

    ``shrink`` (< 1) first area-averages the kernels onto a grid that many
    times as fine (:func:`_shrink_kernels`). A batch shares one kernel size
    and one filtering path (shifted sums or FFT, see
    :func:`_filter_per_image`), set by all its images' lines together; with
    ``per_example`` every image is filtered as it would be alone
    (:func:`_filter_per_example`), so that its result does not depend on the
    other images' lines.
    """
    def kernels(rows: slice) -> torch.Tensor:
        dense = _taps_to_kernels(weights, dy[rows], dx[rows])
        return dense if shrink is None else _shrink_kernels(dense, shrink)

    batch = x.shape[0]
    if not per_example:
        return _filter_per_image(x, kernels(slice(None)), mode)
    if shrink is None:
        # Each image's taps land on the same cells, summed in the same order, as in its kernel alone.
        return _filter_per_example(x, kernels(slice(None)), mode, lambda b: kernels(slice(b, b + 1))[0])
    alone = [kernels(slice(b, b + 1))[0] for b in range(batch)]
    kh, kw = max(k.shape[0] for k in alone), max(k.shape[1] for k in alone)
    padded = torch.zeros(batch, kh, kw, dtype=alone[0].dtype)
    for b, k in enumerate(alone):
        top, left = (kh - k.shape[0]) // 2, (kw - k.shape[1]) // 2
        padded[b, top:top + k.shape[0], left:left + k.shape[1]] = k
    return _filter_per_example(x, padded, mode, alone.__getitem__)


# --------------------------------------------------------------------------- textures


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def _plasma_fractal(batch: int, mapsize: int, decay: float, generator: Generator,
                    device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], ``batch×mapsize×mapsize`` (a power of two), as in the reference's fog."""
    maps = torch.zeros(batch, mapsize, mapsize, device=device, dtype=dtype)
    # Three draws per octave, all made up front (in the order they are used):
    # with per-example streams that is one draw per image.
    shapes, bounds = [], []
    step, wibble = mapsize, 100.0
    while step >= 2:
        side = len(range(0, mapsize, step))
        shapes += [(batch, side, side)] * 3
        bounds += [(-wibble, wibble)] * 3
        step //= 2
        wibble /= decay
    draws = iter(_rands(shapes, generator, bounds))
    step, wibble = mapsize, 100.0

    def wibbled(mean: torch.Tensor) -> torch.Tensor:
        # The reference adds wibble·U(-wibble, wibble), an amplitude of wibble².
        return mean / 4 + wibble * next(draws).to(device=device, dtype=dtype)

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
