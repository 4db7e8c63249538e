"""Where models and tensors live: the one device helper of stabletrain.

* :func:`resolve_device` turns a user's ``--device`` (``auto``, ``cpu``,
  ``cuda``, ``cuda:N``) into a checked :class:`torch.device`;
* :func:`device_of` is the device of a model's parameters (or buffers);
* :func:`eval_mode` puts models in eval mode within a block and restores
  each one's previous mode.

It sits at the bottom layer: it imports nothing from stabletrain but
:mod:`stabletrain.checks`.

>>> from torch import nn
>>> model = nn.Linear(2, 2).train()
>>> with eval_mode(model):
...     model.training
False
>>> model.training, device_of(model).type
(True, 'cpu')
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .checks import StableTrainError

__all__ = ["resolve_device", "device_of", "eval_mode"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; otherwise the named device, checked.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise StableTrainError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise StableTrainError(f"device {device!r} requested but CUDA is not available")
    return resolved


def device_of(model: nn.Module) -> torch.device:
    """The device of the first parameter (or buffer) of ``model``; CPU for a model without either."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode within the block and restore each one's previous mode."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
