"""Choose stabletrain's fine-tuning defaults by measurement (issue 12).

For each data set (digits, photos) and seed, a plain model is trained to convergence with the default recipe
(12 epochs, AdamW 3e-3, cosine); it is then fine-tuned with stability training under several learning-rate
schedules, and, as the fair control, fine-tuned plainly under the same schedule (so that a gain is the stability
term's, not the extra epochs'). Every model is scored on the same test images, clean and under the paper's
distortions (each image distorted once from its own seeded stream, see stabletrain.evaluation.distort_examples).

Reported per candidate: clean accuracy and mean accuracy over the paper distortions other than Gaussian noise (the
training perturbation, reported on its own), as the change against the base model, averaged over seeds, with a
95% paired bootstrap interval over test images (resampled within each seed; "within noise" when it holds 0).

    python experiments/finetune_defaults.py --out runs/finetune-defaults            # round 1, ~25 min on 2 cores
    python experiments/finetune_defaults.py --out runs/finetune-defaults --round 2  # round 2, ~40 min
    python experiments/finetune_defaults.py --out runs/finetune-defaults --report # tables from results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stabletrain.data import load_data
from stabletrain.distortions import paper_sweep, parse_distortions
from stabletrain.evaluation import distort_examples, predict_logits
from stabletrain.files import write_json
from stabletrain.training import TrainConfig, load_model, train

#: Fine-tuning schedules tried, by round: (name, lr, warm-up epochs, epochs, alpha). Round 1's first is what --init
#: did before issue 12 (the training defaults, a fresh cosine schedule, 4 epochs); round 2 followed from round 1.
ROUNDS = {
    1: [("lr 3e-3, no warm-up, 4 epochs (old behaviour)", 3e-3, 0.0, 4, 4.0),
        ("lr 1e-3, warm-up 1, 4 epochs", 1e-3, 1.0, 4, 4.0), ("lr 3e-4, warm-up 1, 4 epochs", 3e-4, 1.0, 4, 4.0),
        ("lr 1e-4, warm-up 1, 4 epochs", 1e-4, 1.0, 4, 4.0)],
    2: [("lr 3e-3, warm-up 1, 8 epochs", 3e-3, 1.0, 8, 4.0), ("lr 3e-3, warm-up 1, 12 epochs", 3e-3, 1.0, 12, 4.0),
        ("lr 1e-3, warm-up 1, 8 epochs, alpha 1", 1e-3, 1.0, 8, 1.0)],
    # photos: σ = 0.1, α = 1, the setting results.md §A5 found to keep clean accuracy from scratch on photo tiles
    3: [("σ 0.1 α 1, lr 3e-3, warm-up 1, 8 epochs", 3e-3, 1.0, 8, 1.0, 0.1),
        ("σ 0.1 α 1, lr 1e-3, warm-up 1, 8 epochs", 1e-3, 1.0, 8, 1.0, 0.1)],
    # SGD with momentum, as the paper fine-tuned: its steps scale with the gradient, unlike Adam's; σ and α per data
    # set (digits: the defaults; photos: 0.1 and 1), so 'default' below means the data set's own setting
    4: [("SGD lr 0.01, warm-up 1, 4 epochs", 1e-2, 1.0, 4, None, None, "sgd"),
        ("SGD lr 0.03, warm-up 1, 8 epochs", 3e-2, 1.0, 8, None, None, "sgd")],
}
#: The stability settings of round 4, per data set.
DATA_SETTINGS = {"digits": (4.0, 0.2), "photos": (1.0, 0.1)}
#: The candidate of each round that also gets the plain control (the same schedule without the stability term).
CONTROL = {1: 2, 2: 1, 3: 0, 4: 1}
CANDIDATES = ROUNDS[1]


def correctness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: list[str]) -> dict[str, list[bool]]:
    out = {"clean": (predict_logits(model, x).argmax(1) == y).tolist()}
    for distortion in parse_distortions(",".join(specs)):
        distorted = distort_examples(distortion, x, 0, 0, "distortion", distortion.spec)
        out[distortion.spec] = (predict_logits(model, distorted).argmax(1) == y).tolist()
    return out


def run(out: Path, seeds: list[int], datasets: list[str], round_: int = 1) -> None:
    candidates = ROUNDS[round_]
    results_file = out / f"results-round{round_}.json" if round_ > 1 else out / "results.json"
    results: dict = {"candidates": [c[0] for c in candidates], "control": candidates[CONTROL[round_]][0], "runs": {}}
    for data_name in datasets:
        data = load_data(data_name)
        specs = [s for s in paper_sweep(data.image_size[0]) if s != "clean"]
        x, y = data.test.x, data.test.y
        for seed in seeds:
            key = f"{data_name}/seed{seed}"
            base_dir = out / data_name / f"seed{seed}" / "plain"
            if not (base_dir / "checkpoint.pt").exists():
                train(TrainConfig(data=data_name, method="plain", seed=seed), base_dir, progress=False,
                      overwrite=True)
            base, _ = load_model(base_dir / "checkpoint.pt")
            entry = {"specs": specs, "base": correctness(base, x, y, specs), "stability": {}, "plain": {}}
            for name, lr, warmup, epochs, alpha, *rest in candidates:
                sigma = rest[0] if rest else 0.2
                optimizer = rest[1] if len(rest) > 1 else "adamw"
                if alpha is None:
                    alpha, sigma = DATA_SETTINGS[data_name]
                for method in ("stability", "plain"):
                    if method == "plain" and name != candidates[CONTROL[round_]][0]:
                        continue  # the control is run for one schedule per round
                    tag = "" if (epochs, alpha, sigma) == (4, 4.0, 0.2) else f"-e{epochs}-a{alpha:g}"
                    tag += "" if sigma == 0.2 else f"-s{sigma:g}"
                    tag += "" if optimizer == "adamw" else f"-{optimizer}"
                    folder = out / data_name / f"seed{seed}" / f"{method}-{lr:g}-w{warmup:g}{tag}"
                    if method == "plain":  # the control's folder does not depend on the stability settings
                        folder = out / data_name / f"seed{seed}" / (f"plain-{lr:g}-w{warmup:g}-e{epochs}"
                                                                     + ("" if optimizer == "adamw" else f"-{optimizer}"))
                    options = {"alpha": alpha, "sigma": sigma} if method == "stability" else {}
                    if not (folder / "checkpoint.pt").exists():
                        train(TrainConfig(data=data_name, method=method, seed=seed, epochs=epochs, lr=lr,
                                          warmup_epochs=warmup, optimizer=optimizer, **options), folder,
                              init=base_dir / "checkpoint.pt", progress=False, overwrite=True)
                    model, _ = load_model(folder / "checkpoint.pt")
                    entry[method][name] = correctness(model, x, y, specs)
                    print(f"{key} {method} {name}: clean {np.mean(entry[method][name]['clean']):.4f}", flush=True)
            results["runs"][key] = entry
            write_json(results_file, results)


def _pooled(results: dict, data_name: str, method: str, candidate: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (model − base) differences of one quantity, per seed (a list of arrays)."""
    diffs = []
    for key, entry in results["runs"].items():
        if not key.startswith(data_name + "/") or candidate not in entry[method]:
            continue
        model, base = entry[method][candidate], entry["base"]
        if which == "clean":
            diffs.append(np.array(model["clean"], float) - np.array(base["clean"], float))
        else:
            kept = [s for s in entry["specs"] if s.startswith("gaussian") == (which == "gaussian")]
            diffs.append(np.mean([np.array(model[s], float) - np.array(base[s], float) for s in kept], axis=0))
    return diffs


