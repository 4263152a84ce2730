"""Average several models' predictions on the same clips (``luvnet ensemble``).

Soft voting: a clip's probability for a pattern is the arithmetic mean of its members'
probabilities, the average of deep ensembles (Lakshminarayanan et al., NeurIPS 2017) and of
nnU-Net's five-fold ensemble (Isensee et al., Nature Methods 2021). Members are predictions CSVs
(:mod:`luvnet.engine.evaluation.predictions`) of one clip set, for example the fold models of one
cross-validation run on its shared test set, or runs of other ``--seed`` with the same
``--split-seed`` on one fold's validation or test set; :func:`~.compare.align` refuses files of
other clips, patterns or labels.

The ensemble's files are ``luvnet evaluate``'s: ``predictions.csv`` and ``metrics.json``, the
latter with ``"ensemble": {"method": "mean_probability", "members": [paths as typed]}``. Its
thresholds are Youden's fitted on these clips (``threshold_source`` ``"youden"``: right for a
validation set, optimistic for a test set), or those of another metrics.json, e.g. the same
ensemble's on the validation set (``"given"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.compare import align
from luvnet.engine.evaluation.metrics import compute_metrics, read_metrics, write_metrics
from luvnet.engine.evaluation.predictions import Predictions, write_predictions
from luvnet.engine.evaluation.roc import delong_auc

METHOD = "mean_probability"


def average(members: Sequence[Predictions], paths: Sequence[Path]) -> Predictions:
    """The members' mean probability per clip and pattern, in the first member's clip order.

    Args:
        members: two or more predictions of the same clips; ``paths`` name them in errors.

    Returns:
        Predictions with the first member's clips and labels, probs ``[N, P]`` float64.

    Raises:
        LuvnetError: fewer than two members, or a member whose clips, patterns or labels
            differ from the first's (naming both files).
    """
    if len(members) < 2:
        raise LuvnetError(
            f"predictions: expected 2 or more files, got {len(members)}; an ensemble "
            "of one model is that model (use luvnet evaluate's files as they are)"
        )
    first = members[0]
    stacked = [first.probs]
    for member, path in zip(members[1:], paths[1:], strict=True):
        stacked.append(member.probs[align(first, member, paths[0], path)])
    return Predictions(first.clips, first.pattern_names, first.labels, np.mean(stacked, axis=0))


def stored_thresholds(path: Path, pattern_names: Sequence[str]) -> list[float | None]:
    """The per-pattern thresholds of the metrics.json at ``path``, in ``pattern_names`` order.

    Raises:
        LuvnetError: an unreadable file, a pattern it lacks, or a threshold that is not a
            finite number or null, naming the file and the field.
    """
    patterns = read_metrics(path)["patterns"]
    missing = [name for name in pattern_names if name not in patterns]
    if missing:
        raise LuvnetError(
            f"{path}: patterns: no entry for {missing}; expected the ensemble's patterns "
            f"{list(pattern_names)} (a metrics.json of the same models' predictions)"
        )
    values: list[float | None] = []
    for name in pattern_names:
        value = patterns[name]["threshold"]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            raise LuvnetError(
                f"{path}: patterns.{name}.threshold: expected a number or null, got {value!r}"
            )
        values.append(None if value is None else float(value))
    return values


def member_aucs(members: Sequence[Predictions]) -> list[list[float | None]]:
    """AUC ``[member][pattern]`` of each member on its known labels (None: undefined)."""
    return [
        [delong_auc(m.labels[:, k], m.probs[:, k]).auc for k in range(len(m.pattern_names))]
        for m in members
    ]


def write_ensemble(
    out: Path,
    ensemble: Predictions,
    paths: Sequence[Path],
    thresholds: Sequence[float | None] | None,
) -> dict[str, Any]:
    """``OUT/predictions.csv`` and ``OUT/metrics.json`` of ``ensemble``; returns the metrics.

    Args:
        thresholds: per pattern, or None to fit Youden's on these clips.
    """
    out.mkdir(parents=True, exist_ok=True)
    names = ensemble.pattern_names
    write_predictions(
        out / "predictions.csv", ensemble.clips, ensemble.labels, ensemble.probs, names
    )
    metrics = compute_metrics(ensemble.labels, ensemble.probs, thresholds, names)
    metrics["ensemble"] = {"method": METHOD, "members": [str(p) for p in paths]}
    write_metrics(out / "metrics.json", metrics)
    return metrics


def format_table(metrics: dict[str, Any], aucs: list[list[float | None]]) -> str:
    """One row per pattern: counts, the members' AUC range and the ensemble's with its CI."""
    lines = [
        f"{len(aucs)} members, {metrics['n_clips']} clips; probabilities averaged",
        f"{'pattern':<18} {'n_pos':>5} {'n_neg':>5} {'members AUC':>13} {'ensemble AUC':>13} "
        "95% CI",
    ]
    for k, (name, m) in enumerate(metrics["patterns"].items()):
        own = [row[k] for row in aucs if row[k] is not None]
        spread = f"{min(own):.3f}-{max(own):.3f}" if own else "n/a"
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        ci = m["auc_ci95"]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else (m["reason"] or "")
        lines.append(
            f"{name:<18} {m['n_pos']:>5} {m['n_neg']:>5} {spread:>13} {auc:>13} {interval}"
        )
    return "\n".join(lines)
