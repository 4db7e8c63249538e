"""Re-measure claim C7 over 5 seeds (issue 13, item 6): fine-tuning a converged plain model with stability training
keeps clean accuracy and improves distorted accuracy.

For each data set, normalization and seed, a plain model trains to convergence with the defaults (the epochs of
``stabletrain.training.config.CONVERGED_EPOCHS``). From its checkpoint (``init``) two runs fine-tune with the
library's fine-tuning defaults (AdamW at 1e-3, a 1-epoch warm-up, cosine) for the same number of epochs:

* ``stability`` with the data set's setting (digits: σ = 0.2, α = 1; photos: σ = 0.1, α = 1, results.md §A7);
* ``plain``, the fair control: the same schedule without the stability term, so that a gain is the term's and not
  the extra epochs'.

Every model is scored on the same test images, clean and under the paper's distortions (each image distorted once
from its own seeded stream). Each claim's interval is the two-level paired bootstrap of
:func:`stabletrain.stats.paired_bootstrap` (seeds and test images resampled, the same draw for both models).

    python experiments/finetune_claims.py --out runs/finetune-claims                       # digits, both norms
    python experiments/finetune_claims.py --out runs/finetune-claims --seeds 3,4 --no-report  # part, in parallel
    python experiments/finetune_claims.py --out runs/finetune-claims --report               # the table only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stabletrain.data import load_data
from stabletrain.distortions import parse_distortion, paper_sweep, parse_distortions
from stabletrain.evaluation import distort_examples, predict_logits
from stabletrain.files import write_json
from stabletrain.stats import format_interval, paired_bootstrap, verdict
from stabletrain.training import TrainConfig, load_model, train

#: Stability settings per data set (results.md §A7: photos needs the milder σ = 0.1, α = 1).
SETTINGS = {"digits": {"sigma": 0.2, "alpha": 1.0}, "photos": {"sigma": 0.1, "alpha": 1.0}}
#: Fine-tuning epochs (results.md §A7, rounds 2 and 3).
FINETUNE_EPOCHS = 8


def correctness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: list[str]) -> dict[str, list[int]]:
    out = {"clean": (predict_logits(model, x).argmax(1) == y).int().tolist()}
    for distortion in parse_distortions(",".join(specs)):
        distorted = distort_examples(distortion, x, 0, 0, "distortion", distortion.spec)
        out[distortion.spec] = (predict_logits(model, distorted).argmax(1) == y).int().tolist()
    return out


def _trained(config: TrainConfig, folder: Path, init: Path | None = None) -> torch.nn.Module:
    if not (folder / "checkpoint.pt").exists():
        train(config, folder, init=init, progress=False, overwrite=True)
    return load_model(folder / "checkpoint.pt")[0]


def run(out: Path, datasets: list[str], norms: list[str], seeds: list[int]) -> None:
    for data_name in datasets:
        data = load_data(data_name)
        specs = [s for s in paper_sweep(data.image_size[0]) if s != "clean"]
        x, y = data.test.x, data.test.y
        for norm in norms:
            for seed in seeds:
                key = f"{data_name}-{norm}-s{seed}"
                result_file = out / key / "correct.json"
                if result_file.exists():
                    continue
                base_dir = out / key / "base"
                base = _trained(TrainConfig(data=data_name, method="plain", seed=seed, norm=norm), base_dir)
                entry = {"specs": specs, "base": correctness(base, x, y, specs)}
                for method in ("stability", "plain"):
                    options = SETTINGS[data_name] if method == "stability" else {}
                    config = TrainConfig(data=data_name, method=method, seed=seed, norm=norm,
                                         epochs=FINETUNE_EPOCHS, **options)
                    model = _trained(config, out / key / f"finetune-{method}", init=base_dir / "checkpoint.pt")
                    entry[method] = correctness(model, x, y, specs)
                    print(f"{key} {method}: clean {np.mean(entry[method]['clean']):.4f} "
                          f"(base {np.mean(entry['base']['clean']):.4f})", flush=True)
                write_json(result_file, entry)


def _strongest(specs: list[str]) -> dict[str, str]:
    by_family: dict[str, list] = {}
    for spec in specs:
        d = parse_distortion(spec)
        by_family.setdefault(d.family, []).append(d)
    return {family: max(ds, key=lambda d: float(d.param) * (1 if d.stronger_when_larger else -1)).spec
            for family, ds in by_family.items()}


def report(out: Path) -> tuple[str, list[dict]]:
    entries: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(out.glob("*-s*/correct.json")):
        data_name, norm, seed = path.parent.name.rsplit("-", 2)
        entries.setdefault((data_name, norm), {})[int(seed[1:])] = json.loads(path.read_text())
    lines = ["| data | norm | comparison | measure | difference (points), 95 % interval | verdict | seeds × images |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for (data_name, norm), by_seed in sorted(entries.items()):
        seeds = sorted(by_seed)
        specs = by_seed[seeds[0]]["specs"]
        strongest = _strongest(specs)
        unseen = [s for s in specs if parse_distortion(s).family != "gaussian"]

        def values(which: str, measure: str) -> np.ndarray:
            if measure == "clean":
                return np.array([by_seed[s][which]["clean"] for s in seeds], float)
            if measure == "unseen (mean of jpeg, thumb, crop)":
                return np.array([np.mean([by_seed[s][which][u] for u in unseen], axis=0) for s in seeds])
            return np.array([by_seed[s][which][measure] for s in seeds], float)

        measures = ["clean", "unseen (mean of jpeg, thumb, crop)", *strongest.values()]
        for a, b, name in (("stability", "base", "stability fine-tune − base"),
                           ("stability", "plain", "stability fine-tune − plain fine-tune (the control)"),
                           ("plain", "base", "plain fine-tune − base")):
            for measure in measures:
                difference, low, high = paired_bootstrap(values(a, measure), values(b, measure), seed=0)
                threshold = -0.01 if measure == "clean" else 0.0
                outcome = verdict(low, high, threshold)
                rows.append({"data": data_name, "norm": norm, "comparison": name, "measure": measure,
                             "difference": difference, "low": low, "high": high, "threshold": threshold,
                             "verdict": outcome, "seeds": len(seeds), "test_images": len(values(a, "clean")[0])})
                label = "clean (within 1 point?)" if measure == "clean" else measure
                lines.append(f"| {data_name} | {norm} | {name} | {label} | "
                             f"{format_interval(difference, low, high, signed=True)} | {outcome} | "
                             f"{len(seeds)} × {rows[-1]['test_images']} |")
        base_clean = np.mean([np.mean(by_seed[s]["base"]["clean"]) for s in seeds])
        lines.append(f"| {data_name} | {norm} | base plain model clean accuracy | | {100 * base_clean:.1f} % | | |")
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-claims"))
    parser.add_argument("--data", default="digits")
    parser.add_argument("--norms", default="batch,group")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--report", action="store_true", help="only the table of finished runs")
    parser.add_argument("--no-report", action="store_true", help="only train and score (a part run in parallel)")
    args = parser.parse_args()
    if not args.report:
        run(args.out, args.data.split(","), args.norms.split(","), [int(s) for s in args.seeds.split(",")])
    if not args.no_report:
        text, rows = report(args.out)
        write_json(args.out / "claims.json", rows)
        (args.out / "claims.md").write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
