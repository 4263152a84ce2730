"""The paper's Table 1 from training run directories (``luvnet report``), as Markdown.

A training run directory (see ``docs/formats.md``)::

    RUN/run.json                    {"model": "luvnet", "backbone": "densenet161", ...}
    RUN/fold_<i>/metrics_val.json   validation metrics at the best epoch (engine.metrics schema)
    RUN/fold_<i>/metrics_test.json  optional: the fold's checkpoint on the held-out test set

One row per run, one column per pattern AUC plus micro and macro AUC, each cell the mean ± sample
standard deviation (ddof=1) over the folds where the figure is defined. A cell defined in only
some folds says how many, e.g. ``0.853 ± 0.020 (4/5)``; one defined in none is ``n/a``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.metrics import MACRO_AUC_METHOD, read_metrics
from luvnet.engine.files import atomic_open, read_json_object

DISPLAY_NAMES = {
    "a_lines": "A-lines",
    "b_lines": "B-lines",
    "consolidation": "Consolidation",
    "pleural_effusion": "Pleural effusion",
}
FOLD_DIR = re.compile(r"fold_(\d+)")


def load_run(path: Path, split: str) -> dict[str, Any]:
    """``{"label", "path", "folds": [metrics dict, ...]}`` of one run directory."""
    if not path.is_dir():
        raise LuvnetError(f"{path}: not a run directory; expected RUN/run.json and RUN/fold_<i>/")
    info = _read_run_json(path / "run.json")
    folds = sorted(
        (int(m.group(1)), d)
        for d in path.iterdir()
        if d.is_dir() and (m := FOLD_DIR.fullmatch(d.name))
    )
    if not folds:
        raise LuvnetError(
            f"{path}: no fold_<i> directories; expected RUN/fold_0/metrics_{split}.json"
        )
    metrics = [read_metrics(d / f"metrics_{split}.json") for _, d in folds]
    return {"label": run_label(info), "path": path, "folds": metrics}


def run_label(info: dict[str, Any]) -> str:
    """``model (backbone, N heads)``: the attention head count N_a of every variant that has
    attention (not the frame baseline), from run.json's config; omitted where not recorded.
    A run whose checkpoints another validation figure than the loss picked (``luvnet train
    --eval-metric``) adds ``best by METRIC``: its validation AUCs are the best of its epochs'."""
    heads = (info.get("config") or {}).get("num_heads")
    shown = f", {heads} heads" if isinstance(heads, int) and info["model"] != "frame" else ""
    picked = (info.get("args") or {}).get("eval_metric", "loss")
    shown += f", best by {picked}" if picked != "loss" else ""
    return f"{info['model']} ({info['backbone']}{shown})"


def _read_run_json(path: Path) -> dict[str, Any]:
    info = read_json_object(path, expected='{"model": ..., "backbone": ...}')
    for key in ("model", "backbone"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise LuvnetError(f"{path}: {key}: expected a non-empty string, got {info.get(key)!r}")
    return info


def columns(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(header, key) pairs: patterns in first-seen order, then micro and macro AUC."""
    names: list[str] = []
    for r in runs:
        for fold in r["folds"]:
            names += [n for n in fold["patterns"] if n not in names]
    cols = [(DISPLAY_NAMES.get(n, n), n) for n in names]
    return cols + [("Micro AUC", "micro_auc"), ("Macro AUC", "macro_auc")]


def fold_values(folds: list[dict[str, Any]], key: str) -> list[float | None]:
    """One figure per fold: a pattern's AUC or a top-level key; None where undefined/absent."""
    if key in ("micro_auc", "macro_auc"):
        return [f[key] for f in folds]
    return [f["patterns"].get(key, {}).get("auc") for f in folds]


def cell(values: list[float | None]) -> str:
    """Mean ± sample std of the defined values, with a defined/total count when some are not."""
    defined = [v for v in values if v is not None]
    if not defined:
        return "n/a"
    text = f"{np.mean(defined):.3f}"
    if len(defined) > 1:
        text += f" ± {np.std(defined, ddof=1):.3f}"
    if len(defined) < len(values):
        text += f" ({len(defined)}/{len(values)})"
    return text


def _distinct_tail(path: Path, others: list[Path]) -> str:
    """The fewest trailing parts of ``path`` that no other of ``others`` ends with: runs
    ``a/no-temporal`` and ``b/no-temporal`` are shown by their parents, not both as
    ``no-temporal``."""
    for k in range(1, len(path.parts) + 1):
        tail = path.parts[-k:]
        if sum(q.parts[-k:] == tail for q in others) == 1:
            return "/".join(tail)
    return str(path)  # the same directory given twice


def format_table(runs: list[dict[str, Any]], split: str) -> str:
    cols = columns(runs)
    labels = [r["label"] for r in runs]
    # Same model and backbone twice: tell the rows apart by their directory.
    labels = [
        f"{lab} [{_distinct_tail(r['path'], [q['path'] for q in runs if q['label'] == lab])}]"
        if labels.count(lab) > 1
        else lab
        for lab, r in zip(labels, runs, strict=True)
    ]
    header = ["Model", "Folds"] + [h for h, _ in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for lab, r in zip(labels, runs, strict=True):
        cells = [cell(fold_values(r["folds"], key)) for _, key in cols]
        lines.append("| " + " | ".join([lab, str(len(r["folds"]))] + cells) + " |")
    lines += [
        "",
        f"Split: {split}. AUC, mean ± sample standard deviation (ddof=1) over folds; (k/n): "
        "defined in k of n folds; n/a: undefined in every fold (no known labels or one class).",
        f"Macro AUC = mean of the per-pattern AUCs ({MACRO_AUC_METHOD}), not the area under the "
        "interpolated mean ROC of the authors' notebooks.",
    ]
    return "\n".join(lines)


def write_table(path: Path, table: str) -> None:
    """The Markdown of :func:`format_table`, newline-terminated, written atomically."""
    with atomic_open(path) as handle:
        handle.write(table + "\n")
