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
from .common import float_list, parse_number, positive_int

__all__ = ["COMMAND", "add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="accuracy, KL and flip rate under distortions",
                       description="Evaluate a checkpoint on clean data and under each distortion; "
                                   "writes results.json, results.csv, plots/ and report.md.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint.pt, or the run folder that holds it; or give --model")
    p.add_argument("--model", help="instead of a checkpoint: a model spec (timm:NAME, torchvision:NAME, "
                                   "file.py:factory, package.module:factory, or a registered name) evaluated on "
                                   "--data, with --weights")
    p.add_argument("--weights", help="weights of --model: a plain state dict, a timm or torchvision checkpoint, "
                                     ".safetensors, or a stabletrain checkpoint (its head must fit the data's classes)")
    p.add_argument("--model-args", nargs="+", metavar="KEY=VALUE", help="options of --model's factory")
    p.add_argument("--num-classes", type=positive_int, help="classes of --model (default: the data's; they must "
                                                            "agree)")
    p.add_argument("--mean", type=float_list, help="input mean per channel of --model (default: its pretrained "
                                                   "config for timm/torchvision; required for other models unless "
                                                   "--weights is a stabletrain checkpoint)")
    p.add_argument("--std", type=float_list, help="input std per channel of --model (see --mean)")
    p.add_argument("--image-size", type=positive_int, help="image side of --data with --model (default: the "
                                                           "source's own, 32 for folders)")
    p.add_argument("--split", choices=["test", "all"],
                   help="which images to evaluate: the held-out test split (default for a checkpoint) or all of "
                        "--data (default with --model, which has no training split to hold out)")
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
    p.add_argument("--layer-resolution", choices=["native", "reference"],
                   help="where snow, spatter and elastic_transform build their layers on images smaller than the "
                        "corruption set's reference side (224 px imagenet, 32 px cifar10): native (default: on the "
                        "image grid, statistics matched) or reference (on the reference grid, then resized; up to "
                        "49x the work); needs the common suite and images below that side")
    p.add_argument("--epsilons", help="comma-separated attack strengths in pixel units "
                                      "(default 0,1/255,2/255,4/255,8/255,16/255; k pixels for l0); "
                                      "needs the adversarial suite")
    p.add_argument("--attack",
                   help="attack of the adversarial suite: pgd (default), pgd-l2, fgsm, l0, apgd-ce, apgd-dlr, apgd-t "
                        "(targeted APGD-DLR, 9 targets), square (gradient-free, L∞) or autoattack (apgd-ce, apgd-t "
                        "and square in turn, FAB-T left out); with an L∞ attack other than pgd and fgsm, PGD runs "
                        "too and a warning says where it overstates robustness (gradient masking)")
    p.add_argument("--attack-steps", type=positive_int,
                   help="iterations of pgd, pgd-l2 and l0 (default 10) and of the APGD attacks, autoattack's "
                        "included (default 100)")
    p.add_argument("--attack-queries", type=positive_int,
                   help="queries per image of square and of autoattack's Square (default 5000)")
    p.add_argument("--attack-examples", type=positive_int,
                   help="attack only the first N test images (default: all)")
    p.add_argument("--smoothing-sigma", type=float, help="noise std of the smoothing suite, pixel units (default "
                                                         "0.25)")
    p.add_argument("--smoothing-n", type=positive_int, help="noise samples per image for the certificate (default "
                                                            "1000; Cohen et al. use 100000)")
    p.add_argument("--smoothing-examples", type=positive_int, help="certify only the first N images (default: all)")
    p.add_argument("--radii", type=float_list, help="L2 radii of the certified accuracy (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--smoothing-amp", choices=("off", "bf16"),
                   help="precision of the certificate's forward passes: off (float32, default) or bf16 autocast")
    p.add_argument("--smoothing-channels-last", action="store_true", default=None,
                   help="run the certificate's forward passes channels-last (faster for most conv nets)")
    p.add_argument("--robustbench", metavar="DIR",
                   help="also write the result as a RobustBench model_info JSON under "
                        "DIR/<dataset>/<threat model>/ (threat model Linf for the L∞ attacks, L2 for pgd-l2, corruptions "
                        "for the common suite)")
    p.add_argument("--bn-reestimate", metavar="N",
                   help="before evaluating, recompute the BatchNorm running statistics of each model (and "
                        "--baseline) on the first N clean training images of the data (its training split: needs "
                        "--split test), as torch.optim.swa_utils.update_bn does; measures how much of the "
                        "robustness is running-statistic brittleness")
    p.add_argument("--chunk-size", type=positive_int,
                   help="rows per block of pairwise distances in --task similarity (default 2048; memory ~ chunk²)")
    p.add_argument("--data", help="evaluate on other data than the checkpoint's (same classes)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="decode --data per batch in DataLoader workers instead of holding it in memory (default: as "
                        "the checkpoint was trained; with --model, only file lists and tar shards)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers that decode streamed images "
                                                          "(default 0)")
    p.add_argument("--crop-pct", type=float, help="evaluation crop of streamed images with --model: resize to "
                                                  "image_size / crop_pct, centre crop (default 0.875)")
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
            status = _evaluate(args, context, stack, log)
    except BaseException:
        distributed.teardown(synchronize=False)
        raise
    distributed.teardown()
    return status


def _evaluate(args: argparse.Namespace, context: Any, stack: contextlib.ExitStack, log: Log) -> int:
    from ..data import load_data, load_patches
    from ..distortions import paper_sweep, parse_distortions
    from ..evaluation import DEFAULT_EPSILONS, SUITES, evaluate_suites
    from ..files import write_json
    from ..models import Embedder
    from ..reports import split_rows, text_table, write_evaluation, write_similarity_report
    from ..similarity import build_benchmark, evaluate_similarity, similarity_sweep
    from ..training import load_model

    smoothing_flags = [flag for flag, value in (("--smoothing-sigma", args.smoothing_sigma),
                                                ("--smoothing-n", args.smoothing_n), ("--radii", args.radii),
                                                ("--smoothing-examples", args.smoothing_examples),
                                                ("--smoothing-amp", args.smoothing_amp),
                                                ("--smoothing-channels-last", args.smoothing_channels_last))
                       if value is not None]
    attack_flags = [flag for flag, value in (("--attack", args.attack), ("--attack-steps", args.attack_steps),
                                             ("--attack-queries", args.attack_queries), ("--epsilons", args.epsilons),
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
    bn_images = _bn_reestimate_count(args.bn_reestimate)
    device = context.device
    if args.model is not None:
        if args.checkpoint is not None:
            raise StableTrainError("give a checkpoint or --model, not both")
        model, checkpoint = _model_from_spec(args, device)
    else:
        if args.checkpoint is None:
            raise StableTrainError("give a checkpoint (or run folder) to evaluate, or --model SPEC with --data")
        spec_flags = [flag for flag, value in (("--weights", args.weights), ("--model-args", args.model_args),
                                               ("--num-classes", args.num_classes), ("--mean", args.mean),
                                               ("--std", args.std), ("--image-size", args.image_size))
                      if value is not None]
        if spec_flags:
            raise StableTrainError(no_effect(spec_flags, "with a checkpoint (it stores its model, weights and "
                                                         "image size); they go with --model"))
        model, checkpoint = load_model(args.checkpoint, device=device)
    stored = checkpoint["config"]
    trained_task = stored.get("task", "classification")
    task = args.task or trained_task
    data_source = args.data or stored["data"]
    split = args.split or ("all" if args.model is not None else "test")
    ckpt_path = Path(args.checkpoint or args.model)
    if args.model is not None and not args.out:
        raise StableTrainError("--model needs --out (there is no run folder to write into)")
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    out = Path(args.out) if args.out else run_dir / ("evaluation" if task == trained_task else f"evaluation-{task}")
    stack.enter_context(output_lock(out, what="evaluate", rank=context.rank))
    name = stored["method"]
    if task == "similarity":
        ignored = [flag for flag, value in (("--suite", args.suite), ("--baseline", args.baseline),
                                            ("--corruption-set", args.corruption_set),
                                            ("--layer-resolution", args.layer_resolution)) if value is not None]
        if args.robustbench is not None:
            ignored.append("--robustbench")
        if ignored + attack_flags + smoothing_flags:
            raise StableTrainError(no_effect(ignored + attack_flags + smoothing_flags,
                                             "with --task similarity (they set the classification suites)"))
        if bn_images is not None:
            raise StableTrainError("--bn-reestimate is not supported with --task similarity (it re-estimates "
                                   "classifiers before the classification suites)")
        if not context.is_main:  # the near-duplicate benchmark is not sharded; rank 0 runs it
            return 0
        if args.model is not None:
            model = None  # built below, for the tiles' channels
        elif trained_task == "classification":
            model = Embedder(model).eval()
        data = load_patches(data_source, image_size=stored.get("image_size"), split_seed=stored.get("split_seed", 0),
                            test_fraction=stored.get("test_fraction", 0.2))
        if args.model is not None:
            model = Embedder(_finish_spec_model(args, None, data, device, for_embedding=True)).eval()
        elif data.channels != checkpoint["data"]["channels"]:
            raise StableTrainError(f"data {data_source!r} has {data.channels} channels; the model expects "
                                   f"{checkpoint['data']['channels']}")
        sweep = distortions or parse_distortions(similarity_sweep(data.image_size[0]))
        benchmark = build_benchmark(data, sweep, seed=args.seed)
        result = evaluate_similarity({name: model}, benchmark, batch_size=args.batch_size,
                                     chunk_size=args.chunk_size or 2048, progress=not args.quiet)
        settings = {("model" if args.model else "checkpoint"): str(args.model or args.checkpoint), "method": name,
                    "data": data_source, "distortion seed": args.seed}
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
    chosen = set(SUITES[:-1]) if "all" in suites else set(suites)
    # a flag that would be ignored is an error: say where it has an effect
    problems = []
    if args.chunk_size is not None:
        problems.append(no_effect(["--chunk-size"], "on classification (it blocks the pairwise distances of "
                                                    "--task similarity)"))
    if args.distortions is not None and "paper" not in chosen:
        problems.append(no_effect(["--distortions"], "without the paper suite (add paper to --suite)"))
    corruption_flags = [flag for flag, value in (("--corruption-set", args.corruption_set),
                                                 ("--layer-resolution", args.layer_resolution)) if value is not None]
    if corruption_flags and "common" not in chosen:
        problems.append(no_effect(corruption_flags, "without the common suite (add common to --suite)"))
    if attack_flags and "adversarial" not in chosen:
        problems.append(no_effect(attack_flags, "without the adversarial suite (add adversarial to --suite)"))
    if smoothing_flags and "smoothing" not in chosen:
        problems.append(no_effect(smoothing_flags, "without the smoothing suite (add smoothing to --suite)"))
    from ..attacks import ATTACKS, attack_defaults

    if args.attack is not None and args.attack not in ATTACKS:
        raise StableTrainError(f"unknown attack {args.attack!r}; known attacks: {', '.join(ATTACKS)}")
    known_options = attack_defaults(args.attack or "pgd")
    if args.attack == "fgsm" and args.attack_steps is not None and "adversarial" in chosen:
        problems.append(no_effect(["--attack-steps"], "with --attack fgsm (a single step)"))
    elif args.attack_steps is not None and "steps" not in known_options and "adversarial" in chosen:
        problems.append(no_effect(["--attack-steps"], f"with --attack {args.attack} (it has a query budget: "
                                                      f"--attack-queries)"))
    if args.attack_queries is not None and "queries" not in known_options and "adversarial" in chosen:
        problems.append(no_effect(["--attack-queries"], f"with --attack {args.attack or 'pgd'} (only square and "
                                                        f"autoattack query)"))
    if problems:
        raise StableTrainError("; ".join(problems))
    if bn_images is not None and split == "all":
        raise StableTrainError("--bn-reestimate re-estimates on training images, but --split all evaluates every "
                               "image of the data, so none is a training image; use --split test"
                               + (" (--model evaluates all of --data by default)" if args.model is not None
                                  else ""))
    attack = args.attack or "pgd"
    attack_steps = args.attack_steps or known_options.get("steps")
    attack_queries = args.attack_queries or known_options.get("queries")
    epsilons = list(DEFAULT_EPSILONS) if attack != "l0" else [0, 1, 2, 5, 10, 20]
    if args.epsilons:
        try:
            epsilons = [parse_number(e) for e in args.epsilons.split(",") if e.strip()]
        except (ValueError, ZeroDivisionError):
            raise StableTrainError(f"--epsilons must be comma-separated numbers (0.031 or 8/255), "
                                   f"got {args.epsilons!r}") from None
        bad = [e for e in epsilons if not 0 <= e < float("inf")]
        if bad or not epsilons:
            raise StableTrainError(f"--epsilons must be finite numbers >= 0, got {args.epsilons!r}")
    smoothing: dict[str, Any] = {}
    if args.smoothing_sigma is not None:
        if not 0 < args.smoothing_sigma < float("inf"):
            raise StableTrainError(f"--smoothing-sigma must be a finite number > 0, got {args.smoothing_sigma}")
        smoothing["sigma"] = args.smoothing_sigma
    if args.smoothing_n is not None:
        smoothing["n"] = args.smoothing_n
    if args.radii is not None:
        if any(r < 0 for r in args.radii):
            raise StableTrainError(f"--radii must be >= 0, got {args.radii}")
        smoothing["radii"] = tuple(args.radii)
    if args.smoothing_amp is not None:
        smoothing["amp"] = args.smoothing_amp
    if args.smoothing_channels_last:
        smoothing["channels_last"] = True
    baseline_model = baseline_checkpoint = None
    if args.baseline:
        baseline_model, baseline_checkpoint = load_model(args.baseline, device=device)
        if baseline_checkpoint.get("config", {}).get("task", "classification") != "classification":
            raise StableTrainError(f"--baseline {args.baseline} holds an embedder, not a classifier")
    data, evaluated = _evaluation_data(args, stored, data_source, split, context)
    if args.model is not None:
        model = _finish_spec_model(args, model, data, device)
    check_fits(f"the model {args.checkpoint or args.model}", checkpoint, data)
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
    bn_reports = {}
    if bn_images is not None:
        from ..evaluation.bn_adapt import reestimate_batchnorm

        training_images = _training_images(data, data_source)
        for model_name, evaluated_model in models.items():
            _, bn_reports[model_name] = reestimate_batchnorm(
                evaluated_model, training_images, examples=bn_images, batch_size=args.batch_size, device=device,
                workers=args.workers, inplace=True, return_report=True, name=f"model {model_name}")
    corruption_set = args.corruption_set or ("cifar10" if max(data.image_size) <= 64 else "imagenet")
    from ..corruptions import DEFAULT_LAYER_RESOLUTION, REFERENCE_SIDE

    if args.layer_resolution is not None and min(data.image_size) >= REFERENCE_SIDE[corruption_set]:
        raise StableTrainError(no_effect(["--layer-resolution"], (
            f"on {'×'.join(map(str, data.image_size))} px images with the {corruption_set} corruptions (the layers "
            f"are built on the image grid from the reference side, {REFERENCE_SIDE[corruption_set]} px, up)")))
    layer_resolution = args.layer_resolution or DEFAULT_LAYER_RESOLUTION
    result = evaluate_suites(models, evaluated, suites, paper_distortions=distortions, corruption_set=corruption_set,
                             layer_resolution=layer_resolution,
                             epsilons=epsilons, attack=attack, attack_steps=args.attack_steps,
                             attack_queries=args.attack_queries, attack_examples=args.attack_examples, baseline=baseline_name, seed=args.seed,
                             smoothing=smoothing, smoothing_examples=args.smoothing_examples,
                             workers=args.workers,
                             batch_size=args.batch_size, progress=not args.quiet, context=context,
                             log=log if context.is_main else None)
    if not context.is_main:
        return 0
    rows = result["rows"]
    settings = {("model" if args.model else "checkpoint"): str(args.model or args.checkpoint), "method": name,
                "data": data_source, "test images": len(evaluated),
                "images evaluated": "the test split" if split == "test" else "all of the data",
                "suites": ", ".join(suites), "distortion seed": args.seed}
    if args.weights:
        settings["weights"] = str(args.weights)
    if "paper" in chosen:
        settings["paper distortions"] = ", ".join(d.spec for d in distortions)
    if "common" in chosen:
        settings["corruption parameters"] = corruption_set
        if min(data.image_size) < REFERENCE_SIDE[corruption_set]:
            settings["corruption layers"] = f"{layer_resolution} grid"
    if "smoothing" in chosen:
        from ..evaluation import SMOOTHING_DEFAULTS

        chosen_settings = {**SMOOTHING_DEFAULTS, **smoothing}
        certified = len(evaluated) if args.smoothing_examples is None else min(args.smoothing_examples,
                                                                               len(evaluated))
        settings["smoothing"] = (f"σ {chosen_settings['sigma']:g}, {chosen_settings['n']} noise samples, radii "
                                 f"{', '.join(f'{r:g}' for r in chosen_settings['radii'])} on {certified} images"
                                 + (", bf16" if chosen_settings["amp"] == "bf16" else "")
                                 + (", channels-last" if chosen_settings["channels_last"] else ""))
    if "adversarial" in chosen:
        attacked = len(evaluated) if args.attack_examples is None else min(args.attack_examples, len(evaluated))
        budget = []
        if attack == "fgsm":
            budget.append("1 step")
        elif attack_steps is not None:
            budget.append(f"{attack_steps} {'APGD iterations' if attack == 'autoattack' else 'steps'}")
        if attack_queries is not None:
            budget.append(f"{attack_queries} queries")
        name_of = ("autoattack (apgd-ce, apgd-t, square; FAB-T left out)" if attack == "autoattack" else attack)
        steps = ", ".join(budget)
        settings["attack"] = (f"{name_of}, {steps}, epsilons {', '.join(f'{e:.4g}' for e in epsilons)} on "
                              f"{attacked} images" + (f" (--attack-examples {args.attack_examples} asked for more "
                                                      f"than the {len(evaluated)} images)"
                                                      if args.attack_examples and args.attack_examples > attacked
                                                      else ""))
    if baseline_name:
        settings["baseline"] = str(args.baseline)
    training_warnings: list[str] = []
    if checkpoint.get("history"):  # a trained checkpoint: did its training converge?
        from ..training.convergence import convergence, convergence_warning

        facts = convergence(checkpoint["history"])
        if facts["final_train_accuracy"] is not None:
            settings["training"] = (f"{len(checkpoint['history'])} epochs; final train accuracy "
                                    f"{100 * facts['final_train_accuracy']:.1f} %; test accuracy over the last "
                                    f"{facts['last_epochs']} epochs {100 * facts['test_change_last_epochs']:+.1f} "
                                    f"points" + (" (still rising)" if facts["still_rising"] else ""))
        line = convergence_warning(name, facts)
        if line is not None:
            training_warnings.append(line)
    if bn_reports:
        used = max(r.images for r in bn_reports.values())
        layers = "; ".join(f"{model_name}: {r.layers} layers" if r.layers else f"{model_name}: no BatchNorm "
                           f"layers, unchanged" for model_name, r in bn_reports.items())
        settings["BatchNorm re-estimation"] = (
            (f"running statistics recomputed on {used} clean training images ({layers})" if used else
             f"--bn-reestimate {bn_images}: no BatchNorm layers, the model{'s are' if len(bn_reports) > 1 else ' is'}"
             f" unchanged")
            + (f" (--bn-reestimate {bn_images} asked for more than the {used} training images)"
               if 0 < used < bn_images else ""))
        for model_name, r in bn_reports.items():
            result["models"][model_name]["bn_reestimate"] = {"images": r.images, "layers": r.layers,
                                                             "requested": bn_images}
    summary_table = _suite_summary_table(result["models"])
    extra_tables = {"Summary": summary_table} if summary_table else {}
    extra_tables.update(_attack_tables(result["models"]))
    warnings = result.get("warnings", []) + training_warnings
    paths = write_evaluation(out, rows, title=f"Evaluation of {ckpt_path}", settings=settings,
                             summary_lines=[f"warning: {w}" for w in warnings],
                             extra_tables=extra_tables or None,
                             extra_json={"suite_summaries": result["models"], "warnings": warnings,
                                         # with --baseline: each model against it on the same images (Newcombe, McNemar)
                                         "paired": result.get("paired", [])})
    for model_name, summary in result["models"].items():
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
        write_json(out / f"model_{slug}.json", {"model": model_name, "settings": settings, **summary})
    if args.robustbench is not None:
        for line in _write_robustbench(args, result, chosen, attack, epsilons, data, name, ckpt_path,
                                       stored.get("model", name)):
            print(line)
    distorted, attacked_rows = split_rows(rows)
    print(text_table(distorted))
    if attacked_rows:
        print(f"\nrobust accuracy (%) under {attack}, by epsilon\n")
        print(text_table(attacked_rows, "robust_accuracy"))
    if summary_table:
        print("\n" + summary_table)
    for heading, table in _attack_tables(result["models"]).items():
        print(f"\n{heading}\n\n{table}")
    for warning in warnings:
        print(f"stabletrain: warning: {warning}", file=sys.stderr)
    print(f"\nwrote {paths['report']}, {paths['json']} and {paths['csv']}")
    return 0


def _suite_summary_table(summaries: dict) -> str:
    """Markdown: clean accuracy, mean corruption errors, robust accuracies (and how many images were attacked)."""
    if not any("common" in s or "robust_accuracy" in s or "smoothing" in s for s in summaries.values()):
        return ""
    epsilons = sorted({e for s in summaries.values() for e in s.get("robust_accuracy", {})}, key=float)
    header = ["model", "clean acc (%)"]
    has_common = any("common" in s for s in summaries.values())
    if has_common:
        header += ["mean error, 15 common (%)", "mCE vs baseline", "relative mCE", "mean error, 4 held-out (%)"]
    header += [f"robust acc ε={float(e):.4g} (%)" for e in epsilons]
    radii = sorted({r for s in summaries.values() for r in s.get("smoothing", {}).get("certified_accuracy", {})},
                   key=float)
    header += [f"certified acc r={r} (%)" for r in radii]
    has_smoothing = bool(radii)
    if has_smoothing:
        header.append("ACR")
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
        cells += [pct(s.get("smoothing", {}).get("certified_accuracy", {}).get(r)) for r in radii]
        if has_smoothing:
            cells.append(ratio(s.get("smoothing", {}).get("average_certified_radius")))
        if has_attack:
            cells.append(str(s.get("attack", {}).get("examples", "–")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _attack_tables(summaries: dict) -> dict[str, str]:
    """Markdown tables of the adversarial suite beyond the curve: AutoAttack's robust accuracy after each component,
    and PGD against the suite's attack on the same images (the gradient-masking check)."""
    tables: dict[str, str] = {}
    lines = []
    for name, s in summaries.items():
        for eps, parts in s.get("attack", {}).get("components", {}).items():
            if not lines:
                lines = ["| model | ε | " + " | ".join(f"after {p} (%)" for p in parts) + " |",
                         "|---|---:|" + "---:|" * len(parts)]
            lines.append(f"| {name} | {float(eps):.4g} | " + " | ".join(f"{100 * v:.1f}" for v in parts.values())
                         + " |")
    if lines:
        tables["Robust accuracy after each AutoAttack component"] = "\n".join(lines)
    checks = [r for s in summaries.values() for r in s.get("gradient_masking", [])]
    if checks:
        lines = ["| model | ε | PGD-10 robust (%) | reference | reference robust (%) | difference (points, 95 % CI) "
                 "| masking? |", "|---|---:|---:|---|---:|---:|---|"]
        for r in checks:
            lines.append(f"| {r['model']} | {r['epsilon']:.4g} | {100 * r['pgd_robust_accuracy']:.1f} | "
                         f"{r['reference']} | {100 * r['reference_robust_accuracy']:.1f} | "
                         f"{100 * r['difference']:+.1f} [{100 * r['difference_low']:+.1f}, "
                         f"{100 * r['difference_high']:+.1f}] | {'yes' if r['masking'] else 'no'} |")
        tables["Gradient-masking check: PGD against the suite's attack"] = "\n".join(lines)
    return tables


def _write_robustbench(args: argparse.Namespace, result: dict, chosen: set, attack: str, epsilons: list,
                       data: Any, name: str, source: Path, stored_model: str) -> list[str]:
    """RobustBench ``model_info`` files of the evaluated model: one per threat model the suites measured."""
    from ..evaluation.robustbench import model_info, model_info_path, write_model_info

    summary = result["models"][name]
    lowered = str(data.name).lower().replace("-", "")
    dataset = next((known for known in ("imagenet", "cifar100", "cifar10") if known in lowered), str(data.name))
    architecture = str(args.model) if args.model else str(stored_model)
    model_id = "".join(ch if ch.isalnum() or ch in "-_" else "_"
                       for ch in (str(args.model) if args.model else source.resolve().parent.name
                                  if source.suffix == ".pt" else source.resolve().name))
    threats: list[tuple[str, float | None]] = []
    if "adversarial" in chosen and attack != "l0":
        # RobustBench's radii where the curve has them (Linf 8/255 on CIFAR, 4/255 on ImageNet; L2 0.5), else the largest
        standard = {"Linf": 4 / 255 if dataset == "imagenet" else 8 / 255, "L2": 0.5}
        threat = "L2" if attack == "pgd-l2" else "Linf"
        eps = next((float(e) for e in epsilons if abs(float(e) - standard[threat]) < 1e-9), max(map(float, epsilons)))
        threats.append((threat, eps))
    if "common" in chosen:
        threats.append(("corruptions", None))
    if not threats:
        raise StableTrainError("--robustbench needs the adversarial suite (an L∞ or L2 attack, not l0) or the "
                               "common suite")
    written = []
    for threat, eps in threats:
        kwargs: dict[str, Any] = {}
        if threat == "corruptions" and "alexnet" in summary and not summary["alexnet"].get("partial"):
            kwargs["corruptions_mce"] = summary["alexnet"]["mce"]
        info = model_info(summary, name=str(name), architecture=architecture, dataset=dataset, threat_model=threat,
                          eps=eps, **kwargs)
        path = write_model_info(model_info_path(args.robustbench, dataset, threat, model_id), info)
        written.append(f"wrote {path} (RobustBench model_info, {threat})")
    return written


def _model_from_spec(args: argparse.Namespace, device: Any) -> tuple[Any, dict]:
    """The factory of ``--model`` checked, and the pseudo-checkpoint that stands for it (no weights loaded yet)."""
    from ..models.specs import model_factory

    if not args.data:
        raise StableTrainError("--model needs --data (the images to evaluate it on)")
    model_factory(args.model)  # a spec that names nothing fails here, before the data is read
    config = {"task": "classification", "data": args.data, "image_size": args.image_size, "split_seed": 0,
              "test_fraction": 0.2, "method": args.model}
    return None, {"config": config, "data": {}}


def _finish_spec_model(args: argparse.Namespace, model: Any, data: Any, device: Any,
                       for_embedding: bool = False) -> Any:
    """Build ``--model`` for ``data`` and load ``--weights``.

    A classifier head of another class count than the data's is an error,
    except for an embedding (``--task similarity``), which does not use the head.
    """
    from ..models import build_model, load_pretrained
    from ..models.specs import model_factory, uses_data_statistics
    from ..models.weights import read_weights
    from .options import parse_assignments

    num_classes = args.num_classes or (1000 if for_embedding else data.num_classes)
    if num_classes != data.num_classes and not for_embedding:
        raise StableTrainError(f"--num-classes {num_classes} differs from the {data.num_classes} classes of "
                               f"{args.data}; evaluation needs the model's classes to be the data's")
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": data.channels,
                              **(parse_assignments(args.model_args, "--model-args") if args.model_args else {})}
    factory = model_factory(args.model)
    stabletrain_weights = bool(args.weights) and any(k.startswith("normalize.") for k in read_weights(args.weights))
    if (args.mean is None) != (args.std is None):
        raise StableTrainError("give both --mean and --std, or neither")
    if args.mean is not None:
        kwargs.update(mean=args.mean, std=args.std)
    elif uses_data_statistics(factory):
        if not stabletrain_weights:
            raise StableTrainError(f"model {args.model!r} needs the input statistics it was trained with: give "
                                   f"--mean and --std")
        kwargs.update(zip(("mean", "std"), data.channel_stats()))  # replaced by the checkpoint's own buffers
    model = build_model(args.model, **kwargs)
    if args.weights:
        from ..commands import Log  # noqa: F401  (the report goes to stderr below)

        report = load_pretrained(model, args.weights, replace_head=for_embedding)
        if not args.quiet:
            for line in report.lines():
                print(f"stabletrain: {line}", file=sys.stderr)
    else:
        print(f"stabletrain: warning: {args.model} is evaluated with random weights (no --weights)", file=sys.stderr)
    return model.to(device).eval()


def _evaluation_data(args: argparse.Namespace, stored: dict, source: str, split: str, context: Any) -> tuple[Any, Any]:
    """The data, and the images to evaluate: held in memory, or streamed with the pipeline the model was trained
    with (the stored image size and evaluation crop)."""
    from ..data import STREAM_IMAGE_SIZE, load_data, stream_only

    if args.workers < 0:
        raise StableTrainError(f"--workers must be >= 0, got {args.workers}")
    stream = args.stream if args.stream is not None else bool(stored.get("stream")) or stream_only(source)
    if args.crop_pct is not None and not (0 < args.crop_pct <= 1):
        raise StableTrainError(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
    if not stream:
        if args.crop_pct is not None or args.workers:
            flags = [f for f, v in (("--crop-pct", args.crop_pct), ("--workers", args.workers or None)) if v]
            raise StableTrainError(f"{', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect without "
                                   f"--stream (they set how streamed images are decoded)")
        data = load_data(source, image_size=stored.get("image_size"), split_seed=stored.get("split_seed", 0),
                         test_fraction=stored.get("test_fraction", 0.2))
        return data, (data.test if split == "test" else _all_images(data))
    if args.checkpoint is not None and args.crop_pct is not None:
        raise StableTrainError("--crop-pct goes with --model; a checkpoint is evaluated with the crop it was trained "
                               "with")
    from ..data.streams import ImageFiles, ShardStream, load_stream

    crop_pct = args.crop_pct or stored.get("crop_pct") or 0.875
    data = load_stream(source, image_size=stored.get("image_size") or STREAM_IMAGE_SIZE,
                       split_seed=stored.get("split_seed", 0), test_fraction=stored.get("test_fraction", 0.2),
                       augment="none", crop_pct=crop_pct, seed=0)
    test = data.test
    if split == "all":
        if isinstance(test, ImageFiles):
            files = list(data.train.files) + list(test.files)
            labels = list(data.train.labels) + list(test.labels)
            test = ImageFiles(files, labels, transform=test.transform, channels=test.channels)
        else:
            test = ShardStream(list(data.train.shards) + list(test.shards), transform=test.transform,
                               channels=test.channels, num_classes=test.num_classes)
    if isinstance(test, ShardStream):
        test = test.with_transform(test.transform, rank=context.rank, world_size=context.world_size)
    return data, test


def _bn_reestimate_count(text: str | None) -> int | None:
    """The N of ``--bn-reestimate N``, checked here (not by argparse) so that a bad value is one error line."""
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise StableTrainError(f"--bn-reestimate must be a positive integer (training images), got {text!r}")
    return value


def _training_images(data: Any, source: str) -> Any:
    """The clean training images of ``data`` for re-estimating BatchNorm statistics: the in-memory training
    split, or the training stream decoded as the test images are (no augmentation, unshuffled, one rank)."""
    from ..evaluation.batches import example_count

    train = data.train
    if getattr(data, "streaming", False):
        train = train.with_transform(data.test.transform)
    if example_count(train) == 0:
        raise StableTrainError(f"data {source!r} has no training images to re-estimate the BatchNorm statistics on "
                               f"(--bn-reestimate)")
    return train


def _all_images(data: Any) -> Any:
    """Every image of an in-memory split, training part first."""
    import torch

    from ..data import ImageDataset

    return ImageDataset(torch.cat([data.train.x, data.test.x]), torch.cat([data.train.y, data.test.y]))


COMMAND = Command("evaluate", add_parser, run)
