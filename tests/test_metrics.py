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


# ---- the working point behind background_rejection, and paired (DeLong) AUC differences ----

from stabletrain.metrics import (  # noqa: E402
    auc_contrast,
    background_rejection,
    delong_covariance,
    paired_auc_difference,
    working_point,
)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("efficiency", [0.3, 0.5, 0.77, 1.0])
def test_working_point_reproduces_background_rejection_and_its_cut(seed, efficiency):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 300))
    scores = np.round(rng.normal(size=n), seed % 3)  # 0 or 1 decimals make ties of both classes
    labels = rng.integers(0, 2, n)
    labels[:2] = (1, 0)
    wp = working_point(scores, labels, efficiency)
    assert wp.rejection == background_rejection(scores, labels, efficiency)
    assert wp.background == int((labels == 0).sum()) and wp.signal == int((labels == 1).sum())
    assert wp.background / max(wp.passed, 1) == pytest.approx(wp.rejection, rel=1e-12)
    background, signal = scores[labels == 0], scores[labels == 1]
    assert wp.signal_passed == int((signal >= wp.threshold).sum()) >= efficiency * wp.signal - 1e-9
    if wp.interpolated:  # inside a tie of both classes: between the counts above and at the cut
        assert int((background > wp.threshold).sum()) < wp.passed < int((background >= wp.threshold).sum())
    else:
        assert isinstance(wp.passed, int) and wp.passed == int((background >= wp.threshold).sum())
    # the cut is the tightest one that reaches ε_S: above it, too little signal passes
    assert int((signal > wp.threshold).sum()) < efficiency * wp.signal - 1e-9


def test_working_point_by_hand_with_no_background_passing_and_with_a_tie():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    wp = working_point(scores, labels, 0.5)
    assert (wp.threshold, wp.passed, wp.signal_passed, wp.rejection, wp.interpolated) == (0.8, 0, 2, 4.0, False)
    # one signal and one background tied at 0.5: ε_S = 3/4 is halfway into the tie
    tied = working_point(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]), 0.75)
    assert tied.interpolated and tied.threshold == 0.5 and tied.passed == pytest.approx(0.5)
    assert tied.rejection == background_rejection(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]), 0.75)
    with pytest.raises(StableTrainError, match="signal efficiency"):
        working_point(scores, labels, 0.0)


def _delong_by_definition(scores, labels):
    """DeLong's AUCs and covariance from the m × n kernel ψ(x, y) = 1 if x > y, 1/2 if equal: O(K m n)."""
    scores = np.asarray(scores, dtype=float)
    k = len(scores)
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = np.zeros((k, m, n))
    for r in range(k):
        for i in range(m):
            for j in range(n):
                psi[r, i, j] = 1.0 if pos[r, i] > neg[r, j] else 0.5 if pos[r, i] == neg[r, j] else 0.0
    aucs = psi.sum((1, 2)) / (m * n)
    v10, v01 = psi.sum(2) / n, psi.sum(1) / m
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            s10 = sum((v10[a, i] - aucs[a]) * (v10[b, i] - aucs[b]) for i in range(m)) / (m - 1)
            s01 = sum((v01[a, j] - aucs[a]) * (v01[b, j] - aucs[b]) for j in range(n)) / (n - 1)
            cov[a, b] = s10 / m + s01 / n
    return aucs, cov


@pytest.mark.parametrize("seed", range(4))
def test_delong_covariance_matches_its_definition_with_ties(seed):
    from stabletrain.stats import auc_interval

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = (0, 1)
    base = labels + rng.normal(size=40)
    scores = np.stack([np.round(base + rng.normal(0, s, 40), 1) for s in (0.3, 0.6, 1.5)])  # ties: 1 decimal
    aucs, cov = delong_covariance(scores, labels)
    want_aucs, want_cov = _delong_by_definition(scores, labels)
    np.testing.assert_allclose(aucs, want_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-14)
    assert abs(cov[0, 1]) > 1e-4  # correlated scorers: the off-diagonal terms matter here
    for r in range(3):  # the diagonal is the variance of stats.auc_interval
        assert aucs[r] == pytest.approx(auc_interval(scores[r], labels).auc, abs=1e-12)
        assert np.sqrt(cov[r, r]) == pytest.approx(auc_interval(scores[r], labels).std_error, rel=1e-10)


def _paired_bootstrap_loop(a, b, labels, replicates, seed):
    """The slow reference: resample jet indices, the same ones for both taggers, recompute both AUCs."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < replicates:
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() == labels[idx].max():
            continue
        out.append(roc_auc_score(labels[idx], a[idx]) - roc_auc_score(labels[idx], b[idx]))
    return np.array(out)


def test_paired_auc_difference_agrees_with_a_paired_bootstrap_and_is_narrower_than_unpaired():
    from sklearn.metrics import roc_auc_score

    from stabletrain.stats import auc_interval

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    shared = labels * 1.2 + rng.normal(size=300)  # what both taggers see: strongly correlated scores
    a, b = shared + rng.normal(0, 0.3, 300), shared + rng.normal(0, 0.6, 300)
    d = paired_auc_difference(a, b, labels)
    assert d.difference == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b), abs=1e-12)
    assert d.low < d.difference < d.high
    assert d.high - d.low == pytest.approx(2 * 1.959964 * d.std_error, rel=1e-5)
    assert (d.signal, d.background) == (int(labels.sum()), int((labels == 0).sum()))
    boot = _paired_bootstrap_loop(a, b, labels, replicates=1500, seed=0)
    assert d.std_error == pytest.approx(boot.std(ddof=1), rel=0.15)
    # treating the taggers as independent would give a much wider interval: the pairing is what matters here
    unpaired = np.hypot(auc_interval(a, labels).std_error, auc_interval(b, labels).std_error)
    assert unpaired > 1.5 * d.std_error


def test_auc_contrast_of_means_and_its_bounds():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    scores = np.stack([labels + rng.normal(0, s, 120) for s in (0.5, 0.8, 1.0, 1.3)])
    weights = [0.5, 0.5, -0.5, -0.5]
    c = auc_contrast(scores, labels, weights)
    aucs, cov = _delong_by_definition(scores, labels)
    w = np.array(weights)
    assert c.difference == pytest.approx(float(w @ aucs), abs=1e-12)
    assert c.std_error == pytest.approx(float(np.sqrt(w @ cov @ w)), rel=1e-9)
    assert c.aucs == pytest.approx(tuple(aucs))
    # a perfect tagger against one that ties everything: no spread in either, so no width
    perfect = paired_auc_difference(labels.astype(float), np.zeros(120), labels)
    assert (perfect.difference, perfect.std_error, perfect.low, perfect.high) == (0.5, 0.0, 0.5, 0.5)
    # nearly opposite taggers on 4 jets: the interval stays within [-1, 1], what a difference can take
    wide = paired_auc_difference([0.9, 0.1, 0.2, 0.3], [0.1, 0.9, 0.8, 0.7], [1, 0, 1, 0])
    assert wide.difference == pytest.approx(0.5) and -1.0 <= wide.low and wide.high == 1.0
    with pytest.raises(StableTrainError, match="one weight per row"):
        auc_contrast(scores, labels, [1.0, -1.0])
    with pytest.raises(StableTrainError, match="same examples"):
        paired_auc_difference(np.zeros(3), np.zeros(4), np.array([0, 1, 0]))
