"""The :class:`Corruption` distortion, the dispatch to the 19 implementations, and the sweep helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from ..checks import StableTrainError
from ..distortions import Distortion
from ..seeding import ExampleRNG
from ._ops import Generator, _Context
from ._tables import (
    _PARAMS,
    CORRUPTIONS,
    DEFAULT_LAYER_RESOLUTION,
    REFERENCE_SIDE,
    _check_layer_resolution,
    _check_name,
    _check_parameter_set,
    _check_severity,
)
from .blur import _defocus_blur, _gaussian_blur_corruption, _glass_blur, _motion_blur, _zoom_blur
from .digital import _contrast, _elastic_transform, _jpeg_compression, _pixelate, _saturate
from .noise import _gaussian_noise, _impulse_noise, _shot_noise, _speckle_noise
from .weather import _brightness, _fog, _frost, _snow, _spatter

_MIN_SIDE = 8

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


class Corruption(Distortion):
    """One common corruption at one severity, from the ImageNet-C or the CIFAR-10-C table.

    Args:
        name: one of :data:`CORRUPTIONS` or :data:`HELD_OUT`.
        severity: an integer in 1..5.
        parameter_set: ``"imagenet"`` (default) or ``"cifar10"`` (alias ``"c10"``).
        layer_resolution: where ``snow``, ``spatter`` and ``elastic_transform``
            build their random layers on images smaller than the reference
            side: ``"native"`` (default; on the image grid, with the layer's
            statistics matched to the reference layer's) or ``"reference"``
            (on the reference grid, then resized: the reference corruption
            itself, area-averaged, at up to 49 times the cost on 32-px
            images). See :data:`LAYER_RESOLUTIONS`.

    The spec (and family) is ``name`` for the ImageNet-C set and
    ``c10/name`` for the CIFAR-10-C set, with the severity as parameter; the
    layer resolution is not part of the spec.

    The ``generator`` of a call is a ``torch.Generator`` (one stream for the
    batch), ``None`` (torch's global one) or an
    :class:`~stabletrain.seeding.ExampleRNG` with one stream per image: then
    image ``i`` draws only from stream ``i``, and its result does not depend
    on the other images of the batch.

    Example:
        >>> c = Corruption("zoom_blur", 2, "cifar10")
        >>> c.spec, c.severity, len(c.parameters)
        ('c10/zoom_blur-2', 2, 12)
        >>> c(torch.full((1, 3, 16, 16), 0.5)).shape
        torch.Size([1, 3, 16, 16])
        >>> Corruption("snow", 3, layer_resolution="reference")
        Corruption('snow-3', layer_resolution='reference')
    """

    stronger_when_larger = True

    def __init__(self, name: str, severity: int, parameter_set: str = "imagenet",
                 layer_resolution: str = DEFAULT_LAYER_RESOLUTION) -> None:
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
        if self.layer_resolution == DEFAULT_LAYER_RESOLUTION:
            return super().__repr__()
        return f"{type(self).__name__}({self.spec!r}, layer_resolution={self.layer_resolution!r})"

    def apply(self, x: torch.Tensor, generator: Generator) -> torch.Tensor:
        channels, height, width = x.shape[1:]
        if channels not in (1, 3):
            raise StableTrainError(f"{self.spec} needs 1- or 3-channel images, got {channels} channels")
        if min(height, width) < _MIN_SIDE:
            raise StableTrainError(f"{self.spec} needs images of at least {_MIN_SIDE}×{_MIN_SIDE} px, "
                                   f"got {height}×{width}")
        if isinstance(generator, ExampleRNG) and len(generator) != x.shape[0]:
            raise StableTrainError(f"{self.spec} needs one random stream per image: {x.shape[0]} images, "
                                   f"{len(generator)} streams")
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
            generator: Generator = None, layer_resolution: str = DEFAULT_LAYER_RESOLUTION) -> torch.Tensor:
    """Apply one corruption at one severity to a batch; a new ``B×C×H×W`` tensor in [0, 1].

    ``generator`` and ``layer_resolution`` are those of :class:`Corruption`.

    Example:
        >>> x = torch.full((1, 1, 8, 8), 0.5)
        >>> round(float(corrupt(x, "brightness", 5, "cifar10").mean()), 4)
        0.8
    """
    return Corruption(name, severity, parameter_set, layer_resolution)(x, generator)


def corruption_suite(parameter_set: str = "imagenet", names: Iterable[str] | str | None = None,
                     severities: Sequence[int] = (1, 2, 3, 4, 5),
                     layer_resolution: str = DEFAULT_LAYER_RESOLUTION) -> list[Corruption]:
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
