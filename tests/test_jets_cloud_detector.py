"""Detector effects on particle clouds: the physics of each, the image analogue they share, per-jet randomness."""

import warnings

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.distortions import parse_distortion
from stabletrain.evaluation import distort_examples
from stabletrain.jets.cloud_detector import (
    CloudDetectorEffect,
    cloud_detector_sweep,
    cloud_mass,
    effect_stream,
    evaluate_cloud_taggers,
)
from stabletrain.jets.cloud_perturbations import SOFT_BUDGET_GEV, SOFT_PARTICLES
from stabletrain.jets.clouds import CLOUD_HALF_WIDTH, encode_clouds
from stabletrain.jets.detector import CLOUD_DETECTOR_FAMILIES, Smear, check_detector_specs, jet_eta
from stabletrain.jets.images import ImageSpec, image_mass, pixel_centres, pixelize
from stabletrain.registry import DISTORTIONS

SPEC = ImageSpec()


def random_clouds(n=10, k=14, seed=0, slots=20):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, k + 1, n)
    c = np.zeros((n, k, 3))
    for i, m in enumerate(counts):
        c[i, :m, 0] = np.sort(rng.exponential(8.0, m))[::-1] + 0.05
        c[i, :m, 1] = rng.normal(0, 0.3, m)
        c[i, :m, 2] = rng.normal(0, 0.3, m)
    return encode_clouds(c, counts, np.zeros(n), np.zeros(n), slots)


def cell_clouds(n=3, pt=5.0):
    """Clouds with one particle at the centre of every cell of the image grid (around the jet axis)."""
    centres = pixel_centres(SPEC)
    eta, phi = np.meshgrid(centres, centres, indexing="ij")
    c = np.tile(np.stack([np.full(eta.size, pt), eta.ravel(), phi.ravel()], axis=1)[None], (n, 1, 1))
    return encode_clouds(c, np.full(n, eta.size), np.zeros(n), np.zeros(n), eta.size)


def image_of(x):
    """The pT image (GeV) of each cloud in the image grid around its axis: pixelize of its particles."""
    rows = x[:, 0].double().numpy()
    out = []
    for r in rows:
        real = r[:, 0] > 0.5
        d = (r[real, 1:3] - 0.5) * 2 * CLOUD_HALF_WIDTH
        out.append(pixelize(r[real, 3] * 1000.0, d[:, 0], d[:, 1], SPEC))
    return np.stack(out)


SPECS = ["cloud_smear-1", "cloud_threshold-2", "cloud_deadcells-0.2", "cloud_pileup-3", "cloud_shift-2"]


def test_the_families_are_registered_and_the_sweep_mirrors_the_images():
    assert set(CLOUD_DETECTOR_FAMILIES) <= set(DISTORTIONS.names())
    for spec in SPECS:
        effect = parse_distortion(spec)
        assert isinstance(effect, CloudDetectorEffect) and effect.spec == spec
        assert effect_stream(effect) == spec[len("cloud_"):]
    sweep = cloud_detector_sweep()
    assert "cloud_pileup-20" in sweep and "cloud_smear-1" in sweep and not any("coarse" in s for s in sweep)
    assert len(sweep) == 15
    for bad in ("cloud_smear--1", "cloud_deadcells-1.5", "cloud_threshold--2", "cloud_pileup--1", "cloud_shift--1"):
        with pytest.raises(StableTrainError):
            parse_distortion(bad)


def test_specs_for_the_wrong_kind_of_tagger_name_the_analogue():
    assert check_detector_specs(["clean", "cloud_smear-1"], kind="cloud") == ["clean", "cloud_smear-1"]
    assert check_detector_specs(["smear-1", "cloud_smear-1"], kind=None) == ["smear-1", "cloud_smear-1"]
    with pytest.raises(StableTrainError, match=r"'smear-1' is a detector effect on jet images.*cloud_smear-1"):
        check_detector_specs(["smear-1"], kind="cloud")
    with pytest.raises(StableTrainError, match=r"coarse-… has no analogue on particle clouds"):
        check_detector_specs(["coarse-3"], kind="cloud")
    with pytest.raises(StableTrainError, match=r"'cloud_shift-1' is a detector effect on particle clouds.*shift-1"):
        check_detector_specs(["cloud_shift-1"], kind="image")
    with pytest.raises(StableTrainError, match="not a detector effect"):
        check_detector_specs(["jpeg-50"], kind="cloud")


