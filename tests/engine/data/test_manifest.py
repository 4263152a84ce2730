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
        ("2.0", "bad range '2.0'"),  # spreadsheet spellings of 0 and 1 only
        ("0.5", "bad range '0.5'"),
        ("TRUEISH", "bad range 'TRUEISH'"),
        ("01", "bad range '01'"),
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


# --------------------------------------------------------------------------- spreadsheet exports


def write_export(folder: Path, rows: list[list[str]], delimiter: str, encoding: str) -> Path:
    """A manifest as a spreadsheet saves it: CRLF, ``delimiter``, ``encoding`` (a "-sig" or
    "utf-16"/"utf-32" codec writes the byte-order mark, "-le"/"-be" ones write none)."""
    text = "".join(delimiter.join(cells) + "\r\n" for cells in rows)
    path = folder / "export.csv"
    path.write_bytes(text.encode(encoding))
    return path


EXPORT_ROWS = [
    ["video", "patient_id", "a_lines", "b_lines", "consolidation", "pleural_effusion", "split"],
    ["a.avi", "Müller-肺", "1", "0", "", '"12-40;88-120"', "test"],
    ["sub/d.avi", "p2", "0", "1", "0", "0", "train"],
]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
@pytest.mark.parametrize(
    "encoding",
    ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"],
)
def test_spreadsheet_exports_read_as_intended(videos: Path, delimiter: str, encoding: str) -> None:
    """Excel in a comma-decimal locale saves ';' and UTF-8 with a BOM; its "Unicode Text"
    saves tabs in UTF-16 LE with a BOM; LibreOffice offers every delimiter and encoding."""
    path = write_export(videos, EXPORT_ROWS, delimiter, encoding)
    manifest = read_manifest(path)
    first, second = manifest.rows
    assert first.video == (videos / "a.avi").resolve() and first.patient_id == "Müller-肺"
    assert first.labels["pleural_effusion"].ranges == ((12, 40), (88, 120))
    assert first.labels["consolidation"] == LabelSpec.unknown()
    assert second.video == (videos / "sub" / "d.avi").resolve() and second.split == "train"
    assert second.labels["b_lines"] == LabelSpec.whole()


def test_an_unquoted_range_in_a_semicolon_export_says_to_quote_it(videos: Path) -> None:
    rows = [EXPORT_ROWS[0], ["a.avi", "p1", "1", "0", "0", "12-40;88-120", "test"]]
    with pytest.raises(LuvnetError) as err:
        read_manifest(write_export(videos, rows, ";", "utf-8"))
    assert str(err.value).endswith(
        ":2: expected 7 cells, got 8; a ';' inside a cell (frame ranges 12-40;88-120) must be "
        "quoted"
    )


def test_a_header_in_no_known_delimiter_lists_its_columns(videos: Path) -> None:
    path = write_csv(videos, "Video;Patient;A;B", "a.avi;p1;1;0")
    with pytest.raises(LuvnetError, match=r":1: unknown column\(s\) \['Video', 'Patient', 'A'"):
        read_manifest(path)


def test_a_code_page_export_names_the_encoding_to_save_in(videos: Path) -> None:
    path = videos / "m.csv"
    path.write_bytes(f"{HEADER}\na.avi,Müller,1,0,0,0\n".encode("cp1252"))
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text (invalid start byte at byte ")
    assert "save as 'CSV UTF-8'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("typed", "spec"),
    [
        ("1.0", LabelSpec.whole()),
        ("0.0", LabelSpec.negative()),
        ("1,0", LabelSpec.whole()),  # comma-decimal locale (quoted in a comma file)
        ("0.00", LabelSpec.negative()),
        ("TRUE", LabelSpec.whole()),
        ("FALSE", LabelSpec.negative()),
        ("True", LabelSpec.whole()),
        ("false", LabelSpec.negative()),
    ],
)
def test_labels_typed_as_spreadsheet_numbers_and_booleans(
    videos: Path, typed: str, spec: LabelSpec
) -> None:
    path = write_csv(videos, HEADER, f'a.avi,p1,"{typed}",0,0,0')
    assert read_manifest(path).rows[0].labels["a_lines"] == spec


def test_trailing_empty_columns_are_ignored(videos: Path) -> None:
    path = write_csv(videos, HEADER + ",split,,", "a.avi,p1,1,0,0,0,test,,", "b.avi,p2,0,1,0,0,,")
    manifest = read_manifest(path)
    assert [r.split for r in manifest.rows] == ["test", None]
    # A value in such a column is not silently dropped.
    path = write_csv(videos, HEADER + ",,", "a.avi,p1,1,0,0,0,,note")
    with pytest.raises(LuvnetError, match=r":2: expected 6 cells, got 8"):
        read_manifest(path)


def test_relative_windows_paths_resolve(videos: Path) -> None:
    path = write_csv(videos, HEADER, "sub\\d.avi,p1,1,0,0,0", ".\\a.avi,p2,1,0,0,0")
    rows = read_manifest(path).rows
    assert [r.video for r in rows] == [
        (videos / "sub/d.avi").resolve(),
        (videos / "a.avi").resolve(),
    ]
    # The same video written both ways is one video.
    path = write_csv(videos, HEADER, "sub\\d.avi,p1,1,0,0,0", "sub/d.avi,p1,1,0,0,0")
    with pytest.raises(LuvnetError, match=r":3: duplicate video"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("cell", "example"),
    [
        ("C:\\Users\\sono\\LUS\\videos\\a.avi", "videos/a.avi"),
        ("d:/export/videos/a.avi", "videos/a.avi"),
        ("\\\\pacs\\share\\a.avi", "a.avi"),
    ],
    ids=["drive-backslash", "drive-slash", "network-share"],
)
def test_an_absolute_windows_path_is_named_as_such(videos: Path, cell: str, example: str) -> None:
    path = write_csv(videos, HEADER, "b.avi,p2,0,0,0,0", f"{cell},p1,1,0,0,0")
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    assert str(err.value) == (
        f"{path}:3: video '{cell}' is a Windows path from another machine; copy the video here "
        f"and give its path relative to the manifest's folder (e.g. {example})"
    )
