"""``stabletrain jets evaluate``: only detector effects, and smear-A with each jet's η."""

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
    test = load_jets(str(jet_file)).test
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
