"""Gradient-masking check: does PGD report more robustness than a stronger or gradient-free attack finds?

A model that masks its gradients (a quantized or non-differentiable input
layer, a saturated softmax, randomness) looks robust to gradient attacks
and is not: Square, which uses no gradients, or AutoAttack breaks it. The
check runs PGD and the reference attack on the same images and, per ε,
compares the two robust accuracies on the same examples:

* ``difference``: PGD's robust accuracy minus the reference's, with
  Newcombe's paired 95 % interval and McNemar's exact p-value
  (:func:`stabletrain.stats.paired_difference`);
* ``masking`` is true when PGD overstates robustness by more than the
  uncertainty: PGD's robust accuracy lies above the 95 % Wilson interval of
  the reference's, and the paired interval of the difference lies above 0.
  A stronger attack always finds a little more; that alone does not set the
  flag on a few hundred images.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..checks import StableTrainError
from ..seeding import ExampleRNG
from .curves import LINF_ATTACKS, attack_curve

__all__ = ["masking_rows", "masking_warnings", "gradient_masking"]


def masking_rows(name: str, epsilons: Sequence[float], pgd_robust: torch.Tensor, reference_robust: torch.Tensor,
                 reference: str, *, pgd: str = "pgd") -> list[dict]:
    """One row per ε > 0 comparing two attacks' per-example robust flags (epsilons × examples, same examples).

    Example:
        >>> pgd_flags = torch.tensor([[True] * 90 + [False] * 10])
        >>> square_flags = torch.tensor([[True] * 12 + [False] * 88])
        >>> row = masking_rows("m", [0.03], pgd_flags, square_flags, "square")[0]
        >>> row["pgd_robust_accuracy"], row["reference_robust_accuracy"], row["masking"]
        (0.9, 0.12, True)
    """
    from ..stats import paired_difference, wilson_interval

    pgd_robust, reference_robust = torch.as_tensor(pgd_robust).bool(), torch.as_tensor(reference_robust).bool()
    if pgd_robust.shape != reference_robust.shape or pgd_robust.ndim != 2 or len(pgd_robust) != len(epsilons):
        raise StableTrainError(f"the robust flags must both be {len(epsilons)} epsilons × examples, got "
                               f"{tuple(pgd_robust.shape)} and {tuple(reference_robust.shape)}")
    rows = []
    for position, eps in enumerate(epsilons):
        if float(eps) == 0.0:
            continue
        a, b = pgd_robust[position].numpy(), reference_robust[position].numpy()
        n = len(a)
        d = paired_difference(a, b)
        low, high = wilson_interval(int(b.sum()), n)
        pgd_accuracy, reference_accuracy = float(a.mean()) if n else 0.0, float(b.mean()) if n else 0.0
        rows.append({"model": name, "epsilon": float(eps), "pgd": pgd, "reference": reference, "n": n,
                     "pgd_robust_accuracy": pgd_accuracy, "reference_robust_accuracy": reference_accuracy,
                     "reference_low": low, "reference_high": high, "difference": d.difference,
                     "difference_low": d.low, "difference_high": d.high, "p_value": d.p_value,
                     "only_pgd_robust": d.only_a, "only_reference_robust": d.only_b,
                     "masking": bool(n and pgd_accuracy > high and d.low > 0)})
    return rows


def masking_warnings(rows: Sequence[Mapping]) -> list[str]:
    """The warning line of each flagged row of :func:`masking_rows`.

    Example:
        >>> masking_warnings([{"model": "m", "epsilon": 8 / 255, "pgd": "pgd", "reference": "square", "masking": True,
        ...                    "pgd_robust_accuracy": 0.877, "reference_robust_accuracy": 0.12}])
        ['m: PGD overstates robustness at ε=0.03137: 87.7 % vs 12.0 % under square (gradient masking?)']
    """
    return [f"{r['model']}: {str(r.get('pgd', 'pgd')).upper()} overstates robustness at ε={r['epsilon']:.4g}: "
            f"{100 * r['pgd_robust_accuracy']:.1f} % vs {100 * r['reference_robust_accuracy']:.1f} % under "
            f"{r['reference']} (gradient masking?)" for r in rows if r["masking"]]


def gradient_masking(models: nn.Module | Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                     epsilons: Sequence[float], *, reference: str = "square", pgd_steps: int = 10,
                     reference_options: Mapping | None = None, seed: int = 0, batch_size: int = 256,
                     ids: Sequence[int] | None = None) -> dict:
    """PGD (L∞, ``pgd_steps`` steps) against ``reference`` (``square`` or ``autoattack``…) per model and ε.

    Both attacks draw from per-example streams seeded by ``(seed, 'attack',
    model name, id)`` (PGD's stream also names ``'pgd'``), so the check does
    not depend on ``batch_size``. Returns ``{'rows': [...], 'warnings': [...]}``
    (see :func:`masking_rows` and :func:`masking_warnings`).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> out = gradient_masking(model, torch.rand(6, 1, 4, 4), torch.arange(6) % 3, [0.0, 0.05], pgd_steps=2,
        ...                        reference_options={"queries": 10})
        >>> [(r["model"], r["epsilon"]) for r in out["rows"]]
        [('model', 0.05)]
    """
    if reference not in LINF_ATTACKS or reference in ("pgd", "pgd-linf"):
        raise StableTrainError(f"the reference attack must be an L∞ attack other than PGD, got {reference!r}")
    named = dict(models) if isinstance(models, Mapping) else {"model": models}
    ids = list(range(len(x))) if ids is None else [int(i) for i in ids]
    rows: list[dict] = []
    for name, model in named.items():
        pgd_curve = attack_curve(model, x, y, epsilons, attack="pgd", batch_size=batch_size, steps=pgd_steps,
                                 generator=ExampleRNG.for_examples(ids, seed, "attack", name, "pgd"))
        reference_curve = attack_curve(model, x, y, epsilons, attack=reference, batch_size=batch_size,
                                       generator=ExampleRNG.for_examples(ids, seed, "attack", name),
                                       **dict(reference_options or {}))
        rows += masking_rows(name, epsilons, pgd_curve.robust, reference_curve.robust, reference)
    return {"rows": rows, "warnings": masking_warnings(rows)}
