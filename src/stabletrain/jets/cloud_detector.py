"""Detector and pile-up effects on particle clouds: the physical analogues of the image effects of :mod:`.detector`.

They are distortions (``parse_distortion('cloud_smear-1')``) of the
``B×1×M×4`` cloud batches of :mod:`stabletrain.jets.clouds`, registered on
import, and ``stabletrain jets evaluate`` sweeps them for cloud taggers
(pfn, efn, particlenet) as it sweeps :mod:`.detector`'s effects for image
taggers. Each parameter means what it means for the image effect of the
same name:

=====================  ============================================================  ==================
spec                   effect on the particles                                       image analogue
=====================  ============================================================  ==================
``cloud_smear-A``      each particle's energy E = pT·cosh η drawn from the            ``smear-A``
                       calorimeter resolution σ/E = A/√E ⊕ c of ``smear-A`` (the
                       same :class:`~.detector.Smear` model: gamma, mean E); pT
                       follows as E′ / cosh η
``cloud_threshold-T``  particles below T GeV of pT removed                            ``threshold-T``
``cloud_deadcells-F``  particles in dead cells removed: the image grid                ``deadcells-F``
                       (:class:`~.images.ImageSpec`) laid around the jet axis,
                       round(F·H·W) cells dead per jet
``cloud_pileup-MU``    MU interactions' soft particles injected                       ``pileup-MU``
                       (:class:`~.cloud_perturbations.SoftInjection` at σ = MU:
                       10·MU particles, 4.2·MU GeV, in the R = 1 cone)
``cloud_shift-K``      the jet axis mis-centred by K cells of the image grid          ``shift-K``
                       (K·0.1 rad) in +η, −η, +φ or −φ (at random); particles
                       leaving the cloud frame are removed
=====================  ============================================================  ==================

Why these are the analogues, and where they differ:

* Smearing needs each particle's absolute η (E = pT·cosh η), and a cloud
  holds Δη to the jet axis. The jet axis η is given as for images, with
  :func:`stabletrain.jets.detector.jet_eta` (N values, the axes'
  pseudorapidities: :attr:`stabletrain.jets.clouds.JetClouds.jet_eta`);
  ``stabletrain jets evaluate`` gives it. Without it ``cloud_smear-A``
  warns and takes the jet axis at η = 0. Each particle is smeared on its
  own, where the image smears the cell (the sum of the particles in it):
  a calorimeter cell holds one energy, a particle-flow candidate its own.
* Dead cells: the image effect kills cells of the image frame, which for
  preprocessed files is centred on the leading subjet and rotated; that
  transform is not stored, so the cloud effect lays the same grid around
  the jet axis without rotation (the image frame of files generated with
  ``--no-preprocess``). With the random streams of the same name (see
  :func:`effect_stream`), jet ``i`` loses the cells of the same indices as
  its image under ``deadcells-F``: for files without preprocessing these
  are the same (η, φ) cells. Particles outside the grid are kept (the
  image drops them anyway).
* Pile-up: the image effect adds Poisson(MU) minimum-bias images from a
  Pythia pool; the cloud effect injects MU interactions' worth of soft
  particles with the measured per-interaction multiplicity and pT
  (:mod:`.cloud_perturbations`), uniform in the jet's cone. The cloud is
  padded with free slots for them, which no tagger sees (every model
  ignores padded slots).
* Shift: the same directions as the image's ``shift-K`` for the same
  stream (down the rows is +Δη, along the columns +Δφ); K need not be whole.

Randomness is per jet: with a :class:`~stabletrain.seeding.ExampleRNG`
(what :func:`stabletrain.evaluation.distort_examples` passes) jet ``i``
draws from its own stream only, so its distorted copy does not depend on the
batch size or on the other jets of its batch.

Example:
    >>> import torch
    >>> from stabletrain.distortions import parse_distortion
    >>> x = torch.zeros(1, 1, 3, 4); x[0, 0, :2] = torch.tensor([[1.0, 0.5, 0.5, 0.1], [1.0, 0.52, 0.5, 0.0005]])
    >>> y = parse_distortion("cloud_threshold-1")(x)
    >>> y[0, 0, :, 0].tolist()   # the 0.5 GeV particle is below 1 GeV
    [1.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import StableTrainError
from ..distortions import Distortion, parse_distortions, register_distortion
from .cloud_perturbations import SoftInjection
from .clouds import CLOUD_HALF_WIDTH, check_clouds, pad_clouds
from .data import PIXEL_UNIT_GEV
from .detector import CLOUD_DETECTOR_FAMILIES, Smear, _seed_from, current_jet_eta
from .images import ImageSpec

__all__ = [
    "CloudDeadCells",
    "CloudDetectorEffect",
    "CloudPileup",
    "CloudShift",
    "CloudSmear",
    "CloudThreshold",
    "cloud_detector_sweep",
    "cloud_mass",
    "cloud_mass_window_scores",
    "effect_stream",
    "evaluate_cloud_taggers",
]

_MASK, _ETA, _PHI, _PT = range(4)


def _streams(generator: Any, rows: int, what: str) -> list[torch.Generator] | None:
    """The per-example generators of an :class:`~stabletrain.seeding.ExampleRNG` (checked), or None."""
    streams = getattr(generator, "generators", None)
    if streams is not None and len(streams) != rows:
        raise StableTrainError(f"{what} got {len(streams)} random streams for {rows} jets")
    return streams


class CloudDetectorEffect(Distortion):
    """Base of the detector effects on clouds: checks the ``B×1×M×4`` batch, returns a clean cloud.

    Subclasses implement :meth:`apply_rows` on a ``B×M×4`` copy; the result
    has padded slots exactly zero and a mask of exactly 0 or 1.
    :attr:`image_family` names the image effect it is the analogue of.
    """

    input_kind = "cloud"
    image_family = ""

    @property
    def image_spec(self) -> str:
        """The spec of the image analogue with the same parameter (e.g. ``'deadcells-0.1'``)."""
        return f"{self.image_family}-{self.param:g}"

    def __call__(self, x: torch.Tensor, generator: Any = None) -> torch.Tensor:
        rows = check_clouds(x)[:, 0].clone()
        out = self.apply_rows(rows, generator)
        keep = (out[..., _MASK] > 0.5).to(out.dtype)
        out = out * keep.unsqueeze(-1)
        out[..., _MASK] = keep
        return out.unsqueeze(1)

    def apply(self, x: torch.Tensor, generator: Any) -> torch.Tensor:
        return self(x, generator)

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define apply_rows")


def _axis_eta(rows: torch.Tensor) -> torch.Tensor:
    """The jet axis η of each row (B, float64) from :func:`~.detector.jet_eta`; 0 with a warning without it."""
    current = current_jet_eta()
    if current is None:
        warnings.warn("cloud_smear-A was given no jet η (see stabletrain.jets.detector.jet_eta): taking the jet "
                      "axis at η = 0, so E = pT·cosh Δη, which misstates the resolution of forward jets",
                      stacklevel=5)
        return torch.zeros(len(rows), dtype=torch.float64)
    eta_map, _spec = current
    if len(eta_map) != len(rows):
        raise StableTrainError(f"cloud_smear-A has jet η for {len(eta_map)} jets but the batch holds {len(rows)}")
    if bool((eta_map[:, 1:] != 0).any()):
        raise StableTrainError("cloud_smear-A takes each jet's axis η (N values, JetClouds.jet_eta), not the "
                               "η maps of jet images")
    return eta_map[:, 0]


class CloudSmear(CloudDetectorEffect):
    """Each particle's energy E = pT·cosh η smeared with the calorimeter of ``smear-A`` (σ/E = A/√E ⊕ 5 %).

    η is the jet axis η (from :func:`~.detector.jet_eta`) plus the
    particle's Δη. The energy is drawn by :meth:`.detector.Smear.draw`
    (gamma, mean E, std σ(E)·E); the pT becomes E′ / cosh η, clipped at
    1 TeV (the top of the cloud box).
    """

    family = "cloud_smear"
    image_family = "smear"

    def __init__(self, param: float) -> None:
        self.calorimeter = Smear(param)  # checks A >= 0
        super().__init__(param)

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        real = rows[..., _MASK] > 0.5
        eta = _axis_eta(rows).to(rows.device)[:, None] + (rows[..., _ETA].double() - 0.5) * 2.0 * CLOUD_HALF_WIDTH
        cosh = torch.cosh(eta)
        energy = rows[..., _PT].double() * PIXEL_UNIT_GEV * cosh
        occupied = real & (energy > 0)
        out = energy.clone()
        streams = _streams(generator, len(rows), "cloud_smear-A")
        if streams is None:
            out[occupied] = self.calorimeter.draw(energy[occupied], generator)
        else:
            for i, stream in enumerate(streams):  # row i draws from stream i only
                out[i][occupied[i]] = self.calorimeter.draw(energy[i][occupied[i]], stream)
        rows[..., _PT] = (out / cosh / PIXEL_UNIT_GEV).clamp(0.0, 1.0).to(rows.dtype)
        return rows


class CloudThreshold(CloudDetectorEffect):
    """Particles below T GeV of pT removed (noise suppression)."""

    family = "cloud_threshold"
    image_family = "threshold"

    def __init__(self, param: float) -> None:
        if not param >= 0:
            raise StableTrainError(f"cloud_threshold-T needs T >= 0 GeV, got {param}")
        super().__init__(param)

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        below = rows[..., _PT] * PIXEL_UNIT_GEV < self.param
        rows[..., _MASK] = torch.where(below, torch.zeros_like(rows[..., _MASK]), rows[..., _MASK])
        return rows


def _grid_spec() -> ImageSpec:
    """The image frame in force (from :func:`~.detector.jet_eta`), else the default frame."""
    current = current_jet_eta()
    return current[1] if current is not None else ImageSpec()


class CloudDeadCells(CloudDetectorEffect):
    """A fraction F of the cells of the image grid around the jet axis dead: the particles in them removed.

    Exactly round(F·H·W) cells per jet, drawn as :class:`~.detector.DeadCells`
    draws them (with an :class:`~stabletrain.seeding.ExampleRNG`, jet
    ``i``'s cells from its stream alone, as the image effect's per-image
    draws), so the same stream kills the same cell indices in a jet's
    image and in its cloud. Row ``i`` of the grid is Δη, column ``j`` Δφ,
    binned as :func:`~.images.pixelize` bins; particles outside the grid
    are kept.
    """

    family = "cloud_deadcells"
    image_family = "deadcells"

    def __init__(self, param: float) -> None:
        if not 0 <= param <= 1:
            raise StableTrainError(f"cloud_deadcells-F needs a fraction F in [0, 1], got {param}")
        super().__init__(param)

    def dead_cells(self, jets: int, cells: int, generator: Any) -> torch.Tensor:
        """``jets×cells`` booleans: which cells of each jet's grid are dead."""
        dead = round(self.param * cells)
        mask = torch.zeros(jets, cells, dtype=torch.bool)
        if dead == 0:
            return mask
        streams = _streams(generator, jets, "cloud_deadcells-F")
        if streams is None:
            order = torch.rand((jets, cells), generator=generator).argsort(dim=1)[:, :dead]
        else:
            order = torch.cat([torch.rand((1, cells), generator=g).argsort(dim=1)[:, :dead] for g in streams]) \
                if streams else torch.zeros(0, dead, dtype=torch.long)
        mask.scatter_(1, order, True)
        return mask

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        spec = _grid_spec()
        h = w = spec.pixels
        dead = self.dead_cells(len(rows), h * w, generator).to(rows.device)
        if not bool(dead.any()):
            return rows
        deta = (rows[..., _ETA].double() - 0.5) * 2.0 * CLOUD_HALF_WIDTH
        dphi = (rows[..., _PHI].double() - 0.5) * 2.0 * CLOUD_HALF_WIDTH
        inside = (deta.abs() <= spec.half_width) & (dphi.abs() <= spec.half_width)
        # np.histogram2d's bins: [lo, hi) each, the last one closed
        i = ((deta + spec.half_width) / spec.pixel_size).floor().long().clamp(0, h - 1)
        j = ((dphi + spec.half_width) / spec.pixel_size).floor().long().clamp(0, w - 1)
        killed = inside & dead.gather(1, i * w + j)
        rows[..., _MASK] = torch.where(killed, torch.zeros_like(rows[..., _MASK]), rows[..., _MASK])
        return rows


