"""Attacks by name, and robustness curves: robust accuracy at several epsilons in one call."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..checks import StableTrainError, check_images
from ..devices import device_of as _device, eval_mode
from ..seeding import ExampleRNG
from ._common import AttackResult, _logits
from .apgd import apgd, apgd_targeted
from .autoattack import autoattack
from .pgd import fgsm, pgd
from .sparse import sparse_l0
from .square import square

__all__ = ["ATTACKS", "LINF_ATTACKS", "GRADIENT_FREE_ATTACKS", "build_attack", "attack_defaults", "CurveResult",
           "attack_curve", "robustness_curve"]

#: Every attack ``build_attack`` knows (``pgd-linf`` is accepted as another name of ``pgd``).
ATTACKS = ("fgsm", "pgd", "pgd-l2", "l0", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")
#: The attacks whose epsilon is an L∞ radius.
LINF_ATTACKS = ("fgsm", "pgd", "pgd-linf", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")
#: Attacks that do not need the model's gradients (AutoAttack ends with one).
GRADIENT_FREE_ATTACKS = ("square", "autoattack")

# name -> (function, fixed keyword arguments, how epsilon is read)
_TABLE: dict[str, tuple[Callable[..., AttackResult], dict]] = {
    "fgsm": (fgsm, {}), "pgd": (pgd, {"norm": "linf"}), "pgd-linf": (pgd, {"norm": "linf"}),
    "pgd-l2": (pgd, {"norm": "l2"}), "l0": (sparse_l0, {}),
    "apgd-ce": (apgd, {"loss": "ce"}), "apgd-dlr": (apgd, {"loss": "dlr"}), "apgd-t": (apgd_targeted, {}),
    "square": (square, {}), "autoattack": (autoattack, {})}
_TARGETED = ("fgsm", "pgd", "pgd-linf", "pgd-l2", "l0")
_NOT_OPTIONS = {"model", "x", "y", "epsilon", "k", "generator", "target", "limits", "progress"}


def _options_of(name: str) -> dict[str, object]:
    """The options an attack takes by name, with their defaults."""
    function, fixed = _TABLE[name]
    return {p.name: p.default for p in inspect.signature(function).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_OPTIONS and p.name not in fixed}


def attack_defaults(name: str) -> dict[str, object]:
    """The options of attack ``name`` and their defaults (``steps``, ``queries``, ``restarts``…).

    Example:
        >>> attack_defaults("apgd-ce")["steps"], attack_defaults("square")["queries"]
        (100, 5000)
    """
    if name not in _TABLE:
        raise StableTrainError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")
    return _options_of(name)


def build_attack(name: str, **options: object) -> Callable[..., AttackResult]:
    """An attack by name, as ``f(model, x, y, epsilon, generator=..., target=...)``; ``l0`` reads epsilon as k
    pixels. ``options`` are the attack's own (see :func:`attack_defaults`); an unknown one is an error.

    Only ``fgsm``, ``pgd``, ``pgd-l2`` and ``l0`` take a ``target``; ``apgd-t`` chooses its own targets.
    """
    if name not in _TABLE:
        raise StableTrainError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")
    function, fixed = _TABLE[name]
    known = _options_of(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise StableTrainError(f"unknown option(s) {', '.join(unknown)} for attack {name!r}; it takes: "
                               f"{', '.join(known) or 'none'}")

    takes_progress = "progress" in inspect.signature(function).parameters

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            generator: torch.Generator | ExampleRNG | None = None, target: torch.Tensor | None = None,
            progress: Callable[[str], None] | None = None) -> AttackResult:
        extra: dict[str, object] = {}
        if progress is not None and takes_progress:
            extra["progress"] = progress
        if target is not None:
            if name not in _TARGETED:
                raise StableTrainError(f"attack {name!r} is untargeted; targeted attacks: {', '.join(_TARGETED)}")
            extra["target"] = target
        if name != "fgsm":
            extra["generator"] = generator
        budget = int(eps) if name == "l0" else eps
        return function(model, x, y, budget, **fixed, **extra, **options)

    return run


@dataclass
class CurveResult:
    """:func:`attack_curve`'s rows and the per-example flags behind them (CPU tensors, rows in ``x``'s order)."""

    rows: list[dict]
    #: epsilons × examples: robust at ε (clean-correct, never fooled at ε or a smaller ε of the curve)
    robust: torch.Tensor
    #: examples: classified correctly clean
    correct: torch.Tensor
    #: per epsilon (position in the curve): ``{component: robust flags once it has run}`` (empty for one attack)
    components: dict[int, dict[str, torch.Tensor]]
    #: per epsilon (position in the curve): how many examples the attack ran on
    attacked: dict[int, int] = field(default_factory=dict)


def attack_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *,
                 attack: str = "pgd", batch_size: int = 256, generator: torch.Generator | ExampleRNG | None = None,
                 progress: Callable[[str], None] | None = None, only_unbroken: bool = True,
                 **options: object) -> CurveResult:
    """:func:`robustness_curve` with each example's flags (for paired comparisons between attacks or models)."""
    if not isinstance(only_unbroken, bool):
        raise StableTrainError(f"only_unbroken must be True or False, got {only_unbroken!r}")
    run = build_attack(attack, **options)
    for eps in epsilons:
        if not (isinstance(eps, (int, float)) and 0 <= eps < math.inf):
            raise StableTrainError(f"epsilons must be finite numbers >= 0, got {eps!r}")
    check_images(x)
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
    per_example = isinstance(generator, ExampleRNG)
    began = time.perf_counter()
    if per_example and len(generator) != len(x):
        raise StableTrainError(f"the attack's ExampleRNG has {len(generator)} streams for {len(x)} examples")
    n = len(x)
    labels = y.cpu()
    # the clean predictions, once: robust implies clean-correct
    correct = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad(), eval_mode(model):
        device = _device(model)
        for start in range(0, n, batch_size):
            predicted = _logits(model, x[start:start + batch_size].to(device)).argmax(1).cpu()
            correct[start:start + batch_size] = predicted == labels[start:start + batch_size]
    clean_correct = int(correct.sum())
    fooled_at: dict[int, torch.Tensor] = {}
    parts_at: dict[int, dict[str, torch.Tensor]] = {}
    attacked: dict[int, int] = {}
    order = sorted(range(len(epsilons)), key=lambda i: float(epsilons[i]))
    broken = ~correct
    for position in order:  # from the smallest ε, so that what a smaller ε broke need not be attacked again
        eps = epsilons[position]
        # only_unbroken: an example misclassified clean, or fooled at a smaller ε (whose adversarial lies in this
        # ball too), is not robust here whatever the attack does; the others are attacked
        rows = torch.nonzero(~broken).flatten() if only_unbroken else torch.arange(n)
        fooled = broken.clone() if only_unbroken else torch.zeros(n, dtype=torch.bool)
        parts: dict[str, torch.Tensor] = {}
        batches = -(-len(rows) // batch_size)
        for start in range(0, len(rows), batch_size):
            index = rows[start:start + batch_size]
            contiguous = bool(len(index)) and int(index[-1]) - int(index[0]) == len(index) - 1
            if contiguous:
                lo, hi = int(index[0]), int(index[-1]) + 1
                xb, yb = x[lo:hi], y[lo:hi]
            else:
                xb, yb = x[index.to(x.device)], y[index.to(y.device)]
            # fresh per-example streams at every ε, from the same seeds: each example's starts are a function of its
            # seed only, whatever the batch it lands in
            gen = ExampleRNG([generator.seeds[int(i)] for i in index], generator.device) if per_example else generator
            where = f"{attack} ε={eps:g}" + (f" batch {start // batch_size + 1}/{batches}" if batches > 1 else "")
            result = run(model, xb, yb, eps, generator=gen,
                         progress=None if progress is None else (lambda line, where=where: progress(f"{where}: {line}")))
            fooled[index] = result.success.cpu()
            for name, mask in (result.components or {}).items():
                parts.setdefault(name, torch.zeros(n, dtype=torch.bool))[index] = mask.cpu()
        fooled_at[position], parts_at[position], attacked[position] = fooled, parts, len(rows)
        broken = broken | fooled
        if progress is not None:
            progress(f"{attack} ε={eps:g}: {len(rows)} of {n} attacked, robust accuracy {int((~broken).sum()) / n:.3f}"
                     f" ({time.perf_counter() - began:.0f} s so far)" if n else f"{attack} ε={eps:g}: no examples")
    # cumulative over the sorted epsilons: broken at a smaller ε means broken at every larger one
    broken = ~correct
    cumulative: dict[int, torch.Tensor] = {}
    by_part: dict[int, dict[str, torch.Tensor]] = {}
    for position in order:
        # a component's robust examples at ε: not broken at a smaller ε (by the whole attack), nor by the
        # components up to this one at ε
        by_part[position] = {name: ~(broken | mask) for name, mask in parts_at[position].items()}
        broken = broken | fooled_at[position]
        cumulative[position] = broken.clone()
    rows = []
    for position, eps in enumerate(epsilons):
        robust = int((~cumulative[position]).sum())
        pointwise = int((correct & ~fooled_at[position]).sum())
        row = {"attack": attack, "epsilon": float(eps), "clean_accuracy": clean_correct / n if n else 0.0,
               "robust_accuracy": robust / n if n else 0.0,
               "robust_accuracy_at_epsilon": pointwise / n if n else 0.0,
               "success_rate": (clean_correct - robust) / clean_correct if clean_correct else 0.0, "n": n}
        if by_part[position]:
            row["components"] = {name: int(flags.sum()) / n if n else 0.0 for name, flags in by_part[position].items()}
        rows.append(row)
    robust_flags = torch.stack([~cumulative[p] for p in range(len(epsilons))]) if len(epsilons) else \
        torch.zeros((0, n), dtype=torch.bool)
    return CurveResult(rows, robust_flags, correct, {p: by_part[p] for p in range(len(epsilons))}, attacked)




def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *,
                     attack: str = "pgd", batch_size: int = 256, generator: torch.Generator | ExampleRNG | None = None,
                     progress: Callable[[str], None] | None = None, only_unbroken: bool = True,
                     **options: object) -> list[dict]:
    """Robust accuracy at each epsilon in one call, attacking at each ε only the examples still unbroken.

    Returns one row per epsilon, in the order given: ``{'attack', 'epsilon',
    'clean_accuracy', 'robust_accuracy', 'robust_accuracy_at_epsilon',
    'success_rate', 'n'}``; an attack of several components
    (``autoattack``) adds ``components``: the robust accuracy once each
    component has run, ``{name: accuracy}`` in the order they ran (the last
    equals ``robust_accuracy``). :func:`attack_curve` also returns each
    example's flags.

    * An example is **robust at ε** if the model classifies it correctly clean
      and the attack failed on it at ε **and at every smaller ε of this
      curve**: an example broken at a smaller budget is broken at every larger
      one, because its adversarial is inside every larger ball.
      ``robust_accuracy`` is the fraction of robust examples: never above
      ``clean_accuracy``, and non-increasing in ε (the cumulation runs over
      the sorted epsilons, per example).
    * The epsilons are attacked from the smallest up, and with
      ``only_unbroken`` (the default) each ε's attack runs only on the
      examples that are clean-correct and were not fooled at a smaller ε:
      the others are not robust at ε whatever the attack does, so skipping
      them changes no ``robust_accuracy`` (with per-example streams, below,
      not a bit of it) and saves their attack.
    * ``robust_accuracy_at_epsilon`` is clean-correct and not fooled at this
      ε. With ``only_unbroken`` an example fooled at a smaller ε counts as
      fooled (its adversarial lies in this ball too), so it equals
      ``robust_accuracy``; with ``only_unbroken=False`` every ε's attack runs
      on every example and it is that attack's alone (never above the clean
      accuracy, but a weaker attack at a larger ε can make it rise).
    * ``success_rate`` is the fraction of clean-correct examples that are not
      robust at ε (cumulative, like ``robust_accuracy``).

    Random starts: pass an :class:`~stabletrain.seeding.ExampleRNG` with one
    stream per row of ``x`` (e.g. ``ExampleRNG.for_examples(range(len(x)),
    seed, 'attack', name)``) and each example's starts come from its own
    stream, restarted for every ε (common random numbers along the curve), so
    the curve does not depend on ``batch_size``. A :class:`torch.Generator`
    is drawn from batch after batch and its result does depend on it.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> curve = robustness_curve(model, torch.rand(8, 1, 4, 4), torch.arange(8) % 3, [0.0, 0.1], steps=3)
        >>> [row["epsilon"] for row in curve]
        [0.0, 0.1]
    """
    return attack_curve(model, x, y, epsilons, attack=attack, batch_size=batch_size, generator=generator,
                        progress=progress, only_unbroken=only_unbroken, **options).rows
