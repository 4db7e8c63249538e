"""The ``stabletrain jets`` commands: ``generate``, ``pileup-pool`` and ``evaluate``.

Argument parsing needs no physics packages; each command imports Pythia or
FastJet only when it runs, and says how to install them if they are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..checks import StableTrainError
from ..commands import Command, Demo

_DEFAULT_POOL_EVENTS = 5000  # stabletrain.jets.events.DEFAULT_POOL_EVENTS, without importing NumPy code here

__all__ = ["add_jet_demo_options", "add_jets_parser", "run_jet_demo_command", "run_jets_command", "COMMAND", "DEMO"]


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def add_jets_parser(sub: Any) -> None:
    jets = sub.add_parser("jets", help="LHC jet images: generate with Pythia 8, evaluate taggers under detector effects",
                          description="Jet-image tools; see docs/lhc.md.")
    commands = jets.add_subparsers(dest="jets_command", metavar="JETS_COMMAND")

    p = commands.add_parser("generate", help="generate a balanced signal/QCD jet-image file (HDF5)",
                            description="Pythia 8 at 13 TeV + FastJet anti-kt R=1.0 (trimmed), leading jet in the "
                                        "pT window, 25×25 pT images. Parallel, sharded and resumable.")
    p.add_argument("--signal", default="w", help="signal process: w (default) or top")
    p.add_argument("--n", type=_int_at_least(2), required=True, help="jets in total (half signal, half QCD)")
    p.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    p.add_argument("--workers", type=_int_at_least(1), default=1, help="worker processes (default 1)")
    p.add_argument("--shard", help="i/N: generate shard i of N (for batch systems); shards together form one set")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--chunk-events", type=_int_at_least(1), default=400,
                   help="events per chunk: the unit of work, seeding and resumption (default 400)")
    p.add_argument("--pt-min", type=float, default=250.0, help="jet pT window, GeV (default 250–300)")
    p.add_argument("--pt-max", type=float, default=300.0)
    p.add_argument("--eta-max", type=float, default=2.0)
    p.add_argument("--no-trim", action="store_true", help="keep the ungroomed jet (default: trim, R_sub 0.2, 5%%)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="image around the jet axis only (default: centre, rotate and flip)")
    g = p.add_argument_group("event-level pile-up (groomed with the jet; see stabletrain.jets.events)")
    g.add_argument("--pileup", type=float, metavar="MU",
                   help="add Poisson(MU) minimum-bias events to every hard event before clustering and trimming "
                        "(default: none). The detector effect pileup-MU of 'jets evaluate' is the cheap "
                        "image-space approximation, added after trimming")
    g.add_argument("--pileup-pool-events", type=int, metavar="N",
                   help=f"minimum-bias events in the cached pool the pile-up is drawn from "
                        f"(default {_DEFAULT_POOL_EVENTS})")
    g.add_argument("--pileup-pool-seed", type=int, metavar="S", help="seed of the pool (default 0)")
    p.add_argument("--keep-parts", action="store_true", help="keep the finished chunk files after writing")
    p.add_argument("--quiet", action="store_true")

    p = commands.add_parser("pileup-pool",
                            help="build (and cache) the pool of minimum-bias images for the image-space "
                                 "approximation pileup-MU",
                            description="Generates SoftQCD:nonDiffractive events and bins each in a jet-image frame "
                                        "at a random (η, φ), for the detector effect pileup-MU: the cheap "
                                        "image-space approximation of pile-up, added to finished (trimmed) images. "
                                        "For pile-up that the grooming acts on, use 'jets generate --pileup MU'. "
                                        "Cached under $STABLETRAIN_CACHE.")
    p.add_argument("--events", type=_int_at_least(1), default=2000)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", help="also save the pool to this .npz (use it with --pileup-pool)")
    p.add_argument("--quiet", action="store_true")

    p = commands.add_parser("evaluate", help="AUC and background rejection of taggers under detector effects",
                            description="Scores each checkpoint and the mass-window baseline on the test split of "
                                        "the data under each detector effect; writes results.{json,csv} and plots. "
                                        "Every AUC comes with its DeLong 95 %% interval, every rejection with the "
                                        "background jets passing its cut and its exact 95 %% interval.")
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files or run folders of task-jets models")
    p.add_argument("--data", help="jet file(s) to evaluate on (default: each checkpoint's data)")
    p.add_argument("--distortions",
                   help="comma-separated detector effects (default: the full detector sweep). Image taggers take "
                        "pileup-MU, smear-A, deadcells-F, threshold-T, shift-K, coarse-G; cloud taggers (pfn, efn, "
                        "particlenet) their analogues on particles: cloud_pileup-MU, cloud_smear-A, "
                        "cloud_deadcells-F, cloud_threshold-T, cloud_shift-K")
    p.add_argument("--pileup-pool", help=".npz pile-up pool of image taggers' pileup-MU (default: the cached pool)")
    g = p.add_argument_group("attacks at matched physical budgets (stabletrain.jets.cloud_attacks)")
    g.add_argument("--attack", choices=("pgd", "fgsm", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack"),
                   help="also attack every tagger: a relative pT change of at most ε per cell (images) or per "
                        "particle (clouds), the same threat for both; writes attacks.{json,csv} (default: no attack). "
                        "apgd-*, square and autoattack are AutoAttack's components in the same box "
                        "(stabletrain.jets.box_attacks; autoattack on a binary tagger: APGD-CE then Square)")
    g.add_argument("--attack-budgets", default="0,0.02,0.05,0.1,0.2,0.5", metavar="E,E,...",
                   help="the relative pT budgets ε (default 0,0.02,0.05,0.1,0.2,0.5)")
    g.add_argument("--attack-steps", type=_int_at_least(1),
                   help="PGD or APGD steps (default 10 for pgd, 100 for apgd-* and autoattack)")
    g.add_argument("--attack-queries", type=_int_at_least(1),
                   help="the Square attack's queries per jet (square, autoattack; default 5000)")
    g.add_argument("--attack-angle", type=float, default=0.0, metavar="RAD",
                   help="clouds only: also shift each particle by up to RAD in η and φ (default 0)")
    g.add_argument("--attack-inject", metavar="K:GEV",
                   help="clouds only: also inject up to K soft particles with GEV in all, within ΔR < 1")
    g.add_argument("--attack-jets", type=_int_at_least(1), metavar="N",
                   help="attack a seeded random N of the test jets (default: all)")
    p.add_argument("--baseline", metavar="NAME",
                   help="also compare every tagger with this one (a checkpoint's run name, or mass-window) on the "
                        "same jets under each effect: the AUC difference with DeLong's paired 95 %% interval; "
                        "writes differences.{json,csv}")
    p.add_argument("--save-scores", action="store_true",
                   help="also write every jet's score per tagger and effect to scores.npz (with the labels), for "
                        "comparisons across runs or seeds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")


def add_jet_demo_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("jets (with --data jets)")
    g.add_argument("--n", type=_int_at_least(100), help="jets to generate for the demo sample (default 4000)")
    g.add_argument("--workers", type=_int_at_least(1), help="generation workers (default 2)")
    g.add_argument("--noise", choices=["relative", "gaussian"], help="perturbation of gaussian/stability training")
    g.add_argument("--sample", help="use this jet file (or comma list / glob of shards) instead of generating one")


def run_jet_demo_command(args: argparse.Namespace, log: Any) -> int:
    from .demo import JetDemoConfig, run_jet_demo

    overrides = {k: getattr(args, k) for k in ("epochs", "alpha", "sigma", "width", "n", "workers", "noise", "sample")
                 if getattr(args, k, None) is not None}
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    config = JetDemoConfig(methods=methods, seed=args.seed, quick=args.quick,
                           device=args.device,
                           distortions=tuple(s.strip() for s in args.distortions.split(",")) if args.distortions else None,
                           **overrides)
    out = args.out if args.out != "runs/demo" else "runs/demo-jets"
    result = run_jet_demo(config, out, progress=not args.quiet, log=log)
    print(result["table"])
    print(f"\nwrote {result['report']}")
    return 0


def _event_pileup(args: argparse.Namespace) -> Any:
    """The ``--pileup`` options as an :class:`~stabletrain.jets.events.EventPileup` (``None`` without pile-up)."""
    from .events import DEFAULT_POOL_EVENTS, EventPileup

    pool_options = [flag for flag, value in (("--pileup-pool-events", args.pileup_pool_events),
                                             ("--pileup-pool-seed", args.pileup_pool_seed)) if value is not None]
    if args.pileup is None:
        if pool_options:
            raise StableTrainError(f"{' and '.join(pool_options)} only appl{'y' if len(pool_options) > 1 else 'ies'} "
                                   f"with --pileup MU")
        return None
    return EventPileup(mu=args.pileup,
                       pool_events=DEFAULT_POOL_EVENTS if args.pileup_pool_events is None else args.pileup_pool_events,
                       pool_seed=0 if args.pileup_pool_seed is None else args.pileup_pool_seed).validated()


def _resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "checkpoint.pt" if p.is_dir() else p


def run_jets_command(args: argparse.Namespace, log: Any) -> int:
    if args.jets_command is None:
        raise StableTrainError("give a jets command: generate, pileup-pool or evaluate (see stabletrain jets --help)")
    if args.jets_command == "generate":
        from .generation import GenerationConfig, Selection, generate_jets, parse_shard

        selection = Selection(pt_min=args.pt_min, pt_max=args.pt_max, eta_max=args.eta_max, trim=not args.no_trim)
        config = GenerationConfig(signal=args.signal, n=args.n, seed=args.seed, chunk_events=args.chunk_events,
                                  preprocess=not args.no_preprocess, shard=parse_shard(args.shard),
                                  selection=selection, pileup=_event_pileup(args))
        summary = generate_jets(config, args.out, workers=args.workers, progress=not args.quiet,
                                keep_parts=args.keep_parts, log=log)
        print(f"wrote {summary['n']} jets to {summary['out']} in {summary['seconds']:.1f} s "
              f"({summary['jets_per_second']:.1f} jets/s, {summary['events_per_second']:.0f} events/s, pass fraction "
              + ", ".join(f"{k} {v:.2f}" for k, v in summary["pass_fraction"].items()) + ")"
              + (f"; event-level pile-up μ = {config.pileup.mu:g} from a pool of {config.pileup.pool_events} "
                 f"events (seed {config.pileup.pool_seed})" if config.pileup is not None else ""))
        return 0
    if args.jets_command == "pileup-pool":
        import numpy as np

        from ..files import atomic_write_bytes
        from .detector import build_pileup_pool

        pool = build_pileup_pool(args.events, seed=args.seed, progress=not args.quiet)
        if args.out:
            import io

            buffer = io.BytesIO()
            np.savez_compressed(buffer, images=pool)
            atomic_write_bytes(args.out, buffer.getvalue())
        print(f"pile-up pool: {len(pool)} events, mean pT per event in the frame {pool.sum((1, 2)).mean():.2f} GeV")
        return 0
    return _evaluate(args, log)


def _checkpoint_kind(model: Any, checkpoint: dict) -> str:
    """``'cloud'`` for a particle-cloud tagger, ``'image'`` for a jet-image tagger."""
    cloud = getattr(model, "input_kind", None) == "cloud" or (checkpoint.get("data") or {}).get("input") == "clouds"
    return "cloud" if cloud else "image"


def _evaluate(args: argparse.Namespace, log: Any) -> int:
    from ..files import write_csv, write_json
    from ..reports import plot_severity_curves
    from ..training import load_model
    from .detector import check_detector_specs, detector_sweep, jet_eta, set_pileup_pool
    from .tagging import TOP_MASS, W_MASS, describe_counts, format_auc, format_rejection

    # only detector effects (not image distortions such as jpeg-50), checked before anything is loaded
    given = args.distortions.split(",") if args.distortions else None
    budgets = _attack_budgets(args)
    if given is not None:
        check_detector_specs(given, kind=None)
    models, kinds, data_source, split = {}, {}, args.data, None
    for path in args.checkpoints:
        model, checkpoint = load_model(_resolve_checkpoint(path))
        config = checkpoint["config"]
        if config.get("task") != "jets":
            raise StableTrainError(f"{path} is not a jet tagger (task {config.get('task')!r})")
        name = Path(path).parent.name if Path(path).suffix == ".pt" else Path(path).name
        name = name or config["method"]
        models[name], kinds[name] = model, _checkpoint_kind(model, checkpoint)
        data_source = data_source or config["data"]
        this_split = (int(config.get("split_seed", 0)), float(config.get("test_fraction", 0.2)))
        if split is not None and this_split != split:
            raise StableTrainError(f"{path} was trained on another train/test split (split_seed, test_fraction "
                                   f"{this_split}) than the first checkpoint ({split}); evaluate them separately")
        split = this_split
    if len(set(kinds.values())) > 1:
        clouds = [n for n, k in kinds.items() if k == "cloud"]
        images = [n for n, k in kinds.items() if k == "image"]
        raise StableTrainError(f"the checkpoints mix cloud taggers ({', '.join(clouds)}) and image taggers "
                               f"({', '.join(images)}); their detector effects differ, so evaluate them separately")
    kind = next(iter(kinds.values()))
    if args.baseline is not None and args.baseline not in (*models, "mass-window"):
        raise StableTrainError(f"--baseline {args.baseline!r} is none of the taggers evaluated: "
                               f"{', '.join((*models, 'mass-window'))}")
    scores: dict[tuple[str, str], Any] | None = {} if args.baseline or args.save_scores else None
    split_seed, test_fraction = split if split is not None else (0, 0.2)
    if kind == "cloud":
        from .cloud_detector import cloud_detector_sweep, evaluate_cloud_taggers
        from .clouds import load_clouds

        specs = check_detector_specs(given, kind="cloud") if given is not None else cloud_detector_sweep()
        if args.pileup_pool:
            raise StableTrainError("--pileup-pool is the pool of minimum-bias images for image taggers; cloud "
                                   "taggers get cloud_pileup-MU's soft particles")
        data = load_clouds(data_source, split_seed=split_seed, test_fraction=test_fraction)
        mass = TOP_MASS if data.info.get("signal") == "top" else W_MASS
        rows = evaluate_cloud_taggers(models, data.test, specs, seed=args.seed, mass=mass, progress=not args.quiet,
                                      scores=scores)
    else:
        from .data import load_jets
        from .images import ImageSpec
        from .tagging import evaluate_taggers

        specs = check_detector_specs(given, kind="image") if given is not None else detector_sweep()
        if args.pileup_pool:
            set_pileup_pool(args.pileup_pool)
        data = load_jets(data_source, split_seed=split_seed, test_fraction=test_fraction)
        test = data.test.in_memory()  # the sweep distorts the test jets whole; training reads the files lazily
        mass = TOP_MASS if data.info.get("signal") == "top" else W_MASS
        with jet_eta(test.eta_map, ImageSpec(**data.info["image"])):  # smear-A needs each cell's E = pT·cosh η
            rows = evaluate_taggers(models, test, specs, seed=args.seed, mass=mass, progress=not args.quiet,
                                    scores=scores)
    out = Path(args.out)
    labels = data.test.y
    counts = {"signal": int((labels == 1).sum()), "background": int((labels == 0).sum())}
    attack_scores: dict[str, Any] | None = {} if args.save_scores and budgets is not None else None
    attack_rows = _attack_curves(args, models, kind, data.test, budgets, attack_scores) \
        if budgets is not None else None
    write_csv(out / "results.csv", rows)
    write_json(out / "results.json", {"data": data_source, "input": "clouds" if kind == "cloud" else "images",
                                      "test_counts": counts, "rows": rows})
    if attack_rows is not None:
        _write_attacks(out, attack_rows, args, kind, data_source)
    differences = _paired_differences(scores, labels.numpy(), args.baseline) if args.baseline else None
    if differences is not None:
        write_csv(out / "differences.csv", differences)
        write_json(out / "differences.json", {"data": data_source, "baseline": args.baseline,
                                              "test_counts": counts, "rows": differences})
    if args.save_scores:
        import io

        import numpy as np

        from ..files import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, labels=labels.numpy(), **{f"{m}|{e}": v for (m, e), v in scores.items()})
        atomic_write_bytes(out / "scores.npz", buffer.getvalue())
        if attack_scores is not None:  # the attacked jets' scores, per tagger and budget, with their rows
            buffer = io.BytesIO()
            np.savez(buffer, **attack_scores)
            atomic_write_bytes(out / "attack_scores.npz", buffer.getvalue())
    plot_severity_curves([{**r, "accuracy": r["auc"]} for r in rows], out / "plots", "accuracy",
                         title_prefix="ROC AUC (%) under ")
    print(f"on the {describe_counts(counts['signal'], counts['background'])}: AUC [95 % DeLong interval]; "
          f"R50, R30 = 1/ε_B at ε_S = 50 %, 30 % [95 % exact interval] (background jets passing the cut)")
    for r in rows:
        print(f"{r['model']:>12} {r['distortion']:>20}  AUC {format_auc(r)}  R50 {format_rejection(r, 50)}  "
              f"R30 {format_rejection(r, 30)}")
    if differences is not None:
        print(f"\nAUC − AUC({args.baseline}) on the same jets [95 % DeLong paired interval]")
        for r in differences:
            print(f"{r['model']:>12} {r['distortion']:>20}  {r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
                  f"  {r['verdict']}")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.csv'}")
    if differences is not None:
        print(f"wrote {out / 'differences.json'} and {out / 'differences.csv'}")
    if args.save_scores:
        print(f"wrote {out / 'scores.npz'}" + (f" and {out / 'attack_scores.npz'}" if attack_scores is not None
                                                else ""))
    if attack_rows is not None:
        _print_attacks(attack_rows, args)
        print(f"wrote {out / 'attacks.json'} and {out / 'attacks.csv'}")
    return 0


def _paired_differences(scores: dict[tuple[str, str], Any], labels: Any, baseline: str) -> list[dict[str, Any]]:
    """AUC(tagger) − AUC(baseline) per effect, on the same jets, with DeLong's paired interval."""
    from ..metrics import paired_auc_difference

    rows = []
    for (name, effect), values in scores.items():
        if name == baseline:
            continue
        d = paired_auc_difference(values, scores[(baseline, effect)], labels)
        rows.append({"model": name, "baseline": baseline, "distortion": effect, "auc": d.aucs[0],
                     "baseline_auc": d.aucs[1], "difference": d.difference, "low": d.low, "high": d.high,
                     "std_error": d.std_error, "signal": d.signal, "background": d.background,
                     "verdict": "higher" if d.low > 0 else "lower" if d.high < 0 else "within noise"})
    return rows


