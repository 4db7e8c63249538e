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

from typing import Callable, Sequence

import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import eval_mode
from ..seeding import ExampleRNG
from ._common import AttackResult, _check_count, _logits, _prepare, _subset
from .apgd import apgd, apgd_targeted
from .square import square

__all__ = ["autoattack", "AUTOATTACK_COMPONENTS", "AUTOATTACK_STANDARD"]

#: The components this function can run, and the standard version's order (FAB-T left out, see the module).
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "square")
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "square")


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 100,
               target_classes: int = 9, queries: int = 5000, p_init: float = 0.8,
               components: Sequence[str] = AUTOATTACK_STANDARD,
               generator: torch.Generator | ExampleRNG | None = None) -> AttackResult:
    """The components in order, each on the examples still robust; L∞.

    ``result.components`` maps each component to the examples broken once
    it has run (cumulative, the clean misclassifications included), so the
    robust accuracy after each component is ``1 − mean(mask)``;
    ``result.queries`` counts Square's queries.

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
    x, y, _, epsilon = _prepare(model, x, y, epsilon, None)
    runs: dict[str, Callable[..., AttackResult]] = {
        "apgd-ce": lambda xs, ys, g: apgd(model, xs, ys, epsilon, loss="ce", steps=steps, generator=g),
        "apgd-dlr": lambda xs, ys, g: apgd(model, xs, ys, epsilon, loss="dlr", steps=steps, generator=g),
        "apgd-t": lambda xs, ys, g: apgd_targeted(model, xs, ys, epsilon, steps=steps, target_classes=target_classes,
                                                  generator=g),
        "square": lambda xs, ys, g: square(model, xs, ys, epsilon, queries=queries, p_init=p_init, generator=g)}
    with eval_mode(model), torch.no_grad():
        predictions = _logits(model, x).argmax(1)
    success = predictions != y
    adversarial = x.clone()
    spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
    broken: dict[str, torch.Tensor] = {}
    for name in components:
        rows = (~success).nonzero().flatten()
        if len(rows) and epsilon > 0:
            result = runs[name](x[rows], y[rows], _subset(generator, rows))
            hit = rows[result.success]
            adversarial[hit] = result.adversarial[result.success]
            predictions[hit] = result.predictions[result.success]
            success[hit] = True
            if result.queries is not None:
                spent[rows] += result.queries
        broken[name] = success.clone()
    return AttackResult(adversarial, success, predictions, epsilon, queries=spent, components=broken)
