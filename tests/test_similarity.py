import numpy as np
import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.data import DataSplit, ImageDataset, load_patches
from stabletrain.similarity import (
    build_benchmark,
    evaluate_similarity,
    pair_distances,
    pairwise_distances,
    retrieval_ranks,
)


def test_chunked_distances_equal_dense_distances():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 8, generator=g), torch.randn(23, 8, generator=g)
    dense = torch.from_numpy(np.linalg.norm(a.numpy()[:, None] - b.numpy()[None], axis=2))
    full = torch.zeros(37, 23)
    blocks = 0
    for row, col, block in pairwise_distances(a, b, chunk_size=10):
        assert block.shape[0] <= 10 and block.shape[1] <= 10
        full[row:row + block.shape[0], col:col + block.shape[1]] = block
        blocks += 1
    assert blocks == 4 * 3
    torch.testing.assert_close(full, dense, atol=1e-5, rtol=1e-5)
    pairs = torch.tensor([[0, 0], [36, 22], [5, 7]])
    torch.testing.assert_close(pair_distances(a, b, pairs), dense[pairs[:, 0], pairs[:, 1]], atol=1e-5, rtol=1e-5)


def test_retrieval_ranks_equal_dense_ranks():
    g = torch.Generator().manual_seed(1)
    database = torch.randn(50, 6, generator=g)
    targets = torch.randint(0, 50, (30,), generator=g)
    queries = database[targets] + 0.5 * torch.randn(30, 6, generator=g)
    dense = torch.cdist(queries, database, compute_mode="donot_use_mm_for_euclid_dist")
    expected = (dense < dense[torch.arange(30), targets].unsqueeze(1)).sum(1)
    for chunk in (7, 64):
        assert torch.equal(retrieval_ranks(queries, database, targets, chunk_size=chunk), expected)
    # An exact copy of its target is always found first.
    assert torch.equal(retrieval_ranks(database[:5], database, torch.arange(5)), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("call, message", [
    (lambda: retrieval_ranks(torch.full((2, 3), float("nan")), torch.zeros(4, 3), torch.zeros(2)), "NaN"),
    (lambda: retrieval_ranks(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3)), "2 queries but 3 targets"),
    (lambda: pair_distances(torch.zeros(2, 3), torch.zeros(3, 3)), "differ in shape"),
    (lambda: pair_distances(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[0, 5]])), "out of range"),
    (lambda: pair_distances(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])), "P×2"),
])
def test_bad_features_and_pair_lists(call, message):
    with pytest.raises(StableTrainError, match=message):
        call()


def _grid_split():
    """Two sources, each a 3×3 grid of textured tiles."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(18, 1, 16, 16, generator=g)
    positions = torch.tensor([[r, c] for _ in range(2) for r in range(3) for c in range(3)])
    data = ImageDataset(x, torch.repeat_interleave(torch.arange(2), 9), positions)
    return DataSplit("grid", data, data, ["a", "b"], {"split_seed": 0})


def test_benchmark_pairs_and_neighbours():
    bench = build_benchmark(_grid_split(), ["jpeg-50", "crop-10"], max_negative_pairs=10_000)
    assert len(bench.negative_pairs) == 18 * 17 // 2
    kinds = torch.bincount(bench.negative_kind, minlength=3).tolist()
    # A 3×3 grid has 20 king-move neighbour pairs; 36 same-source pairs per source in total.
    assert kinds == [81, 2 * (36 - 20), 2 * 20]
    assert bench.describe()["near_duplicate_pairs"] == 36
    sampled = build_benchmark(_grid_split(), ["jpeg-50"], max_negative_pairs=30)
    assert int((sampled.negative_kind == 2).sum()) == 40  # every neighbour pair is kept when sampling


def test_benchmark_leaves_out_featureless_tiles_and_checks_inputs():
    split = _grid_split()
    split.test.x[0] = 0.5
    bench = build_benchmark(split, ["jpeg-50"])
    assert len(bench) == 17 and bench.info["featureless_tiles_left_out"] == 1
    no_positions = DataSplit("x", ImageDataset(torch.rand(4, 1, 8, 8), torch.arange(4)),
                             ImageDataset(torch.rand(4, 1, 8, 8), torch.arange(4)), list("abcd"))
    with pytest.raises(StableTrainError, match="grid positions"):
        build_benchmark(no_positions)


class Pixels(nn.Module):
    """Downsampled pixels as features: a fixed, training-free embedder."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 4).flatten(1)


class Broken(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 3), float("nan"))


