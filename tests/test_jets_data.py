"""Jet images read lazily from HDF5: the same split and bitwise the same batches as a whole load, in bounded reads."""

import json
import pickle

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.jets.data import H5Rows, ImageRows, JetImages, load_jets, pixel_moments

h5py = pytest.importorskip("h5py")


def write_image_file(path, n=48, seed=0, pixels=25, chunk=8, hot=None, meta_pixels=None):
    """A small stabletrain jet file with sparse GeV images, labels, jet η and η maps (no Pythia)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, pixels, pixels), dtype=np.float32)
    for i in range(n):
        cells = rng.integers(0, pixels, (12, 2))
        images[i, cells[:, 0], cells[:, 1]] = rng.exponential(15.0, 12).astype(np.float32)
        images[i, pixels // 2, pixels // 2] += 100.0 + 60.0 * (i % 2)   # the classes differ a little
    if hot is not None:
        images[hot, 0, 0] = 1500.0   # above the 1 TeV unit
    labels = (np.arange(n) % 2).astype(np.int8)
    jet_eta = rng.uniform(-2, 2, n).astype(np.float32)
    eta_map = np.column_stack([jet_eta, rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)]).astype(np.float32)
    meta = {"format": "stabletrain.jets/1", "signal": "w", "background": "qcd", "classes": ["qcd", "w"],
            "image": {"pixels": meta_pixels or pixels, "half_width": 1.25}, "selection": {"radius": 1.0}, "preprocess": True,
            "flip": "heavier half right"}
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(chunk, pixels, pixels), compression="gzip")
        f.create_dataset("label", data=labels)
        f.create_dataset("jet_eta", data=jet_eta)
        f.create_dataset("eta_map", data=eta_map)
        f.attrs["format"] = "stabletrain.jets/1"
        f.attrs["metadata"] = json.dumps(meta)
    return images, labels


@pytest.fixture()
def two_files(tmp_path):
    a = write_image_file(tmp_path / "a.h5", n=40, seed=1)
    b = write_image_file(tmp_path / "b.h5", n=24, seed=2)
    return f"{tmp_path / 'a.h5'},{tmp_path / 'b.h5'}", a, b


def test_lazy_and_eager_loading_give_the_same_split_and_bitwise_equal_batches(two_files):
    source, _a, _b = two_files
    lazy, eager = load_jets(source, split_seed=3), load_jets(source, split_seed=3, lazy=False)
    assert isinstance(lazy.train.x, ImageRows) and isinstance(eager.train.x, torch.Tensor)
    assert lazy.train.lazy and not eager.train.lazy
    assert lazy.info == eager.info and lazy.classes == eager.classes and lazy.describe() == eager.describe()
    for part in ("train", "test"):
        lp, ep = getattr(lazy, part), getattr(eager, part)
        assert torch.equal(lp.y, ep.y) and torch.equal(lp.eta_map, ep.eta_map)
        assert lp.x.shape == ep.x.shape and lp.x.ndim == 4 and len(lp) == len(ep)
        assert torch.equal(lp.x[:], ep.x)
    x, ref = lazy.train.x, eager.train.x
    perm = torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))[:17]   # a shuffled batch, as training
    mask = np.arange(len(ref)) % 3 == 0
    for index in (perm, perm.numpy(), perm.tolist(), slice(3, 20, 2), mask, [5, 5, 0], torch.tensor([-1])):
        assert torch.equal(x[index], ref[index]), index
    assert torch.equal(x[4], ref[4]) and torch.equal(x[:, 0], ref[:, 0]) and torch.equal(x[2, 0, 12], ref[2, 0, 12])
    assert torch.equal(lazy.train.subset(perm).x[:], ref[perm])
    assert torch.equal(lazy.train.subset(perm).eta_map, eager.train.eta_map[perm])
    image, label = lazy.train[7]   # a map-style Dataset too
    assert torch.equal(image, ref[7]) and int(label) == int(eager.train.y[7])
    assert torch.equal(pickle.loads(pickle.dumps(x))[0:5], ref[0:5])   # what DataLoader workers get
    assert torch.equal(torch.cat([c for _s, c in x.chunks(7)]), ref)
    assert torch.equal(lazy.test.in_memory().x, eager.test.x) and torch.equal(x.max(), ref.max())
    with pytest.raises(StableTrainError, match="out of range"):
        x[len(ref)]


class _CountingDataset:
    """Wraps h5py datasets' reads: records (dataset name, rows read) for every read."""

    def __init__(self, monkeypatch):
        self.reads = []
        original = h5py.Dataset.__getitem__
        calls = self.reads

        def counting(dataset, key):
            out = original(dataset, key)
            rows = int(np.shape(out)[0]) if np.ndim(out) else 1
            calls.append((dataset.name, rows))
            return out

        monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)

    def rows(self, name):
        return sum(r for n, r in self.reads if n == name)


