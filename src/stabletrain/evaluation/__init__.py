"""Evaluation of classifiers on clean and distorted inputs.

For every distortion the test images are distorted **once**, each image
from its own random stream seeded by the run's seed, the distortion spec
and the image's index in the test set, and every model is evaluated on the
same distorted images, so differences between models are not sampling noise
of the distortion, and the distorted test set is the same for every batch
size, worker count and number of ranks.

Per (model, distortion) it reports:

* ``accuracy`` — top-1 accuracy on the distorted images;
* ``mean_kl`` — the mean KL(P(y|x) ‖ P(y|x̃)) between the clean and the
  distorted prediction, the quantity stability training minimizes;
* ``flip_rate`` — the fraction of images whose top-1 class changes.

Attack rows of :func:`evaluate_suites` have columns of their own (see
:func:`attack_row`) and leave these three empty.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import StableTrainError
from ..devices import device_of as _device_of, eval_mode
from ..data import ImageDataset
from ..distortions import Distortion, Identity
from ..objectives import stability_kl
from ..seeding import ExampleRNG
from ..progress import progress_bar

if TYPE_CHECKING:
    from ..distributed import DistContext

__all__ = ["evaluate", "eval_mode", "predict_logits", "accuracy", "distort_examples", "evaluate_distortions", "results_by_model",
           "evaluate_suites", "mean_corruption_error", "degenerate_warnings", "attack_row", "is_attack_row",
           "SUITES", "DEFAULT_EPSILONS", "ATTACK_COLUMNS", "SMOOTHING_DEFAULTS", "is_smoothing_row",
           "alexnet_mce", "corruption_errors", "relative_to_baseline", "ALEXNET_ERRORS", "model_info",
           "model_info_path", "write_model_info", "smoothing_rows", "prediction_warnings", "distortion_results",
           "paired_comparisons", "SweepResult"]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, returned on the CPU as float32."""
    device = _device_of(model)
    with eval_mode(model):
        outputs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outputs)


def accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512, workers: int = 0) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (an :class:`ImageDataset`, a ``Dataset`` or a ``DataLoader``).

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> data = ImageDataset(torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long))
        >>> 0.0 <= accuracy(SmallCNN(1, 2, width=4), data) <= 1.0
        True
    """
    from .batches import example_batches, is_in_memory

    if is_in_memory(dataset):
        logits = predict_logits(model, dataset.x, batch_size)
        return int((logits.argmax(1) == dataset.y.cpu()).sum()) / max(len(dataset), 1)
    correct = seen = 0
    for x, y, _ in example_batches(dataset, batch_size=batch_size, device=_device_of(model), workers=workers):
        correct += int((predict_logits(model, x, batch_size).argmax(1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


def distort_examples(distortion: Distortion, x: torch.Tensor, start: int | Sequence[int] | torch.Tensor,
                     *parts: int | str) -> torch.Tensor:
    """``distortion`` applied to examples ``start … start + len(x)`` of a data set (or to the examples whose ids
    ``start`` lists), each from its own random stream.

    Example ``i`` draws from ``ExampleRNG.for_examples([i], *parts)`` (see
    :mod:`stabletrain.seeding`), so its distorted copy depends only on
    ``(parts, i)``: not on the batch it is in, the batch size, the number of
    data-loader workers or of ranks. A distortion whose draws do not take
    per-example streams yet (it raises ``TypeError`` on an
    :class:`~stabletrain.seeding.ExampleRNG`) is applied image by image, each
    with its own stream's generator: slower, with the same invariance.

    Example:
        >>> from stabletrain.distortions import parse_distortion
        >>> x = torch.rand(6, 1, 8, 8)
        >>> whole = distort_examples(parse_distortion("crop-20"), x, 0, 0, "distortion", "crop-20")
        >>> part = distort_examples(parse_distortion("crop-20"), x[4:], 4, 0, "distortion", "crop-20")
        >>> same = distort_examples(parse_distortion("crop-20"), x[[5, 4]], [5, 4], 0, "distortion", "crop-20")
        >>> torch.equal(whole[4:], part), torch.equal(whole[[5, 4]], same)
        (True, True)
    """
    ids = range(start, start + len(x)) if isinstance(start, int) else [int(i) for i in start]
    if len(ids) != len(x):
        raise StableTrainError(f"{len(x)} examples but {len(ids)} ids")
    try:
        return distortion(x, ExampleRNG.for_examples(ids, *parts))
    except (TypeError, AttributeError):
        if len(x) == 0:
            raise
    # fresh streams: the failed attempt may have advanced some of them
    streams = ExampleRNG.for_examples(ids, *parts).generators
    return torch.cat([distortion(x[i:i + 1], g) for i, g in enumerate(streams)])


class _Records:
    """Per-example results of one (model, distortion), reduced in id order (independent of batching and ranks)."""

    def __init__(self) -> None:
        self.ids: list[torch.Tensor] = []
        self.values: dict[str, list[torch.Tensor]] = {}

    def add(self, ids: torch.Tensor, **values: torch.Tensor) -> None:
        self.ids.append(ids.cpu())
        for key, value in values.items():
            self.values.setdefault(key, []).append(value.cpu())

    def merged(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids = torch.cat(self.ids) if self.ids else torch.zeros(0, dtype=torch.long)
        order = torch.argsort(ids)
        ids = ids[order]
        if len(ids) > 1 and bool((ids[1:] == ids[:-1]).any()):
            raise StableTrainError("two evaluation examples share an id; each example needs its own")
        return ids, {k: torch.cat(v)[order] for k, v in self.values.items()}


@torch.no_grad()
def _sweep(models: Mapping[str, nn.Module], dataset: object, distortions: Sequence[Distortion], *, seed: int,
           batch_size: int, progress: bool, context: "DistContext | None",
           workers: int = 0) -> tuple[list[dict], dict[str, dict], dict[str, dict[str, np.ndarray]]]:
    """:func:`evaluate_distortions`' rows, each model's clean predictions and labels (for the warnings), and
    the per-example correctness ``{model: {spec: bool array in id order}}`` (for paired comparisons).

    One pass over the data: every batch is decoded once and run through every
    distortion and model. Per-example results are kept with the examples'
    ids and summed in id order at the end, so the rows do not depend on the
    batch size, the workers, the ranks, or a stream's order.
    """
    from .batches import example_batches, example_count

    sweep = [d for d in distortions if not isinstance(d, Identity)]
    device = _device_of(next(iter(models.values()))) if models else torch.device("cpu")
    ranked = context is not None and context.is_distributed
    rank, world = (context.rank, context.world_size) if ranked else (0, 1)
    records = {name: {spec: _Records() for spec in ["clean"] + [d.spec for d in sweep]} for name in models}
    total = example_count(dataset)
    bar = progress_bar(total=None if total is None else -(-total // batch_size), desc="evaluation", unit="batch",
                       enabled=progress and not (ranked and not context.is_main), leave=False)
    for x, y, ids in example_batches(dataset, batch_size=batch_size, device=device, workers=workers, rank=rank,
                                     world_size=world):
        clean_logits = {name: predict_logits(model, x, batch_size) for name, model in models.items()}
        for name, logits in clean_logits.items():
            records[name]["clean"].add(ids, correct=logits.argmax(1) == y, predicted=logits.argmax(1),
                                       label=y, classes=torch.full((len(y),), logits.shape[1]))
        for distortion in sweep:
            # distort where the (first) model lives, so a GPU model gets GPU corruptions; every example draws from
            # its own CPU stream seeded by (seed, spec, id): the same distorted images for any batch size, number of
            # workers or ranks, and on every device
            distorted = distort_examples(distortion, x, ids, seed, "distortion", distortion.spec)
            for name, model in models.items():
                logits = predict_logits(model, distorted, batch_size)
                clean = clean_logits[name]
                records[name][distortion.spec].add(ids, correct=logits.argmax(1) == y,
                                                   kl=stability_kl(clean, logits, reduction="none").double(),
                                                   flips=logits.argmax(1) != clean.argmax(1))
        bar.update(1)
    bar.close()
    if ranked:
        from ..distributed import all_gather

        gathered = all_gather(records, context)
        for name in models:
            for spec in records[name]:
                merged = _Records()
                for part in gathered:
                    merged.ids += part[name][spec].ids
                    for key, value in part[name][spec].values.items():
                        merged.values.setdefault(key, []).extend(value)
                records[name][spec] = merged
    rows: list[dict] = []
    clean_info: dict[str, dict] = {}
    flags: dict[str, dict[str, np.ndarray]] = {name: {} for name in models}
    for name in models:
        ids, values = records[name]["clean"].merged()
        n = len(ids)
        if n == 0:
            raise StableTrainError("the evaluation data holds no examples")
        classes = int(values["classes"].max())
        clean_info[name] = {"predicted": values["predicted"], "labels": values["label"], "num_classes": classes}
        flags[name]["clean"] = values["correct"].numpy().astype(bool)
        rows.append({"model": name, "distortion": "clean", "family": "clean", "param": None,
                     **_accuracy_fields(int(values["correct"].sum()), n), "mean_kl": 0.0, "flip_rate": 0.0, "n": n})
    for distortion in sweep:
        for name in models:
            _, values = records[name][distortion.spec].merged()
            n = len(values["correct"])
            flags[name][distortion.spec] = values["correct"].numpy().astype(bool)
            # per-example values summed once, in id order: the sums do not depend on how the batches were cut
            rows.append({"model": name, "distortion": distortion.spec, "family": distortion.family,
                         "param": distortion.param, **_accuracy_fields(int(values["correct"].sum()), n),
                         "mean_kl": float(values["kl"].sum()) / n, "flip_rate": int(values["flips"].sum()) / n,
                         "n": n})
    return rows, clean_info, flags


def _accuracy_fields(correct: int, n: int) -> dict:
    """``accuracy`` with the count behind it and its 95 % Wilson interval."""
    from ..stats import wilson_interval

    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n, "correct": correct, "accuracy_low": low, "accuracy_high": high}


def paired_comparisons(correct: Mapping[str, Mapping[str, np.ndarray]], reference: str,
                       models: Sequence[str] | None = None) -> list[dict]:
    """Each model against ``reference`` on the same examples, per distortion: the accuracy difference
    (model − reference) with Newcombe's 95 % interval, the exact McNemar p-value and the 2×2 table.

    ``correct`` is the per-example correctness of :func:`distortion_results`.

    Example:
        >>> flags = {"a": {"clean": np.array([1, 1, 1, 0], bool)}, "b": {"clean": np.array([1, 0, 1, 0], bool)}}
        >>> row = paired_comparisons(flags, "b")[0]
        >>> row["model"], row["reference"], row["difference"], row["only_model"], row["n"]
        ('a', 'b', 0.25, 1, 4)
    """
    from ..stats import paired_difference

    if reference not in correct:
        raise StableTrainError(f"unknown reference model {reference!r}; evaluated: {', '.join(correct)}")
    out = []
    for name in (models if models is not None else [m for m in correct if m != reference]):
        if name == reference:
            continue
        for spec, flags in correct[name].items():
            if spec not in correct[reference]:
                continue
            d = paired_difference(flags, correct[reference][spec])
            out.append({"model": name, "reference": reference, "distortion": spec, "n": d.n,
                        "difference": d.difference, "difference_low": d.low, "difference_high": d.high,
                        "p_value": d.p_value, "both": d.both, "only_model": d.only_a, "only_reference": d.only_b,
                        "neither": d.neither})
    return out


@dataclass
class SweepResult:
    """The rows of :func:`evaluate_distortions` and each example's correctness behind them."""

    rows: list[dict]
    correct: dict[str, dict[str, np.ndarray]]
    warnings: list[str] = dataclasses.field(default_factory=list)

    def paired(self, reference: str) -> list[dict]:
        """:func:`paired_comparisons` of every other model against ``reference``."""
        return paired_comparisons(self.correct, reference)


