"""The main job: train ``plain``, ``gaussian`` and ``stability`` with the same budget and compare them.

>>> from stabletrain.demo import DemoConfig, run_demo
>>> result = run_demo(DemoConfig(quick=True), "runs/demo-quick", progress=False)   # doctest: +SKIP
>>> result["checks"]   # doctest: +SKIP

Writes into its output folder:

* ``models/<method>/`` — each method's checkpoint, history and config;
* ``results.json``, ``results.csv`` — every (method, distortion) result;
* ``plots/accuracy_<family>.png``, ``plots/flip_rate_<family>.png``;
* ``report.md`` — settings, the paper's claims checked on these numbers,
  and the tables.

Re-running the same command reuses finished models and resumes unfinished
ones; changed settings need a new output folder or ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .locking import output_lock
from .checks import StableTrainError, check_fields
from .data import DataSplit
from .distortions import Distortion, paper_sweep, parse_distortion, parse_distortions
from .evaluation import distortion_results
from .files import write_yaml
from .objectives import available_methods
from .reports import text_table, write_evaluation, write_similarity_report
from .similarity import build_benchmark, evaluate_similarity, similarity_sweep
from .registry import TASKS
from .tasks import get_task
from .training import TrainConfig, differing_options, load_checkpoint, load_model, train
from .training.convergence import convergence, convergence_warning

logger = logging.getLogger("stabletrain.demo")


def train_or_reuse(config: TrainConfig, run_dir: Path, data: DataSplit, *, overwrite: bool = False,
                   progress: bool = True, log: Callable[[str], None] | None = None,
                   ignore: tuple[str, ...] = ()) -> tuple[nn.Module, float]:
    """Reuse the finished model in ``run_dir``, resume an unfinished one, or train it; returns (model, seconds).

    A stored run must be the same run (:func:`stabletrain.training.differing_options`, the rule that resume
    and ``compare`` use too), apart from the options in ``ignore``; otherwise this is an error, unless
    ``overwrite``.
    """
    emit = log or (lambda line: None)
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.exists() and not overwrite:
        stored = load_checkpoint(checkpoint)
        changed = [k for k in differing_options(stored["config"], config, allow_more_epochs=not stored.get("complete"))
                   if k not in ignore]
        if changed:
            raise StableTrainError(f"{run_dir} was trained with different {', '.join(changed)}; "
                                   f"choose another --out or pass --overwrite")
        if stored.get("complete"):
            emit(f"{config.method}: reusing the finished model in {run_dir}")
            return load_model(checkpoint)[0], float(stored["train_seconds"])
    emit(f"training {config.method} ({config.epochs} epochs, {config.task} on {config.data}) in {run_dir}")
    result = train(config, run_dir, resume=not overwrite, overwrite=overwrite, progress=progress, data=data,
                   log=emit)
    return result.model, result.train_seconds

__all__ = ["train_or_reuse", "DemoConfig", "run_demo", "QUICK_SWEEP", "claims", "similarity_claims"]

#: The reduced sweep of ``--quick``: the strongest setting of each family that the checks use, and one mid one.
QUICK_SWEEP = ["jpeg-50", "jpeg-10", "thumb-16", "crop-10", "gaussian-0.1", "gaussian-0.3"]
QUICK_SIMILARITY_SWEEP = ["jpeg-10", "thumb-16", "crop-10", "gaussian-0.1"]

#: Per-task defaults of the demo (see docs/results.md for how they were chosen).
TASK_DEFAULTS = {
    "classification": {"data": "digits", "epochs": 15},
    "similarity": {"data": "photos", "epochs": 8},
}


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`.

    ``alpha``, ``sigma``, ``width`` and ``norm`` (the built-in models'
    normalization layers, ``'batch'`` or ``'group'``) apply to every method
    (model) that takes them; left at None, each method keeps its own default (see
    :mod:`stabletrain.objectives`), the values chosen in ``docs/results.md``.
    """

    task: str = "classification"
    data: str | None = None
    methods: tuple[str, ...] = ("plain", "gaussian", "stability")
    epochs: int | None = None
    alpha: float | None = None
    sigma: float | None = None
    width: int | None = None
    norm: str | None = None
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    device: str = "auto"
    distortions: tuple[str, ...] | None = None
    quick: bool = False

    def resolved(self) -> "DemoConfig":
        """Fill in the task's defaults, apply ``quick`` (2 epochs, narrow model, reduced sweep), validate."""
        check_fields(self)
        if self.task not in TASK_DEFAULTS:
            raise StableTrainError(f"unknown demo task {self.task!r}; known: {', '.join(TASK_DEFAULTS)}")
        defaults = TASK_DEFAULTS[self.task]
        config = dataclasses.replace(self, data=self.data or defaults["data"], epochs=self.epochs or defaults["epochs"])
        if self.quick:
            quick_sweep = QUICK_SWEEP if self.task == "classification" else QUICK_SIMILARITY_SWEEP
            config = dataclasses.replace(config, epochs=min(config.epochs, 2), width=min(config.width or 8, 8),
                                         distortions=self.distortions or tuple(quick_sweep))
        known = available_methods(self.task)
        unknown = [m for m in config.methods if m not in known]
        if unknown or not config.methods:
            raise StableTrainError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                   f"known methods: {', '.join(known)}")
        if config.distortions is not None:
            parse_distortions(config.distortions)
        taken: set[str] = set()
        for method in config.methods:
            taken |= config._train_config(method)[1]
        unused = [k for k, v in config.shared_options().items() if k not in taken]
        if unused:
            raise StableTrainError(f"{', '.join('--' + k for k in unused)} has no effect on the methods "
                                   f"{', '.join(config.methods)}")
        return config

    def shared_options(self) -> dict:
        """The options given for every method (alpha, sigma, width, norm), where set."""
        return {k: getattr(self, k) for k in ("alpha", "sigma", "width", "norm") if getattr(self, k) is not None}

    def _train_config(self, method: str) -> tuple[TrainConfig, set[str]]:
        return TrainConfig.with_shared(dict(task=self.task, data=self.data, method=method, epochs=self.epochs,
                                            batch_size=self.batch_size, lr=self.lr, seed=self.seed, device=self.device),
                                       self.shared_options())

    def train_config(self, method: str) -> TrainConfig:
        """The training config of one method of the demo."""
        return self._train_config(method)[0]


