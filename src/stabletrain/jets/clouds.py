"""Particle clouds: the stored constituents of jet files as model inputs, read from HDF5 in chunks.

A *cloud* is one jet's constituents in the jet frame, padded to a fixed
number of slots. stabletrain's objectives, attacks and training loop take
``B×C×H×W`` batches in [0, 1], so a batch of clouds is one: a float32
tensor ``B×1×M×4`` whose row ``i`` is particle slot ``i`` and whose columns
(:data:`CLOUD_COLUMNS`) are

======  ============================================  ====================================
column  value                                         range
======  ============================================  ====================================
mask    1 for a particle, 0 for a padded slot         {0, 1}; models read ``mask > 0.5``
eta     ``0.5 + Δη / (2 H)``                          [0, 1]
phi     ``0.5 + Δφ / (2 H)``, Δφ wrapped into [−π, π)  [0, 1]
pt      ``pT / 1 TeV`` (the unit of jet images)        [0, 1]
======  ============================================  ====================================

with Δη, Δφ relative to the jet axis (the file's ``jet_eta``, ``jet_phi``)
and ``H`` = :data:`CLOUD_HALF_WIDTH`. A padded slot is all zeros, and every
model multiplies what it computes per particle by the hard mask, so padded
slots are ignored whatever values a perturbation or an attack leaves there.
The derived inputs (log pT and the pT fraction ``z = pT / Σ pT``) are
computed inside the models by :func:`cloud_features`, so they always agree
with the particles after a perturbation (a smeared pT changes z).

Why this representation: the objectives (``plain``, ``gaussian``,
``stability``, ``jsd-gaussian``, ``trades``, ``adversarial``,
``consistency``) validate ``B×C×H×W`` inputs in [0, 1] and PGD clips into
that box; with the encoding above they run unchanged, pT ≥ 0 is the lower
edge of the box, and an attack's ε is a fraction of the frame (ε = 0.031 is
0.12 in η or φ) or of 1 TeV.

Why ``H = 2``: the frame must hold the jet's constituents. Anti-kt clusters
in rapidity, so slow massive hadrons can sit far out in pseudorapidity. In
a W/QCD sample (R = 1.0, 400 jets, 14 001 constituents) 13 constituents lie
outside ±1.25 (the image frame) and 5 (0.41 GeV in all, none above 0.14
GeV) outside ±2; these are dropped, as the image drops what falls outside
its frame. Generation allows R ≤ 2, so ±2 holds any jet's cone.

Reading: :class:`CloudArray` reads only the rows it is indexed with, from
the gzip-chunked ``constituents`` dataset, whole storage chunks at a time,
through a bounded cache of decoded chunks (``cache_mb`` per file and
process), so the constituents are never held whole unless they fit it.
:func:`load_clouds` gives the same stratified train/test split of the same
files as :func:`stabletrain.jets.data.load_jets`, so image and cloud
taggers are tested on the same jets.

Example:
    >>> import numpy as np
    >>> constituents = np.array([[[200.0, 0.1, 0.3], [50.0, -0.2, 0.2], [0.0, 0.0, 0.0]]])
    >>> x = encode_clouds(constituents, np.array([2]), np.array([0.0]), np.array([0.25]), slots=4)
    >>> tuple(x.shape), x[0, 0, :, 0].tolist()
    ((1, 1, 4, 4), [1.0, 1.0, 0.0, 0.0])
    >>> features, mask = cloud_features(x)
    >>> [round(v, 3) for v in features[0, 0].tolist()]   # Δη, Δφ, log(pT / GeV), z
    [0.1, 0.05, 5.298, 0.8]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset, stratified_split
from .data import _JETS_FORMAT, DEFAULT_CACHE_MB, PIXEL_UNIT_GEV, H5Rows, expand_paths, open_h5, read_jets

__all__ = [
    "CLOUD_COLUMNS",
    "CLOUD_HALF_WIDTH",
    "DEFAULT_CACHE_MB",
    "PT_FLOOR_GEV",
    "CloudArray",
    "Clouds",
    "JetClouds",
    "check_clouds",
    "cloud_features",
    "decode_clouds",
    "encode_clouds",
    "jet_axes",
    "load_clouds",
    "pad_clouds",
]

#: The columns of a cloud tensor's last dimension.
CLOUD_COLUMNS = ("mask", "eta", "phi", "pt")
#: Half-width H of the (Δη, Δφ) frame of clouds: the frame column is ``0.5 + Δ / (2H)``.
CLOUD_HALF_WIDTH = 2.0
#: log pT is taken of ``max(pT, PT_FLOOR_GEV)`` (stored constituents go down to 1e-12 GeV; smearing reaches 0).
PT_FLOOR_GEV = 0.01
_MASK, _ETA, _PHI, _PT = range(4)


class Clouds(NamedTuple):
    """A decoded cloud batch: ``mask`` (B×M bool) and ``deta``, ``dphi`` (rad), ``pt`` (GeV), zero where padded."""

    mask: torch.Tensor
    deta: torch.Tensor
    dphi: torch.Tensor
    pt: torch.Tensor


def check_clouds(x: Any, name: str = "clouds") -> torch.Tensor:
    """Check that ``x`` is a ``B×1×M×4`` floating-point cloud batch; returns it.

    Example:
        >>> check_clouds(torch.zeros(2, 1, 3, 4)).shape
        torch.Size([2, 1, 3, 4])
        >>> check_clouds(torch.zeros(2, 1, 25, 25))
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: clouds must be B×1×M×4 particle slots (mask, eta, phi, pt; see stabletrain.jets.clouds), got shape (2, 1, 25, 25)
    """
    if not isinstance(x, torch.Tensor):
        raise StableTrainError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[3] != len(CLOUD_COLUMNS) or x.shape[2] < 1:
        raise StableTrainError(f"{name} must be B×1×M×4 particle slots ({', '.join(CLOUD_COLUMNS)}; see "
                               f"stabletrain.jets.clouds), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise StableTrainError(f"{name} must be floating point, got dtype {x.dtype}")
    return x


def decode_clouds(x: torch.Tensor) -> Clouds:
    """The physical particles of a cloud batch (:class:`Clouds`); padded slots read zero.

    Example:
        >>> x = torch.tensor([[[[1.0, 0.55, 0.45, 0.1], [0.0, 0.3, 0.3, 0.3]]]])
        >>> c = decode_clouds(x)
        >>> c.mask.tolist(), [round(v, 3) for v in (c.deta[0, 0].item(), c.dphi[0, 0].item(), c.pt[0, 0].item())]
        ([[True, False]], [0.2, -0.2, 100.0])
    """
    rows = check_clouds(x)[:, 0]
    mask = rows[..., _MASK] > 0.5
    keep = mask.to(rows.dtype)
    scale = 2.0 * CLOUD_HALF_WIDTH
    return Clouds(mask, (rows[..., _ETA] - 0.5) * scale * keep, (rows[..., _PHI] - 0.5) * scale * keep,
                  rows[..., _PT] * PIXEL_UNIT_GEV * keep)


def cloud_features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-particle inputs ``(Δη, Δφ, log(pT / GeV), z)`` (B×M×4, zero where padded) and the B×M mask.

    ``log pT`` is of ``max(pT, PT_FLOOR_GEV)``; ``z = pT / Σ pT`` over the
    jet's particles (0 for a jet of zero pT).

    Example:
        >>> x = torch.zeros(1, 1, 3, 4)
        >>> x[0, 0, :2] = torch.tensor([[1.0, 0.5, 0.5, 0.03], [1.0, 0.5, 0.5, 0.01]])
        >>> features, mask = cloud_features(x)
        >>> [round(v, 2) for v in features[0, :, 3].tolist()], mask.tolist()
        ([0.75, 0.25, 0.0], [[True, True, False]])
    """
    clouds = decode_clouds(x)
    keep = clouds.mask.to(clouds.pt.dtype)
    total = clouds.pt.sum(dim=1, keepdim=True)
    z = torch.where(total > 0, clouds.pt / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
    log_pt = torch.log(clouds.pt.clamp_min(PT_FLOOR_GEV)) * keep
    return torch.stack([clouds.deta, clouds.dphi, log_pt, z * keep], dim=-1), clouds.mask


def pad_clouds(x: torch.Tensor, slots: int) -> torch.Tensor:
    """``x`` with zero (padded) slots appended up to ``slots`` particle slots.

    Example:
        >>> pad_clouds(torch.ones(2, 1, 3, 4), 5)[:, 0, :, 0].tolist()
        [[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]]
    """
    check_clouds(x)
    if slots < x.shape[2]:
        raise StableTrainError(f"cannot pad {x.shape[2]} particle slots to fewer ({slots})")
    return torch.nn.functional.pad(x, (0, 0, 0, slots - x.shape[2]))


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2.0 * np.pi) - np.pi


