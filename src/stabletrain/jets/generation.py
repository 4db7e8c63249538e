"""Jet-image generation with Pythia 8 and FastJet, written to HDF5.

``stabletrain jets generate --signal w --n 20000 --out jets.h5 --workers 2``
follows the jet-images benchmark of de Oliveira et al.: √s = 13 TeV, boosted
W bosons (``WeakDoubleBoson:ffbar2ZW``, W → quarks, Z → neutrinos) or top
quarks against QCD dijets (``HardQCD:all``) in a matching p̂T range, visible
final-state particles clustered with anti-kt R = 1.0, optionally trimmed
(kt subjets of R_sub = 0.2, f_cut = 5 %), the leading jet kept when its pT
is in 250–300 GeV and |η| < 2, and pictured as a 25×25 pT image (see
:mod:`stabletrain.jets.images`).

How the work is cut up, and why:

* Events are generated in **chunks** of ``chunk_events`` events. Each chunk
  has its own Pythia seed, derived from ``(seed, process, chunk index)``, so
  a chunk's jets depend on nothing else. The output is therefore the same
  for any number of workers, and a chunk is the unit of resumption.
* Pythia is **initialized once per worker process** and process, with an
  initialization seed derived from ``(seed, process)``, and kept for the
  following chunks; each chunk only reseeds its random-number generator
  (``pythia.rndm.init(chunk seed)``, under 0.1 ms against 0.3–0.4 s for an
  ``init()``). Initialization draws random numbers (the multiparton
  interactions' set-up), so the events depend on both seeds; between
  chunks Pythia keeps no state that changes events
  (``PhaseSpace:increaseMaximum`` is off), so a chunk reproduces exactly
  on a reused instance and on a fresh one (tested).
* With ``pileup`` (``--pileup MU``), Poisson(μ) minimum-bias events from a
  cached pool are added to each hard event **before** clustering and
  trimming (:mod:`stabletrain.jets.events`); the draws of event ``e`` of a
  chunk come from ``(chunk seed, e)`` alone.
* Finished chunks are written atomically to ``<out>.parts/``. A killed run
  leaves only complete chunk files there; running the same command again
  skips them. The HDF5 file is written to a temporary name and renamed
  once complete, so ``out`` is either absent or whole.
* ``shard=(i, N)`` restricts a job to the chunk indices ``≡ i (mod N)`` and
  to its share of ``n``, for batch systems: the N shard files together are
  one data set, and :func:`stabletrain.jets.data.load_jets` reads a list.

What the file holds (HDF5 datasets, one row per jet; the metadata attribute
says the same):

* ``images`` — N×H×W pT images (GeV) in the image frame: relative to the
  jet axis, and with preprocessing centred on the leading subjet, rotated
  and flipped (:mod:`stabletrain.jets.images`);
* ``constituents`` — N×M×3 (pT, η, φ) of the (trimmed) constituents,
  sorted by decreasing pT and zero-padded, in **absolute** (η, φ) of the
  event, **not** the image frame (the attributes ``frame`` and
  ``columns`` of the dataset say so); ``n_constituents`` counts them;
* ``eta_map`` — N×3 ``(η₀, a, b)``: the pixel ``[i, j]`` lies at
  η₀ + a·uᵢ + b·vⱼ (:func:`stabletrain.jets.images.cell_eta`), which
  energy smearing needs for E = pT·cosh η;
* ``jet_pt``, ``jet_eta``, ``jet_phi``, ``jet_mass``, ``tau21`` and ``label``
  (1 signal, 0 background).

With event-level pile-up, everything above includes it (the jet is
clustered and trimmed from hard plus pile-up particles); the metadata's
``pileup`` entry records μ, the pool's seed, size and digest, and the
method.

FastJet prints its banner at the first clustering of each process; with
``banner=False`` (the default when ``progress`` is off, as with
``stabletrain jets generate --quiet``) it is suppressed.

Pythia and FastJet are imported only when generation runs; install them
with ``pip install "stabletrain[hep]"``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import StableTrainError
from ..seeding import derive_seed
from .events import EventPileup, build_minbias_pool
from .images import ImageSpec, jet_image, wrap_phi

__all__ = [
    "CONSTITUENT_COLUMNS",
    "CONSTITUENTS_FRAME",
    "JETS_FORMAT",
    "PROCESSES",
    "SIGNALS",
    "GenerationConfig",
    "Selection",
    "generate_chunk",
    "generate_jets",
    "leading_jets",
    "parse_shard",
    "pythia_settings",
    "require_hep",
    "trim_jet",
]

JETS_FORMAT = "stabletrain.jets/1"
#: What the stored constituents' coordinates are (HDF5 attribute ``frame`` of ``constituents``).
CONSTITUENTS_FRAME = "absolute (eta, phi) of the event, not the image frame"
#: The columns of the constituents dataset (HDF5 attribute ``columns``).
CONSTITUENT_COLUMNS = ("pt", "eta", "phi")
#: Version of what a chunk holds; chunks of another version are not resumed (2: pixel-half flip, eta_map;
#: 3: one Pythia initialization per process, chunks reseeded with rndm.init, event-level pile-up).
_CHUNK_VERSION = 3
#: Events clustered together through FastJet's batch interface (bounds memory with pile-up).
_CLUSTER_BLOCK = 100
#: Pythia instances a process keeps for reuse (one per process type and initialization seed).
_PYTHIA_CACHE_SIZE = 3
HEP_INSTALL_HINT = 'install the physics extras with: pip install "stabletrain[hep]"'
_INVISIBLE = (12, 14, 16)

#: Process name → (description, Pythia settings beyond the common ones, whether p̂T cuts apply).
PROCESSES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "w": ("boosted W → qq' from ZW production (Z → νν)", (
        "WeakDoubleBoson:ffbar2ZW = on",
        "24:onMode = off", "24:onIfAny = 1 2 3 4 5",
        "23:onMode = off", "23:onIfAny = 12 14 16",
    ), True),
    "top": ("boosted hadronic top quarks from tt̄ (both W → qq')", (
        "Top:gg2ttbar = on", "Top:qqbar2ttbar = on",
        "24:onMode = off", "24:onIfAny = 1 2 3 4 5",
    ), True),
    "qcd": ("QCD dijets", ("HardQCD:all = on",), True),
    "minbias": ("minimum-bias pile-up (SoftQCD:nonDiffractive)", ("SoftQCD:nonDiffractive = on",), False),
}
SIGNALS = ("w", "top")
_COMMON = ("Beams:eCM = 13000.", "Print:quiet = on", "Next:numberCount = 0", "Random:setSeed = on")


def require_hep(module: str) -> Any:
    """Import a physics dependency, or fail with a one-line install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise StableTrainError(f"jets need the {module} package; {HEP_INSTALL_HINT}") from None


