import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve as sk_curve

from stabletrain.checks import StableTrainError
from stabletrain.metrics import (
    average_precision,
    best_f1_threshold,
    precision_at_recall,
    precision_recall_at,
    precision_recall_curve,
)


@pytest.mark.parametrize("seed", range(8))
def test_average_precision_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    scores = np.round(rng.normal(size=n), 1)  # rounding creates ties
    labels = rng.integers(0, 2, n)
    labels[0] = 1
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_precision_at_recall_matches_scikit_learn_curve(seed):
    rng = np.random.default_rng(seed)
    scores, labels = rng.normal(size=300), rng.integers(0, 2, 300)
    precision, recall, _ = sk_curve(labels, scores)
    for target in (0.5, 0.9, 0.95, 1.0):
        assert precision_at_recall(scores, labels, target) == pytest.approx(precision[recall >= target].max())


def test_hand_computed_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 1, 0])
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert average_precision(scores, labels) == pytest.approx(1 / 3 + (2 / 3) / 3 + (3 / 4) / 3)
    assert precision_at_recall(scores, labels, 0.9) == pytest.approx(0.75)
    threshold, f1 = best_f1_threshold(scores, labels)
    assert threshold == 0.6 and f1 == pytest.approx(2 * 0.75 / 1.75)
    assert precision_recall_at(0.6, scores[labels == 1], scores[labels == 0]) == (0.75, 1.0)


def test_bad_inputs():
    with pytest.raises(StableTrainError, match="differ in length"):
        average_precision(np.zeros(3), np.zeros(2))
    with pytest.raises(StableTrainError, match="NaN"):
        average_precision(np.array([np.nan, 1.0]), np.array([1, 0]))
    with pytest.raises(StableTrainError, match="no positive"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 0]))
