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

import glob
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset, stratified_split

__all__ = ["PIXEL_UNIT_GEV", "JetImages", "expand_paths", "is_jet_file", "load_jets", "read_jets"]

#: GeV per unit of pixel value in model inputs (images are in TeV).
PIXEL_UNIT_GEV = 1000.0
_JETS_FORMAT = "stabletrain.jets/1"


@dataclass
class JetImages(ImageDataset):
    """Jet images with labels and, per jet, the η map ``(η₀, a, b)``: pixel ``[i, j]`` sits at η₀ + a·uᵢ + b·vⱼ.

    ``eta_map`` is an ``N×3`` float64 tensor (see
    :func:`stabletrain.jets.images.cell_eta`), or ``None`` when unknown.
    """

    eta_map: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta_map is not None and tuple(self.eta_map.shape) != (len(self.y), 3):
            raise StableTrainError(f"η maps must be N×3, got {tuple(self.eta_map.shape)} for {len(self.y)} jets")

    def subset(self, index: torch.Tensor | np.ndarray) -> JetImages:
        idx = torch.as_tensor(index, dtype=torch.long)
        base = super().subset(idx)
        return JetImages(base.x, base.y, base.positions, None if self.eta_map is None else self.eta_map[idx])


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


def load_jets(source: str | Sequence[str], *, split_seed: int = 0, test_fraction: float = 0.2,
              unit_gev: float = PIXEL_UNIT_GEV) -> DataSplit:
    """Jet images as a stratified train/test split; pixel values in units of ``unit_gev`` GeV.

    Class 0 is the background (QCD), class 1 the signal.
    """
    arrays, meta = read_jets(source, ("images", "label", "jet_eta"), optional=("eta_map",))
    images = arrays["images"].astype(np.float32)
    if images.ndim != 3 or not np.isfinite(images).all() or (images < 0).any():
        raise StableTrainError(f"jet images in {source} must be finite, non-negative N×H×W arrays")
    x = torch.from_numpy(images / unit_gev).unsqueeze(1)
    if float(x.max()) > 1.0:
        raise StableTrainError(f"a pixel of {float(x.max()) * unit_gev:.0f} GeV exceeds the unit of {unit_gev:g} GeV; "
                               f"load with a larger unit_gev")
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
    return DataSplit(name=f"jets-{meta['signal']}",
                     train=JetImages(x[train_idx], y[train_idx], eta_map=eta_map[train_idx]),
                     test=JetImages(x[test_idx], y[test_idx], eta_map=eta_map[test_idx]),
                     classes=[meta["background"], meta["signal"]], info=info)