def _interval(diffs: list[np.ndarray], reps: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    mean = float(np.mean([d.mean() for d in diffs]))
    boot = np.zeros(reps)
    for d in diffs:  # resample images within each seed; the seeds' means are averaged
        idx = rng.integers(0, len(d), size=(reps, len(d)))
        boot += d[idx].mean(axis=1)
    boot /= len(diffs)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return mean, float(lo), float(hi)


def report(out: Path, round_: int = 1) -> str:
    results = json.loads((out / (f"results-round{round_}.json" if round_ > 1 else "results.json")).read_text())
    if "control" not in results:  # round 1's file predates the key
        results["control"] = results["candidates"][2]
    datasets = sorted({k.split("/")[0] for k in results["runs"]})
    lines = []
    for data_name in datasets:
        seeds = sorted(k.split("/")[1] for k in results["runs"] if k.startswith(data_name + "/"))
        base_clean = np.mean([np.mean(e["base"]["clean"]) for k, e in results["runs"].items()
                              if k.startswith(data_name + "/")])
        lines += [f"### {data_name} ({len(seeds)} seeds; base plain model clean accuracy {100 * base_clean:.1f}%)", "",
                  "| fine-tuning | Δ clean accuracy (points) | Δ mean accuracy, jpeg/thumb/crop (points) | "
                  "Δ mean accuracy, Gaussian noise (the training perturbation) |",
                  "|---|---:|---:|---:|"]
        rows = [("stability", c) for c in results["candidates"]] + [("plain", results["control"])]
        for method, candidate in rows:
            cells = []
            for which in ("clean", "distorted", "gaussian"):
                diffs = _pooled(results, data_name, method, candidate, which)
                if not diffs:
                    cells.append("–")
                    continue
                mean, lo, hi = _interval(diffs)
                noise = " (within noise)" if lo <= 0 <= hi else ""
                cells.append(f"{100 * mean:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{noise}")
            lines.append(f"| {method}, {candidate} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/finetune-defaults")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default="digits,photos")
    parser.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS), help="which candidates to run")
    parser.add_argument("--report", action="store_true", help="only print the tables of an existing run")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report:
        torch.set_num_threads(2)
        run(out, [int(s) for s in args.seeds.split(",")], args.data.split(","), args.round)
    print(report(out, args.round))


if __name__ == "__main__":
    main()
