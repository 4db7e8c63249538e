"""Does PGD overstate robustness? Every method's PGD robust accuracy against AutoAttack's (issue 15, part 2).

For each method and seed, a digits model trains with the library's defaults (``TrainConfig(data='digits',
method=…)``, the converged epochs of ``stabletrain.training.config.CONVERGED_EPOCHS``), and
:func:`stabletrain.attacks.gradient_masking` attacks the same test images with L∞ PGD-10 (2.5ε/10 steps, a random
start) and with the reference attack (default ``autoattack``: APGD-CE, APGD-T and Square in turn, 100 steps and
5,000 queries), each example from its own seeded stream. A row is flagged as masking when PGD's robust accuracy
lies above the reference's 95 % Wilson interval and the paired (Newcombe) interval of the difference lies above 0.

    python experiments/gradient_masking_check.py --out runs/masking --seeds 0,1
    python experiments/gradient_masking_check.py --out runs/masking --report      # the table only

``--compare-config configs/compare-digits.yaml`` trains each (method, seed) with the comparison's settings instead
(``CompareConfig.train_config``: its epochs, σ, α and adversarial budget) and attacks at the comparison's budgets
and on its ``attack_examples``, so the check stands beside the PGD columns of the compare table in docs/results.md.

Models and per-seed results are cached in ``--out``; a rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from stabletrain.attacks import gradient_masking
from stabletrain.compare import load_compare_config
from stabletrain.data import load_data
from stabletrain.files import write_json
from stabletrain.stats import wilson_interval
from stabletrain.training import TrainConfig, load_model, train

METHODS = ("plain", "gaussian", "gaussian-noisy", "stability", "trades", "adversarial")
EPSILONS = (2 / 255, 4 / 255, 8 / 255)


def run(out: Path, methods: list[str], seeds: list[int], norm: str, reference: str, examples: int | None,
        compare: Path | None = None) -> None:
    config = load_compare_config(compare, {"norms": [norm]}) if compare is not None else None
    epsilons = list(EPSILONS)
    if config is not None:
        epsilons = [e for e in config.evaluation["epsilons"] if e > 0]
        examples = examples or int(config.evaluation["attack_examples"])
    data = load_data(config.data if config is not None else "digits")
    x, y = data.test.x, data.test.y
    if examples:
        x, y = x[:examples], y[:examples]
    for seed in seeds:
        for method in methods:
            result = out / f"{method}-{norm}-s{seed}" / f"masking-{reference}.json"
            if result.exists():
                continue
            folder = result.parent / "model"
            if not (folder / "checkpoint.pt").exists():
                train_config = config.train_config(method, seed, norm) if config is not None else \
                    TrainConfig(data="digits", method=method, seed=seed, norm=norm)
                train(train_config, folder, progress=False, overwrite=True)
            model = load_model(folder / "checkpoint.pt")[0]
            check = gradient_masking({method: model}, x, y, [0.0, *epsilons], reference=reference, seed=seed)
            write_json(result, {"method": method, "seed": seed, "norm": norm, "reference": reference, **check})
            for row in check["rows"]:
                print(f"{method} s{seed} ε={row['epsilon'] * 255:.0f}/255: PGD {100 * row['pgd_robust_accuracy']:.1f} %"
                      f", {reference} {100 * row['reference_robust_accuracy']:.1f} %"
                      f"{'  MASKING' if row['masking'] else ''}", flush=True)


def report(out: Path, reference: str) -> str:
    rows = [r for path in sorted(out.glob(f"*/masking-{reference}.json"))
            for r in (lambda saved: [{**r, "seed": saved["seed"], "norm": saved["norm"]} for r in saved["rows"]])(
                json.loads(path.read_text()))]
    lines = [f"| method | norm | ε | seeds × images | PGD-10 robust accuracy (%) | {reference} robust accuracy (%), "
             "95 % interval | PGD − reference (points), paired 95 % interval, per seed | flagged |",
             "|---|---|---|---|---:|---:|---|---|"]
    keys = list(dict.fromkeys((r["model"], r["norm"], r["epsilon"]) for r in rows))
    for method, norm, eps in keys:
        group = [r for r in rows if (r["model"], r["norm"], r["epsilon"]) == (method, norm, eps)]
        n = sum(r["n"] for r in group)
        pgd = sum(r["pgd_robust_accuracy"] * r["n"] for r in group) / n
        ref_k = round(sum(r["reference_robust_accuracy"] * r["n"] for r in group))
        low, high = wilson_interval(ref_k, n)
        per_seed = "; ".join(f"{100 * r['difference']:+.1f} [{100 * r['difference_low']:+.1f}, "
                             f"{100 * r['difference_high']:+.1f}]" for r in group)
        flagged = sum(r["masking"] for r in group)
        lines.append(f"| {method} | {norm} | {eps * 255:.0f}/255 | {len(group)} × {group[0]['n']} | {100 * pgd:.1f} | "
                     f"{100 * ref_k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}] | {per_seed} | "
                     f"{f'{flagged} of {len(group)} seeds' if flagged else 'no'} |")
    text = "\n".join(lines)
    (out / f"masking-{reference}.md").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--norm", default="batch", choices=("batch", "group"))
    parser.add_argument("--reference", default="autoattack")
    parser.add_argument("--examples", type=int, default=None, help="the first N test digits (default: all 359)")
    parser.add_argument("--compare-config", type=Path, default=None,
                        help="train with this comparison's settings and attack at its budgets (default: the library's "
                             "defaults, ε = 2, 4 and 8/255)")
    parser.add_argument("--report", action="store_true", help="only print the table of what has run")
    args = parser.parse_args()
    if not args.report:
        run(args.out, args.methods.split(","), [int(s) for s in args.seeds.split(",")], args.norm, args.reference,
            args.examples, args.compare_config)
    print(report(args.out, args.reference))


if __name__ == "__main__":
    main()
