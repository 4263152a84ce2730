"""The paper's metric protocol (``../shared/docs/luvnet-spec.md`` section 4).

- ROC AUC as the Mann-Whitney statistic (ties count one half).
- DeLong variance, 95% CI and the paired two-sided DeLong test, computed with the fast midrank
  algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)); the variances use
  ``ddof=1`` like R's pROC ``var(roc, method="delong")``.
- Youden threshold: the score value at the ROC point maximising tpr - fpr, where a clip is
  predicted positive when ``prob >= threshold``. The threshold is the score at the optimum itself,
  not its neighbour (the authors' code is off by one there).
- Sensitivity, specificity and F1 at given thresholds.
- Micro AUC over all known (pattern, clip) pairs; macro AUC = the plain mean of the per-pattern
  AUCs that are defined (``"macro_auc_method": "mean_of_pattern_aucs"``), not the area under the
  interpolated mean ROC the authors' notebooks report.

Labels are float arrays ``[N, P]`` with NaN = unknown; every per-pattern figure uses the known
rows of its pattern only. A figure that is undefined (no known labels, a single class, too few
cases for a variance) is ``None`` (JSON ``null``) and the pattern's ``reason`` says why.

The normal distribution comes from the standard library (``math.erfc``,
``statistics.NormalDist``), so there is no SciPy dependency.

metrics.json (written by :func:`write_metrics`, read by :func:`read_metrics`; see
``docs/formats.md``)::

    {
      "schema_version": 1,
      "n_clips": 120,
      "threshold_source": "youden" | "given",
      "patterns": {
        "<pattern>": {
          "auc": 0.91, "auc_ci95": [0.85, 0.97], "auc_var": 0.0009,
          "n_pos": 40, "n_neg": 80, "n_unknown": 0,
          "threshold": 0.42, "sensitivity": 0.9, "specificity": 0.85, "f1": 0.84,
          "reason": null
        }, ...
      },
      "micro_auc": 0.89, "macro_auc": 0.90,
      "macro_auc_method": "mean_of_pattern_aucs", "macro_auc_patterns": ["a_lines", ...],
      "reasons": {"micro_auc": "...", "macro_auc": "..."}
    }
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS

SCHEMA_VERSION = 1
MACRO_AUC_METHOD = "mean_of_pattern_aucs"
# Two-sided 95% normal quantile, 1.959963984540054.
Z_95 = NormalDist().inv_cdf(0.975)
PATTERN_KEYS = (
    "auc",
    "auc_ci95",
    "auc_var",
    "n_pos",
    "n_neg",
    "n_unknown",
    "threshold",
    "sensitivity",
    "specificity",
    "f1",
    "reason",
)


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
    _check_label_values(arr, name)
    return arr


def _check_label_values(arr: np.ndarray, name: str) -> None:
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


def _class_reason(n_pos: int, n_neg: int) -> str | None:
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
    if _class_reason(int(positive.sum()), int((~positive).sum())):
        return None
    return float(_components(positive, [s])[0][0])


def delong_auc(labels: ArrayLike, scores: ArrayLike) -> AucEstimate:
    """AUC, DeLong variance and 95% CI (normal, clipped to [0, 1]) over the known rows."""
    positive, (s,) = _known(labels, scores)
    m, n = int(positive.sum()), int((~positive).sum())
    reason = _class_reason(m, n)
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
    positive, (a, b) = _known(labels, scores_a, scores_b)
    m, n = int(positive.sum()), int((~positive).sum())
    reason = _class_reason(m, n)
    if reason:
        return DelongTest(None, None, None, None, None, m, n, reason)
    aucs, v10, v01 = _components(positive, [a, b])
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    diff = auc_a - auc_b
    if m < 2 or n < 2:
        reason = f"DeLong test needs at least 2 positives and 2 negatives, got {m} and {n}"
        return DelongTest(auc_a, auc_b, diff, None, None, m, n, reason)
    var = float(np.var(v10[0] - v10[1], ddof=1) / m + np.var(v01[0] - v01[1], ddof=1) / n)
    # Round-off guard: a variance this small relative to the AUC variances is zero.
    scale = float(np.var(v10, ddof=1, axis=1).sum() / m + np.var(v01, ddof=1, axis=1).sum() / n)
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
    if _class_reason(m, n):
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


# --- all patterns -----------------------------------------------------------------------------


def _labels_2d(
    labels: ArrayLike, probs: ArrayLike, n_patterns: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    width = "P" if n_patterns is None else n_patterns
    if y.ndim != 2 or (n_patterns is not None and y.shape[1] != n_patterns):
        raise LuvnetError(f"labels: expected shape [N, {width}], got {y.shape}")
    if p.shape != y.shape:
        raise LuvnetError(f"probs: expected shape {y.shape} like the labels, got {p.shape}")
    _check_label_values(y, "labels")
    if not np.isfinite(p).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0])
        raise LuvnetError(f"probs: expected finite values, got {float(p[where])!r} at {where}")
    return y, p


def micro_auc(labels: ArrayLike, probs: ArrayLike) -> float | None:
    """AUC over every known (clip, pattern) pair flattened into one list."""
    y, p = _labels_2d(labels, probs)
    return roc_auc(y.ravel(), p.ravel())


def youden_thresholds(labels: ArrayLike, probs: ArrayLike) -> list[float | None]:
    """Per-pattern Youden thresholds of ``[N, P]`` validation labels and probabilities."""
    y, p = _labels_2d(labels, probs)
    return [youden_threshold(y[:, k], p[:, k]) for k in range(y.shape[1])]


def compute_metrics(
    labels: ArrayLike,
    probs: ArrayLike,
    thresholds: Sequence[float | None] | None = None,
    pattern_names: Sequence[str] = PATTERNS,
) -> dict[str, Any]:
    """Every figure of the protocol, as the metrics.json dictionary (module docstring).

    ``thresholds=None`` fits Youden thresholds on these data (the validation set at the best
    epoch); pass the stored thresholds for a test set. A ``None`` entry leaves that pattern's
    threshold figures undefined.
    """
    names = list(pattern_names)
    y, p = _labels_2d(labels, probs, len(names))
    source = "youden" if thresholds is None else "given"
    if thresholds is None:
        thresholds = youden_thresholds(y, p)
    if len(thresholds) != len(names):
        raise LuvnetError(
            f"thresholds: expected {len(names)} values (one per pattern), got {len(thresholds)}"
        )
    patterns: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        patterns[name] = _pattern_metrics(y[:, k], p[:, k], thresholds[k], source)
    defined = [name for name in names if patterns[name]["auc"] is not None]
    micro = micro_auc(y, p)
    reasons: dict[str, str] = {}
    if micro is None:
        known = y[~np.isnan(y)]
        reasons["micro_auc"] = _class_reason(int((known == 1).sum()), int((known == 0).sum())) or ""
    if not defined:
        reasons["macro_auc"] = "no pattern has a defined AUC"
    return {
        "schema_version": SCHEMA_VERSION,
        "n_clips": int(y.shape[0]),
        "threshold_source": source,
        "patterns": patterns,
        "micro_auc": micro,
        "macro_auc": float(np.mean([patterns[n]["auc"] for n in defined])) if defined else None,
        "macro_auc_method": MACRO_AUC_METHOD,
        "macro_auc_patterns": defined,
        "reasons": reasons,
    }


def _pattern_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float | None, source: str
) -> dict[str, Any]:
    est = delong_auc(y, p)
    reasons = [est.reason] if est.reason else []
    out: dict[str, Any] = {
        "auc": est.auc,
        "auc_ci95": list(est.ci95) if est.ci95 else None,
        "auc_var": est.var,
        "n_pos": est.n_pos,
        "n_neg": est.n_neg,
        "n_unknown": int(np.isnan(y).sum()),
        "threshold": None if threshold is None else float(threshold),
        "sensitivity": None,
        "specificity": None,
        "f1": None,
    }
    if threshold is None:
        if source == "given":
            reasons.append("no threshold given")
    else:
        stats = threshold_stats(y, p, float(threshold))
        out.update(sensitivity=stats.sensitivity, specificity=stats.specificity, f1=stats.f1)
    out["reason"] = "; ".join(reasons) or None
    return out


# --- metrics.json -----------------------------------------------------------------------------


def write_metrics(path: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    """Write metrics.json atomically (strict JSON: no NaN or Infinity)."""
    path = Path(path)
    try:
        text = json.dumps(metrics, indent=2, allow_nan=False)
    except ValueError as err:
        raise LuvnetError(f"{path}: metrics must be finite numbers or null ({err})") from err
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a metrics.json; errors name the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LuvnetError(f"{path}: no such metrics file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LuvnetError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise LuvnetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    patterns = data.get("patterns")
    if not isinstance(patterns, dict) or not patterns:
        raise LuvnetError(f"{path}: patterns: expected an object of per-pattern metrics")
    for name, entry in patterns.items():
        if not isinstance(entry, dict):
            raise LuvnetError(f"{path}: patterns.{name}: expected an object, got {entry!r}")
        missing = [key for key in PATTERN_KEYS if key not in entry]
        if missing:
            raise LuvnetError(f"{path}: patterns.{name}: missing key(s) {missing}")
        _check_auc(path, f"patterns.{name}.auc", entry["auc"])
    for key in ("micro_auc", "macro_auc"):
        if key not in data:
            raise LuvnetError(f"{path}: missing key {key!r}")
        _check_auc(path, key, data[key])
    if data.get("macro_auc_method") != MACRO_AUC_METHOD:
        raise LuvnetError(
            f"{path}: macro_auc_method: expected {MACRO_AUC_METHOD!r}, "
            f"got {data.get('macro_auc_method')!r}"
        )
    return data


def _check_auc(path: Path, field: str, value: Any) -> None:
    ok = value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    )
    if not ok:
        raise LuvnetError(f"{path}: {field}: expected a number in [0, 1] or null, got {value!r}")
