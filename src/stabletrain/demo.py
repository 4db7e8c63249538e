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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checks import StableTrainError
from .data import load_data
from .distortions import Distortion, paper_sweep, parse_distortion, parse_distortions
from .evaluation import evaluate_distortions
from .files import write_yaml
from .objectives import available_methods
from .reports import text_table, write_evaluation
from .training import TrainConfig, load_checkpoint, load_model, train

__all__ = ["DemoConfig", "run_demo", "QUICK_SWEEP", "claims"]

#: The reduced sweep of ``--quick``: the strongest setting of each family that the checks use, and one mid one.
QUICK_SWEEP = ["jpeg-50", "jpeg-10", "thumb-16", "crop-10", "gaussian-0.1", "gaussian-0.3"]


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`. ``alpha``/``sigma`` default to the values chosen in ``docs/results.md``."""

    data: str = "digits"
    methods: tuple[str, ...] = ("plain", "gaussian", "stability")
    epochs: int = 15
    alpha: float = TrainConfig.alpha
    sigma: float = TrainConfig.sigma
    width: int = TrainConfig.width
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    seed: int = 0
    device: str = "auto"
    distortions: tuple[str, ...] | None = None
    quick: bool = False

    def resolved(self) -> "DemoConfig":
        """Apply ``quick`` (2 epochs, narrow model, reduced sweep) and validate names."""
        config = self
        if self.quick:
            config = dataclasses.replace(self, epochs=min(self.epochs, 2), width=min(self.width, 8),
                                         distortions=self.distortions or tuple(QUICK_SWEEP))
        unknown = [m for m in config.methods if m not in available_methods()]
        if unknown or not config.methods:
            raise StableTrainError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                   f"known methods: {', '.join(available_methods())}")
        if config.distortions is not None:
            parse_distortions(config.distortions)
        return config

    def train_config(self, method: str) -> TrainConfig:
        return TrainConfig(data=self.data, method=method, epochs=self.epochs, alpha=self.alpha, sigma=self.sigma,
                           width=self.width, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           device=self.device).validated()


def _strongest(rows: list[dict], family: str) -> str | None:
    specs = {r["distortion"]: r for r in rows if r["family"] == family}
    if not specs:
        return None
    larger = parse_distortion(next(iter(specs))).stronger_when_larger
    return max(specs, key=lambda s: float(specs[s]["param"]) * (1 if larger else -1))


def claims(rows: list[dict], reference: str = "plain", candidate: str = "stability") -> list[dict]:
    """Check the paper's central claims on these results; each item says whether it held, with numbers.

    1. ``candidate``'s clean accuracy is within 1 point of ``reference``'s.
    2. ``candidate`` is more accurate than ``reference`` on the strongest
       setting of each distortion family in the sweep.
    """
    acc = {(r["model"], r["distortion"]): r["accuracy"] for r in rows}
    if (reference, "clean") not in acc or (candidate, "clean") not in acc:
        return []
    out = []
    ref_clean, cand_clean = acc[(reference, "clean")], acc[(candidate, "clean")]
    out.append({"claim": f"{candidate} clean accuracy within 1 point of {reference}",
                "held": cand_clean >= ref_clean - 0.01,
                "detail": f"{100 * cand_clean:.1f}% vs {100 * ref_clean:.1f}%"})
    for family in ("gaussian", "jpeg", "thumb", "crop"):
        spec = _strongest(rows, family)
        if spec is None:
            continue
        a, b = acc[(candidate, spec)], acc[(reference, spec)]
        out.append({"claim": f"{candidate} more accurate than {reference} on {spec} (strongest {family})",
                    "held": a > b, "detail": f"{100 * a:.1f}% vs {100 * b:.1f}%"})
    return out


def run_demo(config: DemoConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    """Train every method in ``config.methods``, evaluate them on one sweep, and write the report."""
    config = config.resolved()
    emit = log or (lambda line: None)
    out = Path(out_dir)
    specs = list(config.distortions) if config.distortions is not None else None
    data = load_data(config.data)
    sweep: list[Distortion] = parse_distortions(specs or paper_sweep(data.image_size[0]))
    write_yaml(out / "config.yaml", {**dataclasses.asdict(config),
                                     "distortions": [d.spec for d in sweep]})
    models, train_seconds = {}, {}
    started = time.perf_counter()
    for method in config.methods:
        run_dir = out / "models" / method
        checkpoint = run_dir / "checkpoint.pt"
        train_config = config.train_config(method)
        if checkpoint.exists() and not overwrite:
            stored = load_checkpoint(checkpoint)
            changed = [k for k, v in train_config.to_dict().items()
                       if k not in ("device", "batching") and stored["config"].get(k) != v]
            if changed:
                raise StableTrainError(f"{run_dir} was trained with different {', '.join(changed)}; "
                                       f"choose another --out or pass --overwrite")
            if stored.get("complete"):
                emit(f"{method}: reusing the finished model in {run_dir}")
                models[method], _ = load_model(checkpoint)
                train_seconds[method] = float(stored["train_seconds"])
                continue
        emit(f"training {method} ({config.epochs} epochs on {config.data})")
        result = train(train_config, run_dir, resume=not overwrite, overwrite=overwrite, progress=progress,
                       data=data, log=emit)
        models[method] = result.model
        train_seconds[method] = result.train_seconds
    emit(f"evaluating {len(models)} models on clean data and {len(sweep)} distortions")
    rows = evaluate_distortions(models, data.test, sweep, seed=config.seed, progress=progress)
    checks = claims(rows) if {"plain", "stability"} <= set(models) else []
    base_seconds = train_seconds.get("plain")
    time_table = ["| method | clean accuracy (%) | training time (s) | relative to plain |", "|---|---:|---:|---:|"]
    for method in models:
        clean = next(r["accuracy"] for r in rows if r["model"] == method and r["distortion"] == "clean")
        relative = f"{train_seconds[method] / base_seconds:.2f}×" if base_seconds else "–"
        time_table.append(f"| {method} | {100 * clean:.1f} | {train_seconds[method]:.1f} | {relative} |")
    settings = {"data": f"{config.data} ({len(data.train)} train / {len(data.test)} test, "
                        f"{data.channels}×{data.image_size[0]}×{data.image_size[1]})",
                "methods": ", ".join(config.methods), "epochs": config.epochs, "alpha (stability)": config.alpha,
                "sigma (gaussian and stability, pixel units)": config.sigma, "model width": config.width,
                "batch size": config.batch_size, "learning rate": config.lr, "seed": config.seed,
                "quick": config.quick}
    summary = [f"{'held' if c['held'] else 'did NOT hold'}: {c['claim']} ({c['detail']})" for c in checks]
    paths = write_evaluation(out, rows, title=f"stabletrain demo on {config.data}", settings=settings,
                             summary_lines=summary,
                             extra_tables={"Clean accuracy and training cost": "\n".join(time_table)},
                             extra_json={"train_seconds": train_seconds, "checks": checks,
                                         "wall_seconds": time.perf_counter() - started})
    return {"rows": rows, "checks": checks, "train_seconds": train_seconds, "paths": paths,
            "table": text_table(rows)}
