"""Adversarial attacks in [0, 1] pixel space: FGSM, PGD (L∞ and L2) and a sparse L0 attack.

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
  attack on an example then does not depend on the batch it is in);
* :func:`robustness_curve` evaluates several epsilons in one call.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
>>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
>>> result = pgd(model, x, y, epsilon=0.1, steps=5, generator=torch.Generator().manual_seed(0))
>>> bool((result.adversarial - x).abs().max() <= 0.1 + 1e-6), result.success.shape
(True, torch.Size([4]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import StableTrainError, check_images, check_nonnegative
from .devices import device_of as _device, eval_mode
from .seeding import ExampleRNG, draw

__all__ = ["AttackResult", "fgsm", "pgd", "sparse_l0", "robustness_curve", "ATTACKS", "build_attack", "maximize_loss"]


@dataclass
class AttackResult:
    """The adversarial batch, which examples the attack fooled, and the final predictions.

    ``success`` includes the examples misclassified (untargeted) or already
    classified as the target (targeted) on the clean input: the clean image
    is a point of every ball, so the attack needs no step to fool the model
    there, and ``adversarial`` holds the clean image for them.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    epsilon: float




def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        kind = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise StableTrainError(f"the model must return a B×K logits tensor, got {kind}")
    return out


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, target: torch.Tensor | None,
             name: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    if not isinstance(model, nn.Module):
        raise StableTrainError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(x)
    epsilon = check_nonnegative(epsilon, name)
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
    device = _device(model)
    if target is not None:
        target = torch.as_tensor(target).to(device)
        if target.shape != y.shape:
            raise StableTrainError(f"targets must be a vector of {len(x)} class indices, got {tuple(target.shape)}")
    return x.detach().to(device), y.to(device), target, epsilon


def _loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The quantity the attack ascends, summed so each example's gradient is its own."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="sum")
    return -F.cross_entropy(logits, target, reduction="sum")


