"""Decoding image files and bytes to RGB or grayscale Pillow images, with clear errors.

:func:`open_image` is the one place where streamed data (:mod:`stabletrain.data.streams`)
is decoded. JPEG is decoded with `simplejpeg <https://gitlab.com/jfolz/simplejpeg>`_
(libjpeg-turbo) when it is installed, which is about twice as fast as
Pillow on large photographs; every other format, and the JPEGs simplejpeg
declines (CMYK or YCCK colour, or data its strict decoder rejects), goes
through Pillow. The two decoders use different inverse DCTs, so a JPEG's
pixels may differ by a few grey levels between a machine with simplejpeg
and one without; :func:`decoders` says which one a run used, and the
environment variable ``STABLETRAIN_JPEG_DECODER`` (``auto``, ``pillow``
or ``simplejpeg``) pins it.

Reduced-size decoding (``draft``): a JPEG can be decoded at 1/2, 1/4 or
1/8 of its size directly from the DCT coefficients, several times faster
than decoding it whole and resizing. With ``draft=(w, h)`` the largest of
these reductions that still leaves at least ``w × h`` pixels is used
(Pillow's :meth:`PIL.Image.Image.draft` rule); both decoders use the same
rule, so the decoded size never depends on which one is installed. Other
formats ignore ``draft``.

Modes: images come back in mode ``'L'`` when they are grayscale (``1``,
``L``, ``LA``, 16-bit ``I;16``, which is scaled by 1/257, and ``I``/``F``,
which are clipped to 0..255 as Pillow does) and ``'RGB'`` otherwise; alpha
is dropped.
"""

from __future__ import annotations

import io
import os
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from ..checks import StableTrainError

__all__ = ["open_image", "decoders", "jpeg_decoder", "DECODERS", "is_jpeg", "decode_jpeg_like_pillow"]

try:  # optional dependency
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

_DECODER_ENV = "STABLETRAIN_JPEG_DECODER"
_DECODER_CHOICES = ("auto", "pillow", "simplejpeg")
_GRAY = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def jpeg_decoder(choice: str | None = None) -> str:
    """The JPEG decoder in use: ``'simplejpeg'`` or ``'pillow'``.

    ``choice`` (default: the ``STABLETRAIN_JPEG_DECODER`` environment
    variable, else ``'auto'``) is ``'auto'`` (simplejpeg when importable),
    ``'pillow'`` or ``'simplejpeg'``.

    Example:
        >>> jpeg_decoder("pillow")
        'pillow'
        >>> jpeg_decoder() in ("simplejpeg", "pillow")
        True
    """
    value = (choice if choice is not None else os.environ.get(_DECODER_ENV, "auto")).strip().lower() or "auto"
    if value not in _DECODER_CHOICES:
        where = "decoder" if choice is not None else _DECODER_ENV
        raise StableTrainError(f"{where} must be one of {', '.join(_DECODER_CHOICES)}; got {value!r}")
    if value == "simplejpeg" and _simplejpeg is None:
        raise StableTrainError("the simplejpeg decoder was requested but simplejpeg is not installed "
                               "(pip install simplejpeg)")
    if value == "auto":
        return "simplejpeg" if _simplejpeg is not None else "pillow"
    return value


def decoders(choice: str | None = None) -> dict[str, str]:
    """Which library decodes what, with versions, for benchmarks and run records.

    Example:
        >>> sorted(decoders())
        ['jpeg', 'other']
        >>> decoders("pillow")["jpeg"].startswith("Pillow ")
        True
    """
    pillow = f"Pillow {_version('pillow')}"
    jpeg = f"simplejpeg {_version('simplejpeg')}" if jpeg_decoder(choice) == "simplejpeg" else pillow
    return {"jpeg": jpeg, "other": pillow}


#: The decoders found at import time (see :func:`decoders`, which re-reads the environment).
try:
    DECODERS: dict[str, str] = decoders()