class CloudPileup(CloudDetectorEffect):
    """MU interactions' soft particles injected into each jet's cone (:class:`~.cloud_perturbations.SoftInjection`).

    The batch gets as many extra (free) slots as particles are injected, so
    every jet receives all of them: the output has ``M + round(10·MU)``
    slots.
    """

    family = "cloud_pileup"
    image_family = "pileup"

    def __init__(self, param: float) -> None:
        if not (param >= 0 and math.isfinite(param)):
            raise StableTrainError(f"cloud_pileup-MU needs a mean number of interactions MU >= 0, got {param}")
        self.injection = SoftInjection(float(param))
        super().__init__(param)

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        extra = self.injection.count
        if extra == 0:
            return rows
        padded = pad_clouds(rows.unsqueeze(1), rows.shape[1] + extra)[:, 0].clone()
        return self.injection.apply(padded, generator)


class CloudShift(CloudDetectorEffect):
    """The jet axis mis-centred by K cells of the image grid (K·0.1 rad) in +η, −η, +φ or −φ, at random per jet.

    The direction is drawn as :class:`~.detector.Shift` draws it for one
    image (``randint(0, 4)``: 0 = +Δη, 1 = −Δη, 2 = +Δφ, 3 = −Δφ, the image's
    down, up, right, left). Particles moved out of the ±2 cloud frame are
    removed, as the image loses what leaves its frame.
    """

    family = "cloud_shift"
    image_family = "shift"

    def __init__(self, param: float) -> None:
        if not (param >= 0 and math.isfinite(param)):
            raise StableTrainError(f"cloud_shift-K needs a shift of K >= 0 cells, got {param}")
        super().__init__(param)

    def apply_rows(self, rows: torch.Tensor, generator: Any) -> torch.Tensor:
        if self.param == 0:
            return rows
        streams = _streams(generator, len(rows), "cloud_shift-K")
        if streams is None:
            directions = torch.randint(0, 4, (len(rows),), generator=generator)
        else:
            directions = torch.tensor([int(torch.randint(0, 4, (1,), generator=g)) for g in streams],
                                      dtype=torch.long)
        step = float(self.param) * _grid_spec().pixel_size / (2.0 * CLOUD_HALF_WIDTH)  # in frame units
        directions = directions.to(rows.device)
        sign = torch.where(directions % 2 == 0, 1.0, -1.0).to(rows.dtype)[:, None]
        for column, moved in ((_ETA, directions < 2), (_PHI, directions >= 2)):
            shifted = rows[..., column] + sign * step
            rows[..., column] = torch.where(moved[:, None], shifted, rows[..., column])
        outside = (rows[..., _ETA] < 0) | (rows[..., _ETA] > 1) | (rows[..., _PHI] < 0) | (rows[..., _PHI] > 1)
        rows[..., _MASK] = torch.where(outside, torch.zeros_like(rows[..., _MASK]), rows[..., _MASK])
        return rows.clamp_(0.0, 1.0)


