"""Convergence facts of a training history."""

from stabletrain.training.convergence import convergence, convergence_warning


def _history(test):
    return [{"train_accuracy": 0.5 + 0.1 * i, "test_accuracy": t} for i, t in enumerate(test)]


def test_rising_plateau_falling_and_single_epoch_histories():
    rising = convergence(_history([0.5, 0.6, 0.7, 0.8]))
    assert rising["still_rising"] and abs(rising["test_change_last_epochs"] - 0.2) < 1e-12
    assert rising["final_train_accuracy"] == 0.5 + 0.3 and rising["last_epochs"] == 3
    assert convergence_warning("m", rising).startswith("m: test accuracy still rising over the last 3 epochs (+20.0")
    plateau = convergence(_history([0.5, 0.9, 0.9, 0.9]))
    assert not plateau["still_rising"] and plateau["test_change_last_epochs"] == 0 and convergence_warning("m", plateau) is None
    # a late uptick below an earlier best is noise, not an unfinished climb
    dipped = convergence(_history([0.5, 0.95, 0.88, 0.90, 0.92]))
    assert dipped["test_change_last_epochs"] > 0 and not dipped["still_rising"]
    single = convergence(_history([0.7]))
    assert (single["still_rising"], single["test_change_last_epochs"], single["last_epochs"]) == (False, 0.0, 1)
    assert convergence([])["final_train_accuracy"] is None
