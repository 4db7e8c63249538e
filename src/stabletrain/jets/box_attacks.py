"""AutoAttack's components on jets, under the physical constraints: APGD, Square and AutoAttack in pT boxes.

The relative pT threat of :mod:`stabletrain.jets.cloud_attacks` is a box
around every jet: an image cell may take any pT in
``[max(0, pT·(1 − ε)), min(upper, pT·(1 + ε))]`` (an empty cell stays
empty); a real particle any pT in ``[pT·(1 − ε_pt), pT·(1 + ε_pt)]`` inside
``[0, 1]`` TeV, and any (η, φ) within ``ε_ang`` rad of its own inside the
frame. That is an L∞ ball with one radius per coordinate (``ε·pT``, or
``ε_ang`` in the encoding's units), clipped to the box of the encoding, so
the generic attacks of :mod:`stabletrain.attacks` run on it unchanged,
with a per-coordinate ``epsilon`` and ``limits``:

* ``apgd-ce`` (and ``apgd-dlr``, ``apgd-t`` for taggers of 3 and 4 or more
  classes): every step is twice each coordinate's radius at first;
* ``square``: each window sets its coordinates to ``pT·(1 ± ε)`` (a vertex of
  the box), no gradients. On images the windows are squares of cells, as
  for any image. On clouds they are windows of the ``M × 4`` particle table
  (consecutive particles, in the cloud's order, × columns), at most 4
  particles wide: a random search over the same box, but a coarser one
  than on images. The attacks see the table's columns as (pT, η, φ, mask):
  Square draws a window's position in ``[0, w − s)``, as the reference code
  does, so the last column is only ever covered by a window of the full
  width; there it is the mask, which has radius 0 and never changes;
* ``autoattack``: the standard order on what is left, with the components
  a tagger's class count allows: APGD-CE then Square for a binary tagger
  (APGD-T's targeted DLR loss needs 4 classes; the reference AutoAttack
  cannot run it on two either), APGD-CE, APGD-T, Square from 4 classes.

Every constraint of the threat holds by construction: pT ≥ 0, the relative
bound, empty cells and padded slots exactly zero (a cloud's padded slots
are zeroed first, as :func:`~stabletrain.jets.cloud_attacks.cloud_pgd`
does), the mask unchanged. Injected soft particles (a disc and a capped
simplex, not a box) are not covered: :func:`~stabletrain.jets.cloud_attacks.cloud_pgd`
attacks them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> x = torch.rand(4, 1, 4, 4) * 0.1
    >>> out = box_attack("apgd-ce", model, x, torch.tensor([0, 1, 0, 1]), CloudBudget(pt=0.2), kind="image", steps=5)
    >>> bool(((out.adversarial - x).abs() <= 0.2 * x + 1e-7).all())
    True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..attacks import AttackResult, apgd, apgd_targeted, autoattack, square
from ..checks import StableTrainError, check_images
from ..devices import device_of, eval_mode
from ..seeding import ExampleRNG
from .cloud_attacks import ANGLE_UNIT, CloudAttackResult, CloudBudget
from .clouds import check_clouds

__all__ = ["BOX_ATTACKS", "box_attack", "box_radius"]

#: The attacks of :func:`box_attack` (``jets evaluate --attack``).
BOX_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")
_MASK, _ETA, _PHI, _PT = range(4)
#: the cloud's columns in the attack's order, and back
_TO_ATTACK = [_PT, _ETA, _PHI, _MASK]
_FROM_ATTACK = [_TO_ATTACK.index(i) for i in range(4)]


def box_radius(x: torch.Tensor, budget: CloudBudget, kind: str) -> torch.Tensor:
    """Each coordinate's L∞ radius under ``budget``: ``pt·x`` for images; for clouds ``pt·pT`` and
    ``angle·ANGLE_UNIT`` on the real particles, 0 on the mask and on padded slots.

    Example:
        >>> x = torch.tensor([[[[1.0, 0.5, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0]]]])
        >>> box_radius(x, CloudBudget(pt=0.1, angle=0.4), "cloud")[0, 0].tolist()
        [[0.0, 0.10000000149011612, 0.10000000149011612, 0.020000001415610313], [0.0, 0.0, 0.0, 0.0]]
    """
    if kind == "image":
        if budget.angle or budget.injects:
            raise StableTrainError("image attacks take relative pT budgets only, not angles or injections")
        return budget.pt * x
    if kind != "cloud":
        raise StableTrainError(f"kind must be 'image' or 'cloud', got {kind!r}")
    if budget.injects:
        raise StableTrainError("apgd, square and autoattack attack boxes: relative pT and angular budgets; "
                               "injected soft particles need --attack pgd (stabletrain.jets.cloud_attacks.cloud_pgd)")
    real = (x[..., _MASK] > 0.5).to(x.dtype)
    angle = budget.angle * ANGLE_UNIT * real
    return torch.stack([torch.zeros_like(real), angle, angle, budget.pt * x[..., _PT] * real], dim=-1)


def _components(classes: int) -> tuple[str, ...]:
    """AutoAttack's standard components that a tagger of ``classes`` classes allows."""
    return ("apgd-ce", "apgd-t", "square") if classes >= 4 else ("apgd-ce", "square")


