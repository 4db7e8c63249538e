import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.distortions import parse_distortion
from stabletrain.jets.data import PIXEL_UNIT_GEV
from stabletrain.jets.detector import SMEAR_CONSTANT, detector_sweep, set_pileup_pool


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _jets(n=64, seed=0):
    """Sparse synthetic jet images in TeV: a hard core and a few soft cells."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 25, 25)
    x[:, 0, 12, 12] = 0.15
    cells = torch.randint(6, 19, (n, 2, 12), generator=g)
    for i in range(n):
        x[i, 0, cells[i, 0], cells[i, 1]] += torch.rand(12, generator=g) * 0.01
    return x


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    images = (rng.random((50, 25, 25)) < 0.05) * rng.exponential(0.6, (50, 25, 25))
    set_pileup_pool(images.astype(np.float32))
    yield images
    set_pileup_pool(None)


def test_smear_keeps_the_mean_and_has_the_calorimeter_resolution():
    energy = 100.0
    x = torch.full((200, 1, 25, 25), energy / PIXEL_UNIT_GEV)
    for a in (0.5, 1.0):
        out = parse_distortion(f"smear-{a}")(x, _gen()) * PIXEL_UNIT_GEV
        expected = np.sqrt(a ** 2 / energy + SMEAR_CONSTANT ** 2)
        assert float(out.mean()) == pytest.approx(energy, rel=2e-3)
        assert float(out.std() / out.mean()) == pytest.approx(expected, rel=0.02)
        assert float(out.min()) >= 0


def test_smear_leaves_empty_cells_empty_and_is_seeded():
    x = _jets()
    a = parse_distortion("smear-1")(x, _gen(1))
    assert torch.equal((a > 0), (x > 0))
    assert torch.equal(a, parse_distortion("smear-1")(x, _gen(1)))
    assert not torch.equal(a, parse_distortion("smear-1")(x, _gen(2)))


def test_pileup_zero_is_the_identity_and_pileup_adds_the_expected_mean(pool):
    x = _jets(400)
    assert torch.equal(parse_distortion("pileup-0")(x, _gen()), x)
    mu = 20
    added = (parse_distortion(f"pileup-{mu}")(x, _gen()) - x).sum(dim=(1, 2, 3)) * PIXEL_UNIT_GEV
    per_event = pool.sum(axis=(1, 2))
    expected = mu * per_event.mean()
    # the spread of the mean of 400 Poisson sums of pool draws
    stderr = np.sqrt(mu * (per_event ** 2).mean() / 400)
    assert abs(float(added.mean()) - expected) < 4 * stderr
    assert float(added.min()) >= 0


def test_deadcells_zero_is_identity_and_kills_exactly_the_fraction():
    x = torch.full((8, 1, 25, 25), 0.01)
    assert torch.equal(parse_distortion("deadcells-0")(x, _gen()), x)
    out = parse_distortion("deadcells-0.2")(x, _gen())
    assert ((out == 0).flatten(1).sum(1) == 125).all()


def test_threshold_zeroes_cells_below_t_gev():
    x = torch.zeros(1, 1, 25, 25)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0019, 0.0021   # 1.9 and 2.1 GeV
    out = parse_distortion("threshold-2")(x)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 0, 1] == x[0, 0, 0, 1]


def _centroid(x):
    w = x[:, 0] / x[:, 0].sum(dim=(1, 2), keepdim=True)
    grid = torch.arange(25.0)
    return torch.stack([(w.sum(2) * grid).sum(1), (w.sum(1) * grid).sum(1)], dim=1)


def test_shift_moves_the_centroid_by_k_pixels():
    x = _jets(32)
    for k in (1, 3):
        moved = _centroid(parse_distortion(f"shift-{k}")(x, _gen())) - _centroid(x)
        # a whole-pixel move along one axis; cells pushed out of the frame may move it by a little more
        assert torch.allclose(moved.abs().max(dim=1).values, torch.full((32,), float(k)), atol=0.05)
        assert torch.allclose(moved.abs().min(dim=1).values, torch.zeros(32), atol=0.05)


def test_coarse_keeps_the_total_and_reduces_granularity():
    x = _jets(16)
    assert torch.equal(parse_distortion("coarse-1")(x), x)
    out = parse_distortion("coarse-3")(x)
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-7)
    assert (out > 0).sum() > (x > 0).sum()


@pytest.mark.parametrize("spec, message", [("smear--1", "A >= 0"), ("deadcells-1.5", "fraction"),
                                           ("shift-1.5", "whole number"), ("coarse-0", "G >= 1"),
                                           ("pileup--2", "MU >= 0"), ("threshold--1", "T >= 0")])
def test_bad_parameters(spec, message):
    with pytest.raises(StableTrainError, match=message):
        parse_distortion(spec)


def test_detector_sweep_parses():
    assert len([parse_distortion(s) for s in detector_sweep()]) == 18
