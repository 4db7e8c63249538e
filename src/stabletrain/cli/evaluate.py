"""``stabletrain evaluate``: a checkpoint on clean data, the paper's distortions, corruptions and attacks."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from ..checks import StableTrainError
from ..commands import Command, Log
from ..locking import output_lock
from .common import positive_int

__all__ = ["COMMAND", "add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="accuracy, KL and flip rate under distortions",
                       description="Evaluate a checkpoint on clean data and under each distortion; "
                                   "writes results.json, results.csv, plots/ and report.md.")
    p.add_argument("checkpoint", help="checkpoint.pt, or the run folder that holds it")
    p.add_argument("--task", choices=["classification", "similarity"],
                   help="what to evaluate (default: the checkpoint's task); similarity on a classifier uses its "
                        "penultimate layer")
    # Defaults of the suite-specific flags are None so that a flag given where it has no effect is an error;
    # _evaluate applies the real defaults.
    p.add_argument("--distortions",
                   help="comma-separated specs such as jpeg-50,thumb-16,crop-10,gaussian-0.1, "
                        "or 'paper' for the default sweep of the task (default); needs the paper suite")
    p.add_argument("--suite",
                   help="classification suites, comma-separated: paper (the --distortions sweep, default), common "
                        "(the 19 corruptions at 5 severities), adversarial (a robustness curve), or all")
    p.add_argument("--baseline", help="a second checkpoint (same classes, channels and image size) evaluated on the "
                                      "same inputs; the mean corruption error is relative to it")
    p.add_argument("--corruption-set", choices=["imagenet", "cifar10"],
                   help="parameters of the common corruptions (default: cifar10 up to 64 px, imagenet above); "
                        "needs the common suite")
    p.add_argument("--epsilons", help="comma-separated attack strengths in pixel units "
                                      "(default 0,1/255,2/255,4/255,8/255,16/255; k pixels for l0); "
                                      "needs the adversarial suite")
    p.add_argument("--attack", choices=["pgd", "pgd-l2", "fgsm", "l0"],
                   help="attack of the adversarial suite (default pgd)")
    p.add_argument("--attack-steps", type=positive_int, help="steps of pgd, pgd-l2 and l0 (default 10)")
    p.add_argument("--attack-examples", type=positive_int,
                   help="attack only the first N test images (default: all)")
    p.add_argument("--chunk-size", type=positive_int,
                   help="rows per block of pairwise distances in --task similarity (default 2048; memory ~ chunk²)")
    p.add_argument("--data", help="evaluate on other data than the checkpoint's (same classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random distortions (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=512)
    p.add_argument("--out", help="output folder (default: <run folder>/evaluation)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace, log: Log) -> int:
    from .. import distributed

    # under torchrun every rank evaluates a share of the sweep; rank 0 writes the report
    context = distributed.setup(args.device)
    try:
        with contextlib.ExitStack() as stack:  # holds the output folder's lock once the folder is known
            return _evaluate(args, context, stack)
    finally:
        distributed.teardown()


def _evaluate(args: argparse.Namespace, context: Any, stack: contextlib.ExitStack) -> int:
    from ..data import load_data, load_patches
    from ..distortions import paper_sweep, parse_distortions
    from ..evaluation import DEFAULT_EPSILONS, SUITES, evaluate_suites
    from ..files import write_json
    from ..models import Embedder
    from ..reports import split_rows, text_table, write_evaluation, write_similarity_report
    from ..similarity import build_benchmark, evaluate_similarity, similarity_sweep
    from ..training import load_model

    attack_flags = [flag for flag, value in (("--attack", args.attack), ("--attack-steps", args.attack_steps),
                                             ("--epsilons", args.epsilons),
                                             ("--attack-examples", args.attack_examples)) if value is not None]

    def no_effect(flags: list[str], where: str) -> str:
        return f"{', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect {where}"

    def check_fits(label: str, checkpoint: dict, data: Any) -> None:
        """The model of ``checkpoint`` must have been trained on data like ``data``: classes, channels, size."""
        expected = checkpoint.get("data") or {}
        problems = []
        if "classes" in expected and len(expected["classes"]) != data.num_classes:
            problems.append(f"{len(expected['classes'])} classes")
        if "channels" in expected and expected["channels"] != data.channels:
            problems.append(f"{expected['channels']} channels")
        if expected.get("image_size") and list(expected["image_size"]) != list(data.image_size):
            problems.append(f"{'×'.join(map(str, expected['image_size']))} px images")
        if problems:
            size = "×".join(map(str, data.image_size))
            raise StableTrainError(
                f"{label} expects {', '.join(problems)}, but data {data_source!r} has {data.num_classes} classes, "
                f"{data.channels} channels and {size} px images")

    distortions = None if args.distortions in (None, "paper") else parse_distortions(args.distortions)
    device = context.device
    model, checkpoint = load_model(args.checkpoint, device=device)
    stored = checkpoint["config"]
    trained_task = stored.get("task", "classification")
    task = args.task or trained_task
    data_source = args.data or stored["data"]
    ckpt_path = Path(args.checkpoint)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    out = Path(args.out) if args.out else run_dir / ("evaluation" if task == trained_task else f"evaluation-{task}")
    stack.enter_context(output_lock(out, what="evaluate", rank=context.rank))
    name = stored["method"]
    if task == "similarity":
        ignored = [flag for flag, value in (("--suite", args.suite), ("--baseline", args.baseline),
                                            ("--corruption-set", args.corruption_set)) if value is not None]
        if ignored + attack_flags:
            raise StableTrainError(no_effect(ignored + attack_flags, "with --task similarity (they set the "
                                                                     "classification suites)"))
        if not context.is_main:  # the near-duplicate benchmark is not sharded; rank 0 runs it
            return 0
        if trained_task == "classification":
            model = Embedder(model).eval()
        data = load_patches(data_source, image_size=stored.get("image_size"), split_seed=stored.get("split_seed", 0),
                            test_fraction=stored.get("test_fraction", 0.2))
        if data.channels != checkpoint["data"]["channels"]:
            raise StableTrainError(f"data {data_source!r} has {data.channels} channels; the model expects "
                                   f"{checkpoint['data']['channels']}")
        sweep = distortions or parse_distortions(similarity_sweep(data.image_size[0]))
        benchmark = build_benchmark(data, sweep, seed=args.seed)
        result = evaluate_similarity({name: model}, benchmark, batch_size=args.batch_size,
                                     chunk_size=args.chunk_size or 2048, progress=not args.quiet)
        settings = {"checkpoint": str(args.checkpoint), "method": name, "data": data_source,
                    "distortion seed": args.seed}
        paths = write_similarity_report(out, result, title=f"Similarity evaluation of {ckpt_path}", settings=settings)
        summary = result["models"][name]
        print(f"near-duplicate AP (all families) {summary['average_precision_all']:.3f}; median distance "
              f"near-duplicate {summary['median_duplicate_distance']:.3f} vs non-duplicate "
              f"{summary['median_non_duplicate_distance']:.3f}; clean triplet score "
              f"{summary['clean_triplet_accuracy']:.3f}")
        print(f"wrote {paths['report']}, {paths['json']} and {paths['csv']}")
        return 0
    if trained_task != "classification":
        if trained_task == "similarity":
            raise StableTrainError(f"{args.checkpoint} holds an embedder; evaluate it with --task similarity")
        raise StableTrainError(f"{args.checkpoint} was trained for task {trained_task!r}, which this command does "
                               f"not evaluate; use the evaluation of the extension that provides the task "
                               f"(stabletrain {trained_task} evaluate, if it has one)")
    suites = [s.strip() for s in (args.suite or "paper").split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise StableTrainError(f"unknown suite {', '.join(unknown) or '(none)'}; known suites: {', '.join(SUITES)}")
    chosen = set(SUITES[:3]) if "all" in suites else set(suites)
    # a flag that would be ignored is an error: say where it has an effect
    problems = []
    if args.chunk_size is not None:
        problems.append(no_effect(["--chunk-size"], "on classification (it blocks the pairwise distances of "
                                                    "--task similarity)"))
    if args.distortions is not None and "paper" not in chosen:
        problems.append(no_effect(["--distortions"], "without the paper suite (add paper to --suite)"))
    if args.corruption_set is not None and "common" not in chosen:
        problems.append(no_effect(["--corruption-set"], "without the common suite (add common to --suite)"))
    if attack_flags and "adversarial" not in chosen:
        problems.append(no_effect(attack_flags, "without the adversarial suite (add adversarial to --suite)"))
    elif args.attack == "fgsm" and args.attack_steps is not None:
        problems.append(no_effect(["--attack-steps"], "with --attack fgsm (a single step)"))
    if problems:
        raise StableTrainError("; ".join(problems))
    attack = args.attack or "pgd"
    attack_steps = args.attack_steps or 10
    epsilons = list(DEFAULT_EPSILONS) if attack != "l0" else [0, 1, 2, 5, 10, 20]
    if args.epsilons:
        try:
            epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
        except ValueError:
            raise StableTrainError(f"--epsilons must be comma-separated numbers, got {args.epsilons!r}") from None
        bad = [e for e in epsilons if not 0 <= e < float("inf")]
        if bad or not epsilons:
            raise StableTrainError(f"--epsilons must be finite numbers >= 0, got {args.epsilons!r}")
    baseline_model = baseline_checkpoint = None
    if args.baseline:
        baseline_model, baseline_checkpoint = load_model(args.baseline, device=device)
        if baseline_checkpoint.get("config", {}).get("task", "classification") != "classification":
            raise StableTrainError(f"--baseline {args.baseline} holds an embedder, not a classifier")
    data = load_data(data_source, image_size=stored.get("image_size"), split_seed=stored.get("split_seed", 0),
                     test_fraction=stored.get("test_fraction", 0.2))
    check_fits(f"the model {args.checkpoint}", checkpoint, data)
    if baseline_checkpoint is not None:
        check_fits(f"--baseline {args.baseline}", baseline_checkpoint, data)
    if distortions is None:
        distortions = parse_distortions(paper_sweep(data.image_size[0]))
    models = {name: model}
    baseline_name = None
    if baseline_model is not None:
        baseline_path = Path(args.baseline).resolve()
        baseline_name = f"baseline ({(baseline_path if baseline_path.is_dir() else baseline_path.parent).name})"
        models[baseline_name] = baseline_model
    corruption_set = args.corruption_set or ("cifar10" if max(data.image_size) <= 64 else "imagenet")
    result = evaluate_suites(models, data.test, suites, paper_distortions=distortions, corruption_set=corruption_set,
                             epsilons=epsilons, attack=attack, attack_steps=attack_steps,
                             attack_examples=args.attack_examples, baseline=baseline_name, seed=args.seed,
                             batch_size=args.batch_size, progress=not args.quiet, context=context)
    if not context.is_main:
        return 0
    rows = result["rows"]
    settings = {"checkpoint": str(args.checkpoint), "method": name, "data": data_source,
                "test images": len(data.test), "suites": ", ".join(suites), "distortion seed": args.seed}
    if "paper" in chosen:
        settings["paper distortions"] = ", ".join(d.spec for d in distortions)
    if "common" in chosen:
        settings["corruption parameters"] = corruption_set
    if "adversarial" in chosen:
        attacked = len(data.test) if args.attack_examples is None else min(args.attack_examples, len(data.test))
        steps = "1 step" if attack == "fgsm" else f"{attack_steps} steps"
        settings["attack"] = (f"{attack}, {steps}, epsilons {', '.join(f'{e:.4g}' for e in epsilons)} on "
                              f"{attacked} images" + (f" (--attack-examples {args.attack_examples} asked for more "
                                                      f"than the {len(data.test)} test images)"
                                                      if args.attack_examples and args.attack_examples > attacked
                                                      else ""))
    if baseline_name:
        settings["baseline"] = str(args.baseline)
    summary_table = _suite_summary_table(result["models"])
    warnings = result.get("warnings", [])
    paths = write_evaluation(out, rows, title=f"Evaluation of {ckpt_path}", settings=settings,
                             summary_lines=[f"warning: {w}" for w in warnings],
                             extra_tables={"Summary": summary_table} if summary_table else None,
                             extra_json={"suite_summaries": result["models"], "warnings": warnings})
    for model_name, summary in result["models"].items():
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
        write_json(out / f"model_{slug}.json", {"model": model_name, "settings": settings, **summary})
    distorted, attacked_rows = split_rows(rows)
    print(text_table(distorted))
    if attacked_rows:
        print(f"\nrobust accuracy (%) under {attack}, by epsilon\n")
        print(text_table(attacked_rows, "robust_accuracy"))
    if summary_table:
        print("\n" + summary_table)
    for warning in warnings:
        print(f"stabletrain: warning: {warning}", file=sys.stderr)
    print(f"\nwrote {paths['report']}, {paths['json']} and {paths['csv']}")
    return 0


def _suite_summary_table(summaries: dict) -> str:
    """Markdown: clean accuracy, mean corruption errors, robust accuracies (and how many images were attacked)."""
    if not any("common" in s or "robust_accuracy" in s for s in summaries.values()):
        return ""
    epsilons = sorted({e for s in summaries.values() for e in s.get("robust_accuracy", {})}, key=float)
    header = ["model", "clean acc (%)"]
    has_common = any("common" in s for s in summaries.values())
    if has_common:
        header += ["mean error, 15 common (%)", "mCE vs baseline", "relative mCE", "mean error, 4 held-out (%)"]
    header += [f"robust acc ε={float(e):.4g} (%)" for e in epsilons]
    has_attack = any("attack" in s for s in summaries.values())
    if has_attack:
        header.append("attacked images")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    def ratio(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    for name, s in summaries.items():
        cells = [name, pct(s["clean_accuracy"])]
        if has_common:
            common, held = s.get("common", {}), s.get("held_out", {})
            cells += [pct(common.get("mean_error")), ratio(common.get("mce")), ratio(common.get("relative_mce")),
                      pct(held.get("mean_error"))]
        cells += [pct(s.get("robust_accuracy", {}).get(e)) for e in epsilons]
        if has_attack:
            cells.append(str(s.get("attack", {}).get("examples", "–")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COMMAND = Command("evaluate", add_parser, run)
