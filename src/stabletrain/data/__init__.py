"""Image-classification data with no downloads.

Sources, selected by :func:`load_data`:

* ``digits`` — the 1,797 real 8×8 handwritten digits that scikit-learn
  ships, resized to ``image_size`` (default 32) with bilinear interpolation.
* ``photos`` — patches of the real photographs that scikit-image and
  scikit-learn ship; the label is the source photograph. Each photograph is
  resized so its shorter side is ``photo_side`` pixels and cut into a grid of
  non-overlapping ``image_size`` tiles. Tiles, not random crops, are split
  into train and test, so no test patch overlaps a training patch.
* a folder with one sub-folder per class, holding image files;
* an ``.npz`` file with arrays ``x`` (images) and ``y`` (integer labels),
  and optionally ``x_test``/``y_test`` for a fixed test set and
  ``class_names``.

All images become ``N×C×H×W`` float32 tensors in [0, 1]. Splits are
stratified and seeded by ``split_seed``, which is separate from the training
seed, so every run of every method sees the same test set.

Folders: only files whose extension is in :data:`IMAGE_EXTENSIONS` are
read. Hidden files and folders (``.DS_Store``, ``.git``) are skipped
silently; other files (``notes.txt``, ``labels.csv``) are skipped and
counted in one warning on the ``stabletrain.data`` :mod:`logging` logger.
A file with an image extension that cannot be decoded is an error naming
the file.

Split sizes: a split made here (random or region) must leave every class
at least :data:`MIN_TRAIN_PER_CLASS` (2) training images and
:data:`MIN_TEST_PER_CLASS` (1) test image, so with the default test
fraction of 0.2 every class needs at least 3 images. A fixed test set from
an ``.npz`` file needs at least 2 images, and each class in ``y`` at least
2 training images. Smaller data sets are an error, not a warning.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..checks import StableTrainError
from ..registry import DATA

__all__ = ["ImageDataset", "DataSplit", "load_data", "stream_only", "can_stream", "STREAM_IMAGE_SIZE", "load_digits", "load_photos", "load_image_folder",
           "load_tiled_folder", "load_npz", "load_patches", "PHOTO_SOURCES", "stratified_split", "region_split",
           "tile_image", "IMAGE_EXTENSIONS", "MIN_TRAIN_PER_CLASS", "MIN_TEST_PER_CLASS"]

logger = logging.getLogger(__name__)

#: File extensions (lower case) that folder data sets read as images; other files are skipped.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k"})
#: Smallest number of training images per class that a split made by stabletrain may leave.
MIN_TRAIN_PER_CLASS = 2
#: Smallest number of test images per class that a split made by stabletrain may leave.
MIN_TEST_PER_CLASS = 1
#: Without ``class_names``, an ``.npz`` label must be below ``max(number of images, this)``.
MAX_LABEL_FLOOR = 1000


@dataclass
class ImageDataset:
    """Images ``x`` (``N×C×H×W`` float32 in [0, 1]) with integer labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor
    #: For tiles cut from larger images: the (row, column) of each tile in its source's grid.
    positions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise StableTrainError(
                f"images must be N×C×H×W with N labels, got {tuple(self.x.shape)} and {tuple(self.y.shape)}")
        if self.positions is not None and tuple(self.positions.shape) != (len(self.y), 2):
            raise StableTrainError(f"tile positions must be N×2, got {tuple(self.positions.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray) -> "ImageDataset":
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageDataset(self.x[idx], self.y[idx], None if self.positions is None else self.positions[idx])


@dataclass
class DataSplit:
    """A named train/test split with class names and provenance."""

    name: str
    train: ImageDataset
    test: ImageDataset
    classes: list[str]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, for the model's normalization."""
        x = self.train.x
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "train_size": len(self.train),
            "test_size": len(self.test),
            "channels": self.channels,
            "image_size": list(self.image_size),
            **self.info,
        }


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified random split: ``test_fraction`` of each class goes to test.

    Every class with at least two examples keeps at least one in each part.

    Example:
        >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.25, seed=0)
        >>> len(train), len(test)
        (7, 3)
    """
    if not 0.0 < test_fraction < 1.0:
        raise StableTrainError(f"test fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def region_split(labels: np.ndarray, positions: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split tiles by region: the right-most ``test_fraction`` of each source's tile columns is the test set.

    Test tiles then have test neighbours (for hard near-duplicate
    negatives) and never touch a training tile except along one edge.
    Deterministic: no seed is involved.
    """
    if not 0.0 < test_fraction < 1.0:
        raise StableTrainError(f"test fraction must be in (0, 1), got {test_fraction!r}")
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = labels == label
        cols = positions[members, 1]
        n_cols = int(cols.max()) + 1
        n_test = min(max(int(round(n_cols * test_fraction)), 1), max(n_cols - 1, 1))
        test[members] = cols >= n_cols - n_test
    return np.flatnonzero(~test), np.flatnonzero(test)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    antialias = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias).clamp_(0.0, 1.0)


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise StableTrainError(f"image size must be an integer of at least 8 pixels, got {image_size!r}")
    return int(image_size)


