"""Contact sheet: a few labelled example frames of each pattern from a generated set.

Frames are chosen from the truth alone (before any video is rendered), so the generator can
keep just those frames while it writes the videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from luvnet.engine.files import atomic_open
from luvnet.engine.model.config import PATTERNS

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


def choose_frames(
    tables: Sequence[np.ndarray], coverage: Sequence[np.ndarray], per_pattern: int = PER_PATTERN
) -> dict[str, list[Pick]]:
    """Per pattern, up to ``per_pattern`` (video, frame) picks from different videos where it is
    visible: in each video the frame where it covers most of the view; first the video where it
    shows with the fewest other patterns, then the most prominent ones."""
    picks: dict[str, list[Pick]] = {}
    for j, name in enumerate(PATTERNS):
        options = []
        for v, (table, cover) in enumerate(zip(tables, coverage, strict=True)):
            if table[:, j].any():
                f = int(np.argmax(np.where(table[:, j], cover[:, j], -1.0)))
                options.append((int(table[f].sum()), -float(cover[f, j]), v, f))
        alone = sorted(options)[:1]
        rest = sorted((o for o in options if o not in alone), key=lambda o: o[1])
        picks[name] = [(v, f) for _, _, v, f in alone + rest][:per_pattern]
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
    with atomic_open(path, "wb") as handle:
        handle.write(data.tobytes())
