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

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checks import StableTrainError

__all__ = [
    "AUCContrast",
    "WorkingPoint",
    "auc_contrast",
    "average_precision",
    "background_rejection",
    "best_f1_threshold",
    "delong_covariance",
    "paired_auc_difference",
    "precision_at_recall",
    "precision_recall_at",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "working_point",
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


@dataclass(frozen=True)
class WorkingPoint:
    """The cut behind :func:`background_rejection` at one signal efficiency, with the counts it rests on.

    ``threshold`` is the score of the ROC point that :func:`background_rejection`
    reads (the first one whose ε_S reaches the target); a jet passes when its
    score is ``>= threshold``. ``passed`` is ε_B × ``background``, the number
    of background events passing, as :func:`background_rejection` defines
    ε_B: an integer whenever the working point falls on a ROC point (always,
    for scores without ties between signal and background). Only when it is
    interpolated inside a tie group holding both classes is ``passed`` a
    fraction, between the counts just above and at the threshold, and
    ``interpolated`` is True. ``rejection`` is exactly
    :func:`background_rejection`'s value: ``background / max(passed, 1)``.
    """

    signal_efficiency: float
    threshold: float
    passed: float
    background: int
    signal_passed: int
    signal: int
    efficiency: float
    rejection: float
    interpolated: bool

    @property
    def passed_count(self) -> int | float:
        """``passed`` as an int when it is a whole number of events (it is unless ``interpolated``)."""
        return int(self.passed) if float(self.passed).is_integer() else float(self.passed)


def working_point(scores: np.ndarray, labels: np.ndarray, signal_efficiency: float) -> WorkingPoint:
    """The threshold, counts and rejection of :func:`background_rejection` at ``signal_efficiency``.

    Example:
        >>> scores, labels = np.array([0.9, 0.8, 0.7, 0.6, 0.1]), np.array([1, 0, 1, 0, 0])
        >>> wp = working_point(scores, labels, 1.0)
        >>> wp.threshold, wp.passed, wp.background, wp.rejection == background_rejection(scores, labels, 1.0)
        (0.7, 1, 3, True)
    """
    if not 0.0 < signal_efficiency <= 1.0:
        raise StableTrainError(f"signal efficiency must be in (0, 1], got {signal_efficiency!r}")
    fpr, tpr, thresholds = roc_curve(scores, labels)
    labels_array = np.asarray(labels).ravel()
    negatives = int((labels_array == 0).sum())
    positives = int((labels_array == 1).sum())
    false_pos = np.rint(fpr * negatives).astype(np.int64)  # the integer counts behind the rates
    true_pos = np.rint(tpr * positives).astype(np.int64)
    # the same point, and the same arithmetic, as background_rejection
    j = int(np.argmax(tpr >= signal_efficiency - 1e-12))
    if tpr[j] <= signal_efficiency + 1e-12 or j == 0:
        eps_b = float(fpr[j])
        passed: float = int(false_pos[j])
    else:
        share = (signal_efficiency - tpr[j - 1]) / (tpr[j] - tpr[j - 1])
        eps_b = float(fpr[j - 1] + share * (fpr[j] - fpr[j - 1]))
        if false_pos[j] == false_pos[j - 1]:
            passed = int(false_pos[j])
        else:
            passed = float(false_pos[j - 1] + share * (false_pos[j] - false_pos[j - 1]))
    return WorkingPoint(float(signal_efficiency), float(thresholds[j]), passed, negatives, int(true_pos[j]), positives,
                        eps_b, 1.0 / max(eps_b, 1.0 / negatives), not isinstance(passed, int))


def _normal_quantile(confidence: float) -> float:
    from scipy.stats import norm

    if not 0.0 < confidence < 1.0:
        raise StableTrainError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(norm.ppf(0.5 + confidence / 2))


def delong_covariance(scores: Sequence[np.ndarray] | np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``K`` scorings of the same examples and DeLong's ``K × K`` covariance matrix of them.

    ``scores`` is ``K × n`` (row ``k``: scorer ``k`` on the ``n`` examples, in
    the same order for every row). The structural components (DeLong, DeLong
    and Clarke-Pearson 1988) come from midranks (Sun and Xu 2014):
    ``V10[k, i]``, the share of background that signal event ``i`` outscores
    under scorer ``k`` (ties one half), and ``V01[k, j]``, the share of signal
    that outscores background event ``j``. Then
    ``cov = S10 / m + S01 / n`` with ``S10``, ``S01`` their sample
    covariances (``ddof=1``) over the ``m`` signal and ``n`` background
    events. The diagonal is the variance of :func:`stabletrain.stats.auc_interval`.

    Example:
        >>> aucs, cov = delong_covariance([[0.9, 0.8, 0.3, 0.1], [0.9, 0.2, 0.3, 0.1]], [1, 0, 1, 0])
        >>> aucs.tolist()
        [0.75, 1.0]
    """
    from scipy.stats import rankdata

    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None]
    y = np.asarray(labels).ravel()
    if matrix.ndim != 2 or matrix.shape[1] != y.size:
        raise StableTrainError(f"delong_covariance needs K x n scores for n labels, got {matrix.shape} and {y.size}")
    if not np.all(np.isfinite(matrix)):
        raise StableTrainError("scores contain NaN or inf")
    if not np.all((y == 0) | (y == 1)):
        raise StableTrainError("labels must be 0 or 1")
    positive, negative = matrix[:, y == 1], matrix[:, y == 0]
    m, n = positive.shape[1], negative.shape[1]
    if m == 0 or n == 0:
        raise StableTrainError(f"an AUC needs signal and background, got {m} signal and {n} background")
    ranks = rankdata(np.concatenate([positive, negative], axis=1), axis=1)
    v10 = (ranks[:, :m] - rankdata(positive, axis=1)) / n
    v01 = 1.0 - (ranks[:, m:] - rankdata(negative, axis=1)) / m
    aucs = v10.mean(1)
    k = matrix.shape[0]
    s10 = np.cov(v10, ddof=1).reshape(k, k) if m > 1 else np.zeros((k, k))
    s01 = np.cov(v01, ddof=1).reshape(k, k) if n > 1 else np.zeros((k, k))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class AUCContrast:
    """``Σ_k w_k AUC_k`` over scorings of the same examples, with DeLong's standard error and normal interval."""

    difference: float
    std_error: float
    low: float
    high: float
    aucs: tuple[float, ...]
    weights: tuple[float, ...]
    signal: int
    background: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {"difference": self.difference, "std_error": self.std_error, "low": self.low, "high": self.high,
                "aucs": list(self.aucs), "weights": list(self.weights), "signal": self.signal,
                "background": self.background, "confidence": self.confidence,
                "method": "DeLong covariance of AUCs on the same examples (paired), normal interval"}


def auc_contrast(scores: Sequence[np.ndarray] | np.ndarray, labels: np.ndarray, weights: Sequence[float],
                 confidence: float = 0.95) -> AUCContrast:
    """A linear combination of AUCs measured on the same examples, with its paired (DeLong) interval.

    ``weights (1, -1)`` is the difference of two taggers; ``(+1/S, ..., -1/S, ...)``
    the difference of their mean AUCs over ``S`` versions (e.g. detector
    effects) of the same jets. The variance ``wᵀ C w`` uses the full DeLong
    covariance ``C``, so the correlation between scorings of the same jets
    narrows the interval as it should. The interval is clipped to the range
    the combination can take (``[-1, 1]`` for a difference).
    """
    matrix = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if matrix.ndim != 2 or w.size != matrix.shape[0]:
        raise StableTrainError(f"auc_contrast needs one weight per row of scores, got {w.size} weights for "
                               f"scores of shape {matrix.shape}")
    if not np.all(np.isfinite(w)):
        raise StableTrainError("weights must be finite")
    z = _normal_quantile(confidence)
    aucs, cov = delong_covariance(matrix, labels)
    value = float(w @ aucs)
    se = math.sqrt(max(float(w @ cov @ w), 0.0))
    lowest, highest = float(np.minimum(w, 0).sum()), float(np.maximum(w, 0).sum())
    y = np.asarray(labels).ravel()
    return AUCContrast(value, se, max(lowest, value - z * se), min(highest, value + z * se),
                       tuple(float(a) for a in aucs), tuple(float(v) for v in w), int((y == 1).sum()),
                       int((y == 0).sum()), confidence)


def paired_auc_difference(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray,
                          confidence: float = 0.95) -> AUCContrast:
    """``AUC(A) − AUC(B)`` for two taggers on the same examples, with DeLong's paired interval.

    Example:
        >>> d = paired_auc_difference([0.9, 0.8, 0.3, 0.1], [0.9, 0.2, 0.3, 0.1], [1, 0, 1, 0])
        >>> d.difference, d.aucs
        (-0.25, (0.75, 1.0))
    """
    a, b = np.asarray(scores_a, dtype=np.float64).ravel(), np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise StableTrainError(f"paired AUCs need the same examples: {a.size} scores against {b.size}")
    return auc_contrast(np.stack([a, b]), labels, (1.0, -1.0), confidence)