def test_loading_reads_no_image_and_a_batch_reads_only_the_chunks_of_its_rows_once(tmp_path, monkeypatch):
    from stabletrain.jets import data as jets_data

    monkeypatch.setattr(jets_data, "_DECODED", {})   # no chunk cached by an earlier test
    write_image_file(tmp_path / "big.h5", n=64, seed=3)   # storage chunks of 8 rows
    counter = _CountingDataset(monkeypatch)
    split = load_jets(str(tmp_path / "big.h5"))
    assert counter.rows("/images") == 0 and counter.rows("/label") == 64   # labels whole, images not at all

    def chunks(positions):
        return {int(split.train.x.rows[p]) // 8 for p in positions}

    split.train.x[torch.tensor([9, 2, 30])]
    first = chunks([9, 2, 30])
    assert counter.rows("/images") == 8 * len(first)            # whole chunks, only those holding the rows
    split.train.x[4:12]
    assert counter.rows("/images") == 8 * len(first | chunks(range(4, 12)))   # cached chunks are not read again
    load_jets(str(tmp_path / "big.h5"), lazy=False)
    assert counter.rows("/images") == 8 * len(first | chunks(range(4, 12))) + 64   # the whole load reads them all


def test_the_decoded_chunk_cache_keeps_its_budget_and_forgets_a_rewritten_file(tmp_path, monkeypatch):
    from stabletrain.jets import data as jets_data

    monkeypatch.setattr(jets_data, "_DECODED", {})
    images, _ = write_image_file(tmp_path / "c.h5", n=64, seed=6)   # 8 chunks of 8 × 25 × 25 float32 = 20 kB
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = np.unique(rng.integers(0, 64, 10))
        np.testing.assert_array_equal(jets_data.read_rows(str(tmp_path / "c.h5"), "images", rows, cache_mb=1),
                                      images[rows])
    cache = next(iter(jets_data._DECODED.values()))[1]
    assert cache.reads == 8 and cache.used == 8 * 8 * 25 * 25 * 4   # all chunks fit 1 MiB: each read once
    small = jets_data._DecodedChunks(3 * 8 * 25 * 25 * 4)          # room for three chunks
    with h5py.File(tmp_path / "c.h5", "r") as handle:
        for block in (0, 1, 2, 3, 0, 4, 3):
            np.testing.assert_array_equal(small.rows(handle["images"], np.array([8 * block + 1])),
                                          images[[8 * block + 1]])
    assert list(small.blocks) == [0, 4, 3] and small.used == small.budget   # least recently used dropped first
    assert small.reads == 6                                          # 0 was dropped before it was asked again
    newer, _ = write_image_file(tmp_path / "d.h5", n=64, seed=7)
    (tmp_path / "d.h5").replace(tmp_path / "c.h5")                  # the file is replaced: no stale rows
    np.testing.assert_array_equal(jets_data.read_rows(str(tmp_path / "c.h5"), "images", np.arange(5)), newer[:5])


def test_the_same_tiny_run_trains_the_same_model_on_lazy_and_eager_data(tmp_path):
    from stabletrain.training import TrainConfig, train

    write_image_file(tmp_path / "s.h5", n=48, seed=4)
    states = {}
    for lazy in (False, True):
        for workers in (0, 1):   # a DataLoader worker gets a pickled copy of the rows and opens its own handles
            config = TrainConfig(task="jets", data=str(tmp_path / "s.h5"), model="small_cnn", method="plain",
                                 epochs=2, batch_size=8, model_args={"width": 4}, workers=workers)
            data = load_jets(str(tmp_path / "s.h5"), lazy=lazy)
            result = train(config, tmp_path / f"{lazy}-{workers}", progress=False, data=data)
            states[lazy, workers] = (result.model.state_dict(), result.history)
    for workers in (0, 1):
        eager, lazy = states[False, workers], states[True, workers]
        for key, value in eager[0].items():
            assert torch.equal(value, lazy[0][key]), (workers, key)
        assert [h["test_auc"] for h in lazy[1]] == [h["test_auc"] for h in eager[1]]


def test_pixel_statistics_stream_in_chunks_and_match_the_whole_load(tmp_path):
    from stabletrain.jets.tagging import _pixel_stats

    write_image_file(tmp_path / "s.h5", n=40, seed=5)
    lazy, eager = load_jets(str(tmp_path / "s.h5")), load_jets(str(tmp_path / "s.h5"), lazy=False)
    whole = eager.train.x[:, 0].flatten(1).double()
    for chunk in (1, 7, 4096):
        mean, std = pixel_moments(lazy.train.x, chunk=chunk)
        assert torch.allclose(mean, whole.mean(0), rtol=1e-12, atol=1e-15)
        assert torch.allclose(std, whole.std(0), rtol=1e-10, atol=1e-15)
    assert _pixel_stats(lazy) == _pixel_stats(eager)   # what --jet-input standardize builds the tagger with


def test_each_lazy_batch_is_checked_as_the_whole_load_checks_every_image(tmp_path):
    write_image_file(tmp_path / "hot.h5", n=32, seed=6, hot=5)
    with pytest.raises(StableTrainError, match="exceeds the unit of 1000 GeV"):
        load_jets(str(tmp_path / "hot.h5"), lazy=False)
    split = load_jets(str(tmp_path / "hot.h5"), split_seed=0)
    where = int(np.flatnonzero(split.train.x.rows == 5)[0]) if 5 in split.train.x.rows else None
    part, position = (split.train, where) if where is not None else \
        (split.test, int(np.flatnonzero(split.test.x.rows == 5)[0]))
    part.x[[i for i in range(len(part)) if i != position][:4]]   # batches without the hot jet read fine
    with pytest.raises(StableTrainError, match="exceeds the unit of 1000 GeV"):
        part.x[[position]]
    assert torch.equal(load_jets(str(tmp_path / "hot.h5"), unit_gev=2000.0).test.x[:],
                       load_jets(str(tmp_path / "hot.h5"), unit_gev=2000.0, lazy=False).test.x)


def test_a_rewritten_file_is_read_afresh_and_bad_files_are_one_clear_error(tmp_path):
    import os

    def replace(path, drop=None, **kwargs):   # as generation writes: a new file moved into place
        fresh = path.with_name("fresh.h5")
        write_image_file(fresh, **kwargs)
        if drop:
            with h5py.File(fresh, "a") as f:
                del f[drop]
        os.replace(fresh, path)

    path = tmp_path / "s.h5"
    write_image_file(path, n=16, seed=7)
    before = load_jets(str(path)).test.x[:]
    replace(path, n=16, seed=8)   # the same path, other images
    again = load_jets(str(path), lazy=False)
    assert torch.equal(load_jets(str(path)).test.x[:], again.test.x) and not torch.equal(before, again.test.x)
    replace(path, drop="images", n=16, seed=8)
    with pytest.raises(StableTrainError, match="lacks dataset"):
        load_jets(str(path))
    with pytest.raises(StableTrainError, match="not found"):
        load_jets(str(tmp_path / "missing.h5"))
    write_image_file(tmp_path / "small.h5", n=8, pixels=9)
    write_image_file(tmp_path / "other.h5", n=8, pixels=11, meta_pixels=9)   # a file that misstates them
    with pytest.raises(StableTrainError, match="images of different sizes"):
        load_jets(f"{tmp_path / 'small.h5'},{tmp_path / 'other.h5'}")


def test_the_row_array_is_one_class_for_images_and_clouds():
    from stabletrain.jets.clouds import CloudArray

    assert issubclass(ImageRows, H5Rows) and issubclass(CloudArray, H5Rows)
    assert issubclass(JetImages, torch.utils.data.Dataset)


def test_the_block_shuffle_takes_effect_and_gives_lazy_and_eager_data_the_same_run(tmp_path):
    from stabletrain.jets.tagging import JetTaggingTask
    from stabletrain.training import TrainConfig, train

    write_image_file(tmp_path / "s.h5", n=48, seed=4)
    data = load_jets(str(tmp_path / "s.h5"))
    full = JetTaggingTask().batches(data, 8, torch.Generator().manual_seed(0))
    blocks = JetTaggingTask(shuffle_block=4, shuffle_window=2).batches(data, 8, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(blocks).tolist()) == sorted(torch.cat(full).tolist())   # the same rows, once each
    # a window is 2 blocks of 4 consecutive rows, so a batch of 8 straddles at most two windows: 4 blocks
    assert max(len(set((b // 4).tolist())) for b in blocks) <= 4 < max(len(set((b // 4).tolist())) for b in full)
    runs = {}
    for lazy in (True, False):
        config = TrainConfig(task="jets", data=str(tmp_path / "s.h5"), model="small_cnn", method="plain", epochs=1,
                             batch_size=8, model_args={"width": 4}, shuffle_block=4)
        assert config.task_args["shuffle_block"] == 4
        result = train(config, tmp_path / f"blocks-{lazy}", progress=False, data=load_jets(str(tmp_path / "s.h5"),
                                                                                            lazy=lazy))
        runs[lazy] = result.model.state_dict()
    plain = train(TrainConfig(task="jets", data=str(tmp_path / "s.h5"), model="small_cnn", method="plain", epochs=1,
                              batch_size=8, model_args={"width": 4}), tmp_path / "full", progress=False).model
    assert all(torch.equal(runs[True][k], runs[False][k]) for k in runs[True])
    assert not all(torch.equal(runs[True][k], v) for k, v in plain.state_dict().items())   # another order


@pytest.mark.parametrize("options,message", [({"shuffle_block": -1}, "shuffle_block must be an integer >= 0"),
                                             ({"shuffle_block": 2.5}, "shuffle_block must be an integer"),
                                             ({"shuffle_window": 8}, "no effect without shuffle_block"),
                                             ({"shuffle_block": 4, "shuffle_window": 0}, "shuffle_window must be")])
def test_bad_block_shuffle_options_are_rejected(options, message):
    from stabletrain.jets.tagging import JetTaggingTask

    with pytest.raises(StableTrainError, match=message):
        JetTaggingTask(**options)