@pytest.mark.parametrize("spec", SPECS)
def test_each_effect_is_seeded_per_jet_and_keeps_clouds_valid(spec):
    x = random_clouds()
    effect = parse_distortion(spec)
    eta = torch.linspace(-1.5, 1.5, len(x)).double()
    with jet_eta(eta):
        whole = distort_examples(effect, x, 0, 7, "detector", effect_stream(effect))
    assert whole.shape[:2] == x.shape[:2] and whole.shape[3] == 4 and 0 <= float(whole.min()) <= float(whole.max()) <= 1
    mask = whole[:, 0, :, 0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and float(whole[:, 0][mask == 0].abs().sum()) == 0.0
    assert not torch.equal(whole[:, :, :x.shape[2]], x) or whole.shape != x.shape
    # batch-size invariant: jets alone, in pieces and in another order get the same copies
    pieces = []
    for start, stop in ((0, 3), (3, 4), (4, 10)):
        with jet_eta(eta[start:stop]):
            pieces.append(distort_examples(effect, x[start:stop], start, 7, "detector", effect_stream(effect)))
    assert torch.equal(torch.cat(pieces), whole)
    order = [9, 2, 5]
    with jet_eta(eta[order]):
        shuffled = distort_examples(effect, x[order], order, 7, "detector", effect_stream(effect))
    assert torch.equal(shuffled, whole[order])
    with jet_eta(eta):
        other = distort_examples(effect, x, 0, 8, "detector", effect_stream(effect))
    assert spec == "cloud_threshold-2" or not torch.equal(other, whole)


def test_smearing_is_the_image_calorimeter_on_each_particle():
    # one particle of pT 30 GeV in a jet at η = 1.2 and one cell of the same pT at the same η: the same draw
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.03])
    image = torch.zeros(1, 1, 25, 25)
    image[0, 0, 12, 12] = 0.03
    with jet_eta(torch.tensor([1.2], dtype=torch.float64)):
        cloud = parse_distortion("cloud_smear-1")(x, torch.Generator().manual_seed(3))
        cell = parse_distortion("smear-1")(image, torch.Generator().manual_seed(3))
    assert float(cloud[0, 0, 0, 3]) == pytest.approx(float(cell[0, 0, 12, 12]), rel=1e-6)
    assert float(cloud[0, 0, 0, 3]) != pytest.approx(0.03, rel=1e-4)
    # the spread is σ/E = A/√E ⊕ 5 % at E = pT cosh η, mean kept
    many = torch.zeros(4000, 1, 1, 4)
    many[:, 0, 0] = torch.tensor([1.0, 0.5 + 0.3 / 4, 0.5, 0.01])   # Δη = 0.3, pT = 10 GeV
    with jet_eta(torch.full((4000,), 0.9, dtype=torch.float64)):
        y = parse_distortion("cloud_smear-2")(many, torch.Generator().manual_seed(4))
    energy = 10.0 * np.cosh(1.2)
    ratio = y[:, 0, 0, 3].double() / 0.01
    expected = float(Smear(2.0).resolution(torch.tensor(energy)))
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.01) and float(ratio.std()) == pytest.approx(expected, rel=0.05)
    with pytest.warns(UserWarning, match="no jet η"):
        parse_distortion("cloud_smear-1")(x, torch.Generator().manual_seed(0))
    with jet_eta(torch.tensor([[0.5, 1.0, 0.0]])), pytest.raises(StableTrainError, match="not the η maps"):
        parse_distortion("cloud_smear-1")(x)


def test_threshold_removes_soft_particles_only():
    x = random_clouds(n=20)
    y = parse_distortion("cloud_threshold-2")(x)
    real, kept = x[:, 0, :, 0] > 0.5, y[:, 0, :, 0] > 0.5
    pt = x[:, 0, :, 3] * 1000
    assert torch.equal(kept, real & (pt >= 2.0))
    assert torch.equal(y[:, 0][kept], x[:, 0][kept])


def test_dead_cells_are_the_image_effects_cells_for_the_same_stream():
    x = cell_clouds()
    image = torch.from_numpy(image_of(x) / 1000.0).float().unsqueeze(1)
    for fraction in (0.05, 0.2):
        cloud = distort_examples(parse_distortion(f"cloud_deadcells-{fraction}"), x, 0, 1, "detector",
                                 f"deadcells-{fraction}")
        dead_image = distort_examples(parse_distortion(f"deadcells-{fraction}"), image, 0, 1, "detector",
                                      f"deadcells-{fraction}")
        alive = image_of(cloud) > 0
        assert np.array_equal(alive, dead_image[:, 0].numpy() > 0)
        assert (~alive).sum(axis=(1, 2)).tolist() == [round(fraction * 625)] * 3
        assert not np.array_equal(alive[0], alive[1])   # each jet its own cells
    outside = torch.zeros(1, 1, 1, 4)
    outside[0, 0, 0] = torch.tensor([1.0, 0.5 + 1.6 / 4, 0.5, 0.01])   # Δη = 1.6: outside the grid
    assert torch.equal(parse_distortion("cloud_deadcells-1")(outside), outside)


