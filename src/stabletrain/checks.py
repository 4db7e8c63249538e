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


def _type_name(kind: object) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list", tuple: "a list", type(None): "null"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))  # type: ignore[call-overload]


def check_type(value: object, kind: object, name: str) -> object:
    """Check ``value`` against a simple annotation (``int``, ``float``, ``bool``, ``str``, unions, ``X | None``).

    YAML and JSON give strings where a user quoted a value, so ``"no"`` for a
    boolean is an error here, never a truthy string; ``True`` is not an
    integer; an integer is a valid float. Returns the value (floats as float).

    Example:
        >>> check_type(3, float, "lr")
        3.0
        >>> check_type("no", bool, "detach_clean")
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: detach_clean must be true or false, got 'no'
    """
    import math
    import types
    import typing

    origin = typing.get_origin(kind)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(kind, types.UnionType)):
        options = typing.get_args(kind)
        for option in options:
            try:
                return check_type(value, option, name)
            except StableTrainError:
                continue
        raise StableTrainError(f"{name} must be {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is not None:
        kind = origin
    if kind is typing.Any or kind is object:
        return value
    if kind is type(None):
        if value is not None:
            raise StableTrainError(f"{name} must be null, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise StableTrainError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StableTrainError(f"{name} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StableTrainError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if kind in (str, dict, list, tuple):
        accepted = (list, tuple) if kind in (list, tuple) else kind
        if not isinstance(value, accepted):  # type: ignore[arg-type]
            raise StableTrainError(f"{name} must be {_type_name(kind)}, got {value!r}")
        return value
    return value


def check_like_default(value: object, default: object, name: str) -> object:
    """Check an option's value against the type of its default (a factory option without an annotation).

    Example:
        >>> check_like_default(2, 0.5, "eta")
        2.0
    """
    if default is None or not isinstance(default, (bool, int, float, str)):
        if value is not None and not isinstance(value, (bool, int, float, str, list, tuple)):
            raise StableTrainError(f"{name} must be a number, a string, true/false or null, got {value!r}")
        return value
    return check_type(value, type(default), name)


def check_fields(obj: object) -> None:
    """Type-check every field of a dataclass instance against its annotation (see :func:`check_type`).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class C:
        ...     quick: bool = False
        >>> check_fields(C(quick="no"))
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: quick must be true or false, got 'no'
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        kind = hints.get(f.name)
        if kind is None:
            continue
        value = getattr(obj, f.name)
        origin = typing.get_origin(kind)
        if origin in (tuple, list) and isinstance(value, (tuple, list)):
            args = [a for a in typing.get_args(kind) if a is not Ellipsis]
            for item in value:
                if args:
                    check_type(item, args[0], f"{f.name} entries")
            continue
        setattr(obj, f.name, check_type(value, kind, f.name))
