"""Re-measure the seed's similarity claims C4-C6 over seeds, with paired intervals (issue 13, item 6).

For each seed, ``stabletrain demo --task similarity`` trains the embedders (plain, gaussian, gaussian-noisy,
stability by default) on the photos tiles and evaluates them on its near-duplicate benchmark. The embedders are
then evaluated again here, keeping each tile's, pair's and triplet's result, and every claim is decided by the
two-level paired bootstrap of :func:`stabletrain.similarity.similarity_differences` (seeds drawn with
replacement, then each seed's tiles, non-duplicate pairs and triplets; the same draw for both models).

    python experiments/similarity_claims.py --out runs/similarity-claims --seeds 5        # ~1 h on 2 cores

Seeds can train in parallel processes (``--seed-list 0,1,2`` in one, ``--seed-list 3,4`` in another, each with
``OMP_NUM_THREADS=1``); the run over all seeds afterwards reuses their models.

The embedders use the demo's model, with BatchNorm unless ``--norm group`` (give each normalization its own
``--out``).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from stabletrain.demo import DemoConfig, run_demo
from stabletrain.distortions import parse_distortions
from stabletrain.files import atomic_write_bytes, write_json
from stabletrain.similarity import build_benchmark, evaluate_similarity, similarity_differences, similarity_sweep
from stabletrain.stats import format_interval, verdict
from stabletrain.tasks import get_task
from stabletrain.training import load_checkpoint, load_model

CLAIMS = {"distance_ratio": "lowers the ratio of median near-duplicate to non-duplicate distance",
          "triplets": "has a higher clean triplet ranking score"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/similarity-claims"))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--seed-list", default=None, help="these seeds instead, e.g. 3,4")
    parser.add_argument("--methods", default="plain,gaussian,gaussian-noisy,stability")
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--norm", default=None, choices=["batch", "group"], help="the embedders' normalization")
    parser.add_argument("--epochs", type=int, default=None, help="the demo's budget (default: its own, 8)")
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    results = []
    for seed in seeds:
        out = args.out / f"s{seed}"
        cache = out / f"evaluation-{'-'.join(methods)}.pickle"  # this script's own output, written atomically
        if cache.exists():
            results.append(pickle.loads(cache.read_bytes()))
            continue
        config = DemoConfig(task="similarity", methods=methods, seed=seed, norm=args.norm, epochs=args.epochs)
        checkpoints = [out / "models" / m / "checkpoint.pt" for m in methods]
        if not all(c.exists() and load_checkpoint(c).get("complete") for c in checkpoints):
            run_demo(config, out, progress=False, log=lambda line: print(line, flush=True))
        resolved = config.resolved()
        data = get_task("similarity").load_data(resolved.train_config(methods[0]))
        bench = build_benchmark(data, parse_distortions(similarity_sweep(data.image_size[0])), seed=seed)
        models = {m: load_model(out / "models" / m)[0] for m in methods}
        results.append(evaluate_similarity(models, bench, progress=False))
        atomic_write_bytes(cache, pickle.dumps(results[-1]))
    lines = ["| claim | difference, 95 % interval | verdict |", "|---|---|---|"]
    rows = []
    pairs = [(m, "plain") for m in methods if m != "plain"]
    if "stability" in methods and "gaussian" in methods:  # against the fair augmentation baseline too
        pairs.append(("stability", "gaussian"))
    for candidate, reference in pairs:
        differences = similarity_differences(results, candidate, reference, replicates=args.replicates)
        for key, d in differences.items():
            text = CLAIMS.get(key, f"has higher near-duplicate average precision on {key[3:]}")
            outcome = verdict(d["low"], d["high"])
            rows.append({"claim": f"{candidate} {text} (against {reference})", "key": key, "candidate": candidate,
                         "reference": reference, **d, "verdict": outcome})
            lines.append(f"| {candidate} {text} (against {reference}) | "
                         f"{format_interval(d['difference'], d['low'], d['high'], percent=False, digits=3, signed=True)}"
                         f" | {outcome} |")
    write_json(args.out / "claims.json", rows)
    (args.out / "claims.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"seeds": seeds, "tiles": rows[0]["tiles"] if rows else None}))


if __name__ == "__main__":
    main()
