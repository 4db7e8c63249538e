"""Reading generated jet files into the train/test splits every stabletrain tool uses.

Jet images enter models in **TeV**: a pixel value of 0.25 is 250 GeV of pT.
With this fixed unit every jet below 1 TeV is an ``N×1×H×W`` tensor in
[0, 1], so the library's checks, distortions and attacks apply unchanged,
and the physical constraint that pT is non-negative is the lower edge of
the usual box. Detector effects (:mod:`stabletrain.jets.detector`) convert
to GeV internally.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import StableTrainError
from ..data import DataSplit, ImageDataset, stratified_split

__all__ = ["PIXEL_UNIT_GEV", "expand_paths", "is_jet_file", "load_jets", "read_jets"]

#: GeV per unit of pixel value in model inputs (images are in TeV).
PIXEL_UNIT_GEV = 1000.0
_JETS_FORMAT = "stabletrain.jets/1"


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


def read_jets(source: str | Sequence[str], fields: Sequence[str] = ("images", "label")) -> tuple[dict[str, np.ndarray],
                                                                                               dict[str, Any]]:
    """Read and concatenate datasets from one or more jet files; returns ``(arrays, metadata of the first)``."""
    from .generation import require_hep

    h5py = require_hep("h5py")
    arrays: dict[str, list[np.ndarray]] = {f: [] for f in fields}
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
                missing = [f for f in fields if f not in handle]
                if missing:
                    raise StableTrainError(f"{path} lacks dataset(s) {', '.join(missing)}")
                for name in fields:
                    arrays[name].append(handle[name][()])
        except StableTrainError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise StableTrainError(f"cannot read jet file {path}: {str(error).splitlines()[0]}") from None
        if meta is None:
            meta = this_meta
        elif (this_meta["signal"], this_meta["image"]) != (meta["signal"], meta["image"]):
            raise StableTrainError(f"{path} holds {this_meta['signal']} jets or another image frame than the first file")
    assert meta is not None
    return {name: np.concatenate(parts) for name, parts in arrays.items()}, meta


def load_jets(source: str | Sequence[str], *, split_seed: int = 0, test_fraction: float = 0.2,
              unit_gev: float = PIXEL_UNIT_GEV) -> DataSplit:
    """Jet images as a stratified train/test split; pixel values in units of ``unit_gev`` GeV.

    Class 0 is the background (QCD), class 1 the signal.
    """
    arrays, meta = read_jets(source)
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
    train_idx, test_idx = stratified_split(y.numpy(), test_fraction, split_seed)
    info = {"source": str(source), "split_seed": split_seed, "test_fraction": test_fraction, "unit_gev": unit_gev,
            "signal": meta["signal"], "image": meta["image"], "selection": meta["selection"],
            "preprocess": meta["preprocess"]}
    return DataSplit(name=f"jets-{meta['signal']}", train=ImageDataset(x[train_idx], y[train_idx]),
                     test=ImageDataset(x[test_idx], y[test_idx]), classes=[meta["background"], meta["signal"]],
                     info=info)
