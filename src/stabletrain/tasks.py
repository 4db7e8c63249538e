"""Task objects: what differs between training a classifier and training an embedder.

The training loop in :mod:`stabletrain.training` is the same for every
task. A task says how to load the data, which model and objective to build,
how to cut an epoch into batches, and how to score the model after each
epoch. Objectives return ``{'loss', 'output', ...}`` whatever the task.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import StableTrainError
from .data import DataSplit, load_data, load_patches, sample_triplets
from .evaluation import accuracy, predict_logits
from .models import load_weights
from .objectives import Objective, build_objective, feature_distance
from .seeding import make_generator

__all__ = ["Task", "ClassificationTask", "SimilarityTask", "get_task", "TASK_NAMES", "triplet_accuracy"]

TASK_NAMES = ("classification", "similarity", "jets")
#: Options of the methods beyond stability training (see :mod:`stabletrain.consistency`).
METHOD_OPTIONS = ("jsd_lambda", "trades_beta", "adv_epsilon", "adv_steps", "adv_step_size", "consistency_copies",
                  "consistency_lambda", "consistency_eta")


def _index_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:  # batch norm cannot train on a single example
        batches.pop()
    return batches


def _spec(name: str, config: Any, data: DataSplit) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the model: its registry name and constructor arguments."""
    mean, std = data.channel_stats()
    kwargs = {"in_channels": data.channels, "num_classes": data.num_classes, "width": config.width, "mean": mean,
              "std": std}
    norm = getattr(config, "norm", "batch")
    if norm != "batch":  # only then, so that batch-norm checkpoints keep the spec they always had
        kwargs["norm"] = norm
    return {"name": name, "kwargs": kwargs}


class Task:
    """Base class; see :class:`ClassificationTask` and :class:`SimilarityTask`."""

    name = ""
    #: The history column that summarizes an epoch on the test set.
    metric = ""

    def load_data(self, config: Any) -> DataSplit:
        raise NotImplementedError

    def model_spec(self, config: Any, data: DataSplit) -> dict[str, Any]:
        raise NotImplementedError

    def objective(self, config: Any) -> Objective:
        extra = {name: getattr(config, name) for name in METHOD_OPTIONS if hasattr(config, name)}
        return build_objective(config.method, task=self.name, alpha=config.alpha, sigma=config.sigma,
                               detach_clean=config.detach_clean, batching=config.batching, bn_stats=config.bn_stats,
                               margin=config.margin, **extra)

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Row indices for each batch of one epoch (into the training set)."""
        raise NotImplementedError

    def inputs(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The objective's ``(inputs, target)`` for one batch of indices."""
        raise NotImplementedError

    def correct(self, output: torch.Tensor, target: Any) -> int:
        """How many examples of a training batch the model got right."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data: DataSplit) -> dict[str, float]:
        raise NotImplementedError

    def init_from(self, model: nn.Module, checkpoint: dict, source: str) -> None:
        """Load the weights of ``checkpoint`` into ``model`` (fine-tuning)."""
        load_weights(model, checkpoint["state_dict"], source)


class ClassificationTask(Task):
    """Image classification with cross-entropy; scored by test accuracy."""

    name = "classification"
    metric = "test_accuracy"

    def load_data(self, config: Any) -> DataSplit:
        return load_data(config.data, image_size=config.image_size, split_seed=config.split_seed,
                         test_fraction=config.test_fraction)

    def model_spec(self, config: Any, data: DataSplit) -> dict[str, Any]:
        return _spec(config.model, config, data)

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        return _index_batches(torch.randperm(len(data.train), generator=generator), batch_size)

    def inputs(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return x[index], y[index]

    def correct(self, output: torch.Tensor, target: Any) -> int:
        return int((output.argmax(1) == target).sum())

    def evaluate(self, model: nn.Module, data: DataSplit) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, data.test)}


@torch.no_grad()
def triplet_accuracy(features: torch.Tensor, triplets: torch.Tensor) -> float:
    """The ranking score: the fraction of (q, p, n) triplets with ``d(q, p) < d(q, n)``.

    Example:
        >>> f = torch.tensor([[0.0], [1.0], [5.0]])
        >>> triplet_accuracy(f, torch.tensor([[0, 1, 2], [0, 2, 1]]))
        0.5
    """
    q, p, n = features[triplets[:, 0]], features[triplets[:, 1]], features[triplets[:, 2]]
    return float((feature_distance(q, p, "l2") < feature_distance(q, n, "l2")).double().mean())


class SimilarityTask(Task):
    """Deep-ranking embeddings trained on triplets of tiles.

    A triplet is (query tile, another tile of the same source image, a tile of
    another source); each epoch draws one fresh triplet per training tile.
    Scored by the ranking score on a fixed set of test triplets.
    """

    name = "similarity"
    metric = "test_triplet_accuracy"

    def load_data(self, config: Any) -> DataSplit:
        return load_patches(config.data, image_size=config.image_size, split_seed=config.split_seed,
                            test_fraction=config.test_fraction)

    def model_spec(self, config: Any, data: DataSplit) -> dict[str, Any]:
        return _spec("small_embedder" if config.model == "small_cnn" else config.model, config, data)

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        triplets = sample_triplets(data.train.y, generator)
        order = torch.randperm(len(triplets), generator=generator)
        return [triplets[b] for b in _index_batches(order, batch_size)]

    def inputs(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return x[index], None

    def correct(self, output: torch.Tensor, target: Any) -> int:
        q, p, n = output[:, 0], output[:, 1], output[:, 2]
        return int((feature_distance(q, p, "l2") < feature_distance(q, n, "l2")).sum())

    def test_triplets(self, data: DataSplit) -> torch.Tensor:
        seed = int(data.info.get("split_seed", 0))
        return sample_triplets(data.test.y, make_generator(seed, "test-triplets"))

    def evaluate(self, model: nn.Module, data: DataSplit) -> dict[str, float]:
        features = predict_logits(model, data.test.x)
        return {"test_triplet_accuracy": triplet_accuracy(features, self.test_triplets(data))}

    def init_from(self, model: nn.Module, checkpoint: dict, source: str) -> None:
        """Same-kind checkpoints load whole; a classifier loads into the embedder's backbone."""
        state = checkpoint["state_dict"]
        if checkpoint["model"]["name"] == "small_cnn" and hasattr(model, "backbone"):
            own = model.backbone.state_dict()
            usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            missing = [k for k in own if k not in usable and not k.startswith("head.")]
            if missing:
                raise StableTrainError(f"checkpoint {source} does not fit this embedder: missing or mis-shaped "
                                       f"{', '.join(missing[:3])}")
            model.backbone.load_state_dict({**own, **usable})
            return
        load_weights(model, state, source)


def get_task(name: str) -> Task:
    """The task object for ``'classification'``, ``'similarity'`` or ``'jets'``."""
    if name == "classification":
        return ClassificationTask()
    if name == "similarity":
        return SimilarityTask()
    if name == "jets":
        from .jets.tagging import JetTaggingTask  # imported here: it builds on this module

        return JetTaggingTask()
    raise StableTrainError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
