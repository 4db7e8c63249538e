"""Progress bars: tqdm on a terminal, plain timed lines in a log, nothing when disabled."""

import io

import stabletrain.progress as progress
from stabletrain.cli import main
from stabletrain.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_at_the_start_and_the_end(monkeypatch, capsys):
    for _ in progress_bar(range(40), desc="work", unit="step"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and "|" not in err  # no redraws, no bar characters
    lines = err.splitlines()
    assert lines[0].startswith("work: 0/40 step [") and lines[-1].startswith("work: 40/40 step [")
    assert len(lines) == 2  # nothing in between: less than LOG_INTERVAL seconds passed


def test_a_log_gets_a_line_per_interval(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    bar = progress_bar(total=None, desc="open", unit="batch")
    for _ in range(5):
        bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" [")[0] for line in lines] == [f"open: {n} batch" for n in range(6)] + ["open: 5 batch"]


def test_postfix_updates_wait_for_the_next_line(capsys):
    bar = progress_bar(total=10, desc="train", unit="batch")
    for step in range(10):
        bar.set_postfix(loss=1.0 / (step + 1))
        bar.set_postfix_str(f"step {step}")
        bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("train: 10/10 batch") and lines[-1].endswith("step 9]")


def test_a_terminal_gets_the_tqdm_bar_and_disabled_gets_nothing(monkeypatch, capsys):
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    for _ in progress_bar(range(3), desc="tty", mininterval=0):
        pass
    assert "\r" in screen.getvalue() and "tty" in screen.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    for _ in progress_bar(range(3), desc="off", enabled=False):
        pass
    assert quiet.getvalue() == ""


def test_training_reports_progress_into_a_log(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--image-size", "8", "--width", "4", "--epochs", "1",
                 "--batch-size", "256", "--method", "plain", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert any(line.startswith("plain epoch 1/1: 0/") for line in err.splitlines())
    assert main(["train", "--data", "digits", "--image-size", "8", "--width", "4", "--epochs", "1", "--quiet",
                 "--batch-size", "256", "--method", "plain", "--out", str(tmp_path / "quiet")]) == 0
    assert "epoch" not in capsys.readouterr().err
