"""Tables, plots and Markdown reports from evaluation rows.

The rows are those of :func:`stabletrain.evaluation.evaluate_distortions`:
one dict per (model, distortion) with ``accuracy``, ``mean_kl`` and
``flip_rate``. Attack rows (:func:`stabletrain.evaluation.attack_row`) have
their own columns, ``robust_accuracy``, ``attack_success_rate``,
``epsilon``, ``attack`` and ``steps``, and leave the three distortion
columns empty; the tables and plots here keep the two kinds apart.
Everything here is a pure function of those rows, so a report can be
rebuilt from ``results.csv`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from .files import atomic_write_bytes, atomic_write_text

__all__ = ["accuracy_table", "text_table", "plot_severity_curves", "markdown_report", "family_order", "split_rows"]


#: Metrics where a larger value is better (bold is the largest).
_HIGHER_IS_BETTER = ("accuracy", "robust_accuracy", "robust_accuracy_at_epsilon", "clean_accuracy",
                     "certified_accuracy")


def _is_attack(row: Mapping) -> bool:
    return row.get("robust_accuracy") not in (None, "")


def _is_certified(row: Mapping) -> bool:
    return row.get("certified_accuracy") not in (None, "")


def split_rows(rows: Sequence[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    """``(distortion rows, attack rows)``: the clean rows go with the distortions; certified-accuracy rows of
    the smoothing suite go with neither (see :func:`certified_rows`)."""
    return ([r for r in rows if not _is_attack(r) and not _is_certified(r)],
            [r for r in rows if _is_attack(r)])


def certified_rows(rows: Sequence[Mapping]) -> list[Mapping]:
    """The smoothing suite's rows (certified accuracy per radius)."""
    return [r for r in rows if _is_certified(r)]


def _models(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def _specs(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["distortion"] for r in rows))


def _lookup(rows: Sequence[Mapping]) -> dict[tuple[str, str], Mapping]:
    return {(r["model"], r["distortion"]): r for r in rows}


def family_order(rows: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Distinct distortions of each family, from weakest to strongest (by ``stronger_when_larger``)."""
    from .distortions import parse_distortion

    families: dict[str, list[Mapping]] = {}
    seen = set()
    for row in rows:
        if row["distortion"] == "clean" or row["distortion"] in seen:
            continue
        seen.add(row["distortion"])
        families.setdefault(row["family"], []).append(row)
    for items in families.values():
        try:
            larger_is_stronger = parse_distortion(items[0]["distortion"]).stronger_when_larger
        except ValueError:
            larger_is_stronger = True
        items.sort(key=lambda r: float(r["param"]) * (1 if larger_is_stronger else -1))
    return families


def accuracy_table(rows: Sequence[Mapping], metric: str = "accuracy", percent: bool = True,
                   bold_best: bool = True, intervals: bool = False) -> str:
    """A Markdown table: one line per distortion, one column per model.

    With ``bold_best`` the best value of each line is bold (highest accuracy,
    lowest KL or flip rate); with ``intervals``, rows that carry
    ``<metric>_low``/``<metric>_high`` show their 95 % interval.
    """
    models, lookup = _models(rows), _lookup(rows)
    higher_is_better = metric in _HIGHER_IS_BETTER
    lines = ["| distortion | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for spec in _specs(rows):
        values = [lookup.get((m, spec), {}).get(metric) for m in models]
        present = [v for v in values if v is not None]
        best = (max(present) if higher_is_better else min(present)) if present else None
        cells = []
        for m, v in zip(models, values):
            if v is None:
                cells.append("–")
                continue
            text = f"{100 * v:.1f}" if percent else f"{v:.4f}"
            text = f"**{text}**" if bold_best and len(present) > 1 and v == best else text
            row = lookup.get((m, spec), {})
            if intervals and row.get(f"{metric}_low") is not None:  # the 95 % interval beside the value
                text += f" [{100 * row[f'{metric}_low']:.1f}, {100 * row[f'{metric}_high']:.1f}]"
            cells.append(text)
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(paired: Sequence[Mapping]) -> str:
    """A Markdown table of :func:`~stabletrain.evaluation.paired_comparisons`: per distortion, each model's
    accuracy minus the reference's, in points, with the 95 % interval and the McNemar p-value."""
    from .stats import format_interval, verdict

    models = list(dict.fromkeys(p["model"] for p in paired))
    specs = list(dict.fromkeys(p["distortion"] for p in paired))
    lookup = {(p["model"], p["distortion"]): p for p in paired}
    lines = ["| distortion | " + " | ".join(f"{m} − {paired[0]['reference']}" for m in models) + " |",
             "|---|" + "---:|" * len(models)]
    for spec in specs:
        cells = []
        for m in models:
            p = lookup.get((m, spec))
            if p is None:
                cells.append("–")
                continue
            mark = {"held": " ↑", "did not hold": " ↓", "within noise": ""}[
                verdict(p["difference_low"], p["difference_high"])]
            cells.append(f"{format_interval(p['difference'], p['difference_low'], p['difference_high'], signed=True)}"
                         f"{mark} (p {p['p_value']:.2g})")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping], metric: str = "accuracy") -> str:
    """A fixed-width plain-text table for the terminal (accuracy in percent)."""
    models, lookup = _models(rows), _lookup(rows)
    width = max(12, *(len(m) + 2 for m in models))
    spec_width = max(12, *(len(s) + 2 for s in _specs(rows)))
    header = "distortion".ljust(spec_width) + "".join(m.rjust(width) for m in models)
    lines = [header, "-" * len(header)]
    for spec in _specs(rows):
        cells = []
        for m in models:
            v = lookup.get((m, spec), {}).get(metric)
            cells.append(("–" if v is None else f"{100 * v:.1f}" if metric != "mean_kl" else f"{v:.4f}").rjust(width))
        lines.append(spec.ljust(spec_width) + "".join(cells))
    return "\n".join(lines)