def _strongest(rows: list[dict], family: str) -> str | None:
    specs = {r["distortion"]: r for r in rows if r["family"] == family}
    if not specs:
        return None
    larger = parse_distortion(next(iter(specs))).stronger_when_larger
    return max(specs, key=lambda s: float(specs[s]["param"]) * (1 if larger else -1))


def _claim(claim: str, threshold: float, a: str, b: str, spec: str, acc: dict, paired: dict) -> dict:
    """One claim "acc(a) − acc(b) > threshold" on ``spec``, decided by the interval of the difference."""
    from .stats import format_interval, verdict

    row_a, row_b = acc[(a, spec)], acc[(b, spec)]
    pair = paired.get((a, b, spec))
    if pair is not None:
        difference, low, high, n = pair["difference"], pair["difference_low"], pair["difference_high"], pair["n"]
        test = f"paired, McNemar p = {pair['p_value']:.2g}"
    else:  # no paired results: Newcombe's interval for independent proportions, wider
        difference = row_a["accuracy"] - row_b["accuracy"]
        low = difference - ((row_a["accuracy"] - row_a["accuracy_low"]) ** 2
                            + (row_b["accuracy_high"] - row_b["accuracy"]) ** 2) ** 0.5
        high = difference + ((row_a["accuracy_high"] - row_a["accuracy"]) ** 2
                             + (row_b["accuracy"] - row_b["accuracy_low"]) ** 2) ** 0.5
        n, test = row_a["n"], "unpaired"
    outcome = verdict(low, high, threshold)
    return {"claim": claim, "verdict": outcome, "held": outcome == "held", "distortion": spec,
            "difference": difference, "low": low, "high": high, "threshold": threshold, "n": n,
            "detail": f"{100 * row_a['accuracy']:.1f}% vs {100 * row_b['accuracy']:.1f}%; difference "
                      f"{format_interval(difference, low, high, signed=True)} points (95 %), {test}, n = {n}"}


def claims(rows: list[dict], reference: str = "plain", candidate: str = "stability",
           paired: list[dict] | None = None, baseline: str = "gaussian") -> list[dict]:
    """Check the paper's central claims on these results, each decided by a 95 % interval.

    1. ``candidate``'s clean accuracy is within 1 point of ``reference``'s:
       the difference is above −1 point.
    2. ``candidate`` is more accurate than ``reference`` on the strongest
       setting of each distortion family in the sweep.
    3. Augmentation (``baseline``, when evaluated) costs clean accuracy
       against ``candidate``: the candidate's clean accuracy is higher.

    Each claim is ``'held'`` (the interval of the difference lies above the
    threshold), ``'did not hold'`` (below it) or ``'within noise'``. With
    ``paired`` rows (:func:`~stabletrain.evaluation.paired_comparisons` on
    the same test images) the interval is Newcombe's for paired proportions;
    without, the wider one for independent proportions.
    """
    acc = {(r["model"], r["distortion"]): r for r in rows if "accuracy_low" in r}
    if (reference, "clean") not in acc or (candidate, "clean") not in acc:
        return []
    lookup: dict = {}
    for p in paired or []:
        lookup[(p["model"], p["reference"], p["distortion"])] = p
        lookup[(p["reference"], p["model"], p["distortion"])] = {
            **p, "difference": -p["difference"], "difference_low": -p["difference_high"],
            "difference_high": -p["difference_low"]}
    out = [_claim(f"{candidate} clean accuracy within 1 point of {reference}", -0.01, candidate, reference,
                  "clean", acc, lookup)]
    for family in ("gaussian", "jpeg", "thumb", "crop"):
        spec = _strongest(rows, family)
        if spec is None:
            continue
        out.append(_claim(f"{candidate} more accurate than {reference} on {spec} (strongest {family})", 0.0,
                          candidate, reference, spec, acc, lookup))
    if (baseline, "clean") in acc:
        out.append(_claim(f"augmentation ({baseline}) costs clean accuracy against {candidate}", 0.0, candidate,
                          baseline, "clean", acc, lookup))
    return out


