"""``stabletrain demo --data jets``: the main job for physicists.

It generates (once, cached) a balanced W/QCD jet-image sample with Pythia 8
and a pile-up pool, trains the tagger with ``plain``, ``gaussian`` and
``stability`` under the same budget, and measures:

1. the taggers against the mass-window baseline, clean and under every
   detector effect (ROC AUC with its DeLong 95 % interval, background
   rejection at ε_S = 30 % and 50 % with the background jets passing each cut
   and its exact interval);
2. attacks with physical constraints: PGD with ε per cell (GeV) and the
   sparse energy attack on k cells;
3. the controlled sparse-versus-dense comparison: the same architecture,
   trained plainly, on digits and on jets with and without pile-up, all at
   25×25 and scaled so each image's brightest cell is 1, attacked with the
   same budgets.

It writes ``report.md``, ``results.json``, ``results.csv`` (detector
effects), ``attacks.csv``, ``sparsity.csv`` and ``plots/``. Every table
says how many test jets (signal, background) its numbers rest on. The
checks are three-way (:func:`claims`): "held", "did not hold" or "within
noise", decided by a paired 95 % interval of the AUC difference, never by
the point estimate. Re-running reuses the cached sample and finished models.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache import cache_dir
from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset, load_digits
from ..files import ensure_output_dir, write_csv, write_json, write_yaml
from ..reports import _pyplot, _save_figure, plot_severity_curves, write_markdown
from ..demo import train_or_reuse
from ..evaluation import distort_examples
from ..locking import output_lock
from ..metrics import auc_contrast, paired_auc_difference
from ..stats import format_interval, verdict
from ..training import TrainConfig
from .data import PIXEL_UNIT_GEV, load_jets
from .detector import build_pileup_pool, detector_sweep, jet_eta, set_pileup_pool
from .generation import GenerationConfig, generate_jets
from .images import ImageSpec, occupancy
from .study import attack_rows, normalize_max
from .tagging import describe_counts, evaluate_taggers, format_auc, format_rejection

__all__ = ["QUICK_DETECTOR_SWEEP", "JetDemoConfig", "demo_sample_path", "run_jet_demo"]

QUICK_DETECTOR_SWEEP = ("pileup-20", "smear-1", "deadcells-0.1", "threshold-2", "shift-2", "coarse-3")


@dataclass
class JetDemoConfig:
    """Settings of :func:`run_jet_demo`; ``quick`` shrinks everything for tests."""

    signal: str = "w"
    #: An existing jet file (or list/glob of shards) to use instead of generating the cached demo sample.
    sample: str | None = None
    n: int = 4000
    generation_seed: int = 0
    workers: int = 2
    pileup_events: int = 2000
    methods: tuple[str, ...] = ("plain", "gaussian", "stability")
    epochs: int = 12
    width: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    alpha: float = 1.0
    sigma: float = 0.3
    noise: str = "relative"
    jet_input: str = "log"
    #: PGD training (``adversarial``, ``trades``) in TeV units: 0.5 GeV per cell, 5 steps of 0.2 GeV.
    adv_epsilon: float = 0.0005
    adv_steps: int = 5
    adv_step_size: float = 0.0002
    seed: int = 0
    distortions: tuple[str, ...] | None = None
    epsilons_gev: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
    #: Total |ΔpT| per jet allowed to the budgeted PGD, GeV.
    budget_gev: float = 10.0
    #: Additive-noise stability training, to compare the noise models (σ in GeV; 0 skips it).
    additive_sigma_gev: float = 1.0
    ks: tuple[int, ...] = (1, 2, 4, 8)
    sparse_max_change_gev: float = 20.0
    attack_examples: int = 600
    sparsity_epsilons: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1)
    sparsity_ks: tuple[int, ...] = (1, 2, 4, 8)
    sparsity_epochs: int = 8
    #: Input transform of the sparse-versus-dense models: ``linear`` lets no data statistics in.
    sparsity_input: str = "linear"
    #: The matched-difficulty control of the sparse question: digits whose labels are flipped at this rate, in
    #: training and test, so that the dense task's clean error comes near the jets' (0.21 on the 4,000-jet
    #: sample); 0 leaves the control out.
    sparsity_label_noise: float = 0.2
    device: str = "auto"
    quick: bool = False

    def resolved(self) -> JetDemoConfig:
        config = self
        if self.quick:
            config = dataclasses.replace(self, n=min(self.n, 600), pileup_events=min(self.pileup_events, 300),
                                         epochs=min(self.epochs, 3), width=min(self.width, 8),
                                         distortions=self.distortions or QUICK_DETECTOR_SWEEP,
                                         epsilons_gev=self.epsilons_gev[:2], ks=self.ks[:2], attack_examples=100,
                                         sparsity_epsilons=self.sparsity_epsilons[:2], sparsity_ks=self.sparsity_ks[:2],
                                         sparsity_epochs=2)
        if config.n < 100:
            raise StableTrainError(f"the jets demo needs at least 100 jets, got --n {config.n}")
        if not 0.0 <= config.sparsity_label_noise < 0.5:
            raise StableTrainError(f"sparsity_label_noise must be in [0, 0.5), got {config.sparsity_label_noise!r}")
        for method in config.methods:
            config.train_config(method, "check.h5")
        return config

    def train_config(self, method: str, data: str) -> TrainConfig:
        """The tagger's training config; alpha, sigma and the PGD options go to the methods that take them."""
        shared = {"alpha": self.alpha, "sigma": self.sigma, "adv_epsilon": self.adv_epsilon,
                  "adv_steps": self.adv_steps, "adv_step_size": self.adv_step_size}
        return TrainConfig.with_shared(dict(task="jets", data=data, method=method, epochs=self.epochs,
                                            model_args={"width": self.width}, batch_size=self.batch_size, lr=self.lr,
                                            task_args={"noise": self.noise, "jet_input": self.jet_input},
                                            seed=self.seed, device=self.device), shared)[0]