def test_pileup_injects_mu_interactions_of_soft_particles_with_room_for_them():
    x = random_clouds(n=6, slots=15)
    y = parse_distortion("cloud_pileup-5")(x, torch.Generator().manual_seed(2))
    assert y.shape == (6, 1, 15 + 5 * SOFT_PARTICLES, 4)
    before, after = (x[:, 0, :, 0] > 0.5).sum(1), (y[:, 0, :, 0] > 0.5).sum(1)
    assert torch.equal(after, before + 5 * SOFT_PARTICLES)
    added = (y[:, 0, :, 3].double().sum(1) - x[:, 0, :, 3].double().sum(1)) * 1000
    assert torch.allclose(added, torch.full((6,), 5 * SOFT_BUDGET_GEV, dtype=torch.float64), rtol=1e-4)
    assert torch.equal(parse_distortion("cloud_pileup-0")(x), x)


def test_shift_moves_the_axis_as_the_image_shift_does():
    rng = np.random.default_rng(5)
    centres = pixel_centres(SPEC)[5:20]   # away from the edges, so nothing leaves the image
    n, k = 8, 12
    c = np.zeros((n, k, 3))
    c[..., 0] = rng.uniform(1, 50, (n, k))
    c[..., 1], c[..., 2] = rng.choice(centres, (n, k)), rng.choice(centres, (n, k))
    x = encode_clouds(c, np.full(n, k), np.zeros(n), np.zeros(n), k)
    image = torch.from_numpy(image_of(x) / 1000.0).float().unsqueeze(1)
    moved = distort_examples(parse_distortion("cloud_shift-3"), x, 0, 4, "detector", "shift-3")
    shifted = distort_examples(parse_distortion("shift-3"), image, 0, 4, "detector", "shift-3")
    np.testing.assert_allclose(image_of(moved), shifted[:, 0].double().numpy() * 1000, atol=1e-3)
    edge = torch.zeros(1, 1, 1, 4)
    edge[0, 0, 0] = torch.tensor([1.0, 0.999, 0.999, 0.01])
    gone = parse_distortion("cloud_shift-5")(edge, torch.Generator().manual_seed(0))
    assert gone.shape == edge.shape
    assert float(gone[0, 0, 0, 0]) in (0.0, 1.0)   # moved out of the frame (removed) or inwards


def test_the_cloud_mass_is_the_image_mass_of_its_particles():
    x = cell_clouds(n=1, pt=2.0)[:, :, ::37]
    images = image_of(x)
    assert float(cloud_mass(x)[0]) == pytest.approx(float(image_mass(images, SPEC)[0]), rel=1e-5)


def test_the_cloud_sweep_does_not_depend_on_the_chunk_size(tmp_path):
    from types import SimpleNamespace

    from stabletrain.jets.cloud_models import ParticleFlowNetwork

    x = random_clouds(n=30, seed=3)
    dataset = SimpleNamespace(x=x, y=torch.arange(30) % 2, jet_eta=torch.linspace(-2, 2, 30).double())
    model = ParticleFlowNetwork(width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # with the jets' η, smearing does not warn
        runs = [evaluate_cloud_taggers({"pfn": model}, dataset, SPECS, seed=2, chunk=c, progress=False)
                for c in (7, 1000)]
    assert runs[0] == runs[1]
    rows = runs[0]
    assert {(r["model"], r["distortion"]) for r in rows} == {(m, s) for m in ("mass-window", "pfn")
                                                              for s in ["clean", *SPECS]}
    for r in rows:
        assert r["auc_low"] <= r["auc"] <= r["auc_high"] and (r["signal"], r["background"]) == (15, 15)
        assert {"rejection_30", "rejection_50_low", "passed_30", "particles"} <= set(r)
    particles = {r["distortion"]: r["particles"] for r in rows if r["model"] == "mass-window"}
    assert particles["cloud_pileup-3"] == pytest.approx(particles["clean"] + 30)
    assert particles["cloud_threshold-2"] < particles["clean"]
    with pytest.raises(StableTrainError, match="not a detector effect on particle clouds"):
        evaluate_cloud_taggers({}, dataset, ["smear-1"], progress=False)
