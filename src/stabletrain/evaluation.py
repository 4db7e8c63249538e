"""Evaluation of classifiers on clean and distorted inputs.

For every distortion the test images are distorted **once**, with a seed
derived from the run's seed and the distortion spec, and every model is
evaluated on the same distorted images, so differences between models are
not sampling noise of the distortion.

Per (model, distortion) it reports:

* ``accuracy`` — top-1 accuracy on the distorted images;
* ``mean_kl`` — the mean KL(P(y|x) ‖ P(y|x̃)) between the clean and the
  distorted prediction, the quantity stability training minimizes;
* ``flip_rate`` — the fraction of images whose top-1 class changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import StableTrainError
from .data import ImageDataset
from .distortions import Distortion, Identity
from .objectives import stability_kl
from .seeding import make_generator

if TYPE_CHECKING:
    from .distributed import DistContext

__all__ = ["eval_mode", "predict_logits", "accuracy", "evaluate_distortions", "results_by_model", "evaluate_suites",
           "mean_corruption_error", "SUITES", "DEFAULT_EPSILONS"]


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode within the block and restore each one's previous mode."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, returned on the CPU as float32."""
    device = _device_of(model)
    with eval_mode(model):
        outputs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outputs)


def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> data = ImageDataset(torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long))
        >>> 0.0 <= accuracy(SmallCNN(1, 2, width=4), data) <= 1.0
        True
    """
    logits = predict_logits(model, dataset.x, batch_size)
    return int((logits.argmax(1) == dataset.y.cpu()).sum()) / max(len(dataset), 1)


@torch.no_grad()
def evaluate_distortions(
    models: Mapping[str, nn.Module],
    dataset: ImageDataset,
    distortions: Sequence[Distortion],
    *,
    seed: int = 0,
    batch_size: int = 512,
    progress: bool = True,
    context: "DistContext | None" = None,
) -> list[dict]:
    """Evaluate several models on the clean test set and under each distortion.

    Returns one row per (model, distortion), the clean rows first, with
    keys ``model, distortion, family, param, accuracy, mean_kl, flip_rate, n``.

    With a distributed ``context`` (see :mod:`stabletrain.distributed`) each
    rank evaluates every ``world_size``-th distortion and the rows are
    gathered, in sweep order, on every rank. A distortion draws from its own
    seeded generator, so the rows equal those of a single process.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> from stabletrain.distortions import parse_distortions
        >>> data = ImageDataset(torch.rand(8, 1, 16, 16), torch.arange(8) % 2)
        >>> rows = evaluate_distortions({"m": SmallCNN(1, 2, width=4)}, data, parse_distortions("jpeg-50"),
        ...                             progress=False)
        >>> [r["distortion"] for r in rows]
        ['clean', 'jpeg-50']
    """
    labels = dataset.y.cpu()
    clean_logits = {name: predict_logits(model, dataset.x, batch_size) for name, model in models.items()}
    rows = []
    for name, logits in clean_logits.items():
        rows.append({"model": name, "distortion": "clean", "family": "clean", "param": None,
                     "accuracy": int((logits.argmax(1) == labels).sum()) / len(labels),
                     "mean_kl": 0.0, "flip_rate": 0.0, "n": len(labels)})
    sweep = [d for d in distortions if not isinstance(d, Identity)]
    device = _device_of(next(iter(models.values()))) if models else torch.device("cpu")
    ranked = context is not None and context.is_distributed
    if ranked:
        sweep = sweep[context.rank::context.world_size]
    bar = tqdm(sweep, desc="distortions", unit="spec", disable=not progress or (ranked and not context.is_main) or None,
               leave=False)
    for distortion in bar:
        bar.set_postfix_str(distortion.spec)
        generator = make_generator(seed, "distortion", distortion.spec)
        sums = {name: {"correct": 0.0, "kl": 0.0, "flips": 0.0} for name in models}
        for start in range(0, len(dataset), batch_size):
            # distort where the (first) model lives, so a GPU model gets GPU corruptions; draws come from a CPU
            # generator, so the distorted images are the same on every device
            distorted = distortion(dataset.x[start:start + batch_size].to(device), generator)
            y = labels[start:start + batch_size]
            for name, model in models.items():
                logits = predict_logits(model, distorted, batch_size)
                clean = clean_logits[name][start:start + batch_size]
                sums[name]["correct"] += float((logits.argmax(1) == y).sum())
                sums[name]["kl"] += float(stability_kl(clean, logits, reduction="sum"))
                sums[name]["flips"] += float((logits.argmax(1) != clean.argmax(1)).sum())
        n = len(dataset)
        for name in models:
            rows.append({"model": name, "distortion": distortion.spec, "family": distortion.family,
                         "param": distortion.param, "accuracy": sums[name]["correct"] / n,
                         "mean_kl": sums[name]["kl"] / n, "flip_rate": sums[name]["flips"] / n, "n": n})
    if ranked:
        from .distributed import all_gather

        clean_count = len(models)
        shards = [shard[clean_count:] for shard in all_gather(rows, context)]
        rows = rows[:clean_count]
        # rank r computed distortions r, r + W, …: interleave the shards back into sweep order
        for position in range(max(len(shard) for shard in shards) // max(clean_count, 1)):
            for shard in shards:
                rows += shard[position * clean_count:(position + 1) * clean_count]
    return rows


def results_by_model(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Nest evaluation rows as ``{model: {'clean_accuracy': …, 'distortions': {spec: {...}}}}``."""
    nested: dict[str, dict] = {}
    for row in rows:
        entry = nested.setdefault(row["model"], {"clean_accuracy": None, "distortions": {}})
        if row["distortion"] == "clean":
            entry["clean_accuracy"] = row["accuracy"]
        else:
            entry["distortions"][row["distortion"]] = {k: row[k] for k in ("family", "param", "accuracy",
                                                                            "mean_kl", "flip_rate", "n")}
    return nested