def demo_sample_path(config: JetDemoConfig) -> Path:
    """Where the demo's generated sample is cached."""
    # v2: images flipped on the off-centre pixel halves, with per-cell eta maps (files before that are not reused)
    return cache_dir("jets") / f"demo-{config.signal}-n{config.n}-seed{config.generation_seed}-v2.h5"


def _train_or_reuse(config: TrainConfig, run_dir: Path, data: DataSplit, progress: bool,
                    emit: Callable[[str], None]) -> torch.nn.Module:
    # the sample's path depends on the cache folder, not on the jets in it
    return train_or_reuse(config, run_dir, data, progress=progress, log=emit, ignore=("data",))[0]


def _sparsity_sets(jets: DataSplit, config: JetDemoConfig) -> dict[str, DataSplit]:
    """Digits and jets (clean, and with pile-up) at 25×25, each image scaled so its brightest cell is 1."""
    side = jets.image_size[0]
    digits = load_digits(side, split_seed=0, test_fraction=0.2)
    binary = lambda d: ImageDataset(normalize_max(d.x), (d.y >= 5).long())
    sets = {"digits (0–4 vs 5–9)": DataSplit("digits-binary", binary(digits.train), binary(digits.test),
                                              ["0-4", "5-9"], {})}
    rate = config.sparsity_label_noise
    if rate > 0:
        noisy = lambda d, part: ImageDataset(normalize_max(d.x), flip_labels((d.y >= 5).long(), rate, part))
        sets[f"digits, {100 * rate:g} % of labels flipped"] = DataSplit(
            f"digits-binary-flip{rate:g}", noisy(digits.train, 0), noisy(digits.test, 1), ["0-4", "5-9"], {})
    from ..distortions import parse_distortion

    for label, spec in (("jets", None), ("jets + pile-up μ=20", "pileup-20"), ("jets + pile-up μ=60", "pileup-60")):
        parts = []
        for part_name, part in (("train", jets.train), ("test", jets.test)):
            x = part.x if spec is None else distort_examples(parse_distortion(spec), part.x, 0, config.seed, spec,
                                                             part_name)
            parts.append(ImageDataset(normalize_max(x), part.y))
        sets[label] = DataSplit(f"jets-{spec or 'clean'}", parts[0], parts[1], jets.classes, {})
    return sets


