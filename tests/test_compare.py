import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from stabletrain.checks import StableTrainError
from stabletrain.cli import main
from stabletrain.compare import CompareConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compare-quick.yaml"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.rows = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows += 1


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--config", str(CONFIG), "--out", str(out), "--quiet"]) == 0
    return out


def test_compare_writes_reports_over_all_methods(comparison):
    results = json.loads((comparison / "results.json").read_text())
    methods = [row["method"] for row in results["table"]]
    assert methods == ["plain", "gaussian", "stability", "jsd", "trades", "adversarial", "consistency"]
    plain = results["table"][0]
    assert plain["training time relative to plain"]["mean"] == pytest.approx(1.0)
    assert 0.0 <= plain["ACR, first 16"]["mean"]
    for column in ("clean accuracy", "robust accuracy ε=0.05, first 64", "certified accuracy r=0.25, first 16"):
        assert column in results["columns"]
    # robust accuracy is read against the clean accuracy of the same attacked images, and never exceeds it
    for row in results["table"]:
        clean = row["clean accuracy, first 64 (attacked)"]["mean"]
        assert all(row[c]["mean"] <= clean + 1e-12 for c in results["columns"] if c.startswith("robust accuracy"))
    for name in ("report.md", "report.html", "results.csv", "config.yaml", "plots/accuracy_vs_severity.png",
                 "plots/robust_accuracy.png", "plots/certified_accuracy.png"):
        assert (comparison / name).exists(), name


def test_html_report_is_self_contained(comparison):
    page = _Collector()
    page.feed((comparison / "report.html").read_text())
    assert page.rows == 1 + 7
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_rerun_skips_finished_work(comparison, capsys):
    checkpoint = comparison / "models" / "trades-s0" / "checkpoint.pt"
    evaluation = comparison / "models" / "trades-s0" / "evaluation.json"
    before = (checkpoint.stat().st_mtime_ns, evaluation.stat().st_mtime_ns)
    assert main(["compare", "--config", str(CONFIG), "--out", str(comparison), "--quiet"]) == 0
    assert (checkpoint.stat().st_mtime_ns, evaluation.stat().st_mtime_ns) == before