def similarity_claims(result: dict, reference: str = "plain", candidate: str = "stability",
                      replicates: int = 500) -> list[dict]:
    """The paper's similarity claims on these results, each decided by a 95 % paired bootstrap interval.

    1. ``candidate`` lowers the median near-duplicate distance relative to
       the median non-duplicate distance.
    2. ``candidate`` has higher average precision on each distorted family.
    3. ``candidate`` has a higher clean triplet ranking score.

    The interval resamples tiles, non-duplicate pairs and triplets, the same
    draw for both models (:func:`~stabletrain.similarity.similarity_differences`).
    """
    from .similarity import similarity_differences
    from .stats import format_interval, verdict

    models = result["models"]
    if reference not in models or candidate not in models:
        return []
    differences = similarity_differences(result, candidate, reference, replicates=replicates)

    def claim(text: str, key: str, a: float, b: float, digits: int = 3) -> dict:
        d = differences[key]
        outcome = verdict(d["low"], d["high"])
        return {"claim": text, "verdict": outcome, "held": outcome == "held", "difference": d["difference"],
                "low": d["low"], "high": d["high"], "threshold": 0.0,
                "detail": f"{a:.{digits}f} vs {b:.{digits}f}; difference "
                          f"{format_interval(d['difference'], d['low'], d['high'], percent=False, digits=digits, signed=True)}"
                          f" (95 %, paired bootstrap over {d['tiles']} tiles, {d['non_duplicate_pairs']} "
                          f"non-duplicate pairs, {d['triplets']} triplets)"}

    out = [claim(f"{candidate} lowers the ratio of median near-duplicate to non-duplicate distance", "distance_ratio",
                 models[candidate]["distance_ratio"], models[reference]["distance_ratio"])]
    ap = {(r["model"], r["family"]): r["average_precision"] for r in result["rows"] if r["level"] == "family"}
    for family in dict.fromkeys(f for _, f in ap):
        out.append(claim(f"{candidate} has higher near-duplicate average precision on {family}", f"ap/{family}",
                         ap[(candidate, family)], ap[(reference, family)]))
    out.append(claim(f"{candidate} has a higher clean triplet ranking score", "triplets",
                     models[candidate]["clean_triplet_accuracy"], models[reference]["clean_triplet_accuracy"]))
    return out


def _options_text(options: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items()) or "none"


