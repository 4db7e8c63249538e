"""Near-duplicate detection and triplet ranking: the benchmark and its evaluation.

The benchmark is built from tiles of real photographs (or of a user's own
images). Every distinct tile gets near-duplicate copies, one for each
distortion spec (``jpeg-Q``, ``thumb-A``, ``crop-O``, ``gaussian-S``), made
once with a seed per spec, so every model sees the same copies. A pair is:

* a **near-duplicate pair**: a tile and one of its distorted copies;
* a **non-duplicate pair**: two distinct tiles. ``neighbour`` pairs are
  edge- or corner-adjacent tiles of the same photograph, the hardest
  non-duplicates; ``same-source`` pairs are other tiles of the same photo.

A pair is called a duplicate when the Euclidean distance of its features is
below a threshold. From the distances this module computes precision–recall
curves and average precision per distortion family, precision at fixed
recall, the best single threshold over all families, retrieval precision@1
and mAP (query: a copy; database: all distinct tiles), and the triplet
ranking score on clean and distorted triplets.

Distances to the database are computed in chunks, so the memory is
``chunk_size²`` floats, not ``N²``: 50,000 tiles evaluate in a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checks import StableTrainError, check_images
from .data import DataSplit, sample_triplets
from .distortions import Distortion, parse_distortions
from .evaluation import distort_examples, predict_logits
from .metrics import (
    average_precision,
    best_f1_threshold,
    precision_at_recall,
    precision_recall_at,
    precision_recall_curve,
)
from .seeding import make_generator
from .progress import progress_bar

__all__ = ["NearDuplicateBenchmark", "build_benchmark", "pairwise_distances", "pair_distances", "retrieval_ranks",
           "evaluate_similarity", "similarity_sweep", "check_features", "similarity_differences"]

def similarity_sweep(image_size: int = 32) -> list[str]:
    """Default near-duplicate distortions: three severities of each paper family.

    Example:
        >>> similarity_sweep(32)[3:6]
        ['thumb-24', 'thumb-16', 'thumb-12']
    """
    thumbs = sorted({max(1, round(image_size * f)) for f in (0.75, 0.5, 0.375)}, reverse=True)
    return (["jpeg-50", "jpeg-30", "jpeg-10"] + [f"thumb-{a}" for a in thumbs] + ["crop-5", "crop-10", "crop-15"]
            + ["gaussian-0.05", "gaussian-0.1", "gaussian-0.2"])

NEGATIVE_KINDS = ("other-source", "same-source", "neighbour")


def check_features(features: torch.Tensor, name: str = "features") -> None:
    """Features must be a finite ``N×D`` float tensor."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise StableTrainError(f"{name} must be an N×D tensor, got {shape}")
    if not features.is_floating_point():
        raise StableTrainError(f"{name} must be floating point, got {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise StableTrainError(f"{name} contain NaN or inf")


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, chunk_size: int = 4096) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Euclidean distances between the rows of ``a`` and ``b``, one ``chunk×chunk`` block at a time.

    Yields ``(row_start, col_start, block)``. Together the blocks tile the
    full ``len(a) × len(b)`` matrix, which is never held in memory at once.

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> [(r, c, block.tolist()) for r, c, block in pairwise_distances(a, a, chunk_size=1)][1]
        (0, 1, [[5.0]])
    """
    if chunk_size < 1:
        raise StableTrainError(f"chunk size must be >= 1, got {chunk_size}")
    for row in range(0, len(a), chunk_size):
        block_a = a[row:row + chunk_size]
        for col in range(0, len(b), chunk_size):
            yield row, col, torch.cdist(block_a, b[col:col + chunk_size])


def pair_distances(a: torch.Tensor, b: torch.Tensor, pairs: torch.Tensor | None = None,
                   chunk_size: int = 65536) -> torch.Tensor:
    """Euclidean distance of each listed pair: ``‖a[i] − b[j]‖`` for rows ``(i, j)`` of ``pairs``.

    Without ``pairs``, row ``i`` of ``a`` is paired with row ``i`` of ``b``.
    """
    if pairs is None:
        if a.shape != b.shape:
            raise StableTrainError(f"paired features differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
        return (a - b).norm(dim=1)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise StableTrainError(f"pairs must be P×2 indices, got {tuple(pairs.shape)}")
    if len(pairs) and (int(pairs[:, 0].max()) >= len(a) or int(pairs[:, 1].max()) >= len(b) or int(pairs.min()) < 0):
        raise StableTrainError("pair indices out of range of the features")
    out = [(a[chunk[:, 0]] - b[chunk[:, 1]]).norm(dim=1) for chunk in pairs.split(chunk_size)]
    return torch.cat(out) if out else torch.zeros(0)


def retrieval_ranks(queries: torch.Tensor, database: torch.Tensor, targets: torch.Tensor,
                    chunk_size: int = 2048) -> torch.Tensor:
    """For each query, how many database items are strictly closer than its target item.

    Rank 0 means the target is the nearest neighbour (precision@1 = 1); with
    one relevant item per query, average precision is ``1 / (rank + 1)``.
    Computed in ``chunk_size`` blocks; the target itself never counts.
    """
    check_features(queries, "query features")
    check_features(database, "database features")
    if len(targets) != len(queries):
        raise StableTrainError(f"{len(queries)} queries but {len(targets)} targets")
    targets = targets.long()
    ranks = torch.zeros(len(queries), dtype=torch.long)
    for row, col, block in pairwise_distances(queries, database, chunk_size):
        rows = slice(row, row + block.shape[0])
        t = targets[rows]
        # The target distance comes from the same kind of computation as the block, so ties resolve consistently.
        d_target = torch.cdist(queries[rows].unsqueeze(1), database[t].unsqueeze(1)).view(-1)
        closer = block < d_target.unsqueeze(1)
        index = torch.arange(col, col + block.shape[1]).unsqueeze(0)
        closer &= index != t.unsqueeze(1)
        ranks[rows] += closer.sum(dim=1)
    return ranks


@dataclass
class NearDuplicateBenchmark:
    """Distinct tiles, the distortions that make their copies, non-duplicate pairs and ranking triplets."""

    images: torch.Tensor
    sources: torch.Tensor
    source_names: list[str]
    distortions: list[Distortion]
    negative_pairs: torch.Tensor
    negative_kind: torch.Tensor
    triplets: torch.Tensor
    seed: int = 0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def copies(self, distortion: Distortion, batch_size: int = 512) -> Iterator[tuple[int, torch.Tensor]]:
        """The near-duplicate copies under ``distortion``, batch by batch; identical on every call.

        Tile ``i``'s copy draws from its own stream, seeded by
        ``(seed, 'near-duplicate', spec, i)``, so the copies do not depend on
        ``batch_size``.
        """
        for start in range(0, len(self.images), batch_size):
            yield start, distort_examples(distortion, self.images[start:start + batch_size], start,
                                          self.seed, "near-duplicate", distortion.spec)

    def describe(self) -> dict:
        kinds = torch.bincount(self.negative_kind, minlength=3).tolist()
        return {"distinct_images": len(self), "sources": len(self.source_names),
                "distortions": [d.spec for d in self.distortions],
                "near_duplicate_pairs": len(self) * len(self.distortions),
                "non_duplicate_pairs": len(self.negative_pairs),
                **{f"non_duplicate_{k}": v for k, v in zip(NEGATIVE_KINDS, kinds)},
                "triplets": len(self.triplets), "seed": self.seed, **self.info}


def _neighbour_pairs(sources: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    index = {(int(s), int(r), int(c)): i for i, (s, (r, c)) in enumerate(zip(sources.tolist(), positions.tolist()))}
    pairs = []
    for (s, r, c), i in index.items():
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each unordered neighbour pair once
            j = index.get((s, r + dr, c + dc))
            if j is not None:
                pairs.append((min(i, j), max(i, j)))
    return torch.tensor(sorted(pairs), dtype=torch.long).view(-1, 2)


def build_benchmark(split: DataSplit, distortions: Sequence[str] | Sequence[Distortion] | None = None, *,
                    seed: int = 0, max_negative_pairs: int = 200_000, use: str = "test",
                    min_tile_std: float = 0.02) -> NearDuplicateBenchmark:
    """The near-duplicate benchmark on the ``use`` part (default: test) of a tiled split.

    Featureless tiles (pixel standard deviation below ``min_tile_std``: sky,
    blank paper, black space) are left out, because any two of them are
    visually identical and would count as non-duplicates that no model can
    separate. Non-duplicate pairs are all pairs of distinct tiles when there
    are at most ``max_negative_pairs`` of them; otherwise a seeded uniform
    sample of that many, plus every neighbour pair.

    Example:
        >>> from stabletrain.data import load_patches
        >>> bench = build_benchmark(load_patches("photos"), ["jpeg-50", "crop-10"])
        >>> bench.describe()["near_duplicate_pairs"] == 2 * len(bench)
        True
    """
    part = split.test if use == "test" else split.train
    if part.positions is None:
        raise StableTrainError("the near-duplicate benchmark needs tiles with grid positions "
                               "(photos or a folder of images loaded with load_patches)")
    check_images(part.x, "benchmark tiles")
    textured = part.x.flatten(1).std(dim=1) >= min_tile_std
    dropped = int((~textured).sum())
    part = part.subset(torch.nonzero(textured).flatten())
    if len(part) < 3 or len(torch.unique(part.y)) < 2:
        raise StableTrainError(f"the near-duplicate benchmark needs at least 3 textured tiles from 2 sources, "
                               f"got {len(part)} ({dropped} featureless tiles left out)")
    sweep = list(distortions) if distortions is not None else similarity_sweep(int(part.x.shape[-1]))
    sweep = [d if isinstance(d, Distortion) else parse_distortions([d])[0] for d in sweep]
    n = len(part)
    sources, positions = part.y.clone(), part.positions.clone()
    neighbours = _neighbour_pairs(sources, positions)
    total = n * (n - 1) // 2
    if total <= max_negative_pairs:
        pairs = torch.triu_indices(n, n, offset=1).T.contiguous()
    else:
        g = make_generator(seed, "negative-pairs")
        i = torch.randint(0, n, (max_negative_pairs,), generator=g)
        j = (i + torch.randint(1, n, (max_negative_pairs,), generator=g)) % n
        pairs = torch.cat([torch.stack([torch.minimum(i, j), torch.maximum(i, j)], 1), neighbours])
        pairs = torch.unique(pairs, dim=0)
    same = sources[pairs[:, 0]] == sources[pairs[:, 1]]
    gap = (positions[pairs[:, 0]] - positions[pairs[:, 1]]).abs().max(dim=1).values
    kind = torch.where(same & (gap == 1), 2, torch.where(same, 1, 0))
    triplets = sample_triplets(sources, make_generator(seed, "benchmark-triplets"))
    return NearDuplicateBenchmark(part.x, sources, list(split.classes), sweep, pairs, kind, triplets, seed,
                                  {"data": split.name, "part": use, "featureless_tiles_left_out": dropped,
                                   "min_tile_std": min_tile_std})


def _family_order(distortions: Sequence[Distortion]) -> dict[str, list[Distortion]]:
    families: dict[str, list[Distortion]] = {}
    for d in distortions:
        families.setdefault(d.family, []).append(d)
    return families


def _curve_points(scores_pos: np.ndarray, scores_neg: np.ndarray, max_points: int = 400) -> dict[str, list[float]]:
    labels = np.r_[np.ones(len(scores_pos)), np.zeros(len(scores_neg))]
    precision, recall, _ = precision_recall_curve(np.r_[scores_pos, scores_neg], labels)
    keep = np.unique(np.linspace(0, len(precision) - 1, min(max_points, len(precision))).round().astype(int))
    return {"precision": precision[keep].tolist(), "recall": recall[keep].tolist()}


def _detection(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    scores = -np.r_[pos, neg]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return {"average_precision": average_precision(scores, labels),
            "precision_at_recall_0.9": precision_at_recall(scores, labels, 0.9),
            "precision_at_recall_0.95": precision_at_recall(scores, labels, 0.95)}


@torch.no_grad()
def evaluate_similarity(models: Mapping[str, nn.Module], benchmark: NearDuplicateBenchmark, *,
                        batch_size: int = 512, chunk_size: int = 2048, progress: bool = True) -> dict:
    """Evaluate embedding models on the benchmark.

    Returns ``{'rows': [...], 'models': {name: summary}, 'curves': ..., 'distances': ...}``:
    one row per (model, distortion) and one per (model, family), a summary
    per model (medians, best threshold, clean triplet score), the PR curves
    per family and the raw distances for the distribution plots.
    """
    families = _family_order(benchmark.distortions)
    clean = {name: predict_logits(model, benchmark.images, batch_size) for name, model in models.items()}
    for name, feats in clean.items():
        check_features(feats, f"features of {name}")
    positives: dict[str, dict[str, torch.Tensor]] = {name: {} for name in models}
    ranks: dict[str, dict[str, torch.Tensor]] = {name: {} for name in models}
    distorted_triplets: dict[str, dict[str, float]] = {name: {} for name in models}
    bar = progress_bar(benchmark.distortions, desc="near-duplicates", unit="spec", enabled=progress, leave=False)
    for distortion in bar:
        bar.set_postfix_str(distortion.spec)
        copies = {name: [] for name in models}
        for _, batch in benchmark.copies(distortion, batch_size):
            for name, model in models.items():
                copies[name].append(predict_logits(model, batch, batch_size))
        for name in models:
            feats = torch.cat(copies[name])
            check_features(feats, f"features of {name} on {distortion.spec}")
            positives[name][distortion.spec] = pair_distances(clean[name], feats)
            ranks[name][distortion.spec] = retrieval_ranks(feats, clean[name], torch.arange(len(feats)), chunk_size)
            t = benchmark.triplets
            q, p, n = feats[t[:, 0]], feats[t[:, 1]], feats[t[:, 2]]
            distorted_triplets[name][distortion.spec] = float(((q - p).norm(dim=1) < (q - n).norm(dim=1)).double().mean())

    rows, summaries, curves, distances, examples = [], {}, {}, {}, {}
    kinds = benchmark.negative_kind.numpy()
    for name in models:
        neg = pair_distances(clean[name], clean[name], benchmark.negative_pairs).numpy()
        t = benchmark.triplets
        f = clean[name]
        clean_triplets = float(((f[t[:, 0]] - f[t[:, 1]]).norm(dim=1) < (f[t[:, 0]] - f[t[:, 2]]).norm(dim=1)).double().mean())
        for spec, d in positives[name].items():
            distortion = next(x for x in benchmark.distortions if x.spec == spec)
            r = ranks[name][spec].double()
            rows.append({"model": name, "level": "distortion", "distortion": spec, "family": distortion.family,
                         "param": distortion.param, **_detection(d.numpy(), neg),
                         "precision_at_1": float((r == 0).double().mean()), "map": float((1.0 / (r + 1)).mean()),
                         "triplet_accuracy": distorted_triplets[name][spec],
                         "median_duplicate_distance": float(d.median())})
        pooled = {fam: np.concatenate([positives[name][d.spec].numpy() for d in items])
                  for fam, items in families.items()}
        for fam, items in families.items():
            r = torch.cat([ranks[name][d.spec] for d in items]).double()
            rows.append({"model": name, "level": "family", "distortion": fam, "family": fam, "param": None,
                         **_detection(pooled[fam], neg), "precision_at_1": float((r == 0).double().mean()),
                         "map": float((1.0 / (r + 1)).mean()),
                         "triplet_accuracy": float(np.mean([distorted_triplets[name][d.spec] for d in items])),
                         "median_duplicate_distance": float(np.median(pooled[fam]))})
        all_pos = np.concatenate(list(pooled.values()))
        labels = np.r_[np.ones(len(all_pos)), np.zeros(len(neg))]
        threshold_score, f1 = best_f1_threshold(-np.r_[all_pos, neg], labels)
        threshold = -threshold_score
        per_family = {}
        for fam, pos in pooled.items():
            precision, recall = precision_recall_at(-threshold, -pos, -neg)
            per_family[fam] = {"precision": precision, "recall": recall}
        median_pos, median_neg = float(np.median(all_pos)), float(np.median(neg))
        summaries[name] = {
            "median_duplicate_distance": median_pos,
            "median_non_duplicate_distance": median_neg,
            "median_neighbour_distance": float(np.median(neg[kinds == 2])) if (kinds == 2).any() else None,
            "distance_ratio": median_pos / median_neg if median_neg > 0 else None,
            "average_precision_all": _detection(all_pos, neg)["average_precision"],
            "clean_triplet_accuracy": clean_triplets,
            "best_threshold": {"distance": threshold, "f1": f1, "per_family": per_family},
        }
        # per example, aligned across models (same tiles, copies, negative pairs and triplets): for paired intervals
        examples[name] = {"positives": {fam: np.stack([positives[name][d.spec].numpy() for d in items])
                                        for fam, items in families.items()},
                          "negatives": neg,
                          "triplets": ((f[t[:, 0]] - f[t[:, 1]]).norm(dim=1) < (f[t[:, 0]] - f[t[:, 2]]).norm(dim=1)
                                       ).numpy()}
        curves[name] = {fam: _curve_points(-pos, -neg) for fam, pos in pooled.items()}
        distances[name] = {"near_duplicate": {fam: pos.tolist() for fam, pos in pooled.items()},
                           "non_duplicate": neg.tolist(), "neighbour": neg[kinds == 2].tolist()}
    return {"rows": rows, "models": summaries, "curves": curves, "distances": distances,
            "benchmark": benchmark.describe(), "examples": examples}


def similarity_differences(result: Mapping | Sequence[Mapping], candidate: str, reference: str, *,
                           replicates: int = 500, seed: int = 0, confidence: float = 0.95) -> dict[str, dict]:
    """``candidate`` against ``reference`` on the same benchmark, each difference with a paired bootstrap interval.

    Returned quantities (each ``{'difference', 'low', 'high'}``, oriented so that
    positive favours ``candidate``): ``distance_ratio`` (the reference's ratio of
    median near-duplicate to median non-duplicate distance minus the
    candidate's), ``ap/<family>`` (average precision, candidate minus
    reference) and ``triplets`` (clean triplet ranking score). Each replicate
    resamples tiles (with all their distorted copies), non-duplicate pairs and
    triplets with replacement, the same draw for both models, and recomputes
    every statistic; the interval is the percentile interval.

    ``result`` may also be a list of results, one per training seed (each
    with its own benchmark): the difference is then the mean over seeds, and
    each replicate first draws seeds with replacement (the same for both
    models), then each drawn seed's tiles, pairs and triplets.
    """
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 100:
        raise StableTrainError(f"replicates must be an integer >= 100, got {replicates!r}")
    runs = [result] if isinstance(result, Mapping) else list(result)
    if not runs:
        raise StableTrainError("similarity_differences needs at least one result")
    pairs_of_models = []
    for run in runs:
        examples = run.get("examples") or {}
        missing = [m for m in (candidate, reference) if m not in examples]
        if missing:
            raise StableTrainError(f"no per-example results for {', '.join(missing)}: evaluate them with "
                                   f"evaluate_similarity in one call")
        pairs_of_models.append((examples[candidate], examples[reference]))
    families = list(pairs_of_models[0][0]["positives"])

    def sizes(x: Mapping) -> tuple[int, int, int]:
        return next(iter(x["positives"].values())).shape[1], len(x["negatives"]), len(x["triplets"])

    def stats(x: Mapping, tile: np.ndarray, pairs: np.ndarray, trip: np.ndarray) -> dict[str, float]:
        neg = x["negatives"][pairs]
        pooled = np.concatenate([x["positives"][fam][:, tile].ravel() for fam in families])
        median_neg = float(np.median(neg))
        out = {"distance_ratio": float(np.median(pooled)) / median_neg if median_neg > 0 else float("nan"),
               "triplets": float(x["triplets"][trip].mean())}
        for fam in families:
            out[f"ap/{fam}"] = _detection(x["positives"][fam][:, tile].ravel(), neg)["average_precision"]
        return out

    def difference(a: Mapping, b: Mapping, draw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
        sa, sb = stats(a, *draw), stats(b, *draw)
        return {k: (sb[k] - sa[k]) if k == "distance_ratio" else (sa[k] - sb[k]) for k in sa}

    def mean_of(parts: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}

    point = mean_of([difference(a, b, tuple(np.arange(n) for n in sizes(a))) for a, b in pairs_of_models])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(replicates):
        chosen = rng.integers(len(runs), size=len(runs)) if len(runs) > 1 else [0]
        parts = []
        for index in chosen:
            a, b = pairs_of_models[int(index)]
            parts.append(difference(a, b, tuple(rng.integers(n, size=n) for n in sizes(a))))
        for k, v in mean_of(parts).items():
            draws[k].append(v)
    tail = (1 - confidence) / 2
    tiles, n_neg, n_trip = sizes(pairs_of_models[0][0])
    return {k: {"difference": point[k], "low": float(np.nanquantile(draws[k], tail)),
                "high": float(np.nanquantile(draws[k], 1 - tail)), "replicates": replicates, "seeds": len(runs),
                "tiles": tiles, "non_duplicate_pairs": n_neg, "triplets": n_trip} for k in point}
