"""Compatibility: the consistency family moved to :mod:`stabletrain.objectives.consistency` and its losses to
:mod:`stabletrain.losses`; this module re-exports them."""

from .losses import consistency_regularizer, js_divergence
from .objectives.consistency import AdversarialObjective, ConsistencyObjective, JSDObjective, TradesObjective

__all__ = ["js_divergence", "consistency_regularizer", "JSDObjective", "TradesObjective", "AdversarialObjective",
           "ConsistencyObjective"]
