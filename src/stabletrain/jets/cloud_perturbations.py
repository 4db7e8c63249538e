"""Physical perturbations of particle clouds: the ``x'`` of stability training for cloud taggers.

Each takes a ``B×1×M×4`` cloud batch (see :mod:`stabletrain.jets.clouds`)
and an optional generator, and returns a perturbed copy of the same shape
in which padded slots are exactly zero and every pT is ≥ 0. They draw
their noise with :func:`stabletrain.perturbations.randn_like` and
:func:`~stabletrain.perturbations.rand_like`, so a
:class:`~stabletrain.seeding.ExampleRNG` gives each jet its own stream (the
same copy of a jet in a batch of 1 or of N) and data-parallel shards draw
the noise of the whole batch. Registered in
:data:`stabletrain.registry.PERTURBATIONS` by the jets plugin; ``sigma``,
the one size every registered perturbation takes (the training method's
``--sigma``), means:

==================  =====================================================  ==============================
name                perturbation                                           ``sigma``
==================  =====================================================  ==============================
``particle-smear``  pT → pT·(1 + σ·ε), ε ~ N(0, 1), clipped at 0 (and      relative pT resolution
                    1 TeV); a particle smeared to 0 is removed
``particle-jitter`` Δη, Δφ each moved by U(−½, ½)·σ·cell                    width of the jitter, in cells
``particle-soft``   round(σ·k₁) soft particles in the jet's cone sharing   pile-up interactions' worth
                    σ·B₁ GeV (k₁ = 10 particles, B₁ = 4.2 GeV)
``particle``        soft particles of one interaction, then smearing (σ)   relative pT resolution
                    and one-cell jitter of every particle
==================  =====================================================  ==============================

The defaults and why:

* :data:`DEFAULT_RESOLUTION` = 0.24: the pT-weighted mean relative
  resolution of the detector's ``smear-1`` calorimeter (σ/E = 1/√E ⊕ 5 %,
  E = pT·cosh η) over the 14 001 constituents of a 400-jet W/QCD sample
  (unweighted median 0.46: soft particles are measured worse). A cloud
  holds no absolute η, so the smearing is a constant relative resolution.
* :data:`JITTER_CELL` = 0.1: the cell of the jet images
  (:class:`~stabletrain.jets.images.ImageSpec`, 2.5 / 25), the resolution
  at which the image tagger sees positions; one cell of jitter keeps a
  particle, on average, in the cell where it was measured.
* :data:`SOFT_PARTICLES` = 10 and :data:`SOFT_BUDGET_GEV` = 4.2: one
  Pythia 8 minimum-bias interaction at 13 TeV (``SoftQCD:nonDiffractive``,
  1000 events, 4 random discs each) puts on average 9.6 visible particles
  with 4.2 GeV of summed pT (median 2.2 GeV) into a disc of ΔR < 1 at
  |η| < 2. The budget is split by a flat Dirichlet draw, so a particle
  gets 0.42 GeV on average (measured: 0.44). Positions are uniform in the
  disc of ``radius`` (default 1.0, the generation's anti-kt R) around the
  axis, as pile-up is uniform in (η, φ). The injected particles fill free
  (padded) slots; :func:`stabletrain.jets.clouds.load_clouds` reserves
  :data:`SOFT_PARTICLES` of them in every jet. A jet with fewer free slots
  gets fewer particles (each with its own share of the budget).

Example:
    >>> import torch
    >>> from stabletrain.jets.clouds import encode_clouds
    >>> import numpy as np
    >>> x = encode_clouds(np.array([[[200.0, 0.1, 0.3], [50.0, -0.2, 0.2]]]), np.array([2]), np.array([0.0]),
    ...                   np.array([0.25]), slots=16)
    >>> y = ParticleNoise(0.2)(x, torch.Generator().manual_seed(0))
    >>> int((y[0, 0, :, 0] > 0.5).sum()), bool((y[0, 0, :, 3] >= 0).all())   # 2 particles + 10 soft
    (12, True)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import StableTrainError, check_nonnegative
from ..perturbations import rand_like, randn_like
from .clouds import CLOUD_HALF_WIDTH, check_clouds
from .data import PIXEL_UNIT_GEV
from .images import ImageSpec

__all__ = [
    "DEFAULT_RESOLUTION",
    "JITTER_CELL",
    "SOFT_BUDGET_GEV",
    "SOFT_PARTICLES",
    "SOFT_RADIUS",
    "CloudPerturbation",
    "ParticleJitter",
    "ParticleNoise",
    "ParticleSmear",
    "SoftInjection",
    "is_cloud_perturbation",
]

#: Relative pT resolution of ``particle-smear`` built without a sigma (measured; see the module docstring).
DEFAULT_RESOLUTION = 0.24
#: The jitter cell in η and φ: the pixel of the default jet images.
JITTER_CELL = ImageSpec().pixel_size
#: Soft particles of one minimum-bias interaction in a jet's cone (measured: 9.6).
SOFT_PARTICLES = 10
#: Their summed pT in GeV (measured mean).
SOFT_BUDGET_GEV = 4.2
#: The cone of soft particles: the generation's anti-kt R.
SOFT_RADIUS = 1.0


def is_cloud_perturbation(factory: object) -> bool:
    """Whether a registered perturbation (class or factory) perturbs particle clouds rather than images."""
    return getattr(factory, "input_kind", None) == "cloud"


class CloudPerturbation(nn.Module):
    """Base of the cloud perturbations: ``forward(x, generator)`` checks ``x`` and calls :meth:`apply`."""

    input_kind = "cloud"

    def apply(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Perturb ``rows`` (``B×M×4``, a copy the method may change in place); return the result."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rows = check_clouds(x)[:, 0].clone()
        out = self.apply(rows, generator)
        keep = (out[..., 0] > 0.5).to(out.dtype)
        out = out * keep.unsqueeze(-1)  # padded slots exactly zero, the mask exactly 0 or 1
        out[..., 0] = keep
        return out.unsqueeze(1)


class ParticleSmear(CloudPerturbation):
    """Relative Gaussian pT smearing ``pT·(1 + σ·ε)``, clipped into [0, 1 TeV]; a particle at 0 is removed.

    Example:
        >>> x = torch.zeros(1, 1, 3, 4); x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.2])
        >>> y = ParticleSmear(0.1)(x, torch.Generator().manual_seed(0))
        >>> bool(y[0, 0, 0, 3] != 0.2), y[0, 0, 1:].abs().sum().item()
        (True, 0.0)
    """

    def __init__(self, sigma: float = DEFAULT_RESOLUTION) -> None:
        super().__init__()
        self.sigma = check_nonnegative(sigma, "sigma (relative pT resolution)")

    def apply(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.sigma == 0.0:
            return rows
        noise = randn_like(rows[..., 3], generator)
        pt = (rows[..., 3] * (1.0 + self.sigma * noise)).clamp(0.0, 1.0)
        rows[..., 3] = pt
        rows[..., 0] = rows[..., 0] * (pt > 0).to(rows.dtype)
        return rows

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class ParticleJitter(CloudPerturbation):
    """Each particle's Δη and Δφ moved by independent ``U(−½, ½)·σ·cell`` (σ = 1: within one cell).

    Positions stay inside the cloud frame (clipped at its edge).

    Example:
        >>> x = torch.zeros(1, 1, 2, 4); x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.2])
        >>> y = ParticleJitter(1.0)(x, torch.Generator().manual_seed(0))
        >>> shift = (y - x)[0, 0, 0, 1:3].abs() * 2 * 2.0   # in η, φ units (frame half-width 2)
        >>> bool((shift <= 0.05 + 1e-6).all()), y[0, 0, 1].abs().sum().item()
        (True, 0.0)
    """

    def __init__(self, sigma: float = 1.0, cell: float = JITTER_CELL) -> None:
        super().__init__()
        self.sigma = check_nonnegative(sigma, "sigma (jitter width in cells)")
        self.cell = check_nonnegative(cell, "cell (η, φ size of a cell)")

    def apply(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        width = self.sigma * self.cell / (2.0 * CLOUD_HALF_WIDTH)  # in frame units
        if width == 0.0:
            return rows
        shift = (rand_like(rows[..., 1:3], generator) - 0.5) * width
        rows[..., 1:3] = (rows[..., 1:3] + shift).clamp(0.0, 1.0)
        return rows

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, cell={self.cell}"


class SoftInjection(CloudPerturbation):
    """``round(σ·particles)`` soft particles with ``σ·budget_gev`` GeV in all, uniform in a disc of ``radius``.

    The budget is split among the particles by a flat Dirichlet draw; the
    particles fill the first free (padded) slots of each jet, and a jet
    with fewer free slots gets only as many.

    Example:
        >>> x = torch.zeros(1, 1, 12, 4); x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.2])
        >>> y = SoftInjection(1.0)(x, torch.Generator().manual_seed(0))
        >>> int((y[0, 0, :, 0] > 0).sum()), round(float(y[0, 0, 1:, 3].sum()) * 1000, 6)   # 1 + 10, 4.2 GeV
        (11, 4.2)
    """

    def __init__(self, sigma: float = 1.0, particles: int = SOFT_PARTICLES, budget_gev: float = SOFT_BUDGET_GEV,
                 radius: float = SOFT_RADIUS) -> None:
        super().__init__()
        self.sigma = check_nonnegative(sigma, "sigma (pile-up interactions)")
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 0:
            raise StableTrainError(f"particles must be a whole number >= 0, got {particles!r}")
        self.particles = particles
        self.budget_gev = check_nonnegative(budget_gev, "budget_gev (GeV)")
        self.radius = check_nonnegative(radius, "radius")
        if not 0.0 < self.radius <= CLOUD_HALF_WIDTH:
            raise StableTrainError(f"radius must be in (0, {CLOUD_HALF_WIDTH:g}] (the cloud frame), got {radius!r}")

    @property
    def count(self) -> int:
        """How many particles each jet gets (when it has the free slots)."""
        return int(round(self.sigma * self.particles))

    def apply(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        k = min(self.count, rows.shape[1])
        if k == 0:
            return rows
        uniform = rand_like(rows.new_empty(rows.shape[0], k, 3), generator)
        r = self.radius * uniform[..., 0].sqrt()
        theta = 2.0 * math.pi * uniform[..., 1]
        weights = -torch.log1p(-uniform[..., 2])  # Exp(1); normalized: a flat Dirichlet split
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        pt = (self.sigma * self.budget_gev / PIXEL_UNIT_GEV) * weights
        values = torch.stack([torch.ones_like(r), 0.5 + r * torch.cos(theta) / (2.0 * CLOUD_HALF_WIDTH),
                              0.5 + r * torch.sin(theta) / (2.0 * CLOUD_HALF_WIDTH), pt], dim=-1).clamp(0.0, 1.0)
        occupied = rows[..., 0] > 0.5
        slots = torch.sort(occupied.to(torch.int8), dim=1, stable=True).indices[:, :k]  # free slots first
        free = ~occupied.gather(1, slots)
        index = slots.unsqueeze(-1).expand(-1, -1, rows.shape[-1])
        current = rows.gather(1, index)
        rows.scatter_(1, index, torch.where(free.unsqueeze(-1), values.to(rows.dtype), current))
        return rows

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, particles={self.particles}, budget_gev={self.budget_gev}, radius={self.radius}"


class ParticleNoise(CloudPerturbation):
    """The default cloud noise: soft particles of ``pileup`` interactions, then pT smearing (σ) and jitter.

    The injected particles are measured like the others, so they are
    smeared and jittered too.

    Args:
        sigma: relative pT resolution.
        jitter: jitter width in cells of ``cell``.
        pileup: soft particles, in interactions' worth (see :class:`SoftInjection`).

    Example:
        >>> ParticleNoise(0.2)
        ParticleNoise(
          sigma=0.2
          (soft): SoftInjection(sigma=1.0, particles=10, budget_gev=4.2, radius=1.0)
          (smear): ParticleSmear(sigma=0.2)
          (jitter): ParticleJitter(sigma=1.0, cell=0.1)
        )
    """

    def __init__(self, sigma: float = DEFAULT_RESOLUTION, jitter: float = 1.0, pileup: float = 1.0,
                 cell: float = JITTER_CELL, particles: int = SOFT_PARTICLES, budget_gev: float = SOFT_BUDGET_GEV,
                 radius: float = SOFT_RADIUS) -> None:
        super().__init__()
        self.soft = SoftInjection(pileup, particles=particles, budget_gev=budget_gev, radius=radius)
        self.smear = ParticleSmear(sigma)
        self.jitter = ParticleJitter(jitter, cell=cell)
        self.sigma = self.smear.sigma

    def apply(self, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        rows = self.soft.apply(rows, generator)
        rows = self.smear.apply(rows, generator)
        return self.jitter.apply(rows, generator)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