_EFFECTS = (CloudPileup, CloudSmear, CloudDeadCells, CloudThreshold, CloudShift)
for _cls in _EFFECTS:
    register_distortion(_cls.family, _cls)
assert tuple(c.family for c in _EFFECTS) == CLOUD_DETECTOR_FAMILIES


def cloud_detector_sweep(pileup: bool = True) -> list[str]:
    """The default sweep on clouds: the image sweep's effects that have a cloud analogue, same severities.

    Example:
        >>> cloud_detector_sweep(pileup=False)[:3]
        ['cloud_smear-0.5', 'cloud_smear-1', 'cloud_smear-2']
    """
    from .detector import detector_sweep

    return [f"cloud_{spec}" for spec in detector_sweep(pileup) if f"cloud_{spec.partition('-')[0]}"
            in CLOUD_DETECTOR_FAMILIES]


def effect_stream(distortion: Distortion) -> str:
    """The name of the random streams a detector effect draws from: the image analogue's spec for cloud effects.

    A cloud effect and its image analogue with the same parameter draw from
    the same per-jet streams, so ``cloud_deadcells-F`` and ``deadcells-F``
    kill the same cells of jet ``i`` and ``cloud_shift-K`` and ``shift-K``
    move it the same way.

    Example:
        >>> from stabletrain.distortions import parse_distortion
        >>> effect_stream(parse_distortion("cloud_deadcells-0.1")), effect_stream(parse_distortion("shift-2"))
        ('deadcells-0.1', 'shift-2')
    """
    return distortion.image_spec if isinstance(distortion, CloudDetectorEffect) else distortion.spec


