"""Small pieces every command shares: progress lines and argument types."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

__all__ = ["log_to_stderr", "positive_int", "parse_number"]


def log_to_stderr(quiet: bool) -> Callable[[str], None]:
    """Progress lines through ``tqdm.write`` on stderr (so they do not break progress bars), or none."""
    if quiet:
        return lambda line: None
    from tqdm.auto import tqdm

    return lambda line: tqdm.write(line, file=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_number(text: str) -> float:
    """A number as users write attack budgets: ``0.031``, ``8/255`` or ``1e-3``; ValueError otherwise.

    Example:
        >>> parse_number("8/255") == 8 / 255, parse_number(" 0.5 ")
        (True, 0.5)
    """
    from fractions import Fraction

    text = text.strip()
    if "/" in text:
        numerator, _, denominator = text.partition("/")
        return float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
    return float(text)


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated finite numbers (``0.485,0.456,0.406``)."""
    import math

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values