SUITES = ("paper", "common", "adversarial", "all")
DEFAULT_EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)


def mean_corruption_error(rows: Sequence[Mapping], model: str, corruptions: Sequence[str],
                          baseline: str | None = None) -> dict[str, float | None]:
    """Mean corruption error of ``model`` over ``corruptions`` (all severities in the rows).

    * ``mean_error``: the unnormalized mean of the error over corruptions and
      severities (what CIFAR-10-C papers usually report).
    * ``mce``: Hendrycks and Dietterich's ``mean_c Σ_s E(s,c) / Σ_s E_base(s,c)``,
      relative to ``baseline`` (ImageNet-C uses AlexNet); 1.0 = as robust
      as the baseline.
    * ``relative_mce``: the same with the clean error subtracted from each
      term, i.e. how much accuracy the corruptions cost relative to how
      much they cost the baseline.

    Example:
        >>> rows = [{"model": m, "family": f, "distortion": f"{f}-1", "accuracy": a}
        ...         for m, a in (("a", 0.8), ("b", 0.6)) for f in ("fog",)]
        >>> rows += [{"model": m, "family": "clean", "distortion": "clean", "accuracy": 0.9} for m in "ab"]
        >>> round(mean_corruption_error(rows, "a", ["fog"], baseline="b")["mce"], 6)
        0.5
    """
    def errors(name: str) -> tuple[dict[str, float], float]:
        per: dict[str, float] = {}
        clean = next((1 - r["accuracy"] for r in rows if r["model"] == name and r["distortion"] == "clean"), None)
        for r in rows:
            if r["model"] == name and r["family"] in corruptions:
                per[r["family"]] = per.get(r["family"], 0.0) + (1 - r["accuracy"])
        return per, clean

    def counts(name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            if r["model"] == name and r["family"] in corruptions:
                out[r["family"]] = out.get(r["family"], 0) + 1
        return out

    own, own_clean = errors(model)
    if not own:
        return {"mean_error": None, "mce": None, "relative_mce": None}
    n = counts(model)
    result: dict[str, float | None] = {
        "mean_error": sum(own.values()) / sum(n.values()), "mce": None, "relative_mce": None}
    if baseline is not None:
        base, base_clean = errors(baseline)
        ratios = [own[c] / base[c] for c in own if base.get(c, 0) > 0]
        result["mce"] = sum(ratios) / len(ratios) if ratios else None
        if own_clean is not None and base_clean is not None:
            rel = [(own[c] - n[c] * own_clean) / (base[c] - n[c] * base_clean) for c in own
                   if base.get(c, 0) - n[c] * base_clean > 0]
            result["relative_mce"] = sum(rel) / len(rel) if rel else None
    return result


def evaluate_suites(models: Mapping[str, nn.Module], dataset: ImageDataset, suites: Sequence[str], *,
                    paper_distortions: Sequence[Distortion] | None = None, corruption_set: str = "cifar10",
                    severities: Sequence[int] = (1, 2, 3, 4, 5), epsilons: Sequence[float] = DEFAULT_EPSILONS,
                    attack: str = "pgd", attack_steps: int = 10, attack_examples: int | None = None,
                    baseline: str | None = None, seed: int = 0, batch_size: int = 512,
                    progress: bool = True, context: "DistContext | None" = None) -> dict:
    """Run the ``paper``, ``common`` (corruptions) and ``adversarial`` suites on several models.

    Returns ``{'rows': [...], 'models': {name: summary}}``. Rows have the
    columns of :func:`evaluate_distortions`; corruption rows have the
    corruption as family and the severity as param; attack rows have family
    = the attack, param = epsilon and ``accuracy`` = robust accuracy.

    A distributed ``context`` shards the distortion and corruption sweep over
    the ranks (see :func:`evaluate_distortions`); rank 0 runs the attacks and
    shares their rows, so every rank returns the whole result.
    """
    from .distortions import paper_sweep, parse_distortions

    chosen = set(SUITES[:3]) if "all" in suites else set(suites)
    unknown = chosen - set(SUITES)
    if unknown:
        raise StableTrainError(f"unknown suite(s) {', '.join(sorted(unknown))}; known: {', '.join(SUITES)}")
    distortions: list[Distortion] = []
    if "paper" in chosen:
        distortions += list(paper_distortions or parse_distortions(paper_sweep(int(dataset.x.shape[-1]))))
    common: list[str] = []
    held_out: list[str] = []
    if "common" in chosen:
        from .corruptions import CORRUPTIONS, HELD_OUT, corruption_suite

        common, held_out = list(CORRUPTIONS), list(HELD_OUT)
        distortions += corruption_suite(corruption_set, names=common + held_out, severities=tuple(severities))
    rows = evaluate_distortions(models, dataset, distortions, seed=seed, batch_size=batch_size, progress=progress,
                                context=context)
    for row in rows:
        if row["family"].startswith("c10/"):
            row["family"] = row["family"][4:]
    attack_main = context is None or context.is_main
    if "adversarial" in chosen and attack_main:
        from .attacks import robustness_curve
        from .seeding import make_generator

        count = len(dataset) if attack_examples is None else min(attack_examples, len(dataset))
        bar = tqdm(list(models.items()), desc=f"{attack} attack", unit="model", disable=not progress or None,
                   leave=False)
        for name, model in bar:
            curve = robustness_curve(model, dataset.x[:count], dataset.y[:count], list(epsilons), attack=attack,
                                     batch_size=batch_size, generator=make_generator(seed, "attack", name),
                                     **({} if attack == "fgsm" else {"steps": attack_steps}))
            for point in curve:
                rows.append({"model": name, "distortion": f"{attack}-{point['epsilon']:.4g}", "family": attack,
                             "param": point["epsilon"], "accuracy": point["robust_accuracy"], "mean_kl": None,
                             "flip_rate": point["success_rate"], "n": point["n"]})
    if "adversarial" in chosen and context is not None and context.is_distributed:
        from .distributed import broadcast_object

        # the attack curve's random starts come from one generator per model, so it is not split
        rows = broadcast_object(rows, context)
    summaries: dict[str, dict] = {}
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        summary: dict = {"clean_accuracy": next(r["accuracy"] for r in mine if r["distortion"] == "clean")}
        if "paper" in chosen:
            paper_specs = {d.spec for d in distortions if not d.family.startswith("c10/")}
            summary["paper"] = {r["distortion"]: r["accuracy"] for r in mine if r["distortion"] in paper_specs}
        if common:
            per: dict[str, dict[str, float]] = {}
            for r in mine:
                if r["family"] in common + held_out:
                    per.setdefault(r["family"], {})[str(r["param"])] = r["accuracy"]
            summary["corruptions"] = per
            summary["corruption_set"] = corruption_set
            summary["common"] = mean_corruption_error(rows, name, common, baseline if baseline != name else None)
            summary["held_out"] = mean_corruption_error(rows, name, held_out, baseline if baseline != name else None)
            if baseline is not None:
                summary["baseline"] = baseline
        if "adversarial" in chosen:
            summary["robust_accuracy"] = {f"{r['param']:.6g}": r["accuracy"] for r in mine if r["family"] == attack}
            summary["attack"] = {"name": attack, "steps": attack_steps, "examples": attack_examples or len(dataset)}
        summaries[name] = summary
    return {"rows": rows, "models": summaries}
