"""``stabletrain compare``: several methods over seeds, one Markdown/HTML report."""

from __future__ import annotations

import argparse
from typing import Any

from ..commands import Command, Log
from .common import positive_int
from .options import parse_assignments

__all__ = ["COMMAND", "add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="train and evaluate several methods over seeds; one Markdown/HTML report",
                       description="Train every method with the same budget over several seeds, evaluate all on "
                                   "the same distortions, attacks and randomized-smoothing certification, and "
                                   "write report.md, report.html, results.json and results.csv. Re-running skips "
                                   "finished work.")
    p.add_argument("--config", help="comparison YAML (see configs/); flags override it")
    p.add_argument("--data", help="digits, photos, a folder or an .npz file")
    p.add_argument("--methods", help="comma-separated, e.g. plain,gaussian,stability,jsd,trades,adversarial,consistency")
    p.add_argument("--seeds", type=positive_int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=positive_int, help="training epochs of every method")
    p.add_argument("--norms", help="normalization as an axis, comma-separated, e.g. batch,group: every method "
                                   "and seed is trained under each (the model must take a 'norm' option)")
    p.add_argument("--model", help="the model of every method: a registered name, timm:NAME, torchvision:NAME, "
                                   "path/to/file.py:factory or package.module:factory")
    p.add_argument("--model-args", nargs="+", metavar="KEY=VALUE", help="options of --model's factory")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace, log: Log) -> int:
    from ..compare import load_compare_config, run_compare

    overrides: dict[str, Any] = {}
    if args.data:
        overrides["data"] = args.data
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds:
        overrides["seeds"] = list(range(args.seeds))
    if args.norms:
        overrides["norms"] = [n.strip() for n in args.norms.split(",") if n.strip()]
    train: dict[str, Any] = {}
    if args.epochs:
        train["epochs"] = args.epochs
    if args.model:
        train["model"] = args.model
    if args.model_args:
        train["model_args"] = parse_assignments(args.model_args, "--model-args")
    config = load_compare_config(args.config, overrides, train)
    result = run_compare(config, args.out, progress=not args.quiet, log=log)
    print(result["markdown"].split("## Evaluation")[0].strip())
    print(f"\nwrote {result['report']} and {result['html']}")
    return 0


COMMAND = Command("compare", add_parser, run)
