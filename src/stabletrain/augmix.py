"""AugMix's augment-and-mix views (Hendrycks et al., ICLR 2020) as a batched torch perturbation.

A port of google-research/augmix (``augment_and_mix.py`` and
``augmentations.py``) that works on whole batches on the input's device.
Each example gets ``width`` augmentation chains; chain ``i`` applies
``depth`` operations (1 to 3 at random when ``depth=-1``) drawn uniformly
from :data:`OPERATIONS` at levels up to ``severity``, and the view is

``mixed = (1 - m) · x + m · Σ_i w_i · chain_i``, ``w ~ Dirichlet([alpha] * width)``, ``m ~ Beta(alpha, alpha)``.

The operations are the reference's ``augmentations`` list (not
``augmentations_all``): color, contrast, brightness and sharpness are left
out because they overlap the test corruptions. Each operation works on the
uint8-quantized image exactly as Pillow does (see :func:`apply_operation`);
the chains stay on the uint8 grid from the first operation to the last, as
the reference's Pillow training pipeline does.

Randomness: everything (depths, operations, levels, signs, Dirichlet and
Beta weights) is drawn from the ``generator`` passed to the call, with a
fixed number of draws per example, so the same generator state gives the
same views. Draws follow :mod:`stabletrain.perturbations`: a
:class:`torch.Generator` draws one row of numbers per example, so an
example's view depends on its position and the batch size (as with
:class:`~stabletrain.perturbations.GaussianNoise`), and inside
:func:`~stabletrain.perturbations.noise_shard` a shard gets its rows of the
global batch's draws; a :class:`~stabletrain.seeding.ExampleRNG` gives each
example its own stream, so its view depends on nothing but its seed.

Example:
    >>> augmix = AugMix()
    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> view = augmix(x, generator=torch.Generator().manual_seed(1))
    >>> view.shape, view.dtype, bool(view.min() >= 0 and view.max() <= 1)
    (torch.Size([2, 3, 16, 16]), torch.float32, True)
    >>> torch.equal(view, augmix(x, generator=torch.Generator().manual_seed(1)))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .checks import StableTrainError
from .perturbations import rand_like, randn_like
from .seeding import ExampleRNG

__all__ = ["AugMix", "AugMixPlan", "OPERATIONS", "apply_operation", "operation_parameter", "mix_chains"]

#: The operations of the reference's ``augmentations`` list, in its order (an operation's index in a plan).
OPERATIONS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
              "translate_y")
_PARAMETERLESS = ("autocontrast", "equalize")
_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
#: Marsaglia–Tsang tries per Gamma variate: each is accepted with probability >= 0.95, so all 12 fail with
#: probability < 0.05 ** 12 ≈ 2e-16 (the variate then falls back to the sampler's mode, ``d``).
_GAMMA_TRIES = 12


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 (Pillow computes in C doubles) wherever the device has it; float32 on MPS."""
    return torch.float32 if device.type == "mps" else torch.float64


# -- the level-to-parameter mapping of augmentations.py -------------------------------------------------------------

