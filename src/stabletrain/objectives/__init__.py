"""Training objectives: stability training and the methods it is compared with.

An objective is an :class:`torch.nn.Module` that takes ``(model, x, y)`` and
returns a dict with ``'loss'`` (what to back-propagate), ``'output'`` (the
logits the task loss saw) and each part of the loss detached for logging. It
drops into any training loop:

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> objective = StabilityObjective(nn.CrossEntropyLoss(), alpha=0.01, sigma=0.04)
>>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
>>> out = objective(model, x, y)
>>> out["loss"].backward()
>>> sorted(out)
['loss', 'output', 'stability_loss', 'task_loss']

Methods are found by name in :data:`stabletrain.registry.OBJECTIVES`, per
task (``classification`` or ``similarity``). Each method's options are the
keyword arguments of its factory, with the factory's own defaults: an
unknown or misspelled option is an error.

=============== ===================================================== ===========================
method          options (defaults)                                    module
=============== ===================================================== ===========================
``plain``       —                                                     :mod:`.classification`
``gaussian``    sigma (0.2), clamp (true), batching (concat),         :mod:`.classification`
                bn_stats (both): task loss on clean and noisy copies
``gaussian-     sigma (0.2), clamp (true): task loss on noisy copies  :mod:`.classification`
noisy``         only
``stability``   alpha (4), sigma (0.2), detach_clean, batching,       :mod:`.classification`
                bn_stats, clamp
``jsd``         jsd_lambda (12), augmix_width (3), augmix_depth       :mod:`.consistency`
                (-1: 1 to 3), augmix_severity (3), augmix_alpha (1):
                AugMix views
``jsd-          sigma (0.1), jsd_lambda (12): Gaussian-noise views    :mod:`.consistency`
gaussian``
``trades``      trades_beta (6), adv_epsilon, adv_steps, adv_step_size :mod:`.consistency`
``adversarial`` adv_epsilon (0.031), adv_steps (10), adv_step_size    :mod:`.consistency`
``fgsm-         adv_epsilon (0.031), adv_weight (0.5), batching        :mod:`.adversarial`
adversarial``   (concat), bn_stats (both): clean and FGSM copies
                (Stein et al. 2022)
``consistency`` sigma (0.25), consistency_copies (2),                 :mod:`.consistency`
                consistency_lambda (20), consistency_eta (0.5)
=============== ===================================================== ===========================

``trades``, ``adversarial`` and ``fgsm-adversarial`` take an ``attack``
handed in by code (like ``perturbation``, not an option): the inner attack
that finds their training examples, L∞ PGD in [0, 1] units unless the task
provides its own (:meth:`stabletrain.tasks.Task.attack`; see
:mod:`stabletrain.objectives.adversarial`).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..checks import StableTrainError
from ..losses import (
    DISTANCES,
    EmbeddingStabilityLoss,
    StabilityKLLoss,
    TripletRankingLoss,
    embedding_stability,
    feature_distance,
    stability_kl,
    triplet_ranking_loss,
)
from ..registry import OBJECTIVES, check_options, factory_options
from .base import BATCHINGS, BN_STATS, Objective, bn_running_stats_frozen, resolve_batching, two_copy_forward
from .classification import (DEFAULT_ALPHA, DEFAULT_SIGMA, GaussianAugmentation, NoisyOnlyAugmentation, PlainObjective,
                             StabilityObjective)
from .adversarial import FGSMAdversarialObjective, InnerAttack, LinfAttack
from .consistency import AdversarialObjective, ConsistencyObjective, JSDObjective, TradesObjective
from .ranking import TRIPLET_METHODS, TripletObjective

__all__ = [
    "stability_kl", "StabilityKLLoss", "feature_distance", "embedding_stability", "EmbeddingStabilityLoss",
    "triplet_ranking_loss", "TripletRankingLoss", "DISTANCES",
    "Objective", "PlainObjective", "GaussianAugmentation", "NoisyOnlyAugmentation", "StabilityObjective", "TripletObjective",
    "JSDObjective", "TradesObjective", "AdversarialObjective", "ConsistencyObjective", "FGSMAdversarialObjective",
    "InnerAttack", "LinfAttack",
    "build_objective", "register_objective", "available_methods", "method_options", "objective_factory",
    "bn_running_stats_frozen", "resolve_batching", "two_copy_forward", "BATCHINGS", "BN_STATS",
    "DEFAULT_ALPHA", "DEFAULT_SIGMA", "OBJECTIVE_TASKS",
]

#: The task families that objectives are registered for.
OBJECTIVE_TASKS = ("classification", "similarity")


def _key(task: str, name: str) -> str:
    return f"{task}/{name}"


def register_objective(name: str, factory: Callable[..., Objective] | str, task: str = "classification") -> None:
    """Make a training method available by name to :func:`build_objective`, configs and the CLI.

    The factory's keyword arguments are the method's options, with their
    defaults; ``task_loss`` and ``perturbation`` (objects handed in by code)
    are not options. It must not swallow unknown keywords with ``**kwargs``
    if its options are to be checked.
    """
    if task not in OBJECTIVE_TASKS:
        raise StableTrainError(f"objectives are registered for {', '.join(OBJECTIVE_TASKS)}, got task {task!r}")
    OBJECTIVES.register(_key(task, name), factory, override=True)


def available_methods(task: str = "classification") -> list[str]:
    """The method names accepted by :func:`build_objective` for ``task``."""
    prefix = _key(task, "")
    return sorted(name[len(prefix):] for name in OBJECTIVES.names() if name.startswith(prefix))


def objective_factory(method: str, task: str = "classification") -> Callable[..., Objective]:
    """The factory registered for ``method`` under ``task``; an unknown name is one clear error."""
    if task not in OBJECTIVE_TASKS:
        raise StableTrainError(f"unknown task {task!r} for objectives; known: {', '.join(OBJECTIVE_TASKS)}")
    if _key(task, method) not in OBJECTIVES:
        raise StableTrainError(f"unknown method {method!r} for {task}; known methods: "
                               f"{', '.join(available_methods(task))}")
    return OBJECTIVES.get(_key(task, method))


def method_options(method: str, task: str = "classification") -> dict[str, Any]:
    """``{option: default}`` of ``method``: the only source of its defaults.

    Example:
        >>> method_options("stability")["alpha"], method_options("jsd-gaussian")["sigma"]
        (4.0, 0.1)
    """
    return {name: p.default for name, p in factory_options(objective_factory(method, task)).items()}


def build_objective(method: str, *, task: str = "classification", task_loss: nn.Module | None = None,
                    perturbation: nn.Module | None = None, attack: InnerAttack | None = None,
                    **options: Any) -> Objective:
    """Build a training objective by name, with the method's own defaults for what is not given.

    ``task='similarity'`` gives the triplet-ranking versions, which take
    ``B×3×C×H×W`` triplet batches. ``perturbation`` replaces the Gaussian
    noise of the methods that take one, ``attack`` the L∞ inner attack of
    the adversarial methods (:mod:`stabletrain.objectives.adversarial`). An
    option the method does not take is an error, never silently ignored.

    Example:
        >>> build_objective("stability", alpha=0.1, sigma=0.05).hyperparameters()["alpha"]
        0.1
        >>> build_objective("stability", alhpa=100)
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: unknown option 'alhpa' for method 'stability' (classification); its options: alpha, sigma, detach_clean, batching, bn_stats, clamp
    """
    factory = objective_factory(method, task)
    check_options(factory, options, f"method {method!r} ({task})")
    extra: dict[str, Any] = {"task_loss": task_loss} if task_loss is not None else {}
    if perturbation is not None:
        if "perturbation" not in _parameters(factory):
            raise StableTrainError(f"method {method!r} adds no noise, so it takes no perturbation")
        extra["perturbation"] = perturbation
    if attack is not None:
        if "attack" not in _parameters(factory):
            raise StableTrainError(f"method {method!r} runs no inner attack, so it takes no attack")
        extra["attack"] = attack
    return factory(**extra, **options)


def _parameters(factory: Callable[..., Any]) -> set[str]:
    import inspect

    target = factory.__init__ if inspect.isclass(factory) else factory
    return set(inspect.signature(target).parameters)


# -- the built-in methods ------------------------------------------------------------------------------------------
# The factories of the consistency family keep the option names of the command line (jsd_lambda, adv_epsilon, ...),
# so that one flag means one thing for every method that takes it.

def jsd(task_loss: nn.Module | None = None, jsd_lambda: float = 12.0, augmix_width: int = 3, augmix_depth: int = -1,
        augmix_severity: int = 3, augmix_alpha: float = 1.0, perturbation: nn.Module | None = None) -> JSDObjective:
    """AugMix's Jensen–Shannon consistency (λ = 12) over two AugMix views (width 3, depth 1–3, severity 3, α = 1).

    A ``perturbation`` handed in by code (a task's own noise model) replaces the AugMix views.
    """
    from ..augmix import AugMix

    views = perturbation if perturbation is not None else AugMix(width=augmix_width, depth=augmix_depth,
                                                                 severity=augmix_severity, alpha=augmix_alpha)
    return JSDObjective(task_loss, lam=jsd_lambda, perturbation=views)


def jsd_gaussian(task_loss: nn.Module | None = None, sigma: float = 0.1, jsd_lambda: float = 12.0,
                 perturbation: nn.Module | None = None) -> JSDObjective:
    """Jensen–Shannon consistency (λ = 12) over two Gaussian-noise views (σ = 0.1): ``jsd`` before AugMix views."""
    objective = JSDObjective(task_loss, lam=jsd_lambda, sigma=sigma, perturbation=perturbation)
    objective.method = "jsd-gaussian"
    return objective


def trades(task_loss: nn.Module | None = None, trades_beta: float = 6.0, adv_epsilon: float = 0.031,
           adv_steps: int = 10, adv_step_size: float = 0.007, attack: InnerAttack | None = None) -> TradesObjective:
    """TRADES with the reference defaults (β = 6, ε = 0.031, 10 steps of 0.007); ``attack``: the task's inner attack."""
    return TradesObjective(task_loss, beta=trades_beta, epsilon=adv_epsilon, steps=adv_steps, step_size=adv_step_size,
                           attack=attack)


def adversarial(task_loss: nn.Module | None = None, adv_epsilon: float = 0.031, adv_steps: int = 10,
                adv_step_size: float = 0.007, attack: InnerAttack | None = None) -> AdversarialObjective:
    """Madry PGD training (ε = 0.031, 10 steps of 0.007); ``attack``: the task's inner attack."""
    return AdversarialObjective(task_loss, epsilon=adv_epsilon, steps=adv_steps, step_size=adv_step_size,
                                attack=attack)


def fgsm_adversarial(task_loss: nn.Module | None = None, adv_epsilon: float = 0.031, adv_weight: float = 0.5,
                     batching: str = "concat", bn_stats: str = "both",
                     attack: InnerAttack | None = None) -> FGSMAdversarialObjective:
    """FGSM adversarial training mixed with clean examples (Stein et al. 2022; see
    :class:`~stabletrain.objectives.adversarial.FGSMAdversarialObjective`): ε = 0.031, weight 0.5.

    Example:
        >>> build_objective("fgsm-adversarial", adv_epsilon=0.01).hyperparameters()["adv_weight"]
        0.5
    """
    return FGSMAdversarialObjective(task_loss, epsilon=adv_epsilon, adv_weight=adv_weight, attack=attack,
                                    batching=batching, bn_stats=bn_stats)


def consistency(task_loss: nn.Module | None = None, sigma: float = 0.25, consistency_copies: int = 2,
                consistency_lambda: float = 20.0, consistency_eta: float = 0.5,
                perturbation: nn.Module | None = None) -> ConsistencyObjective:
    """Jeong and Shin's consistency regularization (m = 2, λ = 20, η = 0.5), with unclipped noise."""
    return ConsistencyObjective(task_loss, sigma=sigma, copies=consistency_copies, lam=consistency_lambda,
                                eta=consistency_eta, perturbation=perturbation)


def _triplet(method: str) -> Callable[..., TripletObjective]:
    def plain(task_loss: nn.Module | None = None, margin: float = 0.2) -> TripletObjective:
        return TripletObjective("plain", task_loss, margin=margin)

    def gaussian(task_loss: nn.Module | None = None, sigma: float = DEFAULT_SIGMA, margin: float = 0.2,
                 clamp: bool = True, batching: str = "concat", bn_stats: str = "both") -> TripletObjective:
        return TripletObjective("gaussian", task_loss, sigma=sigma, margin=margin, clamp=clamp, batching=batching,
                                bn_stats=bn_stats)

    def gaussian_noisy(task_loss: nn.Module | None = None, sigma: float = DEFAULT_SIGMA, margin: float = 0.2,
                       clamp: bool = True) -> TripletObjective:
        return TripletObjective("gaussian-noisy", task_loss, sigma=sigma, margin=margin, clamp=clamp)

    def stability(task_loss: nn.Module | None = None, alpha: float = DEFAULT_ALPHA, sigma: float = DEFAULT_SIGMA,
                  margin: float = 0.2, distance: str = "squared_l2", detach_clean: bool = False,
                  batching: str = "auto", bn_stats: str = "clean", clamp: bool = True) -> TripletObjective:
        return TripletObjective("stability", task_loss, alpha=alpha, sigma=sigma, margin=margin, distance=distance,
                                detach_clean=detach_clean, batching=batching, bn_stats=bn_stats, clamp=clamp)

    factory = {"plain": plain, "gaussian": gaussian, "gaussian-noisy": gaussian_noisy, "stability": stability}[method]
    factory.__qualname__ = f"triplet_{method.replace('-', '_')}"
    return factory


register_objective("plain", PlainObjective)
register_objective("gaussian", GaussianAugmentation)
register_objective("gaussian-noisy", NoisyOnlyAugmentation)
register_objective("stability", StabilityObjective)
register_objective("jsd", jsd)
register_objective("jsd-gaussian", jsd_gaussian)
register_objective("trades", trades)
register_objective("adversarial", adversarial)
register_objective("fgsm-adversarial", fgsm_adversarial)
register_objective("consistency", consistency)
for _method in TRIPLET_METHODS:
    register_objective(_method, _triplet(_method), task="similarity")
