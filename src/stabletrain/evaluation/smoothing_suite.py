"""Randomized-smoothing certification as evaluation rows.

:func:`smoothing_rows` certifies every test example with
:func:`stabletrain.smoothing.certify_dataset` (Cohen et al., 2019) and
returns one evaluation row per certification radius, in the row format of
:mod:`stabletrain.evaluation`: ``model``, ``distortion``, ``family``,
``param``, ``n``, with ``accuracy``, ``mean_kl`` and ``flip_rate`` empty (as
attack rows leave them), plus the certificate's own columns.

The noise of example ``i`` (its index in the whole test set, ``start_index``
plus its row in ``x``) comes from its own stream, seeded by
``(seed, 'smoothing', name, i)`` (see :class:`stabletrain.seeding.ExampleRNG`),
so the rows are the same for every ``batch_size`` and for any split of the
test set into parts.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import StableTrainError
from ..seeding import ExampleRNG

__all__ = ["smoothing_rows", "SMOOTHING_COLUMNS"]

#: The columns a smoothing row adds to ``model, distortion, family, param, accuracy, mean_kl, flip_rate, n``.
SMOOTHING_COLUMNS = ("sigma", "radius", "certified_accuracy", "abstain_rate", "average_certified_radius",
                     "n0", "noise_samples", "alpha")


def _radii(radii: Sequence[float]) -> list[float]:
    if isinstance(radii, (str, bytes)) or not hasattr(radii, "__iter__"):
        raise StableTrainError(f"radii must be a sequence of numbers, got {radii!r}")
    values = list(radii)
    if not values:
        raise StableTrainError("radii is empty; give at least one radius, e.g. (0, 0.5)")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise StableTrainError(f"every radius must be a finite number >= 0, got {r!r}")
    return sorted({float(r) for r in values})


def _count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StableTrainError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def smoothing_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, n0: int = 100,
                   n: int = 1000, alpha: float = 0.001, radii: Sequence[float] = (0, 0.25, 0.5, 0.75, 1.0),
                   batch_size: int = 512, seed: int = 0, name: str = "model",
                   start_index: int = 0, ids: Sequence[int] | None = None, amp: str = "off",
                   channels_last: bool = False) -> list[dict]:
    """Certify ``x`` with the Gaussian-smoothed ``model`` and return one evaluation row per radius.

    Each example is certified with ``n0`` selection and ``n`` estimation
    noise samples at confidence ``1 − alpha`` (:func:`stabletrain.smoothing.certify`).
    Row ``r`` holds the certified accuracy at L2 radius ``r`` (pixel units of
    [0, 1] images): the share of examples whose smoothed prediction is correct
    with a certified radius of at least ``r``; abstentions count as wrong.
    The radii are sorted (duplicates dropped), so ``certified_accuracy`` never
    rises from one row to the next, and the first row's is at most the
    share of examples not abstained on.

    Every row has ``model=name``, ``distortion='smoothing-σ{sigma:g}-r{radius:g}'``,
    ``family='smoothing'``, ``param=radius``, ``accuracy``, ``mean_kl`` and
    ``flip_rate`` None, ``n`` (the number of examples) and the columns of
    :data:`SMOOTHING_COLUMNS`, among them ``average_certified_radius`` (the
    ACR of the whole set, the same in every row) and ``abstain_rate``.

    Example:
        >>> class Constant(nn.Module):
        ...     def forward(self, x):
        ...         return torch.tensor([[4.0, 0.0]]).expand(x.shape[0], 2)
        >>> rows = smoothing_rows(Constant(), torch.rand(4, 1, 4, 4), torch.tensor([0, 0, 1, 0]), sigma=0.25,
        ...                       n0=10, n=100, radii=(0, 0.5))
        >>> [(r["distortion"], r["certified_accuracy"]) for r in rows]
        [('smoothing-σ0.25-r0', 0.75), ('smoothing-σ0.25-r0.5', 0.0)]
    """
    from ..smoothing import certify_dataset

    if not isinstance(model, nn.Module):
        raise StableTrainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise StableTrainError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise StableTrainError("x and y must be torch tensors")
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise StableTrainError(f"y must be a 1-D tensor of integer labels, got shape {tuple(y.shape)}, {y.dtype}")
    if len(x) != len(y):
        raise StableTrainError(f"x has {len(x)} examples but y has {len(y)} labels")
    if len(x) == 0:
        raise StableTrainError("no examples to certify")
    n0, n, batch_size = _count(n0, "n0", 1), _count(n, "n", 1), _count(batch_size, "batch_size", 1)
    start_index = _count(start_index, "start_index", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise StableTrainError(f"seed must be an integer, got {seed!r}")
    if not isinstance(name, str) or not name:
        raise StableTrainError(f"name must be a non-empty string, got {name!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise StableTrainError(f"alpha must be in (0, 1), got {alpha!r}")
    levels = _radii(radii)
    # one stream per example, keyed by its index in the whole test set: independent of batch_size and of
    # how the test set is split (start_index)
    if ids is not None and len(ids) != len(x):
        raise StableTrainError(f"{len(x)} examples but {len(ids)} ids")
    example_ids = range(start_index, start_index + len(x)) if ids is None else [int(i) for i in ids]
    streams = ExampleRNG.for_examples(example_ids, seed, "smoothing", name)
    result = certify_dataset(model, x, y, float(sigma), n0=n0, n=n, alpha=float(alpha), batch_size=batch_size,
                             radii=levels, generator=streams, amp=amp, channels_last=channels_last)
    rows = []
    for radius, certified in zip(levels, result["certified_accuracy"]):
        rows.append({"model": name, "distortion": f"smoothing-σ{sigma:g}-r{radius:g}", "family": "smoothing",
                     "param": radius, "accuracy": None, "mean_kl": None, "flip_rate": None,
                     "n": int(result["examples"]), "sigma": float(sigma), "radius": radius,
                     "certified_accuracy": float(certified), "abstain_rate": float(result["abstain_rate"]),
                     "average_certified_radius": float(result["acr"]), "n0": n0, "noise_samples": n,
                     "alpha": float(alpha)})
    return rows
