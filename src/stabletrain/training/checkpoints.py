"""Checkpoint files: their format, reading them, and rebuilding the model they hold in a fresh process."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import StableTrainError
from ..files import safe_torch_load
from ..models import load_weights
from ..models.specs import check_spec_source, model_factory
from ..registry import check_options

logger = logging.getLogger("stabletrain")

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_model", "build_from_spec"]

CHECKPOINT_FORMAT = "stabletrain.checkpoint/1"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a stabletrain checkpoint (``torch.load(weights_only=True)``)."""
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise StableTrainError(f"{path} is not a stabletrain checkpoint")
    spec = checkpoint.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict) \
            or not isinstance(checkpoint.get("state_dict"), dict):
        raise StableTrainError(f"{path} is a stabletrain checkpoint without a usable model spec or weights")
    return checkpoint


def build_from_spec(spec: dict[str, Any], source: str) -> nn.Module:
    """Build the model a checkpoint's spec names, finding the extension that provides it.

    The spec records the registry name, the constructor arguments and the
    package that registered the model; a model from an extension that is not
    installed gets one line saying which package it needs.
    """
    factory = model_factory(spec["name"], needed_by=f"checkpoint {source}", provider=spec.get("provider"))
    for line in check_spec_source(spec["name"], spec.get("source"), f"checkpoint {source}"):
        logger.warning("%s", line)
    kwargs = dict(spec["kwargs"])
    check_options(factory, kwargs, f"model {spec['name']!r} of checkpoint {source}")
    return factory(**kwargs)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns ``(model, checkpoint)``, model in eval mode.

    Works in a fresh process for models of extensions too: the registry
    loads the ``stabletrain.plugins`` entry points when a name is missing.
    """
    checkpoint = load_checkpoint(path)
    model = build_from_spec(checkpoint["model"], str(path))
    load_weights(model, checkpoint["state_dict"], str(path))
    return model.to(device).eval(), checkpoint
