"""``stabletrain demo``: the main job on built-in data, or an extension's demo (``--data NAME``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..checks import StableTrainError
from ..commands import Command, Log
from ..registry import DEMOS
from .common import positive_int

__all__ = ["COMMAND", "add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the main job: plain vs gaussian vs stability on built-in data",
                       description="Train plain, gaussian and stability with the same budget, evaluate them on "
                                   "the paper's distortions, and write report.md, results.{json,csv} and plots.")
    p.add_argument("--task", default="classification", choices=["classification", "similarity"],
                   help="classification (default: digits) or similarity (embeddings and near-duplicates: photos)")
    extensions = ", ".join(DEMOS.names())
    p.add_argument("--data", help="digits, photos, a folder or an .npz file (default: digits, or photos for "
                                  "--task similarity)" + (f", or an extension's demo: {extensions}" if extensions
                                                          else ""))
    p.add_argument("--methods", default="plain,gaussian,stability")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--alpha", type=float, help="alpha of every method that takes it (default: each method's own)")
    p.add_argument("--sigma", type=float, help="sigma of every method that takes it (default: each method's own)")
    p.add_argument("--width", type=positive_int, help="model width (default: the model's own)")
    p.add_argument("--norm", choices=["batch", "group"],
                   help="normalization layers of the built-in models (default: the model's own, batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distortions", help="comma-separated specs (default: the paper sweep for the image size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="2 epochs, a narrow model and a reduced sweep (for tests)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="retrain models already in --out")
    p.add_argument("--quiet", action="store_true")
    for name in DEMOS.names():  # extensions' demo jobs add their own flags
        DEMOS.get(name).add_options(p)
    return p


def run(args: argparse.Namespace, log: Log) -> int:
    from ..demo import DemoConfig, run_demo

    if args.data is not None and args.data in DEMOS:
        return DEMOS.get(args.data).run(args, log)
    for name in DEMOS.names():
        flags = [f"--{k}" for k in DEMOS.get(name).options if getattr(args, k, None) is not None]
        if flags:
            raise StableTrainError(f"{', '.join(flags)} only apply with --data {name}")
    overrides = {k: getattr(args, k) for k in ("epochs", "alpha", "sigma", "width", "norm")
                 if getattr(args, k) is not None}
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    distortions = tuple(s.strip() for s in args.distortions.split(",") if s.strip()) if args.distortions else None
    config = DemoConfig(task=args.task, data=args.data, methods=methods, seed=args.seed, device=args.device,
                        quick=args.quick, distortions=distortions, **overrides)
    result = run_demo(config, args.out, overwrite=args.overwrite, progress=not args.quiet, log=log)
    if config.task == "classification":
        print("accuracy (%) on the test set, clean and under each distortion\n")
    print(result["table"])
    if result["checks"]:
        print("\nthe paper's claims on these numbers:")
        for check in result["checks"]:
            print(f"  [{check.get('verdict', 'held' if check['held'] else 'did not hold')}] {check['claim']}: "
                  f"{check['detail']}")
    print(f"\nwrote {result['paths']['report']}, {result['paths']['json']}, {result['paths']['csv']} "
          f"and plots in {result['paths']['plots_dir']}")
    return 0


COMMAND = Command("demo", add_parser, run)
