"""Particle clouds: features, chunked HDF5 reading, cloud perturbations, and training cloud taggers via the CLI."""

import json
import pickle

import numpy as np
import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.jets.clouds import (
    CLOUD_HALF_WIDTH,
    PT_FLOOR_GEV,
    CloudArray,
    check_clouds,
    cloud_features,
    encode_clouds,
    jet_axes,
    load_clouds,
)
from stabletrain.jets.cloud_perturbations import (
    JITTER_CELL,
    SOFT_BUDGET_GEV,
    SOFT_PARTICLES,
    ParticleJitter,
    ParticleNoise,
    ParticleSmear,
    SoftInjection,
)
from stabletrain.registry import PERTURBATIONS
from stabletrain.seeding import ExampleRNG

h5py = pytest.importorskip("h5py")


def random_constituents(n, k, seed, max_count=None):
    """Jets of decreasing-pT constituents around random axes (some near φ = ±π), zero-padded as generated files."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, (max_count or k) + 1, n)
    jet_eta, jet_phi = rng.uniform(-1.5, 1.5, n), rng.choice([-3.1, 0.3, 3.1], n) + rng.uniform(-0.02, 0.02, n)
    c = np.zeros((n, k, 3), dtype=np.float32)
    for i, m in enumerate(counts):
        pt = np.sort(rng.exponential(8.0, m))[::-1] + 0.05
        c[i, :m, 0] = pt
        c[i, :m, 1] = jet_eta[i] + rng.normal(0, 0.3, m)
        c[i, :m, 2] = (jet_phi[i] + rng.normal(0, 0.3, m) + np.pi) % (2 * np.pi) - np.pi
    return c, counts, jet_eta, jet_phi


def write_jet_file(path, n=40, k=16, seed=0, with_phi=True, with_constituents=True, signal="w"):
    """A small stabletrain jet file with constituents only (no Pythia): what load_clouds reads."""
    c, counts, jet_eta, jet_phi = random_constituents(n, k, seed)
    labels = np.arange(n) % 2
    meta = {"format": "stabletrain.jets/1", "signal": signal, "background": "qcd", "classes": ["qcd", signal],
            "image": {"pixels": 25, "half_width": 1.25}, "selection": {"radius": 1.0}, "preprocess": True}
    with h5py.File(path, "w") as f:
        if with_constituents:
            d = f.create_dataset("constituents", data=c, chunks=(8, k, 3), compression="gzip")
            d.attrs["columns"] = ["pt", "eta", "phi"]
        f.create_dataset("n_constituents", data=counts.astype(np.int32))
        f.create_dataset("jet_eta", data=jet_eta.astype(np.float32))
        if with_phi:
            f.create_dataset("jet_phi", data=jet_phi.astype(np.float32))
        f.create_dataset("label", data=labels.astype(np.int8))
        f.attrs["format"] = "stabletrain.jets/1"
        f.attrs["metadata"] = json.dumps(meta)
    return c, counts, jet_eta.astype(np.float32), jet_phi.astype(np.float32), labels


# ------------------------------------------------------------------------------------------------ features


def numpy_features(c, counts, jet_eta, jet_phi):
    """Δη, Δφ, log pT, z computed independently (complex-exponential φ wrapping), per real particle."""
    rows = []
    for i in range(len(c)):
        pt, eta, phi = (c[i, :counts[i], j].astype(np.float64) for j in range(3))
        deta = eta - jet_eta[i]
        dphi = np.angle(np.exp(1j * (phi - jet_phi[i])))
        rows.append(np.column_stack([deta, dphi, np.log(np.maximum(pt, PT_FLOOR_GEV)), pt / pt.sum()]))
    return rows


def test_features_match_an_independent_numpy_computation():
    c, counts, jet_eta, jet_phi = random_constituents(12, 20, seed=1)
    x = encode_clouds(c, counts, jet_eta, jet_phi, slots=24)
    assert x.shape == (12, 1, 24, 4) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    features, mask = cloud_features(x)
    expected = numpy_features(c, counts, jet_eta, jet_phi)
    for i, rows in enumerate(expected):
        assert mask[i].tolist() == [j < counts[i] for j in range(24)]
        np.testing.assert_allclose(features[i, :counts[i]].double().numpy(), rows, atol=2e-6, rtol=1e-5)
        assert float(features[i, counts[i]:].abs().sum()) == 0.0   # padded slots read zero
    assert float(x[:, 0][~mask].abs().sum()) == 0.0
    assert (np.abs(np.concatenate(expected)[:, 1]) > 3.0).sum() == 0   # φ was wrapped across ±π


def test_encoding_drops_particles_outside_the_frame_and_refuses_bad_values():
    c = np.zeros((1, 4, 3))
    c[0, :3] = [[100.0, 0.0, 0.0], [50.0, CLOUD_HALF_WIDTH + 0.5, 0.0], [10.0, 0.2, -0.1]]
    x = encode_clouds(c, np.array([3]), np.array([0.0]), np.array([0.0]), slots=3)
    features, mask = cloud_features(x)
    assert mask.tolist() == [[True, True, False]]   # the one outside moved out, the rest moved up
    assert features[0, :2, 2].exp().tolist() == pytest.approx([100.0, 10.0], rel=1e-5)
    assert float(features[0, :, 3].sum()) == pytest.approx(1.0)
    truncated = encode_clouds(c, np.array([3]), np.array([0.0]), np.array([0.0]), slots=1)
    assert cloud_features(truncated)[1].tolist() == [[True]]   # the hardest particle kept
    bad = {"negative pT": (c * np.array([-1.0, 1, 1]), "pT >= 0"), "above 1 TeV": (c * np.array([20.0, 1, 1]), "exceeds the cloud unit"),
           "NaN": (np.where(c == 10.0, np.nan, c), "finite")}
    for name, (values, message) in bad.items():
        with pytest.raises(StableTrainError, match=message):
            encode_clouds(values, np.array([3]), np.array([0.0]), np.array([0.0]), slots=4)
    with pytest.raises(StableTrainError, match="N×K×3"):
        encode_clouds(c[..., :2], np.array([3]), np.array([0.0]), np.array([0.0]), slots=4)
    with pytest.raises(StableTrainError, match="one count and one axis per jet"):
        encode_clouds(c, np.array([3, 1]), np.array([0.0]), np.array([0.0]), slots=4)


def test_check_clouds_names_the_expected_shape():
    for shape in [(2, 1, 25, 25), (2, 3, 5, 4), (2, 5, 4), (2, 1, 0, 4)]:
        with pytest.raises(StableTrainError, match="B×1×M×4"):
            check_clouds(torch.zeros(shape))
    with pytest.raises(StableTrainError, match="floating point"):
        check_clouds(torch.zeros(2, 1, 3, 4, dtype=torch.long))


def test_jet_axes_are_the_massless_sum_of_the_constituents():
    c, counts, *_ = random_constituents(6, 10, seed=2)
    axes = jet_axes(c, counts)
    for i in range(6):
        pt, eta, phi = (c[i, :counts[i], j].astype(np.float64) for j in range(3))
        p = np.array([(pt * np.cos(phi)).sum(), (pt * np.sin(phi)).sum(), (pt * np.sinh(eta)).sum()])
        assert axes[i, 1] == pytest.approx(np.arctan2(p[1], p[0]))
        assert axes[i, 0] == pytest.approx(np.arcsinh(p[2] / np.hypot(p[0], p[1])))


# ------------------------------------------------------------------------------------------------ reading


def test_clouds_are_read_by_index_across_files(tmp_path):
    from stabletrain.data import stratified_split

    a = write_jet_file(tmp_path / "a.h5", n=30, k=16, seed=3)
    b = write_jet_file(tmp_path / "b.h5", n=22, k=12, seed=4)
    split = load_clouds(f"{tmp_path / 'a.h5'},{tmp_path / 'b.h5'}", split_seed=5, test_fraction=0.25, reserve=3)
    c = np.zeros((52, 16, 3), dtype=np.float32)
    c[:30], c[30:, :12] = a[0], b[0]
    counts, eta, phi = (np.concatenate([a[i], b[i]]) for i in (1, 2, 3))
    labels = np.concatenate([a[4], b[4]])
    slots = int(counts.max()) + 3
    assert split.info["slots"] == slots and split.info["axis"].startswith("jet_eta, jet_phi")
    train_idx, test_idx = stratified_split(labels, 0.25, 5)   # the split of load_jets
    np.testing.assert_array_equal(split.test.x.rows, test_idx)
    np.testing.assert_array_equal(split.train.y.numpy(), labels[train_idx])
    assert isinstance(split.train.x, CloudArray) and split.train.x.shape == (len(train_idx), 1, slots, 4)
    expected = encode_clouds(c, counts, eta, phi, slots)
    for index in (torch.tensor([5, 0, 31, 5]), np.array([len(train_idx) - 1]), slice(2, 9), [3, 1]):
        rows = train_idx[np.arange(len(train_idx))[index]] if not isinstance(index, torch.Tensor) else \
            train_idx[index.numpy()]
        assert torch.equal(split.train.x[index], expected[torch.from_numpy(np.asarray(rows).reshape(-1))])
    assert torch.equal(split.train.x[3], expected[train_idx[3]])
    cloud, label = split.train[3]   # a map-style Dataset too
    assert torch.equal(cloud, expected[train_idx[3]]) and int(label) == labels[train_idx[3]]
    sub = split.train.subset(torch.tensor([4, 2]))
    assert torch.equal(sub.x[:], expected[train_idx[[4, 2]]])
    # DataLoader workers get a pickled copy, which opens its own handles
    assert torch.equal(pickle.loads(pickle.dumps(split.train.x))[0:3], split.train.x[0:3])
    with pytest.raises(StableTrainError, match="out of range"):
        split.train.x[len(train_idx)]


def test_clouds_without_a_stored_phi_take_the_constituents_axis(tmp_path):
    c, counts, *_ = write_jet_file(tmp_path / "old.h5", n=16, seed=6, with_phi=False)
    split = load_clouds(str(tmp_path / "old.h5"))
    assert split.info["axis"].startswith("massless sum")
    rows = split.test.x.rows
    axes = jet_axes(c, counts)
    assert torch.equal(split.test.x[:], encode_clouds(c[rows], counts[rows], axes[rows, 0], axes[rows, 1],
                                                      split.info["slots"]))


def test_bad_cloud_sources_are_one_clear_error(tmp_path):
    write_jet_file(tmp_path / "none.h5", with_constituents=False)
    with pytest.raises(StableTrainError, match="holds no constituents"):
        load_clouds(str(tmp_path / "none.h5"))
    with pytest.raises(StableTrainError, match="not found"):
        load_clouds(str(tmp_path / "missing.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(StableTrainError, match="not a stabletrain jet file"):
        load_clouds(str(tmp_path / "other.h5"))
    write_jet_file(tmp_path / "ok.h5")
    with pytest.raises(StableTrainError, match="reserve"):
        load_clouds(str(tmp_path / "ok.h5"), reserve=-1)


def test_generated_files_give_the_image_split_and_sane_clouds(jet_file):
    from stabletrain.jets.data import load_jets

    images, clouds = load_jets(str(jet_file)), load_clouds(str(jet_file))
    assert torch.equal(images.test.y, clouds.test.y) and torch.equal(images.train.y, clouds.train.y)
    x = clouds.test.x[:]
    features, mask = cloud_features(x)
    with h5py.File(jet_file, "r") as f:
        jet_pt = f["jet_pt"][()][clouds.test.x.rows]
    # the clouds' scalar pT sum is the jet pT up to the constituents' masses and the few outside the frame
    pt_sum = (features[..., 2].exp() * mask).sum(1).double().numpy()
    assert np.median(np.abs(pt_sum / jet_pt - 1)) < 0.05
    assert float(features[..., 0][mask].abs().max()) < CLOUD_HALF_WIDTH and int(mask.sum(1).min()) >= 1
    assert int((~mask).sum(1).min()) >= SOFT_PARTICLES   # room for soft particles in every jet


# ------------------------------------------------------------------------------------------------ perturbations


def clouds(n=8, k=14, seed=0, slots=20):
    c, counts, eta, phi = random_constituents(n, k, seed)
    return encode_clouds(c, counts, eta, phi, slots)


PERTURBATION_NAMES = ["particle", "particle-smear", "particle-jitter", "particle-soft"]


@pytest.mark.parametrize("name", PERTURBATION_NAMES)
def test_perturbations_keep_pt_nonnegative_padding_zero_and_are_seeded_per_example(name):
    x = clouds()
    perturbation = PERTURBATIONS.build(name, sigma=0.5 if name != "particle-soft" else 1.0)
    assert perturbation.sigma == (0.5 if name != "particle-soft" else 1.0)
    y = perturbation(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    mask = y[:, 0, :, 0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float(y[:, 0][mask == 0].abs().sum()) == 0.0          # padded slots exactly zero
    assert not torch.equal(y, x)
    again = perturbation(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    # one stream per example: a jet gets the same copy alone as in the batch
    batch = perturbation(x, ExampleRNG.for_examples(range(len(x)), 0, name))
    for i in (0, 5):
        alone = perturbation(x[i:i + 1], ExampleRNG.for_examples([i], 0, name))
        assert torch.equal(alone, batch[i:i + 1])


def test_smearing_is_relative_gaussian_and_never_adds_particles():
    x = torch.zeros(4000, 1, 2, 4)
    x[:, 0, 0] = torch.tensor([1.0, 0.5, 0.5, 0.05])
    y = ParticleSmear(0.1)(x, torch.Generator().manual_seed(1))
    ratio = y[:, 0, 0, 3] / 0.05
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.01) and float(ratio.std()) == pytest.approx(0.1, rel=0.05)
    assert float(y[:, 0, 1].abs().sum()) == 0.0 and torch.equal(y[..., :3], x[..., :3])
    wide = ParticleSmear(2.0)(x, torch.Generator().manual_seed(2))
    zeroed = wide[:, 0, 0, 3] == 0
    assert zeroed.any() and float(wide[zeroed].abs().sum()) == 0.0   # smeared to 0: removed, not a ghost
    assert ParticleSmear().sigma == 0.24


def test_jitter_stays_within_its_cell_and_moves_only_angles():
    x = clouds(n=50)
    y = ParticleJitter(1.0)(x, torch.Generator().manual_seed(3))
    real = x[:, 0, :, 0] > 0.5
    shift = (y - x)[:, 0][real][:, 1:3] * 2 * CLOUD_HALF_WIDTH
    assert float(shift.abs().max()) <= JITTER_CELL / 2 + 1e-5
    assert float(shift.abs().mean()) == pytest.approx(JITTER_CELL / 4, rel=0.1)   # uniform over the cell
    assert torch.equal(y[..., 3], x[..., 3]) and torch.equal(y[..., 0], x[..., 0])


def test_soft_injection_adds_k_particles_within_the_budget_and_the_cone():
    x = clouds(n=30, slots=30)
    y = SoftInjection(1.0)(x, torch.Generator().manual_seed(4))
    before, after = x[:, 0, :, 0] > 0.5, y[:, 0, :, 0] > 0.5
    assert torch.equal(after.sum(1), before.sum(1) + SOFT_PARTICLES)
    assert torch.equal(y[:, 0][before], x[:, 0][before])            # the jet's own particles untouched
    new = after & ~before
    added_pt = (y[..., 3][:, 0] * new).sum(1) * 1000
    assert torch.allclose(added_pt, torch.full((30,), SOFT_BUDGET_GEV), rtol=1e-4)
    features, _ = cloud_features(y)
    r = features[..., :2].norm(dim=-1)[new]
    assert float(r.max()) <= 1.0 + 1e-5 and float(r.mean()) == pytest.approx(2 / 3, abs=0.05)   # uniform in the disc
    half = SoftInjection(0.5)(x, torch.Generator().manual_seed(4))
    assert torch.equal((half[:, 0, :, 0] > 0.5).sum(1), before.sum(1) + 5)
    full = clouds(n=2, k=14, slots=14)                               # fewer free slots than particles
    crowded = SoftInjection(1.0)(full, torch.Generator().manual_seed(5))
    assert int((crowded[:, 0, :, 0] > 0.5).sum()) <= 28
    assert torch.equal(crowded[:, 0][full[:, 0, :, 0] > 0.5], full[:, 0][full[:, 0, :, 0] > 0.5])


def test_particle_noise_smears_the_soft_particles_too_and_checks_options():
    noise = ParticleNoise(0.2, jitter=0.0)
    x = clouds(n=4, slots=30)
    y = noise(x, torch.Generator().manual_seed(6))
    assert torch.equal((y[:, 0, :, 0] > 0.5).sum(1), (x[:, 0, :, 0] > 0.5).sum(1) + SOFT_PARTICLES)
    assert noise.sigma == 0.2 and noise.soft.count == SOFT_PARTICLES
    for bad in (lambda: ParticleSmear(-0.1), lambda: SoftInjection(radius=3.0), lambda: SoftInjection(particles=1.5),
                lambda: ParticleJitter(cell=float("nan"))):
        with pytest.raises(StableTrainError):
            bad()
    with pytest.raises(StableTrainError, match="B×1×M×4"):
        noise(torch.zeros(2, 1, 25, 25))


# ------------------------------------------------------------------------------------------------ task and CLI


def test_the_jets_task_gives_clouds_to_cloud_models_and_images_to_the_cnn():
    from types import SimpleNamespace

    from stabletrain.perturbations import RelativeNoise
    from stabletrain.tasks import get_task

    task = get_task("jets")
    assert task.is_cloud_model("pfn") and task.is_cloud_model("particlenet") and not task.is_cloud_model("small_cnn")
    cloud = task.objective(SimpleNamespace(model="efn", method="stability", method_args={"sigma": 0.2, "alpha": 1.0}))
    image = task.objective(SimpleNamespace(model="small_cnn", method="stability", method_args={"sigma": 0.2}))
    assert isinstance(cloud.perturbation, ParticleNoise) and isinstance(image.perturbation, RelativeNoise)
    smear = get_task("jets", cloud_noise="particle-smear").objective(
        SimpleNamespace(model="pfn", method="consistency", method_args={"sigma": 0.3}))
    assert type(smear.perturbation).__name__ == "ParticleSmear" and smear.perturbation.sigma == 0.3
    with pytest.raises(StableTrainError, match="use --method jsd-gaussian"):
        task.objective(SimpleNamespace(model="pfn", method="jsd", method_args={}))
    with pytest.raises(StableTrainError, match="perturbs images"):
        get_task("jets", cloud_noise="relative")
    with pytest.raises(StableTrainError, match="perturbs particle clouds"):
        get_task("jets", noise="particle")
    with pytest.raises(StableTrainError, match="unknown cloud_noise model"):
        get_task("jets", cloud_noise="pileup")


def run_cli(args, capsys):
    from stabletrain.cli import main

    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_refuses_bad_cloud_options_with_one_error_line(tmp_path, capsys):
    write_jet_file(tmp_path / "s.h5")
    base = ["train", "--task", "jets", "--data", str(tmp_path / "s.h5"), "--epochs", "1", "--out", str(tmp_path / "r"),
            "--quiet"]
    cases = {("--model", "pfn", "--neighbors", "3"): "option 'neighbors' has no effect with model 'pfn'",
             ("--model", "efn", "--model-args", "widht=4"): "unknown option 'widht' for model 'efn'",
             ("--model", "pfn", "--noise", "gaussian"): "takes --cloud-noise",
             ("--model", "pfn", "--jet-input", "linear"): "is for jet images",
             ("--cloud-noise", "particle-soft"): "the image tagger 'small_cnn' takes --noise",
             ("--model", "particlenet", "--method", "jsd"): "use --method jsd-gaussian",
             ("--model", "pfn", "--cloud-noise", "smear"): "unknown cloud_noise model",
             ("--model", "pfn", "--width", "0"): "width must be a whole number >= 1"}
    for extra, message in cases.items():
        code, err = run_cli(base + list(extra), capsys)
        assert code == 2, extra
        assert err.startswith("stabletrain: error: ") and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize("model", ["pfn", "efn", "particlenet"])
def test_cli_trains_each_cloud_tagger_on_a_small_file(model, tmp_path, capsys):
    from stabletrain.training import load_model

    write_jet_file(tmp_path / "s.h5", n=48, k=12, seed=7)
    out = tmp_path / model
    code, err = run_cli(["train", "--task", "jets", "--data", str(tmp_path / "s.h5"), "--model", model, "--method",
                         "stability", "--sigma", "0.2", "--alpha", "1", "--epochs", "1", "--width", "4",
                         "--batch-size", "16", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    loaded, checkpoint = load_model(out / "checkpoint.pt")
    assert checkpoint["model"]["name"] == model and checkpoint["model"]["provider"] == "stabletrain.jets"
    assert checkpoint["model"]["kwargs"] == {"num_classes": 2, **checkpoint["config"]["model_args"]}
    assert checkpoint["config"]["task_args"]["cloud_noise"] == "particle"
    assert checkpoint["objective"]["sigma"] == 0.2 and checkpoint["data"]["input"] == "clouds"
    assert 0.0 <= checkpoint["history"][-1]["test_auc"] <= 1.0
    split = load_clouds(str(tmp_path / "s.h5"))
    assert loaded.eval()(split.test.x[:]).shape == (len(split.test), 2)


def test_cli_end_to_end_on_a_generated_sample(jet_file, tmp_path, capsys):
    """A PFN trained for two epochs on the Pythia sample (400 jets) tags better than chance."""
    out = tmp_path / "pfn"
    code, err = run_cli(["train", "--task", "jets", "--data", str(jet_file), "--model", "pfn", "--method", "gaussian",
                         "--sigma", "0.2", "--epochs", "2", "--width", "16", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and 0.5 < history[-1]["test_auc"] <= 1.0