def jet_axes(constituents: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``N×2`` (η, φ) of the massless four-vector sums of the jets' stored constituents.

    The axis of files that do not store ``jet_phi``; generated files store
    the jet's own axis (its E-scheme four-momentum), which this reproduces
    up to the constituents' masses.

    Example:
        >>> c = np.array([[[10.0, 0.5, 1.0], [10.0, 0.5, 1.2], [0.0, 0.0, 0.0]]])
        >>> np.round(jet_axes(c, np.array([2])), 3).tolist()
        [[0.502, 1.1]]
    """
    constituents = np.asarray(constituents, dtype=np.float64)
    valid = np.arange(constituents.shape[1])[None, :] < np.minimum(counts, constituents.shape[1])[:, None]
    pt = np.where(valid, constituents[..., 0], 0.0)
    eta, phi = constituents[..., 1], constituents[..., 2]
    px, py, pz = (pt * np.cos(phi)).sum(1), (pt * np.sin(phi)).sum(1), (pt * np.sinh(eta)).sum(1)
    return np.column_stack([np.arcsinh(pz / np.maximum(np.hypot(px, py), 1e-12)), np.arctan2(py, px)])


def encode_clouds(constituents: np.ndarray, counts: np.ndarray, jet_eta: np.ndarray, jet_phi: np.ndarray,
                  slots: int) -> torch.Tensor:
    """Constituents ``N×K×3`` (pT GeV, η, φ; the first ``counts`` rows real) → a ``N×1×slots×4`` cloud tensor.

    Particles keep their order (the files store them by decreasing pT);
    those outside the ±:data:`CLOUD_HALF_WIDTH` frame are dropped and the
    rest moved up, and a jet with more than ``slots`` particles keeps its
    ``slots`` first (hardest). Raises :class:`StableTrainError` for
    non-finite or negative values, or a particle above 1 TeV.
    """
    constituents = np.asarray(constituents, dtype=np.float64)
    if constituents.ndim != 3 or constituents.shape[2] != 3:
        raise StableTrainError(f"constituents must be N×K×3 (pt, eta, phi), got shape {constituents.shape}")
    n, k = constituents.shape[:2]
    counts = np.minimum(np.asarray(counts, dtype=np.int64).reshape(-1), k)
    jet_eta = np.asarray(jet_eta, dtype=np.float64).reshape(-1)
    jet_phi = np.asarray(jet_phi, dtype=np.float64).reshape(-1)
    if not (len(counts) == len(jet_eta) == len(jet_phi) == n):
        raise StableTrainError(f"need one count and one axis per jet: {n} jets, {len(counts)} counts, "
                               f"{len(jet_eta)} and {len(jet_phi)} axes")
    if int(slots) < 1:
        raise StableTrainError(f"a cloud needs at least one particle slot, got {slots}")
    valid = np.arange(k)[None, :] < counts[:, None]
    pt, eta, phi = constituents[..., 0], constituents[..., 1], constituents[..., 2]
    if not (np.isfinite(constituents[valid]).all() and np.isfinite(jet_eta).all() and np.isfinite(jet_phi).all()):
        raise StableTrainError("jet constituents and axes must be finite")
    if (pt[valid] < 0).any():
        raise StableTrainError("jet constituents must have pT >= 0")
    if valid.any() and float(pt[valid].max()) > PIXEL_UNIT_GEV:
        raise StableTrainError(f"a constituent of {float(pt[valid].max()):.0f} GeV exceeds the cloud unit of "
                               f"{PIXEL_UNIT_GEV:g} GeV")
    deta = eta - jet_eta[:, None]
    dphi = _wrap(phi - jet_phi[:, None])
    keep = valid & (np.abs(deta) <= CLOUD_HALF_WIDTH) & (np.abs(dphi) <= CLOUD_HALF_WIDTH)
    rows = np.zeros((n, k, 4), dtype=np.float64)
    rows[..., _MASK] = 1.0
    rows[..., _ETA] = 0.5 + deta / (2.0 * CLOUD_HALF_WIDTH)
    rows[..., _PHI] = 0.5 + dphi / (2.0 * CLOUD_HALF_WIDTH)
    rows[..., _PT] = pt / PIXEL_UNIT_GEV
    rows[~keep] = 0.0
    order = np.argsort(~keep, axis=1, kind="stable")  # kept particles first, in their order
    rows = np.take_along_axis(rows, order[..., None], axis=1)
    out = np.zeros((n, int(slots), 4), dtype=np.float32)
    width = min(k, int(slots))
    out[:, :width] = rows[:, :width]
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).unsqueeze(1)


# ------------------------------------------------------------------------------------------------- reading

_open = open_h5  # the per-process handles of :func:`stabletrain.jets.data.open_h5`


class CloudArray(H5Rows):
    """The clouds of some jets of some files, read when indexed: ``array[index]`` is a ``B×1×M×4`` tensor.

    A :class:`~stabletrain.jets.data.H5Rows` of the ``constituents``
    dataset (see there for indexing, ``to``, ``subset``, ``chunks`` and the
    per-process file handles): a read encodes the stored rows with
    :func:`encode_clouds`, with each jet's axis and particle count.

    Args:
        files: the jet files, in order.
        offsets: the first global row of each file (``len(files) + 1`` values, the last the total).
        rows: the global rows this array holds, in its order.
        axes: ``total×2`` jet axes (η, φ) of every global row.
        counts: ``total`` numbers of stored particles of every global row.
        slots: particle slots of every cloud.
        cache_mb: decoded-chunk cache per file, per process (MiB; see :func:`stabletrain.jets.data.read_rows`).
    """

    dataset = "constituents"

    def __init__(self, files: Sequence[str], offsets: np.ndarray, rows: np.ndarray, axes: np.ndarray,
                 counts: np.ndarray, slots: int, cache_mb: int = DEFAULT_CACHE_MB,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(files, offsets, rows, cache_mb, device)
        self.axes, self.counts = axes, counts
        self.slots = int(slots)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (1, self.slots, len(CLOUD_COLUMNS))

    @property
    def jet_axes(self) -> np.ndarray:
        """``len×2`` (η, φ) of the jet axis of each row of this array, in its order."""
        return self.axes[self.rows]

    def __repr__(self) -> str:
        return f"CloudArray({len(self)} jets × {self.slots} slots from {len(self.files)} file(s), device={self.device})"

    def encode(self, raw: np.ndarray, global_rows: np.ndarray, path: str) -> torch.Tensor:
        axes = self.axes[global_rows]
        return encode_clouds(raw, self.counts[global_rows], axes[:, 0], axes[:, 1], self.slots)


@dataclass
class JetClouds(ImageDataset, Dataset):
    """Jet clouds (a lazy :class:`CloudArray` as ``x``) with their labels; also a map-style ``Dataset``.

    ``dataset[i]`` is ``(cloud 1×M×4, label)``, so a
    :class:`torch.utils.data.DataLoader` can batch it; ``dataset.x[index]``
    reads a whole batch at once (what training does).
    """

    def subset(self, index: torch.Tensor | np.ndarray) -> JetClouds:
        idx = torch.as_tensor(index, dtype=torch.long)
        return JetClouds(self.x.subset(idx), self.y[idx])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[int(i)], self.y[int(i)]

    @property
    def jet_eta(self) -> torch.Tensor:
        """The pseudorapidity of each jet's axis (float64, N): what energy smearing of its particles needs."""
        return torch.from_numpy(np.ascontiguousarray(self.x.jet_axes[:, 0], dtype=np.float64))


def _constituent_shapes(paths: Sequence[str]) -> list[tuple[int, int]]:
    """``(jets, stored slots)`` of each file's ``constituents``, checking that they are (pt, eta, phi)."""
    from .generation import require_hep

    h5py = require_hep("h5py")
    shapes = []
    for path in paths:
        try:
            with h5py.File(path, "r") as handle:
                if handle.attrs.get("format") != _JETS_FORMAT:
                    raise StableTrainError(f"{path} is not a stabletrain jet file (no format {_JETS_FORMAT!r})")
                if "constituents" not in handle:
                    raise StableTrainError(f"{path} holds no constituents (it was written before they were "
                                           f"stored); regenerate it with `stabletrain jets generate`")
                dataset = handle["constituents"]
                columns = [str(c.decode() if isinstance(c, bytes) else c) for c in dataset.attrs.get("columns", [])]
                if dataset.ndim != 3 or dataset.shape[2] != 3 or (columns and columns != ["pt", "eta", "phi"]):
                    raise StableTrainError(f"the constituents of {path} must be N×M×3 (pt, eta, phi), got shape "
                                           f"{dataset.shape} and columns {columns}")
                shapes.append((int(dataset.shape[0]), int(dataset.shape[1])))
        except StableTrainError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise StableTrainError(f"cannot read jet file {path}: {str(error).splitlines()[0]}") from None
    return shapes


def load_clouds(source: str | Sequence[str], *, split_seed: int = 0, test_fraction: float = 0.2,
                reserve: int | None = None, cache_mb: int = DEFAULT_CACHE_MB) -> DataSplit:
    """The jets of ``source`` (files, a comma-separated list or a glob) as clouds, split train/test.

    The split is :func:`stabletrain.jets.data.load_jets`'s (the same
    ``split_seed`` picks the same test jets). Labels, counts and jet axes
    are read whole (a few numbers per jet); the constituents are read per
    batch by :class:`CloudArray`. Every cloud has as many slots as the
    largest stored jet of the files plus ``reserve`` free ones (default
    :data:`stabletrain.jets.cloud_perturbations.SOFT_PARTICLES`), so that
    soft-particle injection has room in every jet.
    """
    from .cloud_perturbations import SOFT_PARTICLES

    reserve = SOFT_PARTICLES if reserve is None else reserve
    if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
        raise StableTrainError(f"reserve must be a whole number of slots >= 0, got {reserve!r}")
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 1:
        raise StableTrainError(f"cache_mb must be a whole number of MiB >= 1, got {cache_mb!r}")
    paths = [str(p) for p in expand_paths(source)]
    for path in paths:
        if not os.path.exists(path):
            raise StableTrainError(f"jet file not found: {path}")
    shapes = _constituent_shapes(paths)
    arrays, meta = read_jets(paths, ("label", "jet_eta", "n_constituents"), optional=("jet_phi",))
    y = torch.from_numpy(arrays["label"].astype(np.int64))
    if len(torch.unique(y)) != 2:
        raise StableTrainError(f"{source} must hold both signal and background jets")
    offsets = np.concatenate([[0], np.cumsum([n for n, _ in shapes])]).astype(np.int64)
    if offsets[-1] != len(y):
        raise StableTrainError(f"{source} holds {offsets[-1]} clouds but {len(y)} labels")
    counts = arrays["n_constituents"].astype(np.int64)
    stored = np.concatenate([np.full(n, m) for n, m in shapes]).astype(np.int64)
    counts = np.minimum(counts, stored)
    if (counts < 0).any():
        raise StableTrainError(f"{source} has negative constituent counts")
    if "jet_phi" in arrays:
        axes, axis_source = np.column_stack([arrays["jet_eta"], arrays["jet_phi"]]).astype(np.float64), \
            "jet_eta, jet_phi stored per jet"
    else:
        axes, axis_source = _axes_from_constituents(paths, shapes, counts, cache_mb), \
            "massless sum of the stored constituents (the file stores no jet_phi)"
    if not np.isfinite(axes).all():
        raise StableTrainError(f"the jet axes in {source} must be finite")
    slots = int(counts.max()) + reserve
    train_idx, test_idx = stratified_split(y.numpy(), test_fraction, split_seed)
    whole = CloudArray(paths, offsets, np.arange(len(y)), axes, counts, slots, cache_mb)
    info = {"source": str(source), "split_seed": split_seed, "test_fraction": test_fraction, "input": "clouds",
            "columns": list(CLOUD_COLUMNS), "half_width": CLOUD_HALF_WIDTH, "unit_gev": PIXEL_UNIT_GEV,
            "slots": slots, "reserve": reserve, "axis": axis_source, "signal": meta["signal"],
            "selection": meta["selection"], "image": meta.get("image")}
    return DataSplit(name=f"jet-clouds-{meta['signal']}",
                     train=JetClouds(whole.subset(train_idx), y[train_idx]),
                     test=JetClouds(whole.subset(test_idx), y[test_idx]),
                     classes=[meta["background"], meta["signal"]], info=info)


def _axes_from_constituents(paths: Sequence[str], shapes: Sequence[tuple[int, int]], counts: np.ndarray,
                            cache_mb: int, chunk: int = 4096) -> np.ndarray:
    """Jet axes from the stored constituents, read ``chunk`` jets at a time."""
    axes, start = [], 0
    for path, (n, _m) in zip(paths, shapes):
        dataset = _open(path)["constituents"]
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            axes.append(jet_axes(dataset[lo:hi], counts[start + lo:start + hi]))
        start += n
    return np.concatenate(axes) if axes else np.zeros((0, 2))

