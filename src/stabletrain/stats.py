"""Intervals and paired tests for the numbers a claim rests on.

A functional core, one function per statistic, each returning plain values
or a small frozen dataclass:

* :func:`wilson_interval` / :func:`proportion`: an accuracy ``k / n`` with
  its Wilson score interval (Wilson 1927; good coverage down to small ``n``
  and at 0 or 1, where the normal interval collapses).
* :func:`paired_difference`: two methods on the same test examples. The
  difference of their accuracies with Newcombe's (1998) method-10 interval
  for paired proportions, built from the two Wilson intervals and the
  correlation of the pairs, and the exact McNemar test on the discordant
  pairs.
* :func:`mean_interval`: a value over training seeds: mean, sample standard
  deviation and the Student-t interval of the mean; with one seed there is
  no spread, and the result says so (``std`` and the interval are None).
* :func:`paired_bootstrap`: the difference of two methods over seeds *and*
  test examples, by a two-level bootstrap that resamples seeds and, within
  the shared test set, examples: both sources of noise at once.
* :func:`verdict`: "held", "did not hold" or "within noise", decided by
  where the interval lies, never by the point estimate alone.
* :func:`auc_interval`: ROC AUC with DeLong's variance (fast midrank
  algorithm of Sun and Xu 2014) and its normal interval.
* :func:`rejection_interval`: background rejection ``1 / eps_B`` at a
  working point, with the number of background events behind it and the
  exact (Clopper-Pearson) binomial interval of ``eps_B``, inverted.

Example:
    >>> low, high = wilson_interval(45, 50)
    >>> round(low, 3), round(high, 3)
    (0.786, 0.957)
    >>> d = paired_difference([1, 1, 1, 0, 1, 1] * 10, [1, 0, 1, 0, 1, 0] * 10)
    >>> round(d.difference, 3), d.only_a, d.only_b, verdict(d.low, d.high)
    (0.333, 20, 0, 'held')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .checks import StableTrainError

__all__ = ["Proportion", "PairedDifference", "SeedSummary", "AUCInterval", "RejectionInterval", "wilson_interval",
           "proportion", "paired_difference", "paired_table", "mcnemar_exact", "mean_interval", "paired_bootstrap", "verdict",
           "auc_interval", "rejection_interval", "VERDICTS", "format_interval"]

#: The three outcomes of a claim.
VERDICTS = ("held", "did not hold", "within noise")


def _z(confidence: float) -> float:
    from scipy.stats import norm

    if not 0.0 < confidence < 1.0:
        raise StableTrainError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(norm.ppf(0.5 + confidence / 2))


def _count(k: int, n: int) -> tuple[int, int]:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n or n < 0 or not 0 <= k <= n:
        raise StableTrainError(f"a proportion needs integers 0 <= k <= n, got k={k!r}, n={n!r}")
    return int(k), int(n)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n``; ``(0, 1)`` when ``n`` is 0.

    Example:
        >>> wilson_interval(0, 10)[0], round(wilson_interval(0, 10)[1], 4)
        (0.0, 0.2775)
    """
    k, n = _count(k, n)
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exactly 0 and 1 at the ends (the formula gives them up to rounding)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its interval."""

    k: int
    n: int
    value: float
    low: float
    high: float
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "wilson"}


def proportion(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """``k / n`` with its Wilson interval.

    Example:
        >>> p = proportion(9, 10)
        >>> p.value, round(p.low, 3)
        (0.9, 0.596)
    """
    k, n = _count(k, n)
    low, high = wilson_interval(k, n, confidence)
    return Proportion(k, n, k / n if n else float("nan"), low, high, confidence)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(b + c, 1/2).

    Example:
        >>> mcnemar_exact(0, 0), round(mcnemar_exact(10, 2), 4)
        (1.0, 0.0386)
    """
    from scipy.stats import binom

    b, c = int(only_a), int(only_b)
    if b < 0 or c < 0:
        raise StableTrainError(f"discordant counts must be >= 0, got {only_a!r} and {only_b!r}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same ``n`` examples, with the 2×2 table behind it."""

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    difference: float
    low: float
    high: float
    p_value: float
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "Newcombe method 10 interval, exact McNemar test"}


