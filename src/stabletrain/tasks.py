"""Task objects: what differs between training a classifier and training an embedder.

The training loop in :mod:`stabletrain.training` is the same for every
task. A task says how to load the data, which model and objective to build,
how to cut an epoch into batches, and how to score the model after each
epoch. Objectives return ``{'loss', 'output', ...}`` whatever the task.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .checks import StableTrainError
from .data import DataSplit, load_data, load_patches, sample_triplets
from .evaluation import accuracy, predict_logits
from .losses import feature_distance
from .models import load_weights
from .models.specs import model_factory, parse_model_spec, spec_source, uses_data_statistics
from .objectives import Objective, build_objective, objective_factory
from .registry import MODELS, TASKS
from .seeding import make_generator

logger = logging.getLogger("stabletrain.tasks")

__all__ = ["Task", "ClassificationTask", "SimilarityTask", "get_task", "index_batches", "task_names", "triplet_accuracy"]


def index_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size``; a last batch of one example is dropped (batch norm)."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:  # batch norm cannot train on a single example
        batches.pop()
    return batches


class Task:
    """What differs between tasks; see :class:`ClassificationTask` and :class:`SimilarityTask`.

    A task's own options are the keyword arguments of its constructor
    (``task_args`` of a :class:`~stabletrain.training.TrainConfig`); an
    extension registers a task class in :data:`stabletrain.registry.TASKS`.
    """

    name = ""
    #: The history column that summarizes an epoch on the test set.
    metric = ""
    #: Which family of objectives trains it (see :data:`stabletrain.objectives.OBJECTIVE_TASKS`).
    objective_task = "classification"
    #: Model keyword arguments that the task fills in from the data; they are not options of a config.
    supplied_model_args: tuple[str, ...] = ("in_channels", "num_classes", "mean", "std")

    def model_name(self, model: str) -> str:
        """The registry name of the model that ``--model`` names for this task."""
        return model

    def load_data(self, config: Any) -> DataSplit:
        raise NotImplementedError

    def model_kwargs(self, config: Any, data: DataSplit) -> dict[str, Any]:
        """The model arguments that come from the data (:attr:`supplied_model_args`).

        The data's channel statistics normalize registered and user models;
        ``timm:``/``torchvision:`` models keep their pretrained statistics
        (see :mod:`stabletrain.models.specs`).
        """
        kwargs: dict[str, Any] = {"in_channels": data.channels, "num_classes": data.num_classes}
        if uses_data_statistics(model_factory(self.model_name(config.model))):
            kwargs["mean"], kwargs["std"] = data.channel_stats()
        return kwargs

    def model_spec(self, config: Any, data: DataSplit) -> dict[str, Any]:
        """What a checkpoint stores to rebuild the model: the spec, its arguments, and who provides it.

        For a ``file.py:factory`` spec it also stores the file's resolved path
        and SHA-256, so a checkpoint loaded after the file changed says so.
        """
        name = self.model_name(config.model)
        given = {k: v for k, v in config.model_args.items() if not (k in ("mean", "std") and v is None)}
        spec = {"name": name, "kwargs": {**self.model_kwargs(config, data), **given},
                "provider": MODELS.provider(name) if parse_model_spec(name).kind == "registered" else None}
        source = spec_source(name)
        if source is not None:
            spec["source"] = source
        return spec

    def perturbation(self, method_args: dict[str, Any]) -> nn.Module | None:
        """The task's perturbation for methods that add noise, or None for the method's own Gaussian noise."""
        return None

    def attack(self, method_args: dict[str, Any]) -> Any:
        """The inner attack of the adversarial methods (``trades``, ``adversarial``, ``fgsm-adversarial``), or
        None for their L∞ PGD in [0, 1] units (see :mod:`stabletrain.objectives.adversarial`).

        A task whose inputs are not images in that sense (particle clouds,
        say) returns an attack under its own constraints; the method's
        ``adv_epsilon``, ``adv_steps`` and ``adv_step_size`` still reach it.
        """
        return None

    def objective(self, config: Any) -> Objective:
        """The training objective of ``config.method`` with ``config.method_args``."""
        import inspect

        factory = objective_factory(config.method, self.objective_task)
        target = factory.__init__ if inspect.isclass(factory) else factory
        parameters = inspect.signature(target).parameters
        perturbation = self.perturbation(config.method_args) if "perturbation" in parameters else None
        attack = self.attack(config.method_args) if "attack" in parameters else None
        return build_objective(config.method, task=self.objective_task, perturbation=perturbation, attack=attack,
                               **config.method_args)

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
        if getattr(config, "stream", False):
            from .data import STREAM_IMAGE_SIZE
            from .data.streams import load_stream

            return load_stream(config.data, image_size=config.image_size or STREAM_IMAGE_SIZE,
                               split_seed=config.split_seed, test_fraction=config.test_fraction,
                               augment=config.augment, crop_pct=config.crop_pct, seed=config.seed)
        return load_data(config.data, image_size=config.image_size, split_seed=config.split_seed,
                         test_fraction=config.test_fraction)

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Shuffled index batches; for a stream that deals its own samples (tar shards), ``N // batch_size``
        placeholder batches (``arange(batch_size)``) that only fix the epoch's steps and their sizes."""
        train = data.train
        if hasattr(train, "plan_epoch"):
            n = train.count()
            if n < batch_size:
                logger.warning("the training shards hold %d samples, fewer than one batch of %d: each epoch is one "
                               "batch, with samples repeated", n, batch_size)
            return [torch.arange(batch_size)] * max(n // batch_size, 1)
        return index_batches(torch.randperm(len(train), generator=generator), batch_size)

    def inputs(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return x[index], y[index]

    def correct(self, output: torch.Tensor, target: Any) -> int:
        return int((output.argmax(1) == target).sum())

    def evaluate(self, model: nn.Module, data: DataSplit, workers: int = 0,
                 batch_size: int = 512) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, data.test, batch_size=batch_size, workers=workers)}


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
    objective_task = "similarity"

    def load_data(self, config: Any) -> DataSplit:
        return load_patches(config.data, image_size=config.image_size, split_seed=config.split_seed,
                            test_fraction=config.test_fraction)

    def model_name(self, model: str) -> str:
        """``small_cnn`` is ``small_embedder``; a timm, torchvision or user model is embedded (``embed:SPEC``):
        the embedding is its pooled penultimate layer, not its logits."""
        if model == "small_cnn":
            return "small_embedder"
        if isinstance(model, str) and parse_model_spec(model).kind != "registered" and not model.startswith("embed:"):
            return f"embed:{model}"
        return model

    def batches(self, data: DataSplit, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        triplets = sample_triplets(data.train.y, generator)
        order = torch.randperm(len(triplets), generator=generator)
        return [triplets[b] for b in index_batches(order, batch_size)]

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
        name = checkpoint["model"]["name"]
        if hasattr(model, "backbone") and (name == "small_cnn" or not (name.startswith("embed:")
                                                                       or name == "small_embedder")):
            own = model.backbone.state_dict()
            usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            missing = [k for k in own if k not in usable and not k.startswith("head.")]
            if missing:
                raise StableTrainError(f"checkpoint {source} does not fit this embedder: missing or mis-shaped "
                                       f"{', '.join(missing[:3])}")
            model.backbone.load_state_dict({**own, **usable})
            return
        load_weights(model, state, source)


TASKS.register("classification", ClassificationTask)
TASKS.register("similarity", SimilarityTask)


def task_names() -> list[str]:
    """The registered tasks, the extensions' included (``jets`` comes from :mod:`stabletrain.jets`)."""
    return TASKS.names()


def get_task(name: str, **options: Any) -> Task:
    """The task object for a registered task name, built with its own options.

    Example:
        >>> get_task("classification").metric
        'test_accuracy'
    """
    return TASKS.build(name, **options)
