"""Event-level pile-up: the minimum-bias pool, the per-event draws and the overlay before clustering."""

import json
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")
ak = pytest.importorskip("awkward")

from stabletrain.checks import StableTrainError
from stabletrain.jets import events
from stabletrain.jets.events import POOL_ETA_MAX, EventPileup, build_minbias_pool, minbias_pool_path
from stabletrain.jets.generation import (
    GenerationConfig,
    Selection,
    _make_pythia,
    _visible_particles,
    generate_jets,
    leading_jets,
    pythia_settings,
    trim_jet,
)

POOL = 50


@pytest.fixture(scope="module")
def pool(jet_cache):
    return build_minbias_pool(POOL, seed=0)


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, json.loads(f.attrs["metadata"])


def test_the_pool_is_cached_by_seed_and_size_and_holds_central_visible_particles(pool):
    path = minbias_pool_path(POOL, 0)
    assert path.exists() and f"{POOL}ev-seed0" in path.name
    assert len(pool) == POOL and 50 < pool.multiplicity().mean() < 250
    px, py, pz, e = pool.four.T.astype(np.float64)
    pt = np.hypot(px, py)
    assert np.all(np.abs(np.arcsinh(pz / pt)) < POOL_ETA_MAX + 1e-4) and np.all(e >= np.abs(pz) - 1e-3)
    with np.load(path) as data:  # what a worker process reads
        np.testing.assert_array_equal(data["four"], pool.four)
        np.testing.assert_array_equal(data["offsets"], pool.offsets)
    events._LOADED.clear()
    again = build_minbias_pool(POOL, seed=0)
    assert again is not pool and again.digest() == pool.digest()
    other = build_minbias_pool(POOL, seed=1)
    assert other.digest() != pool.digest() and minbias_pool_path(POOL, 1) != path


def test_draws_depend_only_on_the_chunk_seed_and_the_event(pool):
    overlay = EventPileup(mu=20.0).with_pool(pool)
    forward = [overlay.draw(123, e) for e in range(300)]
    backward = [overlay.draw(123, e) for e in reversed(range(300))][::-1]
    for a, b in zip(forward, backward):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    counts = np.array([len(d.indices) for d in forward])
    assert abs(counts.mean() - 20) < 1.0 and abs(counts.var() / counts.mean() - 1) < 0.3   # Poisson(20)
    assert not np.array_equal(counts, [len(overlay.draw(124, e).indices) for e in range(300)])
    assert all(d.indices.max() < POOL for d in forward if len(d.indices))
    # a chunk of 6 events and one of 3 give their common events the same pile-up: no dependence on chunk size
    hard = ak.zip({c: ak.Array([[1.0, 2.0]] * 6) for c in ("px", "py", "pz", "E")})
    six, three = overlay.add_to(hard, 9), overlay.add_to(hard[:3], 9)
    assert ak.to_list(six[:3]) == ak.to_list(three)
    assert ak.to_list(six.px[:, :2]) == [[1.0, 2.0]] * 6   # the hard particles come first, unchanged
    np.testing.assert_array_equal(ak.to_numpy(six[4].px[2:]), overlay.particles(9, 4)[:, 0])
    # μ = 0: exactly the input's particles
    assert ak.to_list(EventPileup(mu=0.0).with_pool(pool).add_to(hard, 9)) == ak.to_list(hard)


def test_the_overlay_rotates_and_reflects_pool_events_without_changing_them(pool):
    overlay = EventPileup(mu=3.0).with_pool(pool)
    event = next(e for e in range(50) if len(overlay.draw(5, e).indices))
    draw, added = overlay.draw(5, event), overlay.particles(5, event)
    first = pool.event(int(draw.indices[0])).astype(np.float64)
    got = added[: len(first)]
    np.testing.assert_allclose(np.hypot(got[:, 0], got[:, 1]), np.hypot(first[:, 0], first[:, 1]), rtol=1e-6)
    np.testing.assert_allclose(np.abs(got[:, 2]), np.abs(first[:, 2]), rtol=1e-6)
    np.testing.assert_array_equal(got[:, 3], first[:, 3])
    assert len(added) == int(pool.multiplicity()[draw.indices].sum())


