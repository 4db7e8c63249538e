"""The one rule that decides whether a stored run is "the same run" as a config.

Resume, the demo's reuse of trained models and ``compare``'s reuse all ask
it. Every option decides the result except the execution options of
:class:`~stabletrain.training.config.TrainConfig` (``device``, ``compile``,
``checkpoint_every``, ``workers``). Stored configs are first resolved like
a new one (old flat configs included), so a default filled in now compares
equal to the same value written out then.

>>> from stabletrain.training.config import TrainConfig
>>> stored = TrainConfig(method="stability", alpha=1.0).validated().to_dict()
>>> differing_options(stored, TrainConfig(method="stability", alpha=2.0).validated())
['alpha']
>>> differing_options(stored, TrainConfig(method="stability", alpha=1.0, device="cpu").validated())
[]
"""

from __future__ import annotations

from typing import Any

from ..checks import StableTrainError
from .config import EXECUTION_OPTIONS, TrainConfig

__all__ = ["differing_options", "same_run", "stored_config"]


def stored_config(stored: dict[str, Any]) -> TrainConfig:
    """The resolved :class:`TrainConfig` of a stored run's config (checkpoint or ``config.yaml``)."""
    if not isinstance(stored, dict):
        raise StableTrainError(f"a stored run's config must be a mapping, got {type(stored).__name__}")
    return TrainConfig.from_stored(stored)


def differing_options(stored: dict[str, Any] | TrainConfig, config: TrainConfig, *,
                      allow_more_epochs: bool = False) -> list[str]:
    """The result-deciding options in which ``config`` differs from a stored run (empty: the same run).

    Grouped options are reported by their own name (``alpha``, ``width``).
    With ``allow_more_epochs`` (resume), ``epochs`` may be larger than stored.
    """
    old = (stored if isinstance(stored, TrainConfig) else stored_config(stored)).to_dict()
    new = config.to_dict()
    differ: list[str] = []
    for key, value in new.items():
        if key in EXECUTION_OPTIONS:
            continue
        if key == "epochs" and allow_more_epochs:
            continue
        if key.endswith("_args"):
            before = old.get(key, {})
            differ += [name for name in sorted(set(value) | set(before)) if before.get(name) != value.get(name)]
        elif old.get(key) != value:
            differ.append(key)
    return differ


def same_run(stored: dict[str, Any] | TrainConfig, config: TrainConfig) -> bool:
    """True when a stored run computed what ``config`` would compute (see :func:`differing_options`)."""
    try:
        return not differing_options(stored, config)
    except StableTrainError:  # a stored config this version cannot read is not the same run
        return False
