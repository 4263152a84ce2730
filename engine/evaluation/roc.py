"""ROC statistics of one or two score vectors against binary labels with unknowns.

- ROC AUC as the Mann-Whitney statistic (ties count one half).
- DeLong variance, 95% CI and the paired two-sided DeLong test, computed with the fast midrank
  algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)); the variances use
  ``ddof=1`` like R's pROC ``var(roc, method="delong")``.
- The same paired test with cases clustered (a patient's clips), after Obuchowski (1997).
- Youden threshold: the score value at the ROC point maximising tpr - fpr, where a clip is
  predicted positive when ``prob >= threshold``. The threshold is the score at the optimum itself,
  not its neighbour (the authors' code is off by one there).
- Sensitivity, specificity and F1 at a given threshold.

Labels are float arrays ``[N]`` with NaN = unknown; every figure uses the known rows only. A
figure that is undefined (no known labels, a single class, too few cases for a variance) is
``None`` and the result's ``reason`` says why. :mod:`~luvnet.engine.evaluation.metrics` builds
the paper's per-pattern protocol on these.

The normal distribution comes from the standard library (``math.erfc``,
``statistics.NormalDist``), so there is no SciPy dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from luvnet.engine.errors import LuvnetError

# Two-sided 95% normal quantile, 1.959963984540054.
Z_95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class AucEstimate:
    """AUC of one score vector with its DeLong variance; ``None`` fields are undefined."""

    auc: float | None
    var: float | None
    ci95: tuple[float, float] | None
    n_pos: int
    n_neg: int
    reason: str | None = None


@dataclass(frozen=True)
class DelongTest:
    """Paired two-sided DeLong test of AUC(a) = AUC(b) on the same cases."""

    auc_a: float | None
    auc_b: float | None
    diff: float | None  # auc_a - auc_b
    z: float | None
    p_value: float | None
    n_pos: int
    n_neg: int
    reason: str | None = None


@dataclass(frozen=True)
class ThresholdStats:
    """Confusion counts and rates of ``score >= threshold`` on the known rows."""

    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float | None
    specificity: float | None
    f1: float | None


# --- input checks -----------------------------------------------------------------------------


def _labels_1d(labels: ArrayLike, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels, dtype=float)
    if arr.ndim != 1:
        raise LuvnetError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    check_label_values(arr, name)
    return arr


def check_label_values(arr: np.ndarray, name: str) -> None:
    bad = ~(np.isnan(arr) | (arr == 0) | (arr == 1))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LuvnetError(
            f"{name}: expected 0, 1 or NaN (unknown), got {float(arr[where])!r} at {where}"
        )


def _scores(scores: ArrayLike, n: int, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.shape != (n,):
        raise LuvnetError(f"{name}: expected shape ({n},) like the labels, got {arr.shape}")
    if not np.isfinite(arr).all():
        i = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise LuvnetError(f"{name}: expected finite scores, got {float(arr[i])!r} at row {i}")
    return arr


def _known(labels: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boolean labels of the known rows and the matching rows of each score vector."""
    y = _labels_1d(labels)
    arrays = [_scores(s, len(y), f"scores[{i}]") for i, s in enumerate(scores)]
    keep = ~np.isnan(y)
    return y[keep] == 1, [a[keep] for a in arrays]


def class_reason(n_pos: int, n_neg: int) -> str | None:
    if n_pos + n_neg == 0:
        return "no known labels"
    if n_pos == 0 or n_neg == 0:
        return f"only one class among the known labels ({n_pos} positive, {n_neg} negative)"
    return None


# --- AUC and DeLong ---------------------------------------------------------------------------


