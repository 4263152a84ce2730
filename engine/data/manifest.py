"""The CSV manifest of labelled videos: format, parsing and up-front validation.

Format (one header line; comma-separated, UTF-8)::

    video,patient_id,a_lines,b_lines,consolidation,pleural_effusion[,split]

What spreadsheets save is read too: ``;`` or tab between cells (the delimiter is taken from
the header line), UTF-8 with or without a byte-order mark, UTF-16 with one ("Unicode Text"),
CRLF line ends, and empty columns after the last named one.

* ``video``: path relative to the manifest's folder (absolute paths allowed; ``\\`` between
  folders is read as ``/``); extension one of :data:`engine.video.VIDEO_EXTENSIONS`, or
  any name for a DICOM file (recognised by its content, :func:`engine.data.dicom.is_dicom`). Each
  video at most once. A Windows drive or network path (``C:\\...``) is refused by name.
* ``patient_id``: any non-empty text; splits are made by patient, never by video.
* one column per pattern (``engine.config.PATTERNS``), each cell one of
  ``0`` (absent in the whole video), ``1`` (present in the whole video),
  ``12-40;88-120`` (present in these frames: 0-based, both ends inclusive) or
  empty (unknown / not annotated: excluded from the loss and the metrics, NOT negative).
  A single frame is ``7-7``; a bare number other than 0 and 1 is rejected as ambiguous.
  Spreadsheet spellings of 0 and 1 are read as such: ``0.0``/``1.0`` (also ``0,0``/``1,0``)
  and ``FALSE``/``TRUE`` in any case.
* ``split`` (optional): ``train`` / ``val`` / ``test`` (a fixed split), or ``test`` plus
  fold numbers ``0``, ``1``, ... (the fold whose validation set the patient is in), or empty
  (assigned by :mod:`engine.splits`). All rows of one patient carry the same value.

Every problem is reported at once, one line each: ``<manifest>:<line>: <what>``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from luvnet.engine.data.dicom import is_dicom
from luvnet.engine.data.video import VIDEO_EXTENSIONS
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open, read_text
from luvnet.engine.model.config import PATTERNS

REQUIRED_COLUMNS: tuple[str, ...] = ("video", "patient_id", *PATTERNS)
OPTIONAL_COLUMNS: tuple[str, ...] = ("split",)
FIXED_SPLITS: tuple[str, ...] = ("train", "val", "test")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
# 0 and 1 as spreadsheets write them: 1.0 (0,0 in comma-decimal locales), TRUE/FALSE.
_SPREADSHEET_BOOL = re.compile(r"(?i)(?:([01])(?:[.,]0*)?|(true)|false)")
_DELIMITERS = (",", ";", "\t")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")  # C:\ or C:/ or \\server
_WHOLE_END = 2**62  # "to the last frame", whatever the video's length
_MAX_LISTED_ERRORS = 50


@dataclass(frozen=True)
class LabelSpec:
    """One pattern cell: ``ranges`` None = unknown, () = absent, else inclusive frame ranges
    (sorted, merged; "whole video" is one range to the end)."""

    ranges: tuple[tuple[int, int], ...] | None

    @classmethod
    def unknown(cls) -> LabelSpec:
        return cls(None)

    @classmethod
    def negative(cls) -> LabelSpec:
        return cls(())

    @classmethod
    def whole(cls) -> LabelSpec:
        return cls(((0, _WHOLE_END),))

    @property
    def known(self) -> bool:
        return self.ranges is not None

    @classmethod
    def parse(cls, cell: str) -> LabelSpec:
        """From a manifest cell; ValueError with what was expected on bad input."""
        text = cell.strip()
        if text == "":
            return cls.unknown()
        boolean = _SPREADSHEET_BOOL.fullmatch(text)
        if boolean:
            return cls.whole() if boolean[1] == "1" or boolean[2] else cls.negative()
        spans: list[tuple[int, int]] = []
        for part in text.split(";"):
            match = _RANGE.match(part)
            if not match:
                raise ValueError(
                    f"bad range {part.strip()!r} in {text!r}; expected 0, 1, empty, or "
                    "ranges like 12-40;88-120 (single frame: 7-7)"
                )
            start, end = int(match[1]), int(match[2])
            if end < start:
                raise ValueError(f"bad range {part.strip()!r}: end {end} is before start {start}")
            spans.append((start, end))
        return cls(_merge(spans))

    def to_cell(self) -> str:
        if self.ranges is None:
            return ""
        if not self.ranges:
            return "0"
        if self.ranges == ((0, _WHOLE_END),):
            return "1"
        return ";".join(f"{a}-{b}" for a, b in self.ranges)

    def clip_label(self, start: int, end: int) -> float:
        """1.0 if frames start..end (inclusive) overlap a marked range, 0.0 if not, NaN if
        unknown."""
        if self.ranges is None:
            return math.nan
        return float(any(a <= end and b >= start for a, b in self.ranges))


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


@dataclass(frozen=True)
class ManifestRow:
    video: Path  # absolute
    patient_id: str
    labels: dict[str, LabelSpec]  # keyed by pattern name, in PATTERNS order
    split: str | None = None  # "train" / "val" / "test" / a fold number as text, or None
    line: int = 0  # line in the manifest file, for messages


@dataclass(frozen=True)
class Manifest:
    path: Path
    rows: list[ManifestRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def patients(self) -> list[str]:
        """Patient ids in order of first appearance."""
        return list(dict.fromkeys(row.patient_id for row in self.rows))

    def patient_splits(self) -> dict[str, str | None]:
        """The split cell of each patient (validated to be one value per patient)."""
        return {row.patient_id: row.split for row in self.rows}


def parse_split(cell: str) -> str | None:
    """Normalised split cell; ValueError with what was expected."""
    text = cell.strip().lower()
    if text == "":
        return None
    if text in FIXED_SPLITS:
        return text
    if text.isdigit():
        return str(int(text))
    raise ValueError(
        f"bad split {cell.strip()!r}; expected train, val, test, a fold number (0, 1, ...) or empty"
    )


def read_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Parse and validate a manifest; every problem in one LuvnetError, one line each."""
    path = Path(path)
    if not path.is_file():
        raise LuvnetError(
            f"{path}: no such manifest file; expected a CSV with header "
            f"{','.join(REQUIRED_COLUMNS)}[,split]"
        )
    try:
        text = read_text(path, hint=_ENCODING_HINT)
    except OSError as err:
        raise LuvnetError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        return _parse(path, text, check_files)
    except csv.Error as err:  # e.g. a cell over the csv module's field size limit
        raise LuvnetError(f"{path}: {err}; expected a plain CSV manifest") from None