@dataclass(frozen=True)
class Selection:
    """Jet definition and selection.

    The pT window applies to the (trimmed, if ``trim``) leading jet. The p̂T
    range of the hard process is the window widened by ``pthat_margin`` GeV
    on each side, so both classes fill the window in the same way.
    """

    pt_min: float = 250.0
    pt_max: float = 300.0
    eta_max: float = 2.0
    radius: float = 1.0
    trim: bool = True
    subjet_radius: float = 0.2
    f_cut: float = 0.05
    pthat_margin: float = 30.0
    max_constituents: int = 128

    def validated(self) -> Selection:
        if not (math.isfinite(self.pt_min) and math.isfinite(self.pt_max)) or self.pt_min < 0 \
                or self.pt_max <= self.pt_min:
            raise StableTrainError(f"empty pT window [{self.pt_min}, {self.pt_max}] GeV: need 0 <= pt_min < pt_max")
        if not self.eta_max > 0:
            raise StableTrainError(f"eta_max must be > 0, got {self.eta_max}")
        if not (0 < self.radius <= 2.0 and 0 < self.subjet_radius < self.radius):
            raise StableTrainError(f"need 0 < subjet radius < jet radius <= 2, got {self.subjet_radius}, {self.radius}")
        if not 0 <= self.f_cut < 1:
            raise StableTrainError(f"f_cut must be in [0, 1), got {self.f_cut}")
        if self.max_constituents < 1:
            raise StableTrainError(f"max_constituents must be >= 1, got {self.max_constituents}")
        return self


def pythia_settings(process: str, selection: Selection, seed: int | None = None) -> list[str]:
    """The full list of Pythia settings for ``process`` (without the seed unless given)."""
    if process not in PROCESSES:
        raise StableTrainError(f"unknown process {process!r}; known: {', '.join(PROCESSES)}")
    _, specific, hard = PROCESSES[process]
    settings = list(_COMMON) + list(specific)
    if hard:
        settings += [f"PhaseSpace:pTHatMin = {max(selection.pt_min - selection.pthat_margin, 1.0):g}",
                     f"PhaseSpace:pTHatMax = {selection.pt_max + selection.pthat_margin:g}"]
    if seed is not None:
        settings.append(f"Random:seed = {seed}")
    return settings


