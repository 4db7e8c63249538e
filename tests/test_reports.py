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