def run_demo(config: DemoConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    """Train every method in ``config.methods``, evaluate them on one sweep, and write the report.

    The output folder is locked while the job runs (:func:`stabletrain.locking.output_lock`).
    """
    with output_lock(out_dir, what="demo"):
        return _run_demo(config, out_dir, overwrite=overwrite, progress=progress, log=log)


def _run_demo(config: DemoConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    config = config.resolved()
    emit = log or (lambda line: None)
    out = Path(out_dir)
    specs = list(config.distortions) if config.distortions is not None else None
    task = get_task(config.task)
    data = task.load_data(config.train_config(config.methods[0]))
    if config.task == "classification":
        sweep: list[Distortion] = parse_distortions(specs or paper_sweep(data.image_size[0]))
    else:
        sweep = parse_distortions(specs or similarity_sweep(data.image_size[0]))
    write_yaml(out / "config.yaml", {**dataclasses.asdict(config),
                                     "distortions": [d.spec for d in sweep]})
    models, train_seconds = {}, {}
    started = time.perf_counter()
    for method in config.methods:
        models[method], train_seconds[method] = train_or_reuse(config.train_config(method), out / "models" / method,
                                                               data, overwrite=overwrite, progress=progress, log=emit)
    base_seconds = train_seconds.get("plain")
    settings = {"task": config.task,
                "data": f"{config.data} ({len(data.train)} train / {len(data.test)} test, "
                        f"{data.channels}×{data.image_size[0]}×{data.image_size[1]})",
                "methods": ", ".join(config.methods), "epochs": config.epochs,
                **{f"options of {m}": _options_text(config.train_config(m).method_args) for m in config.methods},
                "model": _options_text({"name": config.train_config(config.methods[0]).model,
                                        **config.train_config(config.methods[0]).model_args}),
                "batch size": config.batch_size, "learning rate": config.lr, "seed": config.seed,
                "quick": config.quick}
    if config.task == "classification":
        emit(f"evaluating {len(models)} models on clean data and {len(sweep)} distortions")
        evaluated = distortion_results(models, data.test, sweep, seed=config.seed, progress=progress)
        rows = evaluated.rows
        for line in evaluated.warnings:
            logger.warning("%s", line)
        paired = evaluated.paired("plain") if "plain" in models and len(models) > 1 else []
        checks = claims(rows, paired=paired + (evaluated.paired("stability") if "stability" in models else [])) \
            if {"plain", "stability"} <= set(models) else []
        clean = {r["model"]: r["accuracy"] for r in rows if r["distortion"] == "clean"}
        facts = {m: convergence(load_checkpoint(out / "models" / m / "checkpoint.pt")["history"]) for m in models}
        rising = [line for m in models if (line := convergence_warning(m, facts[m])) is not None]
        for line in rising:
            logger.warning("%s", line)
        time_table = ["| method | clean accuracy (%) | final train accuracy (%) | test change, last epochs (points) "
                      "| training time (s) | relative to plain |", "|---|---:|---:|---:|---:|---:|"]
        time_table += [f"| {m} | {100 * clean[m]:.1f} | {100 * (facts[m]['final_train_accuracy'] or float('nan')):.1f} "
                       f"| {100 * facts[m]['test_change_last_epochs']:+.1f} | {train_seconds[m]:.1f} | "
                       f"{f'{train_seconds[m] / base_seconds:.2f}×' if base_seconds else '–'} |" for m in models]
        summary = [f"WARNING: {line}" for line in evaluated.warnings + rising]
        summary += [f"{c['verdict']}: {c['claim']} ({c['detail']})" for c in checks]
        summary.append(f"each accuracy is over {len(data.test)} test images: one image is "
                       f"{100 / len(data.test):.2f} points; intervals are 95 % (Wilson for an accuracy, "
                       f"Newcombe's paired interval for a difference on the same images)")
        paths = write_evaluation(out, rows, title=f"stabletrain demo on {config.data}", settings=settings,
                                 summary_lines=summary,
                                 extra_tables={"Clean accuracy and training cost": "\n".join(time_table)},
                                 extra_json={"train_seconds": train_seconds, "checks": checks, "paired": paired,
                                             "training": facts,
                                             "wall_seconds": time.perf_counter() - started})
        table = text_table(rows)
    else:
        benchmark = build_benchmark(data, sweep, seed=config.seed)
        emit(f"evaluating {len(models)} embedders on {len(benchmark)} tiles × {len(sweep)} distortions")
        result = evaluate_similarity(models, benchmark, progress=progress)
        checks = similarity_claims(result)
        rows = result["rows"]
        time_table = ["| method | clean triplet score (%) | training time (s) | relative to plain |",
                      "|---|---:|---:|---:|"]
        time_table += [f"| {m} | {100 * result['models'][m]['clean_triplet_accuracy']:.1f} | "
                       f"{train_seconds[m]:.1f} | "
                       f"{f'{train_seconds[m] / base_seconds:.2f}×' if base_seconds else '–'} |" for m in models]
        summary = [f"{c['verdict']}: {c['claim']} ({c['detail']})" for c in checks]
        paths = write_similarity_report(out, result, title=f"stabletrain similarity demo on {config.data}",
                                        settings=settings, summary_lines=summary,
                                        extra_tables={"Training cost": "\n".join(time_table)},
                                        extra_json={"train_seconds": train_seconds, "checks": checks,
                                                    "wall_seconds": time.perf_counter() - started})
        table = _similarity_text_table(result)
    return {"rows": rows, "checks": checks, "train_seconds": train_seconds, "paths": paths, "table": table}


def _similarity_text_table(result: dict) -> str:
    models = list(result["models"])
    lines = ["average precision of near-duplicate detection (%)", "family".ljust(18) + "".join(m.rjust(12) for m in models)]
    for r in result["rows"]:
        if r["level"] == "family" and r["model"] == models[0]:
            values = [next(x for x in result["rows"] if x["level"] == "family" and x["model"] == m
                           and x["family"] == r["family"])["average_precision"] for m in models]
            lines.append(r["family"].ljust(18) + "".join(f"{100 * v:.1f}".rjust(12) for v in values))
    lines.append("near-dup/non-dup".ljust(18) + "".join(f"{result['models'][m]['distance_ratio']:.3f}".rjust(12)
                                                        for m in models))
    return "\n".join(lines)