def cloud_mass(x: torch.Tensor) -> np.ndarray:
    """The invariant mass (GeV) of each cloud, its particles massless: the jet mass from the constituents.

    Relative coordinates suffice: a shift in η is a boost along the beam
    and one in φ a rotation about it, neither of which changes the mass.

    Example:
        >>> x = torch.zeros(1, 1, 2, 4)
        >>> x[0, 0] = torch.tensor([[1.0, 0.5, 0.5, 0.1], [1.0, 0.5, 0.5 + 0.2 / 4, 0.1]])   # Δφ = 0.2 apart
        >>> round(float(cloud_mass(x)[0]), 2)   # √(2 pT₁ pT₂ (cosh Δη − cos Δφ)) = 200 · sin(0.1)
        19.97
    """
    rows = check_clouds(x)[:, 0].double()
    keep = (rows[..., _MASK] > 0.5).double()
    pt = rows[..., _PT] * PIXEL_UNIT_GEV * keep
    eta = (rows[..., _ETA] - 0.5) * 2.0 * CLOUD_HALF_WIDTH
    phi = (rows[..., _PHI] - 0.5) * 2.0 * CLOUD_HALF_WIDTH
    e = (pt * torch.cosh(eta)).sum(1)
    px, py, pz = (pt * torch.cos(phi)).sum(1), (pt * torch.sin(phi)).sum(1), (pt * torch.sinh(eta)).sum(1)
    return torch.sqrt((e ** 2 - px ** 2 - py ** 2 - pz ** 2).clamp_min(0.0)).numpy()


