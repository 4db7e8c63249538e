"""Pillow-based train and evaluation transforms for streamed images, seeded per example.

The geometry follows torchvision and timm so that published recipes carry
over, without requiring torchvision:

* :class:`TrainTransform` is ``RandomResizedCrop`` followed by
  ``RandomHorizontalFlip``: the crop box is drawn with the algorithm of
  :meth:`torchvision.transforms.RandomResizedCrop.get_params` (ten attempts
  at a box of random area and log-uniform aspect ratio, then a central-crop
  fallback), making the same random calls in the same order, but from the
  :class:`torch.Generator` it is given instead of the global one. Given a
  generator seeded with ``s``, it therefore returns exactly what
  torchvision's pipeline returns after ``torch.manual_seed(s)``.
* :class:`EvalTransform` is timm's evaluation transform with
  ``crop_mode='center'``: resize the shorter side to
  ``floor(size / crop_pct)``, then take the central ``size × size``.

Images are resampled by Pillow (bilinear by default, antialiased when
shrinking), as torchvision does for PIL images. :func:`to_tensor_uint8`
turns the result into a ``C×H×W`` uint8 tensor, what data-loader workers
send; the consumer converts on the device with ``x.float().div_(255)``.

Each transform also has :meth:`~TrainTransform.draft_size`: the smallest
image that loses no detail in its output, which the decoder uses for
reduced-size JPEG decoding (:func:`stabletrain.data.decode.open_image`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..checks import StableTrainError

__all__ = ["TrainTransform", "EvalTransform", "to_tensor_uint8", "resize_shorter", "center_crop", "INTERPOLATIONS"]

#: Interpolation names accepted by the transforms.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) < 1:
        raise StableTrainError(f"image size must be a positive integer, got {size!r}")
    return int(size)


def _interpolation(name: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[str(name).lower()]
    except KeyError:
        raise StableTrainError(f"unknown interpolation {name!r}; choose one of {', '.join(INTERPOLATIONS)}") from None


def _pair(values: Sequence[float], what: str, low: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise StableTrainError(f"{what} must be two numbers (min, max), got {values!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or not low < a <= b:
        raise StableTrainError(f"{what} must satisfy {low:g} < min <= max, got {values!r}")
    return a, b


def resize_shorter(image: Image.Image, side: int,
                   resample: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
    """Resize so the shorter side is ``side`` pixels, keeping the aspect ratio (torchvision's ``Resize(int)``).

    The longer side becomes ``int(side * long / short)``, truncated, as in torchvision.

    Example:
        >>> resize_shorter(Image.new("RGB", (300, 200)), 100).size
        (150, 100)
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = side, int(side * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size × size`` pixels (offsets rounded as torchvision's ``CenterCrop``).

    Example:
        >>> center_crop(Image.new("L", (150, 100)), 64).size
        (64, 64)
    """
    width, height = image.size
    if width < size or height < size:
        raise StableTrainError(f"cannot centre-crop {size}×{size} from a {width}×{height} image")
    if (width, height) == (size, size):
        return image
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class TrainTransform:
    """Random resized crop and horizontal flip, drawn from an explicit generator.

    Args:
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        flip: flip horizontally with probability 1/2.
        crop: with ``False``, no random crop: resize the shorter side to
            ``size`` and take the central square (then flip if ``flip``).
        interpolation: ``'bilinear'`` (torchvision's default), ``'bicubic'``,
            ``'lanczos'`` or ``'nearest'``.

    Call it as ``transform(image, generator)``; the result depends only on
    the image and the generator's state, which it advances.

    Example:
        >>> t = TrainTransform(32)
        >>> image = Image.new("RGB", (80, 60))
        >>> t(image, torch.Generator().manual_seed(0)).size
        (32, 32)
        >>> t.crop_params(80, 60, torch.Generator().manual_seed(0)) == \\
        ...     t.crop_params(80, 60, torch.Generator().manual_seed(0))
        True
    """

    random = True

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 flip: bool = True, crop: bool = True, interpolation: str = "bilinear") -> None:
        self.size = _check_size(size)
        self.scale = _pair(scale, "crop scale", 0.0)
        if self.scale[1] > 1.0:
            raise StableTrainError(f"crop scale must lie in (0, 1], got {scale!r}")
        self.ratio = _pair(ratio, "crop aspect ratio", 0.0)
        self.flip, self.crop = bool(flip), bool(crop)
        self.interpolation = str(interpolation).lower()
        self._resample = _interpolation(self.interpolation)
        # torchvision takes the log in float32; do the same so the draws agree bit for bit
        self._log_ratio = [float(v) for v in torch.log(torch.tensor(self.ratio))]

    def crop_params(self, width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of a random crop of a ``width × height`` image.

        torchvision's ``RandomResizedCrop.get_params``, drawing from ``generator``.
        """
        area = height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(self._log_ratio[0], self._log_ratio[1],
                                                       generator=generator)).item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
                return top, left, h, w
        in_ratio = float(width) / float(height)  # fallback: central crop
        if in_ratio < min(self.ratio):
            w = width
            h = int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h = height
            w = int(round(h * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        if self.crop:
            top, left, h, w = self.crop_params(image.size[0], image.size[1], generator)
            out = image.crop((left, top, left + w, top + h)).resize((self.size, self.size), self._resample)
        else:
            out = center_crop(resize_shorter(image, self.size, self._resample), self.size)
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out

    def draft_size(self) -> tuple[int, int]:
        """Smallest decoded size at which even the smallest crop still has ``size`` pixels a side."""
        if not self.crop:
            return self.size, self.size
        shortest = math.sqrt(self.scale[0] * min(self.ratio[0], 1.0 / self.ratio[1]))
        side = int(math.ceil(self.size / min(1.0, shortest)))
        return side, side

    def __repr__(self) -> str:
        if not self.crop:
            return f"TrainTransform({self.size}, crop=False, flip={self.flip}, interpolation={self.interpolation!r})"
        return (f"TrainTransform({self.size}, scale={self.scale}, ratio=({self.ratio[0]:.4g}, {self.ratio[1]:.4g}), "
                f"flip={self.flip}, interpolation={self.interpolation!r})")


class EvalTransform:
    """Resize the shorter side to ``floor(size / crop_pct)``, then centre-crop ``size × size`` (timm's eval).

    Deterministic: a ``generator`` argument is accepted and ignored, so
    train and eval transforms are called the same way.

    Example:
        >>> t = EvalTransform(224)
        >>> t.resize_size
        256
        >>> t(Image.new("RGB", (500, 375))).size
        (224, 224)
    """

    random = False

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = "bilinear") -> None:
        self.size = _check_size(size)
        try:
            self.crop_pct = float(crop_pct)
        except (TypeError, ValueError):
            raise StableTrainError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}") from None
        if not 0.0 < self.crop_pct <= 1.0:
            raise StableTrainError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}")
        self.interpolation = str(interpolation).lower()
        self._resample = _interpolation(self.interpolation)
        self.resize_size = max(self.size, math.floor(self.size / self.crop_pct))

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        return center_crop(resize_shorter(image, self.resize_size, self._resample), self.size)

    def draft_size(self) -> tuple[int, int]:
        """The decoded size below which the resize would enlarge the image."""
        return self.resize_size, self.resize_size

    def __repr__(self) -> str:
        return f"EvalTransform({self.size}, crop_pct={self.crop_pct:g}, interpolation={self.interpolation!r})"


def to_tensor_uint8(image: Image.Image, channels: int) -> torch.Tensor:
    """A ``channels×H×W`` uint8 tensor of ``image`` (converted to ``'L'`` or ``'RGB'`` as needed).

    Example:
        >>> x = to_tensor_uint8(Image.new("RGB", (5, 4), (10, 20, 30)), 3)
        >>> x.dtype, tuple(x.shape), x[:, 0, 0].tolist()
        (torch.uint8, (3, 4, 5), [10, 20, 30])
        >>> tuple(to_tensor_uint8(Image.new("RGB", (5, 4)), 1).shape)
        (1, 4, 5)
    """
    if channels not in (1, 3):
        raise StableTrainError(f"channels must be 1 or 3, got {channels!r}")
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    array = np.array(image, dtype=np.uint8)  # a writable copy, owned by the tensor
    if channels == 1:
        return torch.from_numpy(array).unsqueeze(0)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