def _check_split_sizes(name: str, y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, classes: list[str],
                       how: str) -> None:
    """Every class must keep MIN_TRAIN_PER_CLASS training and MIN_TEST_PER_CLASS test images."""
    labels = np.asarray(y)
    n_train = np.bincount(labels[train_idx], minlength=len(classes))
    n_test = np.bincount(labels[test_idx], minlength=len(classes))
    for label in np.unique(labels):
        if n_train[label] < MIN_TRAIN_PER_CLASS or n_test[label] < MIN_TEST_PER_CLASS:
            raise StableTrainError(
                f"{name}: too few images to split: class {classes[label]!r} has {n_train[label] + n_test[label]} "
                f"({n_train[label]} for training, {n_test[label]} for testing with {how}); every class needs at "
                f"least {MIN_TRAIN_PER_CLASS} training and {MIN_TEST_PER_CLASS} test image(s)")


def _split(name: str, x: torch.Tensor, y: np.ndarray, classes: list[str], test_fraction: float,
           split_seed: int, info: dict, positions: np.ndarray | None = None,
           split: str = "random", where: str | None = None) -> DataSplit:
    if split == "random":
        train_idx, test_idx = stratified_split(y, test_fraction, split_seed)
        how = f"test fraction {test_fraction:g}"
    elif split == "region" and positions is not None:
        train_idx, test_idx = region_split(y, positions, test_fraction)
        how = f"the region split at test fraction {test_fraction:g}"
    else:
        raise StableTrainError(f"split must be 'random' or, for tiled images, 'region'; got {split!r}")
    _check_split_sizes(where or name, y, train_idx, test_idx, classes, how)
    labels = torch.as_tensor(y, dtype=torch.long)
    data = ImageDataset(x.contiguous(), labels,
                        None if positions is None else torch.as_tensor(positions, dtype=torch.long))
    info = {**info, "split": split}
    info = {**info, "split_seed": split_seed, "test_fraction": test_fraction}
    return DataSplit(name, data.subset(train_idx), data.subset(test_idx), classes, info)


def load_digits(image_size: int = 32, split_seed: int = 0, test_fraction: float = 0.2) -> DataSplit:
    """scikit-learn's 1,797 handwritten digits (8×8, 16 grey levels), resized to ``image_size``.

    Example:
        >>> split = load_digits(image_size=16)
        >>> split.num_classes, split.image_size, len(split.train) + len(split.test)
        (10, (16, 16), 1797)
    """
    from sklearn.datasets import load_digits as sklearn_digits

    size = _check_size(image_size)
    bunch = sklearn_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = _resize(x, size)
    return _split("digits", x, np.asarray(bunch.target), [str(c) for c in range(10)], test_fraction, split_seed,
                  {"source": "sklearn.datasets.load_digits"})


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _sklearn_sample(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


#: The real photographs behind ``photos``: all that scikit-image and
#: scikit-learn ship inside their wheels (no ``pooch`` download). Synthetic
#: images (checkerboard, blobs, logos, phantoms), the duplicate ``cat`` (=
#: ``chelsea``) and images under 200 px are left out.
PHOTO_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    **{name: _skimage(name) for name in (
        "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
        "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")},
    "china": _sklearn_sample("china.jpg"),
    "flower": _sklearn_sample("flower.jpg"),
}


