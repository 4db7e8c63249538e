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


# --- permissions and write failures -------------------------------------------------------------------------------

import errno  # noqa: E402
import stat  # noqa: E402

from stabletrain import files  # noqa: E402
from stabletrain.files import atomic_write_bytes  # noqa: E402


def ensure_output_dir(path):
    return files.ensure_output_dir(path)  # looked up at call time: a test fails, not the whole module


@pytest.fixture
def umask():
    """Set a known umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"])
def test_written_files_respect_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    for path in (write_json(tmp_path / "r.json", {"a": 1}), atomic_torch_save({"w": 1}, tmp_path / "c.pt"),
                 write_csv(tmp_path / "r.csv", [{"a": 1}])):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    write_json(tmp_path / "r.json", {"a": 2})  # replacing a file gives the same mode
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == mode


def test_out_that_is_a_file_or_has_a_file_as_parent(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(StableTrainError) as caught:
        write_json(tmp_path / "taken" / "results.json", {"a": 1})
    assert str(caught.value) == (f"cannot write results to {tmp_path / 'taken' / 'results.json'}: "
                                 f"parent {tmp_path / 'taken'} is a file, not a folder")
    with pytest.raises(StableTrainError, match=f"parent {tmp_path / 'taken'} is a file, not a folder"):
        write_json(tmp_path / "taken" / "deeper" / "results.json", {"a": 1})
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(StableTrainError, match="folder.json: it is a folder, not a file"):
        write_json(tmp_path / "folder.json", {"a": 1})
    with pytest.raises(StableTrainError, match=f"cannot write results to {tmp_path / 'taken'}: it is a file"):
        ensure_output_dir(tmp_path / "taken")
    with pytest.raises(StableTrainError, match=f"parent {tmp_path / 'taken'} is a file, not a folder"):
        ensure_output_dir(tmp_path / "taken" / "run")
    assert sorted(os.listdir(tmp_path)) == ["folder.json", "taken"]


def _failing_open(monkeypatch, folder, error):
    """Make os.open fail with ``error`` for files inside ``folder`` (running as root makes chmod useless)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise error
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("error, reason", [
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
])
def test_forbidden_or_read_only_location(tmp_path, monkeypatch, error, reason):
    out = tmp_path / "out"
    out.mkdir()
    _failing_open(monkeypatch, out, error)
    with pytest.raises(StableTrainError) as caught:
        write_json(out / "results.json", {"a": 1})
    assert str(caught.value) == f"cannot write results to {out / 'results.json'}: {reason}"
    with pytest.raises(StableTrainError) as caught:
        ensure_output_dir(out / "run")
    assert str(caught.value) == f"cannot write results to {out / 'run'}: {reason}"
    assert os.listdir(out) == []  # nothing half-written, and the folder it tried is gone again


def test_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = write_json(tmp_path / "results.json", {"old": True})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(StableTrainError) as caught:
        atomic_write_bytes(target, b'{"new": true}')
    assert str(caught.value) == f"cannot write results to {target}: no space left on device"
    with pytest.raises(StableTrainError, match="no space left on device"):
        ensure_output_dir(tmp_path / "run")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["results.json"]


def test_ensure_output_dir_creates_a_writable_folder(tmp_path):
    out = ensure_output_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir() and os.listdir(out) == []
    assert ensure_output_dir(out) == out  # an existing folder is fine
