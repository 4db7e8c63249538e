"""Evaluation batches from any source: in-memory tensors, a ``Dataset``, or a ``DataLoader``.

Every batch is ``(x, y, ids)``: float images in [0, 1] on the model's
device, integer labels on the CPU, and each example's id. The id seeds the
example's random distortions (see :func:`stabletrain.evaluation.distort_examples`)
and orders the per-example results before they are summed, so a result
does not depend on the batch size, the number of DataLoader workers or of
ranks, or the order in which a stream delivers its examples.

* an :class:`~stabletrain.data.ImageDataset`: its rows, ids 0 … N-1;
* a ``Dataset`` whose items are ``(image, label)`` or ``(image, label, id)``
  (stabletrain's :class:`~stabletrain.data.streams.ImageFiles` and
  :class:`~stabletrain.data.streams.ShardStream` give ``uint8`` images and
  ids): loaded with ``workers`` DataLoader workers;
* a ``DataLoader`` of such batches, which must not shuffle (the position of
  an example is its id unless the batches carry ids).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from ..checks import StableTrainError

__all__ = ["example_batches", "example_count", "is_in_memory", "take_examples"]


def is_in_memory(source: Any) -> bool:
    """Whether ``source`` holds its images as tensors (an :class:`~stabletrain.data.ImageDataset`)."""
    return hasattr(source, "x") and hasattr(source, "y") and isinstance(getattr(source, "x"), torch.Tensor)


def example_count(source: Any) -> int | None:
    """The number of examples, or None for a stream of unknown length."""
    if is_in_memory(source):
        return int(source.x.shape[0])
    dataset = source.dataset if isinstance(source, DataLoader) else source
    try:
        return len(dataset)
    except TypeError:
        return None


def _as_unit_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.to(device, non_blocking=True).float().div_(255)
    if not x.is_floating_point():
        raise StableTrainError(f"evaluation images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    x = x.to(device, non_blocking=True).float()
    if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise StableTrainError("evaluation images must be in [0, 1] (stabletrain models normalize inside); got "
                               f"values in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    return x


def _loader(source: Any, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    if isinstance(source, DataLoader):
        if not isinstance(source.dataset, IterableDataset) and not isinstance(source.sampler, SequentialSampler):
            raise StableTrainError("evaluation needs a DataLoader that does not shuffle (its order gives each "
                                   "example its id and its random distortions); use shuffle=False")
        return source
    if not isinstance(source, Dataset):
        raise StableTrainError(f"cannot evaluate on {type(source).__name__}: give an ImageDataset, a torch Dataset "
                               f"or a DataLoader")
    return _make_loader(source, batch_size=batch_size, workers=workers, device=device)


def _make_loader(dataset: Dataset, *, batch_size: int | None = None, batch_sampler: list | None = None,
                 workers: int = 0, device: torch.device) -> DataLoader:
    """stabletrain's loader for its own data sets (uint8 batches with ids); torch's default collate otherwise."""
    from ..data.streams import ImageFiles, ShardStream, make_loader

    if isinstance(dataset, (ImageFiles, ShardStream)):
        return make_loader(dataset, batch_size=None if batch_sampler is not None else batch_size,
                           batch_sampler=batch_sampler, workers=workers, device=device)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                          pin_memory=device.type == "cuda")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda")


def example_batches(source: Any, *, batch_size: int = 512, device: str | torch.device = "cpu",
                    workers: int = 0, rank: int = 0,
                    world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, ids)`` batches of ``source`` (see the module docstring).

    Example:
        >>> from stabletrain.data import ImageDataset
        >>> data = ImageDataset(torch.rand(5, 1, 8, 8), torch.arange(5) % 2)
        >>> [ids.tolist() for _, _, ids in example_batches(data, batch_size=2)]
        [[0, 1], [2, 3], [4]]
    """
    device = torch.device(device)
    if is_in_memory(source):
        x, y = source.x, source.y
        for start in list(range(0, len(y), batch_size))[rank::world_size]:
            yield (_as_unit_float(x[start:start + batch_size], device), y[start:start + batch_size].cpu().long(),
                   torch.arange(start, min(start + batch_size, len(y))))
        return
    from ..data.streams import iterate

    position = 0
    planned: list[list[int]] | None = None  # the ids of each batch, where this function cut the batches
    if world_size > 1:
        if isinstance(source, DataLoader):
            raise StableTrainError("a DataLoader cannot be split over ranks; give its Dataset instead")
        if isinstance(source, IterableDataset):
            if getattr(source, "world_size", 1) != world_size or getattr(source, "rank", 0) != rank:
                raise StableTrainError(f"a stream evaluated on {world_size} ranks must be split by them (rank "
                                       f"{rank} of {world_size}); see ShardStream.with_transform(rank=, world_size=)")
        else:
            n = len(source)
            planned = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)][rank::world_size]
            source = _make_loader(source, batch_sampler=planned, workers=workers, device=device)
            if not planned:
                return
    for number, batch in enumerate(iterate(_loader(source, batch_size, workers, device))):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise StableTrainError("evaluation batches must be (images, labels) or (images, labels, ids)")
        x, y = batch[0], torch.as_tensor(batch[1]).cpu().long()
        if len(batch) == 3:
            ids = torch.as_tensor(batch[2]).cpu().long()
        elif planned is not None:
            ids = torch.as_tensor(planned[number])
        else:
            ids = torch.arange(position, position + len(y))
        if x.ndim != 4 or len(x) != len(y):
            raise StableTrainError(f"evaluation images must be B×C×H×W with B labels, got {tuple(x.shape)} and "
                                   f"{tuple(y.shape)}")
        position += len(y)
        yield _as_unit_float(x, device), y, ids


def take_examples(source: Any, count: int | None, *, batch_size: int = 512,
                  workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``count`` examples (all for None) by id, as CPU tensors ``(x, y, ids)`` (attacks, certification)."""
    if is_in_memory(source):
        n = len(source.y) if count is None else min(int(count), len(source.y))
        return source.x[:n].float(), source.y[:n].cpu().long(), torch.arange(n)
    xs, ys, ids = [], [], []
    ordered = not isinstance(source.dataset if isinstance(source, DataLoader) else source, IterableDataset)
    taken = 0
    for x, y, i in example_batches(source, batch_size=batch_size, workers=workers):
        xs.append(x.cpu()), ys.append(y), ids.append(i)
        taken += len(y)
        if ordered and count is not None and taken >= count:  # a map-style source delivers ids in order
            break
    if not ids:
        raise StableTrainError("the evaluation data holds no examples")
    x, y, i = torch.cat(xs), torch.cat(ys), torch.cat(ids)
    order = torch.argsort(i)[: count if count is not None else len(i)]
    return x[order], y[order], i[order]
