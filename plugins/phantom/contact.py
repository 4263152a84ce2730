"""Contact sheet: a few labelled example frames of each pattern from a generated set.

Frames are chosen from the truth alone (before any video is rendered), so the generator can
keep just those frames while it writes the videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.config import PATTERNS

PER_PATTERN = 3
TILE_WIDTH = 400
_LABEL_H = 30
_SHORT = {"a_lines": "A", "b_lines": "B", "consolidation": "C", "pleural_effusion": "E"}
_TITLE = {
    "a_lines": "A-lines",
    "b_lines": "B-lines",
    "consolidation": "Consolidation",
    "pleural_effusion": "Effusion",
}

Pick = tuple[int, int]  # (video index, frame index)


def _steadiest(column: np.ndarray) -> int:
    """Middle frame of the longest run where the pattern is visible."""
    padded = np.concatenate([[0], column.astype(np.int8), [0]])
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    k = int(np.argmax(ends - starts))
    return int((starts[k] + ends[k] - 1) // 2)


def choose_frames(
    tables: Sequence[np.ndarray], per_pattern: int = PER_PATTERN
) -> dict[str, list[Pick]]:
    """Per pattern, up to ``per_pattern`` (video, frame) picks from different videos where it is
    visible: first where it shows with the fewest other patterns, then in video order."""
    picks: dict[str, list[Pick]] = {}
    for j, name in enumerate(PATTERNS):
        options = []
        for v, table in enumerate(tables):
            if table[:, j].any():
                f = _steadiest(table[:, j])
                options.append((int(table[f].sum()), v, f))
        alone = sorted(options)[:1]
        rest = [o for o in options if o not in alone]
        picks[name] = [(v, f) for _, v, f in alone + rest][:per_pattern]
    return picks


def _tile(image: np.ndarray, width: int, label: str) -> np.ndarray:
    h, w = image.shape[:2]
    scaled = cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    strip = np.full((_LABEL_H, width, 3), 32, dtype=np.uint8)
    cv2.putText(
        strip, label, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (235, 235, 235), 1, cv2.LINE_AA
    )
    return np.vstack([strip, scaled])


def truth_label(truth: np.ndarray) -> str:
    return " ".join(f"{_SHORT[n]}{'+' if t else '-'}" for n, t in zip(PATTERNS, truth, strict=True))


def contact_sheet(
    picks: dict[str, list[Pick]],
    frames: dict[Pick, np.ndarray],
    tables: Sequence[np.ndarray],
    names: Sequence[str],
) -> np.ndarray:
    """BGR sheet: one row per pattern, its picks left to right, each tile labelled with the
    pattern, the frame's full truth (A/B/C/E +/-) and where it comes from."""
    sample = next(iter(frames.values()))
    width = min(TILE_WIDTH, sample.shape[1])
    tile_h = _LABEL_H + round(sample.shape[0] * width / sample.shape[1])
    per_row = max(len(p) for p in picks.values()) or 1
    rows = []
    for name in PATTERNS:
        tiles = []
        for v, f in picks[name]:
            label = f"{_TITLE[name]}: {truth_label(tables[v][f])}   {Path(names[v]).stem} #{f}"
            tiles.append(_tile(frames[(v, f)], width, label))
        while len(tiles) < per_row:
            empty = np.zeros((tile_h, width, 3), dtype=np.uint8)
            cv2.putText(
                empty,
                f"{name}: no example in this set",
                (8, 21),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.55,
                (160, 160, 160),
                1,
                cv2.LINE_AA,
            )
            tiles.append(empty)
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())
