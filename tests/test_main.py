import os
import subprocess
import sys
from pathlib import Path

import stabletrain
from stabletrain import __version__

SRC = str(Path(stabletrain.__file__).resolve().parents[1])  # the copy under test, also in subprocesses


def _python(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def test_importing_the_main_module_does_not_run_the_command():
    done = _python("-c", "import importlib; importlib.import_module('stabletrain.__main__'); print('still here')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "still here\n" and "usage:" not in done.stdout + done.stderr


def test_python_dash_m_still_runs_the_command(tmp_path):
    done = _python("-m", "stabletrain", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stabletrain {__version__}"
    bad = _python("-m", "stabletrain", "train", "--epochs", "1", "--sigma", "-1", "--out", "unused", "--quiet",
                  cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("stabletrain: error: ")
    assert not (tmp_path / "unused").exists()
