"""engine.metrics against hand computations: DeLong, Youden, NaN labels, micro/macro."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.metrics import compute_metrics, micro_auc, read_metrics, write_metrics
from luvnet.engine.evaluation.roc import (
    Z_95,
    delong_auc,
    delong_test,
    midrank,
    roc_auc,
    threshold_stats,
    two_sided_p,
    youden_threshold,
)

# 3 positives, 4 negatives, with a tie across the classes at 0.6 and at 0.4.
HAND_Y = [1, 1, 1, 0, 0, 0, 0]
HAND_S = [0.9, 0.6, 0.4, 0.6, 0.4, 0.2, 0.1]


def psi(x: float, y: float) -> Fraction:
    """DeLong's kernel: 1 if the positive outranks the negative, 1/2 on a tie."""
    return Fraction(1) if x > y else Fraction(1, 2) if x == y else Fraction(0)


def placements(labels, scores) -> tuple[list[Fraction], list[Fraction]]:
    """V10 (one per positive) and V01 (one per negative) by the definition, pair by pair."""
    xs = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    ys = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    v10 = [sum((psi(x, y) for y in ys), Fraction(0)) / len(ys) for x in xs]
    v01 = [sum((psi(x, y) for x in xs), Fraction(0)) / len(xs) for y in ys]
    return v10, v01


def sample_var(values: list[Fraction]) -> Fraction:
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((v - mean) ** 2 for v in values), Fraction(0)) / (len(values) - 1)


def test_delong_variance_of_the_hand_example():
    # By hand: V10 = [4/4, 3.5/4, 2.5/4] = [1, 7/8, 5/8], V01 = [1.5/3, 2.5/3, 1, 1].
    # AUC = mean V10 = 5/6. var(V10) = 7/96, var(V01) = 1/6 (ddof=1), so
    # var(AUC) = 7/96 / 3 + 1/6 / 4 = 7/576 + 8/576 = 5/192.
    v10, v01 = placements(HAND_Y, HAND_S)
    assert v10 == [1, Fraction(7, 8), Fraction(5, 8)]
    assert v01 == [Fraction(1, 2), Fraction(5, 6), 1, 1]
    est = delong_auc(HAND_Y, HAND_S)
    assert est.auc == pytest.approx(5 / 6, abs=1e-15)
    assert est.var == pytest.approx(5 / 192, rel=1e-12)
    assert (est.n_pos, est.n_neg, est.reason) == (3, 4, None)
    half = 1.959963984540054 * math.sqrt(5 / 192)
    assert est.ci95 == pytest.approx((5 / 6 - half, 1.0))  # upper end clipped to 1


def test_z95_is_the_normal_quantile():
    assert abs(Z_95 - 1.959963984540054) < 1e-12
    assert two_sided_p(Z_95) == pytest.approx(0.05, abs=1e-12)
    assert two_sided_p(0.0) == 1.0
    assert two_sided_p(-1.0) == two_sided_p(1.0) == pytest.approx(0.31731050786291415)


def test_midrank_shares_ranks_between_ties():
    assert midrank(np.array([0.3, 0.1, 0.3, 0.2, 0.3])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


labelled_scores = st.integers(2, 14).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n).filter(
            lambda y: 2 <= sum(y) <= len(y) - 2
        ),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),  # few values: many ties
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(labelled_scores)
def test_fast_delong_matches_the_pairwise_definition(case):
    y, a, b = case
    va10, va01 = placements(y, a)
    vb10, vb01 = placements(y, b)
    m, n = len(va10), len(va01)
    est = delong_auc(y, a)
    assert est.auc == pytest.approx(float(sum(va10) / m), abs=1e-12)
    assert est.var == pytest.approx(float(sample_var(va10) / m + sample_var(va01) / n), abs=1e-12)
    # Paired test: the variance of the difference from the differences of the placements.
    d10 = [p - q for p, q in zip(va10, vb10, strict=True)]
    d01 = [p - q for p, q in zip(va01, vb01, strict=True)]
    var_diff = float(sample_var(d10) / m + sample_var(d01) / n)
    diff = float(sum(va10) / m - sum(vb10) / m)
    test = delong_test(y, a, b)
    assert test.diff == pytest.approx(diff, abs=1e-12)
    if var_diff > 1e-9:
        assert test.z == pytest.approx(diff / math.sqrt(var_diff), rel=1e-9)
        assert test.p_value == pytest.approx(math.erfc(abs(test.z) / math.sqrt(2)))
    swapped = delong_test(y, b, a)
    assert swapped.p_value == pytest.approx(test.p_value)
    if test.z is not None:
        assert swapped.z == pytest.approx(-test.z)