def plot_severity_curves(rows: Sequence[Mapping], out_dir: str | os.PathLike, metric: str = "accuracy",
                         title_prefix: str = "", families: Sequence[str] | None = None) -> list[Path]:
    """One PNG per distortion family: ``metric`` against the distortion parameter, a line per model.

    The x-axis starts at the clean input and runs from the weakest to the
    strongest setting. Returns the paths
    written (``<metric>_<family>.png``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import io

    import matplotlib.pyplot as plt

    out = Path(out_dir)
    models, lookup = _models(rows), _lookup(rows)
    written = []
    label = {"accuracy": "accuracy (%)", "flip_rate": "predictions flipped (%)", "mean_kl": "mean KL(clean ‖ distorted)"}
    scale = 1.0 if metric == "mean_kl" else 100.0
    for family, specs in family_order(rows).items():
        if families is not None and family not in families:
            continue
        fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
        names = ["clean"] + [s["distortion"] for s in specs]
        positions = list(range(len(names)))
        for index, model in enumerate(models):
            values = [lookup.get((model, name), {}).get(metric) for name in names]
            ax.plot(positions, [scale * v if v is not None else float("nan") for v in values], marker="o",
                    color=f"C{index}", label=model)
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_xlabel(f"{family}: weaker → stronger")
        ax.set_ylabel(label.get(metric, metric))
        ax.set_title(f"{title_prefix}{family}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        written.append(atomic_write_bytes(out / f"{metric}_{family}.png", buffer.getvalue()))
    return written


def markdown_report(title: str, rows: Sequence[Mapping], *, settings: Mapping | None = None,
                    summary_lines: Sequence[str] = (), extra_tables: Mapping[str, str] | None = None,
                    plots: Sequence[Path] = (), relative_to: str | os.PathLike | None = None,
                    paired: Sequence[Mapping] = ()) -> str:
    """Assemble a Markdown report: settings, summary, accuracy/KL/flip tables, attack tables and plots.

    Attack rows are left out of the distortion tables and get their own:
    robust accuracy and attack success rate per epsilon.
    """
    certified = certified_rows(rows)
    rows, attacks = split_rows(rows)
    parts = [f"# {title}", ""]
    if settings:
        parts += ["## Settings", "", "| option | value |", "|---|---|"]
        parts += [f"| {k} | {v} |" for k, v in settings.items()]
        parts.append("")
    if summary_lines:
        parts += ["## Summary", ""] + [f"- {line}" for line in summary_lines] + [""]
    for heading, table in (extra_tables or {}).items():
        parts += [f"## {heading}", "", table, ""]
    counts = sorted({int(r["n"]) for r in rows if r.get("n") not in (None, "")})
    on = f" Each accuracy is over {' / '.join(map(str, counts))} test images." if counts else ""
    parts += ["## Accuracy (%) under each distortion", "",
              f"Best per line in bold; 95 % Wilson interval in brackets.{on} Bold marks the highest estimate, "
              f"not a significant difference: see the paired differences for that.", "",
              accuracy_table(rows, "accuracy", intervals=True), ""]
    if paired:
        sizes = " / ".join(map(str, sorted({int(p["n"]) for p in paired})))
        parts += [f"## Paired differences against {paired[0]['reference']} (accuracy points)", "",
                  f"On the same {sizes} test images: the difference with Newcombe's 95 % interval for paired "
                  f"proportions and the exact McNemar p-value; ↑ / ↓ where the interval excludes 0.", "",
                  paired_table(paired), ""]
    parts += ["## Mean KL(P(y|x) ‖ P(y|x̃)) between clean and distorted predictions", "",
              "Lower is more stable.", "", accuracy_table(rows, "mean_kl", percent=False), ""]
    parts += ["## Predictions flipped by the distortion (%)", "", accuracy_table(rows, "flip_rate"), ""]
    if attacks:
        n = sorted({int(r["n"]) for r in attacks if r.get("n") not in (None, "")})
        parts += ["## Robust accuracy (%) under attack", "",
                  f"Clean-correct and not fooled at this epsilon or any smaller one of the curve; "
                  f"{' / '.join(map(str, n))} attacked images. Best per line in bold; 95 % Wilson interval in "
                  f"brackets.", "",
                  accuracy_table(attacks, "robust_accuracy", intervals=True), ""]
        parts += ["## Attack success rate (%): clean-correct images the attack fooled", "",
                  "95 % Wilson interval in brackets, over the clean-correct attacked images.", "",
                  accuracy_table(attacks, "attack_success_rate", intervals=True), ""]
    if certified:
        first = certified[0]
        parts += ["## Certified accuracy (%) of the Gaussian-smoothed classifier, by L2 radius", "",
                  f"σ = {first['sigma']:g}, {first.get('noise_samples')} noise samples per image at confidence "
                  f"1 − {first.get('alpha'):g} (Cohen et al., 2019), on {first['n']} images; abstentions count as "
                  f"wrong.", "", accuracy_table(certified, "certified_accuracy"), ""]
    if plots:
        base = Path(relative_to) if relative_to else None
        parts += ["## Plots", ""]
        for plot in plots:
            shown = os.path.relpath(plot, base) if base else str(plot)
            parts += [f"![{Path(plot).stem}]({shown})", ""]
    return "\n".join(parts)


def write_markdown(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_text(path, text)


def write_evaluation(out_dir: str | os.PathLike, rows: Sequence[Mapping], *, title: str,
                     settings: Mapping | None = None, summary_lines: Sequence[str] = (),
                     extra_tables: Mapping[str, str] | None = None, extra_json: Mapping | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``plots/*.png`` and ``report.md`` into ``out_dir``.

    Every file is written atomically; the JSON nests the rows by model (see
    :func:`stabletrain.evaluation.results_by_model`) next to ``settings``.
    """
    from .evaluation import results_by_model
    from .files import write_csv, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["model", "distortion", "family", "param", "accuracy", "mean_kl", "flip_rate", "n"]
    for row in rows:  # every row's columns: attack rows add their own (robust_accuracy, attack_success_rate, …)
        columns += [k for k in row if k not in columns]
    csv_path = write_csv(out / "results.csv", rows, columns)
    json_path = write_json(out / "results.json", {"title": title, "settings": dict(settings or {}),
                                                  "summary": list(summary_lines), **(extra_json or {}),
                                                  "models": results_by_model(rows)})
    distorted, attacked = split_rows(rows)
    attack_families = sorted({r["family"] for r in attacked})
    grid_families = [f for f in family_order(distorted) if f not in _INDIVIDUAL_FAMILIES]
    single = [f for f in family_order(distorted) if f in _INDIVIDUAL_FAMILIES]
    plots = plot_severity_curves(distorted, out / "plots", "accuracy", families=single)
    plots += plot_severity_curves(distorted, out / "plots", "flip_rate", families=single)
    if grid_families:
        plots.append(plot_family_grid(distorted, grid_families, out / "plots" / "accuracy_corruptions.png"))
    if attack_families:
        plots.append(plot_robustness(rows, attack_families, out / "plots" / "robust_accuracy.png"))
    report = markdown_report(title, rows, settings=settings, summary_lines=summary_lines,
                             extra_tables=extra_tables, plots=[p for p in plots if not p.stem.startswith("flip")],
                             relative_to=out, paired=(extra_json or {}).get("paired") or ())
    report_path = write_markdown(out / "report.md", report)
    return {"json": json_path, "csv": csv_path, "report": report_path, "plots_dir": out / "plots"}


