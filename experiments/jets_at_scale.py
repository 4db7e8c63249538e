"""The jet study at scale (issue 14, part 4): CNN and particle-cloud taggers on a 100,000-jet sample.

Every run trains through the CLI (``stabletrain train --task jets``) on the big file, with the same split
(seed 0, 20 % test), and every evaluation is ``stabletrain jets evaluate``: the detector sweep, PGD at matched
relative pT budgets (per cell for images, per particle for clouds), and the event-level pile-up samples' test
jets, next to the image-space (and cloud) approximations of the same μ. Each evaluation compares every tagger
with the plain one of its kind and seed on the same jets (``--baseline``: DeLong's paired interval) and keeps the
scores. The report collects every AUC with its DeLong interval, every rejection with the background jets behind
it, and each method's paired AUC difference from plain per seed and over seeds (Student t over seeds).

    python experiments/jets_at_scale.py train cnn-plain cnn-stability --seed 1 --data big.h5 --out runs/jets-scale
    python experiments/jets_at_scale.py evaluate images --seed 1 --data big.h5 \
        --pileup-data mu20=a.h5,mu50=b.h5 --out runs/jets-scale
    python experiments/jets_at_scale.py report --out runs/jets-scale                           # docs tables
    python experiments/jets_at_scale.py subset --data big.h5 --n 25000 --subset-out small.h5  # smaller scale

Runs are cached: a run folder with a checkpoint is not trained again, an evaluation folder with results is not
evaluated again (delete it to redo it).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from stabletrain.jets.tagging import format_auc, format_rejection

#: name → (model, method, extra training options). The settings are the small study's (docs/lhc.md):
#: additive 1 GeV noise for stability training of images (its best), PGD/TRADES at 0.5 GeV per cell, 5 steps;
#: the physical ``particle`` perturbation for clouds.
RUNS: dict[str, tuple[str, str, list[str]]] = {
    "cnn-plain": ("jet_cnn", "plain", []),
    "cnn-stability": ("jet_cnn", "stability", ["--noise", "gaussian", "--sigma", "0.001", "--alpha", "1"]),
    "cnn-trades": ("jet_cnn", "trades", ["--adv-epsilon", "0.0005", "--adv-steps", "5", "--adv-step-size", "0.0002"]),
    "cnn-fgsm": ("jet_cnn", "fgsm-adversarial", ["--adv-epsilon", "0.0005"]),
    "cnn-adversarial": ("jet_cnn", "adversarial", ["--adv-epsilon", "0.0005", "--adv-steps", "5",
                                                   "--adv-step-size", "0.0002"]),
    "pfn-plain": ("pfn", "plain", []),
    "pfn-stability": ("pfn", "stability", ["--cloud-noise", "particle", "--alpha", "1"]),
    # clouds: the physical attack (relative pT per particle, 0.05 rad, as jets evaluate --attack uses it) at 10 %
    "pfn-trades": ("pfn", "trades", ["--adv-epsilon", "0.1", "--adv-steps", "5", "--adv-step-size", "0.04"]),
    "pfn-fgsm": ("pfn", "fgsm-adversarial", ["--adv-epsilon", "0.1"]),
    "pfn-adversarial": ("pfn", "adversarial", ["--adv-epsilon", "0.1", "--adv-steps", "5",
                                               "--adv-step-size", "0.04"]),
    "efn-plain": ("efn", "plain", []),
    "particlenet-plain": ("particlenet", "plain", []),
}
IMAGE_EFFECTS = ("pileup-20,pileup-50,smear-1,smear-2,deadcells-0.1,deadcells-0.2,threshold-2,threshold-5,"
                 "shift-1,shift-2,coarse-2,coarse-3")
CLOUD_EFFECTS = ("cloud_pileup-20,cloud_pileup-50,cloud_smear-1,cloud_smear-2,cloud_deadcells-0.1,"
                 "cloud_deadcells-0.2,cloud_threshold-2,cloud_threshold-5,cloud_shift-1,cloud_shift-2")
ATTACK_BUDGETS = "0,0.02,0.05,0.1,0.2,0.5"


def _run(command: list[str], log: Path) -> None:
    started = time.perf_counter()
    print(" ".join(command), flush=True)
    with log.open("a") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"failed ({code}): {' '.join(command)}; see {log}")
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)


def run_name(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


def train(name: str, data: str, out: Path, epochs: int, batch_size: int, seed: int = 0) -> None:
    model, method, extra = RUNS[name]
    folder = out / "runs" / run_name(name, seed)
    if (folder / "checkpoint.pt").exists():
        print(f"{folder.name}: trained already")
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _run(["stabletrain", "train", "--task", "jets", "--data", data, "--model", model, "--method", method,
          "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed), *extra, "--out",
          str(folder), "--resume"], out / f"train-{folder.name}.log")
    (out / "runs" / f"{folder.name}.seconds").write_text(f"{time.perf_counter() - started:.1f}\n")


def evaluate(kind: str, data: str, pileup_data: dict[str, str], out: Path, attack_jets: int, seed: int = 0) -> None:
    names = [run_name(n, seed) for n in RUNS if (n.startswith("cnn-") == (kind == "images"))
             and (out / "runs" / run_name(n, seed) / "checkpoint.pt").exists()]
    if not names:
        sys.exit(f"no trained {kind} taggers of seed {seed} under {out / 'runs'}")
    baseline = run_name("cnn-plain" if kind == "images" else "pfn-plain", seed)
    runs = [str(out / "runs" / n) for n in names]
    effects = IMAGE_EFFECTS if kind == "images" else CLOUD_EFFECTS
    common = ["--save-scores"] + (["--baseline", baseline] if baseline in names else [])
    attack = ["--attack", "pgd", "--attack-budgets", ATTACK_BUDGETS, "--attack-jets", str(attack_jets)] \
        if attack_jets else []   # --attack-jets 0: no attack
    jobs = [(out / f"eval-{kind}-s{seed}", ["--data", data, "--distortions", effects, *attack])]
    jobs += [(out / f"eval-{kind}-s{seed}-{label}", ["--data", path, "--distortions", "clean"])
             for label, path in pileup_data.items()]
    for folder, options in jobs:
        if (folder / "results.json").exists() and set(names) <= {
                r["model"] for r in json.loads((folder / "results.json").read_text())["rows"]}:
            print(f"{folder.name}: evaluated already")
            continue
        _run(["stabletrain", "jets", "evaluate", *runs, *options, *common, "--out", str(folder), "--quiet"],
             out / f"{folder.name}.log")


def subset(data: str, n: int, target: Path) -> None:
    """The first ``n / 2`` jets of each class of ``data`` (a generated file: each class's jets in generation
    order), every dataset and attribute kept, as a smaller sample for the costlier methods."""
    import h5py
    import numpy as np

    with h5py.File(data, "r") as source:
        labels = source["label"][:]
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n // 2] for c in (0, 1)]))
        tmp = target.with_name(target.name + ".tmp")
        with h5py.File(tmp, "w") as sink:
            for key, value in source.attrs.items():
                sink.attrs[key] = value
            meta = json.loads(source.attrs["metadata"])
            meta["subset"] = {"of": str(data), "rows": "the first n/2 jets of each class", "n": int(len(rows))}
            sink.attrs["metadata"] = json.dumps(meta)
            for name, dataset in source.items():
                values = dataset[:][rows] if dataset.shape and len(dataset) == len(labels) else dataset[()]
                copy = sink.create_dataset(name, data=values, chunks=dataset.chunks and (
                    min(dataset.chunks[0], max(len(values), 1)), *dataset.chunks[1:]),
                    compression=dataset.compression, compression_opts=dataset.compression_opts,
                    shuffle=dataset.shuffle)
                for key, value in dataset.attrs.items():
                    copy.attrs[key] = value
    tmp.replace(target)
    print(f"wrote {target}: {len(rows)} jets")


_auc = format_auc


_rejection = format_rejection


def _seeds(out: Path, kind: str) -> list[int]:
    found = (re.fullmatch(rf"eval-{kind}-s(\d+)", p.parent.name) for p in out.glob(f"eval-{kind}-s*/results.json"))
    return sorted(int(m.group(1)) for m in found if m)


def _method(run: str) -> str:
    """``cnn-stability-s2`` → ``cnn-stability``."""
    return re.sub(r"-s\d+$", "", run)


def _differences(out: Path, kind: str, seeds: list[int]) -> list[str]:
    """Each method's AUC − AUC(plain) on the same jets: per seed (DeLong, paired) and over seeds (Student t)."""
    from stabletrain.stats import mean_interval

    found: dict[tuple[str, str], dict[int, dict]] = {}
    for seed in seeds:
        for path in sorted(out.glob(f"eval-{kind}-s{seed}*/differences.json")):
            label = path.parent.name.removeprefix(f"eval-{kind}-s{seed}").lstrip("-")
            for r in json.loads(path.read_text())["rows"]:
                if r["model"] == "mass-window":
                    continue
                where = f"event-level {label} (its test jets)" if label else r["distortion"]
                if label and r["distortion"] != "clean":
                    continue
                found.setdefault((_method(r["model"]), where), {})[seed] = r
    if not found:
        return []
    methods = list(dict.fromkeys(m for m, _ in found))
    places = list(dict.fromkeys(w for _, w in found))
    lines = ["", f"AUC − AUC(plain) on the same test jets, in units of 0.001: the mean over seeds with its Student t "
                 f"95 % interval (seeds in brackets), or with one seed DeLong's paired 95 % interval; "
                 f"**held** = the interval excludes 0", "",
             "| effect / sample | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for where in places:
        cells = []
        for method in methods:
            per_seed = found.get((method, where), {})
            if not per_seed:
                cells.append("")
                continue
            if len(per_seed) == 1:
                r = next(iter(per_seed.values()))
                low, high, mean, n = r["low"], r["high"], r["difference"], 1
            else:
                summary = mean_interval([r["difference"] for r in per_seed.values()])
                low, high, mean, n = summary.low, summary.high, summary.mean, summary.n
            mark = "**" if low > 0 or high < 0 else ""
            cells.append(f"{mark}{1000 * mean:+.1f}{mark} [{1000 * low:+.1f}, {1000 * high:+.1f}] ({n})")
        lines.append(f"| {where} | " + " | ".join(cells) + " |")
    return lines


def _over_seeds(out: Path, kind: str, seeds: list[int]) -> list[str]:
    """Clean AUC of each method over its seeds."""
    from stabletrain.stats import mean_interval

    aucs: dict[str, dict[int, float]] = {}
    for seed in seeds:
        rows = json.loads((out / f"eval-{kind}-s{seed}" / "results.json").read_text())["rows"]
        for r in rows:
            if r["distortion"] == "clean":
                aucs.setdefault(_method(r["model"]), {})[seed] = r["auc"]
    if len(seeds) < 2:
        return []
    lines = ["", "Clean test AUC over training seeds (the mass window has no seed): mean [Student t 95 %] and "
                 "each seed's", "", "| tagger | seeds | mean AUC | per seed |", "|---|---:|---:|---|"]
    for method, by in aucs.items():
        values = [by[s] for s in sorted(by)]
        summary = mean_interval(values)
        interval = f" [{summary.low:.4f}, {summary.high:.4f}]" if summary.low is not None else ""
        lines.append(f"| {method} | {len(values)} | {summary.mean:.4f}{interval} | "
                     + ", ".join(f"{v:.4f}" for v in values) + " |")
    return lines


def report(out: Path) -> str:
    lines: list[str] = []
    for kind in ("images", "clouds"):
        seeds = _seeds(out, kind)
        if not seeds:
            continue
        first = f"eval-{kind}-s{seeds[0]}"
        main = out / first / "results.json"
        saved = json.loads(main.read_text())
        rows = saved["rows"]
        counts = saved["test_counts"]
        models = list(dict.fromkeys(r["model"] for r in rows))
        lines += [f"### {kind}: {counts['signal'] + counts['background']} test jets ({counts['signal']} signal, "
                  f"{counts['background']} background)", "",
                  "| tagger | train s | clean AUC | R30 (k of N bkg) | R50 (k of N bkg) | mean AUC, effects | "
                  "worst effect |", "|---|---:|---:|---:|---:|---:|---|"]
        for m in models:
            clean = next(r for r in rows if r["model"] == m and r["distortion"] == "clean")
            others = [r for r in rows if r["model"] == m and r["distortion"] != "clean"]
            worst = min(others, key=lambda r: r["auc"]) if others else None
            seconds = out / "runs" / f"{m}.seconds"
            train_s = f"{float(seconds.read_text()):.0f}" if seconds.exists() else ""
            mean = sum(r["auc"] for r in others) / max(len(others), 1)
            lines.append(f"| {m} | {train_s} | {_auc(clean)} | {_rejection(clean, 30)} | {_rejection(clean, 50)} | "
                         f"{mean:.3f} | {worst['distortion'] + ' ' + format(worst['auc'], '.3f') if worst else ''} |")
        effects = list(dict.fromkeys(r["distortion"] for r in rows))
        lines += ["", "| tagger | " + " | ".join(effects) + " |", "|---|" + "---:|" * len(effects)]
        for m in models:
            by = {r["distortion"]: r for r in rows if r["model"] == m}
            lines.append(f"| {m} | " + " | ".join(_auc(by[e]) if e in by else "" for e in effects) + " |")
        pileup = sorted(out.glob(f"{first}-mu*/results.json"))
        if pileup:
            lines += ["", "Event-level pile-up (the μ samples' test jets, groomed with the jet) beside the "
                          "approximation of the same μ added to the clean test jets:", "",
                      "| tagger | μ | event level: AUC (test jets) | approximation: AUC |", "|---|---:|---:|---:|"]
            for path in pileup:
                mu = path.parent.name.split("-mu")[-1]
                event = json.loads(path.read_text())
                n = event["test_counts"]["signal"] + event["test_counts"]["background"]
                approx = "pileup" if kind == "images" else "cloud_pileup"
                for m in models:
                    e = next(r for r in event["rows"] if r["model"] == m and r["distortion"] == "clean")
                    a = next((r for r in rows if r["model"] == m and r["distortion"] == f"{approx}-{mu}"), None)
                    lines.append(f"| {m} | {mu} | {_auc(e)} ({n}) | {_auc(a) if a else 'not run'} |")
        attacks = out / first / "attacks.json"
        if attacks.exists():
            saved = json.loads(attacks.read_text())
            arows = saved["rows"]
            budgets = list(dict.fromkeys(r["budget_pt"] for r in arows))
            lines += ["", f"PGD-10 at a relative pT budget ε per {'cell' if kind == 'images' else 'particle'}, on "
                          f"{arows[0]['n']} test jets: robust accuracy (%) / AUC of the attacked jets", "",
                      "| tagger | " + " | ".join(f"ε = {b:g}" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
            for m in dict.fromkeys(r["model"] for r in arows):
                by = {r["budget_pt"]: r for r in arows if r["model"] == m}
                lines.append(f"| {m} | " + " | ".join(f"{100 * by[b]['robust_accuracy']:.1f} / {by[b]['auc']:.3f}"
                                                     for b in budgets) + " |")
        lines += _over_seeds(out, kind, seeds) + _differences(out, kind, seeds)
        lines.append("")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("train", "evaluate", "report", "subset"))
    parser.add_argument("what", nargs="*", help="train: run names; evaluate: images and/or clouds")
    parser.add_argument("--data")
    parser.add_argument("--pileup-data", default="", help="label=file,… of event-level pile-up samples (mu20=…)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--attack-jets", type=int, default=2000, help="test jets attacked (0: no attack)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the runs trained or evaluated")
    parser.add_argument("--n", type=int, default=25000, help="subset: jets kept (half of each class)")
    parser.add_argument("--subset-out", type=Path, help="subset: the smaller file")
    args = parser.parse_args()
    if args.stage == "subset":
        subset(args.data, args.n, args.subset_out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "train":
        for name in args.what:
            if name not in RUNS:
                sys.exit(f"unknown run {name!r}; one of {', '.join(RUNS)}")
            train(name, args.data, args.out, args.epochs, args.batch_size, args.seed)
    elif args.stage == "evaluate":
        pileup = dict(item.split("=", 1) for item in args.pileup_data.split(",") if item)
        for kind in args.what or ("images", "clouds"):
            evaluate(kind, args.data, pileup, args.out, args.attack_jets, args.seed)
    else:
        print(report(args.out))


if __name__ == "__main__":
    main()
