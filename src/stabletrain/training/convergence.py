"""Whether a run had converged: its final train accuracy, and whether test accuracy was still rising at the end.

>>> history = [{"train_accuracy": 0.8, "test_accuracy": 0.70}, {"train_accuracy": 0.9, "test_accuracy": 0.78},
...            {"train_accuracy": 0.95, "test_accuracy": 0.83}]
>>> facts = convergence(history)
>>> facts["still_rising"], round(facts["test_change_last_epochs"], 2), facts["final_train_accuracy"]
(True, 0.13, 0.95)
>>> convergence_warning("plain", facts)
'plain: test accuracy still rising over the last 3 epochs (+13.0 points): not converged, more epochs may change the comparison'
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["convergence", "convergence_warning"]


def convergence(history: Sequence[dict], metric: str = "test_accuracy", last: int = 3) -> dict[str, Any]:
    """The final train accuracy, the change of ``metric`` over the last ``last`` epochs, and ``still_rising``:
    that change is positive and the last epoch is the best so far."""
    values = [float(h[metric]) for h in history if metric in h]
    tail = values[-last:]
    change = tail[-1] - tail[0] if len(tail) > 1 else 0.0
    return {"final_train_accuracy": float(history[-1]["train_accuracy"]) if history and
            "train_accuracy" in history[-1] else None,
            "test_change_last_epochs": change, "last_epochs": len(tail),
            "still_rising": bool(len(tail) > 1 and change > 0 and tail[-1] >= max(values))}


def convergence_warning(name: str, facts: dict[str, Any]) -> str | None:
    """A warning line for a run whose test accuracy was still rising, else None."""
    if not facts.get("still_rising"):
        return None
    return (f"{name}: test accuracy still rising over the last {facts['last_epochs']} epochs "
            f"({100 * facts['test_change_last_epochs']:+.1f} points): not converged, more epochs may change the "
            f"comparison")