def test_paired_test_of_identical_scores_is_p_one():
    t = delong_test(HAND_Y, HAND_S, list(HAND_S))
    assert (t.z, t.p_value, t.diff, t.reason) == (0.0, 1.0, 0.0, None)


def test_paired_test_hand_value():
    # B moves the tied negative at 0.6 down to 0.5: only that pair changes (psi 1/2 -> 1).
    b = [0.9, 0.6, 0.4, 0.5, 0.4, 0.2, 0.1]
    t = delong_test(HAND_Y, HAND_S, b)
    # Differences of placements (A minus B): V10 = [0, -1/8, 0]; V01 = [1/2 - 2/3, 0, 0, 0].
    # var = var([0, -1/8, 0]) / 3 + var([-1/6, 0, 0, 0]) / 4 = (1/192) / 3 + (1/144) / 4 = 1/288
    # z = (-1/24) / sqrt(1/288) = -1/sqrt(2).
    assert Fraction(1, 192) / 3 + Fraction(1, 144) / 4 == Fraction(1, 288)
    assert t.diff == pytest.approx(-1 / 24)
    assert t.z == pytest.approx(-1 / math.sqrt(2))
    assert t.p_value == pytest.approx(math.erfc(abs(t.z) / math.sqrt(2)))


def test_paired_test_with_certain_difference():
    # Perfect model against a constant one: difference 1/2, zero variance -> p = 0, z undefined.
    y = [1, 1, 0, 0]
    t = delong_test(y, [0.9, 0.8, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5])
    assert (t.diff, t.z, t.p_value) == (0.5, None, 0.0)
    assert "zero variance" in t.reason


def test_hand_made_roc_youden_threshold_is_the_optimal_point_itself():
    # Sorted scores with (tpr, fpr) for "score >= t":
    #   0.9 (.25, 0)  0.8 (.5, 0)  0.7 (.5, .2)  0.55 (.75, .2)  0.5 (.75, .4)
    #   0.4 (.75, .6)  0.3 (1, .6)  0.2 (1, .8)  0.1 (1, 1)
    # J peaks at 0.55 (0.55); the off-by-one neighbours would be 0.7 or 0.5.
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.55, 0.3, 0.7, 0.5, 0.4, 0.2, 0.1]
    t = youden_threshold(y, s)
    assert t == 0.55
    stats = threshold_stats(y, s, t)
    assert (stats.tp, stats.fp, stats.tn, stats.fn) == (3, 1, 4, 1)
    assert (stats.sensitivity, stats.specificity) == (0.75, 0.8)
    assert stats.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        # tied score across classes: threshold 0.6 counts all three 0.6 scores as positive
        ([1, 1, 1, 0, 0, 0, 0], [0.9, 0.6, 0.6, 0.6, 0.2, 0.1, 0.1], 0.6),
        # J = 0.5 at 0.8 and at 0.6: the higher (more specific) threshold wins
        ([1, 1, 0, 0], [0.8, 0.6, 0.6, 0.3], 0.8),
        # scores in reverse order: J < 0 everywhere except "all positive" at the lowest score
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.1),
        # J = 1/2 - 2/10 = 1 - 7/10 exactly, although 0.5 - 0.2 != 1 - 0.7 in floating point
        ([0] * 8 + [1, 0, 0, 1], [0, 0, 0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5], 0.5),
    ],
)
def test_youden_ties(y, s, expected):
    assert youden_threshold(y, s) == expected


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_youden_maximises_j_over_every_score(case):
    y, s, _ = case
    s = [v / 4 for v in s]

    def j(t: float) -> Fraction:  # exact, so that ties are ties
        c = threshold_stats(y, s, t)
        return Fraction(c.tp, c.tp + c.fn) - Fraction(c.fp, c.fp + c.tn)

    best = youden_threshold(y, s)
    assert best in s
    assert all(j(best) >= j(t) for t in s)
    assert all(j(best) > j(t) for t in s if t > best)


