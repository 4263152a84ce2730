"""Per-epoch training history: ``history.csv`` always, TensorBoard when it is installed.

The CSV is rewritten whole (atomically: :func:`luvnet.engine.files.atomic_open`) from the
history kept in the training state, so a run resumed after a crash never duplicates or loses
a row.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from luvnet.engine.files import atomic_open

log = logging.getLogger(__name__)

BASE_COLUMNS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_micro_auc",
    "val_macro_auc",
)
TAIL_COLUMNS: tuple[str, ...] = (
    "lr",
    "epoch_s",
    "val_s",
    "elapsed_s",
    "cpu_s",
    "best",
    "partial",
)


def history_columns(pattern_names: Sequence[str]) -> list[str]:
    return [*BASE_COLUMNS, *(f"val_auc_{p}" for p in pattern_names), *TAIL_COLUMNS]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_history(
    path: str | Path, rows: Sequence[dict[str, Any]], pattern_names: Sequence[str]
) -> None:
    path = Path(path)
    columns = history_columns(pattern_names)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


class TensorBoardLog:
    """Scalars per epoch when ``torch.utils.tensorboard`` imports; otherwise a no-op that says
    so once in the log (tensorboard is optional, never a hard dependency)."""

    def __init__(self, log_dir: str | Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info(
                "tensorboard not installed; per-epoch metrics go to history.csv "
                "only (pip install tensorboard to get event files)"
            )
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key != "epoch" and number and math.isfinite(float(value)):
                self.writer.add_scalar(key.replace("_", "/", 1), float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
