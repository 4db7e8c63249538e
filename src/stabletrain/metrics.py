"""Ranking and detection metrics on scores, with the definitions of scikit-learn.

Near-duplicate detection scores a pair by its negative feature distance:
the higher the score, the more likely a duplicate. All functions take a
1-D array of scores and a matching 0/1 array of labels (1 = positive), treat
tied scores as one threshold (as ``sklearn.metrics`` does), and are
vectorized, so millions of pairs cost a sort.

>>> import numpy as np
>>> average_precision(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
0.8333333333333333
"""

from __future__ import annotations

import numpy as np

from .checks import StableTrainError

__all__ = [
    "average_precision",
    "background_rejection",
    "best_f1_threshold",
    "precision_at_recall",
    "precision_recall_at",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise StableTrainError(f"scores and labels differ in length: {scores.size} and {labels.size}")
    if scores.size == 0:
        raise StableTrainError("no scores given")
    if not np.all(np.isfinite(scores)):
        raise StableTrainError("scores contain NaN or inf")
    if not np.all((labels == 0) | (labels == 1)):
        raise StableTrainError("labels must be 0 or 1")
    if labels.sum() == 0:
        raise StableTrainError("no positive pairs: precision and recall are undefined")
    return scores, labels.astype(np.int64)


def precision_recall_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, highest threshold first.

    A pair is called positive when its score is ``>= threshold``. Unlike
    scikit-learn, no final ``(precision=1, recall=0)`` point is appended, and
    the thresholds run from high to low.
    """
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_pos = np.cumsum(sorted_labels)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_pos / predicted
    recall = true_pos / labels.sum()
    return precision, recall, sorted_scores[last_of_tie]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """``Σ_n (R_n − R_{n−1}) P_n`` over distinct thresholds: ``sklearn.metrics.average_precision_score``."""
    precision, recall, _ = precision_recall_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The best precision of any threshold whose recall is at least ``recall``."""
    if not 0.0 < recall <= 1.0:
        raise StableTrainError(f"recall must be in (0, 1], got {recall!r}")
    precision, rec, _ = precision_recall_curve(scores, labels)
    reachable = rec >= recall - 1e-12
    return float(precision[reachable].max())


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest F1 score, and that F1."""
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def precision_recall_at(threshold: float, positive_scores: np.ndarray, negative_scores: np.ndarray) -> tuple[float, float]:
    """Precision and recall when pairs with ``score >= threshold`` are called positive."""
    true_pos = int(np.sum(np.asarray(positive_scores) >= threshold))
    false_pos = int(np.sum(np.asarray(negative_scores) >= threshold))
    recall = true_pos / max(len(positive_scores), 1)
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    return precision, recall


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, starting from the point (0, 0).

    In a tagger's terms the true-positive rate is the signal efficiency ε_S
    and the false-positive rate the background efficiency ε_B.
    """
    scores, labels = _check(scores, labels)
    negatives = int((labels == 0).sum())
    if negatives == 0:
        raise StableTrainError("no negative examples: the false-positive rate is undefined")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_pos = np.cumsum(sorted_labels)[last_of_tie]
    false_pos = last_of_tie + 1 - true_pos
    tpr = np.r_[0.0, true_pos / labels.sum()]
    fpr = np.r_[0.0, false_pos / negatives]
    return fpr, tpr, np.r_[np.inf, sorted_scores[last_of_tie]]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids, ties as one threshold): ``sklearn.metrics.roc_auc_score``.

    Example:
        >>> roc_auc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
        0.75
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def background_rejection(scores: np.ndarray, labels: np.ndarray, signal_efficiency: float) -> float:
    """``1/ε_B`` at the given signal efficiency ε_S, with ε_B interpolated linearly along the ROC curve.

    When no background passes at that efficiency the rejection is reported
    as the number of background examples, a lower bound, rather than infinity.

    Example:
        >>> scores, labels = np.array([0.9, 0.8, 0.7, 0.6, 0.1]), np.array([1, 0, 1, 0, 0])
        >>> background_rejection(scores, labels, 1.0)   # both signals pass with one of three backgrounds
        3.0
    """
    if not 0.0 < signal_efficiency <= 1.0:
        raise StableTrainError(f"signal efficiency must be in (0, 1], got {signal_efficiency!r}")
    fpr, tpr, _ = roc_curve(scores, labels)
    negatives = int((np.asarray(labels) == 0).sum())
    # the first ROC point that reaches the efficiency, interpolated linearly from the point before it
    j = int(np.argmax(tpr >= signal_efficiency - 1e-12))
    if tpr[j] <= signal_efficiency + 1e-12 or j == 0:
        eps_b = float(fpr[j])
    else:
        share = (signal_efficiency - tpr[j - 1]) / (tpr[j] - tpr[j - 1])
        eps_b = float(fpr[j - 1] + share * (fpr[j] - fpr[j - 1]))
    return 1.0 / max(eps_b, 1.0 / negatives)
