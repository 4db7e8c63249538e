"""The ``stabletrain`` command line: ``train``, ``evaluate``, ``demo``, ``compare`` and ``jets``.

Options can also come from a YAML file (``--config``); flags on the command
line win over the file, and the resolved settings are saved beside the
results. Problems with the input end the command with one line on stderr,
``stabletrain: error: …``, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .checks import StableTrainError
from .jets.cli import add_jet_demo_options, add_jets_parser, run_jet_demo_command, run_jets_command

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Training flags; every default is None so that YAML values are only overridden when given."""
    g = parser.add_argument_group("data and model")
    g.add_argument("--task", choices=["classification", "similarity", "jets"],
                   help="classification (default), similarity (triplet-ranking embeddings of image tiles) or jets "
                        "(jet tagging on .h5 files from `stabletrain jets generate`)")
    g.add_argument("--data", help="digits, photos, a folder of class sub-folders, an .npz file, or jet .h5 file(s) "
                                  "(default digits)")
    g.add_argument("--image-size", type=int, help="image side in pixels (default 32; .npz: as stored)")
    g.add_argument("--split-seed", type=int, help="seed of the train/test split (default 0)")
    g.add_argument("--model", help="architecture (default small_cnn)")
    g.add_argument("--width", type=int, help="channels of the first stage of small_cnn (default 32)")
    g = parser.add_argument_group("method")
    g.add_argument("--method", help="plain, gaussian or stability (default), or jsd, trades, adversarial, "
                                    "consistency")
    g.add_argument("--alpha", type=float, help="weight of the stability term")
    g.add_argument("--sigma", type=float, help="noise std in [0, 1] pixel units (gaussian and stability)")
    g.add_argument("--noise", choices=["auto", "gaussian", "relative"],
                   help="perturbation of gaussian/stability: gaussian (additive), relative (multiplicative on occupied "
                        "cells, for jets); auto = relative for --task jets, else gaussian")
    g.add_argument("--jet-input", choices=["log", "standardize", "linear"], help="jet tagger input transform (default log)")
    g.add_argument("--detach-clean", action="store_true", default=None,
                   help="treat the clean prediction as a fixed target (paper's cross-entropy gradient)")
    g.add_argument("--batching", choices=["auto", "separate", "concat"],
                   help="run clean and noisy copies as two passes or one concatenated pass (default auto)")
    g.add_argument("--bn-stats", choices=["clean", "both"],
                   help="which pass updates batch-norm running statistics with separate passes (default clean)")
    g.add_argument("--margin", type=float, help="triplet-loss margin for --task similarity (default 0.2)")
    g.add_argument("--jsd-lambda", type=float, help="weight of the Jensen–Shannon term of jsd (default 12)")
    g.add_argument("--trades-beta", type=float, help="weight of the KL term of trades (default 6)")
    g.add_argument("--adv-epsilon", type=float, help="L∞ radius of trades/adversarial in pixel units (default 0.031)")
    g.add_argument("--adv-steps", type=int, help="PGD steps of trades/adversarial (default 10)")
    g.add_argument("--adv-step-size", type=float, help="PGD step of trades/adversarial (default 0.007)")
    g.add_argument("--consistency-copies", type=int, help="noisy copies m of consistency (default 2)")
    g.add_argument("--consistency-lambda", type=float, help="KL weight of consistency (default 20)")
    g.add_argument("--consistency-eta", type=float, help="entropy weight of consistency (default 0.5)")
    g = parser.add_argument_group("optimization")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="AdamW learning rate, cosine-decayed per step")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--seed", type=int, help="seed of initialization, shuffling and noise (default 0)")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    g = parser.add_argument_group("scale and fault tolerance (docs/scaling.md)")
    g.add_argument("--nproc", type=_positive_int,
                   help="train with DistributedDataParallel on N local processes (re-runs itself under torchrun; "
                        "nccl on GPUs, gloo on the CPU); --batch-size is the global batch")
    g.add_argument("--norm", choices=["batch", "group"],
                   help="normalization layers of small_cnn (default batch); group is exact under data parallelism")
    g.add_argument("--sync-bn", action="store_true", default=None,
                   help="SyncBatchNorm across processes (GPUs only)")
    g.add_argument("--amp", choices=["off", "bf16"], help="bfloat16 autocast of the forward passes (default off)")
    g.add_argument("--compile", action="store_true", default=None, help="run the model through torch.compile")
    g.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps within an epoch (default 0: per epoch)")
    g.add_argument("--workers", type=int, help="DataLoader worker processes (default 0: batches indexed in memory)")


