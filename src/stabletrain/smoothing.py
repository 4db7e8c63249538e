"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``
in [0, 1] pixel units, is robust within an L2 radius
``σ·Φ⁻¹(p_A)`` around ``x`` whenever the top class has probability ``p_A``
under the noise. :func:`certify` estimates a one-sided Clopper–Pearson lower
bound of ``p_A`` from Monte-Carlo samples and abstains when it is below ½;
:func:`predict` abstains when a two-sided binomial test cannot separate the
top two classes.

Defaults follow the reference code (locuslab/smoothing): ``n0 = 100``
selection samples, ``n = 100,000`` estimation samples, ``alpha = 0.001``.
The reference used ``statsmodels``' ``proportion_confint(method='beta')`` and
SciPy's removed ``binom_test``; here the bound is the beta quantile
``Beta(alpha; k, n − k + 1)`` and the test is ``scipy.stats.binomtest``.

The noise takes a :class:`torch.Generator` or an
:class:`~stabletrain.seeding.ExampleRNG` with one stream per image: then
image ``i``'s noise comes from its stream alone, in blocks of a fixed
number of copies, so counts, certificates and :func:`certify_dataset` do not
depend on ``batch_size``, on ``chunk`` or on which images share a batch.

>>> import torch
>>> from torch import nn
>>> class Constant(nn.Module):
...     def forward(self, x):
...         return torch.tensor([[0.0, 5.0]]).expand(x.shape[0], 2)
>>> result = certify(Constant(), torch.rand(1, 1, 4, 4), sigma=0.25, n0=10, n=1000)
>>> result["prediction"].tolist(), round(float(result["radius"][0]), 2)
([1], 0.62)
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from scipy.stats import beta as beta_distribution
from scipy.stats import binomtest, norm
from torch import nn

from .checks import StableTrainError, check_images
from .devices import device_of as _device, eval_mode
from .perturbations import randn_like
from .seeding import ExampleRNG, draw

__all__ = ["AMP_MODES", "lower_confidence_bound", "sample_counts", "predict", "certify", "certified_accuracy",
           "average_certified_radius", "certify_dataset", "ABSTAIN"]

#: The class index reported when the smoothed classifier abstains.
ABSTAIN = -1

#: Noisy copies drawn at a time from an image's own stream (a fixed unit, whatever the batch size).
_NOISE_BLOCK = 64

#: Precision of the base classifier's forward passes: float32, or bfloat16 autocast (CPU and CUDA).
AMP_MODES = ("off", "bf16")


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − alpha) Clopper–Pearson lower bound of a binomial proportion.

    Example:
        >>> round(lower_confidence_bound(100, 100, 0.001), 6)   # = 0.001 ** (1 / 100)
        0.933254
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise StableTrainError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    if not 0.0 < alpha < 1.0:
        raise StableTrainError(f"alpha must be in (0, 1), got {alpha!r}")
    if successes == 0:
        return 0.0
    return float(beta_distribution.ppf(alpha, successes, trials - successes + 1))