def box_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: CloudBudget, *, kind: str,
               steps: int = 100, queries: int = 5000, upper: float = 1.0,
               generator: torch.Generator | ExampleRNG | None = None,
               progress: Callable[[str], None] | None = None) -> CloudAttackResult:
    """Attack ``name`` of :data:`BOX_ATTACKS` on jet images (``kind='image'``) or clouds (``'cloud'``) in the box
    of ``budget``; returns a :class:`~stabletrain.jets.cloud_attacks.CloudAttackResult`.

    ``steps`` are APGD's iterations (per target for APGD-T), ``queries``
    Square's budget; ``upper`` is the top of an image cell (clouds: 1 TeV,
    the encoding's). With an :class:`~stabletrain.seeding.ExampleRNG` every
    jet's random start and search come from its own stream. ``progress``
    receives AutoAttack's line per component. The result's ``components``
    are not kept: :func:`~stabletrain.jets.cloud_attacks.cloud_attack_curve`
    rescores the adversarial jets.
    """
    if name not in BOX_ATTACKS:
        raise StableTrainError(f"unknown box attack {name!r}; known: {', '.join(BOX_ATTACKS)}")
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    if kind == "cloud":
        x = check_clouds(x)
        # padded slots read zero, as cloud_pgd composes them; the radius keeps them there
        x = torch.cat([x[..., :1], x[..., 1:] * (x[..., :1] > 0.5).to(x.dtype)], dim=-1)
        limits = (0.0, 1.0)
    else:
        check_images(x)
        limits = (0.0, float(upper))
    x = x.detach().to(device_of(model))
    radius = box_radius(x, budget, kind)
    if kind == "cloud":  # the columns as (pT, η, φ, mask) for the attack; the tagger sees its own order
        model, x, radius = _Columns(model), x[..., _TO_ATTACK], radius[..., _TO_ATTACK]
    common = {"generator": generator, "limits": limits}
    if name == "autoattack":
        with torch.no_grad(), eval_mode(model):
            classes = int(model(x[:1]).shape[1])
        result: AttackResult = autoattack(model, x, y, radius, steps=steps, queries=queries,
                                          components=_components(classes), progress=progress, **common)
    elif name == "square":
        result = square(model, x, y, radius, queries=queries, **common)
    elif name == "apgd-t":
        result = apgd_targeted(model, x, y, radius, steps=steps, **common)
    else:
        result = apgd(model, x, y, radius, loss=name[len("apgd-"):], steps=steps, **common)
    adversarial = result.adversarial.detach()
    if kind == "cloud":
        adversarial = adversarial[..., _FROM_ATTACK]
    return CloudAttackResult(adversarial, result.success, result.predictions, budget)


class _Columns(nn.Module):
    """The tagger on clouds whose columns come in the attack's order (pT, η, φ, mask)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[..., _FROM_ATTACK])
