"""``stabletrain compare``: every method, the same budget, the same evaluation, one report.

A comparison is described by a YAML file (examples in ``configs/``)::

    data: digits
    methods: [plain, gaussian, stability, jsd, trades, adversarial, consistency]
    seeds: [0, 1, 2]
    train: {epochs: 10, width: 32, sigma: 0.1, alpha: 1.0}   # shared TrainConfig options
    method_options: {consistency: {sigma: 0.25}}           # per-method overrides
    evaluation:
      distortions: paper                                   # or a list of specs
      attack: pgd
      epsilons: [0, 0.0078, 0.0157, 0.0314]
      attack_steps: 10
      attack_examples: 200
      smoothing: {sigma: 0.25, n0: 50, n: 500, alpha: 0.001, examples: 100}

Every (method, seed) trains into ``models/<method>-s<seed>/`` and its
evaluation is cached beside it, keyed by the evaluation settings, so a
re-run skips what is already trained and evaluated. The report
(``report.md`` and a self-contained ``report.html``) gives mean ± std over
seeds, plots, and the training time of each method relative to ``plain``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from .locking import output_lock
from .checks import StableTrainError, check_fields
from .distortions import paper_sweep, parse_distortions
from .evaluation import evaluate_distortions
from .files import atomic_write_text, read_yaml, write_csv, write_json, write_yaml
from .objectives import available_methods
from .reports import _pyplot, _save_figure, family_order
from .training import TrainConfig, differing_options, load_checkpoint, load_model, train
from .training.config import is_known_option

__all__ = ["CompareConfig", "run_compare", "load_compare_config"]

_EVAL_DEFAULTS: dict[str, Any] = {"distortions": "paper", "attack": "pgd",
                                  "epsilons": [0.0, 2 / 255, 4 / 255, 8 / 255], "attack_steps": 10,
                                  "attack_examples": 200,
                                  "smoothing": {"sigma": 0.25, "n0": 50, "n": 500, "alpha": 0.001, "examples": 100,
                                                "radii": [0.0, 0.25, 0.5, 0.75, 1.0]}}


@dataclasses.dataclass
class CompareConfig:
    """A resolved comparison: data, methods, seeds, shared and per-method training options, evaluation."""

    data: str = "digits"
    methods: list[str] = dataclasses.field(default_factory=lambda: ["plain", "gaussian", "stability"])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    train: dict = dataclasses.field(default_factory=dict)
    method_options: dict = dataclasses.field(default_factory=dict)
    evaluation: dict = dataclasses.field(default_factory=dict)

    def resolved(self) -> "CompareConfig":
        check_fields(self)
        unknown = [m for m in self.methods if m not in available_methods()]
        if unknown or not self.methods:
            raise StableTrainError(f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                                   f"known methods: {', '.join(available_methods())}")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise StableTrainError(f"seeds must be a non-empty list of integers >= 0, got {self.seeds!r}")
        bad = [m for m in self.method_options if m not in self.methods]
        if bad:
            raise StableTrainError(f"method_options names method(s) not compared: {', '.join(bad)}")
        evaluation = {**_EVAL_DEFAULTS, **self.evaluation}
        evaluation["smoothing"] = ({**_EVAL_DEFAULTS["smoothing"], **(self.evaluation.get("smoothing") or {})}
                                   if self.evaluation.get("smoothing", True) is not False else False)
        unknown_eval = set(evaluation) - set(_EVAL_DEFAULTS)
        if unknown_eval:
            raise StableTrainError(f"unknown evaluation option(s): {', '.join(sorted(unknown_eval))}")
        if evaluation["distortions"] != "paper":
            parse_distortions(evaluation["distortions"])
        config = dataclasses.replace(self, evaluation=evaluation)
        taken: set[str] = set()
        for method in config.methods:
            for seed in config.seeds:  # validates every option before any training starts
                taken |= config._train_config(method, seed)[1]
        unused = sorted(set(config._shared()) - taken)
        unknown_options = [k for k in unused if not is_known_option(k)]
        if unknown_options:
            raise StableTrainError(f"unknown config option(s) in train: {', '.join(unknown_options)}")
        if unused:
            model = config.train.get("model", TrainConfig().model)
            raise StableTrainError(f"train option(s) {', '.join(unused)} have no effect on the model {model} and "
                                   f"the methods {', '.join(config.methods)}")
        return config

    def _shared(self) -> dict:
        """Options of ``train`` that are not top-level fields of a TrainConfig: each goes to the methods that take it."""
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        return {k: v for k, v in self.train.items() if k not in fields}

    def _train_config(self, method: str, seed: int) -> tuple[TrainConfig, set[str]]:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {**{k: v for k, v in self.train.items() if k in fields}, "data": self.data, "method": method,
                  "seed": seed}
        # per-method options must each take effect for that method
        values.update(self.method_options.get(method, {}))
        shared = {k: v for k, v in self._shared().items() if k not in self.method_options.get(method, {})}
        return TrainConfig.with_shared(values, shared)

    def train_config(self, method: str, seed: int) -> TrainConfig:
        """The training config of one (method, seed): shared options where the method takes them, then its own."""
        return self._train_config(method, seed)[0]


def load_compare_config(path: str | Path | None, overrides: dict | None = None,
                        train_overrides: dict | None = None) -> CompareConfig:
    """Read a comparison YAML (safe loader; ``None``: the defaults); ``overrides`` replace top-level keys and
    ``train_overrides`` keys of ``train`` (``model_args`` is merged), before the config is checked."""
    values = read_yaml(path) if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(CompareConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise StableTrainError(f"unknown comparison option(s) in {path}: {', '.join(unknown)}")
    if train_overrides:
        if not isinstance(values.get("train") or {}, dict):
            raise StableTrainError(f"train must be a mapping of option: value, got {values['train']!r}")
        train = dict(values.get("train") or {})
        for key, value in train_overrides.items():
            if key == "model_args":
                value = {**(train.get("model_args") or {}), **value}
            train[key] = value
        values["train"] = train
    return CompareConfig(**values).resolved()


def _evaluation_key(config: CompareConfig, image_size: int) -> str:
    # version 2: per-example random streams and robust = clean-correct and never fooled at a smaller epsilon
    text = json.dumps({"evaluation": config.evaluation, "image_size": image_size, "version": 2}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _evaluate_one(model: torch.nn.Module, name: str, data, config: CompareConfig, seed: int) -> dict:
    """Distortion rows, the robustness curve and the certification of one trained model.

    Every random draw is per example (distortions from ``(seed,
    'distortion', spec, index)``, attack starts from ``(seed, 'attack',
    method, index)``, smoothing noise from ``(seed, 'smoothing', method,
    index)``), so the numbers do not depend on batch sizes. Robust accuracy
    is that of :func:`~stabletrain.attacks.robustness_curve`: clean-correct
    and not fooled at this or any smaller epsilon.
    """
    from .attacks import robustness_curve
    from .seeding import ExampleRNG
    from .smoothing import certify_dataset

    ev = config.evaluation
    specs = ev["distortions"]
    sweep = parse_distortions(paper_sweep(data.image_size[0]) if specs == "paper" else specs)
    rows = evaluate_distortions({name: model}, data.test, sweep, seed=seed, progress=False)
    count = min(int(ev["attack_examples"]), len(data.test))
    curve = robustness_curve(model, data.test.x[:count], data.test.y[:count], [float(e) for e in ev["epsilons"]],
                             attack=ev["attack"], generator=ExampleRNG.for_examples(range(count), seed, "attack", name),
                             **({} if ev["attack"] == "fgsm" else {"steps": int(ev["attack_steps"])}))
    result = {"rows": rows, "robust": curve}
    smoothing = ev["smoothing"]
    if smoothing:
        certified = min(int(smoothing["examples"]), len(data.test))
        cert = certify_dataset(model, data.test.x, data.test.y, float(smoothing["sigma"]), n0=int(smoothing["n0"]),
                               n=int(smoothing["n"]), alpha=float(smoothing["alpha"]),
                               max_examples=certified, radii=smoothing["radii"],
                               generator=ExampleRNG.for_examples(range(certified), seed, "smoothing", name))
        result["smoothing"] = {k: v for k, v in cert.items() if k not in ("prediction", "radius")}
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _summarize(config: CompareConfig, results: dict[tuple[str, int], dict], seconds: dict[tuple[str, int], float]
               ) -> tuple[list[str], list[dict]]:
    """Columns and one row per method with mean and std over seeds of every headline number."""
    first = next(iter(results.values()))
    families = family_order(first["rows"])
    columns = ["clean accuracy"] + [f"{fam} (mean over severities)" for fam in families]
    # the attack and the certification run on the first N test images: their columns name N, and the clean
    # accuracy of those same images sits beside them, so robust is never read against another sample
    attacked = first["robust"][0]["n"] if first["robust"] else 0
    columns += [f"clean accuracy, first {attacked} (attacked)"]
    columns += [f"robust accuracy ε={p['epsilon']:.4g}, first {attacked}" for p in first["robust"]]
    if "smoothing" in first:
        certified = first["smoothing"].get("examples", "?")
        columns += [f"ACR, first {certified}"] + [f"certified accuracy r={r:g}, first {certified}"
                                                  for r in first["smoothing"]["radii"]]
    columns += ["training time relative to plain"]
    plain_time = statistics.mean([seconds[("plain", s)] for s in config.seeds]) if "plain" in config.methods else None
    table = []
    for method in config.methods:
        per_seed: dict[str, list[float]] = {c: [] for c in columns}
        for seed in config.seeds:
            res = results[(method, seed)]
            acc = {r["distortion"]: r["accuracy"] for r in res["rows"]}
            per_seed["clean accuracy"].append(acc["clean"])
            for fam, items in families.items():
                per_seed[f"{fam} (mean over severities)"].append(statistics.mean(acc[r["distortion"]] for r in items))
            if res["robust"]:
                per_seed[f"clean accuracy, first {attacked} (attacked)"].append(res["robust"][0]["clean_accuracy"])
            for point in res["robust"]:
                per_seed[f"robust accuracy ε={point['epsilon']:.4g}, first {attacked}"].append(point["robust_accuracy"])
            if "smoothing" in res:
                per_seed[f"ACR, first {certified}"].append(res["smoothing"]["acr"])
                for r, a in zip(res["smoothing"]["radii"], res["smoothing"]["certified_accuracy"]):
                    per_seed[f"certified accuracy r={r:g}, first {certified}"].append(a)
            if plain_time:
                per_seed["training time relative to plain"].append(seconds[(method, seed)] / plain_time)
        table.append({"method": method, **{c: _mean_std(v) for c, v in per_seed.items() if v}})
    return columns, table


def _plots(config: CompareConfig, results: dict, out: Path) -> list[Path]:
    plt = _pyplot()
    first = next(iter(results.values()))
    families = family_order(first["rows"])
    written = []

    def band(ax, xs, per_seed, label, color):
        mean = [statistics.mean(v) for v in per_seed]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_seed]
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, color=color, label=label)

    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.4), dpi=110, squeeze=False,
                             sharey=True)
    for ax, (fam, items) in zip(axes[0], families.items()):
        names = ["clean"] + [r["distortion"] for r in items]
        for index, method in enumerate(config.methods):
            per = [[100 * next(r["accuracy"] for r in results[(method, s)]["rows"] if r["distortion"] == n)
                    for s in config.seeds] for n in names]
            band(ax, range(len(names)), per, method, f"C{index}")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
        ax.set_title(fam)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    written.append(_save_figure(fig, out / "plots" / "accuracy_vs_severity.png"))

    def curve(xs: list[float], value: Callable[[dict, int], float], xlabel: str, ylabel: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
        for index, method in enumerate(config.methods):
            per = [[100 * value(results[(method, s)], i) for s in config.seeds] for i in range(len(xs))]
            band(ax, xs, per, method, f"C{index}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save_figure(fig, out / "plots" / name))

    curve([p["epsilon"] for p in first["robust"]], lambda res, i: res["robust"][i]["robust_accuracy"],
          f"epsilon ({config.evaluation['attack']}, pixel units)", "robust accuracy (%)", "robust_accuracy.png")
    if "smoothing" in first:
        curve(first["smoothing"]["radii"], lambda res, i: res["smoothing"]["certified_accuracy"][i],
              f"L2 radius (σ = {first['smoothing']['sigma']:g}, pixel units)", "certified accuracy (%)",
              "certified_accuracy.png")
    return written


def _format(column: str, value: tuple[float, float]) -> str:
    mean, std = value
    if column.startswith("ACR"):
        return f"{mean:.3f} ± {std:.3f}"
    if column.startswith("training time"):
        return f"{mean:.2f}× ± {std:.2f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _best(table: list[dict], column: str) -> float | None:
    values = [row[column][0] for row in table if column in row]
    if not values or column.startswith("training time"):
        return None
    return max(values)


def _markdown(title: str, config: CompareConfig, columns: list[str], table: list[dict], plots: list[Path],
              out: Path) -> str:
    lines = [f"# {title}", "", f"Data: `{config.data}`. Seeds: {', '.join(map(str, config.seeds))}. "
             f"Every method trains with the same options: `{json.dumps(config.train, sort_keys=True)}`; overrides: "
             f"`{json.dumps(config.method_options, sort_keys=True)}`. Values are mean ± std over seeds "
             f"(accuracies in %). Best mean per column in bold.", ""]
    for chunk in (columns[i:i + 6] for i in range(0, len(columns), 6)):
        lines += ["| method | " + " | ".join(chunk) + " |", "|---|" + "---:|" * len(chunk)]
        for row in table:
            cells = []
            for c in chunk:
                if c not in row:
                    cells.append("–")
                    continue
                text = _format(c, row[c])
                cells.append(f"**{text}**" if row[c][0] == _best(table, c) and len(table) > 1 else text)
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Evaluation", "", f"`{json.dumps(config.evaluation, sort_keys=True)}`", "", "## Plots", ""]
    lines += [f"![{p.stem}]({p.relative_to(out)})\n" for p in plots]
    return "\n".join(lines)


def _html(title: str, config: CompareConfig, columns: list[str], table: list[dict], plots: list[Path]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method"] + columns)
    body = []
    for row in table:
        cells = [f"<th>{html.escape(row['method'])}</th>"]
        for c in columns:
            if c not in row:
                cells.append("<td>–</td>")
                continue
            text = html.escape(_format(c, row[c]))
            best = row[c][0] == _best(table, c) and len(table) > 1
            cells.append(f"<td class='best'>{text}</td>" if best else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    images = "".join(
        f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in plots)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }}
thead th {{ background: #f3f3f3; position: sticky; top: 0; }}
td.best {{ font-weight: bold; background: #eef7ee; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Data: <code>{html.escape(config.data)}</code>; seeds {html.escape(', '.join(map(str, config.seeds)))};
shared training options <code>{html.escape(json.dumps(config.train, sort_keys=True))}</code>;
per-method overrides <code>{html.escape(json.dumps(config.method_options, sort_keys=True))}</code>.
Mean ± std over seeds; accuracies in %; best mean per column highlighted.</p>
<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>
<h2>Evaluation</h2><p><code>{html.escape(json.dumps(config.evaluation, sort_keys=True))}</code></p>
<h2>Plots</h2>{images}
</body></html>
"""


