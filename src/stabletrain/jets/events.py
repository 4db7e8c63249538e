"""Event-level pile-up: minimum-bias particles added to the hard event before clustering.

``stabletrain jets generate --pileup 20`` overlays, on every hard event,
Poisson(μ) minimum-bias interactions drawn from a :class:`MinBiasPool`, and
only then clusters, trims and selects the jet. Grooming therefore acts on
the pile-up, as it does in an experiment. (The ``pileup-MU`` detector
effect of :mod:`stabletrain.jets.detector` is the cheap approximation: it
adds pile-up *images* to finished jet images, after trimming, so grooming
never sees it.)

The pool
    ``pool_events`` Pythia ``SoftQCD:nonDiffractive`` events at 13 TeV,
    generated once from ``pool_seed`` and cached under
    :func:`stabletrain.cache.cache_dir` (``pileup/``), keyed by seed and
    size. Each event keeps its visible final-state particles with
    |η| < :data:`POOL_ETA_MAX`, stored as float32 (px, py, pz, E) rows with
    per-event offsets (about 100 particles and 8 MB for 5,000 events).

The draws
    Event ``e`` of a chunk with Pythia seed ``s`` takes its draws from a
    generator seeded with ``derive_seed(s, "pileup", e)`` only: the number of
    interactions n ~ Poisson(μ), n pool events uniformly with replacement,
    and for each a random azimuthal rotation and a random η reflection
    (z → −z). Both are exact symmetries of a pp collision's minimum-bias
    event, and they keep a finite pool from repeating itself exactly. The
    draws therefore do not depend on how many events the chunk has, on the
    other events, or on which worker runs it.

Example:
    >>> import numpy as np
    >>> pool = MinBiasPool(four=np.array([[1, 0, 0, 1], [0, 2, 1, 2.3]], np.float32),
    ...                    offsets=np.array([0, 1, 2]), seed=0)
    >>> overlay = EventPileup(mu=3.0).with_pool(pool)
    >>> n = [len(overlay.draw(chunk_seed=7, event=e).indices) for e in range(4)]
    >>> n == [len(overlay.draw(7, e).indices) for e in range(4)]     # a function of (seed, event) only
    True
    >>> overlay.particles(7, 0).shape[1]
    4
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..cache import cache_dir
from ..checks import StableTrainError
from ..seeding import derive_seed

__all__ = [
    "DEFAULT_POOL_EVENTS",
    "POOL_ETA_MAX",
    "PILEUP_METHOD",
    "EventPileup",
    "MinBiasPool",
    "PileupDraw",
    "build_minbias_pool",
    "minbias_pool_path",
]

#: Minimum-bias events in the default pool of event-level pile-up.
DEFAULT_POOL_EVENTS = 5000
#: Pool particles are kept within this |η| (the tracker and calorimeter acceptance that matters for jets).
POOL_ETA_MAX = 3.0
#: How the pile-up was added, as recorded in the jet file's provenance.
PILEUP_METHOD = "event-level: minimum-bias particles added to the hard event before clustering and trimming"
#: Version of the pool cache files (a change of content makes a new file name).
_POOL_VERSION = 1
#: Pool events generated per Pythia batch (bounds the memory of the awkward arrays).
_POOL_BATCH = 500

_LOADED: dict[tuple[int, int], MinBiasPool] = {}


@dataclass(frozen=True, eq=False)
class MinBiasPool:
    """Visible particles (|η| < ``eta_max``) of ``len(self)`` minimum-bias events.

    ``four`` is P×4 (px, py, pz, E) in GeV, float32; the particles of event
    ``i`` are rows ``offsets[i]:offsets[i + 1]``.

    Example:
        >>> pool = MinBiasPool(np.ones((3, 4), np.float32), np.array([0, 2, 3]), seed=1)
        >>> len(pool), pool.event(0).shape, pool.multiplicity().tolist()
        (2, (2, 4), [2, 1])
    """

    four: np.ndarray
    offsets: np.ndarray
    seed: int
    eta_max: float = POOL_ETA_MAX
    pythia_seed: int | None = None

    def __post_init__(self) -> None:
        four = np.ascontiguousarray(self.four, dtype=np.float32)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        if four.ndim != 2 or four.shape[1] != 4:
            raise StableTrainError(f"a minimum-bias pool needs P×4 four-vectors, got shape {four.shape}")
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(four) \
                or np.any(np.diff(offsets) < 0):
            raise StableTrainError("a minimum-bias pool needs at least one event and offsets 0 ≤ … ≤ P")
        object.__setattr__(self, "four", four)
        object.__setattr__(self, "offsets", offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def event(self, i: int) -> np.ndarray:
        """The K×4 (px, py, pz, E) particles of pool event ``i``."""
        return self.four[self.offsets[i]: self.offsets[i + 1]]

    def multiplicity(self) -> np.ndarray:
        """Particles per pool event."""
        return np.diff(self.offsets)

    def digest(self) -> str:
        """A short hash of the pool's content (recorded with the jets that used it)."""
        h = hashlib.sha256(self.four.tobytes())
        h.update(self.offsets.tobytes())
        return h.hexdigest()[:16]


