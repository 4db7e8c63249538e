"""Flags generated from the training config: the fields of :class:`~stabletrain.training.TrainConfig` and the
options of every registered method, model and task, so that the command line never mirrors them by hand.

Every generated flag defaults to None, so a value from ``--config`` or from a
resumed run's stored config is only overridden when the flag is given. A
flag that the chosen method, model or task does not take is rejected by the
config, with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

import yaml

from ..objectives import OBJECTIVE_TASKS, available_methods, objective_factory
from ..registry import MODELS, TASKS, factory_options
from ..training import TrainConfig

__all__ = ["add_config_flags", "config_values", "parse_assignments", "FIELD_HELP", "OPTION_HELP"]

#: Help of the config's own fields.
FIELD_HELP = {
    "task": "classification (default), similarity (triplet-ranking embeddings of image tiles), or a task of an "
            "installed extension",
    "data": "digits, photos, a folder of class sub-folders, an .npz file, or a source of an installed extension "
            "(default digits)",
    "image_size": "image side in pixels (default 32; .npz: as stored)",
    "split_seed": "seed of the train/test split (default 0)",
    "test_fraction": "fraction of the data held out for testing (default 0.2)",
    "model": "architecture: a registered name (default small_cnn), timm:NAME, torchvision:NAME, "
             "path/to/file.py:factory or package.module:factory; options go in --model-args",
    "method": "plain, gaussian, gaussian-noisy, stability (default), jsd, jsd-gaussian, trades, adversarial, "
              "consistency, or a registered method",
    "epochs": "training epochs (default: enough for plain training to converge on a built-in data set: digits 12, "
              "30 with --norm group; photos 40; else 12)",
    "batch_size": "global batch size (default 64)",
    "lr": "learning rate of the head (and of the backbone, times --backbone-lr-scale), after warm-up decayed "
          "by --schedule per step (default 3e-3; 1e-3 when fine-tuning with --weights or --init, docs/results.md §A7)",
    "weight_decay": "weight decay of every parameter (default 5e-4)",
    "optimizer": "adamw (default) or sgd (with --momentum)",
    "momentum": "SGD momentum (default 0.9)",
    "schedule": "cosine (default: decay to 0 over the run) or constant, after the warm-up",
    "warmup_epochs": "linear learning-rate warm-up over this many epochs, fractions allowed (default 0; 1 when "
                     "fine-tuning with --weights or --init)",
    "init": "stabletrain checkpoint to start from, with its model (fine-tune a model trained here); for weights "
            "saved by other tools use --weights",
    "backbone_lr_scale": "backbone learning rate = lr × this; the classifier head keeps lr (default 1; 0 "
                         "freezes the backbone)",
    "freeze_bn": "keep batch-norm running statistics as loaded (fine-tuning)",
    "weights": "weights file to start from: a plain state dict, a timm or torchvision checkpoint, .safetensors, "
               "or a stabletrain checkpoint; a head of another class count is replaced",
    "stream": "decode images per batch in DataLoader workers instead of holding the data in memory (default: "
              "only file lists and tar shards stream)",
    "augment": "training transform of streamed images: none (default), flip, or crop-flip (random-resized crop "
               "and flip)",
    "crop_pct": "evaluation crop of streamed images: resize to image_size / crop_pct, centre crop (default 0.875)",
    "seed": "seed of initialization, shuffling and noise (default 0)",
    "device": "auto, cpu, cuda or cuda:N (default auto)",
    "sync_bn": "SyncBatchNorm across processes (GPUs only)",
    "amp": "off (default) or bf16: bfloat16 autocast of the forward passes",
    "compile": "run the model through torch.compile",
    "checkpoint_every": "also checkpoint every N optimizer steps within an epoch (default 0: per epoch)",
    "workers": "DataLoader worker processes (default 0: batches indexed in memory)",
}

#: What the options of the built-in methods, models and tasks mean (extensions' options get a generated line).
OPTION_HELP = {
    "alpha": "weight of the stability term",
    "sigma": "noise std in [0, 1] pixel units",
    "clamp": "clip the noisy copy into [0, 1]",
    "detach_clean": "treat the clean prediction as a fixed target (the paper's cross-entropy gradient)",
    "batching": "auto (separate for batch-norm models, else concat), separate or concat passes of the two copies",
    "bn_stats": "clean (only the clean pass updates batch-norm running statistics) or both",
    "margin": "triplet-loss margin",
    "distance": "distance of the embedding stability term: squared_l2, l2 or cosine",
    "jsd_lambda": "weight of the Jensen–Shannon term",
    "augmix_width": "AugMix: chains mixed per view (default 3)",
    "augmix_depth": "AugMix: operations per chain; -1 draws 1 to 3 (default)",
    "augmix_severity": "AugMix: operation strength, 1 to 10 (default 3)",
    "augmix_alpha": "AugMix: Dirichlet and Beta mixing parameter (default 1)",
    "trades_beta": "weight of the KL term of TRADES",
    "adv_epsilon": "radius of the training attack: L∞ in pixel units for images, relative pT change for particle clouds",
    "adv_steps": "PGD steps of the training examples",
    "adv_step_size": "PGD step of the training examples",
    "consistency_copies": "noisy copies m",
    "consistency_lambda": "KL weight",
    "consistency_eta": "entropy weight",
    "width": "channels of the first stage",
    "norm": "normalization layers: batch or group (group is exact under data parallelism)",
    "dropout": "dropout before the classifier",
    "embedding_dim": "width of a linear projection of the features (none: the features themselves)",
    "l2_normalize": "L2-normalize the embedding",
    "noise": "perturbation of the methods that add noise",
    "jet_input": "input transform of the jet tagger",
    "cloud_noise": "perturbation of particle clouds for the methods that add noise",
    "adv_weight": "weight of the adversarial copy's loss in fgsm-adversarial (1 - weight on the clean copy)",
    "cloud_attack_angle": "bound on each particle's η and φ shift in training attacks on clouds, radians",
    "cloud_attack_particles": "soft particles a training attack on clouds may inject",
    "cloud_attack_budget_gev": "total pT of the injected particles in training attacks on clouds, GeV",
    "shuffle_block": "jets: shuffle the training jets in blocks of this many consecutive rows (0: full shuffle), "
                     "so that files larger than the cache are read about once per epoch",
    "shuffle_window": "jets: blocks shuffled together with --shuffle-block (default 32)",
    "latent": "size of the per-particle latent space",
    "neighbors": "k of the k-nearest-neighbour graph",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bare(kind: Any) -> Any:
    """``int | None`` → ``int``; other annotations unchanged."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and len(args) == 1 else kind