def _attack_budgets(args: argparse.Namespace) -> list[Any] | None:
    """The :class:`~stabletrain.jets.cloud_attacks.CloudBudget` list of ``--attack``, checked before loading."""
    import math

    from .cloud_attacks import CloudBudget, _attack_plan

    extras = [name for name, given in (("--attack-angle", args.attack_angle), ("--attack-inject", args.attack_inject),
                                       ("--attack-jets", args.attack_jets), ("--attack-steps", args.attack_steps),
                                       ("--attack-queries", args.attack_queries)) if given]
    if args.attack is None:
        if extras:
            raise StableTrainError(f"{', '.join(extras)} only take effect with --attack")
        return None
    _attack_plan(args.attack, args.attack_steps, None, True, args.attack_queries)  # options that fit the attack
    if args.attack_inject and args.attack not in ("pgd", "fgsm"):
        raise StableTrainError(f"--attack-inject needs --attack pgd or fgsm: {args.attack} attacks boxes (relative pT, "
                               f"angles), and injected particles live in a disc and a capped simplex")
    try:
        epsilons = [float(e) for e in args.attack_budgets.split(",") if e.strip()]
    except ValueError:
        raise StableTrainError(f"--attack-budgets takes comma-separated numbers, got {args.attack_budgets!r}") from None
    if not epsilons or any(not math.isfinite(e) or e < 0 for e in epsilons):
        raise StableTrainError(f"--attack-budgets takes finite numbers >= 0, got {args.attack_budgets!r}")
    if len(set(epsilons)) != len(epsilons):
        raise StableTrainError(f"--attack-budgets repeats a budget: {args.attack_budgets!r}")
    particles, gev = 0, 0.0
    if args.attack_inject:
        try:
            k, g = args.attack_inject.split(":")
            particles, gev = int(k), float(g)
        except ValueError:
            raise StableTrainError(f"--attack-inject takes K:GEV (soft particles and their summed pT), "
                                   f"got {args.attack_inject!r}") from None
        if particles < 1 or not gev > 0:
            raise StableTrainError(f"--attack-inject needs K >= 1 and GEV > 0, got {args.attack_inject!r}")
    budgets = [CloudBudget(pt=e, angle=args.attack_angle if e else 0.0, particles=particles if e else 0,
                           budget_gev=gev if e else 0.0) for e in sorted(epsilons)]
    if 0.0 not in epsilons:
        budgets.insert(0, CloudBudget())
    return budgets


