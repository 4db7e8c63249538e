import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.perturbations import GaussianNoise


def test_sigma_is_in_pixel_units():
    x = torch.full((64, 3, 32, 32), 0.5)
    noisy = GaussianNoise(0.04, clamp=False)(x, generator=torch.Generator().manual_seed(0))
    diff = noisy - x
    assert float(diff.std()) == pytest.approx(0.04, rel=0.02)
    assert float(diff.mean()) == pytest.approx(0.0, abs=1e-3)


def test_clamping_keeps_unit_range_and_can_be_disabled():
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    clamped = GaussianNoise(0.5)(x, generator=torch.Generator().manual_seed(2))
    assert clamped.min() >= 0 and clamped.max() <= 1
    raw = GaussianNoise(0.5, clamp=False)(x, generator=torch.Generator().manual_seed(2))
    assert raw.min() < 0 and raw.max() > 1
    torch.testing.assert_close(clamped, raw.clamp(0, 1))


def test_same_seed_same_noise_and_input_untouched():
    x = torch.rand(4, 3, 8, 8)
    before = x.clone()
    a = GaussianNoise(0.1)(x, generator=torch.Generator().manual_seed(7))
    b = GaussianNoise(0.1)(x, generator=torch.Generator().manual_seed(7))
    c = GaussianNoise(0.1)(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)


def test_zero_sigma_is_identity():
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(GaussianNoise(0.0)(x), x)


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "abc"])
def test_bad_sigma(sigma):
    with pytest.raises(StableTrainError, match="sigma"):
        GaussianNoise(sigma)