def _photo_to_rgb(array: np.ndarray | Image.Image, shorter_side: int | None) -> np.ndarray:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image = image.convert("RGB")
    if shorter_side is not None:
        w, h = image.size
        scale = shorter_side / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


def tile_image(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut an ``H×W×C`` image into non-overlapping ``size`` tiles on a grid.

    Returns the tiles (``N×C×size×size``) and their ``(row, column)`` grid
    positions; leftover pixels at the right and bottom edges are dropped.
    """
    rows, cols = image.shape[0] // size, image.shape[1] // size
    if rows == 0 or cols == 0:
        raise StableTrainError(f"patch size {size} is larger than the image ({image.shape[0]}×{image.shape[1]} px)")
    channels = image.shape[2]
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size, channels)
    tiles = grid.transpose(0, 2, 4, 1, 3).reshape(rows * cols, channels, size, size)
    positions = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    return tiles, positions


def _tiles_split(name: str, images: dict[str, Callable[[], np.ndarray | Image.Image]], size: int,
                 photo_side: int | None, split_seed: int, test_fraction: float, split: str, info: dict,
                 where: str | None = None) -> DataSplit:
    if photo_side is not None and photo_side < size:
        raise StableTrainError(f"photo side ({photo_side}) must be at least the tile size ({size})")
    tiles, labels, positions, counts = [], [], [], {}
    for label, (source, load) in enumerate(images.items()):
        image = _photo_to_rgb(load(), photo_side)
        try:
            patches, grid = tile_image(image, size)
        except StableTrainError as err:
            raise StableTrainError(f"{source}: {err}") from None
        tiles.append(patches)
        positions.append(grid)
        labels.append(np.full(len(patches), label))
        counts[source] = len(patches)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(tiles)))
    return _split(name, x, np.concatenate(labels), list(images), test_fraction, split_seed,
                  {**info, "photo_side": photo_side, "tiles_per_source": counts},
                  positions=np.concatenate(positions), split=split, where=where)


def load_photos(image_size: int = 32, split_seed: int = 0, test_fraction: float = 0.2, photo_side: int = 256,
                sources: list[str] | None = None, split: str = "random") -> DataSplit:
    """Non-overlapping ``image_size`` tiles of shipped photographs; the label is the photograph.

    Args:
        image_size: tile side in pixels.
        photo_side: each photograph is first resized so its shorter side has
            this many pixels, which sets how much of the scene a tile covers.
        sources: a subset of :data:`PHOTO_SOURCES` (default: all).
        split: ``'random'`` (stratified random tiles, the default) or
            ``'region'`` (see :func:`region_split`).

    Example:
        >>> split = load_photos(image_size=32, photo_side=64, sources=["astronaut", "coffee"])
        >>> split.classes, split.channels
        (['astronaut', 'coffee'], 3)
    """
    size = _check_size(image_size)
    names = sorted(PHOTO_SOURCES) if sources is None else list(sources)
    unknown = [n for n in names if n not in PHOTO_SOURCES]
    if unknown:
        raise StableTrainError(f"unknown photo source(s) {', '.join(unknown)}; known: {', '.join(sorted(PHOTO_SOURCES))}")
    return _tiles_split("photos", {n: PHOTO_SOURCES[n] for n in names}, size, photo_side, split_seed,
                        test_fraction, split, {"source": "scikit-image and scikit-learn sample photographs"})


def _image_files(root: Path, skipped: list[Path] | None = None) -> list[Path]:
    """Image files under ``root`` (recursively), sorted; hidden files and folders are left out.

    Non-hidden files without an image extension are left out too and, if
    ``skipped`` is given, appended to it.
    """
    images = []
    for f in sorted(root.rglob("*")):
        if any(p.startswith(".") for p in f.relative_to(root).parts) or not f.is_file():
            continue
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(f)
        elif skipped is not None:
            skipped.append(f)
    return images


def _report_skipped(root: Path, skipped: list[Path]) -> str:
    """Log one warning about non-image files left out of ``root``; returns a short note for error messages."""
    if not skipped:
        return ""
    names = ", ".join(str(f.relative_to(root)) for f in skipped[:3]) + (", …" if len(skipped) > 3 else "")
    note = f"skipped {len(skipped)} non-image file(s) in {root}: {names}"
    logger.warning("%s", note)
    return note


def _open_image(file: Path) -> Image.Image:
    try:
        with Image.open(file) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise StableTrainError(f"not a readable image file: {file} ({type(err).__name__})") from None


def load_tiled_folder(root: str | os.PathLike, image_size: int = 32, split_seed: int = 0, test_fraction: float = 0.2,
                      photo_side: int | None = None, split: str = "region") -> DataSplit:
    """Tiles of every image in a folder (searched recursively); each image is its own source and label.

    The construction of ``photos`` applied to your own images, for the
    near-duplicate benchmark and similarity training. With ``photo_side``
    set, images are first resized so their shorter side has that many pixels.
    """
    size = _check_size(image_size)
    path = Path(root)
    if not path.is_dir():
        raise StableTrainError(f"image folder not found: {path}")
    skipped: list[Path] = []
    files = _image_files(path, skipped)
    note = _report_skipped(path, skipped)
    if not files:
        raise StableTrainError(f"image folder {path} holds no images" + (f" ({note})" if note else ""))
    sources = {str(f.relative_to(path)): (lambda f=f: _open_image(f)) for f in files}
    return _tiles_split(path.name, sources, size, photo_side, split_seed, test_fraction, split,
                        {"source": str(path)}, where=str(path))


_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;L"}


def load_image_folder(root: str | os.PathLike, image_size: int = 32, split_seed: int = 0,
                      test_fraction: float = 0.2) -> DataSplit:
    """A folder with one sub-folder per class, holding image files (searched recursively).

    Files with an extension in :data:`IMAGE_EXTENSIONS` are read; one that
    cannot be decoded is an error naming it. Hidden files are skipped, and
    other files (``notes.txt``) are skipped with one warning on the
    ``stabletrain.data`` logger. Images are resized so the shorter side is
    ``image_size`` and centre cropped to a square. If every image is
    grayscale the data has one channel, otherwise three.
    """
    size = _check_size(image_size)
    path = Path(root)
    if not path.exists():
        raise StableTrainError(f"data folder not found: {path}")
    if not path.is_dir():
        raise StableTrainError(f"not a folder: {path}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise StableTrainError(f"{path} needs at least two class sub-folders, found {len(class_dirs)}")
    files: list[tuple[Path, int]] = []
    skipped: list[Path] = []
    for label, folder in enumerate(class_dirs):
        ignored: list[Path] = []
        members = _image_files(folder, ignored)
        skipped += ignored
        if not members:
            extra = f" (only {len(ignored)} non-image file(s), e.g. {ignored[0].name})" if ignored else ""
            raise StableTrainError(f"class folder {folder} holds no image files{extra}")
        files += [(f, label) for f in members]
    _report_skipped(path, skipped)
    images, gray = [], True
    for file, _ in files:
        image = _open_image(file)
        gray = gray and image.mode in _GRAY_MODES
        images.append(ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS))
    x = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images]).transpose(0, 3, 1, 2)
    if gray:
        x = x[:, :1]
    labels = np.array([label for _, label in files])
    return _split(path.name, torch.from_numpy(np.ascontiguousarray(x)), labels, [d.name for d in class_dirs],
                  test_fraction, split_seed, {"source": str(path)}, where=str(path))


def _images_from_array(array: np.ndarray, key: str, file: Path) -> torch.Tensor:
    if array.shape[:1] == (0,) or (array.ndim in (3, 4) and array.size == 0):
        what = "no images" if array.shape[:1] == (0,) else "empty images"
        raise StableTrainError(f"{file}: '{key}' holds {what} (shape {array.shape})")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
            array = array.transpose(0, 3, 1, 2)
    else:
        raise StableTrainError(f"{file}: '{key}' must be N×H×W, N×H×W×C or N×C×H×W, got shape {array.shape}")
    if array.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not bool(torch.isfinite(x).all()):
            raise StableTrainError(f"{file}: '{key}' contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise StableTrainError(f"{file}: '{key}' must be uint8 or float in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    else:
        raise StableTrainError(f"{file}: '{key}' must be uint8 or floating point, got dtype {array.dtype}")
    return x


def _labels_from_array(array: np.ndarray, key: str, n: int, file: Path) -> np.ndarray:
    if array.ndim != 1 or len(array) != n:
        raise StableTrainError(f"{file}: '{key}' must be a vector of {n} labels, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if (np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array))
                and np.all(array == np.round(array)) and np.all(np.abs(array) < 2.0 ** 53)):
            return array.astype(np.int64)
        raise StableTrainError(f"{file}: '{key}' must hold integer class labels, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 2 ** 63:
        raise StableTrainError(f"{file}: labels must be 0..K-1 class indices; '{key}' holds {int(array.max())}")
    return array.astype(np.int64)


def _list_values(values: np.ndarray, labels: np.ndarray) -> str:
    """``-1 (10 images), 1000000 (3 images)``: the offending label values, at most five."""
    shown = [f"{int(v)} ({int(np.count_nonzero(labels == v))} image(s))" for v in values[:5]]
    return ", ".join(shown) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def _check_labels(labels: dict[str, np.ndarray], file: Path, n_names: int | None) -> None:
    """Labels are class indices 0..K-1: with ``class_names``, K is the number of names; without, K is the
    largest label + 1 and must not exceed ``max(number of images, MAX_LABEL_FLOOR)``."""
    n = sum(len(y) for y in labels.values())
    limit = n_names if n_names is not None else max(n, MAX_LABEL_FLOOR)
    for key, y in labels.items():
        bad = np.unique(y[(y < 0) | (y >= limit)])
        if not len(bad):
            continue
        if n_names is not None:
            raise StableTrainError(f"{file}: labels must be 0..{n_names - 1}, indices into 'class_names' ({n_names} "
                                   f"names); '{key}' holds {_list_values(bad, y)}")
        raise StableTrainError(
            f"{file}: labels must be 0..K-1 class indices (K at most {limit} for {n} images); '{key}' holds "
            f"{_list_values(bad, y)}; renumber the classes from 0")


def _check_fixed_test_set(path: Path, y: np.ndarray, x_test: torch.Tensor, classes: list[str]) -> None:
    if len(x_test) < 2:
        raise StableTrainError(f"{path}: the fixed test set 'x_test' needs at least 2 images, got {len(x_test)}")
    counts = np.bincount(y, minlength=len(classes))
    for label in np.unique(y):
        if counts[label] < MIN_TRAIN_PER_CLASS:
            raise StableTrainError(
                f"{path}: too few training images: class {classes[label]!r} has {counts[label]} in 'y'; every "
                f"class in 'y' needs at least {MIN_TRAIN_PER_CLASS}")


def load_npz(file: str | os.PathLike, image_size: int | None = None, split_seed: int = 0,
             test_fraction: float = 0.2) -> DataSplit:
    """Images and labels from an ``.npz`` file (see the module docstring for its keys).

    Labels are class indices: integers (or integral floats) in ``0..K-1``.
    With ``class_names``, K is the number of names and the names are the
    classes. Without it, the classes are the label values that occur, in
    increasing order and named by their value, so a subset such as
    ``{3, 7}`` of the digits gives the classes ``'3'`` and ``'7'``; K (the
    largest label + 1) may not exceed ``max(number of images, 1000)``. A
    negative label such as -1 (often "unlabelled") or a stray 10**6 is an
    error naming the offending values, not a new class. String labels are
    not supported: give integer labels and ``class_names``. An ``.npz``
    without images, and splits that leave a class too few images (see the
    module docstring), are errors too.
    """
    path = Path(file)
    if not path.exists():
        raise StableTrainError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise StableTrainError(f"cannot read {path} as an .npz file ({type(err).__name__}: {err})") from None
    if not arrays:
        raise StableTrainError(f"{path} holds no arrays; it needs 'x' (images) and 'y' (labels)")
    for key in ("x", "y"):
        if key not in arrays:
            raise StableTrainError(f"{path} has no array '{key}' (found: {', '.join(sorted(arrays)) or 'nothing'})")
    x = _images_from_array(arrays["x"], "x", path)
    y = _labels_from_array(arrays["y"], "y", len(x), path)
    has_test = "x_test" in arrays or "y_test" in arrays
    if has_test and not ("x_test" in arrays and "y_test" in arrays):
        raise StableTrainError(f"{path} must hold both 'x_test' and 'y_test', or neither")
    if has_test:
        x_test = _images_from_array(arrays["x_test"], "x_test", path)
        y_test = _labels_from_array(arrays["y_test"], "y_test", len(x_test), path)
        if x_test.shape[1:] != x.shape[1:]:
            raise StableTrainError(f"{path}: 'x_test' images {tuple(x_test.shape[1:])} differ from 'x' {tuple(x.shape[1:])}")
    names = [str(n) for n in np.ravel(arrays["class_names"]).tolist()] if "class_names" in arrays else None
    _check_labels({"y": y, **({"y_test": y_test} if has_test else {})}, path, None if names is None else len(names))
    values = np.unique(np.concatenate([y, y_test]) if has_test else y)
    if len(values) < 2:
        raise StableTrainError(f"{path}: 'y' must hold at least two classes, found {len(values)}")
    if names is not None:
        classes, remap = names, None
    else:
        classes = [str(v) for v in values]
        remap = {int(v): i for i, v in enumerate(values)}
    relabel = (lambda a: np.array([remap[int(v)] for v in a], dtype=np.int64)) if remap else (lambda a: a)
    if has_test:
        _check_fixed_test_set(path, relabel(y), x_test, classes)
    if image_size is not None:
        size = _check_size(image_size)
        x = _resize(x, size)
        if has_test:
            x_test = _resize(x_test, size)
    info = {"source": str(path)}
    if not has_test:
        return _split(path.stem, x, relabel(y), classes, test_fraction, split_seed, info, where=str(path))
    return DataSplit(path.stem, ImageDataset(x, torch.as_tensor(relabel(y))),
                     ImageDataset(x_test, torch.as_tensor(relabel(y_test))), classes,
                     {**info, "test_set": "x_test/y_test from the file"})


def load_data(source: str, *, image_size: int | None = None, split_seed: int = 0,
              test_fraction: float = 0.2) -> DataSplit:
    """Load ``digits``, ``photos``, a class-per-folder directory, an ``.npz`` file, or an extension's source.

    Sources are found in :data:`stabletrain.registry.DATA`, by name or by a
    predicate on the source string (the ``.npz`` suffix, an existing
    folder); extensions add theirs (``.h5`` jet files come from
    :mod:`stabletrain.jets`). Every loader takes
    ``(source, *, image_size, split_seed, test_fraction)``.

    ``image_size`` defaults to 32 for the built-in sets and image folders,
    and to the stored size for ``.npz`` files.

    Example:
        >>> split = load_data("digits")
        >>> tuple(split.train.x.shape[1:]), split.num_classes
        ((1, 32, 32), 10)
    """
    if not isinstance(source, str) or not source.strip():
        raise StableTrainError(f"data must be a name, a folder or a file, got {source!r}")
    name = DATA.find(source)
    if name is None:
        path = Path(source)
        if not path.exists():
            raise StableTrainError(
                f"data not found: {source!r} is neither a registered data set ({', '.join(DATA.names())}) nor an "
                f"existing folder or file")
        raise StableTrainError(f"unsupported data file {source!r}: give a folder of class sub-folders, an .npz file, "
                               f"or a format an installed extension registers")
    return DATA.get(name)(source, image_size=image_size, split_seed=split_seed, test_fraction=test_fraction)


def _digits_source(source: str, *, image_size: int | None, split_seed: int, test_fraction: float) -> DataSplit:
    return load_digits(image_size or 32, split_seed, test_fraction)


def _photos_source(source: str, *, image_size: int | None, split_seed: int, test_fraction: float) -> DataSplit:
    return load_photos(image_size or 32, split_seed, test_fraction)


def _npz_source(source: str, *, image_size: int | None, split_seed: int, test_fraction: float) -> DataSplit:
    return load_npz(Path(source), image_size, split_seed, test_fraction)


def _folder_source(source: str, *, image_size: int | None, split_seed: int, test_fraction: float) -> DataSplit:
    return load_image_folder(Path(source), image_size or 32, split_seed, test_fraction)


DATA.register("digits", _digits_source)
DATA.register("photos", _photos_source)
DATA.register("npz", _npz_source, predicate=lambda source: Path(source).suffix.lower() == ".npz")
DATA.register("folder", _folder_source, predicate=lambda source: Path(source).is_dir())


def load_patches(source: str, *, image_size: int | None = None, split_seed: int = 0, test_fraction: float = 0.2,
                 split: str = "region", photo_side: int | None = None) -> DataSplit:
    """Tiles with source labels and grid positions, for similarity training and near-duplicate benchmarks.

    ``source`` is ``photos`` or a folder of images (each image one source).

    Example:
        >>> split = load_patches("photos", image_size=32)
        >>> split.train.positions.shape[1], split.info["split"]
        (2, 'region')
    """
    if source == "photos":
        return load_photos(image_size or 32, split_seed, test_fraction, photo_side or 256, split=split)
    if source == "digits" or Path(source).suffix.lower() == ".npz":
        raise StableTrainError(f"{source!r} holds whole small images, not tiles of larger ones: similarity needs "
                               f"'photos' or a folder of images")
    return load_tiled_folder(source, image_size or 32, split_seed, test_fraction, photo_side, split)


def sample_triplets(labels: torch.Tensor, generator: torch.Generator, anchors: torch.Tensor | None = None) -> torch.Tensor:
    """(query, positive, negative) index triplets: the positive shares the query's label, the negative does not.

    One triplet per anchor (default: every index whose class has at least
    two members), drawn uniformly and vectorized.

    Example:
        >>> t = sample_triplets(torch.tensor([0, 0, 1, 1, 1]), torch.Generator().manual_seed(0))
        >>> t.shape, bool((t[:, 0] != t[:, 1]).all())
        (torch.Size([5, 3]), True)
    """
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    n = len(labels)
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    if len(classes) < 2:
        raise StableTrainError("triplets need at least two classes (sources)")
    starts = torch.cumsum(counts, 0) - counts
    class_index = torch.searchsorted(classes, labels)
    count, start = counts[class_index], starts[class_index]
    if anchors is None:
        anchors = torch.nonzero(count >= 2).flatten()
        if len(anchors) == 0:
            raise StableTrainError("triplets need a class (source) with at least two members")
    anchors = torch.as_tensor(anchors, dtype=torch.long)
    a_count, a_start = count[anchors], start[anchors]
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts.repeat_interleave(counts)
    offset = 1 + (torch.rand(len(anchors), generator=generator) * (a_count - 1).clamp_min(1)).long()
    positive = order[a_start + (rank[anchors] + offset) % a_count]
    r = (torch.rand(len(anchors), generator=generator) * (n - a_count)).long()
    negative = order[torch.where(r < a_start, r, r + a_count)]
    return torch.stack([anchors, positive, negative], dim=1)


#: The default image side of streamed data: the ImageNet convention (in-memory folders default to 32).
STREAM_IMAGE_SIZE = 224


def stream_only(source: str) -> bool:
    """Whether ``source`` can only be streamed: a file list (``.csv``, ``.tsv``, ``.txt``) or tar shards.

    Example:
        >>> stream_only("train.csv"), stream_only("shards:/data/train-{0000..0009}.tar"), stream_only("digits")
        (True, True, False)
    """
    from .streams import _is_shard_folder, _is_shard_spec

    text = str(source).strip()
    if text.startswith("shards:") or _is_shard_spec(text):
        return True
    path = Path(text)
    if path.is_dir():
        return _is_shard_folder(path)
    return path.suffix.lower() in (".csv", ".tsv", ".txt")


def can_stream(source: str) -> bool:
    """Whether ``source`` can be streamed (a folder of images, a file list or tar shards), not only held."""
    return stream_only(source) or (Path(str(source)).is_dir())
