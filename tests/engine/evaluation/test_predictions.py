"""engine.predictions: the per-clip CSV round-trips and bad files give one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.predictions import (
    ClipRef,
    prediction_columns,
    read_predictions,
    write_predictions,
)
from luvnet.engine.model.config import PATTERNS

CLIPS = [
    ClipRef("v1_0000", "v1.mp4", "p1", 0, 30),
    ClipRef("v1_0024", "v1.mp4", "p1", 24, 54),
    ClipRef("v2_0000", "v2.mp4", "p2", 0, 17),
]
LABELS = np.array([[1, 0, np.nan, np.nan], [0, 1, np.nan, np.nan], [1, 1, 0, 1]])
PROBS = np.array([[0.1, 1 / 3, 0.0, 1.0], [0.7, 0.25, 0.5, 0.2], [2**-30, 0.99, 0.4, 0.6]])


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "pred.csv"
    write_predictions(path, CLIPS, LABELS, PROBS)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(prediction_columns(PATTERNS))
    assert lines[0].startswith("clip_id,video,patient_id,start,end,label_a_lines,prob_a_lines,")
    assert lines[1].startswith("v1_0000,v1.mp4,p1,0,30,1,0.1,0,0.3333333333333333,,0.0,,1.0")
    got = read_predictions(path)
    assert got.clips == tuple(CLIPS)
    assert got.pattern_names == PATTERNS
    np.testing.assert_array_equal(got.labels, LABELS)  # NaN positions included
    np.testing.assert_array_equal(got.probs, PROBS)
    assert got.row_of() == {"v1_0000": 0, "v1_0024": 1, "v2_0000": 2}


def _good_text(tmp_path) -> list[str]:
    path = tmp_path / "good.csv"
    write_predictions(path, CLIPS, LABELS, PROBS)
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: ls[:1], "no data rows after the header"),
        (lambda ls: [], "empty file"),
        (
            lambda ls: [ls[0].replace("prob_b_lines", "p_b_lines")] + ls[1:],
            "header: columns label_b_lines,p_b_lines",
        ),
        (lambda ls: [ls[0].replace("clip_id,", "id,")] + ls[1:], "header: expected clip_id,"),
        (lambda ls: ls[:2] + [ls[2].replace(",0.7,", ",abc,")], "line 3, column prob_a_lines"),
        (lambda ls: ls[:2] + [ls[2].replace(",0.7,", ",1.5,")], "got '1.5'"),
        (lambda ls: ls[:2] + [ls[2].replace(",0.7,", ",nan,")], "expected a probability in [0, 1]"),
        (lambda ls: ls[:2] + [ls[2].replace(",0,0.7,", ",2,0.7,")], "line 3, column label_a_lines"),
        (lambda ls: ls[:2] + [ls[2].replace(",0,0.7,", ",0.0,0.7,")], "expected 0, 1 or empty"),
        (lambda ls: ls[:2] + [ls[2].replace(",24,54,", ",24,x,")], "line 3, column end"),
        (lambda ls: ls[:2] + [ls[2].replace(",24,54,", ",54,24,")], "0 <= start < end"),
        (lambda ls: ls[:2] + [ls[1]], "line 3, column clip_id: duplicate 'v1_0000'"),
        (lambda ls: ls[:2] + [ls[2] + ",extra"], "line 3: expected 13 fields"),
        (lambda ls: ls[:2] + [ls[2].replace("v1.mp4,p1", "v1.mp4,")], "column patient_id"),
    ],
)
def test_bad_file_names_file_line_and_column(tmp_path, edit, message):
    lines = edit(_good_text(tmp_path))
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(LuvnetError) as err:
        read_predictions(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_blank_lines_are_skipped_but_counted(tmp_path):
    lines = _good_text(tmp_path)
    path = tmp_path / "blank.csv"
    path.write_text("\n".join([lines[0], "", lines[1], lines[2].replace(",0.7,", ",x,")]) + "\n")
    with pytest.raises(LuvnetError, match="line 4, column prob_a_lines"):
        read_predictions(path)


def test_missing_file(tmp_path):
    with pytest.raises(LuvnetError, match="no such predictions file"):
        read_predictions(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("clips", "labels", "probs", "message"),
    [
        (CLIPS, LABELS, PROBS[:2], "expected shape (3, 4)"),
        (CLIPS, LABELS, PROBS + 1, "prob_a_lines: expected a probability in [0, 1], got 1.1"),
        (CLIPS, LABELS + 1, PROBS, "label_a_lines: expected 0, 1 or NaN, got 2.0"),
        ([CLIPS[0], CLIPS[0], CLIPS[2]], LABELS, PROBS, "duplicate 'v1_0000'"),
        ([ClipRef("c", "v", "p", 5, 5)] + CLIPS[1:], LABELS, PROBS, "0 <= start < end"),
        ([ClipRef("c", "v", "p", 0.5, 5)] + CLIPS[1:], LABELS, PROBS, "column start"),
    ],
)
def test_writer_refuses_bad_rows(tmp_path, clips, labels, probs, message):
    path = tmp_path / "out.csv"
    with pytest.raises(LuvnetError) as err:
        write_predictions(path, clips, labels, probs)
    assert message in str(err.value)
    assert not path.exists()
