import json
import os

import pytest
import torch

from stabletrain.checks import StableTrainError
from stabletrain.files import atomic_torch_save, atomic_write_text, read_yaml, safe_torch_load, write_csv, write_json


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"a": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None}
    write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert os.listdir(target.parent) == ["result.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"w": Unpicklable()}, target)
    assert torch.equal(safe_torch_load(target)["w"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_csv_columns_are_the_union_of_keys(tmp_path):
    write_csv(tmp_path / "r.csv", [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b,c", "1,2,", "3,,4"]


def test_yaml_is_read_safely_with_clear_errors(tmp_path):
    (tmp_path / "evil.yaml").write_text("x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(StableTrainError, match="cannot parse config"):
        read_yaml(tmp_path / "evil.yaml")
    atomic_write_text(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(StableTrainError, match="must be a mapping"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(StableTrainError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