def test_threshold_stats_undefined_rates():
    only_pos = threshold_stats([1, 1, np.nan], [0.2, 0.9, 0.5], 0.5)
    assert (only_pos.sensitivity, only_pos.specificity, only_pos.f1) == (0.5, None, 2 / 3)
    only_neg = threshold_stats([0, 0], [0.2, 0.9], 0.5)
    assert (only_neg.sensitivity, only_neg.specificity, only_neg.f1) == (None, 0.5, None)


def test_unknown_labels_are_dropped_per_pattern():
    y = np.array([1, np.nan, 1, 0, np.nan, 0, 0, 1, 0])
    s = np.array([0.9, 0.0, 0.6, 0.6, 1.0, 0.2, 0.1, 0.4, 0.4])
    known = ~np.isnan(y)
    assert delong_auc(y, s) == delong_auc(y[known], s[known])
    assert youden_threshold(y, s) == youden_threshold(y[known], s[known])
    assert roc_auc(y, s) == roc_auc(y[known], s[known])


def test_undefined_auc_reasons():
    est = delong_auc([np.nan, np.nan], [0.1, 0.2])
    assert (est.auc, est.var, est.ci95, est.reason) == (None, None, None, "no known labels")
    est = delong_auc([1, 1, np.nan], [0.1, 0.2, 0.3])
    assert est.auc is None and "only one class" in est.reason
    est = delong_auc([1, 0, 0], [0.9, 0.2, 0.3])  # AUC defined, variance needs 2 per class
    assert est.auc == 1.0 and est.var is None and "at least 2 positives" in est.reason
    assert youden_threshold([0, 0, np.nan], [0.1, 0.2, 0.3]) is None


def covid_blues_like() -> tuple[np.ndarray, np.ndarray]:
    """8 clips: pattern 2 never labelled, pattern 3 only negatives, some unknown a/b labels."""
    nan = np.nan
    y = np.array(
        [
            [1, 0, nan, 0],
            [1, 1, nan, 0],
            [0, 1, nan, nan],
            [0, 0, nan, 0],
            [nan, 1, nan, 0],
            [1, nan, nan, 0],
            [0, 0, nan, 0],
            [0, 1, nan, 0],
        ]
    )
    p = np.array(
        [
            [0.8, 0.3, 0.5, 0.1],
            [0.6, 0.7, 0.5, 0.2],
            [0.6, 0.4, 0.5, 0.3],
            [0.3, 0.2, 0.5, 0.1],
            [0.9, 0.9, 0.5, 0.1],
            [0.2, 0.1, 0.5, 0.4],
            [0.1, 0.5, 0.5, 0.1],
            [0.5, 0.6, 0.5, 0.2],
        ]
    )
    return y, p


def test_compute_metrics_with_missing_labels():
    y, p = covid_blues_like()
    names = ("a_lines", "b_lines", "consolidation", "pleural_effusion")
    out = compute_metrics(y, p, None, names)
    json.dumps(out, allow_nan=False)  # strict JSON: undefined figures are null, not NaN
    assert out["n_clips"] == 8 and out["threshold_source"] == "youden"
    cons, eff = out["patterns"]["consolidation"], out["patterns"]["pleural_effusion"]
    assert cons["auc"] is None and cons["threshold"] is None and cons["f1"] is None
    assert cons["reason"] == "no known labels" and cons["n_unknown"] == 8
    assert eff["auc"] is None and eff["sensitivity"] is None and "only one class" in eff["reason"]
    assert (eff["n_pos"], eff["n_neg"], eff["n_unknown"]) == (0, 7, 1)
    a = out["patterns"]["a_lines"]
    known = ~np.isnan(y[:, 0])
    assert a["auc"] == delong_auc(y[known, 0], p[known, 0]).auc
    assert (a["n_pos"], a["n_neg"], a["n_unknown"]) == (3, 4, 1)
    assert a["threshold"] == youden_threshold(y[known, 0], p[known, 0])
    # Micro AUC: every known (clip, pattern) pair, brute force.
    pairs = [(p[i, k], y[i, k]) for i in range(8) for k in range(4) if not np.isnan(y[i, k])]
    v10, _ = placements([lab for _, lab in pairs], [s for s, _ in pairs])
    assert out["micro_auc"] == pytest.approx(float(sum(v10) / len(v10)))
    # Macro AUC: mean of the two defined pattern AUCs only (not 0.5 for the others).
    b = out["patterns"]["b_lines"]["auc"]
    assert out["macro_auc"] == pytest.approx((a["auc"] + b) / 2)
    assert out["macro_auc_patterns"] == ["a_lines", "b_lines"]
    assert out["macro_auc_method"] == "mean_of_pattern_aucs"


