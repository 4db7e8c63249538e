"""PGD-10 against AutoAttack on jet taggers, in the study's physical threat (issue 15): a gradient-masking check.

Every tagger is trained through the CLI with the at-scale study's settings (``jets_at_scale.RUNS``: 4 epochs,
batch 256, seed 0) on one generated sample, then attacked by ``stabletrain jets evaluate`` twice on the same seeded
test jets: ``--attack pgd`` (10 steps) and ``--attack autoattack`` (APGD-CE, 100 steps, then Square, 5,000 queries:
the components AutoAttack can run on a binary tagger), at relative pT budgets per cell (images) or per particle
(clouds), with ``--save-scores``. The report pairs the two attacks jet by jet
(:func:`stabletrain.attacks.masking_rows`: AutoAttack's Wilson interval, the paired Newcombe interval of PGD minus
AutoAttack, and the masking flag when PGD lies above AutoAttack's interval and the paired interval excludes 0).

    python experiments/jets_autoattack.py train --data jets20k.h5 --out runs/jets-aa
    python experiments/jets_autoattack.py attack --data jets20k.h5 --out runs/jets-aa --jets 500
    python experiments/jets_autoattack.py report --out runs/jets-aa        # the docs/lhc.md table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jets_at_scale import RUNS, _run, run_name, train  # noqa: E402

NAMES = ("cnn-plain", "cnn-stability", "cnn-trades", "cnn-adversarial",
         "pfn-plain", "pfn-stability", "pfn-trades", "pfn-adversarial")
BUDGETS = "0,0.05,0.2,0.5"
ATTACKS = ("pgd", "autoattack")


def attack(data: str, out: Path, jets: int, names: list[str]) -> None:
    for kind, prefix in (("images", "cnn-"), ("clouds", "pfn-")):
        runs = [str(out / "runs" / run_name(n, 0)) for n in names if n.startswith(prefix)
                and (out / "runs" / run_name(n, 0) / "checkpoint.pt").exists()]
        if not runs:
            continue
        for name in ATTACKS:
            folder = out / f"attack-{kind}-{name}"
            if (folder / "attack_scores.npz").exists():
                print(f"{folder.name}: attacked already")
                continue
            _run(["stabletrain", "jets", "evaluate", *runs, "--data", data, "--distortions", "clean", "--attack", name,
                  "--attack-budgets", BUDGETS, "--attack-jets", str(jets), "--save-scores", "--out", str(folder)],
                 out / f"{folder.name}.log")


def _robust(kept: np.lib.npyio.NpzFile, model: str, keys: list[str]) -> np.ndarray:
    """budgets × jets: right on the clean jet and not fooled at this budget or a smaller one."""
    labels = kept["labels"]
    broken = (kept[f"{model}|clean"] >= 0.5) != labels
    flags = []
    for key in keys:
        broken = broken | ((kept[f"{model}|{key}"] >= 0.5) != labels)
        flags.append(~broken)
    return np.stack(flags)


def report(out: Path) -> None:
    from stabletrain.attacks import masking_rows

    lines = []
    for kind in ("images", "clouds"):
        folders = {name: out / f"attack-{kind}-{name}" for name in ATTACKS}
        if not all((f / "attack_scores.npz").exists() for f in folders.values()):
            continue
        pgd, aa = (np.load(folders[name] / "attack_scores.npz") for name in ATTACKS)
        assert np.array_equal(pgd["rows"], aa["rows"]) and np.array_equal(pgd["labels"], aa["labels"])
        rows = json.loads((folders["autoattack"] / "attacks.json").read_text())["rows"]
        models = list(dict.fromkeys(r["model"] for r in rows))
        epsilons = sorted({r["budget_pt"] for r in rows if r["budget_pt"] > 0})
        keys = [f"pt {e:g}, angle 0" for e in epsilons]
        unit = "cell" if kind == "images" else "particle"
        lines += [f"#### {kind.capitalize()}: {len(pgd['labels'])} test jets, relative pT budget ε per {unit}", "",
                  "PGD-10 / AutoAttack robust accuracy (%), AutoAttack's 95 % Wilson interval in brackets, PGD minus "
                  "AutoAttack in points with its paired 95 % interval; **masking** where PGD lies above AutoAttack's "
                  "interval and the paired interval excludes 0.", "",
                  "| tagger | clean | " + " | ".join(f"ε = {e:g}" for e in epsilons) + " |",
                  "|---|---:|" + "---:|" * len(epsilons)]
        for model in models:
            checks = masking_rows(model, epsilons, torch.from_numpy(_robust(pgd, model, keys)),
                                  torch.from_numpy(_robust(aa, model, keys)), "autoattack")
            clean = float(((aa[f"{model}|clean"] >= 0.5) == aa["labels"]).mean())
            cells = []
            for c in checks:
                flag = " **masking**" if c["masking"] else ""
                cells.append(f"{100 * c['pgd_robust_accuracy']:.1f} / {100 * c['reference_robust_accuracy']:.1f} "
                             f"[{100 * c['reference_low']:.1f}, "
                             f"{100 * c['reference_high']:.1f}] ({100 * c['difference']:+.1f} "
                             f"[{100 * c['difference_low']:+.1f}, {100 * c['difference_high']:+.1f}]){flag}")
            lines.append(f"| {model} | {100 * clean:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    (out / "report.md").write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "attack", "report"))
    parser.add_argument("--data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jets", type=int, default=500, help="test jets attacked (seeded; default 500)")
    parser.add_argument("--names", default=",".join(NAMES))
    args = parser.parse_args()
    out = Path(args.out)
    names = [n for n in args.names.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    if args.step in ("train", "attack") and not args.data:
        parser.error(f"{args.step} needs --data")
    if args.step == "train":
        for name in names:
            train(name, args.data, out, epochs=4, batch_size=256)
    elif args.step == "attack":
        attack(args.data, out, args.jets, names)
    else:
        report(out)


if __name__ == "__main__":
    main()
