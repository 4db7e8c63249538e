"""Streaming sources (folders, file lists, tar shards), per-example determinism and loader errors."""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stabletrain.checks import StableTrainError
from stabletrain.data.streams import (EpochKeys, ImageFiles, PathTable, ShardStream, expand_shards, iterate,
                                      load_stream, make_loader, make_transforms, open_shards, read_file_list,
                                      sample_id, scan_image_folder)
from stabletrain.data.transforms import EvalTransform, TrainTransform, to_tensor_uint8

webdataset = pytest.importorskip("webdataset")


def _noise(seed: int, size: tuple[int, int] = (40, 32), gray: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def _solid(color: tuple[int, int, int], size: int = 20) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def _class_folder(root: Path, counts: dict[str, int], fmt: str = "png", gray: bool = False, start: int = 0) -> Path:
    seed = start
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _noise(seed, gray=gray).save(root / name / f"{i:03d}.{fmt}")
            seed += 1
    return root


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _write_shards(folder: Path, prefix: str, shards: int, per_shard: int, *, classes: int = 3,
                  label: str = "cls", start: int = 0) -> dict[int, tuple[bytes, int]]:
    """Shards ``prefix-000.tar``…; returns {sample id: (png bytes, label)}."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = {}
    n = start
    for s in range(shards):
        path = folder / f"{prefix}-{s:03d}.tar"
        with webdataset.TarWriter(str(path)) as sink:
            for _ in range(per_shard):
                png, y, key = _encoded(_noise(n, (24, 20))), n % classes, f"sample{n:05d}"
                record = {"__key__": key, "png": png}
                record.update({"cls": str(y)} if label == "cls" else {"json": {"label": y}})
                sink.write(record)
                samples[sample_id(path.name, key)] = (png, y)
                n += 1
    return samples


def _collect(loader) -> dict[int, tuple[torch.Tensor, int]]:
    out: dict[int, tuple[torch.Tensor, int]] = {}
    for x, y, ids in iterate(loader):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and ids.dtype == torch.int64
        for image, label, ident in zip(x, y.tolist(), ids.tolist()):
            assert ident not in out, f"example {ident} came twice"
            out[ident] = (image.clone(), label)
    return out


# ------------------------------------------------------------------------------------- per-example determinism

def test_image_files_same_example_same_pixels_for_any_workers_and_batch_size(tmp_path):
    split = scan_image_folder(_class_folder(tmp_path, {"a": 7, "b": 7}), image_size=16, test_fraction=0.3)
    train = split.train
    n = len(train)
    runs = []
    for workers, batch in [(0, 1), (2, 7)]:
        loader = make_loader(train, batch_size=batch, sampler=EpochKeys(range(n), epoch=3), workers=workers)
        runs.append(_collect(loader))
        del loader
    shuffled = np.random.default_rng(1).permutation(n).tolist()
    batches = EpochKeys([shuffled[i:i + 7] for i in range(0, n, 7)], epoch=3)
    runs.append(_collect(make_loader(train, batch_sampler=batches, workers=2)))
    for run in runs[1:]:
        assert run.keys() == runs[0].keys() == set(range(n))
        assert all(torch.equal(run[i][0], runs[0][i][0]) for i in range(n))
    # a direct call with the same (epoch, index) is the same tensor; another epoch is another crop
    assert torch.equal(train[(3, 2)][0], runs[0][2][0])
    other_epoch = _collect(make_loader(train, batch_size=4, sampler=EpochKeys(range(n), epoch=4)))
    assert sum(not torch.equal(other_epoch[i][0], runs[0][i][0]) for i in range(n)) >= n - 1
    assert all(other_epoch[i][1] == runs[0][i][1] == int(train.labels[i]) for i in range(n))


def test_shard_stream_same_example_same_pixels_for_any_layout_and_epochs_reach_workers(tmp_path):
    _write_shards(tmp_path, "train", shards=4, per_shard=4)
    shards = expand_shards(str(tmp_path / "train-{000..003}.tar"))
    train_t, _ = make_transforms(16, "crop-flip")

    def stream(**kw):
        return ShardStream(shards, transform=train_t, channels=3, seed=5, shuffle=True, shuffle_buffer=5, **kw)

    single = [_collect(make_loader(stream(rank=0, world_size=1), batch_size=1)) for _ in range(1)][0]
    parallel = stream(rank=0, world_size=1)
    loader = make_loader(parallel, batch_size=7, workers=2)
    epoch0 = _collect(loader)
    assert epoch0.keys() == single.keys() and len(single) == 16
    assert all(torch.equal(epoch0[i][0], single[i][0]) for i in single)
    parallel.set_epoch(1)  # must reach the persistent workers
    epoch1 = _collect(loader)
    reference = stream(rank=0, world_size=1)
    reference.set_epoch(1)
    expected1 = _collect(make_loader(reference, batch_size=3))
    assert all(torch.equal(epoch1[i][0], expected1[i][0]) for i in expected1)
    assert sum(not torch.equal(epoch1[i][0], epoch0[i][0]) for i in epoch0) >= 15


# --------------------------------------------------------------------------------------------- image folders

def test_folder_with_train_and_val_subfolders_uses_them(tmp_path, caplog):
    _class_folder(tmp_path / "train", {"ant": 3, "bee": 3, "cow": 2})
    _class_folder(tmp_path / "val", {"ant": 1, "bee": 2}, start=100)
    with caplog.at_level(logging.WARNING, logger="stabletrain.data"):
        split = load_stream(str(tmp_path), image_size=16)
    assert split.classes == ["ant", "bee", "cow"]
    assert len(split.train) == 8 and len(split.test) == 3
    test_files = [Path(split.test.files[i]).relative_to(tmp_path).as_posix() for i in range(3)]
    assert test_files == ["val/ant/000.png", "val/bee/000.png", "val/bee/001.png"]
    assert split.test.labels.tolist() == [0, 1, 1]
    assert split.info["classes_missing_from_test"] == ["cow"] and "cow" in caplog.text
    assert split.describe()["split"] == "folders train/ and val/"
    assert isinstance(split.test.transform, EvalTransform) and isinstance(split.train.transform, TrainTransform)
    _class_folder(tmp_path / "val", {"dog": 1}, start=200)
    with pytest.raises(StableTrainError, match="class folder.*that .*train lacks: dog"):
        scan_image_folder(tmp_path, image_size=16)


def test_folder_without_split_is_a_seeded_stratified_split_like_the_in_memory_loader(tmp_path):
    from stabletrain.data import load_image_folder

    colors = {}
    for label, (name, count) in enumerate({"a": 10, "b": 5}.items()):
        (tmp_path / name).mkdir()
        for i in range(count):
            color = (label * 120, i * 20, 7 + i)
            _solid(color).save(tmp_path / name / f"{i}.png")
            colors[str(tmp_path / name / f"{i}.png")] = color

    def test_colors(split_seed):
        split = scan_image_folder(tmp_path, split_seed=split_seed, image_size=16, channels=3)
        return sorted(colors[split.test.files[i]] for i in range(len(split.test))), split

    first, split = test_colors(0)
    assert first == test_colors(0)[0]
    assert np.bincount(split.test.labels).tolist() == [2, 1]  # 20 % of each class
    assert np.bincount(split.train.labels).tolist() == [8, 4]
    assert any(test_colors(s)[0] != first for s in range(1, 5))
    memory = load_image_folder(tmp_path, image_size=16, split_seed=0)  # the same test set as the in-memory loader
    in_memory = sorted(tuple(int(round(float(v) * 255)) for v in x[:, 0, 0]) for x in memory.test.x)
    assert in_memory == first


def test_folder_listing_skips_non_images_opens_nothing_and_rejects_empty_classes(tmp_path, caplog):
    _class_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "b" / "garbage.jpg").write_bytes(b"not a jpeg at all")  # listed, not opened
    with caplog.at_level(logging.WARNING, logger="stabletrain.data"):
        split = scan_image_folder(tmp_path, image_size=16, channels=3, test_fraction=0.34)
    assert "skipped 1 non-image file(s)" in caplog.text and "notes.txt" in caplog.text
    assert len(split.train) + len(split.test) == 7
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.md").write_text("x")
    with pytest.raises(StableTrainError, match=r"class folder .*c holds no image files \(only 1 non-image"):
        scan_image_folder(tmp_path, image_size=16)
    with pytest.raises(StableTrainError, match="data folder not found"):
        scan_image_folder(tmp_path / "nowhere")


def test_auto_channels_reads_headers_only(tmp_path):
    gray = scan_image_folder(_class_folder(tmp_path / "g", {"a": 3, "b": 3}, gray=True, fmt="jpg"), image_size=16)
    assert gray.channels == 1 and gray.train[0][0].shape == (1, 16, 16)
    mixed = tmp_path / "m"
    _class_folder(mixed, {"a": 3, "b": 3}, gray=True)
    _noise(99).save(mixed / "b" / "color.png")
    assert scan_image_folder(mixed, image_size=16).channels == 3


def test_unreadable_image_is_one_clear_line_through_iterate_with_workers(tmp_path):
    _class_folder(tmp_path, {"a": 4, "b": 4})
    (tmp_path / "a" / "x.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    split = scan_image_folder(tmp_path, image_size=16, channels=3, test_fraction=0.25)
    data = split.train if any(f.endswith("x.jpg") for f in split.train.files) else split.test
    loader = make_loader(data, batch_size=2, workers=2)
    with pytest.raises(StableTrainError) as caught:
        for _ in iterate(loader):
            pass
    message = str(caught.value)
    assert message == f"not a readable image file: {tmp_path / 'a' / 'x.jpg'} (UnidentifiedImageError)"
    assert "Original Traceback" not in message and "Caught" not in message and "\n" not in message
    (tmp_path / "a" / "x.jpg").write_bytes(_encoded(_noise(7), "JPEG"))  # fixed: the loader starts fresh workers
    assert sum(len(y) for _, y, _ in iterate(loader)) == len(data)
    del caught  # its traceback holds this frame, hence the loader: free the loader now, not in a gc cycle


# ------------------------------------------------------------------------------------------------ file lists

def _images(folder: Path, n: int, gray: bool = False) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        _noise(i, gray=gray).save(folder / f"img {i}.png")
        names.append(f"img {i}.png")
    return names


def test_csv_with_class_names_header_and_relative_paths(tmp_path):
    names = _images(tmp_path / "pics", 9)
    labels = ["zebra", "ant", "moth"] * 3
    rows = "\n".join(f"pics/{n},{y}" for n, y in zip(names, labels))
    (tmp_path / "list.csv").write_text("path,label\n" + rows + "\n")
    split = read_file_list(tmp_path / "list.csv", image_size=16, test_fraction=0.34)
    assert split.classes == ["ant", "moth", "zebra"]
    assert len(split.train) == 6 and len(split.test) == 3
    everything = {split.train.files[i]: split.classes[y] for i, y in enumerate(split.train.labels)}
    everything.update({split.test.files[i]: split.classes[y] for i, y in enumerate(split.test.labels)})
    assert everything == {str(tmp_path / "pics" / n): y for n, y in zip(names, labels)}
    assert np.bincount(split.test.labels).tolist() == [1, 1, 1]


def test_list_with_integer_labels_follows_the_npz_rules(tmp_path):
    names = _images(tmp_path, 8)
    (tmp_path / "list.txt").write_text("\n".join(f"{n} {7 if i % 2 else 3}" for i, n in enumerate(names)))
    split = read_file_list(tmp_path / "list.txt", image_size=16, test_fraction=0.25)
    assert split.classes == ["3", "7"]  # the values that occur, renumbered 0..K-1
    assert sorted(split.train.labels.tolist() + split.test.labels.tolist()) == [0] * 4 + [1] * 4
    (tmp_path / "bad.txt").write_text("\n".join(f"{n} {-1 if i == 0 else i % 2}" for i, n in enumerate(names)))
    with pytest.raises(StableTrainError, match=r"labels must be 0..K-1 .*holds -1 \(1 image"):
        read_file_list(tmp_path / "bad.txt", image_size=16)


def test_list_with_split_column_and_a_separate_root(tmp_path):
    names = _images(tmp_path / "data", 8)
    splits = ["train", "train", "train", "val", "train", "train", "train", "test"]
    lines = [f"{n},{i % 2},{s}" for i, (n, s) in enumerate(zip(names, splits))]
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "s.csv").write_text("\n".join(lines))
    split = read_file_list(tmp_path / "lists" / "s.csv", root=tmp_path / "data", image_size=16)
    assert sorted(split.test.files) == sorted(str(tmp_path / "data" / names[i]) for i in (3, 7))
    assert len(split.train) == 6 and split.info["split"] == "split column"
    (tmp_path / "lists" / "bad.csv").write_text("\n".join(lines[:-1] + [f"{names[7]},1,holdout"]))
    with pytest.raises(StableTrainError, match="line 8: split must be train, val or test"):
        read_file_list(tmp_path / "lists" / "bad.csv", root=tmp_path / "data", image_size=16)


def test_list_naming_a_missing_file_is_one_error_naming_the_line(tmp_path):
    names = _images(tmp_path, 6)
    rows = [f"{n},{i % 2}" for i, n in enumerate(names)]
    rows.insert(3, "gone.png,1")
    (tmp_path / "list.csv").write_text("# my list\npath,label\n" + "\n".join(rows))
    with pytest.raises(StableTrainError) as caught:
        read_file_list(tmp_path / "list.csv", image_size=16)
    assert str(caught.value) == f"{tmp_path / 'list.csv'}, line 6: image file not found: {tmp_path / 'gone.png'}"


# ---------------------------------------------------------------------------------------------------- shards

def test_shards_every_sample_exactly_once_across_ranks_and_workers(tmp_path):
    samples = _write_shards(tmp_path, "train", shards=5, per_shard=3)
    shards = expand_shards(str(tmp_path / "train-{000..004}.tar"))
    _, eval_t = make_transforms(16)
    for shuffle in (False, True):
        for files in (shards, shards[:1]):  # one shard: ranks and workers split by sample instead
            seen: list[int] = []
            for rank in range(2):
                stream = ShardStream(files, transform=eval_t, channels=3, shuffle=shuffle, shuffle_buffer=4,
                                     rank=rank, world_size=2)
                seen += list(_collect(make_loader(stream, batch_size=2, workers=2)))
            expected = {i for i, _ in samples.items()} if files is shards else \
                {sample_id(os.path.basename(files[0]), f"sample{n:05d}") for n in range(3)}
            assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected


def _batches(loader) -> list[tuple[list[int], torch.Tensor]]:
    return [(ids.tolist(), x) for x, _, ids in iterate(loader)]


def test_planned_epochs_give_every_rank_the_same_whole_batches(tmp_path):
    """Ranks must take equal steps. Equal shards in a multiple of ranks x workers are read exactly once; uneven
    ones (9 and 6 samples per rank) still give every rank the planned batches, and epoch_balance predicts the
    samples read twice and left over."""
    samples = _write_shards(tmp_path / "even", "train", shards=8, per_shard=3)
    _write_shards(tmp_path / "uneven", "train", shards=5, per_shard=3)
    train_t, _ = make_transforms(16)
    for folder, batches, batch in (("even", 4, 3), ("uneven", 3, 2)):
        shards = expand_shards(str(tmp_path / folder))
        seen: list[int] = []
        again = left = 0
        for rank in range(2):
            stream = ShardStream(shards, transform=train_t, channels=3, shuffle=True, shuffle_buffer=4, seed=3,
                                 rank=rank, world_size=2)
            stream.plan_epoch(batches=batches, batch_size=batch)
            got = _batches(make_loader(stream, batch_size=batch, workers=2))
            assert [len(ids) for ids, _ in got] == [batch] * batches, (folder, rank)
            ids = [i for ids, _ in got for i in ids]
            seen += ids
            predicted = stream.epoch_balance(0, workers=2)
            assert predicted[0] == len(ids) - len(set(ids)), (folder, rank)
            again, left = again + predicted[0], left + predicted[1]
        if folder == "even":
            assert (again, left) == (0, 0) and sorted(seen) == sorted(samples)
        else:
            assert again > 0 and len(set(seen)) == 15 - left
    stream.plan_epoch(0, 0)  # back to one pass over the rank's shards
    assert len(_collect(make_loader(stream, batch_size=2))) == 6


def test_a_planned_epoch_longer_than_the_shards_repeats_samples_with_new_augmentation(tmp_path):
    _write_shards(tmp_path, "one", shards=1, per_shard=3)
    train_t, _ = make_transforms(16)
    stream = ShardStream(expand_shards(str(tmp_path)), transform=train_t, channels=3, shuffle=True, seed=1)
    stream.plan_epoch(batches=3, batch_size=2)
    items = [(ident, x) for x, _, ident in stream]
    ids = [ident for ident, _ in items]
    assert len(ids) == 6 and len(set(ids)) == 3
    first, again = [[x for ident, x in items if ident == i] for i in (ids[0],)][0][:2]
    assert not torch.equal(first, again)


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_resumed_epoch_gives_the_rest_of_the_uninterrupted_epoch(tmp_path, workers):
    """Skipping s batches (a mid-epoch resume) yields batches s, s+1, ... of the whole epoch, pixels included:
    the DataLoader deals batch k to worker k % W, so each worker plays the one the whole epoch used."""
    _write_shards(tmp_path, "train", shards=4, per_shard=4)
    shards = expand_shards(str(tmp_path / "train-{000..003}.tar"))
    train_t, _ = make_transforms(16)

    def epoch(skip):
        stream = ShardStream(shards, transform=train_t, channels=3, shuffle=True, shuffle_buffer=3, seed=2,
                             rank=0, world_size=1)
        stream.set_epoch(1)
        stream.plan_epoch(batches=7, batch_size=2, skip=skip)
        return _batches(make_loader(stream, batch_size=2, workers=workers))

    whole = epoch(0)
    assert len(whole) == 7
    for skip in (1, 2, 5, 7):
        rest = epoch(skip)
        assert [ids for ids, _ in rest] == [ids for ids, _ in whole[skip:]], skip
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(rest, whole[skip:]))
    with pytest.raises(StableTrainError, match="skip <= batches"):
        ShardStream(shards, transform=train_t, channels=3).plan_epoch(batches=2, batch_size=2, skip=3)


def test_shard_sample_count_reads_headers_like_webdataset_groups_samples(tmp_path):
    path = tmp_path / "multi-000.tar"
    with webdataset.TarWriter(str(path)) as sink:
        for n in range(5):
            sink.write({"__key__": f"dir/s{n}", "png": _encoded(_noise(n, (8, 8))), "cls": "0", "json": {"n": n}})
    with tarfile.open(path, "a") as tar:  # a webdataset metadata file is no sample
        info = tarfile.TarInfo("__index__")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    stream = ShardStream([str(path)], transform=EvalTransform(8), channels=3)
    assert stream.count() == stream.num_samples == sum(1 for _ in stream) == 5


def test_shard_pixels_and_labels_equal_pillow_decode_of_the_same_bytes(tmp_path):
    samples = _write_shards(tmp_path, "part", shards=2, per_shard=3, label="json")
    stream = ShardStream(expand_shards(str(tmp_path)), transform=EvalTransform(24, crop_pct=1.0), channels=3)
    got = _collect(make_loader(stream, batch_size=4))
    assert got.keys() == samples.keys()
    for ident, (png, label) in samples.items():  # Pillow's own decode, through the same eval transform
        decoded = Image.open(io.BytesIO(png)).convert("RGB")
        expected = to_tensor_uint8(EvalTransform(24, crop_pct=1.0)(decoded), 3)
        assert torch.equal(got[ident][0], expected) and got[ident][1] == label
    square = _write_shards(tmp_path / "sq", "sq", shards=1, per_shard=2)
    exact = ShardStream(expand_shards(str(tmp_path / "sq")), transform=EvalTransform(20, crop_pct=1.0), channels=3)
    for x, _, ident in exact:  # 24×20 image, 20 px centre crop of the shorter side: no resampling at all
        decoded = np.asarray(Image.open(io.BytesIO(square[ident][0])).convert("RGB"))
        assert np.array_equal(x.permute(1, 2, 0).numpy(), decoded[:, 2:22])


def test_open_shards_classes_from_test_labels_or_a_classes_file(tmp_path):
    _write_shards(tmp_path, "train", shards=2, per_shard=4, classes=4)
    _write_shards(tmp_path, "val", shards=1, per_shard=6, classes=3, start=100)
    split = load_stream(f"shards:{tmp_path}/train-{{000..001}}.tar|{tmp_path}/val-000.tar", image_size=16)
    assert split.classes == ["0", "1", "2"] and split.describe()["test_size"] == 6
    assert split.describe()["train_size"] is None and split.streaming
    with pytest.raises(StableTrainError, match=r"sample 'sample00003' has label 3, outside 0..2"):
        list(split.train)
    (tmp_path / "classes.txt").write_text("ant\nbee\ncow\ndog\n")
    split = load_stream(f"{tmp_path}/train-{{000..001}}.tar|{tmp_path}/val-000.tar", image_size=16)
    assert split.classes == ["ant", "bee", "cow", "dog"] and split.describe()["test_size"] is None
    assert sorted(y for _, y, _ in split.train) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_shard_folder_with_train_and_val_and_a_seeded_shard_split(tmp_path):
    _write_shards(tmp_path / "train", "shard", shards=3, per_shard=2)
    _write_shards(tmp_path / "val", "shard", shards=1, per_shard=3, start=50)
    split = load_stream(str(tmp_path), image_size=16, channels=3)
    assert split.info["split"] == "folders train/ and val/"
    assert len(split.train.shards) == 3 and len(split.test.shards) == 1
    held = load_stream(str(tmp_path / "train"), image_size=16, split_seed=1)
    assert len(held.train.shards) == 2 and len(held.test.shards) == 1
    assert held.test.shards == load_stream(str(tmp_path / "train"), image_size=16, split_seed=1).test.shards


def test_empty_missing_and_malformed_shards_are_clear_errors(tmp_path):
    _write_shards(tmp_path, "good", shards=2, per_shard=2)
    with tarfile.open(tmp_path / "empty-000.tar", "w"):
        pass
    with pytest.raises(StableTrainError, match=r"shard .*empty-000.tar holds no samples"):
        open_shards(str(tmp_path / "good-{000..001}.tar"), str(tmp_path / "empty-000.tar"), image_size=16)
    with pytest.raises(StableTrainError, match="holds no samples"):
        list(ShardStream([str(tmp_path / "empty-000.tar")], transform=EvalTransform(16), channels=3))
    with pytest.raises(StableTrainError, match=r"no shard file matches '.*/nothing-\{0..3\}.tar'"):
        load_stream(f"shards:{tmp_path}/nothing-{{0..3}}.tar", image_size=16)
    with pytest.raises(StableTrainError, match="1 of the 3 shards named by .* are missing, e.g. .*good-002.tar"):
        expand_shards(str(tmp_path / "good-{000..002}.tar"))
    with webdataset.TarWriter(str(tmp_path / "nolabel.tar")) as sink:
        sink.write({"__key__": "k1", "png": _encoded(_noise(0))})
    with pytest.raises(StableTrainError, match=r"nolabel.tar: sample 'k1' has no label"):
        list(ShardStream([str(tmp_path / "nolabel.tar")], transform=EvalTransform(16), channels=3))
    with webdataset.TarWriter(str(tmp_path / "noimage.tar")) as sink:
        sink.write({"__key__": "k2", "cls": "1", "txt": "hello"})
    with pytest.raises(StableTrainError, match=r"noimage.tar: sample 'k2' has no image \(it holds cls, txt"):
        list(ShardStream([str(tmp_path / "noimage.tar")], transform=EvalTransform(16), channels=3))
    (tmp_path / "junk.tar").write_bytes(b"\x01" * 700)
    with pytest.raises(StableTrainError, match="not a tar archive: .*junk.tar"):
        open_shards(str(tmp_path / "good-{000..001}.tar"), str(tmp_path / "junk.tar"), image_size=16)


def test_corrupt_image_in_a_shard_names_shard_and_key_through_workers(tmp_path):
    _write_shards(tmp_path, "s", shards=2, per_shard=3)
    with webdataset.TarWriter(str(tmp_path / "s-002.tar")) as sink:
        sink.write({"__key__": "broken", "jpg": b"\xff\xd8\xff\xe0 truncated", "cls": "0"})
    stream = ShardStream(expand_shards(str(tmp_path / "s-{000..002}.tar")), transform=EvalTransform(16), channels=3)
    with pytest.raises(StableTrainError) as caught:
        for _ in iterate(make_loader(stream, batch_size=2, workers=2)):
            pass
    assert str(caught.value).startswith(f"not a readable image file: {tmp_path / 's-002.tar'}:broken.jpg (")
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------ split, loader, memory

def test_channel_stats_are_the_mean_and_std_of_the_eval_images(tmp_path):
    colors = {"a": [(10, 20, 30), (50, 60, 70), (90, 100, 110)], "b": [(200, 0, 100), (0, 255, 0), (30, 30, 30)]}
    for name, values in colors.items():
        (tmp_path / name).mkdir()
        for i, color in enumerate(values):
            _solid(color, 24).save(tmp_path / name / f"{i}.png")
    split = scan_image_folder(tmp_path, image_size=16, test_fraction=0.34)
    train_colors = np.array([np.asarray(Image.open(split.train.files[i]))[0, 0] for i in range(len(split.train))])
    mean, std = split.channel_stats()
    assert mean == pytest.approx((train_colors / 255).mean(0), abs=1e-5)
    assert std == pytest.approx((train_colors / 255).std(0), abs=1e-3)
    described = split.describe()
    assert (described["train_size"], described["test_size"], described["channels"], described["image_size"]) == \
        (4, 2, 3, [16, 16])


def test_make_loader_options_and_worker_threads(tmp_path):
    data = scan_image_folder(_class_folder(tmp_path, {"a": 3, "b": 3}), image_size=16, test_fraction=0.34).train
    loader = make_loader(data, batch_size=3, workers=2, device="cpu")
    assert loader.persistent_workers and not loader.pin_memory
    assert make_loader(data, batch_size=3, device="cuda:0").pin_memory
    assert not make_loader(data, batch_size=3).persistent_workers
    seen = []
    loader.dataset.transform = _ThreadProbe(loader.dataset.transform)
    for x, _, _ in iterate(loader):
        seen += x[:, 0, 0, 0].tolist()
    assert set(seen) == {1}  # torch.get_num_threads() inside the workers
    with pytest.raises(StableTrainError, match="takes no sampler"):
        make_loader(ShardStream([str(tmp_path)], transform=EvalTransform(16), channels=3), batch_size=2,
                    sampler=range(3))
    with pytest.raises(StableTrainError, match="batch size must be a positive integer"):
        make_loader(data)


class _ThreadProbe:
    """A transform that writes the worker's torch thread count into pixel (0, 0)."""

    random = False

    def __init__(self, inner):
        self.inner = inner
        self.size = inner.size

    def __call__(self, image, generator=None):
        out = self.inner(image, generator).copy()
        out.putpixel((0, 0), (torch.get_num_threads(), 0, 0))
        return out


def test_datasets_hold_paths_compactly_and_pickle_small(tmp_path):
    paths = [f"/data/imagenet/train/n{i % 1000:08d}/image_{i:07d}.JPEG" for i in range(20_000)]
    data = ImageFiles(paths, np.arange(20_000) % 1000, transform=EvalTransform(16), channels=3)
    assert isinstance(data.files, PathTable) and data.labels.dtype == np.int64
    assert [data.files[i] for i in (0, 12_345, -1)] == [paths[0], paths[12_345], paths[-1]]
    compact = PathTable.compact(paths)
    assert compact.root == "/data/imagenet/train/" and list(compact) == paths
    size = len(pickle.dumps(data))
    assert size < sum(len(p) for p in paths) + 8 * 2 * len(paths) + 10_000  # bytes + offsets + labels
    assert len(pickle.dumps(compact)) < sum(len(p) - 21 for p in paths) + 8 * len(paths) + 10_000


def test_unknown_augment_and_sources_are_one_line_errors(tmp_path):
    _class_folder(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(StableTrainError, match="unknown augment 'mixup'; choose one of: none, flip, crop-flip"):
        load_stream(str(tmp_path), image_size=16, augment="mixup")
    with pytest.raises(StableTrainError, match="streaming data not found"):
        load_stream(str(tmp_path / "missing.zip"), image_size=16)
    with pytest.raises(StableTrainError, match="file list not found"):
        load_stream(str(tmp_path / "missing.csv"), image_size=16)
    flip = load_stream(str(tmp_path), image_size=16, augment="flip", test_fraction=0.34)
    assert not flip.train.transform.crop and flip.train.transform.flip