def _succeeded(predictions: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return predictions != y if target is None else predictions == target


@torch.no_grad()
def _record(candidate: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
            best: torch.Tensor, predictions: torch.Tensor, success: torch.Tensor) -> None:
    """Keep the first iterate that fools the model, for each example not fooled yet (in place)."""
    predicted = logits.argmax(1)
    fooled = _succeeded(predicted, y, target) & ~success
    best[fooled] = candidate[fooled]
    predictions[fooled] = predicted[fooled]
    success |= fooled


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                    loss_fn: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logits = _logits(model, x)
    loss = loss_fn(logits, y, target) if loss_fn is not None else _loss(logits, y, target)
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *,
         target: torch.Tensor | None = None) -> AttackResult:
    """Fast gradient sign method: ``clip(x + ε·sign(∇ₓ L), 0, 1)`` (targeted: ``x − ε·sign(∇ₓ L(target))``).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> out = fgsm(model, torch.full((1, 1, 2, 2), 0.5), torch.tensor([0]), epsilon=0.1)
        >>> bool(torch.allclose((out.adversarial - 0.5).abs(), torch.tensor(0.1)))
        True
    """
    x, y, target, epsilon = _prepare(model, x, y, epsilon, target)
    with eval_mode(model):
        grad, clean_logits = _input_gradient(model, x, y, target, None)
        adversarial = (x + epsilon * grad.sign()).clamp(0.0, 1.0).detach()
        with torch.no_grad():
            predictions = _logits(model, adversarial).argmax(1)
    # the gradient's forward pass scored the clean input: where it already fools the model and the step does not,
    # the clean image is the adversarial
    clean_predictions = clean_logits.argmax(1)
    clean_fooled = _succeeded(clean_predictions, y, target) & ~_succeeded(predictions, y, target)
    adversarial[clean_fooled] = x[clean_fooled]
    predictions = torch.where(clean_fooled, clean_predictions, predictions)
    return AttackResult(adversarial, _succeeded(predictions, y, target), predictions, epsilon)


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project(delta: torch.Tensor, x: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        delta = delta * torch.clamp(epsilon / (_l2_norm(delta) + 1e-12), max=1.0)
    # Clipping x + δ into [0, 1] never increases |δ| in any coordinate, so the ball constraint still holds.
    return (x + delta).clamp(0.0, 1.0) - x


def _random_start(x: torch.Tensor, epsilon: float, norm: str,
                  generator: torch.Generator | ExampleRNG | None) -> torch.Tensor:
    """A uniform point of the ε-ball around each image (L2: uniform direction, uniform radius)."""
    if norm == "linf":
        return (draw(torch.rand, x.shape, generator, x.device, x.dtype) * 2 - 1) * epsilon
    direction = draw(torch.randn, x.shape, generator, x.device, x.dtype)
    radius = draw(torch.rand, (x.shape[0],) + (1,) * (x.ndim - 1), generator, x.device, x.dtype)
    return direction / (_l2_norm(direction) + 1e-12) * radius * epsilon


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        target: torch.Tensor | None = None, generator: torch.Generator | ExampleRNG | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None) -> AttackResult:
    """Projected gradient descent (Madry et al.) under an L∞ or L2 ball, with restarts.

    Each step moves by ``step_size`` along the gradient's sign (L∞) or its
    normalized direction (L2), then projects onto the ε-ball around ``x`` and
    the [0, 1] box. An example counts as fooled if any iterate of any restart
    fooled the model; that iterate is returned. The others return the last
    iterate of the restart with the highest loss. The clean input is scored
    first (one forward pass without gradient), so an example the model gets
    wrong without attack is fooled, at the clean image, even with a random
    start.

    Args:
        epsilon: radius of the ball in [0, 1] pixel units (L∞) or in the L2
            norm of the whole image.
        norm: ``'linf'`` or ``'l2'``.
        steps: gradient steps per restart.
        step_size: defaults to ``2.5 * epsilon / steps`` (Madry et al.).
        random_start: start each restart at a uniform point of the ball.
        restarts: independent restarts; later ones only matter for examples
            not yet fooled.
        target: class indices for a targeted attack (minimize their loss).
        generator: randomness of the starts: a :class:`torch.Generator`, or an
            :class:`~stabletrain.seeding.ExampleRNG` with one stream per
            example (the result of an example is then independent of its batch).
        loss_fn: ``(logits, y, target) -> scalar`` to ascend instead of the
            summed cross-entropy (TRADES uses a KL here).
    """
    if norm not in ("linf", "l2"):
        raise StableTrainError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if int(steps) < 1 or int(restarts) < 1:
        raise StableTrainError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    x, y, target, epsilon = _prepare(model, x, y, epsilon, target)
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not 0.0 <= float(step_size) < math.inf:
        raise StableTrainError(f"step size must be a finite number >= 0, got {step_size!r}")
    with eval_mode(model):
        best = x.clone()
        # Score the clean input: with a random start no iterate is the clean image, and an example the model gets
        # wrong there must count as fooled (robust accuracy can never exceed clean accuracy).
        with torch.no_grad():
            predictions = _logits(model, x).argmax(1)
        success = _succeeded(predictions, y, target)
        if epsilon == 0.0:
            return AttackResult(best, success, predictions, epsilon)
        best_loss = torch.full((len(x),), -math.inf, device=x.device)
        for _ in range(int(restarts)):
            if bool(success.all()):
                break
            delta = _project(_random_start(x, epsilon, norm, generator), x, epsilon, norm) if random_start \
                else torch.zeros_like(x)
            for _ in range(int(steps)):
                # The forward pass of the gradient also scores the current iterate: no extra pass per step.
                grad, logits = _input_gradient(model, x + delta, y, target, loss_fn)
                _record(x + delta, logits, y, target, best, predictions, success)
                if norm == "linf":
                    delta = delta + step_size * grad.sign()
                else:
                    delta = delta + step_size * grad / (_l2_norm(grad) + 1e-12)
                delta = _project(delta, x, epsilon, norm).detach()
            with torch.no_grad():
                logits = _logits(model, x + delta)
                _record(x + delta, logits, y, target, best, predictions, success)
                per_example = F.cross_entropy(logits, y if target is None else target, reduction="none")
                per_example = per_example if target is None else -per_example
                better = ~success & (per_example > best_loss)
                best[better] = (x + delta)[better]
                predictions[better] = logits.argmax(1)[better]
                best_loss = torch.where(better, per_example, best_loss)
    return AttackResult(best.detach(), success, predictions, epsilon)


def _pixel_topk_mask(delta: torch.Tensor, k: int) -> torch.Tensor:
    """A B×1×H×W mask of the k pixels (spatial positions) with the largest perturbation."""
    magnitude = delta.abs().sum(dim=1).flatten(1)
    k = min(k, magnitude.shape[1])
    index = magnitude.topk(k, dim=1).indices
    mask = torch.zeros_like(magnitude).scatter_(1, index, 1.0)
    return mask.view(delta.shape[0], 1, *delta.shape[2:])


