"""Per-clip predictions CSV: what evaluation writes and ``luvnet compare`` reads.

Header, in this order (see ``docs/formats.md``)::

    clip_id,video,patient_id,start,end,label_<p0>,prob_<p0>,label_<p1>,prob_<p1>,...

- ``clip_id``: non-empty, unique within the file; two files are compared clip by clip on it.
- ``video``, ``patient_id``: non-empty strings.
- ``start``, ``end``: integer frame indices of the clip in its video, ``0 <= start < end``,
  ``end`` exclusive (a padded last clip ends at its last real frame + 1).
- ``label_<pattern>``: ``0``, ``1`` or empty = unknown (e.g. COVID-BLUES has no consolidation or
  effusion labels).
- ``prob_<pattern>``: the sigmoid probability, a finite number in [0, 1], never empty.

Patterns are the ``label_``/``prob_`` pairs in header order (normally ``engine.config.PATTERNS``).
Errors name the file, line and column.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open
from luvnet.engine.model.config import PATTERNS

CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "video", "patient_id", "start", "end")


@dataclass(frozen=True)
class ClipRef:
    """Where a clip comes from: its id, video, patient and frame span [start, end)."""

    clip_id: str
    video: str
    patient_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Predictions:
    """A predictions file in memory: labels ``[N, P]`` (NaN = unknown) and probs ``[N, P]``."""

    clips: tuple[ClipRef, ...]
    pattern_names: tuple[str, ...]
    labels: np.ndarray
    probs: np.ndarray

    def row_of(self) -> dict[str, int]:
        """clip_id -> row index."""
        return {clip.clip_id: i for i, clip in enumerate(self.clips)}


def prediction_columns(pattern_names: Sequence[str] = PATTERNS) -> list[str]:
    """The header of a predictions CSV for these patterns."""
    cols = list(CLIP_COLUMNS)
    for name in pattern_names:
        cols += [f"label_{name}", f"prob_{name}"]
    return cols


def write_predictions(
    path: str | os.PathLike[str],
    clips: Sequence[ClipRef],
    labels: ArrayLike,
    probs: ArrayLike,
    pattern_names: Sequence[str] = PATTERNS,
) -> None:
    """Check and write one row per clip, atomically; probabilities keep full precision."""
    path = Path(path)
    names = tuple(pattern_names)
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    _check_names(path, names)
    shape = (len(clips), len(names))
    if y.shape != shape or p.shape != shape:
        raise LuvnetError(
            f"{path}: labels and probs: expected shape {shape} (clips x patterns), "
            f"got {y.shape} and {p.shape}"
        )
    seen: set[str] = set()
    for i, clip in enumerate(clips):
        _check_clip(f"{path}: clips[{i}]", clip, seen)
        for k, name in enumerate(names):
            if not (math.isnan(y[i, k]) or y[i, k] in (0.0, 1.0)):
                raise LuvnetError(
                    f"{path}: clip {clip.clip_id!r}, label_{name}: expected 0, 1 or NaN, "
                    f"got {float(y[i, k])!r}"
                )
            if not 0.0 <= p[i, k] <= 1.0:
                raise LuvnetError(
                    f"{path}: clip {clip.clip_id!r}, prob_{name}: expected a probability in "
                    f"[0, 1], got {float(p[i, k])!r}"
                )
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(prediction_columns(names))
        for i, clip in enumerate(clips):
            row: list[str] = [clip.clip_id, clip.video, clip.patient_id, str(clip.start)]
            row.append(str(clip.end))
            for k in range(len(names)):
                row += ["" if math.isnan(y[i, k]) else str(int(y[i, k])), repr(float(p[i, k]))]
            writer.writerow(row)


def read_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read and check a predictions CSV; the first problem is one error naming line and column."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise LuvnetError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LuvnetError(f"{path}: not a readable CSV file ({err})") from None
    if not rows:
        raise LuvnetError(f"{path}: empty file; expected a header {','.join(CLIP_COLUMNS)},...")
    header = rows[0]
    names = _parse_header(path, header)
    # (line number, fields); blank lines are skipped but still counted.
    body = [(n, row) for n, row in enumerate(rows[1:], start=2) if row]
    if not body:
        raise LuvnetError(f"{path}: no data rows after the header")
    clips: list[ClipRef] = []
    labels = np.full((len(body), len(names)), np.nan)
    probs = np.zeros((len(body), len(names)))
    seen: dict[str, int] = {}
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise LuvnetError(
                f"{path}: line {line}: expected {len(header)} fields like the header, "
                f"got {len(row)}"
            )
        cell = dict(zip(header, row, strict=True))
        clip = ClipRef(
            clip_id=cell["clip_id"],
            video=cell["video"],
            patient_id=cell["patient_id"],
            start=_int(path, line, "start", cell["start"]),
            end=_int(path, line, "end", cell["end"]),
        )
        if clip.clip_id in seen:
            raise LuvnetError(
                f"{path}: line {line}, column clip_id: duplicate {clip.clip_id!r} "
                f"(first on line {seen[clip.clip_id]}); expected unique clip ids"
            )
        seen[clip.clip_id] = line
        _check_clip(f"{path}: line {line}", clip, set())
        for k, name in enumerate(names):
            labels[i, k] = _label(path, line, f"label_{name}", cell[f"label_{name}"])
            probs[i, k] = _prob(path, line, f"prob_{name}", cell[f"prob_{name}"])
        clips.append(clip)
    return Predictions(tuple(clips), names, labels, probs)


def _parse_header(path: Path, header: list[str]) -> tuple[str, ...]:
    expected = f"expected {','.join(CLIP_COLUMNS)} then label_<pattern>,prob_<pattern> pairs"
    if tuple(header[: len(CLIP_COLUMNS)]) != CLIP_COLUMNS:
        raise LuvnetError(f"{path}: header: {expected}, got {','.join(header)}")
    rest = header[len(CLIP_COLUMNS) :]
    if not rest or len(rest) % 2:
        raise LuvnetError(f"{path}: header: {expected}, got {','.join(header)}")
    names = []
    for label_col, prob_col in zip(rest[::2], rest[1::2], strict=True):
        name = label_col.removeprefix("label_")
        if not label_col.startswith("label_") or prob_col != f"prob_{name}":
            raise LuvnetError(
                f"{path}: header: columns {label_col},{prob_col}: {expected} "
                f"(label_{name},prob_{name})"
            )
        names.append(name)
    _check_names(path, tuple(names))
    return tuple(names)


def _check_names(path: Path, names: tuple[str, ...]) -> None:
    if not names:
        raise LuvnetError(f"{path}: expected at least one pattern name")
    for name in names:
        if not name or "," in name or name != name.strip():
            raise LuvnetError(f"{path}: pattern name {name!r}: expected a non-empty key")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LuvnetError(f"{path}: pattern names {dupes} repeated; expected each once")


def _check_clip(where: str, clip: ClipRef, seen: set[str]) -> None:
    for field in ("clip_id", "video", "patient_id"):
        value = getattr(clip, field)
        if not isinstance(value, str) or not value:
            raise LuvnetError(
                f"{where}, column {field}: expected a non-empty string, got {value!r}"
            )
    if clip.clip_id in seen:
        raise LuvnetError(f"{where}, column clip_id: duplicate {clip.clip_id!r}")
    seen.add(clip.clip_id)
    for field in ("start", "end"):
        value = getattr(clip, field)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise LuvnetError(f"{where}, column {field}: expected an integer, got {value!r}")
    if not 0 <= clip.start < clip.end:
        raise LuvnetError(
            f"{where}, columns start,end: expected 0 <= start < end, got {clip.start}, {clip.end}"
        )


def _int(path: Path, line: int, column: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LuvnetError(
            f"{path}: line {line}, column {column}: expected an integer frame index, got {text!r}"
        ) from None


def _label(path: Path, line: int, column: str, text: str) -> float:
    if text in ("0", "1"):
        return float(text)
    if text == "":
        return math.nan
    raise LuvnetError(
        f"{path}: line {line}, column {column}: expected 0, 1 or empty (unknown), got {text!r}"
    )


def _prob(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also rejects nan and inf
        raise LuvnetError(
            f"{path}: line {line}, column {column}: expected a probability in [0, 1], got {text!r}"
        )
    return value
