"""Pretrained weights from any tool: a plain state dict, a timm or torchvision checkpoint, or a stabletrain checkpoint.

:func:`load_pretrained` reads the file with ``weights_only=True`` (or
safetensors), finds the state dict inside the usual containers
(``state_dict``, ``model``, ``state_dict_ema`` …, a ``module.`` prefix from
DDP), matches its keys to the model — the inner network of a
:class:`~stabletrain.models.NormalizedClassifier` for weights saved without
stabletrain's normalization — and reports what was missing, unexpected or
replaced. A classifier head whose class count differs is replaced by the
model's freshly initialized one; any other mismatch is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..checks import StableTrainError
from .wrap import NormalizedClassifier, classifier_layer

__all__ = ["WeightsReport", "read_weights", "load_pretrained"]

_CONTAINERS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "module", "net", "weights")
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")


@dataclass
class WeightsReport:
    """What :func:`load_pretrained` did: key counts, and the keys it could not use."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    replaced_head: str | None = None

    def lines(self) -> list[str]:
        """Human-readable lines for the log."""
        out = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.replaced_head:
            out.append(self.replaced_head)
        if self.missing:
            out.append(f"missing from the file, left as initialized: {_listing(self.missing)}")
        if self.unexpected:
            out.append(f"in the file but not in the model, ignored: {_listing(self.unexpected)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing, "unexpected": self.unexpected,
                "replaced_head": self.replaced_head}


def _listing(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _is_state(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(k, str) for k in value) \
        and all(isinstance(v, torch.Tensor) for v in value.values())


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file, with ``weights_only=True``; a file without one is a clear error.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> torch.save({"state_dict": {"module.fc.weight": torch.zeros(2, 3)}}, f)
        >>> list(read_weights(f))
        ['module.fc.weight']
    """
    from ..files import safe_torch_load

    file = Path(path)
    if not file.is_file():
        raise StableTrainError(f"weights file not found: {file}")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise StableTrainError(f"{file} is a safetensors file; install safetensors to read it") from None
        try:
            return dict(load_file(str(file)))
        except Exception as err:
            raise StableTrainError(f"cannot read {file} as safetensors ({type(err).__name__}: {err})") from None
    obj = safe_torch_load(file)
    if isinstance(obj, nn.Module):  # cannot happen with weights_only, kept for clarity
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("stabletrain.checkpoint"):
        obj = obj.get("state_dict")
    for _ in range(3):
        if _is_state(obj):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _CONTAINERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                # a state dict with a few non-tensor entries (torchvision's _metadata is an attribute, not a key)
                tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
                if tensors and len(tensors) >= 0.9 * len(obj):
                    return tensors
                break
            obj = inner
        else:
            break
    keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else type(obj).__name__
    raise StableTrainError(f"{file} holds no state dict of tensors (found: {keys})")


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _best_alignment(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The renaming of ``state`` (stripping common wrapper prefixes) that shares the most keys with ``own``."""
    best, best_hits = state, len(own.keys() & state.keys())
    frontier = [state]
    for _ in range(2):
        next_frontier = []
        for candidate in frontier:
            for prefix in _PREFIXES:
                if any(k.startswith(prefix) for k in candidate):
                    stripped = _strip(candidate, prefix)
                    hits = len(own.keys() & stripped.keys())
                    if hits > best_hits:
                        best, best_hits = stripped, hits
                    next_frontier.append(stripped)
        frontier = next_frontier
    return best


def load_pretrained(model: nn.Module, path: str | Path, *, replace_head: bool = True) -> WeightsReport:
    """Load a weights file into ``model`` and say what happened (see the module docstring).

    Weights saved from the bare network load into the inner network of a
    :class:`~stabletrain.models.NormalizedClassifier` (its normalization is
    kept); weights that hold stabletrain's ``normalize.*`` buffers load into
    the wrapper. Parameters of the model that the file lacks are an error
    (buffers such as ``num_batches_tracked`` may be missing). With
    ``replace_head``, a classifier head of another class count is left as
    initialized and reported.

    Example:
        >>> import tempfile, os
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> torch.save({"model": {"module.1.weight": torch.ones(1000, 12), "module.1.bias": torch.ones(1000)}}, f)
        >>> report = load_pretrained(NormalizedClassifier(net, [0.5] * 3, [0.2] * 3), f)
        >>> report.replaced_head
        'replaced the classifier head 1: the file has 1000 classes, the model 5'
    """
    source = str(path)
    state = read_weights(path)
    target = model
    if isinstance(model, NormalizedClassifier) and not any(k.startswith("normalize.") for k in state):
        target = model.model
    own = target.state_dict()
    state = _best_alignment(state, own)
    shared = own.keys() & state.keys()
    if not shared:
        raise StableTrainError(f"weights {source} do not match the model: none of its {len(state)} keys (e.g. "
                               f"{_listing(sorted(state), 3)}) is a key of the model (e.g. {_listing(list(own), 3)})")
    head = classifier_layer(target)
    head_prefix = f"{head[0]}." if head is not None and head[0] else None
    replaced = None
    mismatched = [k for k in sorted(shared) if tuple(state[k].shape) != tuple(own[k].shape)]
    head_keys = [k for k in mismatched if head_prefix and k.startswith(head_prefix)]
    other = [k for k in mismatched if k not in head_keys]
    if other:
        k = other[0]
        raise StableTrainError(f"weights {source} do not fit the model: {k} is {tuple(state[k].shape)} in the file, "
                               f"{tuple(own[k].shape)} in the model" + (f" (and {len(other) - 1} more)"
                                                                        if len(other) > 1 else ""))
    if head_keys:
        if not replace_head:
            raise StableTrainError(f"weights {source}: the classifier head {head[0]} has another class count")
        weight = state.get(f"{head_prefix}weight")
        file_classes = int(weight.shape[0]) if weight is not None else "another number of"
        model_classes = int(own[f"{head_prefix}weight"].shape[0]) if f"{head_prefix}weight" in own else "?"
        replaced = (f"replaced the classifier head {head[0]}: the file has {file_classes} classes, the model "
                    f"{model_classes}")
    usable = {k: state[k] for k in shared if k not in head_keys}
    parameters = {name for name, _ in target.named_parameters()}
    missing = sorted(k for k in own if k not in usable and not (head_prefix and k.startswith(head_prefix)
                                                                 and head_keys))
    missing_parameters = [k for k in missing if k in parameters]
    if missing_parameters:
        raise StableTrainError(f"weights {source} do not match the model: parameter(s) {_listing(missing_parameters)} "
                               f"are not in the file ({len(usable)} of {len(own)} keys matched)")
    unexpected = sorted(k for k in state if k not in own)
    target.load_state_dict({**own, **usable})
    return WeightsReport(source, len(usable), missing, unexpected, replaced)