def _save_figure(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(curves: Mapping[str, Mapping[str, Mapping[str, list]]], path: str | os.PathLike) -> Path:
    """Precision–recall curves of near-duplicate detection: a panel per family, a line per model."""
    plt = _pyplot()
    models = list(curves)
    families = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(families), figsize=(3.4 * len(families), 3.4), dpi=110, squeeze=False)
    for ax, family in zip(axes[0], families):
        for index, model in enumerate(models):
            curve = curves[model][family]
            ax.plot(curve["recall"], curve["precision"], color=f"C{index}", label=model)
        ax.set_title(family)
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("precision")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Near-duplicate detection by feature distance")
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def plot_distance_distributions(distances: Mapping[str, Mapping], out_dir: str | os.PathLike) -> list[Path]:
    """The paper's distance figure: histograms and cumulative distributions of feature distance
    for near-duplicate pairs (all families), non-duplicate pairs, and neighbouring tiles."""
    import numpy as np

    plt = _pyplot()
    out = Path(out_dir)
    models = list(distances)
    written = []
    for kind in ("histogram", "cumulative"):
        fig, axes = plt.subplots(1, len(models), figsize=(4.0 * len(models), 3.4), dpi=110, squeeze=False,
                                 sharey=kind == "cumulative")
        for ax, model in zip(axes[0], models):
            entry = distances[model]
            groups = {"near-duplicate": np.concatenate([np.asarray(v) for v in entry["near_duplicate"].values()]),
                      "non-duplicate": np.asarray(entry["non_duplicate"]),
                      "neighbouring tile": np.asarray(entry["neighbour"])}
            top = max(float(np.quantile(np.concatenate(list(groups.values())), 0.995)), 1e-6)
            for index, (label, values) in enumerate(groups.items()):
                if len(values) == 0:
                    continue
                if kind == "histogram":
                    ax.hist(values, bins=60, range=(0, top), density=True, alpha=0.5, color=f"C{index}", label=label)
                else:
                    ordered = np.sort(values)
                    ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), color=f"C{index}", label=label)
            ax.set_title(model)
            ax.set_xlabel("feature distance")
            ax.set_xlim(0, top)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("density" if kind == "histogram" else "fraction of pairs ≤ distance")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        written.append(_save_figure(fig, out / f"distances_{kind}.png"))
    return written


