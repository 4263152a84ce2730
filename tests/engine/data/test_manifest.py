"""engine.manifest: label cells, a valid manifest, and every validation error."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from luvnet.engine.data.manifest import LabelSpec, read_manifest, write_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS

HEADER = "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion"


def write_video(path: Path, frames: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for t in range(frames):
        writer.write(np.full((24, 32, 3), 40 * t, np.uint8))
    writer.release()
    return path


def write_csv(folder: Path, *lines: str, name: str = "manifest.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    for name in ("a.avi", "b.avi", "c.avi", "sub/d.avi"):
        write_video(tmp_path / name)
    return tmp_path


# --------------------------------------------------------------------------- label cells


@pytest.mark.parametrize(
    ("cell", "ranges"),
    [
        ("", None),
        ("  ", None),
        ("0", ()),
        ("1", ((0, 2**62),)),
        ("12-40;88-120", ((12, 40), (88, 120))),
        (" 88 - 120 ; 12-40 ", ((12, 40), (88, 120))),
        ("7-7", ((7, 7),)),
        ("0-0", ((0, 0),)),
        ("1-5;4-9;11-12", ((1, 9), (11, 12))),
        ("1-5;6-9", ((1, 9),)),
    ],
)
def test_label_cell_parses(cell: str, ranges: tuple | None) -> None:
    assert LabelSpec.parse(cell).ranges == ranges


@pytest.mark.parametrize(
    ("cell", "fragment"),
    [
        ("40-12", "end 12 is before start 40"),
        ("abc", "bad range 'abc'"),
        ("5", "bad range '5'"),
        ("-3-4", "bad range '-3-4'"),
        ("1-2;;3-4", "bad range ''"),
        ("1-2,3-4", "bad range '1-2,3-4'"),
        ("yes", "bad range 'yes'"),
        ("1.0", "bad range '1.0'"),
    ],
)
def test_label_cell_rejects(cell: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="expected|before") as err:
        LabelSpec.parse(cell)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("cell", "start", "end", "expected"),
    [
        ("40-50", 0, 29, 0.0),
        ("40-50", 24, 53, 1.0),
        ("40-50", 48, 77, 1.0),
        ("40-50", 51, 80, 0.0),
        ("29-29", 0, 29, 1.0),  # touching the clip's last frame counts
        ("30-30", 0, 29, 0.0),
        ("1", 500, 529, 1.0),
        ("0", 0, 29, 0.0),
    ],
)
def test_clip_label_overlap(cell: str, start: int, end: int, expected: float) -> None:
    assert LabelSpec.parse(cell).clip_label(start, end) == expected


def test_unknown_is_nan_not_negative() -> None:
    spec = LabelSpec.parse("")
    assert not spec.known and math.isnan(spec.clip_label(0, 29))
    assert LabelSpec.parse("0").known


@pytest.mark.parametrize("cell", ["", "0", "1", "3-3", "12-40;88-120"])
def test_label_cell_round_trip(cell: str) -> None:
    assert LabelSpec.parse(cell).to_cell() == cell


# --------------------------------------------------------------------------- valid manifest


def test_valid_manifest(videos: Path) -> None:
    absolute = videos / "c.avi"
    path = write_csv(
        videos,
        HEADER + ",split",
        "a.avi,p1,1,0,,12-40;88-120,train",
        f"{absolute},p2,0,,1,,test",
        "sub/d.avi, p1 ,,,,,train",
        "",  # blank lines are skipped
    )
    manifest = read_manifest(path)
    assert len(manifest) == 3 and manifest.patients() == ["p1", "p2"]
    first, second, third = manifest.rows
    assert first.video == (videos / "a.avi").resolve() and first.line == 2
    assert first.labels["a_lines"] == LabelSpec.whole()
    assert first.labels["b_lines"] == LabelSpec.negative()
    assert first.labels["consolidation"] == LabelSpec.unknown()
    assert first.labels["pleural_effusion"].ranges == ((12, 40), (88, 120))
    assert list(first.labels) == list(PATTERNS)
    assert second.video == absolute.resolve() and second.split == "test"
    assert third.patient_id == "p1" and third.line == 4
    assert manifest.patient_splits() == {"p1": "train", "p2": "test"}


def test_split_column_optional_and_normalised(videos: Path) -> None:
    path = write_csv(videos, HEADER, "a.avi,p1,1,1,1,1")
    assert read_manifest(path).rows[0].split is None
    path = write_csv(videos, HEADER + ",split", "a.avi,p1,1,1,1,1, Test ", "b.avi,p2,1,1,1,1,03")
    assert [r.split for r in read_manifest(path).rows] == ["test", "3"]


def test_write_then_read_round_trip(videos: Path, tmp_path: Path) -> None:
    source = read_manifest(
        write_csv(videos, HEADER + ",split", "a.avi,p1,1,0,,3-9,0", "sub/d.avi,p2,,,0,1,1")
    )
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    write_manifest(out_dir / "copy.csv", source.rows, with_split=True)
    text = (out_dir / "copy.csv").read_text()
    assert "../a.avi,p1,1,0,,3-9,0" in text, text
    copy = read_manifest(out_dir / "copy.csv")
    assert [(r.video, r.patient_id, r.labels, r.split) for r in copy.rows] == [
        (r.video, r.patient_id, r.labels, r.split) for r in source.rows
    ]


def test_check_files_off_skips_existence(tmp_path: Path) -> None:
    path = write_csv(tmp_path, HEADER, "nowhere.mp4,p1,1,1,1,1")
    assert read_manifest(path, check_files=False).rows[0].video.name == "nowhere.mp4"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([HEADER, "missing.avi,p1,1,0,0,0"], ":2: video file 'missing.avi' not found"),
        ([HEADER + ",notes", "a.avi,p1,1,0,0,0,x"], ":1: unknown column(s) ['notes']"),
        (
            ["video,patient_id,a_lines,b_lines,consolidation", "a.avi,p1,1,0,0"],
            ":1: missing required column(s) ['pleural_effusion']",
        ),
        ([HEADER + ",video", "a.avi,p1,1,0,0,0,a.avi"], ":1: duplicate column(s) ['video']"),
        ([HEADER, "a.avi,p1,40-12,0,0,0"], ":2: a_lines: bad range '40-12'"),
        ([HEADER, "a.avi,p1,0,abc,0,0"], ":2: b_lines: bad range 'abc'"),
        (
            [HEADER, "a.avi,p1,0,0,0,0", "b.avi,p2,0,0,0,0", "./a.avi,p3,0,0,0,0"],
            ":4: duplicate video",
        ),
        (
            [HEADER + ",split", "a.avi,p1,0,0,0,0,train", "b.avi,p1,0,0,0,0,test"],
            ":3: patient 'p1' has split 'test' but 'train' on line 2",
        ),
        (
            [HEADER + ",split", "a.avi,p1,0,0,0,0,1", "b.avi,p1,0,0,0,0,"],
            ":3: patient 'p1' has split '(empty)' but '1' on line 2",
        ),
        ([HEADER + ",split", "a.avi,p1,0,0,0,0,holdout"], ":2: split: bad split 'holdout'"),
        ([HEADER, "a.avi,p1,0,0,0"], ":2: expected 6 cells, got 5"),
        ([HEADER, "a.avi,,0,0,0,0"], ":2: empty patient_id"),
        ([HEADER, ",p1,0,0,0,0"], ":2: empty video cell"),
        ([HEADER, "a.png,p1,0,0,0,0"], ":2: video 'a.png' has extension '.png'"),
        ([HEADER], ":2: no data rows"),
        ([""], ":1: empty file"),
    ],
    ids=[
        "missing-file",
        "unknown-column",
        "missing-column",
        "duplicate-column",
        "reversed-range",
        "text-range",
        "duplicate-video",
        "patient-two-splits",
        "patient-split-and-empty",
        "bad-split",
        "cell-count",
        "empty-patient",
        "empty-video",
        "bad-extension",
        "no-rows",
        "empty-file",
    ],
)
def test_manifest_errors(videos: Path, lines: list[str], expected: str) -> None:
    path = write_csv(videos, *lines)
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    message = str(err.value)
    assert f"{path}{expected}" in message, message


def test_all_errors_reported_one_line_each(videos: Path) -> None:
    path = write_csv(
        videos, HEADER, "a.avi,p1,40-12,0,0,0", "b.avi,p2,0,0,0,0", "nope.avi,p3,0,x,0,0"
    )
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{path}:2: a_lines")
    assert all(line.startswith(f"{path}:4: ") for line in lines[1:]), lines


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(LuvnetError, match=r"no such manifest file; expected a CSV with header"):
        read_manifest(tmp_path / "absent.csv")


def test_quoted_multiline_cell_keeps_line_numbers(videos: Path) -> None:
    path = write_csv(videos, HEADER, '"a.avi",p1,"1-2;\n3-4",0,0,0', "b.avi,p2,0,0,0,zz")
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    assert f"{path}:4: pleural_effusion: bad range 'zz'" in str(err.value)