def minbias_pool_path(n_events: int, seed: int) -> Path:
    """Where the pool of ``n_events`` events from ``seed`` is cached."""
    return cache_dir("pileup") / f"minbias-particles-v{_POOL_VERSION}-{n_events}ev-seed{seed}-eta{POOL_ETA_MAX:g}.npz"


def _pool_pythia_seed(seed: int) -> int:
    return derive_seed(seed, "minbias-pool") % 900_000_000 + 1  # Pythia accepts 1..900,000,000


def build_minbias_pool(n_events: int = DEFAULT_POOL_EVENTS, seed: int = 0, *, use_cache: bool = True,
                       progress: bool = False) -> MinBiasPool:
    """The pool of ``n_events`` minimum-bias events from ``seed``: loaded from the cache, else generated.

    One Pythia instance (``SoftQCD:nonDiffractive``, seed derived from
    ``seed``) generates the events in batches; events Pythia fails are
    skipped, so the pool holds exactly ``n_events`` good ones. About 10 s
    for 5,000 events on one core; the cache file is written atomically.
    A process keeps the pools it loaded in memory.

    Example (about 1 s):
        >>> pool = build_minbias_pool(50, seed=0)            # doctest: +SKIP
        >>> len(pool), 50 < pool.multiplicity().mean() < 200  # doctest: +SKIP
        (50, True)
    """
    if isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 1:
        raise StableTrainError(f"a minimum-bias pool needs at least one event, got {n_events!r}")
    key = (n_events, seed)
    path = minbias_pool_path(n_events, seed)
    if use_cache and key in _LOADED and path.exists():
        return _LOADED[key]
    if use_cache and path.exists():
        try:
            with np.load(path) as data:
                pool = MinBiasPool(data["four"], data["offsets"], seed=seed,
                                   pythia_seed=int(json.loads(str(data["meta"]))["pythia_seed"]))
            if len(pool) == n_events:
                _LOADED[key] = pool
                return pool
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
        path.unlink(missing_ok=True)
    pool = _generate_pool(n_events, seed, progress)
    if use_cache:
        from ..files import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        meta = {"n_events": n_events, "seed": seed, "pythia_seed": pool.pythia_seed, "eta_max": POOL_ETA_MAX,
                "columns": ["px", "py", "pz", "E"], "units": "GeV"}
        np.savez(buffer, four=pool.four, offsets=pool.offsets, meta=json.dumps(meta))
        atomic_write_bytes(path, buffer.getvalue())
        _LOADED[key] = pool
    return pool


def _generate_pool(n_events: int, seed: int, progress: bool) -> MinBiasPool:
    from .generation import Selection, _make_pythia, _visible_particles, pythia_settings, require_hep

    ak = require_hep("awkward")
    from ..progress import progress_bar

    pythia_seed = _pool_pythia_seed(seed)
    pythia = _make_pythia(pythia_settings("minbias", Selection(), seed=pythia_seed))
    blocks: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    done = 0
    with progress_bar(total=n_events, desc="minimum-bias pool", unit="event", enabled=progress) as bar:
        while done < n_events:
            run = pythia.nextBatch(min(_POOL_BATCH, n_events - done))
            particles = _visible_particles(run)[: n_events - done]
            pt = np.hypot(particles.px, particles.py)
            eta = np.arcsinh(particles.pz / np.maximum(pt, 1e-12))
            kept = particles[(abs(eta) < POOL_ETA_MAX) & (pt > 0)]
            counts.append(ak.to_numpy(ak.num(kept.px, axis=1)))
            blocks.append(np.column_stack([ak.to_numpy(ak.flatten(kept[c])) for c in ("px", "py", "pz", "E")]))
            done += len(counts[-1])
            bar.update(len(counts[-1]))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return MinBiasPool(np.concatenate(blocks).astype(np.float32), offsets, seed=seed, pythia_seed=pythia_seed)


class PileupDraw(NamedTuple):
    """The pile-up of one hard event: pool indices, azimuthal rotations (rad) and η reflections."""

    indices: np.ndarray
    rotations: np.ndarray
    reflections: np.ndarray