def _pythia_seed(seed: int, process: str, chunk: int) -> int:
    return derive_seed(seed, "pythia", process, chunk) % 900_000_000 + 1  # Pythia accepts 1..900,000,000


def _pythia_init_seed(seed: int, process: str) -> int:
    """The seed of Pythia's initialization for ``process`` in a run with ``seed`` (shared by its chunks)."""
    return derive_seed(seed, "pythia-init", process) % 900_000_000 + 1


def _make_pythia(settings: list[str]) -> Any:
    pythia8mc = require_hep("pythia8mc")
    pythia = pythia8mc.Pythia("", False)
    for line in settings:
        if not pythia.readString(line):
            raise StableTrainError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise StableTrainError("Pythia failed to initialize; check the settings")
    return pythia


_PYTHIAS: dict[tuple[str, ...], Any] = {}


def _reusable_pythia(settings: list[str], init_seed: int) -> Any:
    """An initialized Pythia for ``settings`` and ``init_seed``, kept in this process for the next chunks."""
    key = tuple(settings) + (f"Random:seed = {init_seed}",)
    pythia = _PYTHIAS.pop(key, None)
    if pythia is None:
        pythia = _make_pythia(list(key))
    _PYTHIAS[key] = pythia  # most recently used last
    while len(_PYTHIAS) > _PYTHIA_CACHE_SIZE:
        _PYTHIAS.pop(next(iter(_PYTHIAS)))
    return pythia


def _visible_particles(run: Any) -> Any:
    """Final-state visible particles of a batch of events, as an awkward array of four-vectors."""
    ak = require_hep("awkward")
    prt = run.prt
    pid = abs(prt.id)
    keep = prt.status > 0
    for invisible in _INVISIBLE:
        keep = keep & (pid != invisible)
    p = prt.p[keep]
    return ak.zip({"px": p.px, "py": p.py, "pz": p.pz, "E": p.e})