def _attack_curves(args: argparse.Namespace, models: dict[str, Any], kind: str, test: Any,
                   budgets: list[Any], scores: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every tagger's robustness curve on the test jets (or a seeded ``--attack-jets`` subset of them); ``scores``
    (a dict) receives ``labels``, ``rows`` (the attacked test rows) and ``MODEL|clean``, ``MODEL|BUDGET``."""
    import numpy as np

    from .cloud_attacks import cloud_attack_curve, image_attack_curve

    if kind == "image" and (args.attack_angle or args.attack_inject):
        raise StableTrainError("--attack-angle and --attack-inject act on particles; image taggers take the "
                               "relative pT budgets only")
    n = len(test.y)
    index = np.arange(n)
    if args.attack_jets and args.attack_jets < n:
        index = np.sort(np.random.default_rng(args.seed).choice(n, args.attack_jets, replace=False))
        test = test.subset(index)
    if scores is not None:
        scores["labels"], scores["rows"] = np.asarray(test.y), index
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        if not args.quiet:
            print(f"attacking {name} ({args.attack}, {len(test.y)} test jets)", file=sys.stderr)
        progress = None if args.quiet else (lambda line, name=name: print(f"  {name}: {line}", file=sys.stderr))
        kept: dict[str, Any] | None = {} if scores is not None else None
        if kind == "cloud":
            curve = cloud_attack_curve(model, test.x, test.y, budgets, attack=args.attack, steps=args.attack_steps,
                                       queries=args.attack_queries, seed=args.seed, progress=progress,
                                       keep_scores=kept)
        else:
            curve = image_attack_curve(model, test.x, test.y, [b.pt for b in budgets], attack=args.attack,
                                       steps=args.attack_steps, queries=args.attack_queries, seed=args.seed,
                                       progress=progress, keep_scores=kept)
        if scores is not None and kept is not None:
            scores.update({f"{name}|{key}": value for key, value in kept.items()})
        rows.extend({"model": name, "epsilon": r["strength"], **r} for r in curve)
    return rows


def _write_attacks(out: Path, rows: list[dict[str, Any]], args: argparse.Namespace, kind: str,
                   data_source: Any) -> None:
    from ..files import write_csv, write_json
    from ..reports import plot_robustness

    write_csv(out / "attacks.csv", rows)
    from .cloud_attacks import _attack_plan

    _, steps, _, queries = _attack_plan(args.attack, args.attack_steps, None, True, args.attack_queries)
    settings = {"attack": args.attack, "steps": None if args.attack == "square" else 1 if args.attack == "fgsm" else steps,
                "queries": queries or None,
                "budgets": args.attack_budgets, "angle": args.attack_angle, "inject": args.attack_inject,
                "jets": rows[0]["n"] if rows else 0, "seed": args.seed,
                "threat": "relative pT change per particle" if kind == "cloud" else "relative pT change per cell"}
    write_json(out / "attacks.json", {"data": data_source, "input": "clouds" if kind == "cloud" else "images",
                                      "settings": settings, "rows": rows})
    plot_robustness(rows, [args.attack], out / "plots" / "attacks.png",
                    xlabel="ε: relative pT change per " + ("particle" if kind == "cloud" else "cell"))


def _print_attacks(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from .tagging import format_auc

    n = rows[0]["n"] if rows else 0
    print(f"\n{args.attack} on {n} test jets: robust accuracy (right on the clean jet and not fooled at this "
          f"budget or a smaller one), AUC of the attacked jets")
    for r in rows:
        print(f"{r['model']:>12}  ε {r['budget_pt']:<6g} robust accuracy {100 * r['robust_accuracy']:5.1f} %  "
              f"AUC {format_auc(r)}")


#: ``stabletrain jets …``, registered by :mod:`stabletrain.jets.plugin`.
COMMAND = Command("jets", add_jets_parser, run_jets_command)
#: ``stabletrain demo --data jets``, registered by :mod:`stabletrain.jets.plugin`.
DEMO = Demo("jets", add_jet_demo_options, ("n", "workers", "noise", "sample"), run_jet_demo_command)
