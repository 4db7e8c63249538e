"""Image data too large for memory: files decoded on the fly by DataLoader workers.

The in-memory loaders of :mod:`stabletrain.data` decode every image up
front. The sources here only *list* the data (file names and integer
labels, or tar shards) and decode each image when a batch needs it, in
DataLoader worker processes, so a data set of 10**6 photographs costs a
few tens of megabytes of memory however many images it holds.

Sources (:func:`load_stream` picks one from the source string):

* a folder of class sub-folders (:func:`scan_image_folder`); with
  ``train/`` and ``val/`` (or ``test/``) sub-folders of class folders,
  those are the split;
* a file list, ``.csv``, ``.tsv`` or ``.txt`` (:func:`read_file_list`):
  one image per row, ``path,label[,split]``;
* WebDataset tar shards (:func:`open_shards`): ``shards:TRAIN[|TEST]``
  where each side is a file, a brace pattern such as
  ``/data/train-{000000..000099}.tar``, a glob, several of those joined by
  ``::``, or a folder of ``.tar`` files; a bare pattern or path ending in
  ``.tar`` (``.tar.gz``, ``.tgz``) works without the prefix, and so does a
  folder holding ``train/`` and ``val/`` (or ``test/``) folders of shards.

What workers return: ``(image, label, id)`` with ``image`` a ``C×H×W``
uint8 tensor (4× less traffic between processes than float32). Batches
from :func:`make_loader` are ``(x, y, ids)``; convert on the device::

    for x, y, ids in iterate(loader):
        x = x.to(device, non_blocking=True).float().div_(255)

Determinism: the augmentation of an example draws from
``make_generator(seed, "augment", epoch, id)``, where ``id`` is the
example's index in the listing (files) or a 63-bit hash of its shard's
file name and ``__key__`` (shards). An example's pixels therefore depend
only on (seed, epoch, example), never on the batch size, the number of
workers or the number of ranks. A map-style data set gets the epoch in its
key, ``dataset[(epoch, index)]`` (wrap a sampler in :class:`EpochKeys`); a
shard stream gets it from :meth:`ShardStream.set_epoch`, which reaches
persistent workers through shared memory (call it before iterating).

Errors are :class:`~stabletrain.checks.StableTrainError` with one line.
Raised in a worker, PyTorch re-raises them in the main process wrapped in
a traceback; :func:`iterate` unwraps them to the original line.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from ..checks import StableTrainError
from ..seeding import derive_seed, make_generator
from .decode import decoders, open_image
from .transforms import EvalTransform, TrainTransform, to_tensor_uint8

__all__ = ["PathTable", "ImageFiles", "ShardStream", "EpochKeys", "StreamingSplit", "scan_image_folder",
           "read_file_list", "open_shards", "expand_shards", "load_stream", "make_transforms", "make_loader",
           "collate_uint8", "iterate", "sample_id", "AUGMENTS", "SHARD_SUFFIXES"]

logger = logging.getLogger("stabletrain.data")

#: Values of ``augment``: the train transform (the test transform is always :class:`EvalTransform`).
AUGMENTS = ("none", "flip", "crop-flip")
#: File name endings of tar shards found in a folder.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Images opened (headers only) to decide ``channels="auto"``.
AUTO_CHANNEL_SAMPLES = 64

_PATH_HEADERS = {"path", "file", "filename", "file_name", "filepath", "image", "image_path", "img"}
_LABEL_HEADERS = {"label", "class", "class_name", "target", "y", "category"}
_SPLITS = {"train": "train", "val": "test", "valid": "test", "validation": "test", "test": "test"}
_INT = re.compile(r"[+-]?\d+")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata files, which are no samples

Channels = Union[int, str]


def _data():
    """``stabletrain.data``, imported late: its ``__init__`` may import this module."""
    from .. import data

    return data


# --------------------------------------------------------------------------------------------- file tables


class PathTable:
    """An immutable list of file paths stored compactly: one UTF-8 buffer and an offset array.

    A million paths cost their bytes plus 8 bytes each, pickle as two numpy
    arrays (cheap to send to workers), and create no per-path Python objects
    that forked workers would copy by touching their reference counts.
    ``root`` is joined in front of every stored path.

    Example:
        >>> table = PathTable(["cat/1.jpg", "dog/2.jpg"], root="/data")
        >>> len(table), table[1]
        (2, '/data/dog/2.jpg')
        >>> table.take([1])[0]
        '/data/dog/2.jpg'
    """

    def __init__(self, paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> None:
        encoded = [os.fsencode(p) for p in paths]
        self.root = "" if root is None else os.fspath(root)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            np.cumsum(np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded)),
                      out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    @classmethod
    def _from_arrays(cls, data: np.ndarray, offsets: np.ndarray, root: str) -> "PathTable":
        table = cls.__new__(cls)
        table._data, table._offsets, table.root = data, offsets, root
        return table

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @classmethod
    def compact(cls, paths: Sequence[str]) -> "PathTable":
        """A table of ``paths`` with their common leading folder stored once (as ``root``).

        Example:
            >>> t = PathTable.compact(["/data/a/1.jpg", "/data/b/2.jpg"])
            >>> t.root, t[1]
            ('/data/', '/data/b/2.jpg')
        """
        prefix = os.path.commonprefix(list(paths)) if len(paths) else ""
        cut = prefix.rfind(os.sep) + 1
        return cls([p[cut:] for p in paths], root=prefix[:cut] or None)

    def __getitem__(self, index: int) -> str:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"path index {index} is out of range for {n} paths")
        start, stop = self._offsets[index], self._offsets[index + 1]
        relative = os.fsdecode(self._data[start:stop].tobytes())
        return os.path.join(self.root, relative) if self.root else relative

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: Sequence[int] | np.ndarray) -> "PathTable":
        """A new table of the paths at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        starts, lengths = self._offsets[idx], np.diff(self._offsets)[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return PathTable._from_arrays(self._data[gather], offsets, self.root)

    def __repr__(self) -> str:
        return f"PathTable({len(self)} paths, root={self.root!r})"


def _check_channels(channels: object, allow_auto: bool = True) -> Channels:
    if allow_auto and channels == "auto":
        return "auto"
    if isinstance(channels, bool) or channels not in (1, 3):
        choices = "1, 3 or 'auto'" if allow_auto else "1 or 3"
        raise StableTrainError(f"channels must be {choices}, got {channels!r}")
    return int(channels)  # type: ignore[arg-type]


def _draft_of(transform: Any, draft: bool) -> tuple[int, int] | None:
    size = getattr(transform, "draft_size", None)
    return size() if draft and callable(size) else None


def _is_random(transform: Any) -> bool:
    return bool(getattr(transform, "random", True))


class ImageFiles(Dataset):
    """Map-style data set of image files and integer labels, decoded and transformed per item.

    Args:
        files: the image paths (or a :class:`PathTable`).
        labels: one integer class label per file.
        transform: called as ``transform(image, generator)`` on the decoded
            Pillow image (:class:`~stabletrain.data.transforms.TrainTransform`
            or :class:`~stabletrain.data.transforms.EvalTransform`).
        channels: 1 or 3; images are converted to that many channels.
        seed: the run's seed; item ``(epoch, index)`` is augmented from
            ``make_generator(seed, "augment", epoch, index)``.
        draft: let the decoder shrink large JPEGs to the transform's
            :meth:`draft_size` while decoding (faster; see
            :mod:`stabletrain.data.decode`).

    ``dataset[index]`` (epoch 0) or ``dataset[(epoch, index)]`` returns
    ``(image, label, index)`` with ``image`` a ``channels×size×size`` uint8
    tensor. It holds only the paths and labels, and pickles compactly.

    Example:
        >>> import tempfile
        >>> from stabletrain.data.transforms import TrainTransform
        >>> folder = tempfile.mkdtemp()
        >>> Image.new("RGB", (40, 30), (0, 128, 255)).save(f"{folder}/a.png")
        >>> data = ImageFiles([f"{folder}/a.png"], [0], transform=TrainTransform(16), channels=3)
        >>> x, label, index = data[(2, 0)]
        >>> x.dtype, tuple(x.shape), label, index
        (torch.uint8, (3, 16, 16), 0, 0)
        >>> torch.equal(x, data[(2, 0)][0])
        True
    """

    def __init__(self, files: Sequence[str | os.PathLike] | PathTable, labels: Sequence[int] | np.ndarray, *,
                 transform: Any, channels: int, seed: int = 0, draft: bool = True) -> None:
        self.files = files if isinstance(files, PathTable) else PathTable(files)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.files):
            raise StableTrainError(f"{len(self.files)} files but {len(self.labels)} labels")
        self.transform = transform
        self.channels = int(_check_channels(channels, allow_auto=False))
        self.seed = int(seed)
        self.draft = bool(draft)
        self._draft = _draft_of(transform, self.draft)

    def __len__(self) -> int:
        return len(self.files)

    def _key(self, key: Any) -> tuple[int, int]:
        if isinstance(key, (tuple, list)):
            if len(key) != 2:
                raise TypeError(f"ImageFiles keys are an index or (epoch, index), got {key!r}")
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = 0, int(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        if epoch < 0:
            raise IndexError(f"epoch must be >= 0, got {epoch}")
        return epoch, index

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, index = self._key(key)
        image = open_image(self.files[index], draft=self._draft)
        generator = make_generator(self.seed, "augment", epoch, index) if _is_random(self.transform) else None
        return to_tensor_uint8(self.transform(image, generator), self.channels), int(self.labels[index]), index

    def with_transform(self, transform: Any) -> "ImageFiles":
        """The same files and labels with another transform."""
        return ImageFiles(self.files, self.labels, transform=transform, channels=self.channels, seed=self.seed,
                          draft=self.draft)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images, channels={self.channels}, transform={self.transform!r})"


