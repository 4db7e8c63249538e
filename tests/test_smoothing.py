import math

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from stabletrain.checks import StableTrainError
from stabletrain.seeding import ExampleRNG
from stabletrain.smoothing import (
    ABSTAIN,
    average_certified_radius,
    certified_accuracy,
    certify,
    lower_confidence_bound,
    predict,
    sample_counts,
)


@pytest.mark.parametrize("k, n, alpha", [(1, 10, 0.05), (50, 100, 0.001), (990, 1000, 0.001), (7, 7, 0.01)])
def test_confidence_bound_matches_a_direct_beta_quantile(k, n, alpha):
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12)
    if k == n:  # closed form of the Clopper–Pearson bound at full success
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert lower_confidence_bound(0, n, alpha) == 0.0


class Constant(nn.Module):
    def __init__(self, label=2, classes=4):
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.classes)
        logits[:, self.label] = 1.0
        return logits


class CoinFlip(nn.Module):
    """Class 0 or 1 by the sign of the noise at one pixel: a 50/50 tie between the top two classes."""

    def forward(self, x):
        positive = (x[:, 0, 0, 0] > 0.5).float()
        return torch.stack([positive, 1 - positive, torch.zeros_like(positive) - 1], dim=1)


def test_a_perfectly_robust_model_certifies_a_large_radius():
    x = torch.full((3, 1, 4, 4), 0.5)
    n, alpha, sigma = 2000, 0.001, 0.5
    result = certify(Constant(), x, sigma, n0=20, n=n, alpha=alpha, generator=torch.Generator().manual_seed(0))
    expected = sigma * norm.ppf(alpha ** (1 / n))
    assert result["prediction"].tolist() == [2, 2, 2]
    assert result["radius"].tolist() == pytest.approx([expected] * 3)
    assert expected > 1.2  # ≈ 2.7 σ


def test_abstains_when_the_top_two_classes_tie():
    x = torch.full((4, 1, 4, 4), 0.5)
    g = torch.Generator().manual_seed(0)
    assert predict(CoinFlip(), x, 0.25, n=2000, alpha=0.001, generator=g).tolist() == [ABSTAIN] * 4
    certified = certify(CoinFlip(), x, 0.25, n0=50, n=2000, alpha=0.001, generator=g)
    assert certified["prediction"].tolist() == [ABSTAIN] * 4 and certified["radius"].tolist() == [0.0] * 4
    assert predict(Constant(1), x, 0.25, n=200, generator=g).tolist() == [1] * 4


def test_counts_are_batched_and_seeded():
    x = torch.rand(3, 1, 4, 4)
    a = sample_counts(CoinFlip(), x, 37, 0.3, batch_size=10, generator=torch.Generator().manual_seed(1))
    b = sample_counts(CoinFlip(), x, 37, 0.3, batch_size=1000, generator=torch.Generator().manual_seed(1))
    assert a.sum(1).tolist() == [37] * 3 and b.sum(1).tolist() == [37] * 3
    with pytest.raises(StableTrainError, match="sigma"):
        sample_counts(CoinFlip(), x, 10, 0.0)


def test_certified_accuracy_and_acr():
    radius = torch.tensor([0.0, 0.2, 0.6, 1.0])
    correct = torch.tensor([True, True, True, False])
    assert certified_accuracy(radius, correct, [0.0, 0.1, 0.5, 1.0]) == [0.75, 0.5, 0.25, 0.0]
    assert average_certified_radius(radius, correct) == pytest.approx((0.2 + 0.6) / 4)
    assert not math.isnan(average_certified_radius(radius, correct))


class Threshold(nn.Module):
    """A small conv net whose class is decided by a linear read-out, to compare layouts and precisions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))


def _reference_counts(model, x, num, sigma, generator):
    """locuslab/smoothing core.py's loop, one batch per image: x repeated, N(0, σ²) noise, argmax, counts."""
    out = []
    with torch.no_grad():
        for image in x:
            batch = image.unsqueeze(0).repeat(num, 1, 1, 1)
            noise = torch.randn(batch.shape, generator=generator) * sigma
            out.append(torch.bincount(model(batch + noise).argmax(1), minlength=5))
    return torch.stack(out)


def test_counts_equal_the_reference_loop_on_the_same_noise():
    x = torch.rand(3, 3, 8, 8)
    expected = _reference_counts(Threshold(), x, 40, 0.25, torch.Generator().manual_seed(3))
    got = sample_counts(Threshold(), x, 40, 0.25, batch_size=40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, expected)


def test_channels_last_gives_the_same_counts_and_restores_the_model():
    x = torch.rand(4, 3, 8, 8)
    model = Threshold()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    streams = lambda: ExampleRNG.for_examples(range(4), 0, "smoothing")  # noqa: E731
    plain = sample_counts(model, x, 300, 0.3, batch_size=128, generator=streams())
    fast = sample_counts(model, x, 300, 0.3, batch_size=128, generator=streams(), channels_last=True)
    # the same noise through the same weights: only the convolution's summation order may differ
    assert (plain - fast).abs().sum() <= 2
    assert model.conv.weight.is_contiguous() and model.training  # layout and mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bf16_counts_stay_close_and_bad_options_are_rejected():
    x = torch.rand(4, 3, 8, 8)
    streams = lambda: ExampleRNG.for_examples(range(4), 0, "smoothing")  # noqa: E731
    plain = sample_counts(Threshold(), x, 500, 0.3, generator=streams())
    half = sample_counts(Threshold(), x, 500, 0.3, generator=streams(), amp="bf16")
    assert half.sum(1).tolist() == [500] * 4
    # bfloat16 rounding moves only predictions near a decision boundary: most of every image's votes agree
    assert (plain - half).abs().sum(1).max() <= 0.2 * 500
    with pytest.raises(StableTrainError, match="amp"):
        sample_counts(Threshold(), x, 10, 0.3, amp="fp8")
    with pytest.raises(StableTrainError, match="channels_last"):
        certify(Threshold(), x, 0.3, n0=5, n=10, channels_last="yes")
