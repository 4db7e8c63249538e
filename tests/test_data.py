import numpy as np
import pytest
import torch
from PIL import Image

from stabletrain.checks import StableTrainError
from stabletrain.data import PHOTO_SOURCES, load_data, load_digits, load_photos, stratified_split


def test_digits_are_the_1797_real_digits(digits):
    from sklearn.datasets import load_digits as sk

    assert len(digits.train) + len(digits.test) == 1797
    assert digits.num_classes == 10 and digits.channels == 1 and digits.image_size == (32, 32)
    assert 0.0 <= float(digits.train.x.min()) and float(digits.train.x.max()) <= 1.0
    # Downscaling back to 8×8 recovers the original 16-level images closely.
    ref = torch.tensor(sk().images, dtype=torch.float32) / 16
    train_idx, _ = stratified_split(sk().target, 0.2, 0)
    small = torch.nn.functional.interpolate(digits.train.x[:50], size=(8, 8), mode="area")
    assert float((small[:, 0] - ref[train_idx[:50]]).abs().mean()) < 0.08


def test_digits_size_is_configurable():
    split = load_digits(image_size=16)
    assert split.image_size == (16, 16)


def test_splits_are_seeded_reproducible_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), 25)
    a = stratified_split(labels, 0.2, seed=1)
    b = stratified_split(labels, 0.2, seed=1)
    c = stratified_split(labels, 0.2, seed=2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    train, test = a
    assert not set(train) & set(test) and len(train) + len(test) == 100
    assert np.bincount(labels[test]).tolist() == [5, 5, 5, 5]


def test_photos_tiles_do_not_overlap_between_train_and_test():
    split = load_photos(image_size=32, photo_side=64, sources=["astronaut", "brick", "coffee"])
    assert split.classes == ["astronaut", "brick", "coffee"]
    assert split.channels == 3
    tiles = split.info["tiles_per_source"]
    assert tiles["astronaut"] == 4 and tiles["brick"] == 4 and tiles["coffee"] == 6  # 64×64 → 2×2, 64×96 → 2×3
    assert len(split.train) + len(split.test) == sum(tiles.values())
    # Non-overlapping grid tiles: no test tile shares a pixel block with a training tile.
    train = {t.numpy().tobytes() for t in split.train.x}
    assert not any(t.numpy().tobytes() in train for t in split.test.x)


def test_photo_sources_all_load_offline():
    for name, load in PHOTO_SOURCES.items():
        image = load()
        assert min(image.shape[:2]) >= 170, name


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"junk")
    split = load_data(str(tmp_path), image_size=16)
    assert split.classes == ["cats", "dogs"] and split.channels == 1
    assert split.image_size == (16, 16) and len(split.train) + len(split.test) == 10
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "dogs" / "rgb.png")
    assert load_data(str(tmp_path), image_size=16).channels == 3


def test_image_folder_errors(tmp_path):
    with pytest.raises(StableTrainError, match="data not found"):
        load_data(str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (10, 10)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "b" / "notes.png").write_text("this is not an image")
    with pytest.raises(StableTrainError, match="not a readable image file: .*notes.png"):
        load_data(str(tmp_path))


