"""Paired DeLong test per pattern between two predictions files (``luvnet compare``).

Both files are predictions CSVs (``engine.predictions``) of two models on the same clips. Rows are
matched by ``clip_id``; the clip sets, the pattern names and every label must agree, otherwise
:func:`align` refuses. Each pattern uses its known labels only.

:func:`write_comparison` writes::

    {"a": "A.csv", "b": "B.csv", "n_clips": 120, "cluster": "clip",
     "patterns": {"<pattern>": {"n_pos", "n_neg", "auc_a", "auc_b", "auc_diff", "z", "p_value",
                                "reason"}}}

with ``null`` for undefined figures and ``reason`` saying why. ``cluster`` is what the clips
were grouped by (:data:`CLUSTERS`): ``clip`` the plain paired DeLong test, ``video`` or
``patient`` Obuchowski's clustered one, whose variance counts a video's or patient's clips as one
draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.predictions import ClipRef, Predictions
from luvnet.engine.evaluation.roc import DelongTest, clustered_delong_test, delong_test
from luvnet.engine.files import write_json


def write_comparison(
    path: Path,
    path_a: Path,
    path_b: Path,
    n_clips: int,
    results: dict[str, DelongTest],
    cluster: str = "clip",
) -> None:
    """The figures of :func:`compare` as JSON (module docstring), written atomically."""
    payload = {
        "a": str(path_a),
        "b": str(path_b),
        "n_clips": n_clips,
        "cluster": cluster,
        "patterns": {name: _as_json(t) for name, t in results.items()},
    }
    write_json(path, payload)


def align(a: Predictions, b: Predictions, path_a: Path, path_b: Path) -> np.ndarray:
    """Row indices into ``b`` in ``a``'s clip order; refuses files that are not comparable."""
    if a.pattern_names != b.pattern_names:
        raise LuvnetError(
            f"{path_b}: patterns {list(b.pattern_names)} differ from {path_a}: "
            f"{list(a.pattern_names)}; expected the same patterns in the same order"
        )
    ids_a = [c.clip_id for c in a.clips]
    rows_b = b.row_of()
    only_a = [i for i in ids_a if i not in rows_b]
    only_b = sorted(set(rows_b) - set(ids_a))
    if only_a or only_b:
        raise LuvnetError(
            f"{path_b}: clip set differs from {path_a}: {len(only_a)} clip(s) only in A "
            f"{_some(only_a)}, {len(only_b)} only in B {_some(only_b)}; expected the same clip_ids"
        )
    order = np.array([rows_b[i] for i in ids_a], dtype=int)
    for i, j in enumerate(order):
        ca, cb = a.clips[i], b.clips[j]
        if (ca.video, ca.patient_id, ca.start, ca.end) != (
            cb.video,
            cb.patient_id,
            cb.start,
            cb.end,
        ):
            raise LuvnetError(
                f"{path_b}: clip {ca.clip_id!r} is {cb.video}/{cb.patient_id} [{cb.start}, "
                f"{cb.end}) but in {path_a} {ca.video}/{ca.patient_id} [{ca.start}, {ca.end}); "
                "expected the same clip"
            )
        for k, name in enumerate(a.pattern_names):
            la, lb = a.labels[i, k], b.labels[j, k]
            if not (la == lb or (math.isnan(la) and math.isnan(lb))):
                raise LuvnetError(
                    f"{path_b}: clip {ca.clip_id!r}, label_{name} = {_label(lb)} but "
                    f"{_label(la)} in {path_a}; expected identical labels"
                )
    return order


# What ``--cluster`` may group clips by: each clip alone (the paper's DeLong), or its video or
# patient (Obuchowski's clustered test, roc.clustered_delong_test).
CLUSTERS = ("clip", "video", "patient")


def compare(
    a: Predictions, b: Predictions, order: np.ndarray, cluster: str = "clip"
) -> dict[str, DelongTest]:
    """Paired DeLong test per pattern; ``order`` maps a's rows to b's (see :func:`align`);
    ``cluster`` one of :data:`CLUSTERS`: ``clip`` the plain test, else clips grouped by their
    video or patient."""
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster: expected one of {CLUSTERS}, got {cluster!r}")
    if cluster == "clip":
        return {
            name: delong_test(a.labels[:, k], a.probs[:, k], b.probs[order, k])
            for k, name in enumerate(a.pattern_names)
        }
    ids = cluster_ids(a.clips, cluster)
    return {
        name: clustered_delong_test(a.labels[:, k], a.probs[:, k], b.probs[order, k], ids)
        for k, name in enumerate(a.pattern_names)
    }


def cluster_ids(clips: Sequence[ClipRef], cluster: str) -> list[str]:
    """Each clip's group for ``--cluster``: its video, its patient, or itself."""
    key = {"clip": "clip_id", "video": "video", "patient": "patient_id"}[cluster]
    return [getattr(c, key) for c in clips]


def format_table(
    results: dict[str, DelongTest],
    path_a: Path,
    path_b: Path,
    clips: Sequence[ClipRef] = (),
    cluster: str = "clip",
) -> str:
    """The figures as a text table; with ``clips``, a last line on how independent they are
    (unclustered) or what they were grouped by."""
    lines = [
        f"A = {path_a}",
        f"B = {path_b}",
        f"{'pattern':<18} {'n_pos':>5} {'n_neg':>5} {'AUC A':>7} {'AUC B':>7} {'A-B':>7} "
        f"{'z':>7} {'p':>9}",
    ]
    notes = []
    for name, t in results.items():
        lines.append(
            f"{name:<18} {t.n_pos:>5} {t.n_neg:>5} {_f(t.auc_a, 7, '.3f')} {_f(t.auc_b, 7, '.3f')} "
            f"{_f(t.diff, 7, '+.3f')} {_f(t.z, 7, '+.2f')} {_f(t.p_value, 9, '.3g')}"
        )
        if t.reason:
            notes.append(f"{name}: {t.reason}")
    lines += notes
    if cluster != "clip":
        groups = len(set(cluster_ids(clips, cluster)))
        caveat: str | None = (
            f"note: clustered DeLong (Obuchowski 1997): the {len(clips)} clips grouped into "
            f"{groups} {cluster}s, each {cluster} one draw"
        )
    else:
        caveat = independence_caveat(clips)
    return "\n".join(lines + ([caveat] if caveat else []))


def independence_caveat(clips: Sequence[ClipRef]) -> str | None:
    """One line saying that the DeLong test treats the clips as independent while several
    come from one video and one patient (a video-level label repeats over its clips), so
    its p-values and intervals are optimistic; None when each clip is its own patient."""
    videos, patients = (len(set(cluster_ids(clips, key))) for key in ("video", "patient"))
    if len(clips) <= patients:
        return None
    return (
        f"note: DeLong treats the {len(clips)} clips as independent; they come from {videos} "
        f"videos of {patients} patients, whose clips are correlated, so p is optimistic "
        "(--cluster patient: a test clustered by patient)"
    )


def _as_json(t: DelongTest) -> dict[str, Any]:
    return {
        "n_pos": t.n_pos,
        "n_neg": t.n_neg,
        "auc_a": t.auc_a,
        "auc_b": t.auc_b,
        "auc_diff": t.diff,
        "z": t.z,
        "p_value": t.p_value,
        "reason": t.reason,
    }


def _f(value: float | None, width: int, spec: str) -> str:
    return ("n/a" if value is None else format(value, spec)).rjust(width)


def _label(value: float) -> str:
    return "unknown" if math.isnan(value) else str(int(value))


def _some(ids: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"
