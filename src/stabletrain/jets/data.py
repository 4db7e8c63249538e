"""Reading generated jet files into the train/test splits every stabletrain tool uses.

Jet images enter models in **TeV**: a pixel value of 0.25 is 250 GeV of pT.
With this fixed unit every jet below 1 TeV is an ``N×1×H×W`` tensor in
[0, 1], so the library's checks, distortions and attacks apply unchanged,
and the physical constraint that pT is non-negative is the lower edge of
the usual box. Detector effects (:mod:`stabletrain.jets.detector`) convert
to GeV internally.

The splits' datasets are :class:`JetImages`: besides images and labels they
keep each jet's *η map* (``eta_map``, N×3), from which the pseudorapidity of
every pixel follows (:func:`stabletrain.jets.images.cell_eta`); energy
smearing needs it, because a calorimeter measures E = pT·cosh η. Files
written before the maps were stored give ``(jet η, 0, 0)`` for preprocessed
images (every pixel at the jet's η; the rotation that would relate a
pixel's offset to η was not stored, and for a random rotation the jet η
alone is the better guess) and ``(jet η, 1, 0)`` for images around the jet
axis, whose rows are η exactly.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset, stratified_split

__all__ = ["DEFAULT_CACHE_MB", "PIXEL_UNIT_GEV", "H5Rows", "ImageRows", "JetImages", "expand_paths", "is_jet_file",
           "load_jets", "open_h5", "pixel_moments", "read_jets", "read_rows"]

#: GeV per unit of pixel value in model inputs (images are in TeV).
PIXEL_UNIT_GEV = 1000.0
#: Decoded-row cache per open file and dataset, per process (MiB): 512 MiB holds the images of 200,000 jets
#: (2.5 kB each at 25×25) or the constituents of 340,000 (1.5 kB at 128 slots), so a training set of that size
#: is read from the file once and then served from memory, whatever the batch order; larger sets stream, and a
#: block-shuffled order (``--shuffle blocks``) reads each storage chunk once per epoch.
DEFAULT_CACHE_MB = 512
#: h5py's own chunk cache per open file (MiB): the rows are cached decoded above, so this only has to hold the
#: chunks that one read touches.
_H5_CACHE_MB = 8
_JETS_FORMAT = "stabletrain.jets/1"

# ------------------------------------------------------------------------------------------- lazy HDF5 rows

_HANDLES: dict[tuple[int, str, int], tuple[tuple[int, int], Any]] = {}


def _file_version(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError as error:
        raise StableTrainError(f"cannot read jet file {path}: {error.strerror or error}") from None
    return stat.st_ino, stat.st_mtime_ns


def open_h5(path: str, cache_mb: int = _H5_CACHE_MB) -> Any:
    """A read-only h5py handle on ``path`` for this process, kept open (h5py handles do not cross a fork).

    ``cache_mb`` is h5py's chunk cache for the handle. The handle is
    reopened when the file was replaced or rewritten since (another inode
    or modification time), so a regenerated file is never read through a
    stale handle.
    """
    key = (os.getpid(), str(path), int(cache_mb))
    version = _file_version(path)
    cached = _HANDLES.get(key)
    if cached is not None and cached[0] == version and cached[1].id.valid:
        return cached[1]
    if cached is not None and cached[1].id.valid:
        cached[1].close()
    from .generation import require_hep

    h5py = require_hep("h5py")
    try:
        handle = h5py.File(path, "r", rdcc_nbytes=int(cache_mb) * 2 ** 20, rdcc_nslots=10007)
    except OSError as error:
        raise StableTrainError(f"cannot read jet file {path}: {str(error).splitlines()[0]}") from None
    _HANDLES[key] = (version, handle)
    return handle


class _DecodedChunks:
    """This process's decoded storage chunks of one dataset of one file, least recently used dropped first.

    HDF5 serves a fancy selection (``dataset[[3, 900, 70000]]``) one
    hyperslab at a time, at about 1.3 ms for every storage chunk it touches
    even when h5py's chunk cache holds them all (256 random rows of a
    100,000-jet file: 330 ms, against 8 ms for the same number within 16
    chunks; docs/benchmarks.md). Reading whole chunks as slices and keeping
    them decoded here makes a cached row an array lookup.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self.used = 0
        self.blocks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reads = 0  # storage chunks read from the file (for tests and benchmarks)

    def rows(self, dataset: Any, local: np.ndarray) -> np.ndarray:
        """The rows ``local`` (sorted, unique) of ``dataset``."""
        n = len(dataset)
        step = int(dataset.chunks[0]) if dataset.chunks else 1024
        which = local // step
        out = np.empty((len(local), *dataset.shape[1:]), dtype=dataset.dtype)
        # ``local`` is sorted, so each chunk's rows are one run of it
        starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]]) if len(local) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(local)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            block = int(which[start])
            values = self.blocks.get(block)
            if values is None:
                values = dataset[block * step:min((block + 1) * step, n)]
                self.reads += 1
                self.blocks[block] = values
                self.used += values.nbytes
                while self.used > self.budget and len(self.blocks) > 1:
                    self.used -= self.blocks.popitem(last=False)[1].nbytes
            else:
                self.blocks.move_to_end(block)
            out[start:end] = values[local[start:end] - block * step]
        return out


