"""``stabletrain jets evaluate``: only detector effects, smear-A with each jet's η, and cloud taggers under cloud effects."""

import json
import warnings

import pytest

from stabletrain.cli import main


def test_jets_evaluate_rejects_image_distortions_before_loading_anything(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    code = main(["jets", "evaluate", str(missing), "--distortions", "smear-1,jpeg-50", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("stabletrain: error: 'jpeg-50' is not a detector effect") and "\n" not in err
    for family in ("pileup", "smear", "deadcells", "threshold", "shift", "coarse"):
        assert family in err
    assert "Traceback" not in err and not (tmp_path / "e").exists()


@pytest.fixture(scope="module")
def plain_run(jet_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("jets-evaluate") / "plain"
    assert main(["train", "--task", "jets", "--data", str(jet_file), "--method", "plain", "--epochs", "1",
                 "--width", "4", "--out", str(run), "--quiet"]) == 0
    return run


def test_jets_evaluate_refuses_jpeg_on_a_real_tagger(plain_run, tmp_path, capsys):
    capsys.readouterr()
    for spec in ("jpeg-50", "gaussian-0.1"):
        assert main(["jets", "evaluate", str(plain_run), "--distortions", spec, "--out", str(tmp_path / spec),
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"'{spec}' is not a detector effect" in err and err.count("\n") == 1
        assert not (tmp_path / spec / "results.json").exists()


def test_jets_evaluate_smears_with_the_jets_eta(jet_file, plain_run, tmp_path):
    from stabletrain.jets.data import load_jets
    from stabletrain.jets.detector import jet_eta
    from stabletrain.jets.images import ImageSpec
    from stabletrain.jets.tagging import evaluate_taggers

    out = tmp_path / "eval"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["jets", "evaluate", str(plain_run), "--distortions", "smear-2", "--out", str(out),
                     "--quiet"]) == 0
    assert not [w for w in caught if "no jet η" in str(w.message)]   # the jets' η maps reached smear-A
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["distortion"] for r in rows} == {"clean", "smear-2"}

    # the mass window under smear-2, as the command must compute it: with each jet's η, and not with η = 0
    keys = ("auc", "rejection_30", "rejection_50")
    cli = next(tuple(r[k] for k in keys) for r in rows if r["model"] == "mass-window" and r["distortion"] == "smear-2")
    test = load_jets(str(jet_file)).test.in_memory()
    with jet_eta(test.eta_map, ImageSpec()):
        with_eta = evaluate_taggers({}, test, ["smear-2"], seed=0, progress=False)[-1]
    with pytest.warns(UserWarning, match="no jet η"):
        eta_zero = evaluate_taggers({}, test, ["smear-2"], seed=0, progress=False)[-1]
    assert cli == pytest.approx(tuple(with_eta[k] for k in keys))
    assert tuple(with_eta[k] for k in keys) != tuple(eta_zero[k] for k in keys)


def test_jets_evaluate_reports_intervals_and_counts(plain_run, tmp_path, capsys):
    import csv

    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["jets", "evaluate", str(plain_run), "--distortions", "threshold-2", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    counts = saved["test_counts"]
    assert f"on the {counts['signal'] + counts['background']} test jets ({counts['signal']} signal, " \
           f"{counts['background']} background)" in printed
    assert len(saved["rows"]) == 4   # mass window and the tagger, clean and under threshold-2
    for r in saved["rows"]:
        assert (r["signal"], r["background"]) == (counts["signal"], counts["background"])
        assert r["auc_low"] <= r["auc"] <= r["auc_high"]
        assert r["rejection_30"] == pytest.approx(r["background"] / max(r["passed_30"], 1))
        assert f"AUC {r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]" in printed
        assert f"of {r['background']} bkg" in printed
    assert "inf" not in printed
    with open(out / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {"auc_low", "auc_high", "passed_30", "passed_50", "rejection_30_low", "rejection_50_high", "signal",
            "background"} <= set(header)


# ---- cloud taggers (pfn, efn, particlenet): the detector effects on particles, on a small file without Pythia

def write_both(path, n=64, k=12, seed=0):
    """A jet file with constituents and the images binned from them (around the jet axis), labels and axes."""
    import h5py
    import numpy as np

    from stabletrain.jets.images import ImageSpec, pixelize

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    counts = rng.integers(4, k + 1, n)
    c = np.zeros((n, k, 3), dtype=np.float32)
    images = np.zeros((n, 25, 25), dtype=np.float32)
    jet_eta, jet_phi = rng.uniform(-1.5, 1.5, n), rng.uniform(-3, 3, n)
    for i, m in enumerate(counts):
        spread = 0.15 if labels[i] else 0.35   # signal narrower, so taggers have something to learn
        c[i, :m, 0] = np.sort(rng.exponential(20.0, m))[::-1] + 0.5
        c[i, :m, 1] = jet_eta[i] + rng.normal(0, spread, m)
        c[i, :m, 2] = jet_phi[i] + rng.normal(0, spread, m)
        images[i] = pixelize(c[i, :m, 0], c[i, :m, 1] - jet_eta[i], c[i, :m, 2] - jet_phi[i], ImageSpec())
    meta = {"format": "stabletrain.jets/1", "signal": "w", "background": "qcd", "classes": ["qcd", "w"],
            "image": {"pixels": 25, "half_width": 1.25}, "selection": {"radius": 1.0}, "preprocess": False}
    with h5py.File(path, "w") as f:
        d = f.create_dataset("constituents", data=c, chunks=(8, k, 3), compression="gzip")
        d.attrs["columns"] = ["pt", "eta", "phi"]
        f.create_dataset("images", data=images, chunks=(8, 25, 25), compression="gzip")
        f.create_dataset("n_constituents", data=counts.astype(np.int32))
        f.create_dataset("jet_eta", data=jet_eta.astype(np.float32))
        f.create_dataset("jet_phi", data=jet_phi.astype(np.float32))
        f.create_dataset("label", data=labels.astype(np.int8))
        f.attrs["format"] = "stabletrain.jets/1"
        f.attrs["metadata"] = json.dumps(meta)


@pytest.fixture(scope="module")
def cloud_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jets-evaluate-clouds")
    data = root / "both.h5"
    write_both(data)
    runs = {}
    for model in ("pfn", "small_cnn"):
        runs[model] = root / model
        assert main(["train", "--task", "jets", "--data", str(data), "--model", model, "--method", "plain",
                     "--epochs", "1", "--width", "4", "--batch-size", "16", "--out", str(runs[model]),
                     "--quiet"]) == 0
    return data, runs


CLOUD_SPECS = "cloud_smear-1,cloud_threshold-2,cloud_deadcells-0.1,cloud_pileup-2,cloud_shift-1"


def test_jets_evaluate_sweeps_cloud_taggers_with_the_image_report(cloud_runs, tmp_path, capsys):
    from stabletrain.jets.cloud_detector import evaluate_cloud_taggers
    from stabletrain.jets.clouds import load_clouds
    from stabletrain.training import load_model

    data, runs = cloud_runs
    out = tmp_path / "eval"
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["jets", "evaluate", str(runs["pfn"]), "--distortions", CLOUD_SPECS, "--out", str(out),
                     "--quiet"]) == 0
    assert not [w for w in caught if "no jet η" in str(w.message)]   # the jet axes' η reached cloud_smear-A
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["input"] == "clouds"
    counts = saved["test_counts"]
    assert f"on the {counts['signal'] + counts['background']} test jets ({counts['signal']} signal, " \
           f"{counts['background']} background)" in printed
    rows = saved["rows"]
    assert {(r["model"], r["distortion"]) for r in rows} == {(m, s) for m in ("mass-window", "pfn")
                                                              for s in ["clean", *CLOUD_SPECS.split(",")]}
    for r in rows:
        assert (r["signal"], r["background"]) == (counts["signal"], counts["background"])
        assert r["auc_low"] <= r["auc"] <= r["auc_high"]
        assert r["rejection_30"] == pytest.approx(r["background"] / max(r["passed_30"], 1))
        assert f"AUC {r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]" in printed
    assert f"of {counts['background']} bkg" in printed and (out / "results.csv").exists()
    # the numbers are the library's, with each jet's axis η
    model, _ = load_model(runs["pfn"] / "checkpoint.pt")
    direct = evaluate_cloud_taggers({"pfn": model}, load_clouds(str(data)).test, CLOUD_SPECS.split(","), seed=0,
                                    progress=False)
    assert [(r["model"], r["distortion"], r["auc"], r["rejection_50"]) for r in direct] == \
        [(r["model"], r["distortion"], r["auc"], r["rejection_50"]) for r in rows]


def test_jets_evaluate_default_sweep_on_a_cloud_tagger(cloud_runs, tmp_path):
    from stabletrain.jets.cloud_detector import cloud_detector_sweep

    _data, runs = cloud_runs
    assert main(["jets", "evaluate", str(runs["pfn"]), "--out", str(tmp_path / "e"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "e" / "results.json").read_text())["rows"]
    assert {r["distortion"] for r in rows} == {"clean", *cloud_detector_sweep()}


def test_jets_evaluate_refuses_effects_for_the_other_kind_of_tagger(cloud_runs, tmp_path, capsys):
    _data, runs = cloud_runs
    cases = [(runs["pfn"], "smear-1", "'smear-1' is a detector effect on jet images"),
             (runs["pfn"], "coarse-3", "no analogue on particle clouds"),
             (runs["small_cnn"], "cloud_threshold-2", "'cloud_threshold-2' is a detector effect on particle clouds"),
             (runs["pfn"], "jpeg-50", "'jpeg-50' is not a detector effect")]
    for run, spec, message in cases:
        capsys.readouterr()
        assert main(["jets", "evaluate", str(run), "--distortions", spec, "--out", str(tmp_path / spec),
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("stabletrain: error: ") and message in err and err.count("\n") == 1, err
        assert "Traceback" not in err and not (tmp_path / spec / "results.json").exists()
    capsys.readouterr()
    assert main(["jets", "evaluate", str(runs["pfn"]), str(runs["small_cnn"]), "--distortions", "clean",
                 "--out", str(tmp_path / "mixed"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mix cloud taggers (pfn) and image taggers (small_cnn)" in err and err.count("\n") == 1


def test_jets_evaluate_image_taggers_read_the_same_file(cloud_runs, tmp_path):
    _data, runs = cloud_runs
    assert main(["jets", "evaluate", str(runs["small_cnn"]), "--distortions", "smear-1,deadcells-0.1",
                 "--out", str(tmp_path / "e"), "--quiet"]) == 0
    saved = json.loads((tmp_path / "e" / "results.json").read_text())
    assert saved["input"] == "images" and {r["distortion"] for r in saved["rows"]} == {"clean", "smear-1",
                                                                                       "deadcells-0.1"}


# ---- attacks at matched physical budgets (--attack)

def test_jets_evaluate_attacks_clouds_as_the_library_does(cloud_runs, tmp_path, capsys):
    from stabletrain.jets.cloud_attacks import cloud_attack_curve
    from stabletrain.jets.clouds import load_clouds
    from stabletrain.training import load_model

    data, runs = cloud_runs
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["jets", "evaluate", str(runs["pfn"]), "--distortions", "clean", "--attack", "pgd",
                 "--attack-budgets", "0.3,0.1", "--attack-steps", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "attacks.json").read_text())
    rows = saved["rows"]
    assert saved["input"] == "clouds" and saved["settings"]["threat"] == "relative pT change per particle"
    assert [r["budget_pt"] for r in rows] == [0.0, 0.1, 0.3]      # the clean budget first, then sorted
    assert rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
    assert rows[0]["robust_accuracy"] >= rows[1]["robust_accuracy"] >= rows[2]["robust_accuracy"]
    assert (out / "attacks.csv").exists() and (out / "plots" / "attacks.png").stat().st_size > 0
    assert "robust accuracy" in printed and f"pgd on {rows[0]['n']} test jets" in printed
    model, _ = load_model(runs["pfn"] / "checkpoint.pt")
    test = load_clouds(str(data)).test
    direct = cloud_attack_curve(model, test.x, test.y, [0.0, 0.1, 0.3], steps=3, seed=0)
    assert [r["robust_accuracy"] for r in rows] == [r["robust_accuracy"] for r in direct]
    assert [r["auc"] for r in rows] == pytest.approx([r["auc"] for r in direct])


def test_jets_evaluate_attack_options_take_effect(cloud_runs, tmp_path):
    _data, runs = cloud_runs

    def run(name, *extra):
        assert main(["jets", "evaluate", str(runs["pfn"]), "--distortions", "clean", "--attack", "fgsm",
                     "--attack-budgets", "0.2", *extra, "--out", str(tmp_path / name), "--quiet"]) == 0
        return json.loads((tmp_path / name / "attacks.json").read_text())["rows"]

    plain, injected = run("plain"), run("inject", "--attack-inject", "3:5", "--attack-angle", "0.05")
    assert plain[1]["budget_particles"] == 0 and injected[1]["budget_particles"] == 3
    assert injected[1]["budget_budget_gev"] == 5 and injected[1]["budget_angle"] == 0.05
    assert injected[0]["budget_particles"] == 0            # the clean row stays clean
    # the CLI attacks with the budget it reports: the library's curve under the same CloudBudget
    from stabletrain.jets.cloud_attacks import CloudBudget, cloud_attack_curve
    from stabletrain.jets.clouds import load_clouds
    from stabletrain.training import load_model

    model, _ = load_model(runs["pfn"] / "checkpoint.pt")
    test = load_clouds(str(_data)).test
    budget = CloudBudget(pt=0.2, angle=0.05, particles=3, budget_gev=5.0)
    direct = cloud_attack_curve(model, test.x, test.y, [CloudBudget(), budget], attack="fgsm", seed=0)
    assert [r["auc"] for r in injected] == pytest.approx([r["auc"] for r in direct])
    assert injected[1]["changed_particles"] == pytest.approx(direct[1]["changed_particles"])
    assert injected[1]["auc"] != pytest.approx(plain[1]["auc"])   # the injection and the shift took effect
    subset = run("subset", "--attack-jets", "10")
    counts = json.loads((tmp_path / "plain" / "results.json").read_text())["test_counts"]
    assert {r["n"] for r in subset} == {10}
    assert {r["n"] for r in plain} == {counts["signal"] + counts["background"]}


def test_jets_evaluate_attacks_images_with_the_matched_relative_budget(cloud_runs, tmp_path):
    from stabletrain.jets.cloud_attacks import image_attack_curve
    from stabletrain.jets.data import load_jets
    from stabletrain.training import load_model

    data, runs = cloud_runs
    out = tmp_path / "eval"
    assert main(["jets", "evaluate", str(runs["small_cnn"]), "--distortions", "clean", "--attack", "pgd",
                 "--attack-budgets", "0,0.2", "--attack-steps", "2", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "attacks.json").read_text())
    assert saved["settings"]["threat"] == "relative pT change per cell"
    model, _ = load_model(runs["small_cnn"] / "checkpoint.pt")
    test = load_jets(str(data)).test.in_memory()
    direct = image_attack_curve(model, test.x, test.y, [0.0, 0.2], steps=2, seed=0)
    assert [r["robust_accuracy"] for r in saved["rows"]] == [r["robust_accuracy"] for r in direct]


@pytest.mark.parametrize("extra, message", [
    (["--attack-angle", "0.1"], "only take effect with --attack"),
    (["--attack", "pgd", "--attack-budgets", "0.1,x"], "comma-separated numbers"),
    (["--attack", "pgd", "--attack-budgets", "0.1,-1"], "finite numbers >= 0"),
    (["--attack", "pgd", "--attack-budgets", "0.1,0.1"], "repeats a budget"),
    (["--attack", "pgd", "--attack-inject", "3"], "K:GEV"),
    (["--attack", "pgd", "--attack-inject", "0:5"], "K >= 1 and GEV > 0"),
    (["--attack", "pgd", "--attack-inject", "3:5", "image"], "act on particles"),
])
def test_jets_evaluate_refuses_bad_attack_options(cloud_runs, tmp_path, capsys, extra, message):
    _data, runs = cloud_runs
    run = runs["small_cnn"] if extra[-1] == "image" else runs["pfn"]
    extra = [e for e in extra if e != "image"]
    capsys.readouterr()
    assert main(["jets", "evaluate", str(run), "--distortions", "clean", *extra, "--out", str(tmp_path / "e"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stabletrain: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "e" / "attacks.json").exists()


def test_jets_evaluate_baseline_gives_paired_differences_and_scores_as_the_library(cloud_runs, tmp_path, capsys):
    import numpy as np

    from stabletrain.metrics import paired_auc_difference, roc_auc

    data, runs = cloud_runs
    out = tmp_path / "paired"
    capsys.readouterr()
    assert main(["jets", "evaluate", str(runs["pfn"]), "--distortions", "cloud_smear-1", "--baseline", "mass-window",
                 "--save-scores", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "differences.json").read_text())
    scores = np.load(out / "scores.npz")
    labels = scores["labels"]
    assert set(scores.files) == {"labels", "pfn|clean", "pfn|cloud_smear-1", "mass-window|clean",
                                 "mass-window|cloud_smear-1"}
    rows = {r["distortion"]: r for r in saved["rows"]}
    assert set(rows) == {"clean", "cloud_smear-1"} and {r["model"] for r in saved["rows"]} == {"pfn"}
    results = {(r["model"], r["distortion"]): r["auc"] for r in json.loads((out / "results.json").read_text())["rows"]}
    for effect, r in rows.items():
        a, b = scores[f"pfn|{effect}"], scores[f"mass-window|{effect}"]
        assert r["auc"] == pytest.approx(roc_auc(a, labels)) == pytest.approx(results[("pfn", effect)])
        assert r["difference"] == pytest.approx(roc_auc(a, labels) - roc_auc(b, labels))
        d = paired_auc_difference(a, b, labels)
        assert (r["low"], r["high"]) == pytest.approx((d.low, d.high)) and r["low"] < r["difference"] < r["high"]
        assert r["verdict"] == ("higher" if r["low"] > 0 else "lower" if r["high"] < 0 else "within noise")
        assert f"{r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]" in printed
    assert main(["jets", "evaluate", str(runs["pfn"]), "--distortions", "cloud_smear-1", "--baseline", "nope",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--baseline 'nope' is none of the taggers evaluated: pfn, mass-window" in err and err.count("\n") == 1
