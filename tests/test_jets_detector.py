import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.distortions import parse_distortion
from stabletrain.jets import detector
from stabletrain.jets.data import PIXEL_UNIT_GEV
from stabletrain.jets.detector import SMEAR_CONSTANT, detector_sweep, set_pileup_pool
from stabletrain.jets.images import ImageSpec, pixel_centres


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
        with detector.jet_eta(torch.zeros(200)):   # η = 0: E = pT
            out = parse_distortion(f"smear-{a}")(x, _gen()) * PIXEL_UNIT_GEV
        expected = np.sqrt(a ** 2 / energy + SMEAR_CONSTANT ** 2)
        assert float(out.mean()) == pytest.approx(energy, rel=2e-3)
        assert float(out.std() / out.mean()) == pytest.approx(expected, rel=0.02)
        assert float(out.min()) >= 0


def test_smear_leaves_empty_cells_empty_and_is_seeded():
    x = _jets()
    with detector.jet_eta(torch.linspace(-1.9, 1.9, len(x))):
        a = parse_distortion("smear-1")(x, _gen(1))
        assert torch.equal((a > 0), (x > 0))
        assert torch.equal(a, parse_distortion("smear-1")(x, _gen(1)))
        assert not torch.equal(a, parse_distortion("smear-1")(x, _gen(2)))


def _smear_pulls(spec, eta_maps, cell_eta, pt_gev, a, seed=0):
    """(pT′ − pT) / σ_pT of every cell, with σ/E = A/√E ⊕ 5 % at E = pT·cosh η of the cell; and 1/k per cell."""
    n = len(eta_maps)
    x = torch.full((n, 1, spec.pixels, spec.pixels), pt_gev / PIXEL_UNIT_GEV)
    with detector.jet_eta(eta_maps, spec):
        out = parse_distortion(f"smear-{a}")(x, _gen(seed))[:, 0].double().numpy() * PIXEL_UNIT_GEV
    pt = x[:, 0].double().numpy() * PIXEL_UNIT_GEV   # the float32 input, exactly
    energy = pt * np.cosh(cell_eta)
    rel = np.sqrt(a ** 2 / energy + SMEAR_CONSTANT ** 2)
    return ((out - pt) / (rel * pt)).ravel(), (rel ** 2).ravel()   # gamma shape k = 1/rel²


def test_smear_resolution_follows_the_energy_pt_cosh_eta_of_each_cell():
    spec = ImageSpec()
    u = pixel_centres(spec)
    rows = 48
    # three jet η; the first two unrotated (pixel rows are η), the third rotated and mirrored (a, b) = (0.6, −0.8)
    maps = [(0.0, 1.0, 0.0), (1.6, 1.0, 0.0), (-1.2, 0.6, -0.8)]
    eta_maps = torch.tensor([m for m in maps for _ in range(rows)], dtype=torch.float64)
    cell = (eta_maps[:, 0, None, None] + eta_maps[:, 1, None, None] * torch.from_numpy(u)[None, :, None]
            + eta_maps[:, 2, None, None] * torch.from_numpy(u)[None, None, :]).numpy()
    for a, pt_gev in ((1.0, 20.0), (0.5, 5.0)):
        pulls, inv_k = _smear_pulls(spec, eta_maps, cell, pt_gev, a, seed=int(10 * a))
        n = len(pulls)
        # mean and variance of the pulls: 0 and 1, within 5 standard errors of n draws
        # (a gamma draw of shape k has excess kurtosis 6/k, so Var(pull²) = 2 + 6/k)
        assert abs(pulls.mean()) < 5 / np.sqrt(n)
        assert abs((pulls ** 2).mean() - 1) < 5 * np.sqrt((2 + 6 * inv_k).mean() / n)
        # the same per jet η: E = pT·cosh η, not pT (which would be 1.6–3.4× too wide in variance at |η| ≥ 1.2)
        per_jet = pulls.reshape(len(maps), -1)
        for group in per_jet:
            assert abs((group ** 2).mean() - 1) < 5 * np.sqrt((2 + 6 * inv_k).max() / group.size)


def test_smear_with_one_eta_per_jet_and_the_eta_zero_fallback():
    spec = ImageSpec()
    eta = torch.tensor([0.0] * 40 + [1.8] * 40)
    cell = np.broadcast_to(eta.numpy()[:, None, None], (80, 25, 25))
    pulls, inv_k = _smear_pulls(spec, eta, cell, 10.0, 1.0)
    assert abs((pulls ** 2).mean() - 1) < 5 * np.sqrt((2 + 6 * inv_k).mean() / len(pulls))

    x = torch.full((80, 1, 25, 25), 0.01)
    with pytest.warns(UserWarning, match="no jet η"):
        fallback = parse_distortion("smear-1")(x, _gen(3))
    with detector.jet_eta(torch.zeros(80)):
        assert torch.equal(fallback, parse_distortion("smear-1")(x, _gen(3)))   # the fallback is η = 0
    assert detector.current_jet_eta() is None   # the block restored the state


def test_smear_rejects_eta_that_does_not_fit_the_batch():
    x = torch.full((4, 1, 25, 25), 0.01)
    with detector.jet_eta(torch.zeros(3)):
        with pytest.raises(StableTrainError, match="3 jets but the batch holds 4"):
            parse_distortion("smear-1")(x, _gen())
    with detector.jet_eta(torch.zeros(4), ImageSpec(pixels=21)):
        with pytest.raises(StableTrainError, match="21×21"):
            parse_distortion("smear-1")(x, _gen())
    with pytest.raises(StableTrainError, match="N×3"):
        with detector.jet_eta(torch.zeros(4, 2)):
            pass
    with pytest.raises(StableTrainError, match="finite"):
        with detector.jet_eta(torch.tensor([0.0, float("nan")])):
            pass


def test_only_detector_effects_pass_the_detector_check():
    assert detector.check_detector_specs(["clean", " smear-1", "pileup-20"]) == ["clean", "smear-1", "pileup-20"]
    assert set(detector.DETECTOR_FAMILIES) == {"pileup", "smear", "deadcells", "threshold", "shift", "coarse"}
    for spec in ("jpeg-50", "gaussian-0.1", "crop-10", "thumb-16"):
        with pytest.raises(StableTrainError, match="not a detector effect") as error:
            detector.check_detector_specs([spec])
        assert "smear" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(StableTrainError, match="A >= 0"):
        detector.check_detector_specs(["smear--1"])


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


class _Streams:
    """Per-example random streams, shaped like stabletrain.seeding.ExampleRNG: row i draws from generators[i]."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self):
        return len(self.generators)


def test_smear_with_per_example_streams_is_the_same_in_any_batch():
    x = _jets(12)
    eta = torch.linspace(-1.5, 1.5, 12)
    with detector.jet_eta(eta):
        whole = parse_distortion("smear-1")(x, _Streams(range(12)))
    with detector.jet_eta(eta[8:]):
        part = parse_distortion("smear-1")(x[8:], _Streams(range(8, 12)))
    torch.testing.assert_close(whole[8:], part, rtol=0, atol=0)
    assert torch.equal(whole > 0, x > 0) and not torch.equal(whole, x)
    with detector.jet_eta(eta), pytest.raises(StableTrainError, match="11 random streams for 12"):
        parse_distortion("smear-1")(x, _Streams(range(11)))