_DECODED: dict[tuple[int, str, str], tuple[tuple[int, int], _DecodedChunks]] = {}


def read_rows(path: str, name: str, local: np.ndarray, cache_mb: int = DEFAULT_CACHE_MB) -> np.ndarray:
    """Rows ``local`` (sorted, unique) of dataset ``name`` of ``path``, through this process's decoded-chunk cache.

    The cache (``cache_mb`` MiB per file and dataset) is dropped when the
    file changes on disk. Every row comes back exactly as stored.
    """
    key = (os.getpid(), str(path), str(name))
    version = _file_version(path)
    cached = _DECODED.get(key)
    if cached is None or cached[0] != version or cached[1].budget != int(cache_mb) * 2 ** 20:
        cached = (version, _DecodedChunks(int(cache_mb) * 2 ** 20))
        _DECODED[key] = cached
    return cached[1].rows(open_h5(path)[name], np.asarray(local, dtype=np.int64))


class H5Rows:
    """Rows of one HDF5 dataset across files, read when indexed: it stands where an in-memory ``x`` would.

    ``array[index]`` reads the rows ``index`` (an integer, a slice, a
    tensor/array/list of indices or a boolean mask; or a tuple whose first
    item is one of those and whose rest indexes the tensor read) and returns
    a tensor on :attr:`device`. ``len``, ``shape``, ``ndim``, ``dtype``,
    ``to(device)`` and ``subset(index)`` work without reading anything. A
    read groups the rows by file and reads each file's rows in increasing
    order, whole storage chunks at a time, through a per-process cache of
    decoded chunks (``cache_mb`` MiB per file and dataset, see
    :func:`read_rows`), then turns them into a tensor
    with :meth:`encode`. File handles are kept per process (see
    :func:`open_h5`), not in the object, so it pickles, and DataLoader
    workers open their own. :meth:`chunks` streams it, for full passes.

    Subclasses set :attr:`dataset` and :attr:`row_shape` and implement
    :meth:`encode`; see :class:`ImageRows` and
    :class:`stabletrain.jets.clouds.CloudArray`.

    Args:
        files: the jet files, in order.
        offsets: the first global row of each file (``len(files) + 1`` values, the last the total).
        rows: the global rows this array holds, in its order.
        cache_mb: decoded-chunk cache per file and dataset, per process (MiB).
    """

    #: The HDF5 dataset the rows are read from.
    dataset = ""
    dtype = torch.float32

    def __init__(self, files: Sequence[str], offsets: np.ndarray, rows: np.ndarray,
                 cache_mb: int = DEFAULT_CACHE_MB, device: str | torch.device = "cpu") -> None:
        self.files = tuple(str(f) for f in files)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cache_mb = int(cache_mb)
        self.device = torch.device(device)
        if len(self.offsets) != len(self.files) + 1:
            raise StableTrainError(f"need {len(self.files) + 1} file offsets, got {len(self.offsets)}")

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row as returned (without the leading row dimension)."""
        raise NotImplementedError(f"{type(self).__name__} must define row_shape")

    def encode(self, raw: np.ndarray, global_rows: np.ndarray, path: str) -> torch.Tensor:
        """The stored rows ``raw`` (of global rows ``global_rows``, sorted, from ``path``) as a CPU tensor."""
        raise NotImplementedError(f"{type(self).__name__} must define encode")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.row_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def _copy(self, rows: np.ndarray | None = None, device: str | torch.device | None = None) -> Any:
        out = copy.copy(self)
        if rows is not None:
            out.rows = np.asarray(rows, dtype=np.int64)
        if device is not None:
            out.device = torch.device(device)
        return out

    def to(self, device: str | torch.device, *args: Any, **kwargs: Any) -> Any:
        """The same rows, returning tensors on ``device`` (nothing is read)."""
        return self._copy(device=device)

    def _positions(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        positions = np.asarray(index)
        if positions.dtype == bool:
            if positions.shape != (len(self),):
                raise StableTrainError(f"a boolean index needs {len(self)} values, got shape {positions.shape}")
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64).reshape(-1)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise StableTrainError(f"index out of range for {len(self)} rows")
        return positions % max(len(self), 1)

    def subset(self, index: Any) -> Any:
        """The rows ``index`` of this array, not read yet."""
        return self._copy(rows=self.rows[self._positions(index)])

    def read(self, global_rows: np.ndarray) -> torch.Tensor:
        """The rows ``global_rows`` (any order, repeats allowed), on the CPU."""
        global_rows = np.asarray(global_rows, dtype=np.int64).reshape(-1)
        out = torch.zeros((len(global_rows), *self.row_shape), dtype=self.dtype)
        which = np.searchsorted(self.offsets, global_rows, side="right") - 1
        for f in np.unique(which):
            here = np.flatnonzero(which == f)
            unique, inverse = np.unique(global_rows[here], return_inverse=True)
            local = unique - self.offsets[f]
            try:
                raw = read_rows(self.files[f], self.dataset, local, self.cache_mb)
            except (OSError, KeyError, ValueError) as error:
                raise StableTrainError(f"cannot read the {self.dataset} of {self.files[f]}: "
                                       f"{str(error).splitlines()[0]}") from None
            values = self.encode(raw, unique, self.files[f])
            out[torch.from_numpy(here)] = values[torch.from_numpy(inverse.reshape(-1))]
        return out

    def __getitem__(self, index: Any) -> torch.Tensor:
        rest: tuple = ()
        if isinstance(index, tuple):
            index, rest = (index[0], index[1:]) if index else (slice(None), ())
        values = self.read(self.rows[self._positions(index)])
        if isinstance(index, (int, np.integer)):
            values = values[0]
        values = values.to(self.device)
        if not rest:
            return values
        return values[rest] if isinstance(index, (int, np.integer)) else values[(slice(None), *rest)]

    def chunks(self, size: int = 4096) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, rows start … start + size)`` over the whole array, in order: a full pass in bounded memory."""
        if int(size) < 1:
            raise StableTrainError(f"a chunk needs at least one row, got {size}")
        for start in range(0, len(self), int(size)):
            yield start, self[start:start + int(size)]

    def max(self) -> torch.Tensor:
        """The largest value of all rows (a 0-dim tensor), read chunk by chunk."""
        return self._reduce(torch.max)

    def min(self) -> torch.Tensor:
        """The smallest value of all rows (a 0-dim tensor), read chunk by chunk."""
        return self._reduce(torch.min)

    def _reduce(self, op: Any) -> torch.Tensor:
        if len(self) == 0:
            raise StableTrainError(f"{op.__name__}() of no rows")
        return op(torch.stack([op(part) for _start, part in self.chunks()]))

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.row_shape)
        return (f"{type(self).__name__}({len(self)} rows of {shape} from {len(self.files)} file(s), "
                f"device={self.device})")