def test_evaluation_metrics_are_consistent():
    bench = build_benchmark(_grid_split(), ["jpeg-90", "gaussian-0.3"])
    result = evaluate_similarity({"pixels": Pixels()}, bench, progress=False)
    rows = {r["distortion"]: r for r in result["rows"] if r["level"] == "distortion"}
    # A mild JPEG moves pooled pixels far less than strong noise.
    assert rows["jpeg-90"]["median_duplicate_distance"] < rows["gaussian-0.3"]["median_duplicate_distance"]
    assert rows["jpeg-90"]["average_precision"] >= rows["gaussian-0.3"]["average_precision"]
    assert rows["jpeg-90"]["precision_at_1"] == 1.0 and rows["jpeg-90"]["map"] == 1.0
    summary = result["models"]["pixels"]
    f = Pixels()(bench.images)
    t = bench.triplets
    expected = float(((f[t[:, 0]] - f[t[:, 1]]).norm(dim=1) < (f[t[:, 0]] - f[t[:, 2]]).norm(dim=1)).double().mean())
    assert summary["clean_triplet_accuracy"] == pytest.approx(expected)
    neg = pair_distances(f, f, bench.negative_pairs)
    assert summary["median_non_duplicate_distance"] == pytest.approx(float(np.median(neg.numpy())), rel=1e-5)
    fam = summary["best_threshold"]["per_family"]
    assert set(fam) == {"jpeg", "gaussian"} and fam["jpeg"]["recall"] >= fam["gaussian"]["recall"]
    with pytest.raises(StableTrainError, match="NaN"):
        evaluate_similarity({"broken": Broken()}, bench, progress=False)


def test_photo_benchmark_builds_offline():
    bench = build_benchmark(load_patches("photos", image_size=32), ["jpeg-50"])
    info = bench.describe()
    assert info["sources"] == 19 and info["non_duplicate_neighbour"] > 100


def test_near_duplicate_copies_do_not_depend_on_the_batch_size():
    bench = build_benchmark(_grid_split(), ["crop-10", "gaussian-0.2", "jpeg-50"])
    for distortion in bench.distortions:
        whole = torch.cat([copy for _, copy in bench.copies(distortion, batch_size=512)])
        small = torch.cat([copy for _, copy in bench.copies(distortion, batch_size=4)])
        single = torch.cat([copy for _, copy in bench.copies(distortion, batch_size=1)])
        assert torch.equal(whole, small) and torch.equal(whole, single), distortion.spec
    crop = bench.distortions[0]
    assert not torch.equal(next(bench.copies(crop))[1], bench.images)


class _Blurred(torch.nn.Module):
    """Pooled pixels of a blurred copy: a second embedding that differs from Pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Pixels()(torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1))


def test_similarity_differences_are_paired_and_match_the_summaries():
    from stabletrain.similarity import similarity_differences

    bench = build_benchmark(_grid_split(), ["jpeg-90", "gaussian-0.3"])
    result = evaluate_similarity({"pixels": Pixels(), "blurred": _Blurred()}, bench, progress=False)
    d = similarity_differences(result, "blurred", "pixels", replicates=200)
    models = result["models"]
    assert d["distance_ratio"]["difference"] == pytest.approx(models["pixels"]["distance_ratio"]
                                                              - models["blurred"]["distance_ratio"])
    ap = {(r["model"], r["family"]): r["average_precision"] for r in result["rows"] if r["level"] == "family"}
    for fam in ("jpeg", "gaussian"):
        assert d[f"ap/{fam}"]["difference"] == pytest.approx(ap[("blurred", fam)] - ap[("pixels", fam)])
    assert d["triplets"]["difference"] == pytest.approx(models["blurred"]["clean_triplet_accuracy"]
                                                        - models["pixels"]["clean_triplet_accuracy"])
    for value in d.values():
        assert value["low"] <= value["high"]
    # a model against itself: every resample gives the same statistics, so the interval is exactly 0
    same = similarity_differences(result, "pixels", "pixels", replicates=100)
    assert all(v["difference"] == v["low"] == v["high"] == 0 for v in same.values())
    with pytest.raises(StableTrainError, match="no per-example results"):
        similarity_differences({"examples": {}}, "a", "b")


def test_similarity_differences_over_seeds_average_the_seeds():
    from stabletrain.similarity import similarity_differences

    results = []
    for seed in (0, 1):
        bench = build_benchmark(_grid_split(), ["jpeg-90", "gaussian-0.3"], seed=seed)
        results.append(evaluate_similarity({"pixels": Pixels(), "blurred": _Blurred()}, bench, progress=False))
    per_seed = [similarity_differences(r, "blurred", "pixels", replicates=100) for r in results]
    both = similarity_differences(results, "blurred", "pixels", replicates=200)
    for key, value in both.items():
        assert value["difference"] == pytest.approx(np.mean([p[key]["difference"] for p in per_seed]))
        assert value["seeds"] == 2 and value["low"] <= value["high"]
