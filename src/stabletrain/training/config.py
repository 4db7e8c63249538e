"""The configuration of a training run: one dataclass, saved as ``config.yaml`` beside the results.

Options are held where they belong:

* top-level fields: the data, the optimization and how the run executes;
* ``model_args``: the model factory's own options (``width``, ``norm``, ...);
* ``method_args``: the training method's own options (``alpha``, ``sigma``, ...);
* ``task_args``: the task's own options (the jets task's ``noise``, ...).

Each group is checked against its factory's signature: an unknown or
misspelled option, or one that has no effect with the chosen method, model
or task, is an error. Missing options take the factory's own defaults, so
there is one source of truth for every default, and the resolved config
lists them all.

For convenience an option may be given flat (``TrainConfig(method="jsd",
sigma=0.1)``, ``alpha: 4`` in YAML, ``--alpha 4`` on the command line); it
is put in the group that takes it.

>>> config = TrainConfig(method="stability", alpha=1.0, width=8).validated()
>>> config.method_args["alpha"], config.method_args["sigma"], config.model_args["width"]
(1.0, 0.2, 8)
>>> TrainConfig(method="jsd", alpha=1.0)
Traceback (most recent call last):
...
stabletrain.checks.StableTrainError: option 'alpha' has no effect with method 'jsd'; its options: jsd_lambda, augmix_width, augmix_depth, augmix_severity, augmix_alpha
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from ..checks import StableTrainError, check_like_default, check_type
from ..devices import resolve_device
from ..models.specs import model_factory
from ..objectives import OBJECTIVE_TASKS, available_methods, objective_factory
from ..registry import MODELS, TASKS, factory_options

__all__ = ["TrainConfig", "is_known_option", "default_epochs", "CONVERGED_EPOCHS", "DEFAULT_EPOCHS", "SCRATCH_LR", "FINETUNE_LR", "FINETUNE_WARMUP_EPOCHS", "AMP_MODES", "OPTIMIZERS", "SCHEDULES", "AUGMENTATIONS", "EXECUTION_OPTIONS",
           "LEGACY_OPTIONS"]

#: ``amp`` settings: full float32, or bfloat16 autocast of the forward passes (CPU and CUDA).
AMP_MODES = ("off", "bf16")
#: The learning rate and warm-up of a run from scratch, and of a fine-tuning run (``weights`` or ``init`` given),
#: chosen by measurement: experiments/finetune_defaults.py and docs/results.md §A7.
SCRATCH_LR = 3e-3
FINETUNE_LR = 1e-3
FINETUNE_WARMUP_EPOCHS = 1.0
#: ``optimizer`` settings: AdamW, or SGD with (Nesterov-free) momentum as in the paper's fine-tuning.
OPTIMIZERS = ("adamw", "sgd")
#: ``schedule`` settings: cosine decay to zero over the run, or a constant rate (both after the warm-up).
SCHEDULES = ("cosine", "constant")
#: ``augment`` settings of streamed training images: none, a horizontal flip, or a random-resized crop and a flip.
AUGMENTATIONS = ("none", "flip", "crop-flip")
#: The model arguments a user may set although the task fills them in (they override the data's statistics).
OVERRIDABLE_MODEL_ARGS = ("mean", "std")

#: Flat options of configs written before options were grouped (stabletrain 0.1 checkpoints).
LEGACY_OPTIONS = ("width", "norm", "alpha", "sigma", "detach_clean", "batching", "bn_stats", "margin", "jsd_lambda",
                  "trades_beta", "adv_epsilon", "adv_steps", "adv_step_size", "consistency_copies",
                  "consistency_lambda", "consistency_eta", "noise", "jet_input")

_SCALARS = (bool, int, float, str, type(None))


#: Default epochs of a built-in data set, by (task, data, norm), chosen so that plain training converges
#: (experiments/default_epochs.py, docs/results.md §5): a longer budget no longer improves plain's test accuracy
#: beyond noise, and its train accuracy is 100 %. Other data get DEFAULT_EPOCHS.
CONVERGED_EPOCHS: dict[tuple[str, str, str], int] = {
    ("classification", "digits", "batch"): 12,  # 98.3 % at 12 against 98.6 at 30 (3 seeds): within noise
    ("classification", "digits", "group"): 30,  # 94.2 % at 12, 97.3 at 20, 98.1 at 30 (3 seeds)
    ("classification", "photos", "batch"): 40,  # 92.4 % at 12 and still rising (2 seeds); 95.9 at 40 (3 seeds)
    ("classification", "photos", "group"): 40,  # 97.0 % at 40 against 97.2 at 60 (3 seeds each): within noise
}
DEFAULT_EPOCHS = 12


def default_epochs(task: str, data: str, norm: str | None = None) -> int:
    """The epochs a run gets when none are given: :data:`CONVERGED_EPOCHS` for a built-in data set (its BatchNorm
    budget when its normalization was not measured), else :data:`DEFAULT_EPOCHS`.

    Example:
        >>> default_epochs("classification", "digits"), default_epochs("classification", "digits", "group")
        (12, 30)
        >>> default_epochs("classification", "/data/my-folder")
        12
    """
    key = (task, str(data), norm or "batch")
    return CONVERGED_EPOCHS.get(key, CONVERGED_EPOCHS.get((task, str(data), "batch"), DEFAULT_EPOCHS))


def is_known_option(name: str) -> bool:
    """Whether any registered method, model or task takes option ``name`` by name.

    Example:
        >>> is_known_option("alpha"), is_known_option("drop_rate")
        (True, False)
    """
    factories = [objective_factory(m, t) for t in OBJECTIVE_TASKS for m in available_methods(t)]
    factories += [MODELS.get(m) for m in MODELS.names()] + [TASKS.get(t) for t in TASKS.names()]
    return any(name in factory_options(f) for f in factories)


def _execution(default: Any) -> Any:
    """A field that changes how a run executes, not what it computes (ignored when runs are compared)."""
    return field(default=default, metadata={"execution": True})


@dataclass(init=False)
class TrainConfig:
    """Everything that defines a training run. Saved as ``config.yaml`` beside the results.

    Fields marked as execution options (``device``, ``compile``,
    ``checkpoint_every``, ``workers``) change how a run executes, not what
    it computes; every other field, and every option of the model, the
    method and the task, decides the result (see
    :func:`stabletrain.training.runs.same_run`).

    * ``sync_bn``: SyncBatchNorm across DDP ranks (GPUs only).
    * ``amp``: ``'bf16'`` runs forward passes under bfloat16 autocast.
    * ``compile``: run the model through ``torch.compile``.
    * ``checkpoint_every``: also checkpoint every that many steps (0: per epoch only).
    * ``workers``: DataLoader worker processes that gather batches (0: index
      the in-memory tensors directly on the device, the fastest for data that fits).

    Fine-tuning (the paper's main use):

    * ``weights``: a weights file (plain state dict, timm, torchvision or
      stabletrain checkpoint) loaded into the model before training; a head
      of another class count is replaced (see :func:`stabletrain.models.load_pretrained`).
    * ``init``: a stabletrain checkpoint to start from, with the model (and
      normalization) it stores.
    * ``lr`` and ``warmup_epochs`` default to :data:`SCRATCH_LR` and 0, or,
      when fine-tuning (``weights`` or ``init``), to :data:`FINETUNE_LR` and
      :data:`FINETUNE_WARMUP_EPOCHS`; the resolved config records the values.
    * ``optimizer`` (``adamw`` or ``sgd``), ``momentum`` (SGD), ``lr``, ``weight_decay``.
    * ``warmup_epochs``: linear warm-up from 0 over that many epochs (fractions allowed), then ``schedule``.
    * ``backbone_lr_scale``: the backbone's learning rate is ``lr × backbone_lr_scale``; the classifier
      head keeps ``lr`` (0 freezes the backbone).
    * ``freeze_bn``: batch-norm layers keep their running statistics (they stay in eval mode).

    Streaming data: ``stream`` decodes images in DataLoader workers per
    batch instead of holding the data set in memory (``None``: only for
    sources that cannot be held, file lists and tar shards), ``augment``
    sets the training transform of streamed images and ``crop_pct`` the
    evaluation crop (resize to ``image_size / crop_pct``, centre crop).
    """

    task: str = "classification"
    data: str = "digits"
    image_size: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.2
    model: str = "small_cnn"
    model_args: dict = field(default_factory=dict)
    method: str = "stability"
    method_args: dict = field(default_factory=dict)
    task_args: dict = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float | None = None
    backbone_lr_scale: float = 1.0
    freeze_bn: bool = False
    weights: str | None = None
    init: str | None = None
    stream: bool | None = None
    augment: str = "none"
    crop_pct: float = 0.875
    seed: int = 0
    sync_bn: bool = False
    amp: str = "off"
    device: str = _execution("auto")
    compile: bool = _execution(False)
    checkpoint_every: int = _execution(0)
    workers: int = _execution(0)

    def __init__(self, task: str = "classification", data: str = "digits", image_size: int | None = None,
                 split_seed: int = 0, test_fraction: float = 0.2, model: str = "small_cnn",
                 model_args: dict | None = None, method: str = "stability", method_args: dict | None = None,
                 task_args: dict | None = None, epochs: int | None = None, batch_size: int = 64, lr: float | None = None,
                 weight_decay: float = 5e-4, optimizer: str = "adamw", momentum: float = 0.9,
                 schedule: str = "cosine", warmup_epochs: float | None = None, backbone_lr_scale: float = 1.0,
                 freeze_bn: bool = False, weights: str | None = None, init: str | None = None,
                 stream: bool | None = None,
                 augment: str = "none", crop_pct: float = 0.875, seed: int = 0, sync_bn: bool = False,
                 amp: str = "off",
                 device: str = "auto", compile: bool = False, checkpoint_every: int = 0, workers: int = 0,
                 **options: Any) -> None:
        self.task, self.data, self.image_size, self.split_seed = task, data, image_size, split_seed
        self.test_fraction, self.model, self.method = test_fraction, model, method
        for name, value in (("model_args", model_args), ("method_args", method_args), ("task_args", task_args)):
            if value is not None and not isinstance(value, dict):
                raise StableTrainError(f"{name} must be a mapping of option: value, got {value!r}")
        self.model_args, self.method_args, self.task_args = dict(model_args or {}), dict(method_args or {}), \
            dict(task_args or {})
        self.epochs, self.batch_size, self.lr, self.weight_decay, self.seed = epochs, batch_size, lr, weight_decay, seed
        self.optimizer, self.momentum, self.schedule, self.warmup_epochs = optimizer, momentum, schedule, warmup_epochs
        self.backbone_lr_scale, self.freeze_bn, self.weights, self.init = backbone_lr_scale, freeze_bn, weights, init
        self.stream, self.augment, self.crop_pct = stream, augment, crop_pct
        self.sync_bn, self.amp, self.device, self.compile = sync_bn, amp, device, compile
        self.checkpoint_every, self.workers = checkpoint_every, workers
        if options:
            self._sort(options, strict=True)

    # -- construction ----------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from a mapping (YAML, flags): grouped or flat options, checked."""
        if not isinstance(values, dict):
            raise StableTrainError(f"a training config must be a mapping of option: value, got {values!r}")
        return cls(**{str(k): v for k, v in values.items()}).validated()

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> "TrainConfig":
        """Rebuild the config of a stored run, also one written before options were grouped.

        Old configs held every method's options flat; those that the run's
        method, model or task takes are moved into their group, and the
        rest (which had no effect) are dropped.
        """
        values = dict(values)
        flat = {k: values.pop(k) for k in list(values) if k in LEGACY_OPTIONS}
        if flat.get("noise") == "auto":  # 'auto' meant the task's own default
            flat.pop("noise")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StableTrainError(f"the stored config has option(s) this version does not know: {', '.join(unknown)}")
        # jsd took Gaussian-noise views (with a sigma) until it took AugMix views: such a run is jsd-gaussian
        method_args = values.get("method_args") or {}
        if values.get("method") == "jsd" and ("sigma" in method_args or "sigma" in flat):
            values["method"] = "jsd-gaussian"
        config = cls(**values)
        config._sort(flat, strict=False)
        return config.validated()

    @classmethod
    def with_shared(cls, values: dict[str, Any], shared: dict[str, Any]) -> tuple["TrainConfig", set[str]]:
        """A config from ``values`` plus options ``shared`` by several runs (a demo's or a comparison's):

        each shared option goes to the group that takes it and is left out
        where this run's method, model and task take none. Returns the
        validated config and the names of the shared options it took, so the
        caller can reject an option that no run takes.
        """
        config = cls(**values)
        groups = config._groups()
        taken = {name for name in shared if config._target(name, groups) is not None}
        config._sort({k: v for k, v in shared.items() if k in taken}, strict=True)
        return config.validated(), taken

    def _groups(self) -> dict[str, dict[str, Any]]:
        """``{group: {option: default}}`` of the chosen task, model and method."""
        task_cls = TASKS.get(self.task) if isinstance(self.task, str) else None
        if task_cls is None:
            raise StableTrainError(f"task must be a string, got {self.task!r}")
        task_defaults = {k: p.default for k, p in factory_options(task_cls).items()}
        task_obj = task_cls(**{k: v for k, v in self.task_args.items() if k in task_defaults})
        model_name = task_obj.model_name(self.model) if isinstance(self.model, str) else self.model
        if not isinstance(model_name, str):
            raise StableTrainError(f"model must be a string, got {self.model!r}")
        model_defaults = {k: p.default for k, p in factory_options(model_factory(model_name)).items()
                          if k not in task_obj.supplied_model_args}
        model_defaults.update({k: None for k in OVERRIDABLE_MODEL_ARGS if k in task_obj.supplied_model_args})
        if not isinstance(self.method, str):
            raise StableTrainError(f"method must be a string, got {self.method!r}")
        method_defaults = {k: p.default for k, p in
                           factory_options(objective_factory(self.method, task_obj.objective_task)).items()}
        return {"task_args": task_defaults, "model_args": model_defaults, "method_args": method_defaults}

    def _model_takes_any(self) -> bool:
        from ..registry import _accepts_any

        task = TASKS.build(self.task, **{k: v for k, v in self.task_args.items()
                                         if k in factory_options(TASKS.get(self.task))})
        return _accepts_any(model_factory(task.model_name(self.model)))

    def _target(self, name: str, groups: dict[str, dict[str, Any]]) -> str | None:
        """The group that takes flat option ``name``, or None.

        An option that no registered method, model or task knows goes to a
        model that takes any keyword (timm's ``drop_rate``, a ``**kwargs``
        factory), as timm's ``create_model`` passes its keywords on.
        """
        target = next((g for g in ("method_args", "model_args", "task_args") if name in groups[g]), None)
        if target is None and not is_known_option(name) and self._model_takes_any():
            target = "model_args"
        return target

    def _sort(self, options: dict[str, Any], strict: bool) -> None:
        """Put flat options into the group that takes them; in strict mode, reject the others with a reason."""
        groups = self._groups()
        for name, value in options.items():
            target = self._target(name, groups)
            if target is not None:
                getattr(self, target)[name] = value
            elif strict:
                raise StableTrainError(self._no_effect(name, groups))

    def _no_effect(self, name: str, groups: dict[str, dict[str, Any]]) -> str:
        """The error line for an option that the chosen method, model and task do not take."""
        elsewhere = [m for t in OBJECTIVE_TASKS for m in available_methods(t)
                     if name in factory_options(objective_factory(m, t))]
        if elsewhere:
            return (f"option {name!r} has no effect with method {self.method!r}; its options: "
                    f"{', '.join(groups['method_args']) or '(none)'}")
        models = [m for m in MODELS.names() if name in factory_options(MODELS.get(m))]
        if models:
            return (f"option {name!r} has no effect with model {self.model!r}; its options: "
                    f"{', '.join(groups['model_args']) or '(none)'}")
        tasks = [t for t in TASKS.names() if name in factory_options(TASKS.get(t))]
        if tasks:
            return (f"option {name!r} has no effect with task {self.task!r} (it is an option of task "
                    f"{', '.join(tasks)})")
        known = [f.name for f in dataclasses.fields(self)]
        return f"unknown config option {name!r}; known options: {', '.join(known)}, or an option of the model or method"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (nested groups), as saved in ``config.yaml`` and in checkpoints."""
        return {f.name: (dict(getattr(self, f.name)) if f.name.endswith("_args") else getattr(self, f.name))
                for f in dataclasses.fields(self)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    # -- validation ------------------------------------------------------------------------------------------------

    def validated(self) -> "TrainConfig":
        """Check every value and fill in the defaults of every group; returns self.

        Raises :class:`StableTrainError` with one line naming the option.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_type(getattr(self, f.name), hints[f.name], f.name))

        def at_least(name: str, minimum: int) -> None:
            if getattr(self, name) < minimum:
                raise StableTrainError(f"{name} must be an integer >= {minimum}, got {getattr(self, name)!r}")

        finetuning = self.weights is not None or self.init is not None
        if self.epochs is None:
            self.epochs = default_epochs(self.task, self.data, self.model_args.get("norm"))
        if self.lr is None:
            self.lr = FINETUNE_LR if finetuning else SCRATCH_LR
        if self.warmup_epochs is None:
            self.warmup_epochs = min(FINETUNE_WARMUP_EPOCHS, float(self.epochs)) if finetuning else 0.0
        at_least("epochs", 1)
        at_least("batch_size", 2)
        for name in ("split_seed", "seed", "checkpoint_every", "workers"):
            at_least(name, 0)
        if self.image_size is not None:
            at_least("image_size", 8)
        if not self.lr > 0:
            raise StableTrainError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise StableTrainError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in choices:
                raise StableTrainError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise StableTrainError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0.0 <= self.warmup_epochs <= self.epochs:
            raise StableTrainError(f"warmup_epochs must be in [0, epochs = {self.epochs}], got {self.warmup_epochs!r}")
        if not 0.0 <= self.backbone_lr_scale <= 1e3:
            raise StableTrainError(f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise StableTrainError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.optimizer != "sgd" and self.momentum != 0.9:
            raise StableTrainError(f"momentum has no effect with optimizer {self.optimizer!r} (it is SGD's)")
        self._check_streaming()
        if not 0.0 < self.test_fraction < 1.0:
            raise StableTrainError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.amp not in AMP_MODES:
            raise StableTrainError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.task not in TASKS:
            raise StableTrainError(f"unknown task {self.task!r}; known tasks: {', '.join(TASKS.names())}")
        groups = self._groups()
        for group, defaults in groups.items():
            given = getattr(self, group)
            passed_through = {}
            if group == "model_args" and self._model_takes_any():
                # timm/torchvision models (and factories with **kwargs) take any keyword, as timm's create_model
                passed_through = {k: check_like_default(v, None, f"{k} (model option)") for k, v in given.items()
                                  if k not in defaults}
            for name in given:
                if name not in defaults and name not in passed_through:
                    message = self._no_effect(name, groups)
                    if message.startswith("unknown config option"):  # a typo inside a group: name the factory
                        owner = {"model_args": f"model {self.model!r}", "method_args": f"method {self.method!r}",
                                 "task_args": f"task {self.task!r}"}[group]
                        message = (f"unknown option {name!r} for {owner}; its options: "
                                   f"{', '.join(defaults) or '(none)'}")
                    raise StableTrainError(message)
            resolved = {}
            for name, default in defaults.items():
                if name in given:
                    resolved[name] = check_like_default(given[name], default, f"{name} ({group[:-5]} option)")
                elif group == "model_args" and name in OVERRIDABLE_MODEL_ARGS:
                    continue  # filled in from the data or the pretrained config, unless given
                elif default is inspect.Parameter.empty:
                    raise StableTrainError(f"{group[:-5]} option {name!r} is required and has no default")
                elif isinstance(default, _SCALARS):
                    resolved[name] = default
            setattr(self, group, {**resolved, **passed_through})
        for group in groups:
            for name, value in getattr(self, group).items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise StableTrainError(f"{name} must be finite, got {value!r}")
        self._build_check()
        resolve_device(self.device)
        return self

    def _check_streaming(self) -> None:
        """Resolve ``stream`` (None: stream only what cannot be held) and reject streaming options without it."""
        from ..data import can_stream, stream_only

        if not isinstance(self.data, str):
            return
        if self.stream is None:
            self.stream = stream_only(self.data)
        if self.stream:
            if self.task != "classification":
                raise StableTrainError(f"stream works for the classification task; task {self.task!r} holds its "
                                       f"data in memory")
            if not can_stream(self.data):
                raise StableTrainError(f"data {self.data!r} is held in memory and cannot stream; stream a folder of "
                                       f"class sub-folders, a .csv/.txt file list or .tar shards")
        else:
            if stream_only(self.data):
                raise StableTrainError(f"data {self.data!r} can only be streamed (drop --no-stream)")
            given = [name for name, default in (("augment", "none"), ("crop_pct", 0.875))
                     if getattr(self, name) != default]
            if given:
                raise StableTrainError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect "
                                       f"without stream (they transform streamed images); pass --stream")

    def _build_check(self) -> None:
        """Build the task and the objective once, so that their own checks of values (ranges, names) run now."""
        task = TASKS.build(self.task, **self.task_args)
        task.objective(self)

    def execution_options(self) -> list[str]:
        """The fields that change how a run executes, not what it computes."""
        return [f.name for f in dataclasses.fields(self) if f.metadata.get("execution")]


EXECUTION_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("execution"))
