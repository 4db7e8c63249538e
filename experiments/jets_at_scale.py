"""The jet study at scale (issue 14, part 4): CNN and particle-cloud taggers on a 100,000-jet sample.

Every run trains through the CLI (``stabletrain train --task jets``) on the big file, with the same split
(seed 0, 20 % test), and every evaluation is ``stabletrain jets evaluate``: the detector sweep, PGD at matched
relative pT budgets (per cell for images, per particle for clouds), and the event-level pile-up samples' test
jets, next to the image-space (and cloud) approximations of the same μ. The report collects every AUC with its
DeLong interval and every rejection with the background jets behind it.

    python experiments/jets_at_scale.py train cnn-plain --data big.h5 --out runs/jets-scale   # one run
    python experiments/jets_at_scale.py evaluate images --data big.h5 --pileup-data mu20=a.h5,mu50=b.h5 \\
        --out runs/jets-scale
    python experiments/jets_at_scale.py report --out runs/jets-scale                           # docs table

Runs are cached: a run folder with a checkpoint is not trained again, an evaluation folder with results is not
evaluated again (delete it to redo it).
"""

from __future__ import annotations

import argparse
import json
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
    "pfn-plain": ("pfn", "plain", []),
    "pfn-stability": ("pfn", "stability", ["--cloud-noise", "particle", "--alpha", "1"]),
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


def train(name: str, data: str, out: Path, epochs: int, batch_size: int) -> None:
    model, method, extra = RUNS[name]
    folder = out / "runs" / name
    if (folder / "checkpoint.pt").exists():
        print(f"{name}: trained already")
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _run(["stabletrain", "train", "--task", "jets", "--data", data, "--model", model, "--method", method,
          "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", "0", *extra, "--out", str(folder),
          "--resume"], out / f"train-{name}.log")
    (out / "runs" / f"{name}.seconds").write_text(f"{time.perf_counter() - started:.1f}\n")


def evaluate(kind: str, data: str, pileup_data: dict[str, str], out: Path, attack_jets: int) -> None:
    names = [n for n in RUNS if (n.startswith("cnn-") == (kind == "images"))
             and (out / "runs" / n / "checkpoint.pt").exists()]
    if not names:
        sys.exit(f"no trained {kind} taggers under {out / 'runs'}")
    runs = [str(out / "runs" / n) for n in names]
    effects = IMAGE_EFFECTS if kind == "images" else CLOUD_EFFECTS
    jobs = [(out / f"eval-{kind}", ["--data", data, "--distortions", effects, "--attack", "pgd", "--attack-budgets",
                                     ATTACK_BUDGETS, "--attack-jets", str(attack_jets)])]
    jobs += [(out / f"eval-{kind}-{label}", ["--data", path, "--distortions", "clean"])
             for label, path in pileup_data.items()]
    for folder, options in jobs:
        if (folder / "results.json").exists() and {n for n in names} <= {
                r["model"] for r in json.loads((folder / "results.json").read_text())["rows"]}:
            print(f"{folder.name}: evaluated already")
            continue
        _run(["stabletrain", "jets", "evaluate", *runs, *options, "--out", str(folder), "--quiet"],
             out / f"{folder.name}.log")


_auc = format_auc


_rejection = format_rejection


def report(out: Path) -> str:
    lines: list[str] = []
    for kind in ("images", "clouds"):
        main = out / f"eval-{kind}" / "results.json"
        if not main.exists():
            continue
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
        pileup = sorted(out.glob(f"eval-{kind}-mu*/results.json"))
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
        attacks = out / f"eval-{kind}" / "attacks.json"
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
        lines.append("")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("train", "evaluate", "report"))
    parser.add_argument("what", nargs="*", help="train: run names; evaluate: images and/or clouds")
    parser.add_argument("--data")
    parser.add_argument("--pileup-data", default="", help="label=file,… of event-level pile-up samples (mu20=…)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--attack-jets", type=int, default=2000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "train":
        for name in args.what:
            if name not in RUNS:
                sys.exit(f"unknown run {name!r}; one of {', '.join(RUNS)}")
            train(name, args.data, args.out, args.epochs, args.batch_size)
    elif args.stage == "evaluate":
        pileup = dict(item.split("=", 1) for item in args.pileup_data.split(",") if item)
        for kind in args.what or ("images", "clouds"):
            evaluate(kind, args.data, pileup, args.out, args.attack_jets)
    else:
        print(report(args.out))


if __name__ == "__main__":
    main()