def _int_parameter(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return torch.trunc(level * maxval / 10)  # int(level * maxval / 10)


def _float_parameter(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return level * maxval / 10.0


def operation_parameter(name: str, level: torch.Tensor | float, flip: torch.Tensor | bool, height: int,
                        width: int) -> torch.Tensor:
    """The parameter that ``augmentations.py`` gives operation ``name`` at ``level`` (in (0, 10)).

    * ``posterize``: bits ``4 - int(level·4/10)``; ``solarize``: threshold ``256 - int(level·256/10)``;
    * ``rotate``: degrees ``int(level·30/10)``; ``shear_x``/``shear_y``: ``level·0.3/10``;
    * ``translate_x``/``translate_y``: pixels ``int(level·(size/3)/10)``, with the image's own width or
      height as ``size`` (the reference's ``IMAGE_SIZE``);
    * the signed ones are negated where ``flip`` is true (the reference's ``uniform() > 0.5``);
    * ``autocontrast`` and ``equalize`` take none (0).

    Example:
        >>> operation_parameter("rotate", torch.tensor([2.9, 2.9]), torch.tensor([False, True]), 32, 32)
        tensor([ 8., -8.], dtype=torch.float64)
    """
    if name not in OPERATIONS:
        raise StableTrainError(f"unknown AugMix operation {name!r}; known: {', '.join(OPERATIONS)}")
    level = torch.as_tensor(level, dtype=torch.float64)
    if name == "posterize":
        value = 4 - _int_parameter(level, 4)
    elif name == "solarize":
        value = 256 - _int_parameter(level, 256)
    elif name == "rotate":
        value = _int_parameter(level, 30)
    elif name in ("shear_x", "shear_y"):
        value = _float_parameter(level, 0.3)
    elif name == "translate_x":
        value = _int_parameter(level, width / 3)
    elif name == "translate_y":
        value = _int_parameter(level, height / 3)
    else:
        value = torch.zeros_like(level)
    if name in _SIGNED:
        value = torch.where(torch.as_tensor(flip, device=value.device), -value, value)
    return value


# -- the operations, on batches of uint8-valued images ------------------------------------------------------------

def _per_image(parameter: torch.Tensor | float | None, n: int, name: str) -> torch.Tensor:
    if parameter is None:
        raise StableTrainError(f"AugMix operation {name!r} needs a parameter")
    values = torch.as_tensor(parameter, dtype=torch.float64).detach().cpu().reshape(-1)
    if values.numel() == 1:
        values = values.expand(n)
    if values.numel() != n:
        raise StableTrainError(f"AugMix operation {name!r} needs one parameter per image ({n}), got {values.numel()}")
    if not bool(torch.isfinite(values).all()):
        raise StableTrainError(f"AugMix operation {name!r} got a parameter that is not finite")
    return values


def _autocontrast(v: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast``: each channel stretched from [lo, hi] to [0, 255], truncated as Pillow's int()."""
    n, c, h, w = v.shape
    flat = v.reshape(n * c, h * w).to(_work_dtype(v.device))
    lo = flat.amin(1, keepdim=True)
    hi = flat.amax(1, keepdim=True)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    scale = torch.full_like(span, 255.0) / span  # a true division: `255.0 / span` multiplies by a reciprocal
    offset = -lo * scale
    out = torch.trunc(flat * scale + offset).clamp_(0, 255)
    out = torch.where(hi > lo, out, flat)
    return out.reshape(n, c, h, w).to(v.dtype)


def _equalize(v: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: Pillow's per-channel lookup table, step ``(N - count of the top value) // 255``."""
    n, c, h, w = v.shape
    index = v.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=v.device)
    hist.scatter_add_(1, index, torch.ones_like(index))
    top = hist.gather(1, index.amax(1, keepdim=True))  # count of the highest value present (Pillow's histo[-1])
    step = torch.div(h * w - top, 255, rounding_mode="floor")
    identity = ((hist > 0).sum(1, keepdim=True) <= 1) | (step == 0)
    safe = torch.where(identity, torch.ones_like(step), step)
    before = torch.cumsum(hist, 1) - hist  # pixels strictly below each value
    lut = torch.div(torch.div(safe, 2, rounding_mode="floor") + before, safe, rounding_mode="floor").clamp_(0, 255)
    lut = torch.where(identity, torch.arange(256, device=v.device).expand(n * c, 256), lut)
    return lut.gather(1, index).reshape(n, c, h, w).to(v.dtype)


def _posterize(v: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize``: keep the top ``bits`` bits (1 to 8) of each value."""
    if bool(((bits < 1) | (bits > 8) | (bits != bits.round())).any()):
        raise StableTrainError(f"posterize bits must be integers in 1..8, got {bits.unique().tolist()}")
    shift = (8 - bits).long().to(v.device).view(-1, 1, 1, 1)
    return ((v.long() >> shift) << shift).to(v.dtype)


def _solarize(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize``: values at or above ``threshold`` become ``255 - value``."""
    t = threshold.to(device=v.device, dtype=v.dtype).view(-1, 1, 1, 1)
    return torch.where(v < t, v, 255 - v)


def _rotation_coefficients(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """The inverse affine map of ``Image.rotate(degrees)`` about the centre (Pillow's own arithmetic)."""
    cx, cy = width / 2, height / 2
    angle = -math.radians(degrees % 360.0)
    a, b, d, e = (round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15),
                  round(math.cos(angle), 15))
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    return a, b, c, d, e, f


def _affine(v: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)`` on each image.

    Output pixel ``(x, y)`` samples the input at ``(a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f)``
    (pixel centres); a sample outside ``[0, W) × [0, H)`` is 0; inside, the four neighbours of the
    sample (clamped to the border) are interpolated and the result truncated, all as Pillow's C code
    does it in doubles.
    """
    n, c, h, w = v.shape
    dtype = _work_dtype(v.device)
    k = coefficients.to(device=v.device, dtype=dtype).view(n, 6, 1, 1)
    xs = (torch.arange(w, device=v.device, dtype=dtype) + 0.5).view(1, 1, w)
    ys = (torch.arange(h, device=v.device, dtype=dtype) + 0.5).view(1, h, 1)
    xin = k[:, 0] * xs + k[:, 1] * ys + k[:, 2]
    yin = k[:, 3] * xs + k[:, 4] * ys + k[:, 5]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xin, yin = xin - 0.5, yin - 0.5
    x0, y0 = torch.floor(xin), torch.floor(yin)
    dx, dy = xin - x0, yin - y0
    # far-away samples are masked out; clamp before the cast so that no coordinate overflows
    x0 = x0.clamp(-1, w).long()
    y0 = y0.clamp(-1, h).long()
    xa, xb = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    ya, yb = y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)
    flat = v.reshape(n, c, h * w).to(dtype)

    def pick(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (yy * w + xx).reshape(n, 1, h * w).expand(n, c, h * w)).reshape(n, c, h, w)

    dx, dy = dx.unsqueeze(1), dy.unsqueeze(1)
    p00, p01 = pick(ya, xa), pick(ya, xb)
    top = p00 + (p01 - p00) * dx
    p10, p11 = pick(yb, xa), pick(yb, xb)
    bottom = p10 + (p11 - p10) * dx
    value = torch.floor(top + (bottom - top) * dy)  # (UINT8)v of a non-negative double
    return torch.where(inside.unsqueeze(1), value, torch.zeros_like(value)).to(v.dtype)


def apply_operation(images: torch.Tensor, name: str, parameter: torch.Tensor | float | None = None) -> torch.Tensor:
    """Apply AugMix operation ``name`` to a batch of uint8-valued images, as Pillow does.

    Args:
        images: ``N×C×H×W`` floating point tensor holding integers in 0..255 (a uint8 image as floats);
            each channel is treated as one Pillow band (C = 1 is mode ``L``, C = 3 is ``RGB``).
        name: one of :data:`OPERATIONS`.
        parameter: one value, or one per image, as :func:`operation_parameter` gives it: bits
            (``posterize``), threshold (``solarize``), degrees counter-clockwise (``rotate``), shear
            factor (``shear_x``: ``transform(AFFINE, (1, s, 0, 0, 1, 0))``, ``shear_y``:
            ``(1, 0, 0, s, 1, 0)``), pixels (``translate_x``: ``(1, 0, t, 0, 1, 0)``, ``translate_y``:
            ``(1, 0, 0, 0, 1, t)``); ignored by ``autocontrast`` and ``equalize``.

    Returns:
        The transformed images, same shape and dtype, still integers in 0..255. The geometric
        operations use bilinear resampling with Pillow's conventions (the affine map sends output
        pixel centres to input coordinates; 0 outside); ``rotate`` is ``Image.rotate(degrees,
        resample=BILINEAR)`` about the image centre, an identity copy at 0 degrees.

    Example:
        >>> x = torch.tensor([[[[10.0, 200.0], [30.0, 90.0]]]])
        >>> apply_operation(x, "solarize", 128)
        tensor([[[[10., 55.],
                  [30., 90.]]]])
    """
    if name not in OPERATIONS:
        raise StableTrainError(f"unknown AugMix operation {name!r}; known: {', '.join(OPERATIONS)}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise StableTrainError("AugMix operations take N×C×H×W floating point images holding values 0..255")
    n, _, h, w = images.shape
    if n == 0:
        return images.clone()
    if name == "autocontrast":
        return _autocontrast(images)
    if name == "equalize":
        return _equalize(images)
    values = _per_image(parameter, n, name)
    if name == "posterize":
        return _posterize(images, values)
    if name == "solarize":
        return _solarize(images, values)
    if name == "rotate":
        coefficients = torch.empty(n, 6, dtype=torch.float64)
        for degrees in values.unique().tolist():
            coefficients[values == degrees] = torch.tensor(_rotation_coefficients(degrees, w, h), dtype=torch.float64)
        out = _affine(images, coefficients)
        still = (values % 360.0) == 0  # Pillow returns a copy at 0 degrees
        if bool(still.any()):
            out[still.to(out.device)] = images[still.to(images.device)]
        return out
    coefficients = torch.zeros(n, 6, dtype=torch.float64)
    coefficients[:, 0] = coefficients[:, 4] = 1.0
    slot = {"shear_x": 1, "shear_y": 3, "translate_x": 2, "translate_y": 5}[name]
    coefficients[:, slot] = values
    return _affine(images, coefficients)


# -- the mixing ------------------------------------------------------------------------------------------------------

def mix_chains(x: torch.Tensor, chains: torch.Tensor, weights: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """AugMix's mixture ``(1 - m)·x + m·Σ_i w_i·chain_i``, per example.

    Args:
        x: clean images, ``B×C×H×W``.
        chains: the chains' outputs, ``B×width×C×H×W``, same scale as ``x``.
        weights: chain weights ``w``, ``B×width`` (a Dirichlet draw in AugMix).
        mix: the weight ``m`` of the chains, ``B`` (a Beta draw in AugMix).

    Example:
        >>> x = torch.zeros(1, 1, 1, 1)
        >>> chains = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1, 1)
        >>> mix_chains(x, chains, torch.tensor([[0.25, 0.75]]), torch.tensor([0.5])).flatten()
        tensor([0.3125])
    """
    w = weights.to(device=chains.device, dtype=chains.dtype).view(*weights.shape, 1, 1, 1)
    m = mix.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    return (1 - m) * x + m * (w * chains).sum(1)


# -- the random plan -------------------------------------------------------------------------------------------------

@dataclass
class AugMixPlan:
    """Every random choice of one AugMix call, per example (on the CPU).

    Attributes:
        depths: ``B×width`` operations in each chain.
        operations: ``B×width×max_depth`` indices into :data:`OPERATIONS` (steps past a chain's depth unused).
        parameters: ``B×width×max_depth`` float64 parameters of those operations (see :func:`operation_parameter`).
        weights: ``B×width`` float64 chain weights (Dirichlet).
        mix: ``B`` float64 weights of the chains against the clean image (Beta).
    """

    depths: torch.Tensor
    operations: torch.Tensor
    parameters: torch.Tensor
    weights: torch.Tensor
    mix: torch.Tensor


def _log_gamma_variates(alpha: float, normals: torch.Tensor, uniforms: torch.Tensor,
                        boost: torch.Tensor) -> torch.Tensor:
    """log of Gamma(alpha, 1) variates by Marsaglia and Tsang (2000) from fixed draws (one row per variate).

    ``normals`` and ``uniforms`` hold ``_GAMMA_TRIES`` tries per variate; the first accepted one is used.
    For ``alpha < 1`` the variate of ``alpha + 1`` is scaled by ``U^(1/alpha)`` (in logs, so that tiny
    values cannot underflow to 0).
    """
    a = alpha if alpha >= 1.0 else alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    v = (1.0 + c * normals) ** 3
    positive = v > 0
    log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
    accept = positive & (torch.log(uniforms) < 0.5 * normals ** 2 + d - d * v + d * log_v)
    first = accept.to(torch.int8).argmax(1, keepdim=True)
    chosen = torch.where(accept.any(1, keepdim=True), log_v.gather(1, first), torch.zeros_like(first, dtype=v.dtype))
    log_g = math.log(d) + chosen.squeeze(1)
    if alpha < 1.0:
        log_g = log_g + torch.log1p(-boost) / alpha  # U = 1 - boost lies in (0, 1]
    return log_g


def _generator_device(generator: torch.Generator | ExampleRNG | None) -> torch.device:
    if generator is None:
        return torch.device("cpu")
    return torch.device(generator.device)


class AugMix(nn.Module):
    """AugMix's augment-and-mix perturbation: ``x' = (1 - m)·x + m·Σ_i w_i·chain_i(x)``.

    Args:
        width: augmentation chains per example (3).
        depth: operations per chain; ``-1`` (default) draws 1, 2 or 3 for each chain.
        severity: the highest operation level, an integer in 1..10 (3); levels are drawn
            uniformly in ``[0.1, severity)``.
        alpha: concentration of ``w ~ Dirichlet([alpha] * width)`` and ``m ~ Beta(alpha, alpha)`` (1).

    Images are ``B×C×H×W`` floats in [0, 1] (values outside are clipped first, as the reference's
    ``np.clip`` does); any channel count works, each channel being one Pillow band. The chains work on
    ``round(255·x)``; the clean term uses ``x`` itself. The output has the input's shape, dtype and
    device and lies in [0, 1]. It carries gradients to ``x`` only through the clean term. See the module
    docstring for how results depend on the generator and the batch size.

    Example:
        >>> x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> AugMix(severity=5)(x, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 8, 8])
        >>> AugMix(width=0)
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: augmix width must be an integer >= 1 (chains per example), got 0
    """

    def __init__(self, width: int = 3, depth: int = -1, severity: int = 3, alpha: float = 1.0) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise StableTrainError(f"augmix width must be an integer >= 1 (chains per example), got {width!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not (depth == -1 or depth >= 1):
            raise StableTrainError(f"augmix depth must be -1 (1 to 3 at random) or an integer >= 1, got {depth!r}")
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 10:
            raise StableTrainError(f"augmix severity must be an integer in 1..10, got {severity!r}")
        try:
            value = float(alpha)
        except (TypeError, ValueError):
            raise StableTrainError(f"augmix alpha must be a finite number > 0, got {alpha!r}") from None
        if isinstance(alpha, bool) or not 0.0 < value < float("inf"):
            raise StableTrainError(f"augmix alpha must be a finite number > 0, got {alpha!r}")
        self.width, self.depth, self.severity, self.alpha = width, depth, severity, value

    @property
    def max_depth(self) -> int:
        """The longest chain: ``depth``, or 3 when it is drawn."""
        return self.depth if self.depth > 0 else 3

    def _columns(self) -> tuple[int, int]:
        steps = self.width * self.max_depth
        gammas = self.width + 2
        return self.width + 3 * steps + gammas * (_GAMMA_TRIES + 1), gammas * _GAMMA_TRIES

    def sample(self, batch: int, size: tuple[int, int], generator: torch.Generator | ExampleRNG | None = None
               ) -> AugMixPlan:
        """Draw the random choices for ``batch`` images of ``size = (height, width)``.

        Every example takes the same number of draws: one uniform row and one normal row of fixed
        length, drawn as :func:`~stabletrain.perturbations.rand_like` and
        :func:`~stabletrain.perturbations.randn_like` draw noise (so per-example streams and noise
        shards apply). The draws are made on the generator's device and the plan kept on the CPU.

        Example:
            >>> plan = AugMix().sample(2, (32, 32), torch.Generator().manual_seed(0))
            >>> plan.operations.shape, bool(torch.allclose(plan.weights.sum(1), torch.ones(2, dtype=torch.float64)))
            (torch.Size([2, 3, 3]), True)
        """
        height, image_width = size
        n_uniform, n_normal = self._columns()
        device = _generator_device(generator)
        template = torch.empty(batch, n_uniform, dtype=torch.float64, device=device)
        u = rand_like(template, generator).cpu()
        z = randn_like(torch.empty(batch, n_normal, dtype=torch.float64, device=device), generator).cpu()
        w, steps = self.width, self.width * self.max_depth
        depth_u, rest = u[:, :w], u[:, w:]
        op_u, level_u, sign_u, rest = rest[:, :steps], rest[:, steps:2 * steps], rest[:, 2 * steps:3 * steps], \
            rest[:, 3 * steps:]
        gammas = w + 2
        accept_u, boost_u = rest[:, :gammas * _GAMMA_TRIES], rest[:, gammas * _GAMMA_TRIES:]

        if self.depth > 0:
            depths = torch.full((batch, w), self.depth, dtype=torch.long)
        else:
            depths = (1 + torch.floor(depth_u * 3)).long().clamp_(1, 3)  # np.random.randint(1, 4)
        shape = (batch, w, self.max_depth)
        operations = torch.floor(op_u * len(OPERATIONS)).long().clamp_(0, len(OPERATIONS) - 1).reshape(shape)
        levels = (0.1 + (self.severity - 0.1) * level_u).reshape(shape)  # np.random.uniform(0.1, severity)
        flips = (sign_u > 0.5).reshape(shape)
        parameters = torch.zeros(shape, dtype=torch.float64)
        for index, name in enumerate(OPERATIONS):
            chosen = operations == index
            parameters = torch.where(chosen, operation_parameter(name, levels, flips, height, image_width), parameters)

        log_g = _log_gamma_variates(self.alpha, z.reshape(batch * gammas, _GAMMA_TRIES),
                                    accept_u.reshape(batch * gammas, _GAMMA_TRIES),
                                    boost_u.reshape(batch * gammas)).reshape(batch, gammas)
        weights = torch.softmax(log_g[:, :w], dim=1)  # Dirichlet([alpha] * width)
        mix = torch.sigmoid(log_g[:, w] - log_g[:, w + 1])  # G1 / (G1 + G2) ~ Beta(alpha, alpha)
        return AugMixPlan(depths=depths, operations=operations, parameters=parameters, weights=weights, mix=mix)

    def chains(self, x: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
        """The chains of ``plan`` applied to ``x``: ``B×width×C×H×W`` in [0, 1], multiples of 1/255."""
        b, c, h, w = x.shape
        if tuple(plan.depths.shape) != (b, self.width):
            raise StableTrainError(f"the AugMix plan is for {tuple(plan.depths.shape)} chains, not {b} images × "
                                   f"width {self.width}")
        quantized = torch.round(x.detach().float().clamp(0.0, 1.0) * 255.0)
        chains = quantized.unsqueeze(1).expand(b, self.width, c, h, w).reshape(b * self.width, c, h, w).clone()
        depths = plan.depths.reshape(-1)
        operations = plan.operations.reshape(b * self.width, -1)
        parameters = plan.parameters.reshape(b * self.width, -1)
        for step in range(operations.shape[1]):
            active = depths > step
            for index, name in enumerate(OPERATIONS):
                rows = torch.nonzero(active & (operations[:, step] == index)).squeeze(1)  # on the CPU: no device sync
                if rows.numel() == 0:
                    continue
                on_device = rows.to(x.device)
                chains[on_device] = apply_operation(chains[on_device], name, parameters[rows, step])
        return (chains / 255.0).reshape(b, self.width, c, h, w)

    def forward(self, x: torch.Tensor, generator: torch.Generator | ExampleRNG | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise StableTrainError(f"AugMix takes B×C×H×W floating point images in [0, 1], got "
                                   f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                                   f"{' of dtype ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}")
        if x.shape[0] == 0 or x.numel() == 0:
            return x.clone()
        plan = self.sample(x.shape[0], (x.shape[2], x.shape[3]), generator)
        chains = self.chains(x, plan)
        compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        mixed = mix_chains(x.to(compute), chains.to(compute), plan.weights, plan.mix)
        return mixed.clamp(0.0, 1.0).to(x.dtype)

    def extra_repr(self) -> str:
        return f"width={self.width}, depth={self.depth}, severity={self.severity}, alpha={self.alpha}"