def test_npz_layouts_and_fixed_test_set(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 12, 12, 3), dtype=np.uint8)
    y = np.repeat([3, 7], 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    split = load_data(str(tmp_path / "d.npz"))
    assert split.channels == 3 and split.image_size == (12, 12) and split.classes == ["3", "7"]
    assert set(split.train.y.tolist()) == {0, 1}
    np.testing.assert_allclose(split.train.x[0].permute(1, 2, 0).numpy() * 255,
                               x[np.flatnonzero(np.isin(np.arange(20), stratified_split(y, 0.2, 0)[0]))[0]], atol=1e-4)
    np.savez(tmp_path / "t.npz", x=x[:, :, :, 0] / 255.0, y=y, x_test=x[:4, :, :, 0] / 255.0, y_test=y[:4])
    fixed = load_data(str(tmp_path / "t.npz"), image_size=16)
    assert len(fixed.test) == 4 and len(fixed.train) == 20 and fixed.image_size == (16, 16)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 8, 8))}, "no array 'y'"),
    ({"y": np.zeros(4)}, "no array 'x'"),
    ({"x": np.full((4, 8, 8), 2.0), "y": np.arange(4)}, r"\[0, 1\]"),
    ({"x": np.full((4, 8, 8), np.nan), "y": np.arange(4)}, "NaN"),
    ({"x": np.zeros((4, 8, 8)), "y": np.arange(3)}, "vector of 4 labels"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "at least two classes"),
    ({"x": np.zeros((4, 8)), "y": np.arange(4)}, "N×H×W"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(StableTrainError, match=message):
        load_data(str(tmp_path / "bad.npz"))


def test_corrupt_npz(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(StableTrainError, match="cannot read"):
        load_data(str(tmp_path / "c.npz"))


from stabletrain.data import load_patches, load_tiled_folder, region_split, sample_triplets, tile_image  # noqa: E402


def test_tile_image_grid_and_positions():
    image = np.arange(5 * 7 * 1, dtype=np.float32).reshape(5, 7, 1)
    tiles, positions = tile_image(image, 2)
    assert tiles.shape == (2 * 3, 1, 2, 2)
    assert positions.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    np.testing.assert_array_equal(tiles[4, 0], image[2:4, 2:4, 0])
    with pytest.raises(StableTrainError, match="patch size 8 is larger than the image"):
        tile_image(image, 8)


def test_region_split_keeps_test_tiles_together():
    positions = np.array([[r, c] for r in range(2) for c in range(5)])
    train, test = region_split(np.zeros(10, dtype=int), positions, 0.2)
    assert sorted(positions[test][:, 1].tolist()) == [4, 4]
    assert len(train) == 8


def test_patches_from_photos_and_from_a_folder(tmp_path):
    split = load_patches("photos")
    assert split.train.positions is not None and split.info["split"] == "region"
    for label in range(split.num_classes):
        train_cols = split.train.positions[split.train.y == label, 1]
        test_cols = split.test.positions[split.test.y == label, 1]
        assert int(test_cols.min()) > int(train_cols.max())
    rng = np.random.default_rng(0)
    for name in ("one.png", "sub/two.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / name)
    own = load_patches(str(tmp_path), image_size=16)
    assert own.classes == ["one.png", "sub/two.png"]
    assert len(own.train) + len(own.test) == 2 * 4 * 6


def test_patch_errors(tmp_path):
    with pytest.raises(StableTrainError, match="holds no images"):
        load_tiled_folder(tmp_path)
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    with pytest.raises(StableTrainError, match="small.png: patch size 32 is larger than the image"):
        load_tiled_folder(tmp_path, image_size=32)
    with pytest.raises(StableTrainError, match="image folder not found"):
        load_tiled_folder(tmp_path / "nope")


def test_sample_triplets_properties():
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 3])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        t = sample_triplets(labels, g)
        assert (labels[t[:, 0]] == labels[t[:, 1]]).all() and (t[:, 0] != t[:, 1]).all()
        assert (labels[t[:, 0]] != labels[t[:, 2]]).all()
        assert 10 not in t[:, 0].tolist()  # the lone member of class 3 cannot anchor a triplet
    a = sample_triplets(labels, torch.Generator().manual_seed(5))
    b = sample_triplets(labels, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(StableTrainError, match="two classes"):
        sample_triplets(torch.zeros(4), g)


def test_patches_refuse_whole_image_sets():
    with pytest.raises(StableTrainError, match="similarity needs 'photos' or a folder of images"):
        load_patches("digits")


# --- bad input that used to get through: empty files, odd labels, tiny splits, stray files -----------------------

@pytest.mark.parametrize("arrays, message", [
    ({}, "holds no arrays"),
    ({"x": np.zeros((0, 8, 8)), "y": np.zeros(0)}, "'x' holds no images"),
    ({"x": np.zeros((0, 8, 8), dtype=np.uint8), "y": np.zeros(0, dtype=int)}, "'x' holds no images"),
    ({"x": np.zeros((6, 8, 8)), "y": np.arange(6) % 2, "x_test": np.zeros((0, 8, 8)), "y_test": np.zeros(0)},
     "'x_test' holds no images"),
])
def test_empty_npz_is_an_error_naming_the_file(tmp_path, arrays, message):
    np.savez(tmp_path / "empty.npz", **arrays)
    with pytest.raises(StableTrainError, match=message) as caught:
        load_data(str(tmp_path / "empty.npz"))
    assert str(tmp_path / "empty.npz") in str(caught.value)


@pytest.mark.parametrize("bad, shown", [(-1, "-1 (3 image(s))"), (10**6, "1000000 (3 image(s))")])
def test_npz_labels_must_be_class_indices(tmp_path, bad, shown):
    y = np.r_[np.repeat([0, 1], 10), np.full(3, bad)]
    np.savez(tmp_path / "d.npz", x=np.zeros((23, 8, 8), dtype=np.uint8), y=y)
    with pytest.raises(StableTrainError, match=r"labels must be 0\.\.K-1 class indices") as caught:
        load_data(str(tmp_path / "d.npz"))
    assert shown in str(caught.value) and str(tmp_path / "d.npz") in str(caught.value)
    # in a fixed test set too, and with class names the bound is the number of names
    np.savez(tmp_path / "t.npz", x=np.zeros((20, 8, 8)), y=y[:20], x_test=np.zeros((3, 8, 8)), y_test=y[20:])
    with pytest.raises(StableTrainError, match=f"'y_test' holds {bad}"):
        load_data(str(tmp_path / "t.npz"))
    np.savez(tmp_path / "n.npz", x=np.zeros((23, 8, 8)), y=y, class_names=np.array(["a", "b"]))
    with pytest.raises(StableTrainError, match=rf"labels must be 0\.\.1, indices into 'class_names'.*'y' holds {bad}"):
        load_data(str(tmp_path / "n.npz"))


def test_npz_legitimate_labels_still_load(tmp_path):
    x = np.zeros((40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "ten.npz", x=x, y=np.arange(40) % 10)
    assert load_data(str(tmp_path / "ten.npz")).classes == [str(c) for c in range(10)]
    np.savez(tmp_path / "float.npz", x=x, y=(np.arange(40) % 2).astype(np.float32))
    assert load_data(str(tmp_path / "float.npz")).classes == ["0", "1"]
    # a subset of classes keeps its values as names and is renumbered 0..K-1
    np.savez(tmp_path / "subset.npz", x=x, y=np.repeat([3, 7], 20))
    subset = load_data(str(tmp_path / "subset.npz"))
    assert subset.classes == ["3", "7"] and set(subset.train.y.tolist()) == {0, 1}
    np.savez(tmp_path / "named.npz", x=x, y=np.arange(40) % 3, class_names=np.array(["cat", "dog", "eel"]))
    assert load_data(str(tmp_path / "named.npz")).classes == ["cat", "dog", "eel"]


def test_too_small_splits_are_errors(tmp_path):
    np.savez(tmp_path / "three.npz", x=np.zeros((3, 8, 8)), y=np.array([0, 1, 1]))
    with pytest.raises(StableTrainError, match=r"three.npz: too few images to split: class '0' has 1 .*at least 2 "
                                               r"training and 1 test"):
        load_data(str(tmp_path / "three.npz"))
    # two per class would leave a single training image per class
    np.savez(tmp_path / "four.npz", x=np.zeros((4, 8, 8)), y=np.array([0, 0, 1, 1]))
    with pytest.raises(StableTrainError, match="too few images to split: class '0' has 2 "):
        load_data(str(tmp_path / "four.npz"))
    # three per class is the minimum at the default test fraction
    np.savez(tmp_path / "six.npz", x=np.zeros((6, 8, 8)), y=np.array([0, 0, 0, 1, 1, 1]))
    six = load_data(str(tmp_path / "six.npz"))
    assert (len(six.train), len(six.test)) == (4, 2)
    np.savez(tmp_path / "fixed.npz", x=np.zeros((6, 8, 8)), y=np.arange(6) % 2, x_test=np.zeros((1, 8, 8)),
             y_test=np.array([0]))
    with pytest.raises(StableTrainError, match="fixed test set 'x_test' needs at least 2 images, got 1"):
        load_data(str(tmp_path / "fixed.npz"))
    np.savez(tmp_path / "fixed1.npz", x=np.zeros((4, 8, 8)), y=np.array([0, 0, 0, 1]), x_test=np.zeros((2, 8, 8)),
             y_test=np.array([0, 1]))
    with pytest.raises(StableTrainError, match="too few training images: class '1' has 1 in 'y'"):
        load_data(str(tmp_path / "fixed1.npz"))


def test_tiny_image_folders_and_one_column_tile_sources_are_errors(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (10, 10), color=40 * i).save(tmp_path / "folder" / cls / f"{i}.png")
    with pytest.raises(StableTrainError, match="too few images to split: class 'a' has 2 "):
        load_data(str(tmp_path / "folder"))
    # a source only one tile wide used to go to the test set whole, leaving no training tiles
    (tmp_path / "tiles").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "tiles" / "wide.png")
    Image.new("RGB", (16, 64)).save(tmp_path / "tiles" / "narrow.png")
    with pytest.raises(StableTrainError, match="class 'narrow.png' has 4 .*0 for training, 4 for testing"):
        load_patches(str(tmp_path / "tiles"), image_size=16)


def test_built_in_data_sets_load_at_default_settings():
    assert load_data("digits").num_classes == 10
    photos = load_data("photos")
    assert photos.num_classes == len(PHOTO_SOURCES) and min(np.bincount(photos.test.y.numpy())) >= 1


def test_image_folder_skips_non_image_and_hidden_files(tmp_path, caplog):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (12, 12), color=30 * i).save(tmp_path / cls / f"{i}.PNG" if i else tmp_path / cls / "0.jpg")
    (tmp_path / "cats" / "notes.txt").write_text("taken in 2019")
    (tmp_path / "dogs" / "LICENSE").write_text("CC-BY")
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"\x00junk")
    (tmp_path / "dogs" / ".hidden").mkdir()
    (tmp_path / "dogs" / ".hidden" / "x.png").write_text("not looked at")
    with caplog.at_level("WARNING", logger="stabletrain.data"):
        split = load_data(str(tmp_path), image_size=8)
    assert len(split.train) + len(split.test) == 6
    lines = [r.getMessage() for r in caplog.records if r.name == "stabletrain.data"]
    assert len(lines) == 1 and lines[0].startswith(f"skipped 2 non-image file(s) in {tmp_path}: "), lines
    assert "notes.txt" in lines[0] and "LICENSE" in lines[0] and ".DS_Store" not in lines[0]
    # a file with an image extension that is not an image stays an error naming it
    (tmp_path / "dogs" / "x.png").write_text("this is not an image")
    with pytest.raises(StableTrainError, match="not a readable image file: .*x.png"):
        load_data(str(tmp_path), image_size=8)
    (tmp_path / "dogs" / "x.png").unlink()
    # a class folder with nothing but stray files
    (tmp_path / "eels").mkdir()
    (tmp_path / "eels" / "readme.md").write_text("todo")
    with pytest.raises(StableTrainError, match=r"class folder .*eels holds no image files \(only 1 non-image"):
        load_data(str(tmp_path), image_size=8)


def test_tiled_folder_skips_non_image_files(tmp_path, caplog):
    Image.new("RGB", (64, 64)).save(tmp_path / "one.png")
    Image.new("RGB", (64, 64), color=(200, 0, 0)).save(tmp_path / "two.png")
    (tmp_path / "notes.txt").write_text("photos from the trip")
    with caplog.at_level("WARNING", logger="stabletrain.data"):
        split = load_patches(str(tmp_path), image_size=16)
    assert split.classes == ["one.png", "two.png"]
    assert any("skipped 1 non-image file(s)" in r.getMessage() for r in caplog.records)
