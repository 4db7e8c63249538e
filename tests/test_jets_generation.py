import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from stabletrain.checks import StableTrainError
from stabletrain.jets.data import load_jets
from stabletrain.jets.generation import (
    GenerationConfig,
    Selection,
    generate_jets,
    parse_shard,
)


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, json.loads(f.attrs["metadata"])


def test_w_mass_peaks_near_the_w_and_qcd_is_broad_and_falling(jet_file):
    data, meta = _read(jet_file)
    mass, label = data["jet_mass"], data["label"]
    counts, edges = np.histogram(mass[label == 1], bins=np.arange(0, 201, 10))
    peak = edges[np.argmax(counts)] + 5
    assert 65 <= peak <= 100
    qcd = mass[label == 0]
    assert np.std(qcd) > np.std(mass[label == 1][(mass[label == 1] > 40)])  # broad
    falling = [np.sum((qcd >= a) & (qcd < a + 50)) for a in (0, 50, 100, 150)]
    assert falling == sorted(falling, reverse=True) and falling[0] > 2 * falling[2]
    assert meta["n_per_class"] == {"w": 200, "qcd": 200}
    assert 0.1 < meta["pass_fraction"]["w"] < 0.6


def test_images_are_nonnegative_centred_and_sum_to_the_jet_pt(jet_file):
    data, meta = _read(jet_file)
    images, pt, constituents = data["images"], data["jet_pt"], data["constituents"]
    assert images.shape[1:] == (25, 25) and images.min() >= 0
    sums = images.sum(axis=(1, 2))
    inside = constituents[:, :, 0].sum(1)
    # the image holds every constituent inside the frame: it equals their pT sum for (almost) all jets
    assert np.mean(np.abs(sums / inside - 1) < 1e-4) > 0.9 and np.all(sums <= inside * (1 + 1e-5))
    # the scalar pT sum is the jet pT up to the jet's opening angle
    assert np.all(sums / pt > 0.99) and np.median(sums / pt) < 1.05
    peak = np.array([np.unravel_index(i.argmax(), i.shape) for i in images])
    assert np.mean(np.all(np.abs(peak - 12) <= 1, axis=1)) > 0.9
    assert 250 <= pt.min() and pt.max() <= 300 and np.abs(data["jet_eta"]).max() < 2
    assert meta["versions"]["pythia8mc"] != "not installed" and "HardQCD:all = on" in meta["pythia_settings"]["qcd"]


def test_load_jets_gives_a_stratified_split_in_tev(jet_file):
    split = load_jets(str(jet_file))
    assert split.classes == ["qcd", "w"]
    assert split.train.x.shape[1:] == (1, 25, 25) and float(split.train.x.max()) <= 0.3
    assert len(split.train) + len(split.test) == 400
    assert abs(float(split.test.y.float().mean()) - 0.5) < 0.05


def _generate_cli(out, *extra):
    return [sys.executable, "-m", "stabletrain", "jets", "generate", "--n", "40", "--seed", "3",
            "--chunk-events", "100", "--out", str(out), "--quiet", *extra]


