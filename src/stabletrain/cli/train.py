"""``stabletrain train``: flags generated from the training config; resume starts from the stored config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..commands import Command, Log
from .common import float_list, positive_int
from .options import add_config_flags, config_values

__all__ = ["COMMAND", "add_parser", "run", "merge_options"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model with plain, gaussian, stability or another method",
                       description="Train a model; writes checkpoint.pt, history.{json,csv} and the resolved "
                                   "config.yaml. Flags override --config, and with --resume they override the "
                                   "stored config of the run.")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_flags(p)
    p.add_argument("--nproc", type=positive_int,
                   help="train with DistributedDataParallel on N local processes (re-runs itself under torchrun; "
                        "nccl on GPUs, gloo on the CPU); --batch-size is the global batch")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--mean", type=float_list, help="input mean per channel, comma-separated, applied inside the "
                                                   "model (default: the data's, or a timm/torchvision model's "
                                                   "pretrained config)")
    p.add_argument("--std", type=float_list, help="input std per channel, comma-separated (see --mean)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    return p


def merge_options(values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``values`` (stored or YAML, grouped or flat) overridden by ``flags``.

    A changed method, model or task drops the stored options of the old one,
    so that they are not mistaken for options of the new one; ``--*-args``
    groups update the stored group.
    """
    merged = dict(values)
    for group, key in (("method_args", "method"), ("model_args", "model"), ("task_args", "task")):
        if key in flags and flags[key] != merged.get(key):
            merged.pop(group, None)
    for key, value in flags.items():
        if key.endswith("_args") and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def run(args: argparse.Namespace, log: Log) -> int:
    from .. import distributed
    from ..files import read_yaml
    from ..tasks import get_task
    from ..training import TrainConfig, load_checkpoint, train

    values: dict[str, Any] = {}
    checkpoint = Path(args.out) / "checkpoint.pt"
    if args.resume and checkpoint.exists():
        # a resumed run starts from its own stored config; only the options given now override it
        values = TrainConfig.from_stored(load_checkpoint(checkpoint)["config"]).to_dict()
    if args.config:
        loaded = read_yaml(args.config)
        values = merge_options(values, loaded)
    flags = config_values(args)
    for name in ("mean", "std"):
        if getattr(args, name, None) is not None:
            flags.setdefault("model_args", {})[name] = getattr(args, name)
    config = TrainConfig.from_dict(merge_options(values, flags))
    if args.nproc and args.nproc > 1 and not distributed.launched_by_torchrun():
        return _launch(args, config)
    try:
        result = train(config, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.quiet, log=log)
    except BaseException:
        distributed.teardown(synchronize=False)
        raise
    distributed.teardown()
    if result.extra.get("rank", 0) != 0:
        return 0
    metric = get_task(config.task, **config.task_args).metric
    final = result.history[-1] if result.history else {}
    print(f"trained {config.method} on {config.data}: {metric.replace('_', ' ')} "
          f"{100 * final.get(metric, float('nan')):.1f}% after {len(result.history)} epochs; "
          f"checkpoint {result.checkpoint}")
    return 0


def _launch(args: argparse.Namespace, config: Any) -> int:
    """Re-run this ``train`` under torchrun with the resolved, already validated options."""
    import tempfile

    from .. import distributed
    from ..files import write_yaml

    with tempfile.TemporaryDirectory(prefix="stabletrain-launch-") as folder:
        resolved = Path(folder) / "config.yaml"
        write_yaml(resolved, config.to_dict())
        argv = ["train", "--config", str(resolved), "--out", str(args.out)]
        argv += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                       ("--quiet", args.quiet)) if on]
        status = distributed.launch(argv, args.nproc)
    # the workers printed their own errors; torchrun exits 1 when a worker fails
    return status


COMMAND = Command("train", add_parser, run)
