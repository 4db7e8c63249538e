"""Adversarial attacks on particle clouds under physical constraints: FGSM, PGD and robustness curves.

The cloud analogue of :mod:`stabletrain.jets.study` (attacks on jet images)
and :mod:`stabletrain.attacks`. The adversary may change each jet's
measured particles (:mod:`stabletrain.jets.clouds`: a ``B×1×M×4`` batch of
mask, ``η = 0.5 + Δη/4``, ``φ = 0.5 + Δφ/4``, pT in TeV) within a
:class:`CloudBudget`:

=====================  ==================================================================================
constraint             meaning
=====================  ==================================================================================
pT ≥ 0                 every particle's pT (and ≤ 1 TeV, the top of the encoding)
relative pT            ``|ΔpT| ≤ ε_pt · pT`` for each real particle (``pt``): a pT-scale mismeasurement
angular                ``|Δη|, |Δφ| ≤ ε_ang`` rad for each real particle (``angle``), inside the frame;
                       in the encoding the bound is ``ε_ang / 4`` (:data:`ANGLE_UNIT`)
soft injection         up to ``particles`` soft particles in free (padded) slots, the first free ones of
                       each jet (as :class:`~stabletrain.jets.cloud_perturbations.SoftInjection`), mask
                       1, anywhere within ΔR ≤ ``radius`` of the jet axis, with summed pT ≤ ``budget_gev``
                       (their positions and pT are optimized); only when ``budget_gev > 0``
padding                every other padded slot stays exactly zero
mask                   the mask of the real particles never changes (a particle is never removed; a
                       particle taken to pT 0 stays a particle)
=====================  ==================================================================================

Every iterate is projected onto this set *exactly* (up to float rounding):
the per-particle bounds are boxes (a clamp is their Euclidean projection),
the cone is a disc (radial scaling), and the injected pT is projected onto
the capped simplex ``{p ≥ 0, Σ p ≤ budget}`` (sort-based, Duchi et al.
2008). Each step moves every coordinate by ``step_size`` times its own
bound (``ε_pt·pT`` for a pT, ``ε_ang`` for an angle, the radius for an
injected position, ``budget / k`` for an injected pT), in the direction of
steepest ascent for its block: the gradient's sign for the boxes of the
real particles, the normalized (η, φ) gradient for an injected particle's
disc, and the injected-pT gradient scaled to a largest entry of one for the
simplex (a sign would spread the budget over all slots of one sign and
never reach a vertex). FGSM (:func:`cloud_fgsm`) is one step of the full
bound from the clean cloud: every real particle to a corner of its box,
exactly as FGSM on images. Injected particles start (FGSM, or PGD without
a random start) evenly on the circle of half the radius, sharing the
budget equally; a random start (:func:`cloud_pgd`, the default) is uniform
in the whole constraint set, per jet from its own stream when
``generator`` is an :class:`~stabletrain.seeding.ExampleRNG` (so a jet's
adversarial does not depend on the batch it is in). :func:`cloud_pgd` and
:func:`cloud_fgsm` score the clean cloud too, as
:func:`stabletrain.attacks.pgd` does: a jet that no attacked cloud beats
comes back unchanged (without injected particles), and a jet the model
gets wrong unattacked counts as fooled.

Why the injected particles always carry mask 1: a particle of zero pT
changes nothing for an infrared-safe tagger (``efn``) but does for one that
sees particle counts (``pfn``, ``particlenet``); letting the attack place
such particles is part of what it measures. A budget of 0 GeV injects
nothing.

**Matching the image attacks.** ``pt`` means what the matched image attack
:func:`relative_image_pgd` bounds per cell: ``|ΔpT_cell| ≤ ε·pT_cell``. A
cell's pT is the sum of its particles' pT, so a cloud attack with ``pt =
ε`` (no angular shift, no injection) changes each cell by at most ε of its
pT, and every such change of a cell is reached by scaling all its particles
by the same factor: the images the cloud attack can produce are exactly
those the relative image attack allows, and ``cloud_attack_curve`` and
:func:`image_attack_curve` at the same ε compare the two taggers under one
threat model. (The absolute per-cell ε of
:func:`stabletrain.jets.study.physical_pgd`, in TeV, has no particle
counterpart; after :func:`~stabletrain.jets.study.normalize_max` it is a
fraction of the hardest cell.) Angular shifts and injected particles have
no exact image counterpart: a shift moves pT between cells (up to ε_ang /
0.1 cells of the default images), an injection adds pT to empty cells.

Example:
    >>> import torch
    >>> from stabletrain.jets.cloud_models import EnergyFlowNetwork
    >>> x = torch.zeros(2, 1, 6, 4)
    >>> x[:, 0, :3] = torch.tensor([[1.0, 0.5, 0.5, 0.2], [1.0, 0.52, 0.49, 0.05], [1.0, 0.47, 0.5, 0.01]])
    >>> model = EnergyFlowNetwork(width=8).eval()
    >>> budget = CloudBudget(pt=0.1, angle=0.05, particles=2, budget_gev=5.0)
    >>> out = cloud_pgd(model, x, torch.tensor([0, 1]), budget, steps=3, generator=torch.Generator().manual_seed(0))
    >>> rel = ((out.adversarial - x)[:, 0, :3, 3].abs() / x[:, 0, :3, 3]).max()
    >>> bool(rel <= 0.1 + 1e-6), out.adversarial[:, 0, :, 0].tolist()   # 3 real + 2 injected particles
    (True, [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import StableTrainError, check_images
from ..devices import device_of as _device_of, eval_mode
from ..perturbations import rand_like, randn_like
from ..seeding import ExampleRNG, example_seeds
from .clouds import CLOUD_HALF_WIDTH, check_clouds
from .cloud_perturbations import SOFT_RADIUS
from .data import PIXEL_UNIT_GEV
from .tagging import tagging_metrics

__all__ = [
    "ANGLE_UNIT",
    "CloudAttack",
    "CloudAttackResult",
    "CloudBudget",
    "cloud_attack_curve",
    "cloud_fgsm",
    "cloud_pgd",
    "CURVE_ATTACKS",
    "image_attack_curve",
    "maximize_cloud_loss",
    "relative_image_fgsm",
    "relative_image_pgd",
]

#: One radian of Δη or Δφ in the cloud encoding (``η = 0.5 + Δη / (2H)``, H = 2): 1/4.
ANGLE_UNIT = 1.0 / (2.0 * CLOUD_HALF_WIDTH)
#: TRADES starts at ``x + 0.001·N(0, 1)`` for ε = 0.031: on clouds, Gaussian offsets of this fraction of each bound.
NORMAL_START_FRACTION = 0.001 / 0.031
_MASK, _ETA, _PHI, _PT = range(4)
LossFn = Callable[[torch.Tensor], torch.Tensor]


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise StableTrainError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CloudBudget:
    """What the adversary may change in each jet (see the module docstring); all bounds are per jet.

    Args:
        pt: ε_pt, the relative pT change per real particle, ``|ΔpT| ≤ pt·pT``.
        angle: ε_ang in radians, the shift of each real particle in Δη and in Δφ.
        particles: soft particles injected into free slots (0: none).
        budget_gev: their summed pT in GeV (0: no injection).
        radius: the injected particles lie within ΔR ≤ radius of the jet axis (default 1.0, the anti-kt R).

    Example:
        >>> CloudBudget(pt=0.1).injects, CloudBudget(particles=3, budget_gev=4.2).injects
        (False, True)
        >>> CloudBudget(pt=float("nan"))
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: the relative pT budget pt must be a finite number >= 0, got nan
    """

    pt: float = 0.0
    angle: float = 0.0
    particles: int = 0
    budget_gev: float = 0.0
    radius: float = SOFT_RADIUS

    def __post_init__(self) -> None:
        object.__setattr__(self, "pt", _number(self.pt, "the relative pT budget pt"))
        object.__setattr__(self, "angle", _number(self.angle, "the angular budget angle (rad)"))
        object.__setattr__(self, "budget_gev", _number(self.budget_gev, "the injected pT budget budget_gev (GeV)"))
        k = self.particles
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise StableTrainError(f"particles (soft particles to inject) must be a whole number >= 0, got {k!r}")
        object.__setattr__(self, "particles", int(k))
        radius = _number(self.radius, "the injection radius")
        if not 0.0 < radius <= CLOUD_HALF_WIDTH:
            raise StableTrainError(f"the injection radius must be in (0, {CLOUD_HALF_WIDTH:g}] (the cloud frame), "
                                   f"got {self.radius!r}")
        object.__setattr__(self, "radius", radius)

    @property
    def injects(self) -> bool:
        """Whether soft particles are injected (``particles ≥ 1`` and ``budget_gev > 0``)."""
        return self.particles > 0 and self.budget_gev > 0

    @property
    def is_zero(self) -> bool:
        """Whether the budget allows no change at all (then every attack returns the clean cloud)."""
        return self.pt == 0 and self.angle == 0 and not self.injects

    def contains(self, other: CloudBudget) -> bool:
        """Whether every cloud ``other`` allows is allowed here too (so a jet broken under ``other`` is broken here).

        Injections nest only with the same particles and radius (a larger
        budget then holds the smaller): injected particles always exist,
        so ``k`` of them are not a special case of ``k + 1``.

        Example:
            >>> CloudBudget(pt=0.2, angle=0.1).contains(CloudBudget(pt=0.1))
            True
            >>> CloudBudget(pt=0.2, particles=3, budget_gev=5).contains(CloudBudget(pt=0.1))
            False
        """
        if other.pt > self.pt or other.angle > self.angle:
            return False
        if not other.injects and not self.injects:
            return True
        return (self.injects and other.injects and self.particles == other.particles
                and self.radius == other.radius and other.budget_gev <= self.budget_gev)

    def describe(self) -> str:
        """A short label: ``'pt 0.1, angle 0.05, 3 particles / 4.2 GeV'``."""
        parts = [f"pt {self.pt:g}", f"angle {self.angle:g}"]
        if self.injects:
            parts.append(f"{self.particles} particles / {self.budget_gev:g} GeV in ΔR<{self.radius:g}")
        return ", ".join(parts)


def as_budget(value: CloudBudget | float | int) -> CloudBudget:
    """A :class:`CloudBudget`; a bare number is ``CloudBudget(pt=value)`` (the matched relative-pT budget)."""
    if isinstance(value, CloudBudget):
        return value
    return CloudBudget(pt=_number(value, "a budget"))


@dataclass
class CloudAttackResult:
    """The adversarial clouds, which jets the attack fooled, and the predictions on them.

    ``success`` includes the jets the model gets wrong on the clean cloud
    (the clean cloud is in every budget), for which ``adversarial`` is the
    fooling candidate of highest loss, possibly the clean cloud.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    budget: CloudBudget