def run_compare(config: CompareConfig, out_dir: str | Path, *, progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict:
    """Train and evaluate every (method, seed), reusing finished work, and write the report.

    The output folder is locked while the job runs (:func:`stabletrain.locking.output_lock`).
    """
    with output_lock(out_dir, what="compare"):
        return _run_compare(config, out_dir, progress=progress, log=log)


def _run_compare(config: CompareConfig, out_dir: str | Path, *, progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict:
    from .data import load_data

    config = config.resolved()
    emit = log or (lambda line: None)
    out = Path(out_dir)
    first = config.train_config(config.methods[0], config.seeds[0])
    data = load_data(config.data, image_size=first.image_size, split_seed=first.split_seed,
                     test_fraction=first.test_fraction)
    write_yaml(out / "config.yaml", dataclasses.asdict(config))
    key = _evaluation_key(config, data.image_size[0])
    results: dict[tuple[str, int], dict] = {}
    seconds: dict[tuple[str, int], float] = {}
    for method in config.methods:
        for seed in config.seeds:
            run_dir = out / "models" / f"{method}-s{seed}"
            train_config = config.train_config(method, seed)
            checkpoint = run_dir / "checkpoint.pt"
            stored = load_checkpoint(checkpoint) if checkpoint.exists() else None
            changed = differing_options(stored["config"], train_config, allow_more_epochs=not stored.get("complete")) \
                if stored is not None else []
            if changed:
                raise StableTrainError(f"{run_dir} was trained with different {', '.join(changed)}; "
                                       f"use another --out")
            if stored is not None and stored.get("complete"):
                model, stored = load_model(checkpoint)
                emit(f"{method} seed {seed}: trained already")
            else:
                emit(f"{method} seed {seed}: training {train_config.epochs} epochs")
                model = train(train_config, run_dir, resume=True, progress=progress, data=data, log=emit).model
                stored = load_checkpoint(checkpoint)
            seconds[(method, seed)] = float(stored["train_seconds"])
            cache = run_dir / "evaluation.json"
            cached = json.loads(cache.read_text()) if cache.exists() else None
            if cached is not None and cached.get("key") == key:
                results[(method, seed)] = cached["result"]
                continue
            emit(f"{method} seed {seed}: evaluating")
            result = _evaluate_one(model, method, data, config, seed)
            write_json(cache, {"key": key, "result": result})
            results[(method, seed)] = result
    columns, table = _summarize(config, results, seconds)
    plots = _plots(config, results, out)
    title = f"stabletrain compare on {config.data}"
    markdown = _markdown(title, config, columns, table, plots, out)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(title, config, columns, table, plots))
    write_json(out / "results.json", {"config": dataclasses.asdict(config), "columns": columns,
                                      "table": [{"method": r["method"], **{c: {"mean": v[0], "std": v[1]}
                                                                           for c, v in r.items() if c != "method"}}
                                                for r in table],
                                      "train_seconds": {f"{m}-s{s}": v for (m, s), v in seconds.items()}})
    flat = []
    for (method, seed), res in results.items():
        for row in res["rows"]:
            flat.append({"method": method, "seed": seed, "kind": "distortion", **{k: row[k] for k in (
                "distortion", "family", "param", "accuracy", "mean_kl", "flip_rate")}})
        for point in res["robust"]:  # every column means one thing: attack rows have their own
            flat.append({"method": method, "seed": seed, "kind": "attack", "attack": point["attack"],
                         "epsilon": point["epsilon"], "robust_accuracy": point["robust_accuracy"],
                         "attack_success_rate": point["success_rate"], "attacked_examples": point["n"]})
        if "smoothing" in res:
            for r, a in zip(res["smoothing"]["radii"], res["smoothing"]["certified_accuracy"]):
                flat.append({"method": method, "seed": seed, "kind": "certified", "radius": r,
                             "certified_accuracy": a})
    columns_csv = ["method", "seed", "kind", "distortion", "family", "param", "accuracy", "mean_kl", "flip_rate",
                   "attack", "epsilon", "robust_accuracy", "attack_success_rate", "attacked_examples", "radius",
                   "certified_accuracy"]
    write_csv(out / "results.csv", flat, columns=columns_csv)
    return {"columns": columns, "table": table, "markdown": markdown, "report": out / "report.md",
            "html": out / "report.html"}