_TRAIN_KEYS = {"task": "task", "margin": "margin", "jsd_lambda": "jsd_lambda", "trades_beta": "trades_beta",
               "adv_epsilon": "adv_epsilon", "adv_steps": "adv_steps", "adv_step_size": "adv_step_size",
               "consistency_copies": "consistency_copies", "consistency_lambda": "consistency_lambda",
               "consistency_eta": "consistency_eta", "data": "data", "image_size": "image_size", "split_seed": "split_seed", "model": "model",
               "width": "width", "method": "method", "alpha": "alpha", "sigma": "sigma",
               "detach_clean": "detach_clean", "noise": "noise", "jet_input": "jet_input", "batching": "batching", "bn_stats": "bn_stats", "epochs": "epochs",
               "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "seed": "seed",
               "device": "device", "norm": "norm", "sync_bn": "sync_bn", "amp": "amp", "compile": "compile",
               "checkpoint_every": "checkpoint_every", "workers": "workers"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stabletrain",
        description="Stability training (Zheng et al., CVPR 2016) and robustness evaluation.")
    parser.add_argument("--version", action="version", version=f"stabletrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a classifier with plain, gaussian or stability training",
                       description="Train a classifier; writes checkpoint.pt, history.{json,csv} and config.yaml.")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    _add_train_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", help="checkpoint to start from (fine-tune an already-trained model)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")

    p = sub.add_parser("evaluate", help="accuracy, KL and flip rate under distortions",
                       description="Evaluate a checkpoint on clean data and under each distortion; "
                                   "writes results.json, results.csv, plots/ and report.md.")
    p.add_argument("checkpoint", help="checkpoint.pt, or the run folder that holds it")
    p.add_argument("--task", choices=["classification", "similarity"],
                   help="what to evaluate (default: the checkpoint's task); similarity on a classifier uses its "
                        "penultimate layer")
    p.add_argument("--distortions", default="paper",
                   help="comma-separated specs such as jpeg-50,thumb-16,crop-10,gaussian-0.1, "
                        "or 'paper' for the default sweep of the task (default)")
    p.add_argument("--suite", default="paper",
                   help="classification suites, comma-separated: paper (the --distortions sweep, default), common "
                        "(the 19 corruptions at 5 severities), adversarial (a robustness curve), or all")
    p.add_argument("--baseline", help="a second checkpoint evaluated on the same inputs; the mean corruption error "
                                      "is relative to it")
    p.add_argument("--corruption-set", choices=["imagenet", "cifar10"],
                   help="parameters of the common corruptions (default: cifar10 up to 64 px, imagenet above)")
    p.add_argument("--epsilons", help="comma-separated attack strengths in pixel units "
                                      "(default 0,1/255,2/255,4/255,8/255,16/255; k pixels for l0)")
    p.add_argument("--attack", default="pgd", choices=["pgd", "pgd-l2", "fgsm", "l0"])
    p.add_argument("--attack-steps", type=_positive_int, default=10)
    p.add_argument("--attack-examples", type=_positive_int, help="attack only the first N test images")
    p.add_argument("--chunk-size", type=_positive_int, default=2048,
                   help="rows per block of pairwise distances in similarity evaluation (memory ~ chunk²)")
    p.add_argument("--data", help="evaluate on other data than the checkpoint's (same classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random distortions (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=512)
    p.add_argument("--out", help="output folder (default: <run folder>/evaluation)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("demo", help="the main job: plain vs gaussian vs stability on built-in data",
                       description="Train plain, gaussian and stability with the same budget, evaluate them on "
                                   "the paper's distortions, and write report.md, results.{json,csv} and plots.")
    p.add_argument("--task", default="classification", choices=["classification", "similarity"],
                   help="classification (default: digits) or similarity (embeddings and near-duplicates: photos)")
    p.add_argument("--data", help="digits, photos, a folder or an .npz file (default: digits, or photos for "
                                  "--task similarity), or jets: generate a W/QCD sample with Pythia 8 and study "
                                  "jet taggers (needs stabletrain[hep])")
    p.add_argument("--methods", default="plain,gaussian,stability")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--sigma", type=float)
    p.add_argument("--width", type=_positive_int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distortions", help="comma-separated specs (default: the paper sweep for the image size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="2 epochs, a narrow model and a reduced sweep (for tests)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="retrain models already in --out")
    p.add_argument("--quiet", action="store_true")
    add_jet_demo_options(p)
    add_jets_parser(sub)
    p = sub.add_parser("compare", help="train and evaluate several methods over seeds; one Markdown/HTML report",
                       description="Train every method with the same budget over several seeds, evaluate all on "
                                   "the same distortions, attacks and randomized-smoothing certification, and "
                                   "write report.md, report.html, results.json and results.csv. Re-running skips "
                                   "finished work.")
    p.add_argument("--config", help="comparison YAML (see configs/); flags override it")
    p.add_argument("--data", help="digits, photos, a folder or an .npz file")
    p.add_argument("--methods", help="comma-separated, e.g. plain,gaussian,stability,jsd,trades,adversarial,consistency")
    p.add_argument("--seeds", type=_positive_int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=_positive_int, help="training epochs of every method")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--quiet", action="store_true")
    return parser


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import CompareConfig, load_compare_config, run_compare

    overrides: dict[str, Any] = {}
    if args.data:
        overrides["data"] = args.data
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds:
        overrides["seeds"] = list(range(args.seeds))
    if args.config:
        config = load_compare_config(args.config, overrides)
    else:
        config = CompareConfig(**overrides)
    if args.epochs:
        config.train = {**config.train, "epochs": args.epochs}
    config = config.resolved()
    result = run_compare(config, args.out, progress=not args.quiet, log=_log(args.quiet))
    print(result["markdown"].split("## Evaluation")[0].strip())
    print(f"\nwrote {result['report']} and {result['html']}")
    return 0


def _log(quiet: bool):
    if quiet:
        return lambda line: None
    from tqdm.auto import tqdm

    return lambda line: tqdm.write(line, file=sys.stderr)


def _cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .files import read_yaml
    from .training import TrainConfig, train

    values: dict[str, Any] = {}
    if args.config:
        values.update(read_yaml(args.config))
        values.pop("init", None)  # saved configs record it; it is a flag, not a setting
    for attr, key in _TRAIN_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            values[key] = value
    config = TrainConfig.from_dict(values)
    if args.nproc and args.nproc > 1 and not distributed.launched_by_torchrun():
        return _launch_train(args, config)
    try:
        result = train(config, args.out, resume=args.resume, init=args.init, overwrite=args.overwrite,
                       progress=not args.quiet, log=_log(args.quiet))
    finally:
        distributed.teardown()
    if result.extra.get("rank", 0) != 0:
        return 0
    from .tasks import get_task

    metric = get_task(config.task).metric
    final = result.history[-1] if result.history else {}
    print(f"trained {config.method} on {config.data}: {metric.replace('_', ' ')} "
          f"{100 * final.get(metric, float('nan')):.1f}% after {len(result.history)} epochs; "
          f"checkpoint {result.checkpoint}")
    return 0


def _launch_train(args: argparse.Namespace, config: Any) -> int:
    """Re-run this ``train`` under torchrun with the resolved, already validated options."""
    import tempfile

    from . import distributed
    from .files import write_yaml

    with tempfile.TemporaryDirectory(prefix="stabletrain-launch-") as folder:
        resolved = Path(folder) / "config.yaml"
        write_yaml(resolved, config.to_dict())
        argv = ["train", "--config", str(resolved), "--out", str(args.out)]
        argv += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                       ("--quiet", args.quiet)) if on]
        argv += ["--init", str(args.init)] if args.init else []
        status = distributed.launch(argv, args.nproc)
    # the workers printed their own errors; torchrun exits 1 when a worker fails
    return status


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from . import distributed

    # under torchrun every rank evaluates a share of the sweep; rank 0 writes the report
    context = distributed.setup(args.device)
    try:
        return _evaluate(args, context)
    finally:
        distributed.teardown()


def _evaluate(args: argparse.Namespace, context: Any) -> int:
    from .data import load_data, load_patches
    from .distortions import paper_sweep, parse_distortions
    from .evaluation import DEFAULT_EPSILONS, SUITES, evaluate_suites
    from .files import write_json
    from .models import Embedder
    from .reports import text_table, write_evaluation, write_similarity_report
    from .similarity import build_benchmark, evaluate_similarity, similarity_sweep
    from .training import load_model

    distortions = None if args.distortions == "paper" else parse_distortions(args.distortions)
    device = context.device
    model, checkpoint = load_model(args.checkpoint, device=device)
    stored = checkpoint["config"]
    trained_task = stored.get("task", "classification")
    task = args.task or trained_task
    data_source = args.data or stored["data"]
    ckpt_path = Path(args.checkpoint)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    out = Path(args.out) if args.out else run_dir / ("evaluation" if task == trained_task else f"evaluation-{task}")
    name = stored["method"]
    if task == "similarity":
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
        result = evaluate_similarity({name: model}, benchmark, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                     progress=not args.quiet)
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
        raise StableTrainError(f"{args.checkpoint} holds an embedder; evaluate it with --task similarity")
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise StableTrainError(f"unknown suite {', '.join(unknown) or '(none)'}; known suites: {', '.join(SUITES)}")
    epsilons = list(DEFAULT_EPSILONS) if args.attack != "l0" else [0, 1, 2, 5, 10, 20]
    if args.epsilons:
        try:
            epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
        except ValueError:
            raise StableTrainError(f"--epsilons must be comma-separated numbers, got {args.epsilons!r}") from None
        bad = [e for e in epsilons if not 0 <= e < float("inf")]
        if bad or not epsilons:
            raise StableTrainError(f"--epsilons must be finite numbers >= 0, got {args.epsilons!r}")
    baseline_model = None
    if args.baseline:
        baseline_model, baseline_checkpoint = load_model(args.baseline, device=device)
        if baseline_checkpoint.get("config", {}).get("task", "classification") != "classification":
            raise StableTrainError(f"--baseline {args.baseline} holds an embedder, not a classifier")
    data = load_data(data_source, image_size=stored.get("image_size"), split_seed=stored.get("split_seed", 0),
                     test_fraction=stored.get("test_fraction", 0.2))
    expected = checkpoint["data"]
    if data.num_classes != len(expected["classes"]) or data.channels != expected["channels"]:
        raise StableTrainError(
            f"data {data_source!r} has {data.num_classes} classes and {data.channels} channels; the model expects "
            f"{len(expected['classes'])} classes and {expected['channels']} channels")
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
                             epsilons=epsilons, attack=args.attack, attack_steps=args.attack_steps,
                             attack_examples=args.attack_examples, baseline=baseline_name, seed=args.seed,
                             batch_size=args.batch_size, progress=not args.quiet, context=context)
    if not context.is_main:
        return 0
    rows = result["rows"]
    settings = {"checkpoint": str(args.checkpoint), "method": name, "data": data_source,
                "test images": len(data.test), "suites": ", ".join(suites), "distortion seed": args.seed}
    if "paper" in suites or "all" in suites:
        settings["paper distortions"] = ", ".join(d.spec for d in distortions)
    if "common" in suites or "all" in suites:
        settings["corruption parameters"] = corruption_set
    if "adversarial" in suites or "all" in suites:
        settings["attack"] = (f"{args.attack}, {args.attack_steps} steps, epsilons "
                              f"{', '.join(f'{e:.4g}' for e in epsilons)} on "
                              f"{args.attack_examples or len(data.test)} images")
    if baseline_name:
        settings["baseline"] = str(args.baseline)
    summary_table = _suite_summary_table(result["models"])
    paths = write_evaluation(out, rows, title=f"Evaluation of {ckpt_path}", settings=settings,
                             extra_tables={"Summary": summary_table} if summary_table else None,
                             extra_json={"suite_summaries": result["models"]})
    for model_name, summary in result["models"].items():
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
        write_json(out / f"model_{slug}.json", {"model": model_name, "settings": settings, **summary})
    print(text_table(rows))
    if summary_table:
        print("\n" + summary_table)
    print(f"\nwrote {paths['report']}, {paths['json']} and {paths['csv']}")
    return 0