except StableTrainError:  # a bad STABLETRAIN_JPEG_DECODER is reported when an image is decoded
    DECODERS = decoders("auto")


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG file (SOI marker), whatever its file name says.

    Example:
        >>> is_jpeg(b"\\xff\\xd8\\xff\\xe0rest"), is_jpeg(b"\\x89PNG")
        (True, False)
    """
    return data[:3] == b"\xff\xd8\xff"


def _draft_scale(width: int, height: int, draft: tuple[int, int] | None) -> int:
    """Pillow's JPEG draft rule: the largest of 8, 4, 2, 1 that keeps at least ``draft`` pixels."""
    if not draft:
        return 1
    want_w, want_h = max(1, int(draft[0])), max(1, int(draft[1]))
    scale = min(width // want_w, height // want_h)
    for s in (8, 4, 2, 1):
        if scale >= s:
            return s
    return 1


def _normalize(image: Image.Image) -> Image.Image:
    """``image`` in mode ``'L'`` (grayscale inputs) or ``'RGB'`` (everything else)."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in _SIXTEEN_BIT:
        array = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((array * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if mode in _GRAY:
        return image.convert("L")
    if mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def decode_jpeg_like_pillow(data: bytes, gray: bool, out: np.ndarray | None = None) -> np.ndarray | None:
    """Decode a JPEG that Pillow wrote to an ``H×W×C`` uint8 array with simplejpeg, or None.

    simplejpeg is asked for Pillow's decoding settings, the accurate integer
    inverse DCT and fancy (smooth) chroma upsampling, which gives the same
    pixels as ``np.asarray(Image.open(...))`` in about half the time
    (tests/test_data_decode.py checks it across qualities and sizes). None
    when the decoder in use (:func:`jpeg_decoder`) is Pillow, or when
    simplejpeg rejects the data: then decode with Pillow. ``out``, a
    C-contiguous ``H×W×C`` uint8 array, receives the pixels in place of a new
    array.

    Example:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (16, 8), (200, 30, 90)).save(buffer, format="JPEG", quality=90)
        >>> fast = decode_jpeg_like_pillow(buffer.getvalue(), gray=False)
        >>> fast is None or (fast.shape == (8, 16, 3) and bool((fast == np.asarray(Image.open(buffer))).all()))
        True
    """
    if jpeg_decoder() != "simplejpeg":
        return None
    try:
        return _simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", fastdct=False, fastupsample=False,
                                       buffer=out)
    except Exception:  # noqa: BLE001 - let Pillow decode it, and report any error
        return None


def _simplejpeg_decode(data: bytes, draft: tuple[int, int] | None) -> Image.Image | None:
    """Decode with simplejpeg, or None when Pillow should try instead (CMYK, or an error)."""
    try:
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):
            return None  # CMYK / YCCK: Pillow handles Adobe's inverted CMYK correctly
        scale = _draft_scale(width, height, draft)
        kwargs = {}
        if scale > 1:
            kwargs = {"min_width": (width + scale - 1) // scale, "min_height": (height + scale - 1) // scale}
        gray = colorspace == "Gray"
        array = _simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", **kwargs)
    except Exception:  # noqa: BLE001 - any failure: let Pillow try (it is more lenient) and report
        return None
    if gray:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0]), mode="L")
    return Image.fromarray(array, mode="RGB")


def _pillow_decode(data: bytes, draft: tuple[int, int] | None) -> Image.Image:
    image = Image.open(io.BytesIO(data))  # in memory: nothing to close, no copy needed
    if draft and image.format == "JPEG":
        scale = _draft_scale(image.size[0], image.size[1], draft)
        if scale > 1:
            target = "L" if image.mode == "L" else ("RGB" if image.mode in ("RGB", "YCbCr") else None)
            image.draft(target, ((image.size[0] + scale - 1) // scale, (image.size[1] + scale - 1) // scale))
    image.load()
    return _normalize(image)


def open_image(source: str | os.PathLike | bytes, name: str | None = None, *,
               draft: tuple[int, int] | None = None, decoder: str | None = None) -> Image.Image:
    """Decode an image file or bytes to a Pillow image in mode ``'RGB'`` or ``'L'``.

    Args:
        source: a path, or the encoded bytes of an image (from a tar shard).
        name: what error messages call the image (default: the path, or ``<bytes>``).
        draft: for JPEG, decode at a reduced size of at least ``(width, height)``
            pixels (see the module docstring); ignored by other formats.
        decoder: ``'auto'``, ``'pillow'`` or ``'simplejpeg'`` for JPEG (default:
            ``STABLETRAIN_JPEG_DECODER``, else ``'auto'``).

    Raises:
        StableTrainError: ``not a readable image file: NAME (ReasonType)`` for a
            missing, unreadable, corrupt or truncated file.

    Example:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "JPEG")
        >>> image = open_image(buffer.getvalue(), draft=(16, 12))
        >>> image.mode, image.size
        ('RGB', (20, 15))
        >>> open_image(b"not an image", name="shard-0.tar:x.jpg")
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: not a readable image file: shard-0.tar:x.jpg (UnidentifiedImageError)
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data: bytes | None = bytes(source)
        label = name or "<bytes>"
    else:
        label = name or str(source)
        data = None
    use_simplejpeg = jpeg_decoder(decoder) == "simplejpeg"
    try:
        if data is None:
            with open(Path(source), "rb") as handle:
                data = handle.read()
    except OSError as err:
        raise StableTrainError(f"not a readable image file: {label} ({type(err).__name__})") from None
    if use_simplejpeg and is_jpeg(data):
        image = _simplejpeg_decode(data, draft)
        if image is not None:
            return image
    try:
        return _pillow_decode(data, draft)
    except Exception as err:  # noqa: BLE001 - Pillow's plugins raise many types on corrupt data
        if isinstance(err, MemoryError):
            raise
        raise StableTrainError(f"not a readable image file: {label} ({type(err).__name__})") from None