@torch.no_grad()
def distortion_results(models: Mapping[str, nn.Module], dataset: ImageDataset, distortions: Sequence[Distortion],
                       *, seed: int = 0, batch_size: int = 512, progress: bool = True,
                       context: "DistContext | None" = None, workers: int = 0) -> SweepResult:
    """:func:`evaluate_distortions` that also keeps each example's correctness, for paired comparisons.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> from stabletrain.distortions import parse_distortions
        >>> data = ImageDataset(torch.rand(8, 1, 16, 16), torch.arange(8) % 2)
        >>> models = {"a": SmallCNN(1, 2, width=4), "b": SmallCNN(1, 2, width=4)}
        >>> result = distortion_results(models, data, parse_distortions("jpeg-50"), progress=False)
        >>> [(r["distortion"], r["n"]) for r in result.paired("a")]
        [('clean', 8), ('jpeg-50', 8)]
    """
    rows, clean, flags = _sweep(models, dataset, distortions, seed=seed, batch_size=batch_size, progress=progress,
                                context=context, workers=workers)
    warnings = [line for name in models for line in prediction_warnings(
        name, clean[name]["predicted"], clean[name]["labels"], clean[name]["num_classes"])]
    return SweepResult(rows, flags, warnings)


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

    Example ``i`` of the test set is distorted from its own random stream,
    seeded by ``(seed, 'distortion', spec, i)`` (see :func:`distort_examples`),
    so the rows are the same for every ``batch_size`` and every model sees
    the same distorted images.

    With a distributed ``context`` (see :mod:`stabletrain.distributed`) each
    rank evaluates every ``world_size``-th distortion and the rows are
    gathered, in sweep order, on every rank; they equal those of a single
    process.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> from stabletrain.distortions import parse_distortions
        >>> data = ImageDataset(torch.rand(8, 1, 16, 16), torch.arange(8) % 2)
        >>> rows = evaluate_distortions({"m": SmallCNN(1, 2, width=4)}, data, parse_distortions("jpeg-50"),
        ...                             progress=False)
        >>> [r["distortion"] for r in rows]
        ['clean', 'jpeg-50']
    """
    return _sweep(models, dataset, distortions, seed=seed, batch_size=batch_size, progress=progress,
                  context=context)[0]


#: The columns of an attack row, which leaves ``accuracy``, ``mean_kl`` and ``flip_rate`` empty.
ATTACK_COLUMNS = ("attack", "epsilon", "steps", "clean_accuracy", "robust_accuracy", "attack_success_rate",
                  "robust_accuracy_at_epsilon")


def is_attack_row(row: Mapping) -> bool:
    """Whether an evaluation row holds an attack's robust accuracy (not a distortion's accuracy)."""
    return row.get("robust_accuracy") is not None


def attack_row(model: str, point: Mapping, steps: int | None) -> dict:
    """An evaluation row for one point of :func:`stabletrain.attacks.robustness_curve`.

    Every column means one thing: ``robust_accuracy`` (cumulative over the
    curve's epsilons, see :func:`~stabletrain.attacks.robustness_curve`),
    ``attack_success_rate`` (the share of clean-correct examples broken),
    ``epsilon``, ``attack`` and ``steps`` (None for FGSM); ``accuracy``,
    ``mean_kl`` and ``flip_rate``, which are about distortions, stay empty.
    """
    from ..stats import wilson_interval

    n = int(point["n"])
    robust = round(point["robust_accuracy"] * n)  # counts behind the rates, for their 95 % Wilson intervals
    clean_correct = round(point["clean_accuracy"] * n)
    broken = clean_correct - robust
    robust_low, robust_high = wilson_interval(robust, n) if n else (None, None)
    success_low, success_high = wilson_interval(broken, clean_correct) if clean_correct else (None, None)
    return {"model": model, "distortion": f"{point['attack']}-{point['epsilon']:.4g}", "family": point["attack"],
            "param": point["epsilon"], "accuracy": None, "mean_kl": None, "flip_rate": None, "n": point["n"],
            "attack": point["attack"], "epsilon": point["epsilon"], "steps": steps,
            "clean_accuracy": point["clean_accuracy"], "robust_accuracy": point["robust_accuracy"],
            "robust_accuracy_low": robust_low, "robust_accuracy_high": robust_high,
            "attack_success_rate": point["success_rate"],
            "attack_success_rate_low": success_low, "attack_success_rate_high": success_high,
            "robust_accuracy_at_epsilon": point["robust_accuracy_at_epsilon"],
            # autoattack: the robust accuracy once each component has run, one column per component
            **{f"robust_accuracy_{part}": value for part, value in (point.get("components") or {}).items()}}


def results_by_model(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Nest evaluation rows as ``{model: {'clean_accuracy': …, 'distortions': {spec: {...}}, 'attacks': {...}}}``.

    Attack rows (see :func:`attack_row`) go under ``attacks``, with their own
    columns, and only when there are any.
    """
    nested: dict[str, dict] = {}
    for row in rows:
        entry = nested.setdefault(row["model"], {"clean_accuracy": None, "distortions": {}})
        if row["distortion"] == "clean":
            entry["clean_accuracy"] = row["accuracy"]
        elif is_attack_row(row):
            entry.setdefault("attacks", {})[row["distortion"]] = {
                k: row.get(k) for k in ATTACK_COLUMNS + ("n",) + tuple(k for k in row
                                                                         if k.startswith("robust_accuracy_apgd")
                                                                         or k == "robust_accuracy_square")}
        elif is_smoothing_row(row):
            entry.setdefault("smoothing", {})[row["distortion"]] = {
                k: row.get(k) for k in ("sigma", "radius", "certified_accuracy", "abstain_rate",
                                        "average_certified_radius", "n")}
        else:
            entry["distortions"][row["distortion"]] = {k: row[k] for k in ("family", "param", "accuracy",
                                                                            "mean_kl", "flip_rate", "n")}
    return nested


def _image_side(dataset: object) -> int:
    """The image width of an evaluation source (its first example for a stream)."""
    from .batches import example_batches, is_in_memory

    if is_in_memory(dataset):
        return int(dataset.x.shape[-1])
    for x, _, _ in example_batches(dataset, batch_size=1):
        return int(x.shape[-1])
    raise StableTrainError("the evaluation data holds no examples")


def prediction_warnings(name: str, predicted: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                        share: float = 0.95) -> list[str]:
    """:func:`degenerate_warnings` from the predicted classes (no logits need to be kept for a large data set)."""
    n = len(labels)
    if n == 0 or num_classes < 2:
        return []
    counts = torch.bincount(predicted.cpu().long(), minlength=num_classes)
    top = int(counts.argmax())
    top_share = float(counts[top]) / n
    largest = float(torch.bincount(labels.cpu().long(), minlength=num_classes).max()) / n
    out = []
    if top_share >= share > largest:  # one class for 95 % of a test set whose largest class is smaller
        out.append(f"{name}: predicts class {top} for {100 * top_share:.0f} % of clean test images (the largest "
                   f"class is {100 * largest:.0f} % of them)")
    chance = max(1.0 / num_classes, largest)
    accuracy_ = float((predicted.cpu() == labels.cpu()).double().mean())
    if accuracy_ <= chance + 3 * (chance * (1 - chance) / n) ** 0.5:
        out.append(f"{name}: at chance: clean accuracy {100 * accuracy_:.1f} % with {num_classes} classes "
                   f"(chance {100 * chance:.1f} %)")
    return out


def degenerate_warnings(name: str, logits: torch.Tensor, labels: torch.Tensor, *, share: float = 0.95) -> list[str]:
    """Warnings for a degenerate classifier: one class for (almost) every test image, or accuracy at chance.

    "At chance" means the clean accuracy is within three binomial standard
    deviations of ``1 / K`` for ``K`` classes (at most the share of the
    largest class when the test set is unbalanced).

    Example:
        >>> for line in degenerate_warnings("m", torch.tensor([[0.0, 1.0]]).repeat(10, 1), torch.arange(10) % 2):
        ...     print(line)
        m: predicts class 1 for 100 % of clean test images (the largest class is 50 % of them)
        m: at chance: clean accuracy 50.0 % with 2 classes (chance 50.0 %)
    """
    if len(labels) == 0 or logits.ndim != 2 or logits.shape[1] < 2:
        return []
    return prediction_warnings(name, logits.argmax(1), labels, int(logits.shape[1]), share=share)


SUITES = ("paper", "common", "adversarial", "smoothing", "all")
#: Defaults of the smoothing suite: noise level, selection and estimation samples, confidence, radii (L2, pixels).
SMOOTHING_DEFAULTS = {"sigma": 0.25, "n0": 100, "n": 1000, "alpha": 0.001, "radii": (0.0, 0.25, 0.5, 0.75, 1.0),
                      "amp": "off", "channels_last": False}


def is_smoothing_row(row: Mapping) -> bool:
    """Whether an evaluation row holds a certified accuracy of the smoothing suite."""
    return row.get("certified_accuracy") is not None


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
                    layer_resolution: str = "native", severities: Sequence[int] = (1, 2, 3, 4, 5), epsilons: Sequence[float] = DEFAULT_EPSILONS,
                    attack: str = "pgd", attack_steps: int | None = None, attack_examples: int | None = None,
                    attack_queries: int | None = None, masking_check: bool | None = None,
                    baseline: str | None = None, seed: int = 0, batch_size: int = 512,
                    smoothing: Mapping | None = None, smoothing_examples: int | None = None,
                    workers: int = 0, progress: bool = True, context: "DistContext | None" = None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Run the ``paper``, ``common`` (corruptions) and ``adversarial`` suites on several models.

    With ``progress`` and a ``log`` function, the adversarial suite also
    reports in plain lines (one per model, ε and AutoAttack component, with
    the robust accuracy so far and the seconds spent), which reach a log
    file where a progress bar would not.

    Returns ``{'rows': [...], 'models': {name: summary}, 'warnings': [...]}``.
    The ``smoothing`` suite certifies the first ``smoothing_examples``
    images (default all) with Gaussian randomized smoothing (settings in
    ``smoothing``, defaults :data:`SMOOTHING_DEFAULTS`); its rows have
    ``certified_accuracy`` per radius. With the ImageNet corruption set
    and a 1000-class model, the summary adds ``alexnet``: the mCE
    normalized by AlexNet's published ImageNet-C errors
    (:func:`~stabletrain.evaluation.mce.alexnet_mce`).
    Distortion rows have the columns of :func:`evaluate_distortions`;
    corruption rows have the corruption as family and the severity as param.
    Attack rows (see :func:`attack_row`) have their own columns
    (``attack``, ``epsilon``, ``steps``, ``robust_accuracy``,
    ``attack_success_rate``) and leave ``accuracy``, ``mean_kl`` and
    ``flip_rate`` empty; ``autoattack`` rows add ``robust_accuracy_<component>``,
    the robust accuracy once each component has run. ``attack_steps``
    (iterations of pgd, pgd-l2, l0 and the APGD attacks) and
    ``attack_queries`` (square, and autoattack's Square) default to the
    attack's own (:func:`~stabletrain.attacks.attack_defaults`: 10 PGD steps,
    100 APGD iterations, 5000 queries). With an L∞ attack other than PGD and
    FGSM, the suite also runs PGD (10 steps) on the same images and compares
    (:mod:`stabletrain.attacks.masking`): each model's summary gets
    ``gradient_masking`` rows, and a warning where PGD overstates robustness
    beyond the paired 95 % interval (``masking_check=False`` skips it).
    Robust accuracy counts an example as robust at ε only
    if it is classified correctly clean and the attack failed at every
    ε' ≤ ε of the curve, so it never exceeds the clean accuracy and never
    rises with ε.

    ``corruption_set`` and ``layer_resolution`` are the ``parameter_set`` and
    ``layer_resolution`` of :func:`~stabletrain.corruptions.corruption_suite`
    for the common suite.

    Every random draw is per example: distortions from
    ``(seed, 'distortion', spec, index)``, the attack's random starts from
    ``(seed, 'attack', model name, index)``, so the result does not depend on
    ``batch_size`` or on the number of ranks.

    ``warnings`` (also in each model's summary) flags a degenerate model:
    one that predicts one class for almost every clean test image, or whose
    clean accuracy is at chance.

    A distributed ``context`` shards the distortion and corruption sweep over
    the ranks (see :func:`evaluate_distortions`); rank 0 runs the attacks and
    shares their rows, so every rank returns the whole result.
    """
    from ..distortions import paper_sweep, parse_distortions

    chosen = set(SUITES[:-1]) if "all" in suites else set(suites)
    unknown = chosen - set(SUITES)
    if unknown:
        raise StableTrainError(f"unknown suite(s) {', '.join(sorted(unknown))}; known: {', '.join(SUITES)}")
    from .batches import example_count, take_examples

    paper: list[Distortion] = []
    if "paper" in chosen:
        paper = list(paper_distortions or parse_distortions(paper_sweep(_image_side(dataset))))
    distortions: list[Distortion] = list(paper)
    common: list[str] = []
    held_out: list[str] = []
    if "common" in chosen:
        from ..corruptions import CORRUPTIONS, HELD_OUT, corruption_suite

        common, held_out = list(CORRUPTIONS), list(HELD_OUT)
        paper_specs = {d.spec for d in paper}
        distortions += [d for d in corruption_suite(corruption_set, names=common + held_out,
                                                    severities=tuple(severities), layer_resolution=layer_resolution)
                        if d.spec not in paper_specs]
    rows, clean, correct = _sweep(models, dataset, distortions, seed=seed, batch_size=batch_size,
                                  progress=progress, context=context, workers=workers)
    for row in rows:
        if row["family"].startswith("c10/"):
            row["family"] = row["family"][4:]
    attack_main = context is None or context.is_main
    size = example_count(dataset)
    size = size if size is not None else len(next(iter(clean.values()))["labels"])
    count = size if attack_examples is None else min(int(attack_examples), size)
    attack_options: dict = {}
    steps = queries = None
    masking = False
    if "adversarial" in chosen:
        from ..attacks import LINF_ATTACKS, attack_defaults

        known = attack_defaults(attack)
        if "steps" in known:
            steps = int(attack_steps) if attack_steps is not None else int(known["steps"])
            attack_options["steps"] = steps
        elif attack_steps is not None and attack != "fgsm":
            raise StableTrainError(f"attack {attack!r} takes no steps (it has a query budget: attack_queries)")
        if "queries" in known:
            queries = int(attack_queries) if attack_queries is not None else int(known["queries"])
            attack_options["queries"] = queries
        elif attack_queries is not None:
            raise StableTrainError(f"attack {attack!r} takes no query budget (only square and autoattack do)")
        masking = attack in LINF_ATTACKS and attack not in ("pgd", "pgd-linf", "fgsm") and masking_check is not False
    certified_count = size if smoothing_examples is None else min(int(smoothing_examples), size)
    needed = max(count if "adversarial" in chosen else 0, certified_count if "smoothing" in chosen else 0)
    if needed and attack_main:  # the attacked and certified images: the first ones by id, held in memory
        held_x, held_y, held_ids = take_examples(dataset, needed, batch_size=batch_size, workers=workers)
        device = _device_of(next(iter(models.values())))
        held_x = held_x.to(device)
    masking_by_model: dict[str, list[dict]] = {}
    components_by_model: dict[str, dict] = {}
    if "adversarial" in chosen and attack_main:
        from ..attacks import attack_curve, masking_rows

        bar = progress_bar(list(models.items()), desc=f"{attack} attack", unit="model", enabled=progress, leave=False)
        say = log if progress and log is not None else None
        for number, (name, model) in enumerate(bar, 1):
            if say is not None:
                say(f"{attack} attack on {count} examples: model {name} ({number} of {len(models)})")
            # one stream per (model, example): the random starts do not depend on the batch size
            streams = ExampleRNG.for_examples(held_ids[:count].tolist(), seed, "attack", name)
            curve = attack_curve(model, held_x[:count], held_y[:count], list(epsilons), attack=attack,
                                 batch_size=batch_size, generator=streams, progress=say, **attack_options)
            rows += [attack_row(name, point, steps) for point in curve.rows]
            components_by_model[name] = {f"{r['epsilon']:.6g}": r["components"] for r in curve.rows
                                         if r.get("components")}
            if masking:  # PGD on the same images, from its own streams: does it overstate robustness?
                check = attack_curve(model, held_x[:count], held_y[:count], list(epsilons), attack="pgd",
                                     batch_size=batch_size, steps=10,
                                     generator=ExampleRNG.for_examples(held_ids[:count].tolist(), seed, "attack",
                                                                       name, "pgd"), progress=say)
                masking_by_model[name] = masking_rows(name, list(epsilons), check.robust, curve.robust, attack)
    if "smoothing" in chosen and attack_main:
        from .smoothing_suite import smoothing_rows

        settings = {**SMOOTHING_DEFAULTS, **dict(smoothing or {})}
        unknown_keys = set(settings) - set(SMOOTHING_DEFAULTS)
        if unknown_keys:
            raise StableTrainError(f"unknown smoothing setting(s) {', '.join(sorted(unknown_keys))}; known: "
                                   f"{', '.join(SMOOTHING_DEFAULTS)}")
        for name, model in models.items():
            rows += smoothing_rows(model, held_x[:certified_count], held_y[:certified_count],
                                   ids=held_ids[:certified_count].tolist(),
                                   sigma=float(settings["sigma"]), n0=int(settings["n0"]), n=int(settings["n"]),
                                   alpha=float(settings["alpha"]), radii=tuple(settings["radii"]),
                                   batch_size=batch_size, seed=seed, name=name, amp=settings["amp"],
                                   channels_last=settings["channels_last"])
    if ("adversarial" in chosen or "smoothing" in chosen) and context is not None and context.is_distributed:
        from ..distributed import broadcast_object

        # rank 0 ran the attacks and the certification (they are not split): share its rows
        rows = broadcast_object(rows, context)
    summaries: dict[str, dict] = {}
    all_warnings: list[str] = []
    paper_specs = {d.spec for d in paper if not isinstance(d, Identity)}
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        summary: dict = {"clean_accuracy": next(r["accuracy"] for r in mine if r["distortion"] == "clean")}
        if "paper" in chosen:
            summary["paper"] = {r["distortion"]: r["accuracy"] for r in mine
                                if r["distortion"] in paper_specs and not is_attack_row(r)}
        if common:
            per: dict[str, dict[str, float]] = {}
            for r in mine:
                if r["family"] in common + held_out and not is_attack_row(r):
                    per.setdefault(r["family"], {})[str(r["param"])] = r["accuracy"]
            summary["corruptions"] = per
            summary["corruption_set"] = corruption_set
            summary["layer_resolution"] = layer_resolution
            summary["common"] = mean_corruption_error(rows, name, common, baseline if baseline != name else None)
            summary["held_out"] = mean_corruption_error(rows, name, held_out, baseline if baseline != name else None)
            if corruption_set == "imagenet" and clean[name]["num_classes"] == 1000:
                from .mce import alexnet_mce

                summary["alexnet"] = alexnet_mce(rows, name, common, num_classes=1000, corruption_set="imagenet",
                                                 allow_partial=True)
            if baseline is not None:
                summary["baseline"] = baseline
        if "adversarial" in chosen:
            attacked = [r for r in mine if is_attack_row(r)]
            summary["robust_accuracy"] = {f"{r['epsilon']:.6g}": r["robust_accuracy"] for r in attacked}
            # the clean accuracy on the attacked images, the bound of every robust accuracy of the curve
            summary["attack"] = {"name": attack, "steps": steps, "examples": count,
                                 "clean_accuracy": attacked[0]["clean_accuracy"] if attacked else None}
            if queries is not None:
                summary["attack"]["queries"] = queries
            parts = components_by_model.get(name)
            if parts:  # autoattack: the robust accuracy once each component has run
                summary["attack"]["components"] = parts
            if masking:
                summary["gradient_masking"] = masking_by_model.get(name, [])
        if "smoothing" in chosen:
            certified = [r for r in mine if is_smoothing_row(r)]
            summary["smoothing"] = {
                "sigma": certified[0]["sigma"] if certified else None,
                "certified_accuracy": {f"{r['radius']:g}": r["certified_accuracy"] for r in certified},
                "average_certified_radius": certified[0]["average_certified_radius"] if certified else None,
                "abstain_rate": certified[0]["abstain_rate"] if certified else None,
                "examples": certified[0]["n"] if certified else 0,
                "noise_samples": certified[0]["noise_samples"] if certified else None}
        summary["warnings"] = prediction_warnings(name, clean[name]["predicted"], clean[name]["labels"],
                                                  clean[name]["num_classes"])
        if masking_by_model.get(name):
            from ..attacks import masking_warnings

            summary["warnings"] += masking_warnings(masking_by_model[name])
        all_warnings += summary["warnings"]
        summaries[name] = summary
    result = {"rows": rows, "models": summaries, "warnings": all_warnings}
    if len(models) > 1:  # every model against the baseline (or the first model), on the same images
        reference = baseline if baseline in models else next(iter(models))
        result["paired"] = paired_comparisons(correct, reference)
    return result


def evaluate(model: nn.Module | Mapping[str, nn.Module], data: object, suites: Sequence[str] = ("paper",),
             **options: object) -> dict:
    """Evaluate one model (or ``{name: model}``) on any data: the one-call form of :func:`evaluate_suites`.

    ``data`` is an :class:`~stabletrain.data.ImageDataset`, any ``Dataset``
    of ``(image, label[, id])`` items (streamed images included) or a
    ``DataLoader`` that does not shuffle; ``options`` go to
    :func:`evaluate_suites` (``workers``, ``batch_size``, ``seed``,
    ``corruption_set``, ``epsilons``, ``smoothing``…). The model runs on its
    own device. The result is the same for any batch size, number of
    workers and of ranks.

    Example:
        >>> from stabletrain.models import SmallCNN
        >>> from stabletrain.distortions import parse_distortions
        >>> data = ImageDataset(torch.rand(6, 1, 16, 16), torch.arange(6) % 2)
        >>> result = evaluate(SmallCNN(1, 2, width=4), data, ["paper"],
        ...                   paper_distortions=parse_distortions("jpeg-50"), progress=False)
        >>> sorted(result["models"]["model"]["paper"])
        ['jpeg-50']
    """
    models = dict(model) if isinstance(model, Mapping) else {"model": model}
    if not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise StableTrainError("evaluate needs a torch model, or a mapping of names to models")
    return evaluate_suites(models, data, list(suites), **options)  # type: ignore[arg-type]


from .mce import ALEXNET_ERRORS, alexnet_mce, corruption_errors, relative_to_baseline  # noqa: E402
from .robustbench import model_info, model_info_path, write_model_info  # noqa: E402
from .smoothing_suite import smoothing_rows  # noqa: E402