def _as_flags(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise StableTrainError(f"{name} must be one flag per example, got shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise StableTrainError(f"{name} must hold 0/1 or booleans (correct or not, per example)")
    return array.astype(bool)


def paired_difference(correct_a: Sequence[int] | np.ndarray, correct_b: Sequence[int] | np.ndarray,
                      confidence: float = 0.95) -> PairedDifference:
    """Compare two methods on the same examples: ``acc(A) - acc(B)``, Newcombe's interval, McNemar's p.

    ``correct_a[i]`` and ``correct_b[i]`` say whether A and B got example
    ``i`` right. Newcombe's method 10 combines the Wilson intervals of both
    accuracies with the phi correlation of the pairs; it stays inside
    [-1, 1] and keeps its coverage when few pairs are discordant.
    """
    a, b = _as_flags(correct_a, "correct_a"), _as_flags(correct_b, "correct_b")
    if len(a) != len(b):
        raise StableTrainError(f"paired results need the same examples: {len(a)} against {len(b)}")
    return paired_table(int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()),
                        confidence)


def paired_table(both: int, only_a: int, only_b: int, neither: int, confidence: float = 0.95) -> PairedDifference:
    """:func:`paired_difference` from the 2×2 table of the pairs (A right and B right, A only, B only, neither)."""
    cells = [int(v) for v in (both, only_a, only_b, neither)]
    if any(v < 0 for v in cells):
        raise StableTrainError(f"a 2x2 table needs counts >= 0, got {cells}")
    e, f, g, h = cells
    n = e + f + g + h
    if n == 0:
        return PairedDifference(0, 0, 0, 0, 0, float("nan"), -1.0, 1.0, 1.0, confidence)
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson_interval(e + f, n, confidence)
    l2, u2 = wilson_interval(e + g, n, confidence)
    denominator = (e + f) * (g + h) * (e + g) * (f + h)
    phi = (e * h - f * g) / math.sqrt(denominator) if denominator else 0.0
    theta = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    epsilon = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return PairedDifference(n, e, f, g, h, theta, max(-1.0, theta - delta), min(1.0, theta + epsilon),
                            mcnemar_exact(f, g), confidence)


@dataclass(frozen=True)
class SeedSummary:
    """A value over training seeds. With one seed, ``std``, ``low`` and ``high`` are None: no spread."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {"seeds": self.n, "mean": self.mean, "std": self.std, "low": self.low, "high": self.high,
                "confidence": self.confidence, "method": "Student t interval of the mean"}


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Mean, sample standard deviation (``ddof=1``) and the t interval of the mean over seeds.

    Example:
        >>> s = mean_interval([0.90, 0.92, 0.94])
        >>> round(s.mean, 3), round(s.std, 3), round(s.low, 4), round(s.high, 4)
        (0.92, 0.02, 0.8703, 0.9697)
        >>> mean_interval([0.9]).std is None
        True
    """
    from scipy.stats import t

    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0 or not np.isfinite(array).all():
        raise StableTrainError(f"mean_interval needs one or more finite values, got {list(values)!r}")
    mean = float(array.mean())
    if len(array) == 1:
        return SeedSummary(1, mean, None, None, None, confidence)
    _z(confidence)
    std = float(array.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, len(array) - 1)) * std / math.sqrt(len(array))
    return SeedSummary(len(array), mean, std, mean - half, mean + half, confidence)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, replicates: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """``(difference, low, high)`` of mean accuracy A − B over seeds and the shared test examples.

    ``correct_a`` and ``correct_b`` are ``seeds × examples`` 0/1 arrays,
    row ``s`` the seed-``s`` model of each method on the same examples. Each
    replicate draws seeds with replacement (the same draw for A and B: seed
    ``s`` of both methods shares the data split and the initialization) and
    examples with replacement (the same for every seed and method: the test
    set is shared), and takes the difference of the mean accuracies; the
    interval is the percentile interval. With one seed only examples vary.

    Example:
        >>> a = np.array([[1, 1, 1, 1, 0] * 8, [1, 1, 1, 0, 0] * 8])
        >>> b = np.array([[1, 1, 0, 0, 0] * 8, [1, 1, 1, 0, 0] * 8])
        >>> d, low, high = paired_bootstrap(a, b)
        >>> round(d, 3), low <= d <= high
        (0.2, True)
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise StableTrainError(f"paired_bootstrap needs two seeds x examples arrays of one shape, got {a.shape} "
                               f"and {b.shape}")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 100:
        raise StableTrainError(f"replicates must be an integer >= 100, got {replicates!r}")
    _z(confidence)
    seeds, examples = a.shape
    difference = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    per_example = a - b  # seeds x examples
    out = np.empty(replicates)
    for r in range(replicates):
        rows = rng.integers(seeds, size=seeds) if seeds > 1 else np.zeros(1, dtype=np.int64)
        # examples: counts of each example in the resample, so one matrix product per replicate
        weights = np.bincount(rng.integers(examples, size=examples), minlength=examples)
        out[r] = float(per_example[rows].sum(0) @ weights) / (seeds * examples)
    tail = (1 - confidence) / 2
    return difference, float(np.quantile(out, tail)), float(np.quantile(out, 1 - tail))


def verdict(low: float | None, high: float | None, threshold: float = 0.0) -> str:
    """Whether a claim "quantity > threshold" held: by the interval ``[low, high]`` of the quantity.

    ``'held'`` when the whole interval is above ``threshold``, ``'did not
    hold'`` when it is wholly below, and ``'within noise'`` when it contains
    it (or when there is no interval). For "A within 1 point of B", test
    ``acc(A) - acc(B) > -0.01``.

    Example:
        >>> verdict(0.01, 0.05), verdict(-0.05, -0.01), verdict(-0.01, 0.02), verdict(None, None)
        ('held', 'did not hold', 'within noise', 'within noise')
    """
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "within noise"
    if low > threshold:
        return "held"
    if high < threshold:
        return "did not hold"
    return "within noise"


@dataclass(frozen=True)
class AUCInterval:
    """ROC AUC with DeLong's standard error and its normal interval (clipped to [0, 1])."""

    auc: float
    std_error: float
    low: float
    high: float
    signal: int
    background: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "DeLong"}


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def auc_interval(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                 confidence: float = 0.95) -> AUCInterval:
    """ROC AUC of ``scores`` for ``labels`` (1 = signal) with DeLong's interval.

    The AUC is the Mann-Whitney statistic (ties count one half); its
    variance is DeLong's, from the structural components computed with
    midranks (Sun and Xu 2014), in ``O(n log n)``.

    Example:
        >>> r = auc_interval([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> r.auc, r.signal, r.background
        (0.75, 2, 2)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise StableTrainError(f"auc_interval needs one score per label, got shapes {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise StableTrainError("auc_interval: scores hold NaN or inf")
    if not np.isin(y, (0, 1)).all():
        raise StableTrainError("auc_interval: labels must be 0 (background) or 1 (signal)")
    positive, negative = s[y == 1], s[y == 0]
    m, n = len(positive), len(negative)
    if m == 0 or n == 0:
        raise StableTrainError(f"auc_interval needs signal and background, got {m} signal and {n} background")
    z = _z(confidence)
    all_ranks = _midranks(np.concatenate([positive, negative]))
    tx, ty = _midranks(positive), _midranks(negative)
    auc = float((all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (all_ranks[:m] - tx) / n  # per signal event: the share of background it outscores
    v01 = 1.0 - (all_ranks[m:] - ty) / m  # per background event: the share of signal that outscores it
    variance = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    se = float(math.sqrt(max(variance, 0.0)))
    return AUCInterval(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), m, n, confidence)


@dataclass(frozen=True)
class RejectionInterval:
    """Background rejection ``1 / eps_B`` with the ``passed`` of ``background`` events behind it."""

    rejection: float
    low: float
    high: float
    passed: int
    background: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "Clopper-Pearson interval of the background efficiency, inverted"}


def rejection_interval(passed: int, background: int, confidence: float = 0.95) -> RejectionInterval:
    """``1 / eps_B`` for ``passed`` of ``background`` events passing the cut, with an exact interval.

    The Clopper-Pearson interval ``[lo, hi]`` of ``eps_B`` gives the
    rejection interval ``[1 / hi, 1 / lo]``; when no background event
    passes, the rejection is infinite and only its lower bound is finite.

    Example:
        >>> r = rejection_interval(8, 800)
        >>> r.rejection, round(r.low, 1), round(r.high, 1)
        (100.0, 51.0, 231.1)
    """
    from scipy.stats import beta

    k, n = _count(passed, background)
    if n == 0:
        raise StableTrainError("a background rejection needs background events")
    alpha = 1 - confidence
    _z(confidence)
    low_eff = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high_eff = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    rejection = math.inf if k == 0 else n / k
    return RejectionInterval(rejection, 1.0 / high_eff, math.inf if low_eff == 0 else 1.0 / low_eff, k, n, confidence)


def format_interval(value: float, low: float | None, high: float | None, *, percent: bool = True,
                    digits: int = 1, signed: bool | None = None) -> str:
    """``'97.8 [96.9, 98.5]'`` (percent points by default); ``'97.8'`` when there is no interval.

    ``signed`` (default: when the value or the interval's low end is
    negative, as for a difference) writes a sign on every number.

    Example:
        >>> format_interval(0.978, 0.969, 0.985)
        '97.8 [96.9, 98.5]'
        >>> format_interval(0.02, -0.01, 0.05)
        '+2.0 [-1.0, +5.0]'
    """
    scale = 100.0 if percent else 1.0
    if signed is None:
        signed = value < 0 or (low is not None and low < 0)

    def num(v: float) -> str:
        return f"{v * scale:+.{digits}f}" if signed else f"{v * scale:.{digits}f}"

    if low is None or high is None:
        return num(value)
    return f"{num(value)} [{num(low)}, {num(high)}]"