# --------------------------------------------------------------------------------------------- the constraint set


class _CloudSet:
    """The constraint set of one batch: bounds of the real particles, the injected slots, the projections.

    The attack's variables are ``z`` (``B×M×3``: η, φ, pT of every slot; only
    real ones count) and ``w`` (``B×k×3``: η, φ, pT of the injected
    particles; only ``valid`` ones count).
    """

    def __init__(self, rows: torch.Tensor, budget: CloudBudget) -> None:
        self.rows = rows  # B×M×4, the clean cloud
        self.real = rows[..., _MASK] > 0.5
        keep = self.real.to(rows.dtype).unsqueeze(-1)
        self.keep = keep
        self.clean = rows[..., 1:] * keep  # η, φ, pT; padded slots zero
        angle = budget.angle * ANGLE_UNIT
        pos = self.clean[..., :2]
        self.pos_lo, self.pos_hi = (pos - angle).clamp(0.0, 1.0), (pos + angle).clamp(0.0, 1.0)
        pt = self.clean[..., 2]
        self.pt_lo, self.pt_hi = (pt * (1.0 - budget.pt)).clamp(0.0, 1.0), (pt * (1.0 + budget.pt)).clamp(0.0, 1.0)
        self.scale_z = torch.cat([torch.full_like(pos, angle), (pt * budget.pt).unsqueeze(-1)], -1) * keep
        b, m = self.real.shape
        k = min(budget.particles, m) if budget.injects else 0
        self.k = k
        self.total = budget.budget_gev / PIXEL_UNIT_GEV  # TeV
        self.disc = budget.radius * ANGLE_UNIT
        if k:
            order = torch.sort(self.real.to(torch.int8), dim=1, stable=True).indices[:, :k]  # free slots first
            self.slots = order
            self.valid = ~self.real.gather(1, order)
        else:
            self.slots = torch.zeros(b, 0, dtype=torch.long, device=rows.device)
            self.valid = torch.zeros(b, 0, dtype=torch.bool, device=rows.device)
        self.count = self.valid.sum(1, keepdim=True).to(rows.dtype)  # B×1 injected particles per jet
        share = self.total / self.count.clamp_min(1.0)
        vmask = self.valid.to(rows.dtype).unsqueeze(-1)
        self.vmask = vmask
        self.scale_w = torch.cat([torch.full((b, k, 2), self.disc, dtype=rows.dtype, device=rows.device),
                                  share.expand(b, k).unsqueeze(-1)], -1) * vmask  # steps: disc and budget share

    def compose(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The ``B×1×M×4`` cloud of the variables (differentiable in both)."""
        rows = torch.cat([self.rows[..., :1] * self.keep, z * self.keep], -1)
        if self.k:
            index = self.slots.unsqueeze(-1).expand(-1, -1, 4)
            values = torch.cat([torch.ones_like(w[..., :1]), w], -1)
            current = rows.gather(1, index)
            rows = rows.scatter(1, index, torch.where(self.valid.unsqueeze(-1), values, current))
        return rows.unsqueeze(1)

    def step(self, z: torch.Tensor, w: torch.Tensor, grad_z: torch.Tensor | None, grad_w: torch.Tensor | None,
             fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One ascent step of ``fraction`` of each bound, steepest for each block's geometry: the gradient's sign
        for the boxes of the real particles; for an injected particle, its (η, φ) gradient normalized to length
        one (a disc), and the jet's injected-pT gradient scaled so its largest entry moves by the bound (a
        simplex: the sign would spread the budget over every slot of the same sign, never reaching a vertex)."""
        if grad_z is not None:
            z = z + fraction * self.scale_z * grad_z.sign()
        if grad_w is not None and self.k:
            position = grad_w[..., :2] / grad_w[..., :2].norm(dim=-1, keepdim=True).clamp_min(1e-30)
            top = grad_w[..., 2].abs().amax(1, keepdim=True).clamp_min(1e-30)
            pt = grad_w[..., 2] / top
            direction = torch.cat([position, pt.unsqueeze(-1)], -1)
            w = w + fraction * self.scale_w * direction
        return z, w

    def project(self, z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest point of the set (separately exact per block: boxes, the disc, the capped simplex)."""
        pos = torch.maximum(torch.minimum(z[..., :2], self.pos_hi), self.pos_lo)
        pt = torch.maximum(torch.minimum(z[..., 2], self.pt_hi), self.pt_lo)
        z = torch.cat([pos, pt.unsqueeze(-1)], -1) * self.keep
        if self.k:
            offset = w[..., :2] - 0.5
            norm = offset.norm(dim=-1, keepdim=True)
            factor = torch.where(norm > self.disc, self.disc / norm.clamp_min(1e-30), torch.ones_like(norm))
            position = (0.5 + offset * factor).clamp(0.0, 1.0)
            weights = _capped_simplex(w[..., 2], self.valid, self.total)
            w = torch.cat([position, weights.unsqueeze(-1)], -1) * self.vmask
        return z, w

    def start(self, kind: str, generator: torch.Generator | ExampleRNG | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first iterate: ``'none'`` the clean cloud (injected: evenly on a circle), ``'uniform'`` uniform in
        the set, ``'normal'`` small Gaussian offsets (injected: uniform)."""
        z = self.clean.clone()
        if kind == "uniform":
            z = z + (rand_like(z, generator) * 2 - 1) * self.scale_z
        elif kind == "normal":
            z = z + NORMAL_START_FRACTION * randn_like(z, generator) * self.scale_z
        elif kind != "none":
            raise StableTrainError(f"start must be 'uniform', 'normal' or 'none', got {kind!r}")
        b, k = self.valid.shape
        if not k:
            return self.project(z, z.new_zeros(b, 0, 3))
        if kind == "none":
            angle = 2.0 * math.pi * torch.arange(k, dtype=z.dtype, device=z.device) / k
            radius = 0.5 * self.disc
            eta, phi = 0.5 + radius * torch.cos(angle), 0.5 + radius * torch.sin(angle)
            pt = (self.total / self.count.clamp_min(1.0)).expand(b, k)
            w = torch.stack([eta.expand(b, k), phi.expand(b, k), pt], -1)
        else:  # uniform in the disc, pT uniform on the capped simplex (a flat Dirichlet with a slack share)
            uniform = rand_like(z.new_empty(b, k, 3), generator)
            r = self.disc * uniform[..., 0].sqrt()
            theta = 2.0 * math.pi * uniform[..., 1]
            slack = rand_like(z.new_empty(b, 1), generator)
            exps = -torch.log1p(-uniform[..., 2]) * self.valid.to(z.dtype)
            total = exps.sum(1, keepdim=True) - torch.log1p(-slack)
            w = torch.stack([0.5 + r * torch.cos(theta), 0.5 + r * torch.sin(theta),
                             self.total * exps / total.clamp_min(1e-30)], -1)
        return self.project(z, w * self.vmask)


def _capped_simplex(p: torch.Tensor, valid: torch.Tensor, total: float) -> torch.Tensor:
    """The Euclidean projection of each row of ``p`` (its ``valid`` entries) onto ``{q ≥ 0, Σ q ≤ total}``.

    Example:
        >>> q = _capped_simplex(torch.tensor([[0.5, 0.7, -0.1]]), torch.ones(1, 3, dtype=torch.bool), 1.0)
        >>> [round(v, 6) for v in q[0].tolist()]
        [0.4, 0.6, 0.0]
    """
    p = torch.where(valid, p, torch.zeros_like(p))
    clipped = p.clamp_min(0.0)
    over = clipped.sum(1, keepdim=True) > total
    u = p.sort(dim=1, descending=True).values
    excess = u.cumsum(1) - total
    j = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device)
    rho = ((u - excess / j) > 0).to(p.dtype).mul(j).amax(1, keepdim=True).clamp_min(1.0)
    theta = excess.gather(1, rho.long() - 1) / rho
    out = torch.where(over, (p - theta).clamp_min(0.0), clipped) * valid.to(p.dtype)
    sums = out.sum(1, keepdim=True)  # a rounding guard: the sum never exceeds the budget
    return out * torch.where(sums > total, total / sums.clamp_min(1e-30), torch.ones_like(sums))


# ------------------------------------------------------------------------------------------------- the ascent


def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    check_clouds(x)
    check_images(x, "clouds")
    device = _device_of(model)
    if y is not None:
        y = torch.as_tensor(y)
        if y.ndim != 1 or len(y) != len(x):
            raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
        y = y.to(device)
    return x.detach().to(device), y


def _steps(steps: int, step_size: float | None) -> tuple[int, float]:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise StableTrainError(f"steps must be a whole number >= 1, got {steps!r}")
    fraction = 2.5 / int(steps) if step_size is None else _number(step_size, "step_size (a fraction of each bound)")
    return int(steps), fraction


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise StableTrainError("the model must return a B×K logits tensor")
    return out


def _ascend(model: nn.Module, space: Any, z: torch.Tensor, w: torch.Tensor, loss_fn: LossFn, steps: int,
            fraction: float, visit: Callable[[torch.Tensor, torch.Tensor], None] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` scaled sign-gradient steps on ``loss_fn``, each projected; ``visit(candidate, logits)`` sees every
    iterate at which a gradient is taken (its logits come with the gradient). Runs under ``enable_grad``, so a
    caller inside ``torch.no_grad()`` gets the attack too."""
    with torch.enable_grad():
        return _ascend_steps(model, space, z, w, loss_fn, steps, fraction, visit)


def _ascend_steps(model: nn.Module, space: Any, z: torch.Tensor, w: torch.Tensor, loss_fn: LossFn, steps: int,
                  fraction: float, visit: Callable[[torch.Tensor, torch.Tensor], None] | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    for _ in range(steps):
        z, w = z.detach().requires_grad_(True), w.detach().requires_grad_(True)
        candidate = space.compose(z, w)
        logits = _logits(model, candidate)
        grad_z, grad_w = torch.autograd.grad(loss_fn(logits), (z, w), allow_unused=True)
        if visit is not None:
            visit(candidate.detach(), logits.detach())
        with torch.no_grad():
            z, w = space.project(*space.step(z, w, grad_z, grad_w, fraction))
    return z.detach(), w.detach()


class _Best:
    """Per example, the strongest candidate so far: a fooling one before any other, then the highest loss."""

    def __init__(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y
        self.loss = F.cross_entropy(logits, y, reduction="none")
        self.predictions = logits.argmax(1)
        self.fooled = self.predictions != y

    @torch.no_grad()
    def __call__(self, candidate: torch.Tensor, logits: torch.Tensor) -> None:
        loss = F.cross_entropy(logits, self.y, reduction="none")
        predicted = logits.argmax(1)
        fooled = predicted != self.y
        better = (fooled & ~self.fooled) | ((fooled == self.fooled) & (loss > self.loss))
        self.x[better] = candidate[better]
        self.loss = torch.where(better, loss, self.loss)
        self.predictions = torch.where(better, predicted, self.predictions)
        self.fooled = self.fooled | fooled


def cloud_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: CloudBudget | float, *, steps: int = 10,
              step_size: float | None = None, random_start: bool = True,
              generator: torch.Generator | ExampleRNG | None = None) -> CloudAttackResult:
    """Untargeted PGD on particle clouds within ``budget`` (a :class:`CloudBudget`, or a number: ``pt`` alone).

    Each step moves every coordinate by ``step_size`` times its own bound
    along the sign of the gradient of the cross-entropy, then projects onto
    the constraint set (see the module docstring). The clean cloud and
    every iterate are scored; each jet gets the candidate that fools the
    model with the highest loss or, if none fools it, the one of highest
    loss, so ``success`` includes the jets wrong on the clean cloud. The
    model runs in eval mode (restored afterwards) on its device.

    Args:
        steps: gradient steps.
        step_size: the step, as a fraction of each coordinate's bound
            (default ``2.5 / steps``, Madry et al.).
        random_start: start uniformly in the constraint set (else at the
            clean cloud, injected particles evenly on a circle).
        generator: the random start's stream: a :class:`torch.Generator`,
            or an :class:`~stabletrain.seeding.ExampleRNG` with one stream
            per jet (then a jet's adversarial is the same in a batch of 1 or N).

    Example:
        >>> from stabletrain.jets.cloud_models import ParticleFlowNetwork
        >>> x = torch.zeros(1, 1, 4, 4); x[0, 0, :2] = torch.tensor([[1.0, 0.5, 0.5, 0.2], [1.0, 0.6, 0.4, 0.1]])
        >>> out = cloud_pgd(ParticleFlowNetwork(width=8), x, torch.tensor([1]), 0.0)
        >>> torch.equal(out.adversarial, x)   # a zero budget changes nothing
        True
    """
    budget = as_budget(budget)
    steps, fraction = _steps(steps, step_size)
    x, y = _check_inputs(model, x, y)
    with eval_mode(model):
        with torch.no_grad():
            best = _Best(x, _logits(model, x), y)
        if budget.is_zero:
            return CloudAttackResult(best.x, best.fooled, best.predictions, budget)
        space = _CloudSet(x[:, 0], budget)
        z, w = space.start("uniform" if random_start else "none", generator)
        z, w = _ascend(model, space, z, w, lambda logits: F.cross_entropy(logits, y, reduction="sum"), steps,
                       fraction, best)
        final = space.compose(z, w)
        with torch.no_grad():
            best(final, _logits(model, final))
    return CloudAttackResult(best.x.detach(), best.fooled, best.predictions, budget)


def cloud_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: CloudBudget | float) -> CloudAttackResult:
    """FGSM on particle clouds: one step of each coordinate's full bound along the gradient's sign, then the set.

    Real particles go to a corner of their box (pT × (1 ± ε_pt), η and φ
    ± ε_ang), as FGSM on images; injected particles step from their even
    start by their radius and by their share of the budget, then are
    projected. Deterministic (no random start). As :func:`cloud_pgd`, the
    clean cloud is a candidate too.

    Example:
        >>> from stabletrain.jets.cloud_models import ParticleFlowNetwork
        >>> x = torch.zeros(1, 1, 3, 4); x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.2])
        >>> adv = cloud_fgsm(ParticleFlowNetwork(width=8), x, torch.tensor([1]), 0.1).adversarial
        >>> round(float(adv[0, 0, 0, 3]), 4) in (0.18, 0.22, 0.2), adv[0, 0, 1:].abs().sum().item()
        (True, 0.0)
    """
    return cloud_pgd(model, x, y, budget, steps=1, step_size=1.0, random_start=False)


def maximize_cloud_loss(model: nn.Module, x: torch.Tensor, loss_fn: LossFn, budget: CloudBudget | float, *,
                        steps: int = 10, step_size: float | None = None, start: str = "uniform",
                        generator: torch.Generator | ExampleRNG | None = None) -> torch.Tensor:
    """The last iterate of cloud PGD ascending ``loss_fn(logits)``: the inner step of adversarial training.

    Like :func:`stabletrain.attacks.maximize_loss` for images: no labels,
    the final iterate (not the first that fools), the model in eval mode,
    the result detached. ``start`` is ``'uniform'``, ``'normal'`` (small
    offsets, for TRADES) or ``'none'``; ``steps=1, step_size=1,
    start='none'`` is :func:`cloud_fgsm`'s step.
    """
    budget = as_budget(budget)
    steps, fraction = _steps(steps, step_size)
    x, _ = _check_inputs(model, x, None)
    if budget.is_zero:
        return x.clone()
    with eval_mode(model):
        space = _CloudSet(x[:, 0], budget)
        z, w = space.start(start, generator)
        z, w = _ascend(model, space, z, w, loss_fn, steps, fraction)
        return space.compose(z, w).detach()


class CloudAttack:
    """The physical cloud attack as the inner attack of ``adversarial``, ``trades`` and ``fgsm-adversarial``.

    The jets task hands it to those methods for cloud taggers
    (:meth:`stabletrain.jets.tagging.JetTaggingTask.attack`). The method's
    ``adv_epsilon`` is the relative pT budget ``pt`` (the meaning ε has for
    images in :func:`relative_image_pgd`); the angular budget and the
    injection are this object's. The method's ``adv_step_size`` becomes the
    fraction ``adv_step_size / adv_epsilon`` of each coordinate's bound (so
    ``adversarial``'s 10 steps of 0.007 for ε = 0.031 are steps of 23 % of
    every bound; FGSM's step ε is the whole bound); with ``adv_epsilon = 0``
    the fraction is ``min(1, 2.5 / steps)``.

    Example:
        >>> from stabletrain.objectives import build_objective
        >>> build_objective("adversarial", attack=CloudAttack(angle=0.05)).attack
        CloudAttack(angle=0.05, particles=0, budget_gev=0.0, radius=1.0)
    """

    def __init__(self, angle: float = 0.0, particles: int = 0, budget_gev: float = 0.0,
                 radius: float = SOFT_RADIUS) -> None:
        template = CloudBudget(angle=angle, particles=particles, budget_gev=budget_gev, radius=radius)
        self.angle, self.particles = template.angle, template.particles
        self.budget_gev, self.radius = template.budget_gev, template.radius

    def budget(self, epsilon: float) -> CloudBudget:
        """The budget at relative pT change ``epsilon``."""
        return CloudBudget(pt=epsilon, angle=self.angle, particles=self.particles, budget_gev=self.budget_gev,
                           radius=self.radius)

    def __call__(self, model: nn.Module, x: torch.Tensor, loss_fn: LossFn, *, epsilon: float, steps: int,
                 step_size: float, start: str, generator: torch.Generator | None = None) -> torch.Tensor:
        fraction = float(step_size) / float(epsilon) if epsilon > 0 else min(1.0, 2.5 / int(steps))
        return maximize_cloud_loss(model, x, loss_fn, self.budget(epsilon), steps=steps, step_size=fraction,
                                   start=start, generator=generator)

    def __repr__(self) -> str:
        return (f"CloudAttack(angle={self.angle}, particles={self.particles}, budget_gev={self.budget_gev}, "
                f"radius={self.radius})")


# ------------------------------------------------------------------------------------- the matched image attack


class _ImageSet:
    """Images under the relative per-cell bound: ``max(0, x(1−ε)) ≤ x' ≤ min(upper, x(1+ε))``."""

    def __init__(self, x: torch.Tensor, epsilon: float, upper: float) -> None:
        self.x = x
        self.lo, self.hi = (x * (1.0 - epsilon)).clamp(0.0, upper), (x * (1.0 + epsilon)).clamp(0.0, upper)
        self.scale_z, self.scale_w = x * epsilon, x.new_zeros(0)

    def compose(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return z

    def step(self, z: torch.Tensor, w: torch.Tensor, grad_z: torch.Tensor | None, grad_w: torch.Tensor | None,
             fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        return (z if grad_z is None else z + fraction * self.scale_z * grad_z.sign()), w

    def project(self, z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.maximum(torch.minimum(z, self.hi), self.lo), w


def relative_image_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 10,
                       step_size: float | None = None, random_start: bool = True, upper: float = 1.0,
                       generator: torch.Generator | ExampleRNG | None = None) -> CloudAttackResult:
    """PGD on jet images with ``|ΔpT| ≤ ε·pT`` per cell: the image attack matched to the cloud attacks' ``pt``.

    Empty cells stay empty, every cell stays in ``[0, upper]``. Steps and
    the choice among the iterates are those of :func:`cloud_pgd` (each step
    ``step_size`` times the cell's bound ``ε·pT``). Returns a
    :class:`CloudAttackResult` whose budget is ``CloudBudget(pt=epsilon)``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(3, 1, 4, 4) * 0.1
        >>> adv = relative_image_pgd(model, x, torch.tensor([0, 1, 0]), 0.2, steps=3).adversarial
        >>> bool(((adv - x).abs() <= 0.2 * x + 1e-7).all())
        True
    """
    budget = as_budget(epsilon)
    steps, fraction = _steps(steps, step_size)
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(x)
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
    device = _device_of(model)
    x, y = x.detach().to(device), y.to(device)
    with eval_mode(model):
        with torch.no_grad():
            best = _Best(x, _logits(model, x), y)
        if budget.pt == 0:
            return CloudAttackResult(best.x, best.fooled, best.predictions, budget)
        space = _ImageSet(x, budget.pt, upper)
        z = x.clone()
        if random_start:
            z = z + (rand_like(z, generator) * 2 - 1) * space.scale_z
        z, w = space.project(z, x.new_zeros(0))
        z, _ = _ascend(model, space, z, w, lambda logits: F.cross_entropy(logits, y, reduction="sum"), steps,
                       fraction, best)
        with torch.no_grad():
            best(z, _logits(model, z))
    return CloudAttackResult(best.x.detach(), best.fooled, best.predictions, budget)


def relative_image_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *,
                        upper: float = 1.0) -> CloudAttackResult:
    """FGSM under the relative per-cell bound: every occupied cell to ``pT·(1 ± ε)`` by the gradient's sign."""
    return relative_image_pgd(model, x, y, epsilon, steps=1, step_size=1.0, random_start=False, upper=upper)


# ---------------------------------------------------------------------------------------------------- the curves


def _curve(model: nn.Module, x: Any, y: torch.Tensor, budgets: Sequence[CloudBudget], run: Callable[..., Any],
           attack: str, kind: str, batch_size: int, seed: int, progress: Callable[[str], None] | None,
           keep_scores: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise StableTrainError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    y = torch.as_tensor(y).cpu()
    n = len(y)
    if y.ndim != 1 or len(x) != n:
        raise StableTrainError(f"need one label per jet: {len(x)} jets, labels of shape {tuple(y.shape)}")
    labels = y.numpy()
    device = _device_of(model)
    seeds = example_seeds(range(n), seed, f"{kind}-attack")

    def scores_of(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(model):
            return _logits(model, batch.to(device)).softmax(1)[:, 1].double().cpu()

    batches = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    clean_batches = [x[a:b] for a, b in batches]
    clean_scores = np.concatenate([scores_of(xb).numpy() for xb in clean_batches]) if n else np.zeros(0)
    clean = tagging_metrics(clean_scores, labels)
    right = (clean_scores >= 0.5).astype(int) == labels
    if keep_scores is not None:
        keep_scores["clean"] = clean_scores
    fooled_at: list[np.ndarray] = []
    metrics_at: list[dict[str, Any]] = []
    changed_at: list[float] = []
    for budget in budgets:
        scores, changed = [], []
        for (a, b), xb in zip(batches, clean_batches):
            # the same per-jet streams at every budget (common random numbers), whatever the batch
            result = run(model, xb, y[a:b], budget, ExampleRNG(seeds[a:b]))
            adv = result.adversarial.cpu()
            scores.append(scores_of(adv).numpy())
            changed.append(((adv - xb.cpu()).abs() > 0).any(dim=-1).flatten(1).sum(1).double()
                           if kind == "cloud" else ((adv - xb.cpu()).abs() > 0).flatten(1).sum(1).double())
        s = np.concatenate(scores) if scores else np.zeros(0)
        if keep_scores is not None:
            keep_scores[budget.describe()] = s
        fooled_at.append((s >= 0.5).astype(int) != labels)
        metrics_at.append(tagging_metrics(s, labels))
        changed_at.append(float(torch.cat(changed).mean()) if n else 0.0)
    rows: list[dict[str, Any]] = []
    for i, budget in enumerate(budgets):
        # broken at a budget contained in this one means broken here: the adversarial is allowed here too
        broken = ~right | fooled_at[i]
        for j, other in enumerate(budgets):
            if j != i and budget.contains(other):
                broken = broken | fooled_at[j]
        row = {"attack": attack, "input": "clouds" if kind == "cloud" else "images", "strength": budget.pt,
               **{f"budget_{key}": value for key, value in asdict(budget).items()},
               "success_rate": float(broken.mean()) if n else 0.0,
               "flipped_correct": float(broken[right].mean()) if right.any() else 0.0,
               "robust_accuracy": float((~broken).mean()) if n else 0.0,
               "robust_accuracy_at_budget": float((right & ~fooled_at[i]).mean()) if n else 0.0,
               "clean_accuracy": float(right.mean()) if n else 0.0,
               **metrics_at[i], "clean_auc": clean["auc"], "clean_auc_low": clean["auc_low"],
               "clean_auc_high": clean["auc_high"], "clean_error": float((~right).mean()) if n else 0.0,
               "changed_particles" if kind == "cloud" else "changed_cells": changed_at[i], "n": n}
        rows.append(row)
        if progress is not None:
            progress(f"{attack} {budget.describe()}: robust accuracy {row['robust_accuracy']:.3f}, "
                     f"AUC {row['auc']:.3f}")
    return rows


#: The attacks of the curves: this module's PGD and FGSM, and AutoAttack's components in the budget's box
#: (:mod:`stabletrain.jets.box_attacks`).
CURVE_ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")


def _attack_plan(attack: str, steps: int | None, step_size: float | None, random_start: bool,
                 queries: int | None) -> tuple[str, int, float, int]:
    """``(attack, steps, step fraction, queries)`` with each option checked against the attack it goes with."""
    if attack not in CURVE_ATTACKS:
        raise StableTrainError(f"unknown attack {attack!r}; known: {', '.join(CURVE_ATTACKS)}")
    if attack in ("pgd", "fgsm"):
        if queries is not None:
            raise StableTrainError(f"attack {attack!r} takes no query budget (square and autoattack do)")
        count, fraction = _steps(10 if steps is None else steps, step_size)
        return attack, count, fraction, 0
    if step_size is not None or random_start is not True:
        raise StableTrainError(f"attack {attack!r} sets its own step sizes and random start (APGD's schedule); "
                               f"step_size and random_start go with pgd")
    if attack == "square" and steps is not None:
        raise StableTrainError("attack 'square' takes no steps (it has a query budget: queries)")
    if attack.startswith("apgd") and queries is not None:
        raise StableTrainError(f"attack {attack!r} takes no query budget (square and autoattack do)")
    count = 100 if steps is None else steps
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise StableTrainError(f"steps must be a whole number >= 1, got {steps!r}")
    budget = 5000 if queries is None else queries
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise StableTrainError(f"queries must be a whole number >= 1, got {queries!r}")
    return attack, int(count), 0.0, int(budget)


def _component_log(progress: Callable[[str], None] | None, name: str,
                   budget: CloudBudget) -> Callable[[str], None] | None:
    """AutoAttack's line per component, labelled with the attack and the budget."""
    if progress is None:
        return None
    return lambda line: progress(f"{name} {budget.describe()}: {line}")


def cloud_attack_curve(model: nn.Module, x: Any, y: torch.Tensor, budgets: Sequence[CloudBudget | float], *,
                       attack: str = "pgd", steps: int | None = None, step_size: float | None = None,
                       random_start: bool = True, queries: int | None = None, batch_size: int = 256, seed: int = 0,
                       progress: Callable[[str], None] | None = None,
                       keep_scores: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Robust accuracy, success rate and tagging metrics of a cloud tagger under the attack at each budget.

    ``x`` is a cloud tensor or a lazy :class:`~stabletrain.jets.clouds.CloudArray`
    (read ``batch_size`` jets at a time); a budget is a
    :class:`CloudBudget` or a number (``CloudBudget(pt=number)``, the
    budget matched to :func:`image_attack_curve` at the same number). One
    row per budget, in the order given, with the keys of
    :func:`stabletrain.jets.study.attack_rows` (``success_rate``: jets
    wrong after the attack; ``flipped_correct``: of the jets right on the
    clean cloud; the :func:`~stabletrain.jets.tagging.tagging_metrics` of
    the attacked jets, ``auc`` with its interval, rejections; ``clean_auc``,
    ``clean_error``), and those of :func:`stabletrain.attacks.robustness_curve`:

    * ``robust_accuracy`` = ``1 − success_rate``: right on the clean cloud
      and not fooled at this budget nor at any budget of the curve that it
      contains (:meth:`CloudBudget.contains`), so it never rises with the
      budget along a nested sequence;
    * ``robust_accuracy_at_budget``: the same at this budget alone;
    * ``budget_pt``, ``budget_angle``, ``budget_particles``,
      ``budget_budget_gev``, ``budget_radius``; ``strength`` = ``pt``;
      ``changed_particles`` (slots changed per jet, mean) and ``n``.

    ``attack`` is ``pgd`` (``steps``, default 10, of ``step_size``, default
    2.5/steps of each bound, from a random start unless ``random_start`` is
    False), ``fgsm``, or one of AutoAttack's components in the budget's box
    (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``square``, ``autoattack``; see
    :mod:`stabletrain.jets.box_attacks`: ``steps`` default 100, ``queries``
    Square's budget, default 5000; relative pT and angular budgets only).
    A dict passed as ``keep_scores`` receives every jet's signal score:
    ``'clean'`` and, per budget, ``budget.describe()`` (the attacked jets),
    from which each jet's robust flags follow (paired comparisons of
    attacks or taggers).

    A jet counts as right when its signal score is ≥ 0.5 exactly when it
    is signal, as in :func:`~stabletrain.jets.study.attack_rows`. The
    random starts come from one stream per jet, seeded by ``(seed, its row)``
    and restarted at every budget, so the curve does not depend on
    ``batch_size``.

    Example:
        >>> from stabletrain.jets.cloud_models import EnergyFlowNetwork
        >>> x = torch.zeros(4, 1, 5, 4); x[:, 0, :2, 0] = 1; x[:, 0, :2, 1:3] = 0.5; x[:, 0, :2, 3] = 0.1
        >>> rows = cloud_attack_curve(EnergyFlowNetwork(width=4), x, torch.tensor([0, 1, 0, 1]), [0.0, 0.2], steps=2)
        >>> [row["budget_pt"] for row in rows], rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
        ([0.0, 0.2], True)
    """
    name, steps, fraction, queries = _attack_plan(attack, steps, step_size, random_start, queries)
    parsed = [as_budget(b) for b in budgets]
    if name not in ("pgd", "fgsm") and any(b.injects for b in parsed):
        raise StableTrainError(f"attack {name!r} works in boxes (relative pT, angles); injected soft particles "
                               f"need attack 'pgd'")

    def run(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, budget: CloudBudget,
            generator: ExampleRNG) -> CloudAttackResult:
        if name == "fgsm":
            return cloud_fgsm(model, xb, yb, budget)
        if name == "pgd":
            return cloud_pgd(model, xb, yb, budget, steps=steps, step_size=fraction, random_start=random_start,
                             generator=generator)
        from .box_attacks import box_attack

        return box_attack(name, model, xb, yb, budget, kind="cloud", steps=steps, queries=queries,
                          generator=generator, progress=_component_log(progress, name, budget))

    return _curve(model, x, y, parsed, run, name, "cloud", batch_size, seed, progress, keep_scores)


def image_attack_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *,
                       attack: str = "pgd", steps: int | None = None, step_size: float | None = None,
                       random_start: bool = True, queries: int | None = None, upper: float = 1.0,
                       batch_size: int = 256, seed: int = 0, progress: Callable[[str], None] | None = None,
                       keep_scores: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """:func:`cloud_attack_curve` for an image tagger under :func:`relative_image_pgd` (or its FGSM, or
    AutoAttack's components in the same per-cell box), same rows and options.

    ``epsilons`` are relative pT changes per cell: at the same number as a
    cloud budget's ``pt`` the two curves measure the same threat (see the
    module docstring). ``changed_cells`` replaces ``changed_particles``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> rows = image_attack_curve(model, torch.rand(6, 1, 4, 4) * 0.1, torch.arange(6) % 2, [0.0, 0.5], steps=2)
        >>> rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"]
        True
    """
    name, steps, fraction, queries = _attack_plan(attack, steps, step_size, random_start, queries)
    parsed = [as_budget(e) for e in epsilons]
    for budget in parsed:
        if not budget.is_zero and (budget.angle or budget.injects):
            raise StableTrainError("image attacks take relative pT budgets only (numbers), not angles or injections")

    def run(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, budget: CloudBudget,
            generator: ExampleRNG) -> CloudAttackResult:
        if name == "fgsm":
            return relative_image_fgsm(model, xb, yb, budget.pt, upper=upper)
        if name == "pgd":
            return relative_image_pgd(model, xb, yb, budget.pt, steps=steps, step_size=fraction,
                                      random_start=random_start, upper=upper, generator=generator)
        from .box_attacks import box_attack

        return box_attack(name, model, xb, yb, budget, kind="image", steps=steps, queries=queries, upper=upper,
                          generator=generator, progress=_component_log(progress, name, budget))

    return _curve(model, x, y, parsed, run, name, "image", batch_size, seed, progress, keep_scores)