def test_compute_metrics_given_thresholds():
    y, p = covid_blues_like()
    out = compute_metrics(y, p, [0.55, None, 0.5, 0.15])
    a = out["patterns"]["a_lines"]
    expected = threshold_stats(y[:, 0], p[:, 0], 0.55)
    assert out["threshold_source"] == "given"
    assert (a["threshold"], a["sensitivity"], a["specificity"]) == (
        0.55,
        expected.sensitivity,
        expected.specificity,
    )
    assert out["patterns"]["b_lines"]["sensitivity"] is None
    assert "no threshold given" in out["patterns"]["b_lines"]["reason"]
    eff = out["patterns"]["pleural_effusion"]  # negatives only: specificity is still defined
    assert eff["specificity"] == threshold_stats(y[:, 3], p[:, 3], 0.15).specificity
    assert eff["sensitivity"] is None


def test_nothing_defined():
    out = compute_metrics(np.full((3, 4), np.nan), np.full((3, 4), 0.5))
    assert out["micro_auc"] is None and out["macro_auc"] is None
    assert out["reasons"] == {
        "micro_auc": "no known labels",
        "macro_auc": "no pattern has a defined AUC",
    }


def test_micro_auc_pools_patterns():
    y = np.array([[1, 0], [0, 1]])
    p = np.array([[0.9, 0.1], [0.2, 0.3]])
    # Pooled: positives 0.9, 0.3; negatives 0.1, 0.2 -> every pair ordered.
    assert micro_auc(y, p) == 1.0


@pytest.mark.parametrize(
    ("labels", "probs", "thresholds", "message"),
    [
        ([[2, 0, 0, 0]], [[0.1] * 4], None, "labels: expected 0, 1 or NaN (unknown), got 2.0"),
        ([[1, 0, 0, 0]], [[0.1, np.nan, 0.1, 0.1]], None, "probs: expected finite values"),
        ([[1, 0, 0]], [[0.1] * 3], None, "labels: expected shape [N, 4], got (1, 3)"),
        ([[1, 0, 0, 0]], [[0.1] * 4] * 2, None, "probs: expected shape (1, 4)"),
        ([[1, 0, 0, 0]], [[0.1] * 4], [0.5], "thresholds: expected 4 values"),
    ],
)
def test_bad_input_is_one_clear_error(labels, probs, thresholds, message):
    with pytest.raises(LuvnetError) as err:
        compute_metrics(labels, probs, thresholds)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_metrics_json_round_trip_and_checks(tmp_path):
    y, p = covid_blues_like()
    out = compute_metrics(y, p)
    path = tmp_path / "metrics_val.json"
    write_metrics(path, out)
    assert read_metrics(path) == out
    bad = dict(out, micro_auc=1.5)
    path.write_text(json.dumps(bad))
    with pytest.raises(LuvnetError, match=r"metrics_val.json: micro_auc: expected a number in"):
        read_metrics(path)
    bad = dict(out, patterns={"a_lines": {"auc": 0.5}})
    path.write_text(json.dumps(bad))
    with pytest.raises(LuvnetError, match=r"patterns.a_lines: missing key\(s\) \['auc_ci95'"):
        read_metrics(path)
    path.write_text(json.dumps(dict(out, macro_auc_method="interpolated_mean_roc")))
    with pytest.raises(LuvnetError, match="macro_auc_method: expected 'mean_of_pattern_aucs'"):
        read_metrics(path)
    path.write_text("{not json")
    with pytest.raises(LuvnetError, match="not a readable JSON file"):
        read_metrics(path)
