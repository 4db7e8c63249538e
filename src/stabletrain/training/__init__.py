"""The training loop: one interface for every method, with checkpoints and resume.

>>> from stabletrain.training import TrainConfig, train
>>> result = train(TrainConfig(data="digits", method="stability", epochs=1, width=8),
...                "runs/doctest-train", progress=False, overwrite=True)   # doctest: +SKIP
>>> result.history[-1]["test_accuracy"]   # doctest: +SKIP

Every epoch ends with an atomic write of ``checkpoint.pt`` (model,
optimizer, scheduler, history, config, RNG states and the sampler position)
and of ``history.json``/``.csv``; ``checkpoint_every`` adds checkpoints
every that many steps within an epoch. Randomness comes from generators
seeded by ``(seed, stream, epoch)`` whose states are saved, so a run resumed
from any checkpoint, even one taken mid-epoch, reproduces the uninterrupted
run bitwise on the CPU.

Under ``torchrun`` (or ``stabletrain train --nproc N``) the same function
trains with DistributedDataParallel; see :mod:`stabletrain.distributed`.
``config.batch_size`` is then the global batch, cut into one shard per
process, and every example gets the noise it gets in a single process.
"""

from __future__ import annotations

from .checkpoints import CHECKPOINT_FORMAT, build_from_spec, load_checkpoint, load_model
from .config import AMP_MODES, EXECUTION_OPTIONS, TrainConfig
from .loop import TrainResult, train
from .runs import differing_options, same_run, stored_config
from ..devices import resolve_device

__all__ = ["TrainConfig", "TrainResult", "train", "load_checkpoint", "load_model", "build_from_spec",
           "resolve_device", "differing_options", "same_run", "stored_config", "CHECKPOINT_FORMAT", "AMP_MODES",
           "EXECUTION_OPTIONS"]