def sparse_l0(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, *, steps: int = 20,
              step_size: float = 0.5, restarts: int = 1, target: torch.Tensor | None = None,
              generator: torch.Generator | ExampleRNG | None = None) -> AttackResult:
    """A sparse attack that changes at most ``k`` pixels per image (PGD₀, Croce and Hein 2019).

    A pixel is a spatial position; all its channels may change, to any value
    in [0, 1]. Each step follows the input gradient (scaled so its largest
    entry moves ``step_size``), clips to the box and keeps only the ``k``
    pixels with the largest change. Random starts perturb ``k`` random pixels.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(3, 1, 4, 4)
        >>> out = sparse_l0(model, x, torch.tensor([0, 1, 0]), k=2, steps=3)
        >>> int(((out.adversarial - x).abs() > 0).flatten(1).sum(1).max()) <= 2
        True
    """
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise StableTrainError(f"k must be an integer number of pixels >= 0, got {k!r}")
    k = int(k)
    if int(steps) < 1 or int(restarts) < 1:
        raise StableTrainError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    x, y, target, _ = _prepare(model, x, y, float(k), target, name="k")
    with eval_mode(model):
        with torch.no_grad():
            predictions = _logits(model, x).argmax(1)
        best = x.clone()
        success = _succeeded(predictions, y, target)
        if k == 0:
            return AttackResult(best, success, predictions, 0.0)
        for _ in range(int(restarts)):
            if bool(success.all()):
                break
            noise = draw(torch.rand, x.shape, generator, x.device, x.dtype)
            delta = noise - x
            chosen = draw(torch.rand, delta[:, :1].shape, generator, x.device)
            delta = delta * _pixel_topk_mask(chosen, k)
            for _ in range(int(steps)):
                grad, logits = _input_gradient(model, x + delta, y, target, None)
                _record(x + delta, logits, y, target, best, predictions, success)
                scale = grad.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1) + 1e-12
                delta = ((x + delta + step_size * grad / scale).clamp(0.0, 1.0) - x).detach()
                delta = delta * _pixel_topk_mask(delta, k)
            with torch.no_grad():
                _record(x + delta, _logits(model, x + delta), y, target, best, predictions, success)
    return AttackResult(best.detach(), success, predictions, float(k))


ATTACKS = ("fgsm", "pgd", "pgd-l2", "l0")