class ImageRows(H5Rows):
    """Jet images read from the files' ``images`` when indexed: ``array[index]`` is a ``B×1×H×W`` tensor.

    A row is the stored image (GeV) as float32 divided by ``unit_gev``,
    exactly what :func:`load_jets` computes when it loads the images whole
    (``lazy=False``), so a batch is bitwise the same either way. Reading
    checks the rows it reads (finite, non-negative, no pixel above one
    unit), as a whole load checks every image.
    """

    dataset = "images"

    def __init__(self, files: Sequence[str], offsets: np.ndarray, rows: np.ndarray, pixels: tuple[int, int],
                 unit_gev: float = PIXEL_UNIT_GEV, cache_mb: int = DEFAULT_CACHE_MB,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(files, offsets, rows, cache_mb, device)
        self.pixels = (int(pixels[0]), int(pixels[1]))
        self.unit_gev = float(unit_gev)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (1, *self.pixels)

    def encode(self, raw: np.ndarray, global_rows: np.ndarray, path: str) -> torch.Tensor:
        return _images_to_tensor(np.asarray(raw), path, self.unit_gev)


def _images_to_tensor(raw: np.ndarray, source: Any, unit_gev: float) -> torch.Tensor:
    """Stored images (GeV, N×H×W) → the ``N×1×H×W`` float32 model input in units of ``unit_gev``, checked."""
    images = raw.astype(np.float32)
    if images.ndim != 3 or not np.isfinite(images).all() or (images < 0).any():
        raise StableTrainError(f"jet images in {source} must be finite, non-negative N×H×W arrays")
    x = torch.from_numpy(images / unit_gev).unsqueeze(1)
    if x.numel() and float(x.max()) > 1.0:
        raise StableTrainError(f"a pixel of {float(x.max()) * unit_gev:.0f} GeV exceeds the unit of {unit_gev:g} GeV; "
                               f"load with a larger unit_gev")
    return x


def pixel_moments(x: torch.Tensor | H5Rows, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and (unbiased) std over the rows of ``x`` (a tensor or lazy rows), in float64, streamed.

    Returns two tensors of ``x.shape[1:]`` flattened. Rows are read
    ``chunk`` at a time and the moments combined exactly (Chan et al.'s
    pairwise update), so a full pass over files larger than memory is
    bounded by one chunk.

    Example:
        >>> x = torch.rand(10, 1, 3, 3)
        >>> mean, std = pixel_moments(x, chunk=3)
        >>> torch.allclose(mean, x.flatten(1).double().mean(0)), torch.allclose(std, x.flatten(1).double().std(0))
        (True, True)
    """
    n_total = len(x)
    if n_total < 2:
        raise StableTrainError(f"per-pixel statistics need at least 2 rows, got {n_total}")
    count, mean, m2 = 0, None, None
    for start in range(0, n_total, int(chunk)):
        part = x[start:start + int(chunk)].flatten(1).double().cpu()
        n = len(part)
        part_mean = part.mean(0)
        part_m2 = ((part - part_mean) ** 2).sum(0)
        if mean is None:
            count, mean, m2 = n, part_mean, part_m2
            continue
        delta = part_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + part_m2 + delta ** 2 * (count * n / total)
        count = total
    assert mean is not None and m2 is not None
    return mean, (m2 / (count - 1)).sqrt()


@dataclass
class JetImages(ImageDataset, Dataset):
    """Jet images with labels and, per jet, the η map ``(η₀, a, b)``: pixel ``[i, j]`` sits at η₀ + a·uᵢ + b·vⱼ.

    ``x`` is an ``N×1×H×W`` tensor or lazy :class:`ImageRows` (what
    :func:`load_jets` gives by default: batches are read from the files
    when indexed). ``eta_map`` is an ``N×3`` float64 tensor (see
    :func:`stabletrain.jets.images.cell_eta`), or ``None`` when unknown.
    It is a map-style ``Dataset`` too: ``dataset[i]`` is ``(image, label)``.
    """

    eta_map: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta_map is not None and tuple(self.eta_map.shape) != (len(self.y), 3):
            raise StableTrainError(f"η maps must be N×3, got {tuple(self.eta_map.shape)} for {len(self.y)} jets")

    @property
    def lazy(self) -> bool:
        """Whether the images are read from the files when indexed (not held in memory)."""
        return isinstance(self.x, H5Rows)

    def subset(self, index: torch.Tensor | np.ndarray) -> JetImages:
        idx = torch.as_tensor(index, dtype=torch.long)
        x = self.x.subset(idx) if isinstance(self.x, H5Rows) else self.x[idx]
        return JetImages(x, self.y[idx], None if self.positions is None else self.positions[idx],
                         None if self.eta_map is None else self.eta_map[idx])

    def in_memory(self) -> JetImages:
        """These jets with their images read whole into a tensor (itself if they are in memory already)."""
        if not self.lazy:
            return self
        return JetImages(self.x[:], self.y, self.positions, self.eta_map)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[int(i)], self.y[int(i)]


def expand_paths(source: str | Sequence[str]) -> list[Path]:
    """A file, a comma-separated list or a glob (for shard files) → existing paths, sorted."""
    items = source.split(",") if isinstance(source, str) else list(source)
    paths: list[Path] = []
    for item in (i.strip() for i in items if i and i.strip()):
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise StableTrainError(f"no jet files match {item!r}")
        paths.extend(Path(m) for m in matches)
    if not paths:
        raise StableTrainError("no jet files given")
    return paths


def is_jet_file(source: str) -> bool:
    """Whether ``source`` names HDF5 files (by extension), so it should be read as jets."""
    first = source.split(",")[0].strip()
    return first.lower().endswith((".h5", ".hdf5"))


def read_jets(source: str | Sequence[str], fields: Sequence[str] = ("images", "label"), *,
              optional: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and concatenate datasets from one or more jet files; returns ``(arrays, metadata of the first)``.

    Each of ``fields`` must be in every file; each of ``optional`` is
    returned only if every file holds it.
    """
    from .generation import require_hep

    h5py = require_hep("h5py")
    fields = list(fields) + [f for f in optional if f not in fields]
    arrays: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    absent: set[str] = set()
    meta: dict[str, Any] | None = None
    for path in expand_paths(source):
        if not path.exists():
            raise StableTrainError(f"jet file not found: {path}")
        try:
            with h5py.File(path, "r") as handle:
                if handle.attrs.get("format") != _JETS_FORMAT:
                    raise StableTrainError(f"{path} is an HDF5 file but not a stabletrain jet file "
                                           f"(no format {_JETS_FORMAT!r}); make one with `stabletrain jets generate`")
                this_meta = json.loads(handle.attrs["metadata"])
                missing = [f for f in fields if f not in handle and f not in optional]
                if missing:
                    raise StableTrainError(f"{path} lacks dataset(s) {', '.join(missing)}")
                for name in fields:
                    if name in handle:
                        arrays[name].append(handle[name][()])
                    else:
                        absent.add(name)
        except StableTrainError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise StableTrainError(f"cannot read jet file {path}: {str(error).splitlines()[0]}") from None
        if meta is None:
            meta = this_meta
        elif (this_meta["signal"], this_meta["image"]) != (meta["signal"], meta["image"]):
            raise StableTrainError(f"{path} holds {this_meta['signal']} jets or another image frame than the first file")
    assert meta is not None
    return {name: np.concatenate(parts) for name, parts in arrays.items() if name not in absent}, meta


def _eta_maps(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The N×3 η maps of the jets read, and where they came from."""
    if "eta_map" in arrays:
        return arrays["eta_map"].astype(np.float64), "stored per jet (pixel η exact up to the pixel size)"
    eta = arrays["jet_eta"].astype(np.float64)
    if meta.get("preprocess", True):
        return (np.column_stack([eta, np.zeros_like(eta), np.zeros_like(eta)]),
                "jet η for every pixel (the file predates stored η maps)")
    return np.column_stack([eta, np.ones_like(eta), np.zeros_like(eta)]), "jet η + the pixel's row offset (exact)"


def _image_shapes(paths: Sequence[Path]) -> list[tuple[int, int, int]]:
    """``(jets, H, W)`` of each file's ``images``, read from the dataset's shape (no pixel is read)."""
    shapes = []
    for path in paths:
        try:
            handle = open_h5(str(path))
            if "images" not in handle:
                raise StableTrainError(f"{path} lacks dataset(s) images")
            dataset = handle["images"]
        except StableTrainError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise StableTrainError(f"cannot read jet file {path}: {str(error).splitlines()[0]}") from None
        if dataset.ndim != 3:
            raise StableTrainError(f"jet images in {path} must be finite, non-negative N×H×W arrays, got shape "
                                   f"{dataset.shape}")
        shapes.append(tuple(int(v) for v in dataset.shape))
    if len({s[1:] for s in shapes}) > 1:
        raise StableTrainError(f"the jet files hold images of different sizes: "
                               f"{', '.join(f'{h}×{w}' for _n, h, w in shapes)}")
    return shapes


def load_jets(source: str | Sequence[str], *, split_seed: int = 0, test_fraction: float = 0.2,
              unit_gev: float = PIXEL_UNIT_GEV, lazy: bool = True, cache_mb: int = DEFAULT_CACHE_MB) -> DataSplit:
    """Jet images as a stratified train/test split; pixel values in units of ``unit_gev`` GeV.

    Class 0 is the background (QCD), class 1 the signal. With ``lazy``
    (the default) the images stay in the files: the splits' ``x`` are
    :class:`ImageRows`, which read the rows a batch asks for, through a
    cache of decoded storage chunks (``cache_mb`` MiB per file, per
    process; see :func:`read_rows`); labels and η maps (a few
    numbers per jet) are read whole. Each batch is checked as it is read
    (finite, non-negative, no pixel above one unit). ``lazy=False`` reads
    and checks every image now and holds them as tensors; both give the
    same split and bitwise the same batches.
    """
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 1:
        raise StableTrainError(f"cache_mb must be a whole number of MiB >= 1, got {cache_mb!r}")
    fields = ("label", "jet_eta") if lazy else ("images", "label", "jet_eta")
    arrays, meta = read_jets(source, fields, optional=("eta_map",))
    paths = expand_paths(source)
    if lazy:
        shapes = _image_shapes(paths)
        offsets = np.concatenate([[0], np.cumsum([n for n, _h, _w in shapes])]).astype(np.int64)
        if offsets[-1] != len(arrays["label"]):
            raise StableTrainError(f"{source} holds {offsets[-1]} images but {len(arrays['label'])} labels")
        x: torch.Tensor | ImageRows = ImageRows([str(p) for p in paths], offsets, np.arange(offsets[-1]),
                                                shapes[0][1:], unit_gev, cache_mb)
    else:
        x = _images_to_tensor(arrays["images"], source, unit_gev)
    y = torch.from_numpy(arrays["label"].astype(np.int64))
    if len(torch.unique(y)) != 2:
        raise StableTrainError(f"{source} must hold both signal and background jets")
    if meta.get("preprocess") and "flip" not in meta:
        warnings.warn(f"{source} was generated before the flip of preprocessed images was decided on the pixel "
                      f"halves: about 60 % of its images have the heavier half on the left; regenerate it",
                      stacklevel=2)
    eta_map, eta_source = _eta_maps(arrays, meta)
    if eta_map.shape != (len(y), 3) or not np.isfinite(eta_map).all():
        raise StableTrainError(f"jet η in {source} must be finite, one per jet")
    eta_map = torch.from_numpy(eta_map)
    train_idx, test_idx = stratified_split(y.numpy(), test_fraction, split_seed)
    info = {"source": str(source), "split_seed": split_seed, "test_fraction": test_fraction, "unit_gev": unit_gev,
            "signal": meta["signal"], "image": meta["image"], "selection": meta["selection"],
            "preprocess": meta["preprocess"], "eta_map": eta_source}
    whole = JetImages(x, y, eta_map=eta_map)
    return DataSplit(name=f"jets-{meta['signal']}", train=whole.subset(train_idx), test=whole.subset(test_idx),
                     classes=[meta["background"], meta["signal"]], info=info)
