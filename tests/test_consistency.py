import numpy as np
import pytest
import torch
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.consistency import (
    AdversarialObjective,
    ConsistencyObjective,
    JSDObjective,
    TradesObjective,
    consistency_regularizer,
    js_divergence,
)
from stabletrain.objectives import available_methods, build_objective


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _logits(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(5, 4)) * 2 for _ in range(n)]


def test_js_divergence_matches_direct_computation():
    zs = _logits()
    ps = [_softmax(z) for z in zs]
    m = np.clip(sum(ps) / 3, 1e-7, 1)
    expected = np.mean([np.mean(np.sum(p * np.log(p / m), axis=1)) for p in ps])
    assert float(js_divergence(*[torch.tensor(z) for z in zs])) == pytest.approx(expected, rel=1e-5)


def test_consistency_regularizer_matches_direct_computation():
    zs = _logits(2, seed=1)
    ps = [_softmax(z) for z in zs]
    mean = sum(ps) / 2
    kl = np.mean([np.mean(np.sum(mean * np.log(mean / p), axis=1)) for p in ps])
    entropy = np.mean(-np.sum(mean * np.log(mean), axis=1))
    got = consistency_regularizer([torch.tensor(z) for z in zs], lam=20.0, eta=0.5)
    assert float(got) == pytest.approx(20 * kl + 0.5 * entropy, rel=1e-5)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def test_jsd_objective_uses_clean_task_loss_and_two_views():
    model, (x, y) = _model(), _batch()
    out = JSDObjective(lam=12.0, sigma=0.2)(model, x, y, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    views = [(x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1) for _ in range(2)]
    clean = model(x)
    expected = nn.functional.cross_entropy(clean, y) + 12 * js_divergence(clean, model(views[0]), model(views[1]))
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(out["task_loss"]) == pytest.approx(float(nn.functional.cross_entropy(clean, y).detach()))


def test_trades_objective_matches_its_definition():
    model, (x, y) = _model(), _batch()
    objective = TradesObjective(beta=6.0, epsilon=0.1, steps=5, step_size=0.03)
    x_adv = objective.adversarial(model, x, torch.Generator().manual_seed(2))
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    with torch.no_grad():
        p, q = torch.softmax(model(x), 1), torch.softmax(model(x_adv), 1)
        start = (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
        q0 = torch.softmax(model(start), 1)
    kl = lambda a, b: float((a * (a / b).log()).sum(1).mean())  # noqa: E731
    assert kl(p, q) > kl(p, q0)  # the inner maximization increased the KL
    out = objective(model, x, y, generator=torch.Generator().manual_seed(2))
    clean, adv = model(x), model(x_adv)
    expected = nn.functional.cross_entropy(clean, y) + 6.0 * (torch.softmax(clean, 1) * (
        torch.log_softmax(clean, 1) - torch.log_softmax(adv, 1))).sum(1).mean()
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_adversarial_objective_trains_on_pgd_examples():
    model, (x, y) = _model(), _batch()
    out = AdversarialObjective(epsilon=0.1, steps=5, step_size=0.03)(model, x, y,
                                                                     generator=torch.Generator().manual_seed(0))
    clean_loss = float(nn.functional.cross_entropy(model(x), y).detach())
    assert float(out["loss"].detach()) > clean_loss


def test_consistency_objective_matches_its_definition():
    model, (x, y) = _model(), _batch()
    out = ConsistencyObjective(sigma=0.25, copies=2, lam=20.0, eta=0.5)(model, x, y,
                                                                        generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    # unclipped noise, as in Jeong and Shin's code and in certification (stabletrain.smoothing)
    noisy = [x + 0.25 * torch.randn(x.shape, generator=g) for _ in range(2)]
    assert any(bool((n < 0).any() or (n > 1).any()) for n in noisy)  # so a clip would change the loss
    zs = [model(n) for n in noisy]
    expected = sum(nn.functional.cross_entropy(z, y) for z in zs) / 2 + consistency_regularizer(zs, 20.0, 0.5)
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_consistency_training_noise_is_the_certification_noise():
    """Training and certification see the same N(0, sigma^2) noise: neither clips."""
    from stabletrain.perturbations import randn_like

    objective = build_objective("consistency", sigma=0.25)
    x = torch.full((3, 1, 4, 4), 0.02)
    noisy = objective.perturbation(x, torch.Generator().manual_seed(1))
    assert torch.allclose(noisy, x + 0.25 * randn_like(x, torch.Generator().manual_seed(1)))
    assert bool((noisy < 0).any())


def test_methods_are_registered_with_documented_defaults():
    assert {"jsd", "trades", "adversarial", "consistency"} <= set(available_methods())
    assert build_objective("jsd").hyperparameters()["lambda"] == 12.0
    trades = build_objective("trades").hyperparameters()
    assert (trades["beta"], trades["epsilon"], trades["steps"], trades["step_size"]) == (6.0, 0.031, 10, 0.007)
    cons = build_objective("consistency", sigma=0.25).hyperparameters()
    assert (cons["copies"], cons["lambda"], cons["eta"]) == (2, 20.0, 0.5)
    with pytest.raises(StableTrainError, match="at least 2 noisy copies"):
        ConsistencyObjective(copies=1)
    with pytest.raises(StableTrainError, match="beta"):
        TradesObjective(beta=-1)