def build_attack(name: str, **options: object) -> Callable[..., AttackResult]:
    """An attack by name, as ``f(model, x, y, epsilon, generator=...)``; ``l0`` reads epsilon as k pixels."""
    if name == "fgsm":
        return lambda model, x, y, eps, generator=None, target=None: fgsm(model, x, y, eps, target=target)
    if name in ("pgd", "pgd-linf"):
        return lambda model, x, y, eps, generator=None, target=None: pgd(
            model, x, y, eps, norm="linf", generator=generator, target=target, **options)
    if name == "pgd-l2":
        return lambda model, x, y, eps, generator=None, target=None: pgd(
            model, x, y, eps, norm="l2", generator=generator, target=target, **options)
    if name == "l0":
        return lambda model, x, y, eps, generator=None, target=None: sparse_l0(
            model, x, y, int(eps), generator=generator, target=target, **options)
    raise StableTrainError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *,
                     attack: str = "pgd", batch_size: int = 256, generator: torch.Generator | ExampleRNG | None = None,
                     progress: Callable[[str], None] | None = None, **options: object) -> list[dict]:
    """Robust accuracy at each epsilon in one call.

    Returns one row per epsilon, in the order given: ``{'attack', 'epsilon',
    'clean_accuracy', 'robust_accuracy', 'robust_accuracy_at_epsilon',
    'success_rate', 'n'}``.

    * An example is **robust at ε** if the model classifies it correctly clean
      and the attack failed on it at ε **and at every smaller ε of this
      curve**: an example broken at a smaller budget is broken at every larger
      one, because its adversarial is inside every larger ball.
      ``robust_accuracy`` is the fraction of robust examples: never above
      ``clean_accuracy``, and non-increasing in ε (the cumulation runs over
      the sorted epsilons, per example).
    * ``robust_accuracy_at_epsilon`` is the same without the cumulation:
      clean-correct and not fooled by the attack run at this ε alone (also
      never above the clean accuracy, but a weaker attack at a larger ε can
      make it rise).
    * ``success_rate`` is the fraction of clean-correct examples that are not
      robust at ε (cumulative, like ``robust_accuracy``).

    Random starts: pass an :class:`~stabletrain.seeding.ExampleRNG` with one
    stream per row of ``x`` (e.g. ``ExampleRNG.for_examples(range(len(x)),
    seed, 'attack', name)``) and each example's starts come from its own
    stream, restarted for every ε (common random numbers along the curve), so
    the curve does not depend on ``batch_size``. A :class:`torch.Generator`
    is drawn from batch after batch and its result does depend on it.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> curve = robustness_curve(model, torch.rand(8, 1, 4, 4), torch.arange(8) % 3, [0.0, 0.1], steps=3)
        >>> [row["epsilon"] for row in curve]
        [0.0, 0.1]
    """
    run = build_attack(attack, **options)
    for eps in epsilons:
        if not (isinstance(eps, (int, float)) and 0 <= eps < math.inf):
            raise StableTrainError(f"epsilons must be finite numbers >= 0, got {eps!r}")
    check_images(x)
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise StableTrainError(f"labels must be a vector of {len(x)} class indices, got shape {tuple(y.shape)}")
    per_example = isinstance(generator, ExampleRNG)
    if per_example and len(generator) != len(x):
        raise StableTrainError(f"the attack's ExampleRNG has {len(generator)} streams for {len(x)} examples")
    n = len(x)
    labels = y.cpu()
    # the clean predictions, once: robust implies clean-correct
    correct = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad(), eval_mode(model):
        device = _device(model)
        for start in range(0, n, batch_size):
            predicted = _logits(model, x[start:start + batch_size].to(device)).argmax(1).cpu()
            correct[start:start + batch_size] = predicted == labels[start:start + batch_size]
    clean_correct = int(correct.sum())
    fooled_at: dict[int, torch.Tensor] = {}
    for position, eps in enumerate(epsilons):
        fooled = torch.zeros(n, dtype=torch.bool)
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            # fresh per-example streams at every ε, from the same seeds: each example's starts are a function of its
            # seed only, whatever the batch it lands in
            gen = ExampleRNG(generator.seeds[start:start + batch_size], generator.device) if per_example else generator
            result = run(model, xb, yb, eps, generator=gen)
            fooled[start:start + len(xb)] = result.success.cpu()
        fooled_at[position] = fooled
    # cumulative over the sorted epsilons: broken at a smaller ε means broken at every larger one
    order = sorted(range(len(epsilons)), key=lambda i: float(epsilons[i]))
    broken = ~correct
    cumulative: dict[int, torch.Tensor] = {}
    for position in order:
        broken = broken | fooled_at[position]
        cumulative[position] = broken.clone()
    rows = []
    for position, eps in enumerate(epsilons):
        robust = int((~cumulative[position]).sum())
        pointwise = int((correct & ~fooled_at[position]).sum())
        rows.append({"attack": attack, "epsilon": float(eps), "clean_accuracy": clean_correct / n if n else 0.0,
                     "robust_accuracy": robust / n if n else 0.0,
                     "robust_accuracy_at_epsilon": pointwise / n if n else 0.0,
                     "success_rate": (clean_correct - robust) / clean_correct if clean_correct else 0.0, "n": n})
        if progress is not None:
            progress(f"{attack} ε={eps:g}: robust accuracy {rows[-1]['robust_accuracy']:.3f}")
    return rows


def maximize_loss(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
                  epsilon: float, steps: int, step_size: float, start: torch.Tensor | None = None) -> torch.Tensor:
    """The last iterate of L∞ PGD that ascends ``loss_fn(logits)``: the inner step of adversarial training.

    Unlike :func:`pgd`, it returns the final iterate (not the first that
    fools the model) and needs no labels, which is what TRADES and Madry
    training use. The model runs in eval mode and its mode is restored; the
    result is detached.

    Args:
        loss_fn: maps the logits of the current iterate to a scalar to ascend.
        start: the first iterate (default ``x``); it is projected into the ball.
    """
    x = x.detach()
    current = x.clone() if start is None else (x + (start.detach() - x).clamp(-epsilon, epsilon)).clamp(0.0, 1.0)
    with eval_mode(model):
        for _ in range(int(steps)):
            current.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(_logits(model, current)), current)
            current = current.detach() + step_size * grad.sign()
            current = (x + (current - x).clamp(-epsilon, epsilon)).clamp(0.0, 1.0)
    return current.detach()
