"""AutoAttack (Croce and Hein, ICML 2020), standard version: APGD-CE, APGD-T, Square, each on what is left.

The standard version runs APGD-CE (100 iterations, 1 restart), APGD-T
(targeted DLR against the 9 most likely other classes, 100 iterations
each), FAB-T and Square (5000 queries), every attack only on the examples
that all earlier ones left robust. FAB-T is left out here: it is the
costliest component to implement faithfully, and it is not needed for the
others to mean what they mean. ``components`` names what ran, so a number
from this function is AutoAttack without FAB-T: an upper bound on the full
ensemble's robust accuracy, like every attack's.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG
from ._common import AttackResult, _check_count, _is_zero, _limits, _logits, _prepare, _subset, _take
from .apgd import apgd, apgd_targeted
from .square import square

__all__ = ["autoattack", "AUTOATTACK_COMPONENTS", "AUTOATTACK_STANDARD"]

#: The components this function can run, and the standard version's order (FAB-T left out, see the module).
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "square")
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "square")


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float | torch.Tensor, *,
               steps: int = 100, target_classes: int = 9, queries: int = 5000, p_init: float = 0.8,
               components: Sequence[str] = AUTOATTACK_STANDARD,
               generator: torch.Generator | ExampleRNG | None = None,
               limits: tuple[float | torch.Tensor, float | torch.Tensor] | None = None,
               progress: Callable[[str], None] | None = None) -> AttackResult:
    """The components in order, each on the examples still robust; L∞.

    ``result.components`` maps each component to the examples broken once
    it has run (cumulative, the clean misclassifications included), so the
    robust accuracy after each component is ``1 − mean(mask)``;
    ``result.queries`` counts Square's queries. ``epsilon`` may be a tensor
    of per-coordinate radii and ``limits`` a box other than [0, 1], as for
    :func:`~stabletrain.attacks.apgd` and :func:`~stabletrain.attacks.square`.
    ``progress``, if given, receives one line per component (examples
    still robust, seconds). APGD-DLR needs 3 classes and APGD-T 4: for a
    binary classifier run ``components=('apgd-ce', 'square')``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        >>> out = autoattack(model, torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]), 0.05, steps=3,
        ...                  target_classes=2, queries=10)
        >>> list(out.components)
        ['apgd-ce', 'apgd-t', 'square']
    """
    unknown = [c for c in components if c not in AUTOATTACK_COMPONENTS]
    if unknown or not components:
        raise StableTrainError(f"unknown AutoAttack component(s) {', '.join(map(str, unknown)) or '(none)'}; known: "
                               f"{', '.join(AUTOATTACK_COMPONENTS)}")
    steps, queries = _check_count(steps, "steps"), _check_count(queries, "queries")
    target_classes = _check_count(target_classes, "target_classes")
    x, y, _, epsilon = _prepare(model, x, y, epsilon, None, per_coordinate=True)
    low, high = _limits(x, limits)
    runs: dict[str, Callable[..., AttackResult]] = {
        "apgd-ce": lambda xs, ys, g, e, box: apgd(model, xs, ys, e, loss="ce", steps=steps, generator=g, limits=box),
        "apgd-dlr": lambda xs, ys, g, e, box: apgd(model, xs, ys, e, loss="dlr", steps=steps, generator=g,
                                                   limits=box),
        "apgd-t": lambda xs, ys, g, e, box: apgd_targeted(model, xs, ys, e, steps=steps,
                                                          target_classes=target_classes, generator=g, limits=box),
        "square": lambda xs, ys, g, e, box: square(model, xs, ys, e, queries=queries, p_init=p_init, generator=g,
                                                   limits=box)}
    with eval_mode(model), torch.no_grad():
        logits = _logits(model, x)
    predictions = logits.argmax(1)
    needs = {"apgd-dlr": 3, "apgd-t": 4}
    short = [c for c in components if logits.shape[1] < needs.get(c, 2)]
    if short:
        runnable = tuple(c for c in components if c not in short) or ("apgd-ce", "square")
        raise StableTrainError(f"AutoAttack's {', '.join(short)} need(s) at least {max(needs[c] for c in short)} "
                               f"classes and the model has {logits.shape[1]}; run components="
                               f"{runnable!r} instead")
    success = predictions != y
    adversarial = x.clone()
    spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
    broken: dict[str, torch.Tensor] = {}
    for name in components:
        rows = (~success).nonzero().flatten()
        began = time.perf_counter()
        if len(rows) and not _is_zero(epsilon):
            box = None if limits is None else (_take(low, rows), _take(high, rows))
            result = runs[name](x[rows], y[rows], _subset(generator, rows), _take(epsilon, rows), box)
            hit = rows[result.success]
            adversarial[hit] = result.adversarial[result.success]
            predictions[hit] = result.predictions[result.success]
            success[hit] = True
            if result.queries is not None:
                spent[rows] += result.queries
        broken[name] = success.clone()
        if progress is not None:
            progress(f"{name}: {int((~success).sum())} of {len(x)} still robust "
                     f"({time.perf_counter() - began:.0f} s)")
    return AttackResult(adversarial, success, predictions, epsilon, queries=spent, components=broken)
