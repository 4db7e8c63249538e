"""Optimizers, learning-rate schedules and frozen batch norm for training and fine-tuning.

The parameters are split into the classifier head and the backbone (see
:func:`stabletrain.models.classifier_layer`), so that a new head can learn
at ``lr`` while a pretrained backbone moves at ``lr × backbone_lr_scale``,
as in the paper's fine-tuning of an ImageNet network.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..models.wrap import classifier_layer, unwrap

__all__ = ["parameter_groups", "build_optimizer", "lr_factor", "build_scheduler", "freeze_batchnorm"]


def parameter_groups(model: nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float) -> list[dict]:
    """``[backbone, head]`` parameter groups (weight decay on every parameter, as torch's AdamW default).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
        >>> [(g["name"], len(g["params"]), g["lr"]) for g in parameter_groups(net, 0.1, 0.5, 1e-4)]
        [('backbone', 4, 0.05), ('head', 2, 0.1)]
    """
    inner = unwrap(model)
    head = classifier_layer(inner)
    head_ids = {id(p) for p in head[1].parameters()} if head is not None else set()
    groups: dict[str, dict[str, Any]] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head_ids else "backbone"
        group = groups.setdefault(part, {"name": part, "params": [], "weight_decay": weight_decay,
                                         "lr": lr * (backbone_lr_scale if part == "backbone" else 1.0)})
        group["params"].append(p)
    return [groups[k] for k in ("backbone", "head") if k in groups]


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum over :func:`parameter_groups` of ``model``.

    A group at learning rate 0 (``backbone_lr_scale=0``) is frozen: its
    parameters are left out of the optimizer and get no gradients.
    """
    if config.backbone_lr_scale == 1.0:  # one group, as stabletrain 0.1 stored it (so its checkpoints resume)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    else:
        groups = parameter_groups(model, config.lr, config.backbone_lr_scale, config.weight_decay)
    for group in groups:
        if group["lr"] == 0:
            for p in group["params"]:
                p.requires_grad_(False)
    groups = [g for g in groups if g["lr"] > 0]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine decay to 0 or constant.

    Example:
        >>> [round(lr_factor(s, 10, 2, "cosine"), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    done = min(max(step - warmup_steps, 0), span)
    return 0.5 * (1.0 + math.cos(math.pi * done / span))


def build_scheduler(optimizer: torch.optim.Optimizer, config: Any,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule of :func:`lr_factor` for ``config.epochs`` epochs and ``config.warmup_epochs``."""
    total = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    factor: Callable[[int], float] = lambda step: lr_factor(step, total, warmup, config.schedule)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every batch-norm layer in eval mode, so its running statistics stay as loaded; returns how many.

    Call it after ``model.train()``. The affine weights still train.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
        >>> freeze_batchnorm(net), net[1].training
        (1, False)
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            count += 1
    return count
