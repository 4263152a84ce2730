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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.compare import align
from luvnet.engine.evaluation.evaluate import write_results
from luvnet.engine.evaluation.inference import Scored
from luvnet.engine.evaluation.metrics import read_metrics
from luvnet.engine.evaluation.predictions import Predictions
from luvnet.engine.evaluation.roc import delong_auc

METHOD = "mean_probability"


def average(members: Sequence[Predictions], paths: Sequence[Path]) -> Predictions:
    """The members' mean probability per clip and pattern, in the first member's clip order.

    Args:
        members: two or more predictions of the same N clips and P patterns, probs ``[N, P]``.
        paths: one per member, naming it in errors.

    Returns:
        Predictions with the first member's clips and labels, probs ``[N, P]`` float64.

    Raises:
        LuvnetError: fewer than two members, or a member whose clips, patterns or labels
            differ from the first's (naming both files).
        ValueError: ``paths`` and ``members`` of different lengths.
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
            number in [0, 1] or null, naming the file and the field.
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
        if value is not None and not (number and 0.0 <= value <= 1.0):
            raise LuvnetError(
                f"{path}: patterns.{name}.threshold: expected a probability in [0, 1] or "
                f"null, got {value!r}"
            )
        values.append(None if value is None else float(value))
    return values


def member_aucs(members: Sequence[Predictions]) -> list[list[float | None]]:
    """AUC ``[member][pattern]`` of each member on its known labels (labels ``[N, P]``, NaN
    unknown); None where undefined (one class only)."""
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
    """``OUT/predictions.csv`` and ``OUT/metrics.json`` of ``ensemble``, as ``luvnet evaluate``
    writes them (:func:`~.evaluate.write_results`; ``loss`` null: an average of probabilities
    has no loss of its own), plus the ``"ensemble"`` record; returns the metrics.

    Args:
        paths: the members' files, recorded as given.
        thresholds: per pattern, or None to fit Youden's on these clips.

    Raises:
        OSError: ``out`` or a file in it cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    known = int((~np.isnan(ensemble.labels)).sum())
    scored = Scored(list(ensemble.clips), ensemble.labels, ensemble.probs, None, known)
    record = {"ensemble": {"method": METHOD, "members": [str(p) for p in paths]}}
    return write_results(
        scored,
        out / "metrics.json",
        out / "predictions.csv",
        thresholds,
        ensemble.pattern_names,
        extra=record,
    )


def check_paths(paths: Sequence[Path], thresholds: Path | None, out: Path) -> None:
    """Refuse a member given twice, and an ``out`` whose files would overwrite an input.

    Raises:
        LuvnetError: one line naming the file and the fix.
    """
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise LuvnetError(
                f"predictions: {path} is the same file as {seen[key]}; expected each member once"
            )
        seen[key] = path
    inputs = {**seen, **({thresholds.resolve(): thresholds} if thresholds else {})}
    for name in ("predictions.csv", "metrics.json"):
        target = (out / name).resolve()
        if target in inputs:
            raise LuvnetError(
                f"--out {out}: writing {name} there would overwrite the input {inputs[target]}; "
                "expected a folder that holds none of the inputs"
            )


def format_table(metrics: dict[str, Any], aucs: list[list[float | None]]) -> str:
    """One row per pattern: counts, the members' AUC range and the ensemble's with its CI."""
    lines = [
        f"{len(aucs)} members, {metrics['n_clips']} clips; probabilities averaged",
        f"{'pattern':<18} {'n_pos':>5} {'n_neg':>5} {'members AUC':>13} {'ensemble AUC':>13} "
        "95% CI",
    ]
    for k, (name, m) in enumerate(metrics["patterns"].items()):
        own = [value for row in aucs if (value := row[k]) is not None]
        spread = f"{min(own):.3f}-{max(own):.3f}" if own else "n/a"
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        ci = m["auc_ci95"]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else (m["reason"] or "")
        lines.append(
            f"{name:<18} {m['n_pos']:>5} {m['n_neg']:>5} {spread:>13} {auc:>13} {interval}"
        )
    return "\n".join(lines)
