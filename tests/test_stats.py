"""Intervals and paired tests, each against an independent computation (scipy, sklearn, or a bootstrap done
another way)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp
from sklearn.metrics import roc_auc_score

from stabletrain.checks import StableTrainError
from stabletrain.stats import (auc_interval, format_interval, mcnemar_exact, mean_interval, paired_bootstrap,
                               paired_difference, paired_table, proportion, rejection_interval, verdict,
                               wilson_interval)


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (37, 40), (40, 40), (180, 360), (3, 1000)])
def test_wilson_interval_equals_scipy(k, n):
    reference = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(reference.low, abs=1e-12) and high == pytest.approx(reference.high, abs=1e-12)
    wide = wilson_interval(k, n, confidence=0.99)
    assert wide[0] <= low and wide[1] >= high  # a higher confidence never narrows the interval


def test_wilson_interval_covers_at_its_nominal_rate():
    """Simulated coverage at p = 0.9, n = 40 (where the normal interval undercovers): close to 95 %."""
    rng = np.random.default_rng(0)
    draws = rng.binomial(40, 0.9, size=4000)
    covered = np.mean([lo <= 0.9 <= hi for lo, hi in (wilson_interval(int(k), 40) for k in draws)])
    assert 0.92 <= covered <= 0.985


def test_mcnemar_exact_equals_scipy_binomtest():
    for b, c in [(10, 2), (0, 5), (7, 7), (30, 12), (1, 0)]:
        assert mcnemar_exact(b, c) == pytest.approx(sp.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)


def test_paired_difference_interval_agrees_with_a_multinomial_bootstrap():
    """Newcombe's interval against a bootstrap done another way: multinomial draws of the 2x2 table."""
    rng = np.random.default_rng(1)
    n = 400
    a = rng.random(n) < 0.85
    b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.75)  # correlated with a, as two models are
    result = paired_difference(a, b)
    table = np.array([result.both, result.only_a, result.only_b, result.neither])
    assert table.sum() == n and result.difference == pytest.approx(a.mean() - b.mean())
    draws = rng.multinomial(n, table / n, size=20000)
    differences = (draws[:, 1] - draws[:, 2]) / n
    low, high = np.quantile(differences, [0.025, 0.975])
    assert result.low == pytest.approx(low, abs=0.01) and result.high == pytest.approx(high, abs=0.01)
    assert result.p_value == pytest.approx(sp.binomtest(int(table[2]), int(table[1] + table[2])).pvalue)


def test_paired_difference_edge_cases_stay_inside_minus_one_and_one():
    same = paired_difference([1, 0, 1, 1], [1, 0, 1, 1])
    assert same.difference == 0 and same.low < 0 < same.high and same.p_value == 1.0
    extreme = paired_table(0, 50, 0, 0)  # A right on all 50, B on none
    assert extreme.difference == 1.0 and 0.8 < extreme.low < 1.0 and extreme.high == 1.0
    with pytest.raises(StableTrainError, match="same examples"):
        paired_difference([1, 0], [1, 0, 1])
    with pytest.raises(StableTrainError, match="0/1"):
        paired_difference([2, 0], [1, 0])


def test_mean_interval_equals_scipy_t_interval_and_says_when_there_is_no_spread():
    values = [0.91, 0.95, 0.93, 0.90, 0.96]
    result = mean_interval(values)
    low, high = sp.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sp.sem(values))
    assert result.low == pytest.approx(low) and result.high == pytest.approx(high)
    assert result.std == pytest.approx(np.std(values, ddof=1))
    one = mean_interval([0.9])
    assert (one.std, one.low, one.high) == (None, None, None)
    with pytest.raises(StableTrainError, match="finite"):
        mean_interval([0.9, float("nan")])


def test_paired_bootstrap_agrees_with_a_loop_resampling_both_levels():
    """The vectorized two-level bootstrap against a plain loop over seeds and examples (another RNG)."""
    rng = np.random.default_rng(2)
    a = (rng.random((3, 120)) < 0.8).astype(int)
    b = (rng.random((3, 120)) < 0.7).astype(int)
    difference, low, high = paired_bootstrap(a, b, replicates=3000, seed=5)
    assert difference == pytest.approx(a.mean() - b.mean())
    other = np.random.default_rng(99)
    loop = []
    for _ in range(3000):
        seeds = other.integers(3, size=3)
        examples = other.integers(120, size=120)
        loop.append(np.mean([a[s][examples].mean() - b[s][examples].mean() for s in seeds]))
    ref_low, ref_high = np.quantile(loop, [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)
    # with one seed only the examples vary, and the interval matches the paired-proportion interval
    single = paired_bootstrap(a[:1], b[:1], replicates=4000)
    newcombe = paired_difference(a[0], b[0])
    assert single[1] == pytest.approx(newcombe.low, abs=0.03) and single[2] == pytest.approx(newcombe.high, abs=0.03)


def test_verdict_follows_the_interval_not_the_point_estimate():
    assert verdict(0.001, 0.04) == "held"
    assert verdict(-0.04, -0.001) == "did not hold"
    assert verdict(-0.001, 0.04) == "within noise"  # a positive estimate with an interval that includes 0
    assert verdict(-0.009, 0.01, threshold=-0.01) == "held"  # "within 1 point": the difference > -0.01
    assert verdict(-0.03, -0.012, threshold=-0.01) == "did not hold"


def _slow_delong(scores, labels):
    """DeLong's variance from its definition: the O(m n) kernel matrix (an independent computation)."""
    x, y = scores[labels == 1], scores[labels == 0]
    psi = (x[:, None] > y[None, :]).astype(float) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), math.sqrt(np.var(v10, ddof=1) / len(x) + np.var(v01, ddof=1) / len(y))


def test_auc_interval_equals_sklearn_auc_and_the_definition_of_delong_variance():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.4).astype(int)
    scores = rng.normal(labels * 0.8, 1.0).round(1)  # rounded: ties, which count one half
    result = auc_interval(scores, labels)
    auc, se = _slow_delong(scores, labels)
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12) == pytest.approx(auc)
    assert result.std_error == pytest.approx(se, rel=1e-9)
    assert result.low == pytest.approx(auc - 1.959964 * se, abs=1e-6)
    assert (result.signal, result.background) == (int(labels.sum()), int((1 - labels).sum()))
    with pytest.raises(StableTrainError, match="signal and background"):
        auc_interval([0.1, 0.2], [1, 1])


def test_rejection_interval_inverts_the_exact_binomial_interval():
    for passed, total in [(8, 800), (1, 50), (50, 100)]:
        result = rejection_interval(passed, total)
        ci = sp.binomtest(passed, total).proportion_ci(method="exact")
        assert result.rejection == pytest.approx(total / passed)
        assert result.low == pytest.approx(1 / ci.high) and result.high == pytest.approx(1 / ci.low)
        assert result.background == total and result.passed == passed
    none = rejection_interval(0, 200)
    assert math.isinf(none.rejection) and math.isinf(none.high) and 1 < none.low < 200


def test_proportion_and_format():
    p = proportion(36, 40)
    assert (p.k, p.n, p.value) == (36, 40, 0.9) and p.to_dict()["method"] == "wilson"
    assert format_interval(0.978, 0.969, 0.985) == "97.8 [96.9, 98.5]"
    assert format_interval(-0.012, -0.03, 0.004) == "-1.2 [-3.0, +0.4]"
    assert format_interval(0.5, None, None) == "50.0"
    with pytest.raises(StableTrainError, match="0 <= k <= n"):
        proportion(5, 4)