class EpochKeys(Sampler):
    """Turn a sampler (or batch sampler) of indices into one of ``(epoch, index)`` keys for :class:`ImageFiles`.

    Example:
        >>> keys = EpochKeys([[0, 1], [2]], epoch=3)
        >>> list(keys)
        [[(3, 0), (3, 1)], [(3, 2)]]
        >>> keys.set_epoch(4); list(EpochKeys(range(2), epoch=4))
        [(4, 0), (4, 1)]
    """

    def __init__(self, sampler: Iterable[Any], epoch: int = 0) -> None:
        self.sampler = sampler
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        for item in self.sampler:
            if isinstance(item, (int, np.integer)) or (isinstance(item, torch.Tensor) and item.ndim == 0):
                yield (epoch, int(item))
            else:
                yield [(epoch, int(i)) for i in item]

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- shards


@lru_cache(maxsize=1)
def _image_keys() -> tuple[str, ...]:
    preferred = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "pnm", "bmp", "tif", "tiff", "gif")
    others = sorted(e.lstrip(".") for e in _data().IMAGE_EXTENSIONS if e.lstrip(".") not in preferred)
    return preferred + tuple(others)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def sample_id(shard: str, key: str) -> int:
    """The stable 63-bit id of sample ``key`` of the shard file ``shard`` (only its base name counts).

    Example:
        >>> sample_id("/a/train-0001.tar", "img7") == sample_id("/elsewhere/train-0001.tar", "img7")
        True
        >>> 0 <= sample_id("train-0001.tar", "img7") < 2 ** 63
        True
    """
    return derive_seed("shard-sample", _hash64(os.path.basename(shard)), _hash64(key))


def _first_arg(err: BaseException) -> str:
    text = str(err.args[0]) if err.args else ""
    return text.split(" @ ")[0].strip()


