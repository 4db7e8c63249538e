"""``stabletrain compare``: every method, the same budget, the same evaluation, one report.

A comparison is described by a YAML file (examples in ``configs/``)::

    data: digits
    methods: [plain, gaussian, stability, jsd, trades, adversarial, consistency]
    seeds: [0, 1, 2]
    train: {epochs: 10, width: 32, sigma: 0.1, alpha: 1.0}   # shared TrainConfig options
    method_options: {consistency: {sigma: 0.25}}           # per-method overrides
    norms: [batch, group]                                  # optional: normalization as an axis
    norm_options: {group: {epochs: 30}}                    # optional: each normalization's own budget
    evaluation:
      distortions: paper                                   # or a list of specs
      attack: pgd                                          # or pgd-l2, fgsm, l0, apgd-ce, apgd-dlr, apgd-t,
      epsilons: [0, 0.0078, 0.0157, 0.0314]                #   square, autoattack
      attack_steps: 10                                     # APGD and autoattack default to 100
      # attack_queries: 5000                               # square and autoattack only
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
import logging
import statistics
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .locking import output_lock
from .checks import StableTrainError, check_fields
from .distortions import paper_sweep, parse_distortions
from .evaluation import distortion_results
from .files import atomic_write_text, read_yaml, write_csv, write_json, write_yaml
from .objectives import available_methods
from .reports import _pyplot, _save_figure, family_order
from .training import TrainConfig, differing_options, load_checkpoint, load_model, train
from .stats import mean_interval
from .training.config import is_known_option
from .training.convergence import convergence, convergence_warning

__all__ = ["CompareConfig", "run_compare", "load_compare_config"]

logger = logging.getLogger("stabletrain.compare")

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
    norms: list[str] | None = None
    norm_options: dict = dataclasses.field(default_factory=dict)

    def arms(self) -> list[tuple[str, str, str | None]]:
        """``(label, method, norm)`` of every compared arm: each method, under each of ``norms`` if given."""
        if not self.norms:
            return [(m, m, None) for m in self.methods]
        return [(f"{m} ({n})", m, n) for n in self.norms for m in self.methods]

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
        unknown_eval = set(evaluation) - set(_EVAL_DEFAULTS) - {"attack_queries"}
        if unknown_eval:
            raise StableTrainError(f"unknown evaluation option(s): {', '.join(sorted(unknown_eval))}")
        _resolve_attack(evaluation, self.evaluation)
        if evaluation["distortions"] != "paper":
            parse_distortions(evaluation["distortions"])
        if self.norms is not None:
            if not isinstance(self.norms, list) or not self.norms or len(set(self.norms)) != len(self.norms) or \
                    not all(isinstance(n, str) and n for n in self.norms):
                raise StableTrainError(f"norms must be a list of distinct normalization names, got {self.norms!r}")
            if "norm" in self.train or any("norm" in o for o in self.method_options.values()):
                raise StableTrainError("give the normalization either as the norms axis or as a train option, "
                                       "not both")
        # a config may hold budgets for more normalizations than one run compares (--norms picks them)
        if self.norm_options and not self.norms:
            raise StableTrainError("norm_options needs the norms axis (norms: [...] or --norms)")
        if not all(isinstance(k, str) and isinstance(v, dict) for k, v in self.norm_options.items()):
            raise StableTrainError(f"norm_options must map normalization names to train options, got "
                                   f"{self.norm_options!r}")
        config = dataclasses.replace(self, evaluation=evaluation)
        taken: set[str] = set()
        for _, method, norm in config.arms():
            for seed in config.seeds:  # validates every option before any training starts
                train_config, used = config._train_config(method, seed, norm)
                taken |= used
                if norm is not None and train_config.model_args.get("norm") != norm:
                    raise StableTrainError(f"--norms needs a model with a 'norm' option; {train_config.model!r} "
                                           f"has none")
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

    def _train_config(self, method: str, seed: int, norm: str | None = None) -> tuple[TrainConfig, set[str]]:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {**{k: v for k, v in self.train.items() if k in fields}, "data": self.data, "method": method,
                  "seed": seed}
        # per-method options must each take effect for that method
        values.update(self.method_options.get(method, {}))
        if norm is not None:
            # each normalization's own budget (tuned until plain converges under it), then the norm itself
            values.update({k: v for k, v in self.norm_options.get(norm, {}).items() if k in fields})
            values["model_args"] = {**(values.get("model_args") or {}), "norm": norm}
        shared = {k: v for k, v in self._shared().items() if k not in self.method_options.get(method, {})}
        return TrainConfig.with_shared(values, shared)

    def train_config(self, method: str, seed: int, norm: str | None = None) -> TrainConfig:
        """The training config of one (method, seed[, norm]): shared options where the method takes them, then
        its own."""
        return self._train_config(method, seed, norm)[0]


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


def _resolve_attack(evaluation: dict, given: dict) -> None:
    """Check the evaluation's attack and fill in its budget (in place).

    ``attack_steps`` keeps its default of 10 for PGD (and is ignored by
    fgsm, as it always was); an APGD attack or autoattack that is not given
    ``attack_steps`` gets its own default (100 iterations). ``attack_queries``
    belongs to square and autoattack (default 5000) and is an error elsewhere;
    the key only appears for them, so the stored evaluations of other attacks
    keep their cache keys.
    """
    from .attacks import ATTACKS, attack_defaults

    attack = evaluation["attack"]
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise StableTrainError(f"unknown attack {attack!r} in evaluation; known attacks: {', '.join(ATTACKS)}")
    known = attack_defaults(attack)
    for key in ("attack_steps", "attack_queries"):
        value = evaluation.get(key)
        if key in evaluation and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise StableTrainError(f"evaluation option {key} must be an integer >= 1, got {value!r}")
    if "steps" in known and "attack_steps" not in given and attack not in ("pgd", "pgd-linf", "pgd-l2", "l0"):
        evaluation["attack_steps"] = int(known["steps"])
    if "steps" not in known and attack != "fgsm" and "attack_steps" in given:
        raise StableTrainError(f"evaluation option attack_steps has no effect with attack {attack} (it has a query "
                               f"budget: attack_queries)")
    if "queries" in known:
        evaluation.setdefault("attack_queries", int(known["queries"]))
    elif "attack_queries" in evaluation:
        raise StableTrainError(f"evaluation option attack_queries has no effect with attack {attack} (only square "
                               f"and autoattack query)")


def _attack_options(ev: dict) -> dict:
    """The keyword options of the evaluation's attack: its steps and query budget where it has them."""
    from .attacks import attack_defaults

    known = attack_defaults(ev["attack"])
    options = {}
    if "steps" in known:
        options["steps"] = int(ev["attack_steps"])
    if "queries" in known:
        options["queries"] = int(ev["attack_queries"])
    return options


