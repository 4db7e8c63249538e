import math

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from stabletrain.checks import StableTrainError
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