def test_html_report_renders_in_headless_chromium(comparison, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine: the headless rendering check is skipped")
    shot = tmp_path / "report.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1200",
                           f"--screenshot={shot}", (comparison / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    assert "Uncaught" not in done.stderr


def test_bad_comparison_configs(tmp_path):
    with pytest.raises(StableTrainError, match="unknown method"):
        CompareConfig(methods=["plain", "magic"]).resolved()
    with pytest.raises(StableTrainError, match="unknown config option"):
        CompareConfig(train={"epochz": 2}).resolved()
    with pytest.raises(StableTrainError, match="unknown evaluation option"):
        CompareConfig(evaluation={"attacks": "pgd"}).resolved()
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: digits\nmethodz: [plain]\n")
    assert main(["compare", "--config", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


def test_compare_takes_a_spec_model_and_routes_its_keywords(tmp_path):
    """``--model timm:NAME`` for every method, and a shared option that only the timm model takes (through its
    **kwargs, like timm's create_model) reaches every model, while a method option reaches only its methods."""
    from stabletrain.models.wrap import unwrap
    from stabletrain.training import load_model

    config = tmp_path / "timm.yaml"
    config.write_text("data: digits\nmethods: [plain, stability]\nseeds: [0]\n"
                      "train: {epochs: 1, image_size: 16, batch_size: 128, alpha: 1.0, drop_rate: 0.25}\n"
                      "evaluation: {distortions: [jpeg-10], epsilons: [0.0, 0.02], attack_steps: 1, "
                      "attack_examples: 8, smoothing: false}\n")
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--model", "timm:test_resnet", "--model-args", "drop_path_rate=0.05",
                 "--out", str(out), "--quiet"]) == 0
    for method in ("plain", "stability"):
        model, stored = load_model(out / "models" / f"{method}-s0")
        assert stored["config"]["model"] == "timm:test_resnet"
        assert stored["config"]["model_args"] == {"drop_rate": 0.25, "drop_path_rate": 0.05}
        assert unwrap(model).drop_rate == 0.25
        assert ("alpha" in stored["config"]["method_args"]) == (method == "stability")
    with pytest.raises(StableTrainError, match=r"unknown config option\(s\) in train: drop_rate"):
        CompareConfig(methods=["plain"], train={"drop_rate": 0.25}).resolved()  # small_cnn takes no **kwargs


def test_normalization_axis_seed_intervals_paired_claims_and_convergence(tmp_path):
    """--norms trains every method under each normalization; cells carry the t interval over seeds; claims are
    decided by a paired interval against plain of the same normalization; unconverged runs are flagged."""
    config = tmp_path / "norms.yaml"
    config.write_text("data: digits\nmethods: [plain, stability]\nseeds: [0, 1]\n"
                      "train: {epochs: 2, width: 4, image_size: 12, batch_size: 128, alpha: 1.0, sigma: 0.1}\n"
                      "evaluation: {distortions: [jpeg-10, gaussian-0.1], epsilons: [0.0], attack_steps: 1, "
                      "attack_examples: 8, smoothing: false}\n")
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--norms", "batch,group", "--out", str(out), "--quiet"]) == 0
    for name in ("plain-batch-s0", "stability-group-s1"):
        assert (out / "models" / name / "checkpoint.pt").exists()
    stored = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in stored["table"]}
    assert set(rows) == {"plain (batch)", "stability (batch)", "plain (group)", "stability (group)"}
    from stabletrain.stats import mean_interval
    from stabletrain.training import load_checkpoint

    clean = [next(r["accuracy"] for r in json.loads((out / "models" / f"stability-group-s{s}" / "evaluation.json")
                                                     .read_text())["result"]["rows"] if r["distortion"] == "clean")
             for s in (0, 1)]
    expected = mean_interval(clean)
    cell = rows["stability (group)"]["clean accuracy"]
    assert cell["mean"] == pytest.approx(expected.mean) and cell["low"] == pytest.approx(expected.low)
    assert load_checkpoint(out / "models" / "plain-group-s0" / "checkpoint.pt")["config"]["model_args"]["norm"] == "group"
    claims = stored["claims"]
    assert {(c["arm"], c["reference"]) for c in claims} == {("stability (batch)", "plain (batch)"),
                                                           ("stability (group)", "plain (group)")}
    assert all(c["verdict"] in ("held", "did not hold", "within noise") and c["low"] <= c["difference"] <= c["high"]
               for c in claims)
    # two epochs from scratch have not converged: every run is flagged, in the JSON and the report
    assert sum("not converged" in w for w in stored["warnings"]) == 8
    report = (out / "report.md").read_text()
    assert "Normalizations: batch, group" in report and "95 % t interval" in report and "not converged" in report
    with pytest.raises(StableTrainError, match="norms axis or as a train option"):
        CompareConfig(norms=["batch"], train={"norm": "group"}).resolved()


def test_one_seed_says_there_is_no_spread():
    from stabletrain.compare import _format
    from stabletrain.stats import mean_interval

    assert _format("clean accuracy", mean_interval([0.9])) == "90.0 (one seed)"
    assert "±" in _format("clean accuracy", mean_interval([0.9, 0.92]))
    assert _format("clean accuracy", mean_interval([0.98, 0.99])).endswith("100.0]")  # clipped to [0, 100]


def test_each_normalization_gets_its_own_budget():
    config = CompareConfig(methods=["plain", "stability"], norms=["batch", "group"], train={"epochs": 12},
                           norm_options={"group": {"epochs": 30, "lr": 0.01}}).resolved()
    assert (config.train_config("stability", 0, "group").epochs, config.train_config("stability", 0, "group").lr) \
        == (30, 0.01)
    assert config.train_config("plain", 1, "batch").epochs == 12
    assert config.train_config("plain", 1, "group").model_args["norm"] == "group"
    with pytest.raises(StableTrainError, match="norm_options needs the norms axis"):
        CompareConfig(norm_options={"group": {"epochs": 3}}).resolved()
    with pytest.raises(StableTrainError, match="norm_options must map"):
        CompareConfig(norms=["batch"], norm_options={"group": 30}).resolved()
    # budgets for a normalization this run does not compare are allowed (the claims configs hold both)
    assert CompareConfig(norms=["batch"], norm_options={"group": {"epochs": 30}}).resolved().norms == ["batch"]