def test_trimming_removes_most_of_the_pileup_pt(pool):
    pythia = _make_pythia(pythia_settings("w", Selection(), seed=17))
    hard = _visible_particles(pythia.nextBatch(80))
    piled = EventPileup(mu=20.0).with_pool(pool).add_to(hard, 17)
    loose = Selection(pt_min=150.0)
    clean = dict(leading_jets(hard, loose))
    noisy = dict(leading_jets(piled, loose))
    common = sorted(set(clean) & set(noisy))
    assert len(common) >= 15

    def pts(four):
        trimmed = trim_jet(four, loose)[0]
        return np.hypot(*four[:, :2].sum(0)), np.hypot(*trimmed[:, :2].sum(0))

    shifts = np.array([np.subtract(pts(noisy[e]), pts(clean[e])) for e in common])
    ungroomed, trimmed = shifts.mean(axis=0)
    # about ρ·πR² ≈ 20 × 1.1 GeV × π of pile-up in the ungroomed R = 1 jet; trimming keeps a small part
    assert ungroomed > 30.0
    assert trimmed < 0.3 * ungroomed, (ungroomed, trimmed)


def test_mu_zero_reproduces_the_pileup_free_file_byte_for_byte(tmp_path, pool):
    config = {"n": 20, "seed": 3, "chunk_events": 100}
    generate_jets(GenerationConfig(**config), tmp_path / "clean.h5", progress=False)
    generate_jets(GenerationConfig(**config, pileup=EventPileup(0.0, POOL)), tmp_path / "mu0.h5", progress=False)
    clean, clean_meta = _read(tmp_path / "clean.h5")
    mu0, mu0_meta = _read(tmp_path / "mu0.h5")
    assert list(clean) == list(mu0)
    for name in clean:
        assert clean[name].dtype == mu0[name].dtype and clean[name].shape == mu0[name].shape
        assert clean[name].tobytes() == mu0[name].tobytes(), name
    assert {k for k in clean_meta if clean_meta[k] != mu0_meta.get(k)} == {"pileup"}
    assert clean_meta["pileup"] is None
    recorded = mu0_meta["pileup"]
    assert recorded["mu"] == 0.0 and recorded["pool_events"] == POOL and recorded["pool_seed"] == 0
    assert recorded["method"].startswith("event-level") and recorded["pool_digest"] == pool.digest()


def test_pileup_raises_the_ungroomed_mass_and_is_independent_of_the_workers(tmp_path, pool):
    def cli(out, *extra):
        return [sys.executable, "-m", "stabletrain", "jets", "generate", "--n", "16", "--seed", "4",
                "--chunk-events", "60", "--pileup", "20", "--pileup-pool-events", str(POOL), "--quiet",
                "--out", str(out), *extra]

    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    run = subprocess.run(cli(one), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "event-level pile-up μ = 20" in run.stdout
    run = subprocess.run(cli(two, "--workers", "2"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert one.read_bytes() == two.read_bytes()
    data, meta = _read(one)
    assert meta["pileup"]["mu"] == 20.0 and meta["pileup"]["pool_digest"] == pool.digest()
    # the trimmed jets are in the window, and their images carry the kept pile-up as well
    assert data["jet_pt"].min() >= 250 and data["jet_pt"].max() <= 300
    ungroomed = generate_jets(GenerationConfig(n=16, seed=4, chunk_events=60, selection=Selection(trim=False),
                                               pileup=EventPileup(20.0, POOL)), tmp_path / "ungroomed.h5",
                              progress=False)
    assert ungroomed["n"] == 16
    masses, _ = _read(tmp_path / "ungroomed.h5")
    assert np.median(masses["jet_mass"]) > np.median(data["jet_mass"])


@pytest.mark.parametrize("extra, message", [
    (["--pileup", "-1"], "--pileup must be a mean number of interactions μ >= 0"),
    (["--pileup", "inf"], "--pileup must be"),
    (["--pileup", "20", "--pileup-pool-events", "0"], "--pileup-pool-events must be an integer >= 1"),
    (["--pileup", "20", "--pileup-pool-seed", "-2"], "--pileup-pool-seed must be an integer >= 0"),
    (["--pileup-pool-events", "100"], "only applies with --pileup"),
])
def test_bad_pileup_options_are_errors(tmp_path, extra, message):
    out = subprocess.run([sys.executable, "-m", "stabletrain", "jets", "generate", "--n", "10", "--out",
                          str(tmp_path / "x.h5"), *extra], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("stabletrain: error: ") and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.h5").exists()


def test_bad_pileup_settings_in_the_api(tmp_path):
    with pytest.raises(StableTrainError, match="--pileup must be"):
        generate_jets(GenerationConfig(n=10, pileup=EventPileup(-0.5)), tmp_path / "x.h5", progress=False)
    with pytest.raises(StableTrainError, match="at least one event"):
        build_minbias_pool(0)
