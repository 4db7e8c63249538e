"""Detector and pile-up effects as distortions of jet images.

They work like the paper's distortions (``parse_distortion('smear-1')``) and
join evaluation sweeps. Images are in units of :data:`PIXEL_UNIT_GEV`
(TeV); parameters are in physical units:

==============  =====================================================================
``pileup-MU``   image-space pile-up, the cheap approximation: add Poisson(MU) minimum-bias
                events, drawn from a cached pool of pile-up images (pT images add
                linearly), to the finished (trimmed) jet images, so grooming never acts
                on it. For event-level pile-up, added before clustering and trimming, see
                ``stabletrain jets generate --pileup MU`` (:mod:`stabletrain.jets.events`)
``smear-A``     calorimeter resolution σ/E = A/√E ⊕ c (E = pT·cosh η in GeV, c = 5 %), per cell
``deadcells-F`` a fraction F of the cells, chosen at random per image, read zero
``threshold-T`` cells below T GeV read zero (noise suppression)
``shift-K``     the jet axis mis-centred by K pixels (up, down, left or right)
``coarse-G``    G×G blocks of cells merged: a coarser calorimeter, same frame
==============  =====================================================================

Smearing draws from a gamma distribution with mean E and standard deviation
σ(E): unlike a clipped Gaussian it never makes negative energy, and it keeps
the mean exactly. A calorimeter measures energy, and pixels hold pT, so a
cell's energy is E = pT·cosh η with η the cell's pseudorapidity. That needs
each jet's η, which images do not carry: give it with :func:`jet_eta`
around the evaluation (``stabletrain jets evaluate`` does). Without it,
``smear-A`` warns and takes η = 0 (E = pT), which overstates the resolution
by √cosh η, about 1.3× on average for |η| < 2.

Only the families in :data:`DETECTOR_FAMILIES` are detector effects;
:func:`check_detector_specs` rejects anything else (e.g. ``jpeg-50``).

Example:
    >>> import torch
    >>> from stabletrain.distortions import parse_distortion
    >>> x = torch.zeros(2, 1, 25, 25); x[:, 0, 12, 12] = 0.2
    >>> parse_distortion("threshold-1")(x).sum().item() == x.sum().item()
    True
    >>> float(parse_distortion("shift-2")(x, torch.Generator().manual_seed(0)).sum()) == float(x.sum())
    True
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import cache_dir
from ..checks import StableTrainError
from ..distortions import Distortion, register_distortion
from .data import PIXEL_UNIT_GEV
from .images import ImageSpec, cell_eta, pixelize, wrap_phi

__all__ = [
    "DEFAULT_POOL_EVENTS",
    "CLOUD_DETECTOR_FAMILIES",
    "DETECTOR_FAMILIES",
    "SMEAR_CONSTANT",
    "Coarsen",
    "DeadCells",
    "Pileup",
    "Shift",
    "Smear",
    "Threshold",
    "build_pileup_pool",
    "check_detector_specs",
    "current_jet_eta",
    "detector_sweep",
    "jet_eta",
    "pileup_pool",
    "set_pileup_pool",
]

#: The constant term of the calorimeter resolution used by ``smear-A``.
SMEAR_CONSTANT = 0.05
#: Minimum-bias events in the default pile-up pool (override with $STABLETRAIN_PILEUP_EVENTS).
DEFAULT_POOL_EVENTS = 2000


def _seed_from(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator))


def _gev(x: torch.Tensor) -> torch.Tensor:
    return x * PIXEL_UNIT_GEV


_ETA: dict[str, Any] = {}


def _as_eta_map(eta: Any) -> torch.Tensor:
    """Per-jet η (N) or η maps (N×3, see :func:`stabletrain.jets.images.cell_eta`) → an N×3 float64 tensor."""
    values = torch.as_tensor(eta.detach().cpu() if torch.is_tensor(eta) else np.asarray(eta, dtype=np.float64),
                             dtype=torch.float64)
    if values.ndim == 1:
        values = torch.stack([values, torch.zeros_like(values), torch.zeros_like(values)], dim=1)
    if values.ndim != 2 or values.shape[1] != 3:
        raise StableTrainError(f"jet η must be N values or N×3 η maps (η₀, a, b), got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise StableTrainError("jet η must be finite")
    return values


@contextmanager
def jet_eta(eta: Any, spec: ImageSpec = ImageSpec()) -> Iterator[torch.Tensor | None]:
    """Within the block, ``smear-A`` takes the cells' η from ``eta``, one row per jet of the batch.

    ``eta`` is either N jet pseudorapidities, used for every cell of a jet,
    or ``N×3`` η maps ``(η₀, a, b)``: the cell of pixel ``[i, j]`` is at
    η₀ + a·uᵢ + b·vⱼ, with uᵢ, vⱼ the pixel centres of the frame ``spec``
    (:func:`stabletrain.jets.images.cell_eta`). Jet files store the maps
    as ``eta_map``, and :func:`stabletrain.jets.data.load_jets` keeps them
    as ``split.test.eta_map`` (and the frame as ``split.info["image"]``).
    Rows follow the batch's rows, so a batch of another length is an error.
    ``None`` leaves no η in force (the fallback, η = 0).

    Example:
        >>> import torch
        >>> from stabletrain.distortions import parse_distortion
        >>> x = torch.full((2, 1, 25, 25), 0.01)
        >>> with jet_eta(torch.tensor([0.0, 1.5])):
        ...     y = parse_distortion("smear-1")(x, torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([2, 1, 25, 25])
    """
    previous = dict(_ETA)
    _ETA.clear()
    if eta is not None:
        _ETA.update(map=_as_eta_map(eta), spec=spec)
    try:
        yield _ETA.get("map")
    finally:
        _ETA.clear()
        _ETA.update(previous)


def current_jet_eta() -> tuple[torch.Tensor, ImageSpec] | None:
    """The N×3 η maps and the image frame set by the innermost :func:`jet_eta` block, or ``None``."""
    return (_ETA["map"], _ETA["spec"]) if "map" in _ETA else None


class Smear(Distortion):
    """Per-cell energy resolution σ/E = A/√E ⊕ c with E = pT·cosh η; empty cells stay empty.

    Pixels hold pT; the calorimeter resolution is a function of the cell's
    energy E = pT·cosh η. The cell's η comes from the jet's η map given with
    :func:`jet_eta`: the η of the image centre (the leading subjet of a
    preprocessed image, which is the jet η plus the subjet's offset) plus
    the pixel centre's offset, rotated back into η (preprocessing rotates
    the image, so the image's row axis is not the η axis). Files written
    before the maps were stored give only the jet η per jet (one η for the
    whole jet; see :func:`stabletrain.jets.data.load_jets`).

    Fallback: with no :func:`jet_eta` in force, it warns and uses η = 0
    for every cell (cosh η = 1, so E = pT), which overstates the resolution
    by √cosh η. The energy is drawn from a gamma distribution of mean E and
    standard deviation σ(E), and the pixel reads E′/cosh η: the mean pT is
    kept exactly.
    """

    family = "smear"

    def __init__(self, param: float) -> None:
        if not param >= 0:
            raise StableTrainError(f"smear-A needs a stochastic term A >= 0 (GeV^1/2), got {param}")
        super().__init__(param)

    def resolution(self, energy_gev: torch.Tensor) -> torch.Tensor:
        """Relative resolution σ/E at each energy E (GeV, not pT)."""
        return torch.sqrt(self.param ** 2 / energy_gev.clamp_min(1e-9) + SMEAR_CONSTANT ** 2)

    def cosh_eta(self, x: torch.Tensor) -> torch.Tensor:
        """cosh η of each cell of the batch ``x`` (B×1×H×W), from :func:`jet_eta` (1, with a warning, without it)."""
        current = current_jet_eta()
        b, _c, h, w = x.shape
        if current is None:
            warnings.warn("smear-A was given no jet η (see stabletrain.jets.detector.jet_eta): using η = 0, "
                          "so E = pT, which overstates the resolution by √cosh η", stacklevel=4)
            return torch.ones(b, 1, h, w, dtype=torch.float64, device=x.device)
        eta_map, spec = current
        if len(eta_map) != b:
            raise StableTrainError(f"smear-A has jet η for {len(eta_map)} jets but the batch holds {b}")
        if (h, w) != (spec.pixels, spec.pixels):
            raise StableTrainError(f"smear-A has jet η for {spec.pixels}×{spec.pixels} images but the batch's are "
                                   f"{h}×{w}")
        eta = torch.from_numpy(cell_eta(eta_map.numpy(), spec)).unsqueeze(1)
        return torch.cosh(eta).to(x.device)

    def draw(self, energy: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Gamma draws of mean ``energy`` (GeV, all > 0) and standard deviation σ(E)·E: measured energies.

        The calorimeter's response, shared by the image effect (a cell's
        energy) and :class:`stabletrain.jets.cloud_detector.CloudSmear` (a
        particle's energy), so ``smear-A`` and ``cloud_smear-A`` are the
        same calorimeter.
        """
        rel = self.resolution(energy)
        shape = 1.0 / rel ** 2  # gamma(k, θ): mean kθ = E, std √k θ = rel·E
        rng = np.random.default_rng(_seed_from(generator))
        draws = rng.gamma(shape.cpu().numpy(), (energy / shape).cpu().numpy())
        return torch.from_numpy(np.asarray(draws, dtype=np.float64)).to(energy.device)

    def apply(self, x: torch.Tensor, generator: Any) -> torch.Tensor:
        cosh = self.cosh_eta(x)
        energy = _gev(x).double() * cosh
        occupied = energy > 0
        out = torch.zeros_like(energy)
        streams = getattr(generator, "generators", None)  # per-example streams (stabletrain.seeding.ExampleRNG)
        if streams is None:
            out[occupied] = self.draw(energy[occupied], generator)
        else:
            if len(streams) != len(x):
                raise StableTrainError(f"smear-A got {len(streams)} random streams for {len(x)} images")
            for i, stream in enumerate(streams):  # row i draws from stream i only
                out[i][occupied[i]] = self.draw(energy[i][occupied[i]], stream)
        return (out / cosh / PIXEL_UNIT_GEV).to(x.dtype).clamp_(0.0, 1.0)


class DeadCells(Distortion):
    """A fraction F of the cells (exactly round(F·H·W) per image, chosen at random) read zero."""

    family = "deadcells"

    def __init__(self, param: float) -> None:
        if not 0 <= param <= 1:
            raise StableTrainError(f"deadcells-F needs a fraction F in [0, 1], got {param}")
        super().__init__(param)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, _c, h, w = x.shape
        dead = round(self.param * h * w)
        if dead == 0:
            return x.clone()
        order = torch.rand((b, h * w), generator=generator).argsort(dim=1)[:, :dead].to(x.device)
        mask = torch.ones(b, h * w, device=x.device, dtype=x.dtype)
        mask.scatter_(1, order, 0.0)
        return x * mask.view(b, 1, h, w)


class Threshold(Distortion):
    """Cells below T GeV read zero."""

    family = "threshold"

    def __init__(self, param: float) -> None:
        if not param >= 0:
            raise StableTrainError(f"threshold-T needs T >= 0 GeV, got {param}")
        super().__init__(param)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.where(_gev(x) < self.param, torch.zeros_like(x), x)


class Shift(Distortion):
    """The image moved by K whole pixels up, down, left or right (at random), zero-filled."""

    family = "shift"

    def __init__(self, param: float) -> None:
        if param < 0 or param != int(param):
            raise StableTrainError(f"shift-K needs a whole number of pixels K >= 0, got {param}")
        super().__init__(int(param))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        k = int(self.param)
        if k == 0:
            return x.clone()
        directions = torch.randint(0, 4, (x.shape[0],), generator=generator).tolist()
        out = torch.zeros_like(x)
        h, w = x.shape[-2:]
        for i, d in enumerate(directions):
            if d == 0:
                out[i, :, k:, :] = x[i, :, : h - k, :] if k < h else 0
            elif d == 1:
                out[i, :, : h - k, :] = x[i, :, k:, :] if k < h else 0
            elif d == 2:
                out[i, :, :, k:] = x[i, :, :, : w - k] if k < w else 0
            else:
                out[i, :, :, : w - k] = x[i, :, :, k:] if k < w else 0
        return out


class Coarsen(Distortion):
    """G×G blocks of cells summed and shared evenly: coarser granularity in the same frame."""

    family = "coarse"

    def __init__(self, param: float) -> None:
        if param < 1 or param != int(param):
            raise StableTrainError(f"coarse-G needs a whole block size G >= 1, got {param}")
        super().__init__(int(param))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        g = int(self.param)
        if g == 1:
            return x.clone()
        h, w = x.shape[-2:]
        ph, pw = (-h) % g, (-w) % g
        padded = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        blocks = F.avg_pool2d(padded, g)  # the block mean is the block sum shared over g² cells
        spread = blocks.repeat_interleave(g, dim=-2).repeat_interleave(g, dim=-1)
        return spread[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w].contiguous()


# ---------------------------------------------------------------------------------------------- pile-up

_POOL: dict[str, Any] = {}


def _pool_path(n_events: int, seed: int, spec: ImageSpec, eta_max: float) -> Path:
    return cache_dir("pileup") / f"minbias-{n_events}ev-seed{seed}-{spec.pixels}px{spec.half_width:g}-eta{eta_max:g}.npz"


def build_pileup_pool(n_events: int = DEFAULT_POOL_EVENTS, seed: int = 0, spec: ImageSpec = ImageSpec(),
                      eta_max: float = 2.0, progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """Images (GeV) of ``n_events`` minimum-bias events, each in a frame at a random (η, φ).

    Frame centres are uniform in |η| < ``eta_max`` (the jet acceptance) and
    in φ. The pool is cached under :func:`stabletrain.cache.cache_dir`, so
    it is generated once per setting; a larger ``n_events`` gives a pool
    for serious studies.
    """
    from ..files import atomic_write_bytes
    from .generation import (
        Selection,
        _make_pythia,
        _visible_particles,
        pythia_settings,
        require_hep,
    )

    if n_events < 1:
        raise StableTrainError(f"a pile-up pool needs at least one event, got {n_events}")
    path = _pool_path(n_events, seed, spec, eta_max)
    if use_cache and path.exists():
        try:
            with np.load(path) as data:
                return data["images"]
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    ak = require_hep("awkward")
    from ..progress import progress_bar

    rng = np.random.default_rng(seed)
    images = np.zeros((n_events, spec.pixels, spec.pixels), dtype=np.float32)
    done, chunk = 0, 250
    with progress_bar(total=n_events, desc="pile-up pool", unit="event", enabled=progress) as bar:
        while done < n_events:
            pythia = _make_pythia(pythia_settings("minbias", Selection(), seed=(seed * 7919 + done) % 900_000_000 + 1))
            run = pythia.nextBatch(min(chunk, n_events - done) + 5)  # a few spare for skipped events
            particles = _visible_particles(run)
            for event in range(min(len(run), n_events - done)):
                p = particles[event]
                px, py, pz = ak.to_numpy(p.px), ak.to_numpy(p.py), ak.to_numpy(p.pz)
                pt = np.hypot(px, py)
                eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
                phi = np.arctan2(py, px)
                eta0, phi0 = rng.uniform(-eta_max, eta_max), rng.uniform(-np.pi, np.pi)
                images[done] = pixelize(pt, eta - eta0, wrap_phi(phi - phi0), spec)
                done += 1
                bar.update(1)
    if use_cache:
        import io

        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=images, meta=json.dumps({"n_events": n_events, "seed": seed}))
        atomic_write_bytes(path, buffer.getvalue())
    return images


def set_pileup_pool(pool: np.ndarray | str | Path | None) -> None:
    """Use ``pool`` (GeV images, or an .npz with ``images``) for ``pileup-MU``; ``None`` restores the default."""
    if pool is None:
        _POOL.pop("images", None)
        return
    if isinstance(pool, (str, Path)):
        try:
            with np.load(pool) as data:
                pool = data["images"]
        except Exception as error:
            raise StableTrainError(f"cannot read pile-up pool {pool}: {error}") from None
    pool = np.asarray(pool, dtype=np.float32)
    if pool.ndim != 3 or len(pool) == 0 or (pool < 0).any():
        raise StableTrainError(f"a pile-up pool must be a non-empty, non-negative N×H×W array, got {pool.shape}")
    _POOL["images"] = torch.from_numpy(pool)


def pileup_pool() -> torch.Tensor:
    """The pool in use (GeV images), built or loaded from the cache on first use."""
    if "images" not in _POOL:
        events = int(os.environ.get("STABLETRAIN_PILEUP_EVENTS", DEFAULT_POOL_EVENTS))
        _POOL["images"] = torch.from_numpy(build_pileup_pool(events))
    return _POOL["images"]


class Pileup(Distortion):
    """Image-space pile-up (the cheap approximation): Poisson(MU) pool images added to each finished image.

    The images are added after trimming, so unlike event-level pile-up
    (:mod:`stabletrain.jets.events`) no grooming removes any of it.
    """

    family = "pileup"

    def __init__(self, param: float) -> None:
        if not (param >= 0 and math.isfinite(param)):
            raise StableTrainError(f"pileup-MU needs a mean number of interactions MU >= 0, got {param}")
        super().__init__(param)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.param == 0:
            return x.clone()
        pool = pileup_pool()
        if tuple(pool.shape[1:]) != tuple(x.shape[-2:]):
            raise StableTrainError(f"the pile-up pool has {tuple(pool.shape[1:])} images but the jets are "
                                   f"{tuple(x.shape[-2:])}")
        counts = torch.poisson(torch.full((x.shape[0],), float(self.param)), generator=generator).long()
        draws = torch.randint(0, len(pool), (int(counts.sum()),), generator=generator)
        owner = torch.repeat_interleave(torch.arange(x.shape[0]), counts)
        added = torch.zeros(x.shape[0], *pool.shape[1:], dtype=torch.float32)
        added.index_add_(0, owner, pool[draws])
        return (x + (added / PIXEL_UNIT_GEV).unsqueeze(1).to(x.device, x.dtype)).clamp_(0.0, 1.0)


for _cls in (Pileup, Smear, DeadCells, Threshold, Shift, Coarsen):
    register_distortion(_cls.family, _cls)


#: The distortion families that are detector effects on jet images (what ``stabletrain jets evaluate`` takes for
#: image taggers).
DETECTOR_FAMILIES: tuple[str, ...] = tuple(c.family for c in (Pileup, Smear, DeadCells, Threshold, Shift, Coarsen))
#: The detector effects on particle clouds (:mod:`stabletrain.jets.cloud_detector`, registered when it is
#: imported), each the analogue of the image family after ``cloud_``; ``coarse-G`` has none.
CLOUD_DETECTOR_FAMILIES: tuple[str, ...] = ("cloud_pileup", "cloud_smear", "cloud_deadcells", "cloud_threshold",
                                            "cloud_shift")
_KINDS = {"image": ("jet images", DETECTOR_FAMILIES), "cloud": ("particle clouds", CLOUD_DETECTOR_FAMILIES)}


def _listed(families: Iterable[str]) -> str:
    return ", ".join(f + "-…" for f in families)


def check_detector_specs(specs: Iterable[str], kind: str | None = "image") -> list[str]:
    """Check that every spec is ``clean`` or a detector effect with a valid parameter; return them stripped.

    ``kind`` is the input of the taggers: ``'image'`` (the default) takes
    :data:`DETECTOR_FAMILIES`, ``'cloud'`` takes
    :data:`CLOUD_DETECTOR_FAMILIES`, and ``None`` either (to check specs
    before the taggers are known). Image distortions such as ``jpeg-50``
    are not detector effects and are rejected, with the allowed families
    named; so is an effect on the other kind of input, naming its analogue.

    Example:
        >>> check_detector_specs(["smear-1", " clean"])
        ['smear-1', 'clean']
        >>> check_detector_specs(["cloud_threshold-2"], kind="cloud")
        ['cloud_threshold-2']
    """
    from ..distortions import parse_distortion
    from . import cloud_detector  # noqa: F401  (registers the cloud families)

    if kind is not None and kind not in _KINDS:
        raise StableTrainError(f"unknown kind of jet input {kind!r}; known: {', '.join(_KINDS)}")
    items = [s.strip() for s in specs if s and s.strip()]
    if not items:
        raise StableTrainError("no detector effects given")
    for spec in items:
        family, _sep, value = spec.partition("-")
        if spec == "clean":
            continue
        if family not in DETECTOR_FAMILIES + CLOUD_DETECTOR_FAMILIES:
            allowed = ("; ".join(f"{what} take {_listed(families)}" for what, families in _KINDS.values())
                       if kind is None else f"{_KINDS[kind][0]} take {_listed(_KINDS[kind][1])}")
            raise StableTrainError(f"{spec!r} is not a detector effect; jet evaluations on {allowed} (or clean)")
        if kind is not None and family not in _KINDS[kind][1]:
            other = "cloud" if kind == "image" else "image"
            analogue = family[len("cloud_"):] if kind == "image" else f"cloud_{family}"
            hint = f" (its analogue here is {analogue}-{value})" if analogue in _KINDS[kind][1] else \
                f" ({family}-… has no analogue on {_KINDS[kind][0]})"
            raise StableTrainError(f"{spec!r} is a detector effect on {_KINDS[other][0]}, but the taggers read "
                                   f"{_KINDS[kind][0]}, which take {_listed(_KINDS[kind][1])} (or clean){hint}")
        parse_distortion(spec)  # checks the parameter
    return items


def detector_sweep(pileup: bool = True) -> list[str]:
    """The default sweep of detector effects, three severities each (``pileup=False`` skips pile-up)."""
    specs = ["smear-0.5", "smear-1", "smear-2", "deadcells-0.05", "deadcells-0.1", "deadcells-0.2",
             "threshold-1", "threshold-2", "threshold-5", "shift-1", "shift-2", "shift-3",
             "coarse-2", "coarse-3", "coarse-5"]
    return (["pileup-10", "pileup-20", "pileup-40"] if pileup else []) + specs
