"""Evaluation distortions from the stability-training paper, batched and seeded.

Each distortion is written as a spec string ``family-parameter``:

============  =====================================================================
spec          meaning
============  =====================================================================
``jpeg-Q``    re-encode with libjpeg (through Pillow) at quality Q, 1–100
``thumb-A``   down-scale with antialiasing so the longer side is A pixels, then
              bilinearly back to the original size; ``A`` = the longer side is
              the identity
``crop-O``    crop a window that is O percent smaller in each dimension, at a
              uniformly random offset per image, and resize it back; 0 <= O < 100
``gaussian-S`` add ``N(0, S^2)`` noise in [0, 1] pixel units, clipped to [0, 1]
============  =====================================================================

Strength grows as Q and A fall and as O and S rise. Every distortion maps a
``B×C×H×W`` float batch in [0, 1] to one of the same shape and dtype in
[0, 1]; random ones take a :class:`torch.Generator`.

>>> x = torch.rand(2, 3, 32, 32)
>>> [d.spec for d in parse_distortions("jpeg-50,thumb-16,crop-10,gaussian-0.1")]
['jpeg-50', 'thumb-16', 'crop-10', 'gaussian-0.1']
>>> parse_distortion("thumb-16")(x).shape
torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import io
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checks import StableTrainError, check_images, check_nonnegative
from .data.decode import decode_jpeg_like_pillow
from .perturbations import randn_like
from .registry import DISTORTIONS

__all__ = [
    "Distortion",
    "Identity",
    "JPEG",
    "Thumbnail",
    "Crop",
    "GaussianNoiseDistortion",
    "parse_distortion",
    "parse_distortions",
    "register_distortion",
    "known_families",
    "paper_sweep",
]


class Distortion:
    """A named, possibly random, image distortion.

    Attributes:
        family: the spec prefix, e.g. ``'jpeg'``.
        param: the numeric parameter, e.g. ``50``.
        stronger_when_larger: whether a larger parameter is a stronger
            distortion (used to order severity plots).
    """

    family: str = ""
    stronger_when_larger: bool = True

    def __init__(self, param: float) -> None:
        self.param = param

    @property
    def spec(self) -> str:
        return f"{self.family}-{self.param:g}"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(x)
        return self.apply(x, generator)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class Identity(Distortion):
    """The clean input, spec ``clean``; useful as the first entry of a sweep."""

    family = "clean"

    def __init__(self, param: float = 0) -> None:
        super().__init__(param)

    @property
    def spec(self) -> str:
        return "clean"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x.clone()


class JPEG(Distortion):
    """Re-encode each image as JPEG at ``quality`` with Pillow's libjpeg and decode it.

    One- and three-channel images are supported (grayscale and RGB). Pillow's
    defaults are kept (4:2:0 chroma subsampling for RGB), as in ordinary
    image pipelines, so ``jpeg-100`` is close to but not exactly the identity.
    """

    family = "jpeg"
    stronger_when_larger = False

    def __init__(self, quality: int) -> None:
        if isinstance(quality, float) and not quality.is_integer():
            raise StableTrainError(f"jpeg quality must be an integer in 1..100, got {quality!r}")
        if not 1 <= int(quality) <= 100:
            raise StableTrainError(f"jpeg quality must be an integer in 1..100, got {quality!r}")
        super().__init__(int(quality))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        channels = x.shape[1]
        if channels not in (1, 3):
            raise StableTrainError(f"jpeg needs 1- or 3-channel images, got {channels} channels")
        # The conversions run on the whole batch, where they vectorize, and only the codec image by image:
        # x·255 rounded in float32 (whatever x's dtype) and cast to uint8 by NumPy (torch's float-to-uint8 cast is
        # about 7x slower on the CPU); each image encoded by Pillow; decoded (simplejpeg with Pillow's settings,
        # where installed: the same pixels, faster) into one H×W×C batch; that batch transposed back as uint8 and
        # divided by 255 in x's dtype.
        source = x.detach().to("cpu")
        batch, _, height, width = source.shape
        scaled = source.to(torch.float32) * 255.0 if source.dtype != torch.float32 else source * 255.0
        scaled.round_().clamp_(0.0, 255.0)
        pixels = np.empty(tuple(scaled.shape), dtype=np.uint8)
        np.copyto(pixels, scaled.numpy(), casting="unsafe")
        mode = "L" if channels == 1 else "RGB"
        # Interleaving for Pillow: small images as one batch transpose, large ones plane by plane with Image.merge
        # (a 224-px transpose costs more than the merge, a 32-px merge more than the transpose).
        interleaved = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)) if height * width <= 64 * 64 else None
        decoded = np.empty((batch, height, width, channels), dtype=np.uint8)
        for i in range(batch):
            if channels == 1:
                image = Image.fromarray(pixels[i, 0])
            elif interleaved is not None:
                image = Image.fromarray(interleaved[i])
            else:
                image = Image.merge("RGB", [Image.fromarray(plane) for plane in pixels[i]])
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.param)
            if decode_jpeg_like_pillow(buffer.getvalue(), gray=channels == 1, out=decoded[i]) is None:
                buffer.seek(0)
                with Image.open(buffer) as reread:
                    # Pillow writes L and RGB and reads them back as such; the conversion is kept for safety
                    decoded[i] = np.asarray(reread if reread.mode == mode else reread.convert(mode)).reshape(
                        height, width, channels)
        planar = torch.from_numpy(np.ascontiguousarray(decoded.transpose(0, 3, 1, 2)))
        return planar.to(x.dtype).div_(255.0).to(x.device)


class Thumbnail(Distortion):
    """Down-scale so that the longer side is ``size`` pixels, then back up.

    Down-scaling uses an antialiased bilinear filter (a triangle filter
    widened by the scale factor, like Pillow's), up-scaling plain bilinear
    interpolation. The aspect ratio is kept; the shorter side becomes
    ``round(short * size / long)``, at least 1 pixel.
    """

    family = "thumb"
    stronger_when_larger = False

    def __init__(self, size: int) -> None:
        if isinstance(size, float) and not size.is_integer() or int(size) < 1:
            raise StableTrainError(f"thumb size must be a positive integer number of pixels, got {size!r}")
        super().__init__(int(size))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        height, width = x.shape[-2:]
        longer = max(height, width)
        if self.param > longer:
            raise StableTrainError(
                f"{self.spec} needs images whose longer side is at least {self.param} px, got {height}×{width}")
        if self.param == longer:
            return x.clone()
        scale = self.param / longer
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        down = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
        up = F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False)
        return up.clamp_(0.0, 1.0)


class Crop(Distortion):
    """Crop a window ``percent`` % smaller in each dimension at a random offset, resize back.

    The window is ``round(H * (1 - O/100)) × round(W * (1 - O/100))``; its
    top-left corner is uniform over all positions that keep it inside the
    image, drawn independently for each image. The crop is resized back to
    ``H×W`` bilinearly, so the result is both shifted and slightly zoomed,
    like a re-crop of the same photograph.
    """

    family = "crop"

    def __init__(self, percent: float) -> None:
        try:
            percent = float(percent)
        except (TypeError, ValueError):
            raise StableTrainError(f"crop percent must be a number in [0, 100), got {percent!r}") from None
        if not 0.0 <= percent < 100.0:
            raise StableTrainError(f"crop percent must be a number in [0, 100), got {percent!r}")
        super().__init__(percent)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        batch, _, height, width = x.shape
        keep = 1.0 - self.param / 100.0
        crop_h, crop_w = max(1, round(height * keep)), max(1, round(width * keep))
        if crop_h == height and crop_w == width:
            return x.clone()
        # offsets drawn where the generator lives (CPU without one); an ExampleRNG gives each image its own offsets
        from .seeding import draw_randint

        tops = draw_randint(0, height - crop_h + 1, (batch,), generator).tolist()
        lefts = draw_randint(0, width - crop_w + 1, (batch,), generator).tolist()
        crops = torch.stack([x[i, :, top:top + crop_h, left:left + crop_w]
                             for i, (top, left) in enumerate(zip(tops, lefts))])
        return F.interpolate(crops, size=(height, width), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


class GaussianNoiseDistortion(Distortion):
    """Additive ``N(0, sigma^2)`` noise in [0, 1] pixel units, clipped to [0, 1]."""

    family = "gaussian"

    def __init__(self, sigma: float) -> None:
        super().__init__(check_nonnegative(sigma, "gaussian sigma"))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (x + self.param * randn_like(x, generator)).clamp_(0.0, 1.0)


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


for _family, _factory in (("jpeg", JPEG), ("thumb", Thumbnail), ("crop", Crop), ("gaussian", GaussianNoiseDistortion)):
    DISTORTIONS.register(_family, _factory)


def register_distortion(family: str, factory: Callable[[float], Distortion] | str) -> None:
    """Make a distortion family available to spec strings (``family-param``).

    ``factory`` takes the numeric parameter and returns a :class:`Distortion`;
    it may be a lazy ``'module:attribute'`` string. Extensions register their
    families from their ``stabletrain.plugins`` entry point.
    """
    if not isinstance(family, str) or not family or "-" in family or "," in family:
        raise StableTrainError(f"a distortion family name must be non-empty without '-' or ',', got {family!r}")
    DISTORTIONS.register(family, factory, override=True)


def known_families() -> list[str]:
    """The distortion families that spec strings may name, the extensions' included."""
    return DISTORTIONS.names()


def parse_distortion(spec: str) -> Distortion:
    """Build a distortion from a spec such as ``'jpeg-50'``; ``'clean'`` is the identity.

    Example:
        >>> parse_distortion("crop-10")
        Crop('crop-10')
    """
    if not isinstance(spec, str):
        raise StableTrainError(f"a distortion spec must be a string such as jpeg-50, got {spec!r}")
    text = spec.strip()
    if text in ("clean", "none", "identity"):
        return Identity()
    family, sep, value = text.partition("-")  # family names hold no '-', so 'gaussian--0.1' reads as -0.1
    if not sep or not family:
        raise StableTrainError(
            f"bad distortion spec {spec!r}: expected family-parameter such as jpeg-50; "
            f"known families: {', '.join(known_families())}")
    if family not in DISTORTIONS:
        raise StableTrainError(
            f"unknown distortion {spec!r}: known families are {', '.join(known_families())}")
    try:
        param = _number(value)
    except ValueError:
        raise StableTrainError(f"bad distortion spec {spec!r}: parameter {value!r} is not a number") from None
    return DISTORTIONS.get(family)(param)


def parse_distortions(specs: str | Iterable[str]) -> list[Distortion]:
    """Parse a comma-separated string or a list of specs into a sweep.

    All specs are checked before any is used, so a typo fails fast.
    """
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise StableTrainError("no distortions given")
    return [parse_distortion(s) for s in items]


def paper_sweep(image_size: int) -> list[str]:
    """The default evaluation sweep over the paper's four families, scaled to ``image_size``.

    Thumbnail sizes are 3/4, 1/2, 3/8 and 1/4 of the image side, so the
    sweep means the same thing for 32-pixel digits and larger photos.

    Example:
        >>> paper_sweep(32)[:5]
        ['jpeg-90', 'jpeg-70', 'jpeg-50', 'jpeg-30', 'jpeg-10']
    """
    thumbs = sorted({max(1, round(image_size * f)) for f in (0.75, 0.5, 0.375, 0.25)}, reverse=True)
    return ([f"jpeg-{q}" for q in (90, 70, 50, 30, 10)]
            + [f"thumb-{a}" for a in thumbs]
            + [f"crop-{o}" for o in (5, 10, 15, 20)]
            + [f"gaussian-{s:g}" for s in (0.05, 0.1, 0.2, 0.3)])
