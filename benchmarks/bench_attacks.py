"""PGD-10 throughput: stabletrain against torchattacks, same model, batch and settings, side by side.

torchattacks is a benchmark-only dependency; it imports without torchvision, so
install it without its dependency pins next to stabletrain:

    pip install --no-deps torchattacks==3.5.1
    python benchmarks/bench_attacks.py --write-docs

A plain SmallCNN is trained for a few epochs on digits (seeded), then both
libraries run L∞ PGD with 10 steps, ε = 0.05, step 2.5ε/10 and a random start on
the same test batches. Reported: images per second (median of repeats) and
robust accuracy.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from _docs import replace_block
from stabletrain.attacks import pgd
from stabletrain.files import write_json
from stabletrain.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- attacks:start -->", "<!-- attacks:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    import torchattacks

    run = train(TrainConfig(data="digits", method="plain", epochs=6, seed=0), ROOT / "runs" / "bench-attacks-model",
                overwrite=True, progress=False)
    model = run.model.eval()
    x, y = run.data.test.x[: args.batch], run.data.test.y[: args.batch]
    steps, alpha = 10, 2.5 * args.epsilon / 10
    reference = torchattacks.PGD(model, eps=args.epsilon, alpha=alpha, steps=steps, random_start=True)

    # Both are timed end to end: the attack and the predictions on its output, which is what a robust-accuracy
    # evaluation needs (stabletrain returns them; torchattacks needs one more forward pass).
    def ours() -> torch.Tensor:
        return pgd(model, x, y, args.epsilon, steps=steps, step_size=alpha,
                   generator=torch.Generator().manual_seed(0)).predictions

    def theirs() -> torch.Tensor:
        torch.manual_seed(0)
        adversarial = reference(x, y)
        with torch.no_grad():
            return model(adversarial).argmax(1)

    attacks = {"stabletrain": ours, "torchattacks": theirs}
    for attack in attacks.values():
        attack()  # warm-up
    # Alternate the two libraries so that load from other processes hits both alike; report the fastest run.
    times: dict[str, list[float]] = {name: [] for name in attacks}
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, attack in attacks.items():
            start = time.perf_counter()
            predictions = attack()
            times[name].append(time.perf_counter() - start)
            accuracy[name] = float((predictions == y).float().mean())
    results = {}
    for name in attacks:
        best = min(times[name])
        results[name] = {"images_per_second": len(x) / best, "seconds": best,
                         "seconds_median": statistics.median(times[name]), "robust_accuracy": accuracy[name]}
        print(f"{name:13s} {len(x) / best:8.0f} images/s  robust accuracy {100 * accuracy[name]:.1f}%", flush=True)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    meta = {"torch": str(torch.__version__), "torchattacks": torchattacks.__version__, "batch": len(x),
            "threads": torch.get_num_threads(), "machine": platform.machine(), "clean_accuracy": clean,
            "epsilon": args.epsilon, "steps": steps, "step_size": alpha}
    write_json(ROOT / "benchmarks" / "results" / "attacks.json", {"meta": meta, "results": results})
    if args.write_docs:
        ours_r, theirs_r = results["stabletrain"], results["torchattacks"]
        lines = [START, "",
                 f"L∞ PGD-10 (ε = {args.epsilon}, step {alpha:.4f}, random start) on {len(x)} digits test images, "
                 f"SmallCNN (width 32, clean accuracy {100 * clean:.1f}%), CPU, {torch.get_num_threads()} threads, "
                 f"torch {meta['torch']}, torchattacks {meta['torchattacks']}; fastest of {args.repeats} alternating runs, "
                 f"each timed end to end (attack plus the predictions on its output).", "",
                 "| library | images / s | robust accuracy (%) |", "|---|---:|---:|",
                 f"| stabletrain | {ours_r['images_per_second']:.0f} | {100 * ours_r['robust_accuracy']:.1f} |",
                 f"| torchattacks | {theirs_r['images_per_second']:.0f} | {100 * theirs_r['robust_accuracy']:.1f} |",
                 "", f"Speed ratio stabletrain / torchattacks: "
                     f"{ours_r['images_per_second'] / theirs_r['images_per_second']:.2f}×. stabletrain also keeps, "
                     f"for each image, the first iterate that fools the model, so its robust accuracy can only be "
                     f"lower or equal for the same random start.", "", END]
        replace_block(START, END, lines, "Adversarial attacks")


if __name__ == "__main__":
    main()