def _similarity_tables(result: Mapping) -> dict[str, str]:
    models = list(result["models"])
    family_rows = [r for r in result["rows"] if r["level"] == "family"]
    families = list(dict.fromkeys(r["family"] for r in family_rows))
    lookup = {(r["model"], r["family"]): r for r in family_rows}

    def table(metric: str, percent: bool = True, higher: bool = True) -> str:
        lines = ["| family | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
        for fam in families:
            values = [lookup[(m, fam)][metric] for m in models]
            best = max(values) if higher else min(values)
            cells = [(f"{100 * v:.1f}" if percent else f"{v:.3f}") for v in values]
            cells = [f"**{c}**" if len(models) > 1 and v == best else c for c, v in zip(cells, values)]
            lines.append(f"| {fam} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    summary = ["| | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    labels = [("median near-duplicate distance", "median_duplicate_distance", ".3f"),
              ("median non-duplicate distance", "median_non_duplicate_distance", ".3f"),
              ("median distance of neighbouring tiles", "median_neighbour_distance", ".3f"),
              ("ratio near-dup / non-dup medians (lower is better)", "distance_ratio", ".3f"),
              ("average precision, all families pooled", "average_precision_all", ".3f"),
              ("triplet ranking score, clean", "clean_triplet_accuracy", ".3f")]
    for label, key, fmt in labels:
        cells = [format(result["models"][m][key], fmt) if result["models"][m][key] is not None else "–" for m in models]
        summary.append(f"| {label} | " + " | ".join(cells) + " |")
    threshold = ["| model | threshold | F1 | " + " | ".join(f"{f} P / R" for f in families) + " |",
                 "|---|---:|---:|" + "---:|" * len(families)]
    for m in models:
        best = result["models"][m]["best_threshold"]
        cells = [f"{100 * best['per_family'][f]['precision']:.0f} / {100 * best['per_family'][f]['recall']:.0f}"
                 for f in families]
        threshold.append(f"| {m} | {best['distance']:.3f} | {best['f1']:.3f} | " + " | ".join(cells) + " |")
    return {
        "Distances and ranking": "\n".join(summary),
        "Average precision (%) of near-duplicate detection per family": table("average_precision"),
        "Precision (%) at recall 0.9": table("precision_at_recall_0.9"),
        "Precision (%) at recall 0.95": table("precision_at_recall_0.95"),
        "Retrieval precision@1 (%): is the original the nearest distinct tile to its copy?": table("precision_at_1"),
        "Retrieval mAP (%)": table("map"),
        "Triplet ranking score (%) on distorted triplets": table("triplet_accuracy"),
        "One threshold for all families (best F1 over all pairs): precision / recall (%) per family":
            "\n".join(threshold),
    }


def write_similarity_report(out_dir: str | os.PathLike, result: Mapping, *, title: str,
                            settings: Mapping | None = None, summary_lines: Sequence[str] = (),
                            extra_tables: Mapping[str, str] | None = None,
                            extra_json: Mapping | None = None) -> dict[str, Path]:
    """Write the similarity evaluation: ``results.json``, ``results.csv``, ``plots/`` and ``report.md``."""
    from .files import write_csv, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(out / "results.csv", result["rows"])
    json_path = write_json(out / "results.json", {
        "title": title, "settings": dict(settings or {}), "summary": list(summary_lines), **(extra_json or {}),
        "benchmark": result["benchmark"], "models": result["models"], "rows": result["rows"],
        "pr_curves": result["curves"]})
    plots = [plot_pr_curves(result["curves"], out / "plots" / "pr_curves.png")]
    plots += plot_distance_distributions(result["distances"], out / "plots")
    parts = [f"# {title}", ""]
    if settings:
        parts += ["## Settings", "", "| option | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in settings.items()]
        parts.append("")
    bench = result["benchmark"]
    parts += ["## Benchmark", "",
              f"{bench['distinct_images']} distinct tiles from {bench['sources']} sources; "
              f"{bench['near_duplicate_pairs']} near-duplicate pairs ({', '.join(bench['distortions'])}); "
              f"{bench['non_duplicate_pairs']} non-duplicate pairs, of which {bench['non_duplicate_neighbour']} are "
              f"neighbouring tiles of the same photo; {bench['triplets']} ranking triplets.", ""]
    if summary_lines:
        parts += ["## Summary", ""] + [f"- {line}" for line in summary_lines] + [""]
    for heading, table in {**(extra_tables or {}), **_similarity_tables(result)}.items():
        parts += [f"## {heading}", "", table, ""]
    parts += ["## Plots", ""] + [f"![{p.stem}]({os.path.relpath(p, out)})\n" for p in plots]
    report_path = write_markdown(out / "report.md", "\n".join(parts))
    return {"json": json_path, "csv": csv_path, "report": report_path, "plots_dir": out / "plots"}


#: Families drawn one figure each; all others (the corruptions) share one grid.
_INDIVIDUAL_FAMILIES = ("jpeg", "thumb", "crop", "gaussian")


def plot_family_grid(rows: Sequence[Mapping], families: Sequence[str], path: str | os.PathLike) -> Path:
    """Accuracy against severity for many families (the common corruptions), one small panel each."""
    plt = _pyplot()
    models, lookup = _models(rows), _lookup(rows)
    ordered = family_order(rows)
    cols = min(5, len(families))
    nrows = -(-len(families) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.2 * nrows), dpi=110, squeeze=False,
                             sharey=True)
    for ax, family in zip(axes.flat, families):
        names = ["clean"] + [r["distortion"] for r in ordered[family]]
        for index, model in enumerate(models):
            values = [lookup.get((model, n), {}).get("accuracy") for n in names]
            ax.plot(range(len(names)), [100 * v if v is not None else float("nan") for v in values],
                    marker=".", color=f"C{index}", label=model)
        ax.set_title(family, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(["0"] + [f"{r['param']:g}" for r in ordered[family]], fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Accuracy against corruption severity (0 = clean)", fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def plot_robustness(rows: Sequence[Mapping], attacks: Sequence[str], path: str | os.PathLike, *,
                    xlabel: str = "epsilon (pixel units)") -> Path:
    """Robust accuracy (the rows' ``robust_accuracy``) against epsilon, a line per (model, attack)."""
    plt = _pyplot()
    models = _models(rows)
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    for index, model in enumerate(models):
        for style, attack in zip(("-", "--", ":", "-."), attacks):
            points = sorted((float(r["epsilon"]), float(r["robust_accuracy"])) for r in rows
                            if r["model"] == model and _is_attack(r) and r.get("attack", r.get("family")) == attack)
            if points:
                ax.plot([p[0] for p in points], [100 * p[1] for p in points], style, marker="o", color=f"C{index}",
                        label=f"{model} ({attack})" if len(attacks) > 1 else model)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, Path(path))