_ENCODING_HINT = (
    "expected UTF-8 or UTF-16 text; a spreadsheet's plain 'CSV' uses this computer's code "
    "page: save as 'CSV UTF-8' instead"
)


def _delimiter(first_line: str) -> str:
    """The delimiter that splits the header into the most known column names.

    Spreadsheets in comma-decimal locales save ``;``, "Unicode Text" exports save tabs. When no
    delimiter yields a known name, the most frequent one, so the header error lists columns.
    """
    known = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)

    def score(delimiter: str) -> tuple[int, int]:
        names = next(csv.reader([first_line], delimiter=delimiter), [])
        return sum(name.strip() in known for name in names), first_line.count(delimiter)

    return max(_DELIMITERS, key=score)  # ties go to the first, the comma


def _parse(path: Path, text: str, check_files: bool) -> Manifest:
    delimiter = _delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    while header and not header[-1]:  # empty columns a spreadsheet kept after the last one
        header.pop()
    _check_header(path, header)
    root = path.resolve().parent
    errors: list[str] = []
    rows: list[ManifestRow] = []
    seen_video: dict[Path, int] = {}
    patient_split: dict[str, tuple[str | None, int]] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header) and not any(cell.strip() for cell in cells[len(header) :]):
            cells = cells[: len(header)]  # trailing empty cells
        if len(cells) != len(header):
            quoting = (
                f"; a {delimiter!r} inside a cell (frame ranges 12-40;88-120) must be quoted"
                if delimiter != "," and len(cells) > len(header)
                else ""
            )
            errors.append(f"line {line}: expected {len(header)} cells, got {len(cells)}{quoting}")
            continue
        row, row_errors = _parse_row(dict(zip(header, cells, strict=True)), root, line, check_files)
        errors += row_errors
        if row is None:
            continue
        if row.video in seen_video:
            errors.append(
                f"line {line}: duplicate video {str(row.video)!r}, already listed on "
                f"line {seen_video[row.video]}"
            )
            continue
        seen_video[row.video] = line
        first = patient_split.setdefault(row.patient_id, (row.split, line))
        if first[0] != row.split:
            errors.append(
                f"line {line}: patient {row.patient_id!r} has split {row.split or '(empty)'!r} "
                f"but {first[0] or '(empty)'!r} on line {first[1]}; all rows of a patient must "
                "carry the same split"
            )
            continue
        rows.append(row)
    if not errors and not rows:
        errors.append("line 2: no data rows; expected at least one video")
    if errors:
        raise _combined(path, errors)
    return Manifest(path, rows)


