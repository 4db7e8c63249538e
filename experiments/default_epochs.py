"""Choose the default epochs of each built-in data set so that plain training converges (issue 13, item 3).

For each data set (digits, photos), normalization (batch, group) and epoch budget, ``plain`` trains with the CLI
defaults otherwise (SmallCNN width 32, AdamW 3e-3, batch 64, cosine schedule over the whole budget) for several
seeds. Each budget is its own run, so the schedule anneals to zero at its end; a budget "converges" when a longer
one does not improve the final clean test accuracy beyond noise. Reported per cell: the final test accuracy (mean
over seeds, with its 95 % Wilson interval pooled over seeds' test images and the per-seed values), the final train
accuracy, and the change of test accuracy over the last 3 epochs.

    python experiments/default_epochs.py --out runs/default-epochs          # ~30 min on 2 cores
    python experiments/default_epochs.py --out runs/default-epochs --report # the table from results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stabletrain.data import load_data
from stabletrain.files import write_json
from stabletrain.stats import mean_interval, wilson_interval
from stabletrain.training import TrainConfig, load_checkpoint, train


def run(out: Path, datasets: list[str], norms: list[str], budgets: list[int], seeds: list[int]) -> dict:
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for data_name in datasets:
        data = load_data(data_name)
        for norm in norms:
            for epochs in budgets:
                for seed in seeds:
                    key = f"{data_name}/{norm}/{epochs}/{seed}"
                    if key in results:
                        continue
                    run_dir = out / "models" / key.replace("/", "-")
                    config = TrainConfig(data=data_name, method="plain", epochs=epochs, seed=seed, norm=norm)
                    checkpoint = run_dir / "checkpoint.pt"
                    if checkpoint.exists() and load_checkpoint(checkpoint).get("complete"):
                        history = load_checkpoint(checkpoint)["history"]
                    else:
                        history = train(config, run_dir, resume=True, progress=False, data=data).history
                    last = history[-1]
                    tail = [h["test_accuracy"] for h in history[-3:]]
                    results[key] = {"data": data_name, "norm": norm, "epochs": epochs, "seed": seed,
                                    "test_accuracy": last["test_accuracy"], "train_accuracy": last["train_accuracy"],
                                    "test_change_last_3": tail[-1] - tail[0], "test_images": len(data.test),
                                    "seconds": last["seconds"]}
                    write_json(results_path, results)
                    print(f"{key}: test {100 * last['test_accuracy']:.1f} train {100 * last['train_accuracy']:.1f}",
                          flush=True)
    return results


def report(results: dict) -> str:
    lines = ["| data | norm | epochs | final test accuracy (%), mean [95 % Wilson, pooled] | per seed | "
             "final train accuracy (%) | test change, last 3 epochs (points) | s per run |",
             "|---|---|---:|---|---|---:|---:|---:|"]
    cells: dict[tuple, list[dict]] = {}
    for r in results.values():
        cells.setdefault((r["data"], r["norm"], r["epochs"]), []).append(r)
    for (data, norm, epochs), runs in sorted(cells.items()):
        runs.sort(key=lambda r: r["seed"])
        n = runs[0]["test_images"]
        correct = sum(round(r["test_accuracy"] * n) for r in runs)
        low, high = wilson_interval(correct, n * len(runs))
        test = mean_interval([r["test_accuracy"] for r in runs])
        per_seed = " / ".join(f"{100 * r['test_accuracy']:.1f}" for r in runs)
        lines.append(f"| {data} | {norm} | {epochs} | {100 * test.mean:.1f} [{100 * low:.1f}, {100 * high:.1f}] | "
                     f"{per_seed} | "
                     f"{100 * mean_interval([r['train_accuracy'] for r in runs]).mean:.1f} | "
                     f"{100 * mean_interval([r['test_change_last_3'] for r in runs]).mean:+.1f} | "
                     f"{mean_interval([r['seconds'] for r in runs]).mean:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/default-epochs"))
    parser.add_argument("--data", default="digits,photos")
    parser.add_argument("--norms", default="batch,group")
    parser.add_argument("--epochs", default="12,20,30")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="only print the table of results.json")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads((args.out / "results.json").read_text())))
        return
    results = run(args.out, args.data.split(","), args.norms.split(","), [int(e) for e in args.epochs.split(",")],
                  list(range(args.seeds)))
    print(report(results))


if __name__ == "__main__":
    main()
