"""The paper's metric protocol (docs/model.md, "Metrics"), over all patterns.

The statistics of one pattern (Mann-Whitney AUC, DeLong variance and test, Youden threshold,
sensitivity/specificity/F1) live in :mod:`~luvnet.engine.evaluation.roc`; this module applies
them per pattern and adds:

- Micro AUC over all known (pattern, clip) pairs; macro AUC = the plain mean of the per-pattern
  AUCs that are defined (``"macro_auc_method": "mean_of_pattern_aucs"``), not the area under the
  interpolated mean ROC the authors' notebooks report.

Labels are float arrays ``[N, P]`` with NaN = unknown; every per-pattern figure uses the known
rows of its pattern only. A figure that is undefined (no known labels, a single class, too few
cases for a variance) is ``None`` (JSON ``null``) and the pattern's ``reason`` says why.

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

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.roc import (
    check_label_values,
    class_reason,
    delong_auc,
    roc_auc,
    threshold_stats,
    youden_threshold,
)
from luvnet.engine.files import read_json_object, write_json
from luvnet.engine.model.config import PATTERNS

SCHEMA_VERSION = 1
MACRO_AUC_METHOD = "mean_of_pattern_aucs"
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
    check_label_values(y, "labels")
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
        reasons["micro_auc"] = class_reason(int((known == 1).sum()), int((known == 0).sum())) or ""
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
    """Write metrics.json atomically (strict JSON: no NaN or Infinity).

    Raises:
        LuvnetError: a figure that is not a finite number or null, naming the file.
    """
    write_json(path, metrics)


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a metrics.json; errors name the file and the field."""
    path = Path(path)
    if not path.exists():
        raise LuvnetError(f"{path}: no such metrics file")
    try:
        data = read_json_object(path, expected="a metrics object")
    except LuvnetError as err:
        # The reader's own reason, in the words `luvnet report` users know for this file.
        reason = str(err).removeprefix(f"{path}: ")
        raise LuvnetError(f"{path}: not a readable JSON file ({reason})") from None
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
