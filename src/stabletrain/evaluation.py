"""Evaluation of classifiers on clean and distorted inputs.

For every distortion the test images are distorted **once**, with a seed
derived from the run's seed and the distortion spec, and every model is
evaluated on the same distorted images, so differences between models are
not sampling noise of the distortion.

Per (model, distortion) it reports:

* ``accuracy`` — top-1 accuracy on the distorted images;
* ``mean_kl`` — the mean KL(P(y|x) ‖ P(y|x̃)) between the clean and the
  distorted prediction, the quantity stability training minimizes;
* ``flip_rate`` — the fraction of images whose top-1 class changes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import ImageDataset
from .distortions import Distortion, Identity
from .objectives import stability_kl
from .seeding import make_generator

__all__ = ["eval_mode", "predict_logits", "accuracy", "evaluate_distortions", "results_by_model"]


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


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, returned on the CPU as float32."""
    device = _device_of(model)
    with eval_mode(model):
        outputs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outputs)


def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> data = ImageDataset(torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long))
        >>> 0.0 <= accuracy(SmallCNN(1, 2, width=4), data) <= 1.0
        True
    """
    logits = predict_logits(model, dataset.x, batch_size)
    return int((logits.argmax(1) == dataset.y.cpu()).sum()) / max(len(dataset), 1)


@torch.no_grad()
def evaluate_distortions(
    models: Mapping[str, nn.Module],
    dataset: ImageDataset,
    distortions: Sequence[Distortion],
    *,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = True,
) -> list[dict]:
    """Evaluate several models on the clean test set and under each distortion.

    Returns one row per (model, distortion), the clean rows first, with
    keys ``model, distortion, family, param, accuracy, mean_kl, flip_rate, n``.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> from stabletrain.distortions import parse_distortions
        >>> data = ImageDataset(torch.rand(8, 1, 16, 16), torch.arange(8) % 2)
        >>> rows = evaluate_distortions({"m": SmallCNN(1, 2, width=4)}, data, parse_distortions("jpeg-50"),
        ...                             progress=False)
        >>> [r["distortion"] for r in rows]
        ['clean', 'jpeg-50']
    """
    labels = dataset.y.cpu()
    clean_logits = {name: predict_logits(model, dataset.x, batch_size) for name, model in models.items()}
    rows = []
    for name, logits in clean_logits.items():
        rows.append({"model": name, "distortion": "clean", "family": "clean", "param": None,
                     "accuracy": int((logits.argmax(1) == labels).sum()) / len(labels),
                     "mean_kl": 0.0, "flip_rate": 0.0, "n": len(labels)})
    sweep = [d for d in distortions if not isinstance(d, Identity)]
    bar = tqdm(sweep, desc="distortions", unit="spec", disable=not progress or None, leave=False)
    for distortion in bar:
        bar.set_postfix_str(distortion.spec)
        generator = make_generator(seed, "distortion", distortion.spec)
        sums = {name: {"correct": 0.0, "kl": 0.0, "flips": 0.0} for name in models}
        for start in range(0, len(dataset), batch_size):
            distorted = distortion(dataset.x[start:start + batch_size], generator)
            y = labels[start:start + batch_size]
            for name, model in models.items():
                logits = predict_logits(model, distorted, batch_size)
                clean = clean_logits[name][start:start + batch_size]
                sums[name]["correct"] += float((logits.argmax(1) == y).sum())
                sums[name]["kl"] += float(stability_kl(clean, logits, reduction="sum"))
                sums[name]["flips"] += float((logits.argmax(1) != clean.argmax(1)).sum())
        n = len(dataset)
        for name in models:
            rows.append({"model": name, "distortion": distortion.spec, "family": distortion.family,
                         "param": distortion.param, "accuracy": sums[name]["correct"] / n,
                         "mean_kl": sums[name]["kl"] / n, "flip_rate": sums[name]["flips"] / n, "n": n})
    return rows


def results_by_model(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Nest evaluation rows as ``{model: {'clean_accuracy': …, 'distortions': {spec: {...}}}}``."""
    nested: dict[str, dict] = {}
    for row in rows:
        entry = nested.setdefault(row["model"], {"clean_accuracy": None, "distortions": {}})
        if row["distortion"] == "clean":
            entry["clean_accuracy"] = row["accuracy"]
        else:
            entry["distortions"][row["distortion"]] = {k: row[k] for k in ("family", "param", "accuracy",
                                                                            "mean_kl", "flip_rate", "n")}
    return nested