def _suite_summary_table(summaries: dict) -> str:
    """Markdown: clean accuracy, mean corruption errors and robust accuracies per model."""
    if not any("common" in s or "robust_accuracy" in s for s in summaries.values()):
        return ""
    epsilons = sorted({e for s in summaries.values() for e in s.get("robust_accuracy", {})}, key=float)
    header = ["model", "clean acc (%)"]
    has_common = any("common" in s for s in summaries.values())
    if has_common:
        header += ["mean error, 15 common (%)", "mCE vs baseline", "relative mCE", "mean error, 4 held-out (%)"]
    header += [f"robust acc ε={float(e):.4g} (%)" for e in epsilons]
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cmd_jets(args: argparse.Namespace) -> int:
    return run_jets_command(args, _log(getattr(args, "quiet", False)))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    if args.data == "jets":
        return run_jet_demo_command(args, _log(args.quiet))
    jet_flags = [f"--{k}" for k in ("n", "workers", "noise", "sample") if getattr(args, k, None) is not None]
    if jet_flags:
        raise StableTrainError(f"{', '.join(jet_flags)} only apply with --data jets")
    overrides = {k: getattr(args, k) for k in ("epochs", "alpha", "sigma", "width") if getattr(args, k) is not None}
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    distortions = tuple(s.strip() for s in args.distortions.split(",") if s.strip()) if args.distortions else None
    config = DemoConfig(task=args.task, data=args.data, methods=methods, seed=args.seed, device=args.device, quick=args.quick,
                        distortions=distortions, **overrides)
    result = run_demo(config, args.out, overwrite=args.overwrite, progress=not args.quiet, log=_log(args.quiet))
    if config.task == "classification":
        print("accuracy (%) on the test set, clean and under each distortion\n")
    print(result["table"])
    if result["checks"]:
        print("\nthe paper's claims on these numbers:")
        for check in result["checks"]:
            print(f"  [{'held' if check['held'] else 'NOT held'}] {check['claim']}: {check['detail']}")
    print(f"\nwrote {result['paths']['report']}, {result['paths']['json']}, {result['paths']['csv']} "
          f"and plots in {result['paths']['plots_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stabletrain`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "demo": _cmd_demo, "compare": _cmd_compare,
                "jets": _cmd_jets}
    try:
        return commands[args.command](args)
    except StableTrainError as err:
        print(f"stabletrain: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stabletrain: interrupted; finished epochs are checkpointed, continue with --resume",
              file=sys.stderr)
        return 130
    except (OSError, MemoryError) as err:
        print(f"stabletrain: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