def _eta(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.arcsinh(pz / np.maximum(np.hypot(px, py), 1e-12))


def _n_subjettiness(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, axes: np.ndarray, radius: float) -> float:
    """τ_N with the given axes (``N×2`` of η, φ): Σ pT_i min_k ΔR_ik / (Σ pT_i · R)."""
    if len(axes) == 0 or pt.sum() <= 0:
        return 0.0
    dr = np.hypot(eta[:, None] - axes[None, :, 0], wrap_phi(phi[:, None] - axes[None, :, 1]))
    return float((pt * dr.min(axis=1)).sum() / (pt.sum() * radius))


def trim_jet(four: np.ndarray, selection: Selection = Selection(),
             fastjet: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Trim a jet given by its constituents' four-vectors (``K×4`` px, py, pz, E).

    Reclusters the constituents into kt subjets of ``selection.subjet_radius``
    and keeps those with more than ``f_cut`` of the ungroomed jet's pT.
    Returns ``(kept, subjets)``: the kept constituents' rows (in their
    input order) and the kept subjets' (pT, η, φ), by decreasing pT; or
    ``None`` when no subjet survives. With ``selection.trim`` off every
    constituent is kept (the subjets are still returned).

    Example:
        >>> import numpy as np
        >>> four = np.array([[100., 0, 0, 100], [0.5, 0.5, 0, 0.71]])   # a hard core and a soft particle
        >>> kept, subjets = trim_jet(four)                               # doctest: +SKIP
        >>> kept.shape, subjets.shape                                    # doctest: +SKIP
        ((1, 4), (1, 3))
    """
    fastjet = require_hep("fastjet") if fastjet is None else fastjet
    pseudo = []
    for i, (px, py, pz, e) in enumerate(four):
        pj = fastjet.PseudoJet(float(px), float(py), float(pz), float(e))
        pj.set_user_index(i)
        pseudo.append(pj)
    jet_pt_ungroomed = float(np.hypot(four[:, 0].sum(), four[:, 1].sum()))
    sub_cs = fastjet.ClusterSequence(pseudo, fastjet.JetDefinition(fastjet.kt_algorithm, selection.subjet_radius))
    subjets = fastjet.sorted_by_pt(sub_cs.inclusive_jets())
    if selection.trim:
        subjets = [s for s in subjets if s.pt() > selection.f_cut * jet_pt_ungroomed]
        if not subjets:
            return None
        keep = np.array(sorted(c.user_index() for s in subjets for c in s.constituents()))
        four = four[keep]
    sub = np.array([[s.pt(), s.eta(), s.phi_std()] for s in subjets]) if subjets else np.zeros((0, 3))
    return four, sub


def _analyse_jet(four: np.ndarray, selection: Selection, spec: ImageSpec, preprocess: bool,
                 fastjet: Any) -> dict[str, Any] | None:
    """Trim one jet (constituent four-vectors ``K×4`` px,py,pz,E), apply the window, make its image."""
    trimmed = trim_jet(four, selection, fastjet)
    if trimmed is None:
        return None
    four, sub = trimmed
    total = four.sum(axis=0)
    jet_pt = float(np.hypot(total[0], total[1]))
    if not selection.pt_min <= jet_pt <= selection.pt_max:
        return None
    jet_eta = float(_eta(total[0:1], total[1:2], total[2:3])[0])
    if abs(jet_eta) >= selection.eta_max:
        return None
    jet_phi = float(np.arctan2(total[1], total[0]))
    mass = float(np.sqrt(max(total[3] ** 2 - total[0] ** 2 - total[1] ** 2 - total[2] ** 2, 0.0)))
    pt = np.hypot(four[:, 0], four[:, 1])
    eta = _eta(four[:, 0], four[:, 1], four[:, 2])
    phi = np.arctan2(four[:, 1], four[:, 0])
    image, eta_map = jet_image(pt, eta, phi, jet_eta, jet_phi, spec, subjets=sub, preprocess=preprocess,
                               return_eta_map=True)

    # N-subjettiness with exclusive-kt axes on the (trimmed) constituents
    kept = [fastjet.PseudoJet(float(a), float(b), float(c), float(d)) for a, b, c, d in four]
    axes_cs = fastjet.ClusterSequence(kept, fastjet.JetDefinition(fastjet.kt_algorithm, selection.radius))
    taus = []
    for n_axes in (1, 2):
        if len(kept) < n_axes:
            taus.append(0.0)
            continue
        axes = np.array([[a.eta(), a.phi_std()] for a in axes_cs.exclusive_jets(n_axes)])
        taus.append(_n_subjettiness(pt, eta, phi, axes, selection.radius))
    tau21 = taus[1] / taus[0] if taus[0] > 0 else 0.0

    order = np.argsort(-pt)[: selection.max_constituents]
    constituents = np.zeros((selection.max_constituents, 3), dtype=np.float32)
    constituents[: len(order)] = np.column_stack([pt[order], eta[order], phi[order]])
    return {"image": image.astype(np.float32), "eta_map": eta_map.astype(np.float32),
            "constituents": constituents, "n_constituents": len(pt),
            "jet_pt": jet_pt, "jet_eta": jet_eta, "jet_phi": jet_phi, "jet_mass": mass, "tau21": tau21}


_JET_FIELDS = ("jet_pt", "jet_eta", "jet_phi", "jet_mass", "tau21")


def _silence_fastjet_banner(fastjet: Any) -> bool:
    """Make FastJet's once-per-process banner print nowhere; False if these bindings do not allow it.

    The banner is printed by the C++ ``ClusterSequence::print_banner`` at the
    first clustering, to a static stream that every interface of the
    bindings (PseudoJet lists and awkward batches) shares. The SWIG layer of
    fastjet 3.5's bindings exposes ``set_fastjet_banner_stream``: a null
    stream, then one ``print_banner()`` to spend the first-time flag.
    """
    cluster_sequence = getattr(getattr(fastjet, "_swig", None), "ClusterSequence", None)
    if cluster_sequence is None or not hasattr(cluster_sequence, "set_fastjet_banner_stream"):
        return False
    try:
        cluster_sequence.set_fastjet_banner_stream(None)
        cluster_sequence.print_banner()
    except Exception:  # another binding version: fall back to redirecting the output
        return False
    return True


@contextmanager
def _c_stdout_to_devnull() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null for the block: silences what C/C++ code prints."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def leading_jets(particles: Any, selection: Selection = Selection(), *, fastjet: Any = None,
                 block: int = _CLUSTER_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    """``(event index, K×4 constituents)`` of each event's leading anti-kt jet with pT ≥ ``selection.pt_min``.

    ``particles`` is an awkward array of events of (px, py, pz, E) records;
    events are clustered ``block`` at a time through FastJet's batch
    interface, so memory stays bounded with thousands of pile-up particles
    per event. Events without such a jet are skipped. The constituents are
    the ungroomed jet's, in the order of the event's particles.

    Example:
        >>> for event, four in leading_jets(particles):           # doctest: +SKIP
        ...     print(event, np.hypot(*four[:, :2].sum(0)))
    """
    fastjet = require_hep("fastjet") if fastjet is None else fastjet
    ak = require_hep("awkward")
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, selection.radius)
    for first in range(0, len(particles), block):
        part = particles[first: first + block]
        cs = fastjet.ClusterSequence(part, definition)
        jets = cs.inclusive_jets(min_pt=selection.pt_min)
        members = cs.constituent_index(min_pt=selection.pt_min)
        jet_pt = np.hypot(jets.px, jets.py)
        lead = ak.argmax(jet_pt, axis=1, keepdims=True)
        lead_members = ak.firsts(members[lead])
        candidates = np.flatnonzero(ak.to_numpy(ak.fill_none(ak.num(jets, axis=1) > 0, False)))
        for event in candidates:
            index = ak.to_numpy(lead_members[event])
            p = part[event]
            yield first + int(event), np.column_stack([ak.to_numpy(p.px)[index], ak.to_numpy(p.py)[index],
                                                       ak.to_numpy(p.pz)[index], ak.to_numpy(p.E)[index]])


def generate_chunk(process: str, n_events: int, seed: int, selection: Selection = Selection(),
                   spec: ImageSpec = ImageSpec(), preprocess: bool = True, *,
                   banner: bool = True, init_seed: int | None = None,
                   pileup: EventPileup | None = None) -> dict[str, np.ndarray]:
    """Generate ``n_events`` events of ``process`` with Pythia seed ``seed``; return the selected jets.

    Pythia is initialized with ``init_seed`` (default: ``seed``) and kept in
    this process for later chunks with the same settings and
    ``init_seed``; the chunk's events come from reseeding it with ``seed``.
    With ``pileup``, each event gets its Poisson(μ) minimum-bias particles
    (drawn from ``(seed, event index)``) before clustering and trimming.

    Returns arrays ``images`` (K×H×W, GeV), ``eta_map`` (K×3, the η of the
    pixels: :func:`stabletrain.jets.images.cell_eta`), ``constituents``
    (K×M×3: pT, η, φ in absolute event coordinates, not the image frame,
    padded with zeros), ``n_constituents``, ``jet_pt``, ``jet_eta``,
    ``jet_phi``, ``jet_mass``, ``tau21``, and the scalar ``events`` (how many
    events Pythia produced; failed events are skipped). ``banner=False``
    keeps FastJet's banner off stdout.

    Example (about 1 s):
        >>> out = generate_chunk("w", 100, seed=5, banner=False)               # doctest: +SKIP
        >>> out["images"].shape[1:], int(out["events"])                        # doctest: +SKIP
        ((25, 25), 100)
    """
    fastjet = require_hep("fastjet")
    quiet = nullcontext()
    if not banner and not _silence_fastjet_banner(fastjet):
        quiet = _c_stdout_to_devnull()  # the banner comes with the first clustering in this process
    pythia = _reusable_pythia(pythia_settings(process, selection), seed if init_seed is None else init_seed)
    pythia.rndm.init(seed)
    run = pythia.nextBatch(n_events)
    particles = _visible_particles(run)
    if pileup is not None:
        pileup = pileup.with_pool(pileup.pool())
        particles = pileup.add_to(particles, seed)
    rows: list[dict[str, Any]] = []
    with quiet:
        for _event, four in leading_jets(particles, selection, fastjet=fastjet):
            row = _analyse_jet(four, selection, spec, preprocess, fastjet)
            if row is not None:
                rows.append(row)
    out: dict[str, np.ndarray] = {
        "images": np.stack([r["image"] for r in rows]) if rows else np.zeros((0, spec.pixels, spec.pixels), np.float32),
        "eta_map": np.stack([r["eta_map"] for r in rows]) if rows else np.zeros((0, 3), np.float32),
        "constituents": np.stack([r["constituents"] for r in rows]) if rows else
        np.zeros((0, selection.max_constituents, 3), np.float32),
        "n_constituents": np.array([r["n_constituents"] for r in rows], dtype=np.int32),
        "events": np.array(len(run), dtype=np.int64),
    }
    for name in _JET_FIELDS:
        out[name] = np.array([r[name] for r in rows], dtype=np.float32)
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """``'i/N'`` → ``(i, N)`` with ``0 <= i < N``; ``None`` → ``(0, 1)``."""
    if text is None or text == "":
        return 0, 1
    try:
        index, total = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise StableTrainError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise StableTrainError(f"--shard {text}: need 0 <= i < N")
    return index, total


@dataclass
class GenerationConfig:
    """Everything that defines a generated jet file (stored in its metadata)."""

    signal: str = "w"
    background: str = "qcd"
    n: int = 20000
    seed: int = 0
    chunk_events: int = 400
    preprocess: bool = True
    shard: tuple[int, int] = (0, 1)
    selection: Selection = field(default_factory=Selection)
    spec: ImageSpec = field(default_factory=ImageSpec)
    #: Event-level pile-up (added before clustering and trimming), or ``None`` for none.
    pileup: EventPileup | None = None

    def validated(self) -> GenerationConfig:
        if self.signal not in SIGNALS:
            raise StableTrainError(f"unknown signal process {self.signal!r}; known: {', '.join(SIGNALS)}")
        if self.background not in PROCESSES or self.background in ("minbias",) or self.background in SIGNALS:
            raise StableTrainError(f"unknown background process {self.background!r}; use qcd")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise StableTrainError(f"--n must be an integer >= 2 (jets in total, half signal), got {self.n!r}")
        if self.chunk_events < 1:
            raise StableTrainError(f"chunk_events must be >= 1, got {self.chunk_events}")
        parse_shard(f"{self.shard[0]}/{self.shard[1]}")
        self.selection.validated()
        if self.pileup is not None:
            if not isinstance(self.pileup, EventPileup):
                raise StableTrainError(f"pileup must be an EventPileup or None, got {self.pileup!r}")
            self.pileup.validated()
        if self.spec.pixels < 2 or not self.spec.half_width > 0:
            raise StableTrainError(f"bad image frame {self.spec}")
        return self

    def targets(self) -> dict[str, int]:
        """Jets per class for this shard: half signal (rounded up), half background."""
        index, total = self.shard
        share = self.n // total + (1 if index < self.n % total else 0)
        if share < 2:
            raise StableTrainError(f"--n {self.n} split over {total} shards leaves {share} jets for shard {index}")
        return {self.signal: (share + 1) // 2, self.background: share // 2}

    def fingerprint(self) -> dict[str, Any]:
        """What the chunk files depend on; a resumed run must match it exactly."""
        return {"format": JETS_FORMAT, "chunk_version": _CHUNK_VERSION, "seed": self.seed,
                "chunk_events": self.chunk_events,
                "preprocess": self.preprocess, "selection": asdict(self.selection), "spec": self.spec.to_dict(),
                "shard_total": self.shard[1], "shard_index": self.shard[0],
                "pileup": None if self.pileup is None else self.pileup.to_dict()}


_ChunkTask = tuple[str, int, int, Selection, ImageSpec, bool, bool, int, "EventPileup | None"]


def _chunk_worker(args: _ChunkTask) -> dict[str, np.ndarray]:
    process, n_events, seed, selection, spec, preprocess, banner, init_seed, pileup = args
    return generate_chunk(process, n_events, seed, selection, spec, preprocess, banner=banner, init_seed=init_seed,
                          pileup=pileup)


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _load_chunk(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception:  # a damaged part is regenerated, never trusted
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("stabletrain", "pythia8mc", "fastjet", "numpy", "h5py", "awkward"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def generate_jets(config: GenerationConfig, out: str | Path, *, workers: int = 1, progress: bool = True,
                  keep_parts: bool = False, log: Callable[[str], None] | None = None,
                  banner: bool | None = None) -> dict[str, Any]:
    """Generate a balanced signal/background jet file; resumable and atomic. Returns a summary.

    ``banner`` lets FastJet print its banner (once per worker process); by
    default it does only when ``progress`` is on, so a quiet run prints
    nothing but what the caller prints.

    Example (about 10 s on one core):
        >>> from stabletrain.jets.generation import GenerationConfig, generate_jets
        >>> summary = generate_jets(GenerationConfig(n=40, chunk_events=200), "runs/doctest-jets.h5",
        ...                         progress=False)   # doctest: +SKIP
    """
    config.validated()
    h5py = require_hep("h5py")
    require_hep("pythia8mc")
    require_hep("fastjet")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StableTrainError(f"--workers must be an integer >= 1, got {workers!r}")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise StableTrainError(f"output path {out} is a folder; give a file name such as jets.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(exist_ok=True)
    manifest = parts / "manifest.json"
    fingerprint = config.fingerprint()
    if manifest.exists():
        try:
            stored = json.loads(manifest.read_text())
        except (OSError, ValueError):
            stored = None
        if stored != fingerprint:
            raise StableTrainError(f"{parts} holds chunks of a different generation (other seed or settings); "
                                   f"remove it or use another --out")
    else:
        tmp = manifest.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        os.replace(tmp, manifest)
    emit = log if log is not None else (lambda line: None)
    show_banner = progress if banner is None else bool(banner)
    pileup, local_pileup = config.pileup, None
    if pileup is not None:  # built (or loaded) once here; worker processes read it from the cache
        pool = build_minbias_pool(pileup.pool_events, pileup.pool_seed, progress=progress)
        local_pileup = pileup.with_pool(pool)

    targets = config.targets()
    shard_index, shard_total = config.shard
    seeds: dict[tuple[str, int], int] = {}

    def chunk_index(k: int) -> int:  # the k-th chunk of this shard in the global chunk stream
        return shard_index + k * shard_total

    def chunk_path(process: str, k: int) -> Path:
        return parts / f"{process}-{chunk_index(k):06d}.npz"

    results: dict[str, dict[int, dict[str, np.ndarray]]] = {p: {} for p in targets}
    for process in targets:
        k = 0
        while chunk_path(process, k).exists():
            chunk = _load_chunk(chunk_path(process, k))
            if chunk is None:
                chunk_path(process, k).unlink()
                break
            results[process][k] = chunk
            k += 1

    def prefix_jets(process: str) -> int:
        total, k = 0, 0
        while k in results[process] and total < targets[process]:
            total += len(results[process][k]["jet_pt"])
            k += 1
        return total

    def done(process: str) -> bool:
        return prefix_jets(process) >= targets[process]

    resumed = sum(len(r) for r in results.values())
    if resumed:
        emit(f"resuming: {resumed} finished chunk(s) found in {parts}")
    from ..progress import progress_bar

    bar = progress_bar(total=sum(targets.values()), desc="jets", unit="jet", enabled=progress)
    bar.update(sum(min(prefix_jets(p), targets[p]) for p in targets))
    started = time.perf_counter()
    new_events = 0
    new_selected = 0
    next_k = {p: (max(results[p]) + 1 if results[p] else 0) for p in targets}
    in_flight: dict[Future, tuple[str, int]] = {}

    def task(process: str, k: int, local: bool) -> _ChunkTask:
        seed = _pythia_seed(config.seed, process, chunk_index(k))
        seeds[(process, k)] = seed
        chunk_pileup = None if pileup is None else (local_pileup if local else pileup)
        return (process, config.chunk_events, seed, config.selection, config.spec, config.preprocess, show_banner,
                _pythia_init_seed(config.seed, process), chunk_pileup)

    def wanted(process: str) -> bool:
        """Whether another chunk of ``process`` is worth starting now."""
        if done(process):
            return False
        have = sum(len(c["jet_pt"]) for c in results[process].values())
        events = sum(int(c["events"]) for c in results[process].values())
        rate = have / events if events and have else 0.1  # conservative guess until measured
        flying = sum(1 for p, _ in in_flight.values() if p == process)
        expected = have + flying * rate * config.chunk_events
        return expected < targets[process] * 1.02 or flying == 0

    def record(process: str, k: int, chunk: dict[str, np.ndarray]) -> None:
        nonlocal new_events, new_selected
        before = min(prefix_jets(process), targets[process])
        _save_chunk(chunk_path(process, k), chunk)
        results[process][k] = chunk
        new_events += int(chunk["events"])
        new_selected += len(chunk["jet_pt"])
        bar.update(min(prefix_jets(process), targets[process]) - before)
        seconds = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(events_per_s=f"{new_events / seconds:.0f}",
                        pass_fraction=f"{new_selected / max(new_events, 1):.2f}")

    try:
        if workers == 1:
            while not all(done(p) for p in targets):
                process = min((p for p in targets if not done(p)), key=lambda p: prefix_jets(p) / targets[p])
                k = next_k[process]
                next_k[process] += 1
                record(process, k, _chunk_worker(task(process, k, local=True)))
        else:
            import multiprocessing

            with ProcessPoolExecutor(max_workers=workers,
                                     mp_context=multiprocessing.get_context("spawn")) as executor:
                while not all(done(p) for p in targets) or in_flight:
                    while len(in_flight) < workers:
                        choices = [p for p in targets if wanted(p)]
                        if not choices:
                            break
                        process = min(choices, key=lambda p: (sum(1 for q, _ in in_flight.values() if q == p),
                                                              prefix_jets(p) / targets[p]))
                        k = next_k[process]
                        next_k[process] += 1
                        in_flight[executor.submit(_chunk_worker, task(process, k, local=False))] = (process, k)
                    if not in_flight:
                        break
                    finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for future in finished:
                        process, k = in_flight.pop(future)
                        record(process, k, future.result())
    finally:
        bar.close()

    seconds = time.perf_counter() - started
    summary = _write_file(config, out, results, targets, h5py)
    summary.update({"seconds": seconds, "new_events": new_events, "new_selected": new_selected,
                    "events_per_second": new_events / seconds if seconds > 0 else 0.0,
                    "jets_per_second": new_selected / seconds if seconds > 0 else 0.0, "workers": workers,
                    "resumed_chunks": resumed})
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return summary


def _write_file(config: GenerationConfig, out: Path, results: dict[str, dict[int, dict[str, np.ndarray]]],
                targets: dict[str, int], h5py: Any) -> dict[str, Any]:
    """Concatenate each class's chunk prefix, truncate to its target and write the HDF5 file atomically."""
    arrays: dict[str, list[np.ndarray]] = {}
    chunks_used: dict[str, list[int]] = {}
    events_used: dict[str, int] = {}
    selected_used: dict[str, int] = {}
    label_parts = []
    for label, process in ((1, config.signal), (0, config.background)):
        need, k, taken = targets[process], 0, 0
        chunks_used[process], events_used[process], selected_used[process] = [], 0, 0
        while taken < need:
            chunk = results[process][k]
            keep = min(need - taken, len(chunk["jet_pt"]))
            for name, value in chunk.items():
                if name != "events":
                    arrays.setdefault(name, []).append(value[:keep])
            chunks_used[process].append(config.shard[0] + k * config.shard[1])
            events_used[process] += int(chunk["events"])
            selected_used[process] += len(chunk["jet_pt"])
            taken += keep
            k += 1
        label_parts.append(np.full(need, label, dtype=np.int8))
    data = {name: np.concatenate(parts_) for name, parts_ in arrays.items()}
    data["label"] = np.concatenate(label_parts)
    meta = {
        "format": JETS_FORMAT,
        "signal": config.signal,
        "background": config.background,
        "classes": [config.background, config.signal],
        "n_per_class": {config.signal: targets[config.signal], config.background: targets[config.background]},
        "seed": config.seed,
        "shard": list(config.shard),
        "chunk_events": config.chunk_events,
        "chunks": chunks_used,
        "events": events_used,
        "pass_fraction": {p: selected_used[p] / max(events_used[p], 1) for p in events_used},
        "selection": asdict(config.selection),
        "image": config.spec.to_dict(),
        "preprocess": config.preprocess,
        "flip": "phi -> -phi when the pixel columns strictly left of the centre column carry more pT than those "
                "strictly right of it (the two halves for an even width)",
        "pixel_units": "GeV (summed constituent pT)",
        "constituents": {"frame": CONSTITUENTS_FRAME, "columns": list(CONSTITUENT_COLUMNS),
                         "units": "pt in GeV, eta, phi in rad in [-pi, pi]",
                         "order": "decreasing pt; rows beyond n_constituents are zero",
                         "which": "the trimmed jet's constituents" if config.selection.trim else
                                  "the jet's constituents"},
        "eta_map": "(eta0, a, b) per jet: pixel [i, j] is at eta0 + a*u_i + b*v_j, u and v the pixel-centre "
                   "coordinates of the image frame (stabletrain.jets.images.cell_eta)",
        "pythia_settings": {p: pythia_settings(p, config.selection) for p in targets},
        "pythia_seeds": {p: [_pythia_seed(config.seed, p, c) for c in chunks_used[p]] for p in targets},
        "pythia_init_seeds": {p: _pythia_init_seed(config.seed, p) for p in targets},
        "pythia_seeding": "Pythia initialized once per process with pythia_init_seeds[process], each chunk "
                          "reseeded with its pythia_seeds entry (Rndm::init)",
        "pileup": None if config.pileup is None else config.pileup.provenance(),
        "versions": _versions(),
    }
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w", track_order=True) as handle:
        for name, value in data.items():
            chunks = (min(len(value), 256),) + value.shape[1:] if len(value) else None
            dataset = handle.create_dataset(name, data=value, compression="gzip", compression_opts=4, shuffle=True,
                                            chunks=chunks)
            if name == "constituents":
                dataset.attrs["frame"] = CONSTITUENTS_FRAME
                dataset.attrs["columns"] = list(CONSTITUENT_COLUMNS)
                dataset.attrs["units"] = meta["constituents"]["units"]
        handle.attrs["format"] = JETS_FORMAT
        handle.attrs["metadata"] = json.dumps(meta, sort_keys=True)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    return {"out": str(out), "n": len(data["label"]), "pass_fraction": meta["pass_fraction"],
            "events": events_used, "metadata_digest": digest}