def flip_labels(y: torch.Tensor, rate: float, stream: int = 0) -> torch.Tensor:
    """Binary labels with a seeded ``rate`` of them flipped: the matched-difficulty control's label noise.

    Example ``i`` is flipped when the ``i``-th uniform of the stream
    ``(20161, stream)`` falls below ``rate``, so the flips of a rate
    contain those of every smaller rate, and a test set's flips do not
    depend on the training set's.

    Example:
        >>> y = torch.zeros(10_000, dtype=torch.long)
        >>> abs(float(flip_labels(y, 0.2).float().mean()) - 0.2) < 0.02
        True
        >>> bool((flip_labels(y, 0.1) <= flip_labels(y, 0.2)).all())
        True
    """
    if not 0.0 <= rate <= 1.0:
        raise StableTrainError(f"the flip rate must be in [0, 1], got {rate!r}")
    u = torch.from_numpy(np.random.default_rng([20161, stream]).random(len(y)))
    return torch.where(u < rate, 1 - y, y)


def run_jet_demo(config: JetDemoConfig, out_dir: str | Path, *, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate (cached), train, evaluate and attack; write the report. Returns the results.

    The output folder is locked while the job runs (:func:`stabletrain.locking.output_lock`).
    """
    config = config.resolved()
    with output_lock(out_dir, what="demo"):
        return _run_jet_demo(config, out_dir, progress=progress, log=log)


def _run_jet_demo(config: JetDemoConfig, out_dir: str | Path, *, progress: bool,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    emit = log or (lambda line: None)
    out = ensure_output_dir(out_dir)
    started = time.perf_counter()
    sample = Path(config.sample) if config.sample else demo_sample_path(config)
    generation: dict[str, Any] = {}
    if config.sample is None and not sample.exists():
        emit(f"generating {config.n} {config.signal}/QCD jets with Pythia 8 into {sample} ({config.workers} workers)")
        generation = generate_jets(GenerationConfig(signal=config.signal, n=config.n, seed=config.generation_seed),
                                   sample, workers=config.workers, progress=progress, log=emit)
    emit(f"pile-up pool: {config.pileup_events} minimum-bias events (cached)")
    set_pileup_pool(build_pileup_pool(config.pileup_events, progress=progress))
    data = load_jets(str(sample), lazy=False)  # a small sample, and the sparse-versus-dense study distorts it whole
    specs = list(config.distortions) if config.distortions else detector_sweep()
    write_yaml(out / "config.yaml", {**dataclasses.asdict(config), "sample": str(sample), "distortions": specs})

    models: dict[str, torch.nn.Module] = {}
    for method in config.methods:
        models[method] = _train_or_reuse(config.train_config(method, str(sample)), out / "models" / method, data,
                                         progress, emit)
    if "stability" in config.methods and config.additive_sigma_gev > 0:
        additive = dataclasses.replace(config.train_config("stability", str(sample)), noise="gaussian",
                                       sigma=config.additive_sigma_gev / PIXEL_UNIT_GEV)
        models["stability-additive"] = _train_or_reuse(additive, out / "models" / "stability-additive", data,
                                                       progress, emit)
    emit(f"evaluating {len(models)} taggers and the mass window under {len(specs)} detector effects")
    # smear-A needs each cell's energy E = pT cosh(eta): the test jets' eta maps are in force for the sweep
    scores: dict[tuple[str, str], np.ndarray] = {}  # each jet's score per (tagger, effect): the paired checks
    with jet_eta(getattr(data.test, "eta_map", None), ImageSpec(**data.info["image"]) if "image" in data.info
                 else ImageSpec()):
        rows = evaluate_taggers(models, data.test, specs, seed=config.seed, progress=progress, scores=scores)

    emit("attacking the taggers")
    n_attack = min(config.attack_examples, len(data.test))
    x_attack, y_attack = data.test.x[:n_attack], data.test.y[:n_attack]
    unit = 1.0 / PIXEL_UNIT_GEV
    epsilons = [e * unit for e in config.epsilons_gev]
    attacks = attack_rows(models, x_attack, y_attack, epsilons=epsilons, ks=config.ks, fgsm_epsilons=epsilons,
                          max_change=config.sparse_max_change_gev * unit, unit=PIXEL_UNIT_GEV, progress=progress)
    attacks += attack_rows(models, x_attack, y_attack, epsilons=epsilons, budget=config.budget_gev * unit,
                           unit=PIXEL_UNIT_GEV, progress=progress, pgd_label=f"pgd, ≤{config.budget_gev:g} GeV total")

    emit("sparse versus dense: training the same architecture on digits and on jets with and without pile-up")
    sparsity: list[dict[str, Any]] = []
    for label, split in _sparsity_sets(data, config).items():
        run_config = dataclasses.replace(config.train_config("plain", str(sample)), epochs=config.sparsity_epochs,
                                         jet_input=config.sparsity_input)
        model = _train_or_reuse(run_config, out / "sparsity" / split.name, split, progress, emit)
        n = min(config.attack_examples, len(split.test))
        for row in attack_rows({label: model}, split.test.x[:n], split.test.y[:n], epsilons=config.sparsity_epsilons,
                               ks=config.sparsity_ks, max_change=1.0, progress=False):
            sparsity.append({**row, "data": label, "occupancy": occupancy(split.test.x[:n].numpy())})

    result = _write_report(out, config, data, sample, rows, attacks, sparsity, generation,
                           time.perf_counter() - started, scores)
    return result


def _signed(value: float, low: float, high: float) -> str:
    return format_interval(value, low, high, percent=False, digits=3, signed=True)


def _all_of(verdicts: list[str]) -> str:
    """The verdict on "every one of these held": held if all held, did not hold if any did not, else within noise."""
    if verdicts and all(v == "held" for v in verdicts):
        return "held"
    return "did not hold" if "did not hold" in verdicts else "within noise"


def claims(rows: list[dict], attacks: list[dict], *, scores: dict[tuple[str, str], np.ndarray],
           labels: np.ndarray) -> list[dict[str, Any]]:
    """The questions of the study, answered on these numbers, each "held", "did not hold" or "within noise".

    Each claim is "an AUC difference > 0", decided by :func:`stabletrain.stats.verdict`
    on its 95 % interval. The taggers are compared on the same test jets, so
    the intervals are paired: DeLong's covariance of the AUCs
    (:func:`stabletrain.metrics.auc_contrast`), which takes in that two
    taggers (and the versions of the jets under every detector effect) score
    the same jets. ``scores[(model, spec)]`` holds each jet's score, in the
    order of ``labels`` (see :func:`stabletrain.jets.tagging.evaluate_taggers`).

    Each check has ``claim``, ``verdict``, ``detail`` (the numbers, in words),
    ``threshold`` (0) and ``intervals`` (each comparison with its interval
    and verdict). Intervals are 95 % each; a claim about several comparisons
    holds when every one of them held, and does not when any did not.
    """
    labels = np.asarray(labels)
    n_signal, n_background = int((labels == 1).sum()), int((labels == 0).sum())
    jets = describe_counts(n_signal, n_background)
    clean = {r["model"]: r for r in rows if r["distortion"] == "clean"}
    out = []
    taggers = [m for m in clean if m != "mass-window"]
    if taggers and "mass-window" in clean:
        best = max(taggers, key=lambda m: clean[m]["auc"])
        found = []
        for m in taggers:
            d = paired_auc_difference(scores[(m, "clean")], scores[("mass-window", "clean")], labels)
            found.append({"what": f"{m} − mass-window, clean", **d.to_dict(), "verdict": verdict(d.low, d.high)})
        out.append({"claim": "the CNN tagger beats the mass-window cut in ROC AUC",
                    "verdict": _all_of([f["verdict"] for f in found]),
                    "detail": f"AUC − the mass window's {format_auc(clean['mass-window'])}, paired 95 % intervals on "
                              f"the {jets}: " +
                              ", ".join(f"{m} {_signed(f['difference'], f['low'], f['high'])} ({f['verdict']})"
                                        for m, f in zip(taggers, found)) + f" (best: {best})",
                    "threshold": 0.0, "intervals": found})
    distorted = [r for r in rows if r["distortion"] != "clean"]
    by = {(r["model"], r["distortion"]): r["auc"] for r in distorted}
    specs = sorted({r["distortion"] for r in distorted})
    for candidate, noise in (("stability", "relative noise"), ("stability-additive", "additive noise")):
        if "plain" not in clean or candidate not in clean or not specs:
            continue
        wins = sum(by[(candidate, s)] > by[("plain", s)] for s in specs)
        mean_auc = {m: float(np.mean([by[(m, s)] for s in specs])) for m in ("plain", candidate)}
        # the mean over the effects of AUC(candidate) − AUC(plain): one contrast of 2S AUCs on the same jets
        stacked = np.stack([scores[(candidate, s)] for s in specs] + [scores[("plain", s)] for s in specs])
        weights = [1.0 / len(specs)] * len(specs) + [-1.0 / len(specs)] * len(specs)
        mean = auc_contrast(stacked, labels, weights)
        per_effect = []
        for s in specs:
            d = paired_auc_difference(scores[(candidate, s)], scores[("plain", s)], labels)
            per_effect.append({"what": f"{candidate} − plain, {s}", **d.to_dict(), "verdict": verdict(d.low, d.high)})
        tally = {v: sum(f["verdict"] == v for f in per_effect) for v in ("held", "did not hold", "within noise")}
        found = [{"what": f"{candidate} − plain, mean over {len(specs)} effects", **mean.to_dict(),
                  "verdict": verdict(mean.low, mean.high)}] + per_effect
        out.append({"claim": f"stability training ({noise}) keeps a higher AUC than plain training under detector "
                             f"effects",
                    "verdict": found[0]["verdict"],
                    "detail": f"mean AUC over the {len(specs)} effects {mean_auc[candidate]:.3f} vs "
                              f"{mean_auc['plain']:.3f}, difference {_signed(mean.difference, mean.low, mean.high)} "
                              f"(paired 95 % interval, the same {jets} under every effect); per effect higher "
                              f"beyond noise on {tally['held']}, lower beyond noise on {tally['did not hold']}, within "
                              f"noise on {tally['within noise']} (higher point estimate on {wins}/{len(specs)})",
                    "threshold": 0.0, "intervals": found})
    return out


def _plot_attacks(rows: list[dict], key: str, path: Path, title: str, group: str = "model") -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for ax, kind, xlabel in ((axes[0], "pgd", "ε per cell"), (axes[1], "sparse", "cells changed k")):
        prefixes = ("pgd", "fgsm") if kind == "pgd" else (kind,)
        attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"].startswith(prefixes)))
        for i, name in enumerate(dict.fromkeys(r[group] for r in rows)):
            for j, attack in enumerate(attacks):
                pts = sorted((r["strength"], r[key]) for r in rows if r[group] == name and r["attack"] == attack)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="os^"[j % 3], color=f"C{i}",
                            linestyle="-" if j == 0 else "--", label=name if len(attacks) == 1 else f"{name}, {attack}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def _write_report(out: Path, config: JetDemoConfig, data: DataSplit, sample: Path, rows: list[dict],
                  attacks: list[dict], sparsity: list[dict], generation: dict, seconds: float,
                  scores: dict[tuple[str, str], np.ndarray]) -> dict[str, Any]:
    labels = data.test.y.numpy()
    n_signal, n_background = int((labels == 1).sum()), int((labels == 0).sum())
    checks = claims(rows, attacks, scores=scores, labels=labels)
    write_csv(out / "results.csv", rows)
    write_csv(out / "attacks.csv", attacks)
    write_csv(out / "sparsity.csv", sparsity)
    write_json(out / "results.json", {"config": dataclasses.asdict(config), "sample": str(sample),
                                      "train": len(data.train), "test": len(data.test),
                                      "test_counts": {"signal": n_signal, "background": n_background},
                                      "detector": rows,
                                      "attacks": attacks, "sparsity": sparsity, "checks": checks,
                                      "generation": generation, "wall_seconds": seconds})
    plots = plot_severity_curves([{**r, "accuracy": r["auc"]} for r in rows], out / "plots", "accuracy",
                                 title_prefix="ROC AUC (%) under ")
    plots.append(_plot_attacks(attacks, "auc", out / "plots" / "attacks_auc.png", "tagger AUC under attack (GeV)"))
    plots.append(_plot_attacks(sparsity, "flipped_correct", out / "plots" / "sparsity_success.png",
                               "attack success, images scaled to max 1", group="data"))

    models = list(dict.fromkeys(r["model"] for r in rows))
    specs = list(dict.fromkeys(r["distortion"] for r in rows))
    lookup = {(r["model"], r["distortion"]): r for r in rows}
    lines = [f"# stabletrain jets demo: {config.signal.upper()} vs QCD", "",
             (f"Sample: {sample} ({len(data.train)} train / {len(data.test)} test jets, 25×25 pT images, "
             f"pixels in TeV). Taggers: {', '.join(config.methods)}, {config.epochs} epochs, "
             f"noise {config.noise} σ={config.sigma}, α={config.alpha}, input {config.jet_input}. "
             f"stability-additive: additive noise σ={config.additive_sigma_gev:g} GeV. "
             f"Wall time {seconds:.0f} s."), "", "## Checks", "",
             ("Each claim is decided by a 95 % interval, not by the point estimate: **held** when the interval of "
              "the AUC difference lies wholly above 0, **did not hold** when wholly below, **within noise** when it "
              f"contains 0. Taggers are compared on the same {describe_counts(n_signal, n_background)}, so the "
              "intervals are paired (DeLong's covariance of the AUCs)."), ""]
    lines += [f"- **{c['verdict']}**: {c['claim']} ({c['detail']})" for c in checks]
    for metric, title in (("auc", "ROC AUC"), ("rejection_50", "background rejection 1/ε_B at ε_S = 50 %"),
                          ("rejection_30", "background rejection 1/ε_B at ε_S = 30 %")):
        lines += ["", f"## {title} under detector effects", ""]
        if metric == "auc":
            lines += [f"On the {describe_counts(n_signal, n_background)}. Each cell: AUC [95 % DeLong interval].", ""]
        else:
            lines += [(f"On the {describe_counts(n_signal, n_background)}. Each cell: R = 1/ε_B [95 % interval] (k of "
                       f"{n_background} bkg): k of the {n_background} test background jets pass the cut that keeps "
                       f"{metric[-2:]} % of the signal, and the interval is the exact (Clopper-Pearson) interval of "
                       f"ε_B = k/{n_background}, inverted. When no background jet passes, the rejection has only a "
                       f"lower bound: the cell reads \"> bound (0 of {n_background} bkg pass)\"."), ""]
        lines += ["| effect | occupancy | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
        for s in specs:
            occ = lookup[(models[0], s)]["occupancy"]
            lines.append(f"| {s} | {occ:.3f} | " + " | ".join(
                format_auc(lookup[(m, s)]) if metric == "auc" else format_rejection(lookup[(m, s)], int(metric[-2:]))
                for m in models) + " |")
    attack_counts = describe_counts(attacks[0]["signal"], attacks[0]["background"]) if attacks else "no test jets"
    lines += ["", "## Attacks with physical constraints (cells stay ≥ 0)", "",
              (f"FGSM and PGD-10 with ε GeV per cell (PGD without and with a budget of {config.budget_gev:g} GeV of total |ΔpT| "
              f"per jet); the sparse attack changes k cells by up to {config.sparse_max_change_gev:g} GeV each. "
              f"Every row rests on the first {attack_counts}; AUC [95 % DeLong interval], and R50 = 1/ε_B at "
              f"ε_S = 50 % [95 % exact interval] (k of N background jets passing)."),
              "", "| model | attack | strength | success rate | AUC | R50 | cells changed |",
              "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['attack']} | {r['strength']:g} | {r['success_rate']:.3f} | {format_auc(r)} | "
              f"{format_rejection(r, 50)} | {r['changed_cells']:.1f} |" for r in attacks]
    lines += ["", "## Sparse versus dense inputs (same architecture, images scaled to max 1)", "",
              "The column \"test images\" gives the number of test images (class 1 / class 0) each row rests on.", "",
              "| data | test images | occupancy | clean error | attack | strength | success rate |",
              "|---|---:|---:|---:|---|---:|---:|"]
    lines += [f"| {r['data']} | {r['signal'] + r['background']} ({r['signal']} / {r['background']}) | "
              f"{r['occupancy']:.3f} | {r['clean_error']:.3f} | {r['attack']} | {r['strength']:g} | "
              f"{r['success_rate']:.3f} |" for r in sparsity]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    report = write_markdown(out / "report.md", "\n".join(lines) + "\n")
    table = "\n".join(lines[lines.index("## Checks"): lines.index("## Attacks with physical constraints (cells stay ≥ 0)")])
    return {"rows": rows, "attacks": attacks, "sparsity": sparsity, "checks": checks, "report": report,
            "table": table}
