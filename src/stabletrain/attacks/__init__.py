"""Adversarial attacks in [0, 1] pixel space: FGSM, PGD, APGD, Square, AutoAttack and a sparse L0 attack.

One module per family: :mod:`.pgd` (FGSM, PGD under L∞ or L2, the inner
maximization of adversarial training), :mod:`.apgd` (APGD-CE, APGD-DLR,
APGD-T), :mod:`.square` (the gradient-free Square attack),
:mod:`.autoattack` (the standard ensemble, FAB-T left out), :mod:`.sparse`
(PGD₀), :mod:`.curves` (attacks by name and robustness curves) and
:mod:`.masking` (PGD against a stronger attack: gradient masking).

Conventions, the ones users of torchattacks and foolbox ask for:

* inputs are ``B×C×H×W`` floats in [0, 1] and the model normalizes its own
  input, so ``epsilon`` is in pixel units (8/255 ≈ 0.031 on CIFAR);
* the attack runs on the model's device, with the model in eval mode; its
  train/eval state is restored afterwards, and no gradient is left on its
  parameters;
* every attack returns an :class:`AttackResult` with the adversarial batch
  and a per-example success mask; untargeted success means the prediction
  differs from the label, targeted success that it equals the target. The
  clean input is scored too (one forward pass), so an example the model
  already gets wrong is a success, with the clean image as its adversarial;
* random starts take a :class:`torch.Generator` or a
  :class:`~stabletrain.seeding.ExampleRNG` (one stream per example: the
  attack on an example then does not depend on the batch it is in; APGD
  and Square draw a key from each example's stream and count from it, see
  :class:`~stabletrain.attacks._common._Streams`);
* :func:`robustness_curve` evaluates several epsilons in one call.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
>>> result = pgd(model, x, y, epsilon=0.1, steps=5, generator=torch.Generator().manual_seed(0))
>>> bool((result.adversarial - x).abs().max() <= 0.1 + 1e-6), result.success.shape
(True, torch.Size([4]))
"""

from ._common import AttackResult
from .apgd import APGD_LOSSES, apgd, apgd_checkpoints, apgd_targeted, dlr_loss, dlr_loss_targeted
from .autoattack import AUTOATTACK_COMPONENTS, AUTOATTACK_STANDARD, autoattack
from .curves import (ATTACKS, GRADIENT_FREE_ATTACKS, LINF_ATTACKS, CurveResult, attack_curve, attack_defaults,
                     build_attack, robustness_curve)
from .masking import gradient_masking, masking_rows, masking_warnings
from .pgd import fgsm, maximize_loss, pgd
from .sparse import sparse_l0
from .square import square, square_p

__all__ = ["AttackResult", "fgsm", "pgd", "sparse_l0", "robustness_curve", "ATTACKS", "build_attack", "maximize_loss",
           "apgd", "apgd_targeted", "apgd_checkpoints", "dlr_loss", "dlr_loss_targeted", "APGD_LOSSES", "square",
           "square_p", "autoattack", "AUTOATTACK_COMPONENTS", "AUTOATTACK_STANDARD", "attack_curve", "CurveResult",
           "attack_defaults", "LINF_ATTACKS", "GRADIENT_FREE_ATTACKS", "gradient_masking", "masking_rows",
           "masking_warnings"]