def _shard_samples(path: str, select: Any = None, require: bool = True) -> Iterator[dict]:
    """The samples of one shard (webdataset's tar reader), with one-line errors.

    With ``require``, a shard without samples is an error. ``select(name)``
    picks the files whose data is read (webdataset's ``select_files``).
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander

    count = 0
    try:
        with open(path, "rb") as stream:
            files = tar_file_expander([{"url": path, "stream": stream}], select_files=select, eof_value=None)
            for sample in group_by_keys(files):
                count += 1
                yield sample
    except StableTrainError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as err:
        raise StableTrainError(f"not a readable tar shard: {path} ({type(err).__name__}: {_first_arg(err)})") from None
    if require and count == 0:
        raise StableTrainError(f"shard {path} holds no samples")


def _count_samples(path: str) -> int:
    """The samples of one shard as webdataset groups them (consecutive files of one key), from the headers."""
    from webdataset.tariterators import base_plus_ext

    count, last = 0, None
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                tar.members = []  # memory stays flat however many files the shard holds
                if not member.isreg() or _META.match(member.name) or \
                        ("/" not in member.name and member.name.startswith("__") and member.name.endswith("__")):
                    continue
                prefix, _ = base_plus_ext(member.name)
                if prefix is not None and prefix != last:
                    count, last = count + 1, prefix
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise StableTrainError(f"not a readable tar shard: {path} ({type(err).__name__}: {_first_arg(err)})") from None
    if count == 0:
        raise StableTrainError(f"shard {path} holds no samples")
    return count


def _count_all(paths: Sequence[str]) -> list[int]:
    """:func:`_count_samples` of each shard; in forked processes when there are several shards and cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    processes = min(8, os.cpu_count() or 1, len(paths) // 2)
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_count_samples(p) for p in paths]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_count_samples, paths, chunksize=max(1, len(paths) // (4 * processes))))


def _check_shard_file(path: str) -> None:
    """Cheap checks without reading the shard: not empty, and a tar header (or gzip data) at the start."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as err:
        raise StableTrainError(f"cannot read shard {path} ({type(err).__name__})") from None
    if not head:
        raise StableTrainError(f"shard {path} is empty (0 bytes)")
    if head[:2] == b"\x1f\x8b":
        return  # gzip-compressed tar: checked when read
    if len(head) == 512 and not any(head):
        raise StableTrainError(f"shard {path} holds no samples (an empty tar archive)")
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError as err:
        raise StableTrainError(f"not a tar archive: {path} ({type(err).__name__})") from None


def _sample_label(sample: dict, where: str, num_classes: int | None) -> int:
    key = sample["__key__"]
    if "cls" in sample:
        text = bytes(sample["cls"]).decode("utf-8", "replace").strip()
        if not _INT.fullmatch(text):
            raise StableTrainError(f"{where}: sample {key!r}: '.cls' must hold an integer class index, "
                                   f"got {text[:40]!r}")
        label = int(text)
    elif "json" in sample:
        try:
            meta = json.loads(bytes(sample["json"]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StableTrainError(f"{where}: sample {key!r}: unreadable '.json' ({type(err).__name__})") from None
        label = meta.get("label") if isinstance(meta, dict) else None
        if isinstance(label, bool) or not isinstance(label, int):
            raise StableTrainError(f"{where}: sample {key!r}: '.json' needs an integer \"label\", got {label!r}")
    else:
        held = ", ".join(k for k in sample if not k.startswith("__")) or "nothing"
        raise StableTrainError(f"{where}: sample {key!r} has no label: it needs a '.cls' file or a '.json' with a "
                               f"\"label\" (it holds {held}; a sample's files must be adjacent in the tar)")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise StableTrainError(f"{where}: sample {key!r} has label {label}, outside {bound}")
    return label


def _sample_image(sample: dict, where: str) -> tuple[str, bytes]:
    for ext in _image_keys():
        if ext in sample:
            return ext, sample[ext]
    held = ", ".join(k for k in sample if not k.startswith("__")) or "nothing"
    raise StableTrainError(f"{where}: sample {sample['__key__']!r} has no image (it holds {held}; expected one of "
                           f"{', '.join(_image_keys()[:6])}, ...)")


def _default_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


class ShardStream(IterableDataset):
    """Iterable data set over WebDataset tar shards, split across ranks and DataLoader workers.

    A sample is the group of files sharing a ``__key__`` (``key.jpg`` and
    ``key.cls``): the image is the first of the keys ``jpg``, ``jpeg``,
    ``png``, ``webp``, ``ppm``, … present, the label the integer text of
    ``cls`` or the ``"label"`` of ``json``. It yields ``(image, label, id)``
    with ``image`` a ``channels×size×size`` uint8 tensor and ``id``
    :func:`sample_id` of the shard's base name and ``__key__``.

    Splitting: each rank reads every ``world_size``-th shard (of the
    epoch's order) and, inside a rank, each DataLoader worker every
    ``num_workers``-th of the rank's shards, so every sample is read once
    per epoch. With fewer shards than ranks (or than a rank's workers),
    the readers concerned read the same shards and keep every ``n``-th
    sample instead: still exactly once, but more reading.

    Shuffling (``shuffle=True``, for training): the shard order is a
    permutation seeded by ``(seed, epoch)``, the same on every rank, and
    each worker passes its samples through a buffer of ``shuffle_buffer``
    encoded samples, seeded by ``(seed, epoch, rank, worker)``. Only the
    order depends on the layout of ranks and workers; the pixels of an
    example depend on ``(seed, epoch, id)``.

    Fixed-length epochs (for training, :meth:`plan_epoch`): every rank
    must take the same number of optimizer steps, but shards rarely split
    into equal parts. After ``plan_epoch(batches, batch_size)`` each rank
    yields exactly ``batches × batch_size`` samples, dealt to its workers
    as whole batches (worker ``w`` of ``W`` takes batches ``w, w + W, …``,
    the DataLoader's round-robin): a reader whose shards run out starts
    them again (the repeated samples get new augmentation), and one with
    samples to spare leaves them for the next epoch's order. ``skip``
    resumes an epoch after that many batches without decoding the
    skipped images, and gives the batches the uninterrupted epoch would
    have given, for the same number of workers and ranks.

    Args:
        shards: shard file paths (see :func:`expand_shards` for patterns).
        transform, channels, seed, draft: as for :class:`ImageFiles`.
        shuffle, shuffle_buffer: see above; off for evaluation.
        rank, world_size: this process among the data-parallel processes
            (default: ``torch.distributed`` if initialized, else the ``RANK``
            and ``WORLD_SIZE`` environment variables, else 0 and 1).
        num_classes: when known, a label outside ``0..num_classes-1`` is an error.
        num_samples: the total number of samples, when known (reported only).

    Example:
        >>> import tempfile, webdataset
        >>> from stabletrain.data.transforms import EvalTransform
        >>> shard = f"{tempfile.mkdtemp()}/train-0.tar"
        >>> with webdataset.TarWriter(shard) as sink:
        ...     for i in range(3):
        ...         png = io.BytesIO(); Image.new("L", (20, 20), 40 * i).save(png, "PNG")
        ...         _ = sink.write({"__key__": f"s{i}", "png": png.getvalue(), "cls": str(i % 2)})
        >>> stream = ShardStream([shard], transform=EvalTransform(16), channels=1)
        >>> [(tuple(x.shape), label) for x, label, _ in stream]
        [((1, 16, 16), 0), ((1, 16, 16), 1), ((1, 16, 16), 0)]
    """

    def __init__(self, shards: Sequence[str | os.PathLike], *, transform: Any, channels: int, seed: int = 0,
                 shuffle: bool = False, shuffle_buffer: int = 1000, rank: int | None = None,
                 world_size: int | None = None, draft: bool = True, num_classes: int | None = None,
                 num_samples: int | None = None) -> None:
        self.shards = [os.fspath(s) for s in shards]
        if not self.shards:
            raise StableTrainError("a shard stream needs at least one shard")
        self.transform = transform
        self.channels = int(_check_channels(channels, allow_auto=False))
        self.seed, self.shuffle, self.draft = int(seed), bool(shuffle), bool(draft)
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, (int, np.integer)) or shuffle_buffer < 0:
            raise StableTrainError(f"shuffle buffer must be an integer >= 0, got {shuffle_buffer!r}")
        self.shuffle_buffer = int(shuffle_buffer)
        default_rank, default_world = _default_rank()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise StableTrainError(f"rank must be in [0, world size), got rank {self.rank} of {self.world_size}")
        self.num_classes = num_classes
        self.num_samples = num_samples
        self._counts: list[int] | None = None  # samples per shard, once counted
        self._draft = _draft_of(transform, self.draft)
        # Shared memory: set_epoch and plan_epoch in the main process reach persistent workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._plan_state = torch.zeros(3, dtype=torch.int64).share_memory_()  # batches, batch size, skip
        if len(self.shards) < self.world_size:
            logger.warning("%d shard(s) for %d ranks: every rank reads all shards and keeps every %d-th sample; "
                           "write at least %d shards for full-speed reading", len(self.shards), self.world_size,
                           self.world_size, self.world_size)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shard order, shuffle and augmentation from the next iteration on."""
        self._epoch.fill_(int(epoch))

    def plan_epoch(self, batches: int, batch_size: int, skip: int = 0) -> None:
        """Make the next epochs fixed-length: this rank yields ``batches`` batches of ``batch_size`` samples.

        The first ``skip`` of them are read but not decoded (resuming an
        epoch). ``plan_epoch(0, 0)`` returns to one pass over the shards.

        Example:
            >>> import tempfile, webdataset
            >>> from stabletrain.data.transforms import EvalTransform
            >>> shard = f"{tempfile.mkdtemp()}/train-0.tar"
            >>> with webdataset.TarWriter(shard) as sink:
            ...     for i in range(3):
            ...         png = io.BytesIO(); Image.new("L", (8, 8), 40 * i).save(png, "PNG")
            ...         _ = sink.write({"__key__": f"s{i}", "png": png.getvalue(), "cls": str(i % 2)})
            >>> stream = ShardStream([shard], transform=EvalTransform(8), channels=1)
            >>> stream.plan_epoch(batches=2, batch_size=2)
            >>> [label for _, label, _ in stream]   # 4 samples from a shard of 3: it starts again
            [0, 1, 0, 0]
        """
        values = (batches, batch_size, skip)
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
            raise StableTrainError(f"an epoch plan needs integers >= 0, got batches={batches!r}, "
                                   f"batch_size={batch_size!r}, skip={skip!r}")
        if batches and (batch_size < 1 or skip > batches):
            raise StableTrainError(f"an epoch plan of {batches} batches needs batch_size >= 1 and skip <= batches, "
                                   f"got batch_size={batch_size}, skip={skip}")
        self._plan_state.copy_(torch.tensor([int(v) for v in values], dtype=torch.int64))

    def count(self) -> int:
        """The number of samples in the shards, from their tar headers (image data is not read); cached.

        Sets :attr:`num_samples`. An uncompressed shard is read header by
        header, seeking past the data; several shards are read by forked
        processes (tar parsing is CPU-bound Python). Under
        ``torch.distributed`` (with this stream split over its ranks), every
        rank counts its share of the shards and the counts are gathered: a
        collective call, which every rank must make.
        """
        if self._counts is None:
            import torch.distributed as dist

            ranked = (self.world_size > 1 and dist.is_available() and dist.is_initialized()
                      and dist.get_world_size() == self.world_size)
            mine = list(range(self.rank, len(self.shards), self.world_size)) if ranked else range(len(self.shards))
            counts = dict(zip(mine, _count_all([self.shards[i] for i in mine])))
            if ranked:
                gathered: list[Any] = [None] * self.world_size
                dist.all_gather_object(gathered, counts)
                counts = {k: v for part in gathered for k, v in part.items()}
            self._counts = [int(counts[i]) for i in range(len(self.shards))]
            self.num_samples = sum(self._counts)
        return int(sum(self._counts))

    def epoch_balance(self, epoch: int, workers: int) -> tuple[int, int]:
        """``(read again, left over)``: this rank's samples that the planned ``epoch`` reads a second time
        (readers whose shards run short) and leaves unread (readers with more than their batches).

        Both are 0 when every reader (rank × worker) holds the same number of whole batches, for example
        equal shards in a multiple of ranks × workers. Needs :meth:`plan_epoch` and :meth:`count`.
        """
        batches, batch_size, _ = (int(v) for v in self._plan_state.tolist())
        self.count()
        assert self._counts is not None
        readers = max(int(workers), 1)
        index = {path: n for path, n in zip(self.shards, self._counts)}
        again = left = 0
        for worker in range(readers):
            shards, rank_filter, worker_filter = self._plan(epoch, readers, worker)
            held = sum(index[path] for path in shards)
            for flt in (rank_filter, worker_filter):
                if flt is not None:
                    held = len(range(flt[1], held, flt[0]))
            quota = (batches // readers + (worker < batches % readers)) * batch_size
            again, left = again + max(quota - held, 0), left + max(held - quota, 0)
        return again, left

    def with_transform(self, transform: Any, *, shuffle: bool = False, rank: int = 0,
                       world_size: int = 1) -> "ShardStream":
        """The same shards with another transform (by default unshuffled, one rank)."""
        return ShardStream(self.shards, transform=transform, channels=self.channels, seed=self.seed,
                           shuffle=shuffle, shuffle_buffer=self.shuffle_buffer, rank=rank, world_size=world_size,
                           draft=self.draft, num_classes=self.num_classes, num_samples=self.num_samples)

    def _plan(self, epoch: int, workers: int, worker: int) -> tuple[list[str], tuple[int, int] | None,
                                                                    tuple[int, int] | None]:
        """This reader's shards, and the (stride, offset) sample filters for ranks and workers, if needed."""
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng(derive_seed(self.seed, "shard-order", epoch)).permutation(len(self.shards))
        rank_filter = worker_filter = None
        if len(order) >= self.world_size:
            mine = order[self.rank::self.world_size]
        else:
            mine, rank_filter = order, (self.world_size, self.rank)
        if rank_filter is None and len(mine) >= workers:
            mine = mine[worker::workers]
        elif workers > 1:
            worker_filter = (workers, worker)
        return [self.shards[i] for i in mine], rank_filter, worker_filter

    def _encoded(self, epoch: int, workers: int, worker: int, repeat: int = 0) -> Iterator[tuple]:
        shards, rank_filter, worker_filter = self._plan(epoch, workers, worker)
        seen = kept = 0
        for path in shards:
            name = os.path.basename(path)
            for sample in _shard_samples(path):
                if rank_filter is not None:
                    seen += 1
                    if (seen - 1) % rank_filter[0] != rank_filter[1]:
                        continue
                if worker_filter is not None:
                    kept += 1
                    if (kept - 1) % worker_filter[0] != worker_filter[1]:
                        continue
                ext, data = _sample_image(sample, f"shard {path}")
                label = _sample_label(sample, f"shard {path}", self.num_classes)
                key = sample["__key__"]
                yield path, key, ext, data, label, sample_id(name, key), repeat

    def _pass(self, epoch: int, workers: int, worker: int, repeat: int = 0) -> Iterator[tuple]:
        """One pass over the reader's samples, through the shuffle buffer when shuffling."""
        items = self._encoded(epoch, workers, worker, repeat)
        if self.shuffle and self.shuffle_buffer > 1:
            rng = np.random.default_rng(derive_seed(self.seed, "shuffle-buffer", epoch, self.rank, worker,
                                                    *((repeat,) if repeat else ())))
            items = self._shuffled(items, rng)
        return items

    def _repeated(self, epoch: int, workers: int, worker: int) -> Iterator[tuple]:
        """The reader's passes one after the other (fixed-length epochs); the buffer never mixes two passes."""
        for repeat in itertools.count():
            empty = True
            for item in self._pass(epoch, workers, worker, repeat):
                empty = False
                yield item
            if empty:
                return  # a reader without samples (only possible with filters over tiny shards)

    def _shuffled(self, items: Iterator[tuple], rng: np.random.Generator) -> Iterator[tuple]:
        buffer: list[tuple] = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], item = item, buffer[j]
            yield item
        for j in rng.permutation(len(buffer)):
            yield buffer[j]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch = self.epoch
        batches, batch_size, skip = (int(v) for v in self._plan_state.tolist())
        if batches:
            # The DataLoader deals batch k of this iteration to worker k % workers. Resumed after `skip`
            # batches, batch k is batch skip + k of the epoch, which the uninterrupted epoch read from
            # worker (skip + k) % workers: this worker plays that one.
            worker = (worker + skip) % workers

            def share(n: int) -> int:
                return n // workers + (worker < n % workers)

            items = itertools.islice(self._repeated(epoch, workers, worker), share(skip) * batch_size,
                                     share(batches) * batch_size)
        else:
            items = self._pass(epoch, workers, worker)
        random = _is_random(self.transform)
        for path, key, ext, data, label, ident, repeat in items:
            image = open_image(data, name=f"{path}:{key}.{ext}", draft=self._draft)
            generator = None
            if random:  # a sample read again in the same epoch gets new augmentation
                generator = make_generator(self.seed, "augment", epoch, ident, *((repeat,) if repeat else ()))
            yield to_tensor_uint8(self.transform(image, generator), self.channels), label, ident

    def __repr__(self) -> str:
        return (f"ShardStream({len(self.shards)} shards, shuffle={self.shuffle}, rank {self.rank}/{self.world_size}, "
                f"transform={self.transform!r})")


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The shard files named by ``spec``: a file, a brace pattern, a glob, a folder, or several joined by ``::``.

    Brace patterns (``train-{000..009}.tar``, ``{a,b}.tar``) are expanded
    with webdataset's helper; a folder gives its ``.tar`` (``.tar.gz``,
    ``.tgz``) files in name order. Every file named must exist.

    Example:
        >>> expand_shards("/nonexistent/train-{0..3}.tar")
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: no shard file matches '/nonexistent/train-{0..3}.tar' (e.g. /nonexistent/train-0.tar does not exist)
    """
    from webdataset.shardlists import expand_urls

    if not isinstance(spec, (str, os.PathLike)):
        files = [f for part in spec for f in expand_shards(part)]
        return list(dict.fromkeys(files))
    text = os.fspath(spec).strip()
    if not text:
        raise StableTrainError("empty shard pattern")
    if os.path.isdir(text):
        names = sorted(n for n in os.listdir(text) if n.lower().endswith(SHARD_SUFFIXES) and not n.startswith("."))
        if not names:
            raise StableTrainError(f"no .tar shards in folder {text}")
        return [os.path.join(text, n) for n in names]
    try:
        expanded = expand_urls(text)
    except (AssertionError, ValueError) as err:
        raise StableTrainError(f"cannot expand shard pattern {text!r} ({err})") from None
    files: list[str] = []
    for name in expanded:
        if any(c in name for c in "*?["):
            files += sorted(glob.glob(name)) or [name]
        else:
            files.append(name)
    files = list(dict.fromkeys(files))
    missing = [f for f in files if not os.path.isfile(f)]
    if len(missing) == len(files):
        raise StableTrainError(f"no shard file matches {text!r} (e.g. {missing[0]} does not exist)")
    if missing:
        raise StableTrainError(f"{len(missing)} of the {len(files)} shards named by {text!r} are missing, "
                               f"e.g. {missing[0]}")
    return files


# ----------------------------------------------------------------------------------------------- the split


@dataclass
class StreamingSplit:
    """A train/test split whose images are decoded when loaded (the streaming counterpart of ``DataSplit``).

    ``train`` and ``test`` are :class:`ImageFiles` or :class:`ShardStream`;
    load batches with :func:`make_loader`. ``streaming`` is always True, so
    code that handles both kinds of split can tell them apart.
    """

    name: str
    classes: list[str]
    train: Any
    test: Any
    info: dict = field(default_factory=dict)
    streaming: ClassVar[bool] = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.channels)

    @property
    def image_size(self) -> tuple[int, int]:
        size = int(self.test.transform.size)
        return size, size

    @staticmethod
    def _size(data: Any) -> int | None:
        return len(data) if isinstance(data, ImageFiles) else getattr(data, "num_samples", None)

    def describe(self) -> dict:
        """Name, classes, sizes (None when a shard stream's length is unknown), channels, image size and info."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "train_size": self._size(self.train),
            "test_size": self._size(self.test),
            "channels": self.channels,
            "image_size": list(self.image_size),
            **self.info,
        }

    def channel_stats(self, max_images: int = 512) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of up to ``max_images`` training images under the eval transform.

        Deterministic: for files, images evenly spaced through the training
        list (every class is represented); for shards, the first samples of
        the unshuffled stream. Returns ``(mean, std)`` like
        ``DataSplit.channel_stats``, std clamped to at least 1e-3.
        """
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise StableTrainError(f"max_images must be a positive integer, got {max_images!r}")
        transform = self.test.transform
        if isinstance(self.train, ImageFiles):
            view = self.train.with_transform(transform)
            n = len(view)
            picks = np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(np.int64))
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                images: Iterable[torch.Tensor] = list(pool.map(lambda i: view[int(i)][0], picks))
        else:
            stream = self.train.with_transform(transform)
            images = []
            for x, _, _ in stream:
                images.append(x)
                if len(images) >= max_images:
                    break
        total = np.zeros(self.channels)
        squares = np.zeros(self.channels)
        count = 0
        for x in images:
            values = x.reshape(x.shape[0], -1).double().div_(255.0)
            total += values.sum(1).numpy()
            squares += values.square().sum(1).numpy()
            count += values.shape[1]
        mean = total / count
        var = np.maximum(squares - count * mean ** 2, 0.0) / max(count - 1, 1)
        std = np.maximum(np.sqrt(var), 1e-3)
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def make_transforms(image_size: int, augment: str = "crop-flip", crop_pct: float = 0.875
                    ) -> tuple[TrainTransform, EvalTransform]:
    """The train transform named by ``augment`` and the test transform.

    ``'crop-flip'``: random resized crop and flip; ``'flip'``: shorter side
    to ``image_size``, central square, random flip; ``'none'``: the same
    without the flip. The test transform is ``EvalTransform(image_size,
    crop_pct)``; with ``'none'`` or ``'flip'``, ``crop_pct=1`` makes train
    and test framing identical.

    Example:
        >>> make_transforms(32, "flip")
        (TrainTransform(32, crop=False, flip=True, interpolation='bilinear'), EvalTransform(32, crop_pct=0.875, interpolation='bilinear'))
    """
    size = _data()._check_size(image_size)
    if augment not in AUGMENTS:
        raise StableTrainError(f"unknown augment {augment!r}; choose one of: {', '.join(AUGMENTS)}")
    train = TrainTransform(size) if augment == "crop-flip" else TrainTransform(size, crop=False,
                                                                               flip=augment == "flip")
    return train, EvalTransform(size, crop_pct)


def _auto_channels(paths: Sequence[str], channels: Channels) -> int:
    """1 if every one of up to 64 evenly spaced images is grayscale (headers only), else 3."""
    channels = _check_channels(channels)
    if channels != "auto":
        return int(channels)
    n = len(paths)
    picks = np.unique(np.linspace(0, n - 1, min(n, AUTO_CHANNEL_SAMPLES)).round().astype(np.int64))
    gray_modes = _data()._GRAY_MODES
    for i in picks:
        if _header_mode(paths[int(i)], paths[int(i)]) not in gray_modes:
            return 3
    return 1


def _header_mode(source: str | bytes, name: str) -> str:
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.mode
    except Exception as err:  # noqa: BLE001 - Pillow raises many types on corrupt headers
        raise StableTrainError(f"not a readable image file: {name} ({type(err).__name__})") from None


def _split_info(**info: Any) -> dict:
    return {**info, "jpeg_decoder": decoders()["jpeg"]}


def _fixed_split_checks(where: str, train_labels: np.ndarray, n_test: int, classes: list[str], what: str) -> None:
    data = _data()
    if n_test < 2:
        raise StableTrainError(f"{where}: the test set ({what}) needs at least 2 images, got {n_test}")
    counts = np.bincount(train_labels, minlength=len(classes))
    for label, count in enumerate(counts):
        if count < data.MIN_TRAIN_PER_CLASS:
            raise StableTrainError(
                f"{where}: too few training images: class {classes[label]!r} has {count}; every class needs at "
                f"least {data.MIN_TRAIN_PER_CLASS}")


def _make_split(name: str, classes: list[str], files: PathTable, labels: np.ndarray, train_idx: np.ndarray,
                test_idx: np.ndarray, info: dict, *, image_size: int, augment: str, crop_pct: float, seed: int,
                channels: Channels) -> StreamingSplit:
    train_t, test_t = make_transforms(image_size, augment, crop_pct)
    n_channels = _auto_channels(files, channels)
    train = ImageFiles(files.take(train_idx), labels[train_idx], transform=train_t, channels=n_channels, seed=seed)
    test = ImageFiles(files.take(test_idx), labels[test_idx], transform=test_t, channels=n_channels, seed=seed)
    info = {**info, "augment": augment, "crop_pct": crop_pct, "channels_from": "argument" if channels != "auto"
            else f"headers of up to {AUTO_CHANNEL_SAMPLES} images"}
    return StreamingSplit(name, classes, train, test, _split_info(**info))


# --------------------------------------------------------------------------------------------- image folders


def _walk_images(top: str, prefix: str) -> tuple[list[str], list[str]]:
    """Image files under ``top`` (recursive, hidden skipped, sorted like ``sorted(Path.rglob)``), and skipped files.

    Paths are returned as ``prefix/relative``. Uses :func:`os.scandir`, which
    needs no ``stat`` per file on most file systems, so listing is fast.
    """
    extensions = _data().IMAGE_EXTENSIONS
    images: list[tuple[tuple[str, ...], str]] = []
    skipped: list[tuple[tuple[str, ...], str]] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(top, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as err:
            raise StableTrainError(f"cannot list folder {folder} ({type(err).__name__})") from None
        for entry in listing:
            if entry.name.startswith("."):
                continue
            here = parts + (entry.name,)
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, here))
            elif entry.is_file():
                (images if os.path.splitext(entry.name)[1].lower() in extensions else skipped).append(
                    (here, "/".join((prefix,) + here) if prefix else "/".join(here)))
    images.sort()
    skipped.sort()
    return [p for _, p in images], [p for _, p in skipped]


def _scan_classes(root: Path, folder: Path, *,
                  min_classes: int = 2) -> tuple[list[str], list[str], np.ndarray, list[Path]]:
    """Class names, image paths relative to ``root``, labels, and skipped files of one class-per-folder tree."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < min_classes:
        hint = " (a train/ folder needs a val/ or test/ folder of class folders beside it)" \
            if any(p.name == "train" for p in class_dirs) else ""
        raise StableTrainError(f"{folder} needs at least {min_classes} class sub-folders, "
                               f"found {len(class_dirs)}{hint}")
    files: list[str] = []
    labels: list[np.ndarray] = []
    skipped: list[Path] = []
    base = os.path.relpath(folder, root)
    base = "" if base == "." else base.replace(os.sep, "/")
    for label, class_dir in enumerate(class_dirs):
        members, ignored = _walk_images(str(class_dir), "/".join(p for p in (base, class_dir.name) if p))
        skipped += [root / p for p in ignored]
        if not members:
            extra = f" (only {len(ignored)} non-image file(s), e.g. {os.path.basename(ignored[0])})" if ignored else ""
            raise StableTrainError(f"class folder {class_dir} holds no image files{extra}")
        files += members
        labels.append(np.full(len(members), label, dtype=np.int64))
    return [d.name for d in class_dirs], files, np.concatenate(labels), skipped


def _has_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def scan_image_folder(root: str | os.PathLike, *, split_seed: int = 0, test_fraction: float = 0.2,
                      image_size: int = 224, augment: str = "crop-flip", crop_pct: float = 0.875, seed: int = 0,
                      channels: Channels = "auto") -> StreamingSplit:
    """List a folder of class sub-folders (file names only) as a streaming split.

    Layouts:

    * ``root/train/<class>/…`` and ``root/val/<class>/…`` (or ``test/``; ``val``
      wins when both exist): the given split. The classes are train's
      sub-folders; a class missing from ``val`` is allowed (and logged), a
      ``val`` class that train lacks is an error.
    * ``root/<class>/…``: a stratified split seeded by ``split_seed``
      (:func:`stabletrain.data.stratified_split`, with the same size rules
      and the same file order as :func:`stabletrain.data.load_image_folder`,
      hence the same test set).

    Images are searched recursively inside class folders; files without an
    image extension are skipped with one warning, hidden ones silently; an
    empty class folder is an error. Nothing is decoded, except that
    ``channels="auto"`` reads the headers of up to 64 evenly spaced images
    and picks 1 channel only if all are grayscale (give ``channels=1`` or
    ``3`` to open none).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("cat", "dog"):
        ...     (root / name).mkdir()
        ...     for i in range(5):
        ...         Image.new("RGB", (24, 24)).save(root / name / f"{i}.png")
        >>> split = scan_image_folder(root, image_size=16)
        >>> split.classes, len(split.train), len(split.test), split.channels
        (['cat', 'dog'], 8, 2, 3)
    """
    data = _data()
    path = Path(root)
    if not path.exists():
        raise StableTrainError(f"data folder not found: {path}")
    if not path.is_dir():
        raise StableTrainError(f"not a folder: {path}")
    test_dir = next((path / n for n in ("val", "test") if _has_class_folders(path / n)), None)
    fixed = _has_class_folders(path / "train") and test_dir is not None
    settings = dict(image_size=image_size, augment=augment, crop_pct=crop_pct, seed=seed, channels=channels)
    if not fixed:
        classes, files, labels, skipped = _scan_classes(path, path)
        data._report_skipped(path, skipped)
        train_idx, test_idx = data.stratified_split(labels, test_fraction, split_seed)
        data._check_split_sizes(str(path), labels, train_idx, test_idx, classes, f"test fraction {test_fraction:g}")
        info = {"source": str(path), "format": "image folder", "split": "random", "split_seed": split_seed,
                "test_fraction": test_fraction}
        return _make_split(path.name, classes, PathTable(files, root=path), labels, train_idx, test_idx, info,
                           **settings)
    assert test_dir is not None
    if (path / "test").is_dir() and test_dir.name == "val":
        logger.warning("%s has both val/ and test/: evaluating on val/", path)
    classes, train_files, train_labels, skipped = _scan_classes(path, path / "train")
    test_classes, test_files, test_local, skipped_test = _scan_classes(path, test_dir, min_classes=1)
    data._report_skipped(path, skipped + skipped_test)
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise StableTrainError(f"{test_dir} has class folder(s) that {path / 'train'} lacks: "
                               f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    index = {c: i for i, c in enumerate(classes)}
    test_labels = np.array([index[c] for c in test_classes], dtype=np.int64)[test_local]
    absent = [c for c in classes if c not in set(test_classes)]
    if absent:
        logger.warning("%s holds no images of %d class(es): %s", test_dir, len(absent), ", ".join(absent[:5]))
    _fixed_split_checks(str(path), train_labels, len(test_files), classes, f"{test_dir.name}/")
    files = PathTable(train_files + test_files, root=path)
    labels = np.concatenate([train_labels, test_labels])
    info = {"source": str(path), "format": "image folder", "split": f"folders train/ and {test_dir.name}/"}
    if absent:
        info["classes_missing_from_test"] = absent
    n_train = len(train_files)
    return _make_split(path.name, classes, files, labels, np.arange(n_train), np.arange(n_train, len(files)),
                       info, **settings)


# ------------------------------------------------------------------------------------------------ file lists


def _list_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of the data rows of a list file (header not yet removed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise StableTrainError(f"cannot read file list {path} ({type(err).__name__})") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    suffix = path.suffix.lower()
    delimiter = "," if suffix == ".csv" else "\t" if suffix == ".tsv" else \
        ("," if "," in first else "\t" if "\t" in first else None)
    rows: list[tuple[int, list[str]]] = []
    if delimiter is not None:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        try:
            for cells in reader:
                cells = [c.strip() for c in cells]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                rows.append((reader.line_num, cells))
        except csv.Error as err:
            raise StableTrainError(f"{path}, line {reader.line_num}: {err}") from None
        return rows
    tokens = [(n, ln.strip().rsplit(None, 2)) for n, ln in enumerate(lines, 1)
              if ln.strip() and not ln.lstrip().startswith("#")]
    with_split = bool(tokens) and all(len(t) == 3 and t[2].lower() in _SPLITS for _, t in tokens[1:] or tokens)
    for n, line in ((n, ln.strip()) for n, ln in enumerate(lines, 1)):
        if not line or line.startswith("#"):
            continue
        rows.append((n, line.rsplit(None, 2 if with_split else 1)))
    return rows


def read_file_list(path: str | os.PathLike, *, root: str | os.PathLike | None = None, split_seed: int = 0,
                   test_fraction: float = 0.2, image_size: int = 224, augment: str = "crop-flip",
                   crop_pct: float = 0.875, seed: int = 0, channels: Channels = "auto",
                   check_files: bool = True) -> StreamingSplit:
    """A list of image files with labels (``.csv``, ``.tsv`` or ``.txt``) as a streaming split.

    Rows are ``path,label`` or ``path,label,split``; ``.txt`` lists may be
    comma, tab or whitespace separated (with whitespace, the path may hold
    spaces: the label is the last field, or the last but one when every row
    ends with a split). Blank lines and lines starting with ``#`` are
    ignored. A first row naming its columns is a header (a path column
    ``path``/``file``/``filename``/``image``…, a label column
    ``label``/``class``/``target``…, optionally ``split``); with a header,
    columns are found by name and others are ignored.

    Paths are relative to the list's folder, or to ``root``. Every file must
    exist (checked with one ``stat`` per row, unless ``check_files=False``);
    a missing one is an error naming its line. Images are not opened,
    except for ``channels="auto"`` (see :func:`scan_image_folder`).

    Labels follow :func:`stabletrain.data.load_npz`: if every label is an
    integer, the classes are the values that occur, in increasing order and
    named by their value (labels ``3`` and ``7`` become classes ``'3'``,
    ``'7'``), and a negative or implausibly large value is an error;
    otherwise labels are class names, and the classes are their sorted set.

    A ``split`` column (``train``, ``val``/``validation``/``test``) fixes the
    split; otherwise a stratified split seeded by ``split_seed``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> rows = []
        >>> for i in range(6):
        ...     Image.new("L", (20, 20), 40 * i).save(root / f"{i}.png")
        ...     rows.append(f"{i}.png,{'cat' if i % 2 else 'dog'},{'test' if i >= 4 else 'train'}")
        >>> _ = (root / "list.csv").write_text("path,label,split\\n" + "\\n".join(rows))
        >>> split = read_file_list(root / "list.csv", image_size=16)
        >>> split.classes, len(split.train), len(split.test), split.channels
        (['cat', 'dog'], 4, 2, 1)
    """
    data = _data()
    list_path = Path(path)
    if not list_path.is_file():
        raise StableTrainError(f"file list not found: {list_path}")
    rows = _list_rows(list_path)
    if not rows:
        raise StableTrainError(f"file list {list_path} holds no rows")
    header = [c.lower() for c in rows[0][1]]
    path_col, label_col, split_col = 0, 1, None
    if any(c in _PATH_HEADERS for c in header) and any(c in _LABEL_HEADERS for c in header):
        path_col = next(i for i, c in enumerate(header) if c in _PATH_HEADERS)
        label_col = next(i for i, c in enumerate(header) if c in _LABEL_HEADERS)
        split_col = header.index("split") if "split" in header else None
        rows = rows[1:]
        if not rows:
            raise StableTrainError(f"file list {list_path} holds a header but no rows")
        width = max(path_col, label_col, split_col or 0) + 1
    else:
        widths = {len(cells) for _, cells in rows}
        width = max(widths)
        if width == 3:
            split_col = 2
        elif width != 2:
            line, cells = next((n, c) for n, c in rows if len(c) == width)
            raise StableTrainError(f"{list_path}, line {line}: expected 'path,label' or 'path,label,split', "
                                   f"got {len(cells)} fields")
    base = os.path.abspath(root if root is not None else list_path.parent)
    files: list[str] = []
    label_text: list[str] = []
    split_text: list[str] = []
    lines: list[int] = []
    for line, cells in rows:
        if len(cells) < width:
            raise StableTrainError(f"{list_path}, line {line}: expected {width} fields, got {len(cells)}")
        file, label = cells[path_col], cells[label_col]
        if not file or not label:
            raise StableTrainError(f"{list_path}, line {line}: empty {'path' if not file else 'label'}")
        if split_col is not None:
            value = cells[split_col].lower()
            if value not in _SPLITS:
                raise StableTrainError(f"{list_path}, line {line}: split must be train, val or test, got "
                                       f"{cells[split_col]!r}")
            split_text.append(_SPLITS[value])
        files.append(os.path.join(base, os.path.expanduser(file)))
        label_text.append(label)
        lines.append(line)
    if check_files:
        missing = [i for i, f in enumerate(files) if not os.path.isfile(f)]
        if missing:
            more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise StableTrainError(f"{list_path}, line {lines[missing[0]]}: image file not found: "
                                   f"{files[missing[0]]}{more}")
    if all(_INT.fullmatch(t) for t in label_text):
        values = np.array([int(t) for t in label_text], dtype=np.int64)
        data._check_labels({"label": values}, list_path, None)
        unique = np.unique(values)
        classes = [str(int(v)) for v in unique]
        labels = np.searchsorted(unique, values).astype(np.int64)
    else:
        classes = sorted(set(label_text))
        labels = np.searchsorted(np.array(classes, dtype=object), np.array(label_text, dtype=object)).astype(np.int64)
    if len(classes) < 2:
        raise StableTrainError(f"{list_path}: labels must name at least two classes, found {len(classes)}")
    table = PathTable.compact(files)
    settings = dict(image_size=image_size, augment=augment, crop_pct=crop_pct, seed=seed, channels=channels)
    info: dict[str, Any] = {"source": str(list_path), "format": "file list"}
    if split_col is not None:
        is_test = np.array([s == "test" for s in split_text])
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        if not len(train_idx):
            raise StableTrainError(f"{list_path}: the split column marks no row 'train'")
        _fixed_split_checks(str(list_path), labels[train_idx], len(test_idx), classes, "rows marked val/test")
        info["split"] = "split column"
    else:
        train_idx, test_idx = data.stratified_split(labels, test_fraction, split_seed)
        data._check_split_sizes(str(list_path), labels, train_idx, test_idx, classes,
                                f"test fraction {test_fraction:g}")
        info.update(split="random", split_seed=split_seed, test_fraction=test_fraction)
    return _make_split(list_path.stem, classes, table, labels, train_idx, test_idx, info, **settings)


# ---------------------------------------------------------------------------------------------- tar shards


def _read_classes(folders: Sequence[str]) -> tuple[list[str], str] | None:
    """Class names from ``classes.txt`` (one per line) or ``classes.json`` (a list, or {name: index})."""
    for folder in folders:
        text_file, json_file = os.path.join(folder, "classes.txt"), os.path.join(folder, "classes.json")
        if os.path.isfile(text_file):
            try:
                names = [ln.strip() for ln in Path(text_file).read_text(encoding="utf-8-sig").splitlines()]
            except (OSError, UnicodeDecodeError) as err:
                raise StableTrainError(f"cannot read {text_file} ({type(err).__name__})") from None
            return _check_class_names([n for n in names if n], text_file), text_file
        if os.path.isfile(json_file):
            try:
                value = json.loads(Path(json_file).read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise StableTrainError(f"cannot read {json_file} ({type(err).__name__})") from None
            if isinstance(value, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
                if sorted(value.values()) != list(range(len(value))):
                    raise StableTrainError(f"{json_file}: class indices must be 0..{len(value) - 1}, each once")
                names = [name for name, _ in sorted(value.items(), key=lambda kv: kv[1])]
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                names = value
            else:
                raise StableTrainError(f"{json_file} must hold a list of class names or a {{name: index}} mapping")
            return _check_class_names(names, json_file), json_file
    return None


def _check_class_names(names: list[str], where: str) -> list[str]:
    if len(names) < 2:
        raise StableTrainError(f"{where} must name at least two classes, found {len(names)}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise StableTrainError(f"{where} names class {dup!r} more than once")
    return [str(n) for n in names]


def _scan_labels(shards: Sequence[str]) -> tuple[np.ndarray, int]:
    """The labels of every sample of ``shards`` (image data is skipped, not read into memory)."""
    from webdataset.tariterators import base_plus_ext

    labels: list[int] = []
    for path in shards:
        keys: list[str] = []

        def select(name: str) -> bool:
            prefix, suffix = base_plus_ext(name)
            if prefix is None:
                return False
            if not keys or keys[-1] != prefix:
                keys.append(prefix)
            return suffix.lower() in ("cls", "json")

        labelled = set()
        for sample in _shard_samples(path, select=select, require=False):
            labels.append(_sample_label(sample, f"shard {path}", None))
            labelled.add(sample["__key__"])
        if not keys:
            raise StableTrainError(f"shard {path} holds no samples")
        unlabelled = next((k for k in keys if k not in labelled), None)
        if unlabelled is not None:
            _sample_label({"__key__": unlabelled}, f"shard {path}", None)  # raises: no label
    return np.asarray(labels, dtype=np.int64), len(labels)


def _peek_channels(shard: str, channels: Channels) -> int:
    channels = _check_channels(channels)
    if channels != "auto":
        return int(channels)
    gray_modes = _data()._GRAY_MODES
    for n, sample in enumerate(_shard_samples(shard)):
        ext, payload = _sample_image(sample, f"shard {shard}")
        if _header_mode(payload, f"{shard}:{sample['__key__']}.{ext}") not in gray_modes:
            return 3
        if n + 1 >= AUTO_CHANNEL_SAMPLES:
            break
    return 1


def _shard_folder_pair(folder: str) -> tuple[str, str] | None:
    def holds_shards(sub: str) -> bool:
        return os.path.isdir(sub) and any(n.lower().endswith(SHARD_SUFFIXES) for n in os.listdir(sub))

    train = os.path.join(folder, "train")
    test = next((os.path.join(folder, n) for n in ("val", "test") if holds_shards(os.path.join(folder, n))), None)
    return (train, test) if holds_shards(train) and test is not None else None


def open_shards(train: str | os.PathLike | Sequence[str], test: str | os.PathLike | Sequence[str] | None = None, *,
                split_seed: int = 0, test_fraction: float = 0.2, image_size: int = 224, augment: str = "crop-flip",
                crop_pct: float = 0.875, seed: int = 0, channels: Channels = "auto", shuffle_buffer: int = 1000,
                classes: Sequence[str] | None = None) -> StreamingSplit:
    """WebDataset tar shards as a streaming split.

    ``train`` and ``test`` are anything :func:`expand_shards` accepts. A
    folder holding ``train/`` and ``val/`` (or ``test/``) folders of shards
    gives both. Without test shards, a seeded ``test_fraction`` of the
    *shards* (at least one; at least one left for training) is held out:
    the split is by shard, not stratified.

    Classes: ``classes`` if given; else ``classes.txt`` (one name per line)
    or ``classes.json`` (a list of names, or ``{name: index}``) in the
    shards' folder (for a folder of ``train/`` and ``val/``, that folder or
    ``train/``); else the test shards' labels are read (their image data is
    skipped) and the classes are ``'0'``…``'K-1'`` with K the largest label
    + 1, which also gives the test size. Training labels outside the
    classes are an error when they are read.

    The training stream is shuffled (shard order and a buffer of
    ``shuffle_buffer`` samples, seeded by ``seed`` and the epoch) and split
    over the ranks of ``torch.distributed`` (see :class:`ShardStream`); the
    test stream is neither: every process sees it whole. ``channels="auto"``
    reads the headers of the first 64 images of the first training shard.
    """
    data = _data()
    pair = None
    folders: list[str] = []
    if test is None and isinstance(train, (str, os.PathLike)) and os.path.isdir(train):
        pair = _shard_folder_pair(os.fspath(train))
        folders = [os.fspath(train)] + ([pair[0]] if pair else [])
    if pair is not None:
        train_files, test_files = expand_shards(pair[0]), expand_shards(pair[1])
        split = f"folders train/ and {os.path.basename(pair[1])}/"
    else:
        train_files = expand_shards(train)
        folders = folders or [os.path.dirname(train_files[0]) or "."]
        if test is not None:
            test_files = expand_shards(test)
            split = "train and test shards"
        else:
            if len(train_files) < 2:
                raise StableTrainError(f"one shard cannot be split into train and test; give test shards "
                                       f"(shards:TRAIN|TEST) or more shards ({train_files[0]})")
            if not 0.0 < test_fraction < 1.0:
                raise StableTrainError(f"test fraction must be in (0, 1), got {test_fraction!r}")
            n_test = min(max(int(round(len(train_files) * test_fraction)), 1), len(train_files) - 1)
            order = np.random.default_rng(split_seed).permutation(len(train_files))
            held = set(order[:n_test].tolist())
            test_files = [f for i, f in enumerate(train_files) if i in held]
            train_files = [f for i, f in enumerate(train_files) if i not in held]
            split = f"random by shard (split seed {split_seed}, test fraction {test_fraction:g})"
    overlap = set(train_files) & set(test_files)
    if overlap:
        raise StableTrainError(f"shard {sorted(overlap)[0]} is both a training and a test shard")
    for file in train_files + test_files:
        _check_shard_file(file)
    num_test: int | None = None
    if classes is not None:
        names, classes_from = _check_class_names(list(classes), "classes"), "argument"
    else:
        found = _read_classes(folders)
        if found is not None:
            names, classes_from = found
        else:
            labels, num_test = _scan_labels(test_files)
            k = int(labels.max()) + 1
            limit = max(len(labels), data.MAX_LABEL_FLOOR)
            if k > limit:
                raise StableTrainError(f"test shards hold label {k - 1}: labels must be 0..K-1 class indices with "
                                       f"K at most {limit}; renumber the classes from 0 or add a classes.txt")
            present = np.unique(labels)
            if len(present) < 2:
                raise StableTrainError(f"the test shards hold a single class ({int(present[0])}); add a classes.txt "
                                       f"beside the shards or give test shards with every class")
            names = [str(i) for i in range(k)]
            absent = sorted(set(range(k)) - set(present.tolist()))
            if absent:
                logger.warning("classes %s do not occur in the test shards", ", ".join(map(str, absent[:10])))
            classes_from = "labels of the test shards"
    train_t, test_t = make_transforms(image_size, augment, crop_pct)
    n_channels = _peek_channels(train_files[0], channels)
    train_stream = ShardStream(train_files, transform=train_t, channels=n_channels, seed=seed, shuffle=True,
                               shuffle_buffer=shuffle_buffer, num_classes=len(names))
    # the test stream is whole on every rank (training evaluates it on rank 0); a distributed evaluation splits
    # it explicitly, with with_transform(rank=, world_size=)
    test_stream = ShardStream(test_files, transform=test_t, channels=n_channels, seed=seed, shuffle=False,
                              rank=0, world_size=1, num_classes=len(names), num_samples=num_test)
    source = os.fspath(train) if isinstance(train, (str, os.PathLike)) else ", ".join(map(str, train))
    name = os.path.basename(os.path.normpath(source)) if pair is not None else \
        re.sub(r"[-_]?\{.*$|[-_]?\d*\.(tar|tgz|tar\.gz)$", "", os.path.basename(train_files[0])) or "shards"
    info = {"source": source, "format": "webdataset shards", "split": split, "train_shards": len(train_files),
            "test_shards": len(test_files), "classes_from": classes_from, "shuffle_buffer": shuffle_buffer,
            "augment": augment, "crop_pct": crop_pct}
    return StreamingSplit(name, names, train_stream, test_stream, _split_info(**info))


# ------------------------------------------------------------------------------------------------ dispatch


def _is_shard_spec(text: str) -> bool:
    parts = [p for side in text.split("|") for p in side.split("::")]
    return any(p.strip().lower().endswith(SHARD_SUFFIXES) for p in parts)


def _is_shard_folder(path: Path) -> bool:
    try:
        return any(n.lower().endswith(SHARD_SUFFIXES) for n in os.listdir(path)) or \
            _shard_folder_pair(os.fspath(path)) is not None
    except OSError:
        return False


def load_stream(source: str, *, image_size: int, split_seed: int = 0, test_fraction: float = 0.2,
                augment: str = "crop-flip", crop_pct: float = 0.875, seed: int = 0,
                channels: Channels = "auto") -> StreamingSplit:
    """Open a streaming source: a folder of class folders, a file list, or tar shards (see the module docstring).

    * ``shards:TRAIN`` or ``shards:TRAIN|TEST``, or a path or pattern ending
      in ``.tar``/``.tar.gz``/``.tgz`` (``|`` for test shards there too), or
      a folder of shards → :func:`open_shards`;
    * ``.csv``, ``.tsv`` or ``.txt`` → :func:`read_file_list`;
    * any other folder → :func:`scan_image_folder`.

    ``augment`` is one of :data:`AUGMENTS` (see :func:`make_transforms`).

    Example:
        >>> load_stream("photos.zip", image_size=32)
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: streaming data not found: 'photos.zip' is not an existing folder, file list (.csv, .tsv, .txt) or tar shard pattern
    """
    if not isinstance(source, str) or not source.strip():
        raise StableTrainError(f"data must be a folder, a file list or tar shards, got {source!r}")
    if augment not in AUGMENTS:
        raise StableTrainError(f"unknown augment {augment!r}; choose one of: {', '.join(AUGMENTS)}")
    settings: dict[str, Any] = dict(split_seed=split_seed, test_fraction=test_fraction, image_size=image_size,
                                    augment=augment, crop_pct=crop_pct, seed=seed, channels=channels)
    text = source.strip()
    if text.startswith("shards:") or _is_shard_spec(text):
        spec = text[len("shards:"):] if text.startswith("shards:") else text
        train, _, test = spec.partition("|")
        if not train.strip():
            raise StableTrainError(f"no training shards in {source!r}; write shards:TRAIN or shards:TRAIN|TEST")
        return open_shards(train.strip(), test.strip() or None, **settings)
    path = Path(text)
    if path.is_dir():
        if _is_shard_folder(path):
            return open_shards(text, **settings)
        return scan_image_folder(path, **settings)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        if not path.exists():
            raise StableTrainError(f"file list not found: {path}")
        return read_file_list(path, **settings)
    if not path.exists():
        raise StableTrainError(f"streaming data not found: {source!r} is not an existing folder, file list "
                               f"(.csv, .tsv, .txt) or tar shard pattern")
    raise StableTrainError(f"unsupported streaming source {source!r}: give a folder of class sub-folders, a .csv/"
                           f".tsv/.txt file list, or .tar shards")


# ------------------------------------------------------------------------------------------------- loading


def collate_uint8(batch: Sequence[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(image, label, id)`` items into ``(x uint8 B×C×H×W, y int64 B, ids int64 B)``.

    Example:
        >>> x, y, ids = collate_uint8([(torch.zeros(3, 4, 4, dtype=torch.uint8), 1, 7)] * 2)
        >>> x.shape, y.tolist(), ids.dtype
        (torch.Size([2, 3, 4, 4]), [1, 1], torch.int64)
    """
    images, labels, ids = zip(*batch)
    shape = images[0].shape
    if any(x.shape != shape for x in images):
        shapes = sorted({tuple(x.shape) for x in images})
        raise StableTrainError(f"images of one batch differ in shape: {', '.join(map(str, shapes[:3]))}")
    out = None
    if get_worker_info() is not None:  # in a worker: stack straight into shared memory (no copy when sent)
        out = torch.empty((len(images), *shape), dtype=images[0].dtype).share_memory_()
    return (torch.stack(images, 0, out=out), torch.tensor(labels, dtype=torch.int64),
            torch.tensor(ids, dtype=torch.int64))


def _init_worker(worker_id: int) -> None:
    """One torch thread per worker: the workers are the parallelism (decoding is per process)."""
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, *, batch_size: int | None = None, batch_sampler: Iterable[Any] | None = None,
                sampler: Iterable[Any] | None = None, workers: int = 0, device: str | torch.device = "cpu",
                seed: int = 0, drop_last: bool = False, prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader yielding ``(x uint8 B×C×H×W, y int64 B, ids int64 B)`` batches of ``dataset``.

    Give ``batch_size`` (with an optional ``sampler`` of keys, e.g. an
    :class:`EpochKeys`; default: the indices in order, epoch 0) or a
    ``batch_sampler`` of key lists. A :class:`ShardStream` takes only
    ``batch_size``: it splits itself over ranks and workers. ``workers > 0``
    starts persistent worker processes with one torch thread each; memory
    is pinned when ``device`` is CUDA. Consume with :func:`iterate` and
    convert on the device: ``x.to(device, non_blocking=True).float().div_(255)``.

    Example:
        >>> import tempfile
        >>> from stabletrain.data.transforms import EvalTransform
        >>> path = f"{tempfile.mkdtemp()}/a.png"
        >>> Image.new("RGB", (20, 20)).save(path)
        >>> data = ImageFiles([path] * 5, [0, 1, 0, 1, 0], transform=EvalTransform(16), channels=3)
        >>> [(tuple(x.shape), y.tolist()) for x, y, ids in iterate(make_loader(data, batch_size=4))]
        [((4, 3, 16, 16), [0, 1, 0, 1]), ((1, 3, 16, 16), [0])]
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise StableTrainError(f"workers must be an integer >= 0, got {workers!r}")
    iterable = isinstance(dataset, IterableDataset)
    if iterable and (batch_sampler is not None or sampler is not None):
        raise StableTrainError("a shard stream takes no sampler: it splits and shuffles itself")
    if batch_sampler is not None and (batch_size is not None or sampler is not None or drop_last):
        raise StableTrainError("give either batch_sampler or batch_size (with sampler, drop_last), not both")
    if batch_sampler is None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise StableTrainError(f"batch size must be a positive integer, got {batch_size!r}")
    try:
        cuda = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        cuda = str(device).startswith("cuda")
    workers = int(workers)
    if iterable and workers > 1 and isinstance(dataset, ShardStream):
        per_rank = len(dataset.shards) // dataset.world_size
        if per_rank < workers and not getattr(dataset, "_warned_workers", False):
            dataset._warned_workers = True  # once per stream, not once per epoch
            logger.warning("%d shard(s) per rank for %d workers: workers read the same shards and keep every "
                           "%d-th sample; write at least %d shards per rank for full-speed reading",
                           per_rank, workers, workers, workers)
    options: dict[str, Any] = dict(num_workers=workers, collate_fn=collate_uint8, pin_memory=cuda,
                                   worker_init_fn=_init_worker if workers else None,
                                   persistent_workers=workers > 0,
                                   generator=torch.Generator().manual_seed(derive_seed(seed, "loader")))
    if workers:
        options["prefetch_factor"] = prefetch_factor or 2
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, shuffle=False, drop_last=drop_last,
                      **options)


_ORIGINAL = "Original Traceback (most recent call last):"


def _original_message(text: str, kind: type) -> str:
    """The message of the exception that a DataLoader worker raised, from PyTorch's wrapped text."""
    if _ORIGINAL not in text:
        return " ".join(text.split())
    trace = text.split(_ORIGINAL, 1)[1]
    for name in (f"{kind.__module__}.{kind.__qualname__}", kind.__qualname__):
        at = trace.rfind(f"\n{name}: ")
        if at >= 0:
            return " ".join(trace[at + len(name) + 3:].split())
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else text.split("\n", 1)[0]


def _stop_workers(loader: Any, iterator: Any) -> None:
    """Shut a DataLoader iterator's workers down now, after an error.

    Left to the garbage collector, an iterator caught in the exception's
    reference cycle loses its queues before its workers hear the stop
    signal, and PyTorch then waits 5 s per worker before killing them. A
    persistent loader starts fresh workers on its next iteration.
    """
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception:  # noqa: BLE001 - best effort; PyTorch kills stragglers at exit
            pass
    if getattr(loader, "_iterator", None) is iterator:
        try:
            loader._iterator = None
        except AttributeError:  # pragma: no cover - a future PyTorch without the attribute
            pass


def iterate(loader: Iterable[Any]) -> Iterator[Any]:
    """Yield ``loader``'s batches; a data error raised in a worker becomes one clean :class:`StableTrainError`.

    PyTorch re-raises a worker's exception in the main process as
    ``Caught StableTrainError in DataLoader worker process N`` followed by
    the worker's traceback; this keeps only the original one-line message
    (``not a readable image file: …``). A worker killed by the system (out
    of memory) becomes one line too. Other exceptions are programming
    errors and pass through unchanged. On any error the loader's workers
    are shut down at once.
    """
    iterator = iter(loader)
    message = None
    try:
        for batch in iterator:
            yield batch
    except GeneratorExit:
        raise
    except StableTrainError as err:
        _stop_workers(loader, iterator)
        message = _original_message(str(err), StableTrainError)
    except RuntimeError as err:
        _stop_workers(loader, iterator)
        first = str(err).split("\n", 1)[0].strip()
        if not ("DataLoader worker" in first and ("exited unexpectedly" in first or "killed by signal" in first)):
            raise
        message = (f"{first.rstrip('. ')}: a data-loading worker died (often out of memory: try fewer workers or a "
                   f"smaller batch)")
    except BaseException:
        _stop_workers(loader, iterator)
        raise
    if message is not None:  # raised outside the handler: no chained worker traceback, no reference cycle
        raise StableTrainError(message)
