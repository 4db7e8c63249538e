"""The corruption names and the two published parameter tables (ImageNet-C and CIFAR-10-C), with their checks.

Each table row lists severities 1..5 for one corruption. Pixel-valued
entries are in pixels of the set's reference side (:data:`REFERENCE_SIDE`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..checks import StableTrainError

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
#: image is smaller than the parameter set's reference side: ``"native"``
#: (default) on the image's own grid, with parameters converted so the layer
#: keeps the reference layer's statistics, or ``"reference"`` on the reference
#: grid (1/s² times the image's pixels), then resized (see
#: ``docs/corruptions.md``). The two are identical when the image is at least
#: the reference side. The default comes first.
LAYER_RESOLUTIONS: tuple[str, ...] = ("native", "reference")
#: The default of every ``layer_resolution`` argument.
DEFAULT_LAYER_RESOLUTION: str = LAYER_RESOLUTIONS[0]


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
    if name not in _ALL:
        raise StableTrainError(f"unknown corruption {name!r}; known corruptions: {', '.join(_ALL)}")
    return name


def _check_severity(severity: object) -> int:
    ok = (isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)) or (
        isinstance(severity, float) and severity.is_integer())
    if not ok or not 1 <= int(severity) <= 5:
        raise StableTrainError(f"corruption severity must be an integer in 1..5, got {severity!r}")
    return int(severity)