def _scalar(text: str) -> Any:
    """A flag value read as YAML (``3`` → 3, ``0.5`` → 0.5, ``true`` → True, ``none`` → None, else the string)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and value.lower() == "none":
        return None
    return value if isinstance(value, (bool, int, float, str, type(None))) else text


def _typed(kind: Any, name: str) -> Any:
    def parse(text: str) -> Any:
        if kind is bool:
            value = _scalar(text)
            if not isinstance(value, bool):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return value
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {getattr(kind, '__name__', kind)}, got {text!r}") from None
    parse.__name__ = getattr(kind, "__name__", name)
    return parse


def _option_sources() -> dict[str, list[tuple[str, Any]]]:
    """``{option: [(where, default), ...]}`` over every registered method, model and task."""
    sources: dict[str, list[tuple[str, Any]]] = {}
    supplied = {"in_channels", "num_classes", "mean", "std", "image_size", "input"}
    for task in OBJECTIVE_TASKS:
        for method in available_methods(task):
            for name, p in factory_options(objective_factory(method, task)).items():
                where = f"method {method}" + ("" if task == "classification" else f" ({task})")
                sources.setdefault(name, []).append((where, p.default))
    for model in MODELS.names():
        try:
            options = factory_options(MODELS.get(model))
        except Exception:  # a model whose extension cannot load gets no flags
            continue
        for name, p in options.items():
            if name not in supplied:
                sources.setdefault(name, []).append((f"model {model}", p.default))
    for task in TASKS.names():
        try:
            options = factory_options(TASKS.get(task))
        except Exception:
            continue
        for name, p in options.items():
            sources.setdefault(name, []).append((f"task {task}", p.default))
    return sources


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per config field and per method, model and task option (all with default None)."""
    hints = typing.get_type_hints(TrainConfig)
    fields = [f for f in dataclasses.fields(TrainConfig) if not f.name.endswith("_args")]
    group = parser.add_argument_group("run (fields of the training config)")
    for f in fields:
        kind = _bare(hints[f.name])
        if kind is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=FIELD_HELP.get(f.name))
        else:
            group.add_argument(_flag(f.name), dest=f.name, type=_typed(kind, f.name), default=None,
                               help=FIELD_HELP.get(f.name))
    group = parser.add_argument_group("options of the method, model and task (each is rejected where it has no "
                                      "effect)")
    taken = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, sources in sorted(_option_sources().items()):
        if name in taken:
            continue
        where = ", ".join(f"{w} {d!r}" if d is not None and not isinstance(d, type) else w
                          for w, d in sources if d is not __import__("inspect").Parameter.empty)
        text = f"{OPTION_HELP.get(name, name.replace('_', ' '))} (default by {where})"
        defaults = {type(d) for _, d in sources}
        if defaults == {bool}:
            group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif defaults <= {int}:
            group.add_argument(_flag(name), dest=name, type=_typed(int, name), default=None, help=text)
        elif defaults <= {int, float}:
            group.add_argument(_flag(name), dest=name, type=_typed(float, name), default=None, help=text)
        else:
            group.add_argument(_flag(name), dest=name, type=_scalar, default=None, help=text)
    group = parser.add_argument_group("any option, by group")
    for name in ("model_args", "method_args", "task_args"):
        group.add_argument(_flag(name), dest=name, nargs="+", metavar="KEY=VALUE", default=None,
                           help=f"options of the {name[:-5]} as key=value pairs (values read as YAML scalars)")
        taken.add(name)
    parser.set_defaults(_config_flags=sorted(taken | set(_option_sources())))


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``['width=8', 'norm=group']`` → ``{'width': 8, 'norm': 'group'}``; a malformed item is one error line."""
    from ..checks import StableTrainError

    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise StableTrainError(f"{flag} takes key=value pairs, got {item!r}")
        values[key.strip().replace("-", "_")] = _scalar(text)
    return values


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given on the command line (flat, plus the ``--*-args`` groups as mappings)."""
    values: dict[str, Any] = {}
    for name in getattr(args, "_config_flags", []):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name.endswith("_args"):
            values[name] = parse_assignments(value, _flag(name))
        else:
            values[name] = value
    return values
