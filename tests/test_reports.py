from stabletrain.reports import accuracy_table, family_order, text_table, write_evaluation

ROWS = [
    {"model": "plain", "distortion": "clean", "family": "clean", "param": None, "accuracy": 0.9, "mean_kl": 0.0,
     "flip_rate": 0.0, "n": 10},
    {"model": "stable", "distortion": "clean", "family": "clean", "param": None, "accuracy": 0.95, "mean_kl": 0.0,
     "flip_rate": 0.0, "n": 10},
]
for spec, q, a, b in [("jpeg-10", 10, 0.5, 0.7), ("jpeg-50", 50, 0.8, 0.85)]:
    ROWS.append({"model": "plain", "distortion": spec, "family": "jpeg", "param": q, "accuracy": a,
                 "mean_kl": 0.2, "flip_rate": 0.3, "n": 10})
    ROWS.append({"model": "stable", "distortion": spec, "family": "jpeg", "param": q, "accuracy": b,
                 "mean_kl": 0.1, "flip_rate": 0.1, "n": 10})


def test_families_are_ordered_weak_to_strong():
    assert [r["distortion"] for r in family_order(ROWS)["jpeg"]] == ["jpeg-50", "jpeg-10"]


def test_tables_bold_the_best_value():
    table = accuracy_table(ROWS)
    assert "| jpeg-10 | 50.0 | **70.0** |" in table
    kl = accuracy_table(ROWS, "mean_kl", percent=False)
    assert "| jpeg-10 | 0.2000 | **0.1000** |" in kl
    assert "jpeg-50" in text_table(ROWS)


def test_write_evaluation_writes_everything(tmp_path):
    paths = write_evaluation(tmp_path, ROWS, title="t", settings={"seed": 0})
    assert paths["report"].read_text().startswith("# t")
    assert (tmp_path / "plots" / "accuracy_jpeg.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results.csv").read_text().count("\n") == len(ROWS) + 1


def _attack_rows():
    """Attack rows as evaluate_suites writes them: their own columns, the distortion columns empty."""
    rows = []
    for model, values in (("plain", (0.9, 0.4)), ("stable", (0.95, 0.6))):
        for eps, robust in zip((0.0, 0.03), values):
            rows.append({"model": model, "distortion": f"pgd-{eps:.4g}", "family": "pgd", "param": eps,
                         "accuracy": None, "mean_kl": None, "flip_rate": None, "n": 10, "attack": "pgd",
                         "epsilon": eps, "steps": 10, "clean_accuracy": values[0], "robust_accuracy": robust,
                         "attack_success_rate": 1 - robust / values[0], "robust_accuracy_at_epsilon": robust})
    return rows


def test_attack_rows_keep_their_own_columns_in_every_output(tmp_path):
    import csv
    import json

    write_evaluation(tmp_path, ROWS + _attack_rows(), title="t")
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    attacks = [r for r in table if r["family"] == "pgd"]
    assert len(attacks) == 4
    for row in attacks:  # the robust accuracy is not in `accuracy`, the success rate not in `flip_rate`
        assert row["accuracy"] == row["flip_rate"] == row["mean_kl"] == ""
        assert row["robust_accuracy"] and row["attack_success_rate"] and row["epsilon"] and row["attack"] == "pgd"
    assert all(r["robust_accuracy"] == "" for r in table if r["family"] != "pgd")
    nested = json.loads((tmp_path / "results.json").read_text())["models"]["stable"]
    assert "pgd-0.03" not in nested["distortions"]
    assert nested["attacks"]["pgd-0.03"]["robust_accuracy"] == 0.6
    report = (tmp_path / "report.md").read_text()
    distortion_tables, attack_tables = report.split("## Robust accuracy (%) under attack")
    assert "pgd-0.03" not in distortion_tables  # no empty attack lines in the accuracy, KL and flip tables
    assert "| pgd-0.03 | 40.0 | **60.0** |" in attack_tables
    assert (tmp_path / "plots" / "robust_accuracy.png").read_bytes()[:4] == b"\x89PNG"