@dataclass(frozen=True)
class EventPileup:
    """Poisson(``mu``) minimum-bias interactions per hard event, from the pool ``(pool_events, pool_seed)``.

    The settings are plain numbers (what a chunk task carries to a worker
    process); :meth:`with_pool` attaches the pool, and a worker that gets
    the settings alone loads the pool from the cache on first use.

    Example:
        >>> EventPileup(mu=20).to_dict()["pool_events"]
        5000
        >>> EventPileup(mu=-1).validated()
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: --pileup must be a mean number of interactions μ >= 0, got -1
    """

    mu: float
    pool_events: int = DEFAULT_POOL_EVENTS
    pool_seed: int = 0
    _pool: MinBiasPool | None = field(default=None, repr=False, compare=False)

    def validated(self) -> EventPileup:
        if isinstance(self.mu, bool) or not isinstance(self.mu, (int, float)) or not math.isfinite(self.mu) \
                or self.mu < 0:
            raise StableTrainError(f"--pileup must be a mean number of interactions μ >= 0, got {self.mu!r}")
        if isinstance(self.pool_events, bool) or not isinstance(self.pool_events, int) or self.pool_events < 1:
            raise StableTrainError(f"--pileup-pool-events must be an integer >= 1, got {self.pool_events!r}")
        if isinstance(self.pool_seed, bool) or not isinstance(self.pool_seed, int) or self.pool_seed < 0:
            raise StableTrainError(f"--pileup-pool-seed must be an integer >= 0, got {self.pool_seed!r}")
        return self

    def with_pool(self, pool: MinBiasPool) -> EventPileup:
        """The same settings with ``pool`` attached (``pool_events`` and ``pool_seed`` taken from it)."""
        return EventPileup(self.mu, len(pool), pool.seed, pool)

    def pool(self) -> MinBiasPool:
        """The attached pool, else the cached pool of these settings (generated if absent)."""
        if self._pool is not None:
            return self._pool
        return build_minbias_pool(self.pool_events, self.pool_seed)

    def to_dict(self) -> dict[str, Any]:
        """What a jet file records about its pile-up (without the pool's digest, see :meth:`provenance`)."""
        return {"method": PILEUP_METHOD, "mu": float(self.mu), "pool_events": self.pool_events,
                "pool_seed": self.pool_seed, "pool_eta_max": POOL_ETA_MAX,
                "pool_process": "SoftQCD:nonDiffractive",
                "draws": "per event from derive_seed(chunk Pythia seed, 'pileup', event index): "
                         "n ~ Poisson(mu), n pool events with replacement, each rotated in phi and reflected "
                         "in eta (z -> -z) at random"}

    def provenance(self) -> dict[str, Any]:
        """:meth:`to_dict` plus the pool's Pythia seed and content digest."""
        pool = self.pool()
        return {**self.to_dict(), "pool_pythia_seed": pool.pythia_seed, "pool_digest": pool.digest(),
                "pool_mean_particles": float(pool.multiplicity().mean())}

    def draw(self, chunk_seed: int, event: int) -> PileupDraw:
        """The pile-up of event ``event`` of the chunk with Pythia seed ``chunk_seed``."""
        rng = np.random.default_rng(derive_seed(chunk_seed, "pileup", event))
        n = int(rng.poisson(self.mu)) if self.mu > 0 else 0
        size = len(self.pool())
        return PileupDraw(rng.integers(0, size, n), rng.uniform(-np.pi, np.pi, n), rng.random(n) < 0.5)

    def particles(self, chunk_seed: int, event: int) -> np.ndarray:
        """The K×4 (px, py, pz, E) float64 pile-up particles of one event (see :meth:`draw`)."""
        return self._assemble([self.draw(chunk_seed, event)])[0]

    def _assemble(self, draws: list[PileupDraw]) -> list[np.ndarray]:
        if not draws:
            return []
        pool = self.pool()
        mult = pool.multiplicity()
        indices = np.concatenate([d.indices for d in draws]).astype(np.int64)
        rotations = np.concatenate([d.rotations for d in draws])
        reflections = np.concatenate([d.reflections for d in draws])
        lengths = mult[indices]
        starts = pool.offsets[indices]
        total = int(lengths.sum())
        # row numbers of every drawn particle: start of its event + its rank within the event
        first = np.cumsum(lengths) - lengths
        rows = np.repeat(starts - first, lengths) + np.arange(total)
        four = pool.four[rows].astype(np.float64)
        angle = np.repeat(rotations, lengths)
        c, s = np.cos(angle), np.sin(angle)
        px, py = four[:, 0] * c - four[:, 1] * s, four[:, 0] * s + four[:, 1] * c
        pz = np.where(np.repeat(reflections, lengths), -four[:, 2], four[:, 2])
        out = np.column_stack([px, py, pz, four[:, 3]])
        owner = np.repeat(np.arange(len(draws)), [len(d.indices) for d in draws])
        per_event = np.bincount(owner, weights=lengths, minlength=len(draws)).astype(np.int64)
        return np.split(out, np.cumsum(per_event)[:-1])

    def add_to(self, particles: Any, chunk_seed: int) -> Any:
        """Each event of ``particles`` (awkward px, py, pz, E records) with its pile-up particles appended.

        The hard event's particles keep their positions; the pile-up
        follows them. With μ = 0 the result holds exactly the input's
        particles.
        """
        from .generation import require_hep

        ak = require_hep("awkward")
        draws = [self.draw(chunk_seed, e) for e in range(len(particles))]
        added = self._assemble(draws)
        counts = np.array([len(a) for a in added], dtype=np.int64)
        flat = np.concatenate(added) if len(added) else np.zeros((0, 4))
        pileup = ak.unflatten(ak.zip({name: flat[:, i] for i, name in enumerate(("px", "py", "pz", "E"))}), counts)
        hard = ak.zip({name: ak.values_astype(particles[name], np.float64) for name in ("px", "py", "pz", "E")})
        return ak.concatenate([hard, pileup], axis=1)
