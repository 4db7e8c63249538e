"""The common corruptions of Hendrycks & Dietterich (ICLR 2019), batched and seeded.

Fifteen corruptions (:data:`CORRUPTIONS`) make up ImageNet-C and CIFAR-10-C;
four more (:data:`HELD_OUT`) are kept for validation. Each has five
severities and two published parameter sets:

* ``"imagenet"`` — the ImageNet-C parameters as released in
  ``bethgelab/imagecorruptions`` 1.1.2, defined for 224-pixel images;
* ``"cifar10"`` — the milder CIFAR-10-C parameters of
  ``hendrycks/robustness`` (``ImageNet-C/create_c/make_cifar_c.py``),
  defined for 32-pixel images.

Every corruption is a :class:`Corruption`, a
:class:`~stabletrain.distortions.Distortion` whose spec is ``name-severity``
for the ImageNet-C set and ``c10/name-severity`` for the CIFAR-10-C set, so
both parse with :func:`stabletrain.distortions.parse_distortion`. A corruption
maps a ``B×C×H×W`` float batch in [0, 1] (C = 1 or 3, H and W at least 8) to
a new batch of the same shape, dtype and device, in [0, 1]; all randomness
comes from the generator it is given: a ``torch.Generator`` for the batch, or
an :class:`~stabletrain.seeding.ExampleRNG` with one stream per image, which
makes every image's corruption independent of the rest of its batch.

Spatial parameters (blur radii, layer textures, displacement fields) are in
pixels of the set's reference resolution and are scaled by
``min(H, W) / reference side``, so a corruption looks the same at every image
size and matches the reference exactly in scale at 224 px (ImageNet-C) or 32 px
(CIFAR-10-C). ``docs/corruptions.md`` lists the tables and every departure
from the reference code.

The implementations are grouped as Hendrycks groups them: :mod:`.noise`,
:mod:`.blur`, :mod:`.weather` and :mod:`.digital`, over the shared
primitives of ``_ops`` and the parameter tables of ``_tables``.

>>> x = torch.rand(2, 3, 32, 32)
>>> g = torch.Generator().manual_seed(0)
>>> y = corrupt(x, "gaussian_noise", 3, generator=g)
>>> y.shape, bool(y.min() >= 0 and y.max() <= 1)
(torch.Size([2, 3, 32, 32]), True)
>>> from stabletrain.distortions import parse_distortion
>>> parse_distortion("c10/fog-2")
Corruption('c10/fog-2')
>>> len(corruption_suite("cifar10")), len(corruption_suite(names=HELD_OUT, severities=(1, 5)))
(75, 8)

With one random stream per image the result of an image does not depend on
the batch it is in:

>>> from stabletrain.seeding import ExampleRNG
>>> streams = lambda rows: ExampleRNG.for_examples(rows, 0, "fog-3")
>>> whole = corrupt(x, "fog", 3, generator=streams(range(2)))
>>> torch.equal(whole[1:], corrupt(x[1:], "fog", 3, generator=streams([1])))
True
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctests above use it)

from ..distortions import register_distortion
from ._corruption import Corruption, corrupt, corruption_suite
from ._ops import motion_blur_taps
from ._tables import (
    _ALL,
    CORRUPTIONS,
    DEFAULT_LAYER_RESOLUTION,
    HELD_OUT,
    LAYER_RESOLUTIONS,
    PARAMETER_SETS,
    REFERENCE_SIDE,
)
from .blur import defocus_kernel
from .weather import frost_texture

# Private helpers that tests import from here, where they lived before the split.
from ._ops import _resize, _resize_matrix  # noqa: E402,F401  isort: skip
from .digital import _field_matrix, _field_root  # noqa: E402,F401  isort: skip
from .weather import _equalize_hist, _truncated_distance  # noqa: E402,F401  isort: skip

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_LAYER_RESOLUTION",
    "HELD_OUT",
    "LAYER_RESOLUTIONS",
    "PARAMETER_SETS",
    "REFERENCE_SIDE",
    "Corruption",
    "corrupt",
    "corruption_suite",
    "defocus_kernel",
    "frost_texture",
    "motion_blur_taps",
]


def _register() -> None:
    for name in _ALL:
        register_distortion(name, lambda severity, name=name: Corruption(name, severity, "imagenet"))
        register_distortion(f"c10/{name}", lambda severity, name=name: Corruption(name, severity, "cifar10"))


_register()
