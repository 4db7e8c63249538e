"""How much of a BatchNorm model's distortion accuracy is its running statistics (issue 13, item 4)?

Takes the BatchNorm models of a claims run (``experiments/claims.py``), re-estimates their BatchNorm statistics on
the clean training images (:func:`stabletrain.evaluation.bn_adapt.reestimate_batchnorm`, the "BN adaptation"
remedy), and scores both versions of each model on the same test images, clean and under the strongest setting of
each paper family. The difference (re-estimated − as trained) gets the two-level paired bootstrap interval of
:func:`stabletrain.stats.paired_bootstrap` (seeds and test images resampled).

    python experiments/bn_adapt_claims.py --run runs/claims-digits --data digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from stabletrain.data import load_data
from stabletrain.distortions import parse_distortions
from stabletrain.evaluation import distort_examples, predict_logits
from stabletrain.evaluation.bn_adapt import reestimate_batchnorm
from stabletrain.files import write_json
from stabletrain.stats import format_interval, paired_bootstrap, verdict
from stabletrain.training import load_model

SPECS = {"digits": ["jpeg-10", "thumb-8", "crop-20", "gaussian-0.3"],
         "photos": ["jpeg-10", "thumb-8", "crop-20", "gaussian-0.3"]}


def correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: list[str], seed: int) -> dict:
    out = {"clean": (predict_logits(model, x).argmax(1) == y).numpy()}
    for d in parse_distortions(",".join(specs)):
        out[d.spec] = (predict_logits(model, distort_examples(d, x, 0, seed, "distortion", d.spec)).argmax(1)
                       == y).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--methods", default="plain,gaussian,stability")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    data = load_data(args.data)
    specs = SPECS[args.data]
    x, y = data.test.x, data.test.y
    lines = ["| model | measure | accuracy as trained (%) | re-estimated − as trained (points), 95 % interval | "
             "verdict |", "|---|---|---:|---|---|"]
    rows = []
    for method in args.methods.split(","):
        before, after = {}, {}
        for seed in (int(s) for s in args.seeds.split(",")):
            model, _ = load_model(args.run / "models" / f"{method}-batch-s{seed}" / "checkpoint.pt")
            before[seed] = correct(model, x, y, specs, seed)
            adapted = reestimate_batchnorm(model, data.train)
            after[seed] = correct(adapted, x, y, specs, seed)
        for measure in ["clean", *specs]:
            a = np.stack([after[s][measure] for s in sorted(after)]).astype(float)
            b = np.stack([before[s][measure] for s in sorted(before)]).astype(float)
            difference, low, high = paired_bootstrap(a, b, seed=0)
            outcome = verdict(low, high)
            outcome = {"held": "re-estimation helps", "did not hold": "re-estimation hurts"}.get(outcome, outcome)
            rows.append({"method": method, "measure": measure, "before": float(b.mean()), "difference": difference,
                         "low": low, "high": high, "verdict": outcome, "seeds": len(before)})
            lines.append(f"| {method} (batch) | {measure} | {100 * b.mean():.1f} | "
                         f"{format_interval(difference, low, high, signed=True)} | {outcome} |")
    write_json(args.run / "bn-adapt.json", rows)
    (args.run / "bn-adapt.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