def _check_header(path: Path, header: list[str]) -> None:
    if not any(header):
        raise LuvnetError(
            f"{path}:1: empty file; expected the header {','.join(REQUIRED_COLUMNS)}[,split]"
        )
    problems = []
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        problems.append(f"line 1: duplicate column(s) {dupes}")
    unknown = [name for name in header if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        problems.append(
            f"line 1: unknown column(s) {unknown}; expected "
            f"{list(REQUIRED_COLUMNS)} and optionally {list(OPTIONAL_COLUMNS)}"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        problems.append(f"line 1: missing required column(s) {missing}")
    if problems:
        raise _combined(path, problems)


def _parse_row(
    cells: dict[str, str], root: Path, line: int, check_files: bool
) -> tuple[ManifestRow | None, list[str]]:
    errors: list[str] = []
    where = f"line {line}"
    video_text = cells["video"].strip()
    video = _video_path(video_text, root)
    if not video_text:
        errors.append(f"{where}: empty video cell; expected a video path")
    elif video is None:
        example = "/".join(PureWindowsPath(video_text).parts[1:][-2:])  # parts[0] is the drive
        errors.append(
            f"{where}: video '{video_text}' is a Windows path from another machine; copy the "
            f"video here and give its path relative to the manifest's folder (e.g. {example})"
        )
    elif video.suffix.lower() not in VIDEO_EXTENSIONS and not is_dicom(video):
        # DICOM files are often named without an extension (IM0001): the content decides.
        errors.append(
            f"{where}: video {video_text!r} has extension {video.suffix or '(none)'!r}"
            f"; expected one of {', '.join(VIDEO_EXTENSIONS)}, or a DICOM file"
        )
    elif check_files and not video.is_file():
        errors.append(f"{where}: video file {video_text!r} not found (looked for {video})")
    patient = cells["patient_id"].strip()
    if not patient:
        errors.append(f"{where}: empty patient_id; expected an identifier")
    labels: dict[str, LabelSpec] = {}
    for name in PATTERNS:
        try:
            labels[name] = LabelSpec.parse(cells[name])
        except ValueError as err:
            errors.append(f"{where}: {name}: {err}")
    split = None
    if "split" in cells:
        try:
            split = parse_split(cells["split"])
        except ValueError as err:
            errors.append(f"{where}: split: {err}")
    if errors or video is None:
        return None, errors
    return ManifestRow(video.resolve(), patient, labels, split, line), []


def _video_path(text: str, root: Path) -> Path | None:
    """The video cell as a path under ``root``; None for a Windows drive or network path.

    Backslashes between folders (``videos\\clip2.mp4``, written on Windows) are read as
    ``/`` unless a file with the literal name exists (a POSIX name may hold a backslash).
    """
    literal = Path(text) if Path(text).is_absolute() else root / text
    if literal.is_file():
        return literal
    if _WINDOWS_ABSOLUTE.match(text):
        return None
    return root / text.replace("\\", "/") if "\\" in text else literal


def _combined(path: Path, errors: list[str]) -> LuvnetError:
    shown = [f"{path}:{e.removeprefix('line ')}" for e in errors[:_MAX_LISTED_ERRORS]]
    if len(errors) > _MAX_LISTED_ERRORS:
        shown.append(f"{path}: ... and {len(errors) - _MAX_LISTED_ERRORS} more error(s)")
    return LuvnetError("\n".join(shown))


def write_manifest(path: str | Path, rows: list[ManifestRow], *, with_split: bool = False) -> None:
    """Write rows as a manifest, atomically; video paths relative to the manifest's folder."""
    path = Path(path)
    root = path.resolve().parent
    columns = [*REQUIRED_COLUMNS, *(["split"] if with_split else [])]
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            video = Path(os.path.relpath(row.video.resolve(), root))
            cells = [video.as_posix(), row.patient_id, *(row.labels[p].to_cell() for p in PATTERNS)]
            writer.writerow(cells + ([row.split or ""] if with_split else []))
