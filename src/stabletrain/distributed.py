"""Data-parallel training and evaluation on PyTorch's distributed engine (DDP under ``torchrun``).

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in its environment;
:func:`setup` turns them into a process group (``nccl`` on GPUs, ``gloo``
on the CPU) and a :class:`DistContext`. Without those variables it returns
a single-process context, so the same code runs either way:

>>> ctx = setup("cpu")
>>> ctx.world_size, ctx.is_main, ctx.backend
(1, True, None)
>>> [list(s.index.tolist()) for s in DistributedBatchSampler([torch.arange(6)], rank=1, world_size=2)]
[[3, 4, 5]]

How stabletrain uses it:

* Every process builds the same global batches from the seeded shuffle of
  the epoch; :class:`DistributedBatchSampler` gives each rank one contiguous
  shard of every global batch, and can start mid-epoch (resume).
* :class:`ObjectiveStep` runs a whole objective, e.g. stability training's
  clean and perturbed copies, as **one** forward of the module that DDP
  wraps, so DDP sees one forward and one backward per step and
  all-reduces the gradients once.
* Rank 0 alone writes checkpoints and reports; metrics are summed over
  ranks with :func:`all_reduce_sums`; evaluation shards its sweep and
  gathers the rows with :func:`all_gather`.
* ``stabletrain train --nproc N`` re-runs itself under ``torchrun`` with
  :func:`launch`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .checks import StableTrainError
from .devices import resolve_device

__all__ = ["DistContext", "setup", "teardown", "backend_for", "barrier", "all_reduce_sums", "all_gather",
           "broadcast_object", "Shard", "DistributedBatchSampler", "ObjectiveStep", "wrap_ddp", "convert_sync_bn",
           "launch", "free_port", "launched_by_torchrun"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device | str) -> str:
    """``'nccl'`` for CUDA devices, ``'gloo'`` for the CPU.

    Example:
        >>> backend_for("cpu")
        'gloo'
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started as one of several workers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _device_for(device: str, local_rank: int, distributed: bool) -> torch.device:
    resolved = resolve_device(device)
    if distributed and resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise StableTrainError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                                   f"start at most that many processes per node")
        # one GPU per process, picked by the local rank whatever index --device named
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    return resolved


def setup(device: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, or use the one already open.

    ``device`` is the run's ``--device``: ``auto`` picks CUDA when present
    (then NCCL, one GPU per local rank), else the CPU (then Gloo). Without a
    process group or ``torchrun`` variables this is a single-process
    context and nothing is initialized.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local_rank, _device_for(device, local_rank, world > 1), dist.get_backend())
    if not launched_by_torchrun():
        return DistContext(device=_device_for(device, 0, False))
    if not dist.is_available():
        raise StableTrainError("this torch build has no torch.distributed; run a single process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = _device_for(device, local_rank, True)
    backend = backend_for(resolved)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved, backend)


def teardown(synchronize: bool = True) -> None:
    """Close the process group if one is open; with ``synchronize``, first wait for every rank to get here.

    The barrier keeps one rank from destroying its Gloo group and exiting
    while another still has collectives in flight: Gloo's worker threads can
    otherwise abort the slower process at interpreter exit ("terminate called
    without an active exception"). Pass ``synchronize=False`` on an error
    path: a rank that failed alone must exit, not wait for ranks that are
    still inside a collective of their own.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if synchronize and dist.get_world_size() > 1:
        try:
            dist.barrier()
        except Exception:  # another rank already failed or left; close our side anyway
            pass
    dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_sums(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Element-wise sums of ``values`` over all ranks, in float64 (identity in a single process).

    NaN on any rank makes the sum NaN on every rank, which is how all ranks
    stop together on a diverging loss.
    """
    if not ctx.is_distributed:
        return [float(v) for v in values]
    # gloo reduces CPU tensors only; nccl reduces tensors on the rank's GPU
    device = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def all_gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    holder = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


@dataclass(frozen=True)
class Shard:
    """This rank's rows of one global batch: ``index`` starts at row ``offset`` of a batch of ``total``."""

    index: torch.Tensor
    offset: int
    total: int
    step: int