def cloud_mass_window_scores(x: torch.Tensor, mass: float) -> np.ndarray:
    """The mass-window baseline on clouds: ``−|m − mass|`` with m the constituents' mass in GeV."""
    return -np.abs(cloud_mass(x) - mass)


def evaluate_cloud_taggers(models: Mapping[str, nn.Module], dataset: Any, specs: Sequence[str], *,
                           seed: int = 0, mass: float | None = None, chunk: int = 2048, progress: bool = True,
                           scores: dict[tuple[str, str], np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Score every cloud tagger and the mass window on ``dataset`` (clouds) under each effect in ``specs``.

    The cloud counterpart of :func:`stabletrain.jets.tagging.evaluate_taggers`,
    with the same rows (:func:`~stabletrain.jets.tagging.tagging_metrics`:
    AUC with its DeLong interval, rejections at 30 % and 50 % signal
    efficiency with the background jets passing and Clopper-Pearson
    intervals, ``signal``, ``background``; ``accuracy`` for taggers) and,
    in place of the image's occupancy, ``particles``: the mean number of
    particles per jet after the effect. ``dataset`` is a
    :class:`~stabletrain.jets.clouds.JetClouds` (or any data set of clouds
    with ``jet_eta``); it is read and distorted ``chunk`` jets at a time,
    jet ``i`` from its own stream (:func:`effect_stream`), so the results do
    not depend on ``chunk``. ``mass`` defaults to the W mass.
    """
    from ..progress import progress_bar

    from ..evaluation import distort_examples
    from .detector import jet_eta
    from .tagging import W_MASS, tagger_scores, tagging_metrics

    mass = W_MASS if mass is None else mass
    if int(chunk) < 1:
        raise StableTrainError(f"a chunk needs at least one jet, got {chunk}")
    distortions = parse_distortions(["clean", *[s for s in specs if s != "clean"]])
    for distortion in distortions:
        if distortion.spec != "clean" and not isinstance(distortion, CloudDetectorEffect):
            raise StableTrainError(f"{distortion.spec!r} is not a detector effect on particle clouds")
    labels = dataset.y.numpy()
    axis_eta = getattr(dataset, "jet_eta", None)
    n = len(labels)
    rows: list[dict[str, Any]] = []
    for distortion in progress_bar(distortions, desc="detector effects", unit="effect", enabled=progress):
        window, tagged, particles = [], {name: [] for name in models}, 0.0
        for start in range(0, n, int(chunk)):
            x = dataset.x[start:start + int(chunk)].cpu()
            eta = None if axis_eta is None else axis_eta[start:start + len(x)]
            with jet_eta(eta):  # cloud_smear-A: each particle's E = pT·cosh(η_axis + Δη)
                distorted = distort_examples(distortion, x, start, seed, "detector", effect_stream(distortion))
            window.append(cloud_mass_window_scores(distorted, mass))
            particles += float((distorted[:, 0, :, _MASK] > 0.5).sum())
            for name, model in models.items():
                tagged[name].append(tagger_scores(model, distorted))
        common = {"distortion": distortion.spec,
                  "family": distortion.family if distortion.spec != "clean" else "clean",
                  "param": distortion.param, "particles": particles / max(n, 1)}
        window_scores = np.concatenate(window) if window else np.zeros(0)
        rows.append({"model": "mass-window", **common, **tagging_metrics(window_scores, labels), "accuracy": None})
        if scores is not None:
            scores[("mass-window", distortion.spec)] = window_scores
        for name in models:
            values = np.concatenate(tagged[name]) if tagged[name] else np.zeros(0)
            rows.append({"model": name, **common, **tagging_metrics(values, labels),
                         "accuracy": float(((values >= 0.5).astype(int) == labels).mean())})
            if scores is not None:
                scores[(name, distortion.spec)] = values
    return rows
