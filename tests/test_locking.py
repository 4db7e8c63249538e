import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stabletrain
from stabletrain.checks import StableTrainError
from stabletrain.locking import LOCK_NAME, output_lock, read_lock

SRC = str(Path(stabletrain.__file__).resolve().parents[1])  # the copy under test, also in subprocesses

HOLDER = """
import sys, time
from pathlib import Path
from stabletrain.locking import output_lock
folder, ready, done = map(Path, sys.argv[1:4])
with output_lock(folder, what="train"):
    ready.write_text("locked")
    for _ in range(6000):  # until the test says it is done (at most a minute)
        if done.exists():
            break
        time.sleep(0.01)
"""


def _python(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    env.pop("RANK", None)
    return subprocess.Popen([sys.executable, *args], env=env, **kwargs)


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    for _ in range(6000):
        if path.exists() or process.poll() is not None:
            break
        time.sleep(0.01)
    assert path.exists(), f"the holder did not take the lock (exit status {process.poll()})"


def test_second_run_into_the_same_folder_is_refused(tmp_path):
    out, ready, done = tmp_path / "out", tmp_path / "ready", tmp_path / "done"
    holder = _python("-c", HOLDER, str(out), str(ready), str(done))
    try:
        _wait_for(ready, holder)
        with pytest.raises(StableTrainError) as caught:
            with output_lock(out, what="evaluate"):
                pytest.fail("entered a folder that another run holds")
        message = str(caught.value)
        assert message.startswith(f"{out} is in use by another stabletrain run (pid {holder.pid} on host "
                                  f"{socket.gethostname()}, since ")
        assert message.endswith("); wait for it or choose another --out")
        assert read_lock(out)["pid"] == holder.pid  # the refused attempt left the holder's lock alone
    finally:
        done.write_text("done")
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert not (out / LOCK_NAME).exists()
    with output_lock(out, what="evaluate"):  # free again once the holder has finished
        assert read_lock(out)["command"] == "evaluate"


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    gone = _python("-c", "pass")
    gone.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "hostname": socket.gethostname(),
                                             "started": "2024-01-01T00:00:00+00:00", "command": "train"}))
    with caplog.at_level("WARNING", logger="stabletrain.locking"):
        with output_lock(out, what="train") as lock:
            holder = read_lock(out)
            assert holder["pid"] == os.getpid() and holder["command"] == "train"
            assert lock == out / LOCK_NAME
    assert any("took over the stale lock" in r.getMessage() and f"pid {gone.pid}" in r.getMessage()
               for r in caplog.records)
    assert not (out / LOCK_NAME).exists()


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/stat").exists(), reason="needs /proc to tell reused pids apart")
def test_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "hostname": socket.gethostname(),
                                             "started": "2024-01-01T00:00:00+00:00", "command": "train",
                                             "process_start": -1}))
    with output_lock(out):
        assert read_lock(out)["pid"] == os.getpid()


def test_lock_from_another_host_is_held_and_names_the_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = {"pid": 1, "hostname": "gpu-node-7.example", "started": "2024-01-01T00:00:00+00:00", "command": "train"}
    (out / LOCK_NAME).write_text(json.dumps(lock))
    with pytest.raises(StableTrainError) as caught:
        with output_lock(out):
            pass
    assert str(caught.value) == (
        f"{out} is in use by another stabletrain run (pid 1 on host gpu-node-7.example, since "
        f"2024-01-01T00:00:00+00:00); wait for it or choose another --out; the run is on another host and cannot "
        f"be checked from here, so if it is no longer active, delete {out / LOCK_NAME}")
    assert json.loads((out / LOCK_NAME).read_text()) == lock
    (out / LOCK_NAME).write_text("{not json")
    with pytest.raises(StableTrainError, match=f"cannot read; if no stabletrain run is using the folder, delete "
                                               f"{out / LOCK_NAME}"):
        with output_lock(out):
            pass


def test_release_removes_the_lock_only_if_it_is_still_ours(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out, what="compare"):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert set(holder) >= {"pid", "hostname", "started", "command"}
        assert holder["pid"] == os.getpid() and holder["hostname"] == socket.gethostname()
        assert holder["command"] == "compare" and holder["started"][:2] == "20"
        (out / "results.json").write_text("{}")
    assert sorted(os.listdir(out)) == ["results.json"]
    with output_lock(out):
        (out / LOCK_NAME).unlink()  # somebody deleted it, and another run locked the folder
        (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "hostname": "elsewhere", "token": "theirs"}))
    assert read_lock(out)["token"] == "theirs"
    # a folder that the lock created and nothing filled is removed again
    with output_lock(tmp_path / "unused" / "run"):
        pass
    assert not (tmp_path / "unused").exists()


def test_lock_is_reentrant_in_the_same_thread_and_only_rank_0_takes_it(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, what="demo"):
        first = read_lock(out)
        with output_lock(out, what="train"):  # e.g. demo calling train on its own folder
            assert read_lock(out) == first
        assert read_lock(out) == first  # the inner exit does not release the outer lock
    assert read_lock(out) is None
    with output_lock(out, rank=1) as lock:
        assert lock is None and read_lock(out) is None
    with output_lock(out, rank=0):
        with output_lock(out, rank=3):
            assert read_lock(out)["pid"] == os.getpid()


def test_another_thread_of_the_same_process_is_refused(tmp_path):
    import threading

    out = tmp_path / "out"
    errors = []

    def other():
        try:
            with output_lock(out):
                pass
        except StableTrainError as err:
            errors.append(str(err))

    with output_lock(out):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"pid {os.getpid()} on host" in errors[0]
