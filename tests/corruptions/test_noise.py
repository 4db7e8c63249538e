"""Noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from stabletrain.corruptions import PARAMETER_SETS, Corruption, corrupt

from ._support import gen


def _clipped_normal_std(mean: float, sigma: float) -> float:
    """Standard deviation of clip(mean + sigma·Z, 0, 1), by quadrature."""
    z = np.linspace(-12, 12, 200001)
    weights = stats.norm.pdf(z)
    weights /= weights.sum()
    values = np.clip(mean + sigma * z, 0.0, 1.0)
    mu = (weights * values).sum()
    return float(np.sqrt((weights * (values - mu) ** 2).sum()))


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_gaussian_noise_has_the_listed_standard_deviation(parameter_set):
    x = torch.full((1, 1, 200, 200), 0.5)
    for severity in range(1, 6):
        sigma = Corruption("gaussian_noise", severity, parameter_set).parameters
        delta = corrupt(x, "gaussian_noise", severity, parameter_set, gen(severity)) - x
        assert float(delta.std()) == pytest.approx(_clipped_normal_std(0.5, sigma), rel=0.03)
        assert abs(float(delta.mean())) < 0.01


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_speckle_noise_is_multiplicative_with_the_listed_deviation(parameter_set):
    for level in (0.25, 0.5):
        x = torch.full((1, 1, 200, 200), level)
        for severity in range(1, 6):
            c = Corruption("speckle_noise", severity, parameter_set).parameters
            relative = (corrupt(x, "speckle_noise", severity, parameter_set, gen(severity)) - x) / x
            # clip(x + x·cZ, 0, 1) / x - 1: the relative noise is c·Z up to clipping
            expected = _clipped_normal_std(level, level * c) / level
            assert float(relative.std()) == pytest.approx(expected, rel=0.03)
            assert expected == pytest.approx(c, rel=0.12)
            assert abs(float(relative.mean())) < 0.02


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_shot_noise_is_poisson_counts_over_the_rate(parameter_set):
    level = 0.25
    x = torch.full((1, 1, 200, 200), level)
    for severity in range(1, 6):
        rate = Corruption("shot_noise", severity, parameter_set).parameters
        out = corrupt(x, "shot_noise", severity, parameter_set, gen(severity)).double()
        k = np.arange(0, int(level * rate * 10 + 50))
        pmf = stats.poisson.pmf(k, level * rate)
        values = np.clip(k / rate, 0, 1)
        mean = (pmf * values).sum()
        var = (pmf * (values - mean) ** 2).sum()
        assert float(out.mean()) == pytest.approx(mean, abs=4 * math.sqrt(var / out.numel()))
        assert float(out.var()) == pytest.approx(var, rel=0.05)
        # unclipped, the variance is x / rate
        if rate >= 12:
            assert var == pytest.approx(level / rate, rel=0.01)
        # the output is a whole number of photons over the rate
        counts = out * rate
        assert float((counts - counts.round()).abs().max()) < 1e-3


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_impulse_noise_sets_the_listed_fraction_to_salt_or_pepper(parameter_set):
    x = torch.full((1, 3, 128, 128), 0.5)
    n = x.numel()
    for severity in range(1, 6):
        amount = Corruption("impulse_noise", severity, parameter_set).parameters
        out = corrupt(x, "impulse_noise", severity, parameter_set, gen(severity))
        changed = out != x
        assert bool(((out[changed] == 0) | (out[changed] == 1)).all())
        fraction = float(changed.float().mean())
        assert fraction == pytest.approx(amount, abs=4 * math.sqrt(amount * (1 - amount) / n))
        salt = float((out == 1).float().sum() / changed.float().sum())
        assert salt == pytest.approx(0.5, abs=0.05)