def _evaluation_key(config: CompareConfig, image_size: int) -> str:
    # version 2: per-example random streams and robust = clean-correct and never fooled at a smaller epsilon
    # version 3: per-example correctness kept (paired intervals) and collapse warnings
    text = json.dumps({"evaluation": config.evaluation, "image_size": image_size, "version": 3}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _evaluate_one(model: torch.nn.Module, name: str, data, config: CompareConfig, seed: int,
                  log: Callable[[str], None] | None = None) -> dict:
    """Distortion rows, the robustness curve and the certification of one trained model.

    Every random draw is per example (distortions from ``(seed,
    'distortion', spec, index)``, attack starts from ``(seed, 'attack',
    method, index)``, smoothing noise from ``(seed, 'smoothing', method,
    index)``), so the numbers do not depend on batch sizes. Robust accuracy
    is that of :func:`~stabletrain.attacks.robustness_curve`: clean-correct
    and not fooled at this or any smaller epsilon. ``log`` receives the
    attack's progress lines (per epsilon, and per AutoAttack component).
    """
    from .attacks import robustness_curve
    from .seeding import ExampleRNG
    from .smoothing import certify_dataset

    ev = config.evaluation
    specs = ev["distortions"]
    sweep = parse_distortions(paper_sweep(data.image_size[0]) if specs == "paper" else specs)
    evaluated = distortion_results({name: model}, data.test, sweep, seed=seed, progress=False)
    rows = evaluated.rows
    count = min(int(ev["attack_examples"]), len(data.test))
    curve = robustness_curve(model, data.test.x[:count], data.test.y[:count], [float(e) for e in ev["epsilons"]],
                             attack=ev["attack"], generator=ExampleRNG.for_examples(range(count), seed, "attack", name),
                             progress=None if log is None else (lambda line: log(f"  {name} seed {seed}: {line}")),
                             **_attack_options(ev))
    # each example's correctness, bit-packed in example order: the paired intervals between methods need it
    packed = {spec: base64.b64encode(np.packbits(flags).tobytes()).decode()
              for spec, flags in evaluated.correct[name].items()}
    result = {"rows": rows, "robust": curve, "correct": packed, "warnings": evaluated.warnings}
    smoothing = ev["smoothing"]
    if smoothing:
        certified = min(int(smoothing["examples"]), len(data.test))
        cert = certify_dataset(model, data.test.x, data.test.y, float(smoothing["sigma"]), n0=int(smoothing["n0"]),
                               n=int(smoothing["n"]), alpha=float(smoothing["alpha"]),
                               max_examples=certified, radii=smoothing["radii"],
                               generator=ExampleRNG.for_examples(range(certified), seed, "smoothing", name))
        result["smoothing"] = {k: v for k, v in cert.items() if k not in ("prediction", "radius")}
    return result


def _unpack(result: dict, spec: str) -> np.ndarray:
    """The per-example correctness of one evaluated model under ``spec`` (see :func:`_evaluate_one`)."""
    n = next(r["n"] for r in result["rows"] if r["distortion"] == spec)
    bits = np.frombuffer(base64.b64decode(result["correct"][spec]), dtype=np.uint8)
    return np.unpackbits(bits)[:n].astype(bool)


def _summarize(config: CompareConfig, results: dict[tuple[str, int], dict], seconds: dict[tuple[str, int], float],
               facts: dict[tuple[str, int], dict] | None = None) -> tuple[list[str], list[dict]]:
    """Columns and one row per arm with the seed summary (mean, std, t interval) of every headline number."""
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
    columns += ["final train accuracy", "test accuracy change, last epochs", "training time relative to plain"]
    arms = config.arms()
    plain_time = {norm: statistics.mean([seconds[(label, s)] for s in config.seeds])
                  for label, method, norm in arms if method == "plain"}
    table = []
    for label, method, norm in arms:
        per_seed: dict[str, list[float]] = {c: [] for c in columns}
        for seed in config.seeds:
            res = results[(label, seed)]
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
            fact = (facts or {}).get((label, seed))
            if fact and fact["final_train_accuracy"] is not None:
                per_seed["final train accuracy"].append(fact["final_train_accuracy"])
                per_seed["test accuracy change, last epochs"].append(fact["test_change_last_epochs"])
            if plain_time.get(norm):
                per_seed["training time relative to plain"].append(seconds[(label, seed)] / plain_time[norm])
        row: dict[str, Any] = {"method": label, **{c: mean_interval(v) for c, v in per_seed.items() if v}}
        clean_rows = [next(r for r in results[(label, s)]["rows"] if r["distortion"] == "clean")
                      for s in config.seeds]
        if len(config.seeds) == 1 and "accuracy_low" in clean_rows[0]:  # one seed: the test images' interval
            row["clean accuracy (Wilson)"] = (clean_rows[0]["accuracy_low"], clean_rows[0]["accuracy_high"])
        row["test images"] = clean_rows[0]["n"]
        table.append(row)
    return columns, table


def _paired_claims(config: CompareConfig, results: dict[tuple[str, int], dict], reference: str = "plain"
                   ) -> list[dict]:
    """Each arm against ``reference`` (of the same normalization) on clean images and on the strongest setting
    of each family: the mean accuracy difference over seeds and test images with a two-level paired bootstrap
    interval (seeds and images resampled), and its verdict."""
    from .stats import paired_bootstrap, verdict

    arms = config.arms()
    reference_of = {norm: label for label, method, norm in arms if method == reference}
    first = next(iter(results.values()))
    specs = ["clean"]
    for fam, items in family_order(first["rows"]).items():
        strongest = items[-1]["distortion"]  # family_order sorts by severity, mildest first
        specs.append(strongest)
    out = []
    for label, method, norm in arms:
        base = reference_of.get(norm)
        if base is None or method == reference:
            continue
        for spec in specs:
            if any("correct" not in results[(x, s)] for x in (label, base) for s in config.seeds):
                continue
            a = np.stack([_unpack(results[(label, s)], spec) for s in config.seeds])
            b = np.stack([_unpack(results[(base, s)], spec) for s in config.seeds])
            difference, low, high = paired_bootstrap(a, b, seed=0)
            threshold = -0.01 if spec == "clean" else 0.0
            claim = (f"{label} clean accuracy within 1 point of {base}" if spec == "clean"
                     else f"{label} more accurate than {base} on {spec}")
            out.append({"claim": claim, "arm": label, "reference": base, "distortion": spec,
                        "difference": difference, "low": low, "high": high, "threshold": threshold,
                        "verdict": verdict(low, high, threshold), "seeds": len(config.seeds),
                        "test_images": int(a.shape[1])})
    # stability training against the augmentation baseline at the same sigma: the baseline's price in clean
    # accuracy (the paper's over-regularization claim), and which is more robust on each family's strongest setting
    for norm in dict.fromkeys(n for _, _, n in arms):
        labels = {method: label for label, method, n in arms if n == norm}
        if "stability" not in labels or "gaussian" not in labels:
            continue
        for spec in specs:
            a = np.stack([_unpack(results[(labels["stability"], s)], spec) for s in config.seeds])
            b = np.stack([_unpack(results[(labels["gaussian"], s)], spec) for s in config.seeds])
            difference, low, high = paired_bootstrap(a, b, seed=0)
            claim = (f"augmentation ({labels['gaussian']}) costs clean accuracy against {labels['stability']}"
                     if spec == "clean" else f"{labels['stability']} more accurate than {labels['gaussian']} on {spec}")
            out.append({"claim": claim, "arm": labels["stability"], "reference": labels["gaussian"],
                        "distortion": spec, "difference": difference, "low": low, "high": high, "threshold": 0.0,
                        "verdict": verdict(low, high, 0.0), "seeds": len(config.seeds),
                        "test_images": int(a.shape[1])})
    return out


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
        for index, (label, _, _) in enumerate(config.arms()):
            per = [[100 * next(r["accuracy"] for r in results[(label, s)]["rows"] if r["distortion"] == n)
                    for s in config.seeds] for n in names]
            band(ax, range(len(names)), per, label, f"C{index}")
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
        for index, (label, _, _) in enumerate(config.arms()):
            per = [[100 * value(results[(label, s)], i) for s in config.seeds] for i in range(len(xs))]
            band(ax, xs, per, label, f"C{index}")
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


def _format(column: str, value: Any) -> str:
    """A seed summary as ``mean ± std [low, high]`` (the t interval of the mean); with one seed, the value and
    "one seed" instead of a spread that does not exist."""
    scale, digits, unit = (1.0, 3, "") if column.startswith("ACR") else (1.0, 2, "×") \
        if column.startswith("training time") else (100.0, 1, "")
    signed = column.startswith("test accuracy change")

    def num(v: float) -> str:
        return f"{v * scale:+.{digits}f}" if signed else f"{v * scale:.{digits}f}"

    if value.std is None:
        return f"{num(value.mean)}{unit} (one seed)"
    low, high = value.low, value.high
    if not column.startswith(("test accuracy change", "training time", "ACR")):  # a mean accuracy lies in [0, 1]
        low, high = max(low, 0.0), min(high, 1.0)
    return f"{num(value.mean)}{unit} ± {value.std * scale:.{digits}f} [{num(low)}, {num(high)}]"


def _best(table: list[dict], column: str) -> float | None:
    values = [row[column].mean for row in table if column in row]
    if not values or column.startswith(("training time", "test accuracy change", "final train")):
        return None
    return max(values)


def _claim_lines(claims: list[dict]) -> list[str]:
    from .stats import format_interval

    return [f"{c['verdict']}: {c['claim']}: difference {format_interval(c['difference'], c['low'], c['high'], signed=True)} "
            f"points (95 %, paired bootstrap over {c['seeds']} seed(s) and {c['test_images']} test images)"
            for c in claims]


def _notes(config: CompareConfig, table: list[dict]) -> list[str]:
    """What every number rests on, said once: seeds, test images, and what the brackets are."""
    n = table[0]["test images"] if table else 0
    if len(config.seeds) > 1:
        spread = (f"Values are mean ± std over {len(config.seeds)} seeds, with the 95 % t interval of the mean in "
                  f"brackets (training noise only: the test images are the same for every seed).")
    else:
        spread = ("One seed: there is no spread over seeds to report, so no ± is given; the clean accuracy's 95 % "
                  "Wilson interval over the test images is in the claims and in results.json.")
    return [f"Every accuracy rests on {n} test images (the first N for the attack and certification columns, "
            f"as named). {spread}", "Accuracies in %; best mean per column in bold (a highest estimate, not a "
            "significant difference: see the claims). 'test accuracy change, last epochs' is the change of test "
            "accuracy over the last 3 epochs: a positive value means training had not converged."]


def _markdown(title: str, config: CompareConfig, columns: list[str], table: list[dict], plots: list[Path],
              out: Path, claims: list[dict] = (), warnings: list[str] = ()) -> str:
    norms = f" Normalizations: {', '.join(config.norms)}." if config.norms else ""
    lines = [f"# {title}", "", f"Data: `{config.data}`. Seeds: {', '.join(map(str, config.seeds))}.{norms} "
             f"Every method trains with the same options: `{json.dumps(config.train, sort_keys=True)}`; overrides: "
             f"`{json.dumps(config.method_options, sort_keys=True)}`.", ""]
    lines += [f"- {note}" for note in _notes(config, table)] + [""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in warnings] + [""]
    if claims:
        lines += ["## Claims, by the interval of the paired difference", ""]
        lines += [f"- {line}" for line in _claim_lines(list(claims))] + [""]
    for chunk in (columns[i:i + 6] for i in range(0, len(columns), 6)):
        lines += ["| method | " + " | ".join(chunk) + " |", "|---|" + "---:|" * len(chunk)]
        for row in table:
            cells = []
            for c in chunk:
                if c not in row:
                    cells.append("–")
                    continue
                text = _format(c, row[c])
                cells.append(f"**{text}**" if row[c].mean == _best(table, c) and len(table) > 1 else text)
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Evaluation", "", f"`{json.dumps(config.evaluation, sort_keys=True)}`", "", "## Plots", ""]
    lines += [f"![{p.stem}]({p.relative_to(out)})\n" for p in plots]
    return "\n".join(lines)


def _html(title: str, config: CompareConfig, columns: list[str], table: list[dict], plots: list[Path],
          claims: list[dict] = (), warnings: list[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method"] + columns)
    body = []
    for row in table:
        cells = [f"<th>{html.escape(row['method'])}</th>"]
        for c in columns:
            if c not in row:
                cells.append("<td>–</td>")
                continue
            text = html.escape(_format(c, row[c]))
            best = row[c].mean == _best(table, c) and len(table) > 1
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
.warning {{ color: #a00; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Data: <code>{html.escape(config.data)}</code>; seeds {html.escape(', '.join(map(str, config.seeds)))};
shared training options <code>{html.escape(json.dumps(config.train, sort_keys=True))}</code>;
per-method overrides <code>{html.escape(json.dumps(config.method_options, sort_keys=True))}</code>.
</p>
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in _notes(config, table))}</ul>
{''.join(f"<p class='warning'><strong>{html.escape(w)}</strong></p>" for w in warnings)}
{'<h2>Claims, by the interval of the paired difference</h2><ul>' + ''.join(f'<li>{html.escape(line)}</li>' for line in _claim_lines(list(claims))) + '</ul>' if claims else ''}
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
    facts: dict[tuple[str, int], dict] = {}
    for label, method, norm in config.arms():
        for seed in config.seeds:
            run_dir = out / "models" / (f"{method}-s{seed}" if norm is None else f"{method}-{norm}-s{seed}")
            train_config = config.train_config(method, seed, norm)
            checkpoint = run_dir / "checkpoint.pt"
            stored = load_checkpoint(checkpoint) if checkpoint.exists() else None
            changed = differing_options(stored["config"], train_config, allow_more_epochs=not stored.get("complete")) \
                if stored is not None else []
            if changed:
                raise StableTrainError(f"{run_dir} was trained with different {', '.join(changed)}; "
                                       f"use another --out")
            if stored is not None and stored.get("complete"):
                model, stored = load_model(checkpoint)
                emit(f"{label} seed {seed}: trained already")
            else:
                emit(f"{label} seed {seed}: training {train_config.epochs} epochs")
                model = train(train_config, run_dir, resume=True, progress=progress, data=data, log=emit).model
                stored = load_checkpoint(checkpoint)
            seconds[(label, seed)] = float(stored["train_seconds"])
            facts[(label, seed)] = convergence(stored.get("history") or [])
            cache = run_dir / "evaluation.json"
            cached = json.loads(cache.read_text()) if cache.exists() else None
            if cached is not None and cached.get("key") == key:
                results[(label, seed)] = cached["result"]
            else:
                emit(f"{label} seed {seed}: evaluating")
                result = _evaluate_one(model, method, data, config, seed, log=emit if progress else None)
                write_json(cache, {"key": key, "result": result})
                results[(label, seed)] = result
            for line in results[(label, seed)].get("warnings", []):
                logger.warning("%s (seed %d)", line, seed)
    warnings = [f"{line} (seed {seed})" for (label, seed), res in results.items() for line in res.get("warnings", [])]
    for (label, seed), fact in facts.items():
        line = convergence_warning(f"{label} seed {seed}", fact)
        if line is not None:
            warnings.append(line)
            logger.warning("%s", line)
    columns, table = _summarize(config, results, seconds, facts)
    claims = _paired_claims(config, results)
    plots = _plots(config, results, out)
    title = f"stabletrain compare on {config.data}"
    markdown = _markdown(title, config, columns, table, plots, out, claims, warnings)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(title, config, columns, table, plots, claims, warnings))

    def cell(value: Any) -> Any:
        return value.to_dict() if hasattr(value, "to_dict") else value

    write_json(out / "results.json", {"config": dataclasses.asdict(config), "columns": columns,
                                      "notes": _notes(config, table), "warnings": warnings, "claims": claims,
                                      "table": [{"method": r["method"], **{c: cell(v) for c, v in r.items()
                                                                           if c != "method"}} for r in table],
                                      "training": {f"{m}-s{s}": f for (m, s), f in facts.items()},
                                      "train_seconds": {f"{m}-s{s}": v for (m, s), v in seconds.items()}})
    flat = []
    for (method, seed), res in results.items():
        for row in res["rows"]:
            flat.append({"method": method, "seed": seed, "kind": "distortion", **{k: row.get(k) for k in (
                "distortion", "family", "param", "accuracy", "accuracy_low", "accuracy_high", "n", "mean_kl",
                "flip_rate")}})
        for point in res["robust"]:  # every column means one thing: attack rows have their own
            flat.append({"method": method, "seed": seed, "kind": "attack", "attack": point["attack"],
                         "epsilon": point["epsilon"], "robust_accuracy": point["robust_accuracy"],
                         "attack_success_rate": point["success_rate"], "attacked_examples": point["n"]})
        if "smoothing" in res:
            for r, a in zip(res["smoothing"]["radii"], res["smoothing"]["certified_accuracy"]):
                flat.append({"method": method, "seed": seed, "kind": "certified", "radius": r,
                             "certified_accuracy": a})
    columns_csv = ["method", "seed", "kind", "distortion", "family", "param", "accuracy", "accuracy_low",
                   "accuracy_high", "n", "mean_kl", "flip_rate",
                   "attack", "epsilon", "robust_accuracy", "attack_success_rate", "attacked_examples", "radius",
                   "certified_accuracy"]
    write_csv(out / "results.csv", flat, columns=columns_csv)
    return {"columns": columns, "table": table, "markdown": markdown, "report": out / "report.md",
            "html": out / "report.html"}