class DistributedBatchSampler:
    """The distributed sampler: each rank's contiguous shard of every global batch of an epoch.

    Unlike :class:`torch.utils.data.DistributedSampler`, which deals whole
    examples round-robin, this keeps the global batches of a single-process
    run, so N processes with ``B / N`` examples each take the same optimizer
    steps as one process with ``B``. Shards differ in size by at most one
    example when ``N`` does not divide a batch (the training loop weights the
    loss so the step stays exact). A trailing global batch with fewer
    examples than ranks is dropped, because a rank cannot train on none.

    Args:
        batches: the epoch's global batches of example indices, the same on
            every rank (they come from the seeded shuffle of the epoch).
        rank, world_size: this process and the number of processes.
        start: the first global batch to yield: the sampler position of a
            checkpoint taken mid-epoch.
    """

    def __init__(self, batches: Sequence[torch.Tensor], rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise StableTrainError(f"rank must be in [0, {world_size}), got {rank}")
        self.batches = list(batches)
        if world_size > 1 and len(self.batches) > 1 and len(self.batches[-1]) < world_size:
            self.batches.pop()
        if not 0 <= start <= len(self.batches):
            raise StableTrainError(f"sampler position {start} is outside the epoch's {len(self.batches)} batches")
        self.rank, self.world_size, self.start = rank, world_size, start

    def __len__(self) -> int:
        """Global batches per epoch (the steps of the epoch), including those before ``start``."""
        return len(self.batches)

    def __iter__(self) -> Iterator[Shard]:
        for step in range(self.start, len(self.batches)):
            batch = self.batches[step]
            sizes = [len(part) for part in torch.tensor_split(batch, self.world_size)]
            offset = sum(sizes[: self.rank])
            yield Shard(batch[offset: offset + sizes[self.rank]], offset, len(batch), step)


class ObjectiveStep(nn.Module):
    """``objective(model, x, y, generator)`` as one module call, the unit that DDP wraps.

    Stability training runs the model on the clean and on the perturbed
    copy (two passes, or one concatenated pass). Wrapping the model alone in
    DDP would make each step two DDP forwards for one backward; wrapping the
    whole objective makes it one forward, one backward and one gradient
    all-reduce, whatever the method and whatever ``batching`` is.

    Example:
        >>> from stabletrain.objectives import StabilityObjective
        >>> step = ObjectiveStep(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), StabilityObjective(sigma=0.1))
        >>> sorted(step(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])))
        ['loss', 'output', 'stability_loss', 'task_loss']
    """

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, y: Any = None, generator: torch.Generator | None = None) -> dict:
        return self.objective(self.model, x, y, generator=generator)


def wrap_ddp(module: nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` on this rank's device; ``module`` itself in a single process."""
    if not ctx.is_distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def convert_sync_bn(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Batch norm whose batch statistics span all ranks (:class:`torch.nn.SyncBatchNorm`).

    PyTorch implements SyncBatchNorm on GPUs only, hence the error on the
    CPU, where ``norm='group'`` is the exact alternative.
    """
    if not ctx.is_distributed:
        return model
    if ctx.device.type != "cuda":
        raise StableTrainError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); "
                               "on the CPU use --norm group for exact data parallelism, or leave sync_bn off")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def free_port() -> int:
    """A TCP port that was free a moment ago, for a local rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(args: Sequence[str], nproc: int) -> int:
    """Run ``python -m stabletrain <args>`` under ``torchrun`` with ``nproc`` local workers; returns its exit status.

    ``--standalone`` makes a single-node rendezvous on a free port, so
    several launches can run side by side. Multi-node runs call
    ``torchrun`` directly (see ``docs/scaling.md``).
    """
    if nproc < 1:
        raise StableTrainError(f"--nproc must be >= 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "stabletrain", *args]
    env = dict(os.environ)
    # torchrun would pick 1 thread per worker with a warning; say so explicitly, and share the cores evenly
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(command, env=env).returncode
