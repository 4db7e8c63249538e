"""Deterministic seed streams.

Every random choice in stabletrain (the shuffle of an epoch, the noise of a
perturbation, the offsets of a crop) draws from its own
:class:`torch.Generator`, seeded from the run's seed and the name of the
stream. Streams are independent of each other and of the order in which
they are created, which is what lets an interrupted run resume to the same
result.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator", "example_seeds", "ExampleRNG", "draw", "draw_randint", "draw_poisson"]


def _as_int(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode("utf-8"))
    return int(part) & 0xFFFFFFFFFFFFFFFF


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts``, stable across processes and platforms.

    Example:
        >>> derive_seed(0, "shuffle", 3) == derive_seed(0, "shuffle", 3)
        True
        >>> derive_seed(0, "shuffle", 3) == derive_seed(0, "noise", 3)
        False
    """
    words: list[int] = []
    for part in parts:
        value = _as_int(part)
        words += [value & 0xFFFFFFFF, value >> 32]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def make_generator(*parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded with :func:`derive_seed` of ``parts``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*parts))
    return generator


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 values (Steele, Lea and Flood 2014)."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def example_seeds(indices: Sequence[int] | torch.Tensor | np.ndarray, *parts: int | str) -> list[int]:
    """One 64-bit seed per example index, a function only of ``(parts, index)``.

    Example:
        >>> example_seeds([3, 4], 0, "crop-10")[1] == example_seeds([4], 0, "crop-10")[0]
        True
    """
    base = np.uint64(derive_seed(*parts))
    index = np.asarray(torch.as_tensor(indices).cpu().numpy() if isinstance(indices, torch.Tensor) else indices,
                       dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(_splitmix64(index) ^ base)
    return [int(v) for v in mixed]


class ExampleRNG:
    """Independent random streams, one per example of a batch: row ``i`` draws only from stream ``i``.

    Pass it wherever stabletrain takes a ``generator`` (distortions,
    corruptions, attacks' random starts, smoothing noise). Every draw whose
    first dimension is the batch is then made row by row, so an example's
    random distortion depends only on its own seed, never on which other
    examples share its batch: the distorted test set is the same for any
    batch size, worker count or number of ranks.

    Args:
        seeds: one integer seed per example (see :func:`example_seeds`).
        device: where the streams live (``'cpu'`` keeps every device's
            results identical; draws are moved to the data's device).

    Example:
        >>> rng = ExampleRNG.for_examples(range(4), 0, "gaussian-0.1")
        >>> whole = draw(torch.randn, (4, 3), rng)
        >>> part = draw(torch.randn, (2, 3), ExampleRNG.for_examples(range(2, 4), 0, "gaussian-0.1"))
        >>> torch.equal(whole[2:], part)
        True
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.seeds = [int(s) & _MASK64 for s in seeds]
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    @classmethod
    def for_examples(cls, indices: Sequence[int] | torch.Tensor, *parts: int | str,
                     device: str | torch.device = "cpu") -> "ExampleRNG":
        """Streams for the examples ``indices`` of the stream named by ``parts`` (e.g. seed, spec)."""
        return cls(example_seeds(list(indices) if not isinstance(indices, torch.Tensor) else indices, *parts),
                   device=device)

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, rows: slice) -> "ExampleRNG":
        """The streams of some rows, sharing their states with this object (draws advance both)."""
        sub = ExampleRNG.__new__(ExampleRNG)
        sub.seeds, sub.device, sub.generators = self.seeds[rows], self.device, self.generators[rows]
        return sub

    def __repr__(self) -> str:
        return f"ExampleRNG({len(self)} examples, device={self.device})"



def _rows(shape: Sequence[int], rng: ExampleRNG) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or shape[0] != len(rng):
        raise ValueError(f"a per-example draw needs a leading batch dimension of {len(rng)}, got shape {shape}")
    return shape[1:]


def draw(sampler: Callable[..., torch.Tensor], shape: Sequence[int], generator: torch.Generator | ExampleRNG | None,
         device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``sampler(shape, generator=…)`` (``torch.rand`` or ``torch.randn``) from a generator or per-example streams.

    The draw happens on the generator's device and is moved to ``device``,
    so a seed means the same numbers on every device.
    """
    if isinstance(generator, ExampleRNG):
        row = _rows(shape, generator)
        out = torch.stack([sampler(row, generator=g, device=generator.device, dtype=dtype)
                           for g in generator.generators]) if len(generator) else \
            torch.empty((0, *row), dtype=dtype, device=generator.device)
    else:
        gen_device = generator.device if generator is not None else (device or "cpu")
        out = sampler(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return out if device is None or out.device == torch.device(device) else out.to(device)


def draw_randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | ExampleRNG | None,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """``torch.randint(low, high, shape)`` from a generator or per-example streams (see :func:`draw`)."""
    def sampler(size: tuple, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.randint(low, high, size, generator=generator, device=device)
    return draw(sampler, shape, generator, device)


def draw_poisson(rates: torch.Tensor, generator: torch.Generator | ExampleRNG | None) -> torch.Tensor:
    """``torch.poisson(rates)`` from a generator or per-example streams, on ``rates``' device."""
    if isinstance(generator, ExampleRNG):
        _rows(rates.shape, generator)
        source = rates.to(generator.device)
        out = torch.stack([torch.poisson(source[i], generator=g) for i, g in enumerate(generator.generators)])
        return out.to(rates.device)
    gen_device = generator.device if generator is not None else rates.device
    return torch.poisson(rates.to(gen_device), generator=generator).to(rates.device)