def test_same_seed_gives_identical_files_and_sigkill_resume_completes(tmp_path):
    first, second, killed = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    subprocess.run(_generate_cli(first), check=True, capture_output=True)
    subprocess.run(_generate_cli(second, "--workers", "2"), check=True, capture_output=True)
    assert first.read_bytes() == second.read_bytes()  # and independent of the number of workers

    proc = subprocess.Popen(_generate_cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "c.h5.parts"
    deadline = time.time() + 60
    while time.time() < deadline and not list(parts.glob("*.npz")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(parts.glob("*.npz")), "the run was killed before it finished a chunk"
    assert not killed.exists()  # killed mid-way: no partial output file
    done = subprocess.run(_generate_cli(killed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert killed.read_bytes() == first.read_bytes()
    assert not parts.exists()


def test_shards_split_the_chunk_stream(tmp_path):
    config = {"n": 40, "seed": 3, "chunk_events": 100}
    summaries = [generate_jets(GenerationConfig(shard=(i, 2), **config), tmp_path / f"s{i}.h5", progress=False)
                 for i in range(2)]
    assert [s["n"] for s in summaries] == [20, 20]
    metas = [_read(tmp_path / f"s{i}.h5")[1] for i in range(2)]
    assert set(metas[0]["chunks"]["w"]).isdisjoint(metas[1]["chunks"]["w"])
    both = load_jets(f"{tmp_path / 's0.h5'},{tmp_path / 's1.h5'}")
    assert len(both.train) + len(both.test) == 40


@pytest.mark.parametrize("kwargs, message", [
    ({"signal": "zprime"}, "unknown signal process"),
    ({"selection": Selection(pt_min=300, pt_max=250)}, "empty pT window"),
    ({"n": 0}, "--n must be"),
])
def test_bad_generation_settings(tmp_path, kwargs, message):
    with pytest.raises(StableTrainError, match=message):
        generate_jets(GenerationConfig(**kwargs), tmp_path / "x.h5", progress=False)


def test_bad_shard_and_cli_n_zero(tmp_path):
    with pytest.raises(StableTrainError, match="i/N"):
        parse_shard("3")
    with pytest.raises(StableTrainError, match="0 <= i < N"):
        parse_shard("2/2")
    out = subprocess.run([sys.executable, "-m", "stabletrain", "jets", "generate", "--n", "0", "--out",
                          str(tmp_path / "x.h5")], capture_output=True, text=True)
    assert out.returncode == 2 and "--n" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_and_foreign_hdf5_give_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    with pytest.raises(StableTrainError, match="cannot read jet file"):
        load_jets(str(corrupt))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["images"] = np.zeros((2, 25, 25))
    with pytest.raises(StableTrainError, match="not a stabletrain jet file"):
        load_jets(str(foreign))
    with pytest.raises(StableTrainError, match="not found"):
        load_jets(str(tmp_path / "missing.h5"))
    out = subprocess.run([sys.executable, "-m", "stabletrain", "train", "--task", "jets", "--data", str(foreign),
                          "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True)
    assert out.returncode == 2 and "not a stabletrain jet file" in out.stderr and "Traceback" not in out.stderr


def test_core_works_without_the_physics_packages(tmp_path):
    code = (
        "import sys\n"
        "for m in ('pythia8mc', 'fastjet', 'h5py', 'awkward'): sys.modules[m] = None\n"
        "import stabletrain, stabletrain.training, stabletrain.jets.tagging, stabletrain.jets.detector\n"
        "from stabletrain.data import load_data\n"
        "assert load_data('digits').num_classes == 10\n"
        "from stabletrain.cli import main\n"
        f"sys.exit(main(['jets', 'generate', '--n', '10', '--out', r'{tmp_path / 'x.h5'}']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert 'pip install "stabletrain[hep]"' in out.stderr and "Traceback" not in out.stderr


def test_the_constituents_frame_and_columns_are_stated(jet_file):
    with h5py.File(jet_file, "r") as f:
        attrs = dict(f["constituents"].attrs)
        constituents, jet_eta, jet_phi = f["constituents"][()], f["jet_eta"][()], f["jet_phi"][()]
        meta = json.loads(f.attrs["metadata"])
    assert attrs["frame"] == "absolute (eta, phi) of the event, not the image frame"
    assert [str(c) for c in attrs["columns"]] == ["pt", "eta", "phi"]
    assert meta["constituents"]["frame"] == attrs["frame"] and meta["constituents"]["columns"] == ["pt", "eta", "phi"]
    # and they are absolute: the pT-weighted centre of the constituents is the jet axis, not the image centre
    pt = constituents[:, :, 0]
    centre_eta = (pt * constituents[:, :, 1]).sum(1) / pt.sum(1)
    assert np.median(np.abs(centre_eta - jet_eta)) < 0.05 and np.std(jet_eta) > 0.5
    assert np.median(np.abs(np.angle(np.exp(1j * (constituents[:, 0, 2] - jet_phi))))) < 0.5
    assert np.std(jet_phi) > 1.0


def test_eta_maps_give_the_pixels_the_constituents_eta(jet_file):
    from stabletrain.jets.images import ImageSpec, cell_eta

    data, meta = _read(jet_file)
    spec = ImageSpec(**meta["image"])
    images, maps, constituents = data["images"], data["eta_map"], data["constituents"]
    assert maps.shape == (len(images), 3) and "eta0" in meta["eta_map"]
    assert "strictly left of the centre column" in meta["flip"]
    np.testing.assert_allclose(np.hypot(maps[:, 1], maps[:, 2]), 1.0, rtol=1e-5)   # preprocessing rotated them
    # where every constituent is in the frame (and stored), the image's pT-weighted η is the constituents'
    pt = constituents[:, :, 0]
    whole = (np.abs(images.sum((1, 2)) / pt.sum(1) - 1) < 1e-5) & (data["n_constituents"] <= pt.shape[1])
    assert whole.sum() > 100
    image_eta = (images * cell_eta(maps, spec)).sum((1, 2)) / images.sum((1, 2))
    true_eta = (pt * constituents[:, :, 1]).sum(1) / pt.sum(1)
    tolerance = (np.abs(maps[:, 1]) + np.abs(maps[:, 2])) * spec.pixel_size / 2 + 1e-4
    assert np.all(np.abs(image_eta - true_eta)[whole] <= tolerance[whole])


def test_load_jets_keeps_each_jets_eta_map_with_its_image(jet_file):
    import torch

    from stabletrain.data import stratified_split

    data, _meta = _read(jet_file)
    split = load_jets(str(jet_file))
    _train, test = stratified_split(data["label"].astype(np.int64), 0.2, 0)
    np.testing.assert_array_equal(split.test.eta_map.numpy(), data["eta_map"][test].astype(np.float64))
    np.testing.assert_allclose(split.test.x[:, 0].numpy(), data["images"][test] / 1000.0, rtol=1e-6)
    assert split.info["eta_map"].startswith("stored")
    assert torch.equal(split.test.subset([2, 0]).eta_map, split.test.eta_map[[2, 0]])


def test_files_without_eta_maps_fall_back_to_the_jet_eta(jet_file, tmp_path):
    import shutil

    old = tmp_path / "old.h5"
    shutil.copy(jet_file, old)
    with h5py.File(old, "a") as f:
        jet_eta = f["jet_eta"][()]
        del f["eta_map"]
    split = load_jets(str(old))
    maps = split.test.eta_map.numpy()
    assert np.all(maps[:, 1:] == 0) and set(np.round(maps[:, 0], 5)) <= set(np.round(jet_eta.astype(float), 5))
    assert "predates" in split.info["eta_map"]


def _quiet_generate(out, workers):
    return subprocess.run([sys.executable, "-m", "stabletrain", "jets", "generate", "--n", "4", "--seed", "3",
                           "--chunk-events", "60", "--workers", str(workers), "--out", str(out), "--quiet"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_quiet_generation_prints_no_fastjet_banner(tmp_path, workers):
    run = _quiet_generate(tmp_path / "q.h5", workers)
    assert run.returncode == 0, run.stderr
    assert "FastJet" not in run.stdout and "#-----" not in run.stdout and "Cacciari" not in run.stdout
    assert "FastJet" not in run.stderr
    assert run.stdout.startswith("wrote 4 jets")


def test_the_banner_fallback_redirects_the_c_level_stdout(tmp_path):
    # bindings without set_fastjet_banner_stream: the first clustering runs with file descriptor 1 on /dev/null
    code = ("import stabletrain.jets.generation as g\n"
            "g._silence_fastjet_banner = lambda fastjet: False\n"
            "out = g.generate_chunk('w', 30, 1, banner=False)\n"
            "print('jets', len(out['jet_pt']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "FastJet" not in run.stdout and run.stdout.startswith("jets ")
    loud = subprocess.run([sys.executable, "-c", code.replace("banner=False", "banner=True")],
                          capture_output=True, text=True)
    assert "FastJet release" in loud.stdout   # the check can see the banner when it is printed


def test_a_reused_pythia_gives_each_chunk_exactly_what_a_fresh_one_gives():
    from stabletrain.jets import generation

    def chunk(seed):
        return generation.generate_chunk("qcd", 80, seed, banner=False, init_seed=1234)

    chunk(21)                      # the instance now carries the state of another chunk
    reused = chunk(22)
    generation._PYTHIAS.clear()
    fresh = chunk(22)
    assert reused.keys() == fresh.keys()
    for name in reused:
        np.testing.assert_array_equal(reused[name], fresh[name])
    assert len(generation._PYTHIAS) == 1   # one initialization served both chunks


def test_four_shards_hold_exactly_the_chunks_of_one_unsharded_run(tmp_path):
    # by design a shard takes its own chunks' leading jets, so the shard files are not one unsharded file
    # cut in four (they are read together as a list); what must hold is that chunk c is the same events and
    # jets whichever job made it, and that the shards split n exactly without sharing a chunk
    config = {"n": 40, "seed": 5, "chunk_events": 100}
    generate_jets(GenerationConfig(**config), tmp_path / "all.h5", progress=False, keep_parts=True)
    for i in range(4):
        generate_jets(GenerationConfig(shard=(i, 4), **config), tmp_path / f"s{i}.h5", progress=False,
                      keep_parts=True)
    whole = {p.name: p for p in (tmp_path / "all.h5.parts").glob("*.npz")}
    shards = {p.name: p for i in range(4) for p in (tmp_path / f"s{i}.h5.parts").glob("*.npz")}
    common = sorted(set(whole) & set(shards))
    assert "w-000000.npz" in common and "qcd-000000.npz" in common
    for name in common:
        with np.load(whole[name]) as a, np.load(shards[name]) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name
    metas = [_read(tmp_path / f"s{i}.h5")[1] for i in range(4)]
    assert sum(sum(m["n_per_class"].values()) for m in metas) == 40
    used = [c for m in metas for c in m["chunks"]["w"]]
    assert len(used) == len(set(used)) and all(c % 4 == i for i, m in enumerate(metas) for c in m["chunks"]["w"])
    data, _ = _read(tmp_path / "all.h5")
    first, _ = _read(tmp_path / "s0.h5")
    np.testing.assert_array_equal(first["jet_pt"][:5], data["jet_pt"][:5])   # shard 0's W jets lead chunk 0