def midrank(x: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def _components(
    positive: np.ndarray, scores: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu fast DeLong: AUCs [k], placements V10 [k, m] and V01 [k, n].

    V10[i] = P(positive i outranks a random negative), V01[j] = P(a random positive outranks
    negative j), ties counting one half; both average to the AUC.
    """
    m, n = int(positive.sum()), int((~positive).sum())
    aucs, v10, v01 = [], [], []
    for s in scores:
        x, y = s[positive], s[~positive]
        tz = midrank(np.concatenate([x, y]))
        tx, ty = midrank(x), midrank(y)
        aucs.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Mann-Whitney AUC over the known rows; ``None`` when only one class is known."""
    positive, (s,) = _known(labels, scores)
    if class_reason(int(positive.sum()), int((~positive).sum())):
        return None
    return float(_components(positive, [s])[0][0])


def delong_auc(labels: ArrayLike, scores: ArrayLike) -> AucEstimate:
    """AUC, DeLong variance and 95% CI (normal, clipped to [0, 1]) over the known rows."""
    positive, (s,) = _known(labels, scores)
    m, n = int(positive.sum()), int((~positive).sum())
    reason = class_reason(m, n)
    if reason:
        return AucEstimate(None, None, None, m, n, reason)
    aucs, v10, v01 = _components(positive, [s])
    auc = float(aucs[0])
    if m < 2 or n < 2:
        reason = f"DeLong variance needs at least 2 positives and 2 negatives, got {m} and {n}"
        return AucEstimate(auc, None, None, m, n, reason)
    var = float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
    half = Z_95 * math.sqrt(var)
    return AucEstimate(auc, var, (max(0.0, auc - half), min(1.0, auc + half)), m, n)


def two_sided_p(z: float) -> float:
    """Two-sided normal p-value; erfc keeps precision far in the tail."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def delong_test(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> DelongTest:
    """Paired two-sided DeLong test of equal AUCs for two score vectors on the same cases.

    z = (AUC_a - AUC_b) / sqrt(var(a) + var(b) - 2 cov(a, b)). The variance of the difference is
    taken from the differences of the placements, which is the same quantity and exactly 0 for
    identical inputs (then z = 0, p = 1). A nonzero difference with zero variance (e.g. a
    perfect model against a constant one) gives p = 0 and z = None.
    """

    def variance(
        positive: np.ndarray, aucs: np.ndarray, v10: np.ndarray, v01: np.ndarray
    ) -> tuple[float, float] | str:
        m, n = v10.shape[1], v01.shape[1]
        if m < 2 or n < 2:
            return f"DeLong test needs at least 2 positives and 2 negatives, got {m} and {n}"
        var = float(np.var(v10[0] - v10[1], ddof=1) / m + np.var(v01[0] - v01[1], ddof=1) / n)
        scale = float(np.var(v10, ddof=1, axis=1).sum() / m + np.var(v01, ddof=1, axis=1).sum() / n)
        return var, scale

    return _paired_test(labels, scores_a, scores_b, variance)


def clustered_delong_test(
    labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, clusters: Sequence[str]
) -> DelongTest:
    """:func:`delong_test` with cases grouped in clusters (a patient's clips), after
    Obuchowski (1997, Biometrics 53(2): "Nonparametric analysis of clustered ROC curve data").

    The AUCs are the same Mann-Whitney statistics; only the variance of their difference
    changes. With the placements V10 and V01 of the difference summed per cluster i
    (V10_i over its m_i positives, V01_i over its n_i negatives), M positives, N negatives,
    d = AUC_a - AUC_b, I clusters, I10 of them holding a positive and I01 a negative:

        S10 = I10 / ((I10 - 1) M) * sum_i (V10_i - m_i d)^2
        S01 = I01 / ((I01 - 1) N) * sum_i (V01_i - n_i d)^2
        S11 = I / (I - 1) * sum_i (V10_i - m_i d) (V01_i - n_i d)
        var(d) = S10 / M + S01 / N + 2 S11 / (M N)

    Clips of one patient thus count as one draw: copying every clip of every patient r times
    leaves var(d) as it was, where the unclustered test's shrinks about r-fold; with one case
    per cluster it is :func:`delong_test`'s variance.

    Args:
        labels: ``[N]`` floats, 1 / 0 / NaN (unknown rows are left out).
        scores_a, scores_b: ``[N]`` finite scores of the two models on the same cases.
        clusters: ``[N]`` cluster ids (e.g. patient ids), one per case.

    Raises:
        LuvnetError: ``clusters`` is not one id per case, or a score is not finite.
    """
    y = _labels_1d(labels)
    if len(clusters) != len(y):
        raise LuvnetError(f"clusters: expected {len(y)} ids, one per case, got {len(clusters)}")
    _, cluster = np.unique(np.asarray(clusters, dtype=object)[~np.isnan(y)], return_inverse=True)

    def variance(
        positive: np.ndarray, aucs: np.ndarray, v10: np.ndarray, v01: np.ndarray
    ) -> tuple[float, float] | str:
        pos, neg = cluster[positive], cluster[~positive]
        i10, i01 = len(np.unique(pos)), len(np.unique(neg))
        if i10 < 2 or i01 < 2:
            return (
                "a clustered test needs positives in at least 2 clusters and negatives in at "
                f"least 2, got {i10} and {i01}"
            )
        m, n, count = len(pos), len(neg), int(cluster.max()) + 1

        def one(p10: np.ndarray, p01: np.ndarray, theta: float) -> float:
            r10 = np.bincount(pos, p10, count) - np.bincount(pos, None, count) * theta
            r01 = np.bincount(neg, p01, count) - np.bincount(neg, None, count) * theta
            s10 = i10 / (i10 - 1) * (r10 @ r10) / m**2
            s01 = i01 / (i01 - 1) * (r01 @ r01) / n**2
            return float(s10 + s01 + 2 * count / (count - 1) * (r10 @ r01) / (m * n))

        var = one(v10[0] - v10[1], v01[0] - v01[1], float(aucs[0] - aucs[1]))
        return var, sum(one(v10[k], v01[k], float(aucs[k])) for k in (0, 1))

    return _paired_test(labels, scores_a, scores_b, variance)


# The variance of AUC_a - AUC_b and, for the round-off guard, of the two AUCs summed, from the
# known labels (positive), the AUCs and placements of _components; or why it is undefined.
_Variance = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], "tuple[float, float] | str"]


def _paired_test(
    labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, variance: _Variance
) -> DelongTest:
    """The paired test of :func:`delong_test` with its variance taken from ``variance``."""
    positive, (a, b) = _known(labels, scores_a, scores_b)
    m, n = int(positive.sum()), int((~positive).sum())
    reason = class_reason(m, n)
    if reason:
        return DelongTest(None, None, None, None, None, m, n, reason)
    aucs, v10, v01 = _components(positive, [a, b])
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    diff = auc_a - auc_b
    spread = variance(positive, aucs, v10, v01)
    if isinstance(spread, str):
        return DelongTest(auc_a, auc_b, diff, None, None, m, n, spread)
    var, scale = spread
    # Round-off guard: a variance this small relative to the AUC variances is zero.
    if var <= 1e-12 * max(scale, 1e-300):
        if abs(diff) <= 1e-12:
            return DelongTest(auc_a, auc_b, 0.0, 0.0, 1.0, m, n)
        reason = "zero variance of the AUC difference: the difference is certain"
        return DelongTest(auc_a, auc_b, diff, None, 0.0, m, n, reason)
    z = diff / math.sqrt(var)
    return DelongTest(auc_a, auc_b, diff, z, two_sided_p(z), m, n)


# --- thresholds -------------------------------------------------------------------------------


def youden_threshold(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """The score value t maximising tpr - fpr when predicting ``score >= t``.

    Candidates are the distinct observed scores, so the threshold is always a real score and the
    ROC point it names is exactly the optimum. Ties in J go to the highest threshold (the most
    specific of the equally good points). ``None`` when only one class is known.
    """
    positive, (s,) = _known(labels, scores)
    m, n = int(positive.sum()), int((~positive).sum())
    if class_reason(m, n):
        return None
    order = np.argsort(-s, kind="stable")
    s_sorted, pos_sorted = s[order], positive[order]
    tp = np.cumsum(pos_sorted)
    fp = np.cumsum(~pos_sorted)
    # The ROC point of threshold t counts every score >= t: the last index of each tied run.
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    thresholds = s_sorted[last_of_run]
    # J * m * n = tp * n - fp * m in integers, so ties are exact, not at the mercy of rounding.
    j_scaled = tp[last_of_run] * n - fp[last_of_run] * m
    return float(thresholds[int(np.argmax(j_scaled))])  # first maximum = highest threshold


def threshold_stats(labels: ArrayLike, scores: ArrayLike, threshold: float) -> ThresholdStats:
    """Sensitivity, specificity and F1 of ``score >= threshold`` over the known rows.

    Sensitivity and F1 are ``None`` without known positives (recall is 0/0), specificity is
    ``None`` without known negatives.
    """
    if not math.isfinite(threshold):
        raise LuvnetError(f"threshold: expected a finite number, got {threshold!r}")
    positive, (s,) = _known(labels, scores)
    predicted = s >= threshold
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    tn = int((~predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else None
    return ThresholdStats(tp, fp, tn, fn, sens, spec, f1)
