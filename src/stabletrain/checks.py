"""Input validation shared by the library and the CLI.

Every public entry point validates what it is given and raises
:class:`StableTrainError` with a one-line message that names the problem.
The CLI turns that exception into ``stabletrain: error: <message>`` and a
non-zero exit status instead of a traceback.
"""

from __future__ import annotations

import torch

__all__ = ["StableTrainError", "check_images", "check_finite", "check_nonnegative"]


class StableTrainError(ValueError):
    """A problem with user input: a bad option, a bad file, or bad data.

    Subclasses :class:`ValueError`, so code that already catches
    ``ValueError`` keeps working.
    """


def check_images(x: torch.Tensor, name: str = "inputs") -> None:
    """Check that ``x`` is a ``B×C×H×W`` floating-point batch with values in [0, 1].

    Example:
        >>> check_images(torch.rand(2, 3, 8, 8))
        >>> check_images(torch.full((1, 1, 2, 2), 2.0))
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: inputs must lie in [0, 1] pixel units; got values in [2, 2]
    """
    if not isinstance(x, torch.Tensor):
        raise StableTrainError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise StableTrainError(f"{name} must be a B×C×H×W batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise StableTrainError(
            f"{name} must be floating point in [0, 1], got dtype {x.dtype}; divide uint8 images by 255"
        )
    if x.numel() == 0:
        raise StableTrainError(f"{name} is empty (shape {tuple(x.shape)})")
    lo, hi = torch.aminmax(x.detach())
    lo_v, hi_v = float(lo), float(hi)
    if lo_v != lo_v or hi_v != hi_v:  # NaN propagates through min/max
        raise StableTrainError(f"{name} contain NaN")
    if lo_v < 0.0 or hi_v > 1.0:
        if abs(lo_v) == float("inf") or abs(hi_v) == float("inf"):
            raise StableTrainError(f"{name} contain inf")
        raise StableTrainError(
            f"{name} must lie in [0, 1] pixel units; got values in [{lo_v:.4g}, {hi_v:.4g}]"
        )


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise :class:`StableTrainError` if ``t`` holds NaN or inf."""
    if not bool(torch.isfinite(t.detach()).all()):
        raise StableTrainError(f"{name} contain NaN or inf")


def check_nonnegative(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise :class:`StableTrainError`.

    Example:
        >>> check_nonnegative("0.5", "sigma")
        0.5
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StableTrainError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not 0.0 <= number < float("inf"):
        raise StableTrainError(f"{name} must be a finite number >= 0, got {value!r}")
    return number
