"""Manifest rows for the COVID-BLUES videos, read in place (``luvnet covid-blues-manifest``).

The dataset (``../shared/data/covid-blues``, see its README) labels each video with
``A-lines`` and ``B-lines`` = yes/no (some values carry a trailing space) in
``severity.csv``; files are ``lus_videos/patient_<PATIENT-ID>_<POINT>[_2].mp4``. Patient id =
``<PATIENT-ID>``. Consolidation and pleural effusion are not annotated, so those cells are
left empty (unknown), not 0; the free-text ``comments`` are not parsed into labels.

Its frames are already cropped to the probe's field of view (350 x 350 with black corners),
so training on it may prefer ``PreprocessConfig(crop_box=(0, 0, 350, 350))`` over per-video
sector detection, which would crop away the black bottom of dim videos.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from luvnet.engine.data.manifest import LabelSpec, ManifestRow
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS

LABEL_FILE = "severity.csv"
VIDEO_DIR = "lus_videos"
_NAME = re.compile(r"^patient_(?P<patient>[^_]+)_(?P<point>[LR][1-3])(?:_2)?$")
_COLUMNS = {"a_lines": "A-lines", "b_lines": "B-lines"}
_YES_NO = {"yes": LabelSpec.whole(), "no": LabelSpec.negative()}


def build_rows(data_dir: str | Path) -> list[ManifestRow]:
    """One row per labelled video, in ``severity.csv`` order; every problem in one error."""
    data_dir = Path(data_dir)
    labels_path = data_dir / LABEL_FILE
    if not labels_path.is_file():
        raise LuvnetError(
            f"{labels_path}: not found; expected the COVID-BLUES folder holding {LABEL_FILE} "
            f"and {VIDEO_DIR}/"
        )
    with labels_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        needed = ["video_file", *_COLUMNS.values()]
        missing = [name for name in needed if name not in header]
        if missing:
            raise LuvnetError(f"{labels_path}:1: missing column(s) {missing}; got {header}")
        reader.fieldnames = header
        rows, errors = [], []
        for record in reader:
            try:
                rows.append(_row(data_dir, record, reader.line_num))
            except ValueError as err:
                errors.append(f"{labels_path}:{reader.line_num}: {err}")
    if errors:
        raise LuvnetError("\n".join(errors[:50]))
    if not rows:
        raise LuvnetError(f"{labels_path}: no rows; expected one row per video")
    return rows


def _row(data_dir: Path, record: dict[str, str], line: int) -> ManifestRow:
    name = (record.get("video_file") or "").strip()
    stem = name.removesuffix(".mp4")
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"video_file {name!r}; expected patient_<PATIENT-ID>_<L1..R3>[_2]")
    video = data_dir / VIDEO_DIR / f"{stem}.mp4"
    if not video.is_file():
        raise ValueError(f"video {video} not found")
    labels = {pattern: LabelSpec.unknown() for pattern in PATTERNS}
    for pattern, column in _COLUMNS.items():
        value = (record.get(column) or "").strip().lower()
        if value not in _YES_NO:
            raise ValueError(f"{column} {record.get(column)!r}; expected yes or no")
        labels[pattern] = _YES_NO[value]
    return ManifestRow(video.resolve(), match["patient"], labels, None, line)