class _ExampleNoise:
    """Standard normal noise of each image's copies from its own stream, ``_NOISE_BLOCK`` copies per draw.

    Drawing a fixed number of copies at a time makes the noise of copy ``j``
    of image ``i`` a function of image ``i``'s stream only, however the
    copies are grouped into forward passes.
    """

    def __init__(self, rng: ExampleRNG, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.rng, self.shape, self.dtype = rng, shape, dtype
        self.buffer = torch.empty((len(rng), 0, *shape), dtype=dtype, device=rng.device)

    def take(self, copies: int) -> torch.Tensor:
        """The next ``copies`` noisy copies of every image, ``(B·copies)×…`` (image-major)."""
        if self.buffer.shape[1] < copies:
            blocks = -(-(copies - self.buffer.shape[1]) // _NOISE_BLOCK)
            fresh = [draw(torch.randn, (len(self.rng), _NOISE_BLOCK, *self.shape), self.rng, dtype=self.dtype)
                     for _ in range(blocks)]
            self.buffer = torch.cat([self.buffer, *fresh], dim=1)
        out, self.buffer = self.buffer[:, :copies], self.buffer[:, copies:]
        return out.reshape(-1, *self.shape)


def _check_speed_options(amp: str, channels_last: bool) -> None:
    if amp not in AMP_MODES:
        raise StableTrainError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if not isinstance(channels_last, bool):
        raise StableTrainError(f"channels_last must be True or False, got {channels_last!r}")


@contextlib.contextmanager
def _fast_forward(model: nn.Module, x: torch.Tensor, amp: str, channels_last: bool) -> Iterator[None]:
    """Eval mode, no autograd, optional bfloat16 autocast and channels-last weights; the model restored after."""
    formats = []
    if channels_last and x.ndim == 4:
        formats = [(p, p.is_contiguous()) for p in model.parameters() if p.ndim == 4]
        model.to(memory_format=torch.channels_last)
    autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if amp == "bf16"
                else contextlib.nullcontext())
    try:
        with eval_mode(model), torch.no_grad(), autocast:
            yield
    finally:
        if formats:
            for parameter, contiguous in formats:
                if contiguous:
                    parameter.data = parameter.data.contiguous()


def sample_counts(model: nn.Module, x: torch.Tensor, num: int, sigma: float, *, num_classes: int | None = None,
                  batch_size: int = 1000, generator: torch.Generator | ExampleRNG | None = None,
                  amp: str = "off", channels_last: bool = False) -> torch.Tensor:
    """``B×K`` counts of the base classifier's predictions on ``num`` noisy copies of each image.

    The noise is ``N(0, sigma²)`` per pixel, added in [0, 1] pixel units and
    **not** clipped, as in the certificate's derivation. Copies are batched
    ``batch_size`` at a time across images. With an
    :class:`~stabletrain.seeding.ExampleRNG` (one stream per image) image
    ``i``'s noise comes from stream ``i`` alone, so its counts do not depend
    on ``batch_size`` or on the other images of ``x``.

    ``amp='bf16'`` runs the forward passes under bfloat16 autocast and
    ``channels_last=True`` feeds channels-last batches to channels-last
    weights (restored afterwards): faster on most hardware, and the noise is
    the same, but a prediction near a decision boundary may change, so the
    counts can differ slightly from float32's (benchmarks/bench_certify.py
    measures both).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> counts = sample_counts(model, torch.rand(2, 1, 4, 4), 50, 0.25, generator=torch.Generator().manual_seed(0))
        >>> counts.shape, counts.sum(1).tolist()
        (torch.Size([2, 3]), [50, 50])
    """
    check_images(x)
    if sigma <= 0 or not math.isfinite(sigma):
        raise StableTrainError(f"sigma must be a finite number > 0, got {sigma!r}")
    if num < 1:
        raise StableTrainError(f"the number of noise samples must be >= 1, got {num}")
    _check_speed_options(amp, channels_last)
    per_example = isinstance(generator, ExampleRNG)
    if per_example and len(generator) != len(x):
        raise StableTrainError(f"the noise's ExampleRNG has {len(generator)} streams for {len(x)} images")
    device = _device(model)
    x = x.to(device)
    counts: torch.Tensor | None = None
    per_image = max(1, batch_size // len(x))
    streams = _ExampleNoise(generator, tuple(x.shape[1:]), x.dtype) if per_example else None
    layout = torch.channels_last if channels_last and x.ndim == 4 else torch.contiguous_format
    with _fast_forward(model, x, amp, channels_last):
        remaining = num
        while remaining > 0:
            this = min(per_image, remaining)
            if streams is not None:
                noise = streams.take(this).to(device)
            else:
                noise = randn_like(x.repeat_interleave(this, dim=0), generator)
            # x + σ·noise, each image broadcast over its copies (image-major), without a repeated copy of x
            batch = noise.view(len(x), this, *x.shape[1:]).mul_(sigma).add_(x.unsqueeze(1)).view_as(noise)
            logits = model(batch.contiguous(memory_format=layout))
            if counts is None:
                counts = torch.zeros(len(x), num_classes or logits.shape[1], dtype=torch.long, device=device)
            labels = logits.argmax(1).view(len(x), this)
            counts.scatter_add_(1, labels, torch.ones_like(labels))
            remaining -= this
    return counts.cpu()


def predict(model: nn.Module, x: torch.Tensor, sigma: float, *, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, generator: torch.Generator | ExampleRNG | None = None, amp: str = "off",
            channels_last: bool = False) -> torch.Tensor:
    """The smoothed prediction for each image, or :data:`ABSTAIN` when the top two classes are not separated.

    The top class is returned only if a two-sided binomial test of its count
    against the runner-up's rejects equality at level ``alpha``. ``amp`` and
    ``channels_last`` as in :func:`sample_counts`.
    """
    counts = sample_counts(model, x, n, sigma, batch_size=batch_size, generator=generator, amp=amp,
                           channels_last=channels_last)
    top2 = counts.topk(2, dim=1)
    out = []
    for (count_a, count_b), (class_a, _) in zip(top2.values.tolist(), top2.indices.tolist()):
        p_value = binomtest(count_a, count_a + count_b, 0.5).pvalue if count_a + count_b > 0 else 1.0
        out.append(class_a if p_value <= alpha else ABSTAIN)
    return torch.tensor(out)


def certify(model: nn.Module, x: torch.Tensor, sigma: float, *, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000,
            generator: torch.Generator | ExampleRNG | None = None, amp: str = "off", channels_last: bool = False) -> dict:
    """Certify each image: ``{'prediction', 'radius', 'p_lower', 'count'}`` (tensors of length B).

    ``n0`` samples select the top class; ``n`` fresh samples bound its
    probability from below at confidence ``1 − alpha``. If the bound is below
    ½ the prediction is :data:`ABSTAIN` and the radius 0; otherwise the
    certified L2 radius (pixel units) is ``sigma·Φ⁻¹(p_lower)``. ``amp`` and
    ``channels_last`` as in :func:`sample_counts`.
    """
    if not 0.0 < alpha < 1.0:
        raise StableTrainError(f"alpha must be in (0, 1), got {alpha!r}")
    speed = {"amp": amp, "channels_last": channels_last}
    selection = sample_counts(model, x, n0, sigma, batch_size=batch_size, generator=generator, **speed)
    guess = selection.argmax(1)
    estimation = sample_counts(model, x, n, sigma, num_classes=selection.shape[1], batch_size=batch_size,
                               generator=generator, **speed)
    count = estimation.gather(1, guess.view(-1, 1)).view(-1)
    p_lower = torch.tensor([lower_confidence_bound(int(k), n, alpha) for k in count.tolist()], dtype=torch.float64)
    certified = p_lower >= 0.5
    radius = torch.where(certified, sigma * torch.from_numpy(norm.ppf(p_lower.clamp(max=1 - 1e-16).numpy())),
                         torch.zeros_like(p_lower))
    prediction = torch.where(certified, guess, torch.full_like(guess, ABSTAIN))
    return {"prediction": prediction, "radius": radius.clamp_min(0.0), "p_lower": p_lower, "count": count}


def certified_accuracy(radius: torch.Tensor, correct: torch.Tensor, radii: Sequence[float]) -> list[float]:
    """Fraction of examples certified correct with a radius of at least each ``r`` in ``radii``.

    Example:
        >>> certified_accuracy(torch.tensor([0.0, 0.3, 0.8]), torch.tensor([True, True, False]), [0.0, 0.5])
        [0.6666666666666666, 0.0]
    """
    radius, correct = torch.as_tensor(radius, dtype=torch.float64), torch.as_tensor(correct, dtype=torch.bool)
    return [float(((radius >= r) & correct).double().mean()) for r in radii]


def average_certified_radius(radius: torch.Tensor, correct: torch.Tensor) -> float:
    """ACR = mean(radius · correct): abstentions and wrong predictions count as radius 0."""
    radius, correct = torch.as_tensor(radius, dtype=torch.float64), torch.as_tensor(correct, dtype=torch.bool)
    return float((radius * correct).mean())


def certify_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, *, n0: int = 100,
                    n: int = 1000, alpha: float = 0.001, batch_size: int = 1000, max_examples: int | None = None,
                    radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                    generator: torch.Generator | ExampleRNG | None = None, chunk: int = 16, amp: str = "off",
                    channels_last: bool = False) -> dict:
    """Certify a test set in chunks; returns per-example results, certified accuracy per radius and the ACR.

    With an :class:`~stabletrain.seeding.ExampleRNG` of one stream per row of
    ``x`` (or at least per certified row), e.g.
    ``ExampleRNG.for_examples(range(len(x)), seed, 'smoothing')``, the noise
    of example ``i`` comes from stream ``i``, and the result is the same for
    every ``batch_size`` and ``chunk``. A :class:`torch.Generator` is drawn
    from chunk after chunk, so its result depends on both. ``amp`` and
    ``channels_last`` as in :func:`sample_counts`.
    """
    count = len(x) if max_examples is None else min(max_examples, len(x))
    if isinstance(generator, ExampleRNG) and len(generator) < count:
        raise StableTrainError(f"the noise's ExampleRNG has {len(generator)} streams for {count} examples")
    predictions, radius = [], []
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        result = certify(model, x[start:stop], sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                         generator=generator[start:stop] if isinstance(generator, ExampleRNG) else generator,
                         amp=amp, channels_last=channels_last)
        predictions.append(result["prediction"])
        radius.append(result["radius"])
    prediction, radius_t = torch.cat(predictions), torch.cat(radius)
    correct = prediction == y[:count].cpu()
    return {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "examples": count, "amp": amp,
            "channels_last": channels_last,
            "radii": list(radii), "certified_accuracy": certified_accuracy(radius_t, correct, radii),
            "acr": average_certified_radius(radius_t, correct),
            "abstain_rate": float((prediction == ABSTAIN).double().mean()),
            "prediction": prediction.tolist(), "radius": radius_t.tolist()}

