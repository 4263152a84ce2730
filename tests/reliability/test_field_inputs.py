"""Inputs people bring from other tools, through the real entry points: file names pasted from
web pages or written by scanners, manifests saved by spreadsheets, checkpoints copied without
their weights. The handed cases of ``../shared/cases/`` (manifests/, names/, checkpoints/) with
the right outcomes of its README, and generated variants of each kind.

Generated manifest encodings, delimiters and label spellings are in
tests/engine/data/test_manifest.py; bad copies of the weights and configs saved by Windows
editors in tests/engine/model/test_checkpoint.py; the text decoding in tests/engine/test_files.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from luvnet.engine.data.manifest import LabelSpec, read_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.frame_source import SourceEnded, SourceFrame
from luvnet.streamer.protocol import StatusMessage, decode
from luvnet.streamer.schema import MAX_TEXT_CHARS, check_text, printable
from tests.reliability.helpers import REPO, Collector, stream_args
from tests.streamer.conftest import free_port, write_video

CASES = REPO.parent / "shared" / "cases"
needs_cases = pytest.mark.skipif(
    not CASES.is_dir(), reason=f"the handed cases are not here ({CASES}); they live beside the repo"
)
NAMES = CASES / "names"
MANIFESTS = CASES / "manifests"
FRAMES = 5


def stream_file(
    checkpoint: Path, source: str, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], Collector]:
    """``luvnet stream --source SOURCE --max-frames 5 --as-fast-as-possible`` run in ``cwd``,
    with a subscriber that takes every message."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    collector = Collector(endpoint)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "luvnet.cli"]
            + stream_args(endpoint, checkpoint, source)
            + ["--max-frames", str(FRAMES), "--as-fast-as-possible", "--wait-subscriber", "20"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        time.sleep(0.3)  # the last messages in flight
    finally:
        collector.close()
    return result, collector


def assert_streams(result: subprocess.CompletedProcess[str], collector: Collector) -> None:
    assert result.returncode == 0, result.stderr
    scores = collector.scores()
    assert [m.frame for m in scores] == list(range(FRAMES)), result.stderr
    final: StatusMessage = collector.statuses()[-1]
    assert final.state == "ended" and final.frames_published == FRAMES, final


# --------------------------------------------------------------------------- names


@needs_cases
@pytest.mark.parametrize("name", ["P01:L1.mp4", "Lunge_rechts_ü_肺.mp4", "scan_%03d.mp4"])
def test_handed_names_stream_by_their_relative_name(tiny_checkpoint, name):
    """P01:L1.mp4 used to "cannot open" (FFmpeg read "P01:" as a protocol); the others must
    keep streaming ("%03d" is not an image-sequence pattern here)."""
    result, collector = stream_file(tiny_checkpoint, f"file:{name}", NAMES)
    assert_streams(result, collector)
    assert collector.statuses()[-1].source == f"file:{name}"


@needs_cases
def test_handed_names_evaluate(tiny_checkpoint, tmp_path):
    from luvnet.cli import main

    names = ["P01:L1.mp4", "Lunge_rechts_ü_肺.mp4", "scan_%03d.mp4"]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion,split\n"
        + "".join(f"{NAMES / n},p{i},{i % 2},1,0,0,test\n" for i, n in enumerate(names)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--manifest", str(manifest)]
    argv += ["--out", str(out), "--device", "cpu", "--num-workers", "0"]
    assert main([*argv, "--cache", str(tmp_path / "cache")]) == 0
    predictions = (out / "predictions.csv").read_text(encoding="utf-8")
    assert all(name in predictions for name in names), predictions


def test_a_name_with_a_no_break_space_streams_with_it_escaped(tiny_checkpoint, tmp_path):
    """A no-break space pasted from a web page used to stop the stream at start ("source:
    expected printable text", exit 2): a wire rule must not refuse a valid file."""
    name = "scan\u00a0L1.mp4"
    write_video(tmp_path / name, frames=FRAMES)
    result, collector = stream_file(tiny_checkpoint, f"file:{tmp_path / name}", tmp_path)
    assert_streams(result, collector)
    source = collector.statuses()[-1].source
    assert source == f"file:{tmp_path}/scan\\xa0L1.mp4" and source.isprintable(), source


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("scan\u00a0L1.mp4", "scan\\xa0L1.mp4"),
        ("scan\u200bL1.mp4", "scan\\u200bL1.mp4"),
        ("scan\x1b[31mL1.mp4", "scan\\x1b[31mL1.mp4"),  # no terminal escape reaches a screen
        ("Lunge_rechts_ü_肺.mp4", "Lunge_rechts_ü_肺.mp4"),
        ("x" * 300, "x" * (MAX_TEXT_CHARS - 3) + "..."),
        ("\n" * 200, "\\n" * 126 + "..."),  # whole escapes only, never half of one
    ],
    ids=["no-break-space", "zero-width-space", "terminal-escape", "unicode", "long", "newlines"],
)
def test_status_source_names_are_escaped_not_refused(tiny_checkpoint, name, sent):
    """Whatever the name, the stream runs, and its status passes the decoder's checks."""
    messages: list = []
    settings = StreamSettings(checkpoint=tiny_checkpoint, realtime=False)
    compose_stream(settings, messages.append, source=_Named(name)).run(threading.Event())
    status = [m for m in messages if isinstance(m, StatusMessage)][-1]
    assert status.state == "ended" and status.source == sent
    assert decode(status.encode()).source == sent


@given(st.text(max_size=400))
def test_printable_always_passes_the_text_check(text):
    assert check_text("source", printable(text)) == printable(text)


class _Named:
    """A source that only has a name: status is built before any frame is read."""

    fps = 30.0
    retry_open = False

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self) -> None: ...

    def read(self) -> SourceFrame:
        raise SourceEnded(self.name)

    def close(self) -> None: ...


@pytest.mark.parametrize("name", ["L1:2024-05-01T10:00.mp4", "scan_%d:1.mp4"])
def test_a_relative_name_with_a_colon_streams(tiny_checkpoint, tmp_path, name):
    write_video(tmp_path / name, frames=FRAMES)
    result, collector = stream_file(tiny_checkpoint, f"file:{name}", tmp_path)
    assert_streams(result, collector)


def test_relative_names_with_a_colon_or_percent_decode_for_training(tmp_path, monkeypatch):
    from luvnet.engine.data.video import iter_frames, read_video

    monkeypatch.chdir(tmp_path)
    for name in ("P01:L1.mp4", "scan_%03d.mp4"):
        write_video(tmp_path / name, frames=FRAMES)
        assert read_video(name).frames.shape[0] == FRAMES
        assert sum(1 for _ in iter_frames(name)) == FRAMES


# --------------------------------------------------------------------------- manifests


@needs_cases
def test_handed_semicolon_manifest_reads_as_intended():
    """';'-separated, CRLF, UTF-8 with a BOM: a spreadsheet in a comma-decimal locale."""
    rows = read_manifest(MANIFESTS / "a_excel_semicolon.csv").rows
    assert [r.video for r in rows] == [
        (MANIFESTS / "clip1.mp4").resolve(),
        (MANIFESTS / "videos" / "clip2.mp4").resolve(),
    ]
    assert [r.patient_id for r in rows] == ["P001", "P002"]
    assert rows[0].labels["a_lines"] == LabelSpec.whole()
    assert rows[1].labels["b_lines"] == LabelSpec.whole()
    assert rows[1].labels["a_lines"] == LabelSpec.negative() and rows[1].split == "test"


@needs_cases
def test_handed_backslash_manifest_resolves_the_relative_path_and_names_the_windows_one():
    path = MANIFESTS / "b2_backslash_paths.csv"
    with pytest.raises(LuvnetError) as err:
        read_manifest(path)
    # One line, for line 4 only: videos\clip2.mp4 on line 3 was found as videos/clip2.mp4.
    assert str(err.value) == (
        f"{path}:4: video 'C:\\Users\\sono\\LUS\\videos\\clip3.mp4' is a Windows path from "
        "another machine; copy the video here and give its path relative to the manifest's "
        "folder (e.g. videos/clip3.mp4)"
    )


@needs_cases
def test_handed_backslash_manifest_without_the_foreign_row(tmp_path):
    lines = (MANIFESTS / "b2_backslash_paths.csv").read_bytes().splitlines(keepends=True)
    (tmp_path / "m.csv").write_bytes(b"".join(lines[:3]))
    (tmp_path / "clip1.mp4").symlink_to(MANIFESTS / "clip1.mp4")
    (tmp_path / "videos").symlink_to(MANIFESTS / "videos")
    rows = read_manifest(tmp_path / "m.csv").rows
    assert rows[1].video == (MANIFESTS / "videos" / "clip2.mp4").resolve()


@needs_cases
def test_handed_manifest_with_spreadsheet_numbers_reads_1_and_0():
    rows = read_manifest(MANIFESTS / "d_excel_numbers.csv").rows
    cells = [[r.labels[p].to_cell() for p in ("a_lines", "b_lines")] for r in rows]
    assert cells == [["1", "0"], ["0", "1"]]  # 1.0, 0.0 / FALSE, TRUE


# --------------------------------------------------------------------------- checkpoints


@needs_cases
def test_handed_git_lfs_pointer_is_named_with_how_to_fetch_it(tiny_checkpoint, tmp_path):
    checkpoint = tmp_path / "lfs"
    checkpoint.mkdir()
    shutil.copy(tiny_checkpoint / CONFIG_FILE, checkpoint / CONFIG_FILE)
    shutil.copy(CASES / "checkpoints" / "lfs_pointer" / WEIGHTS_FILE, checkpoint / WEIGHTS_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "info", "--checkpoint", str(checkpoint), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert f"{checkpoint / WEIGHTS_FILE}: a git-lfs pointer, not the weights" in errors[0]
    assert "`git lfs install && git lfs pull`" in errors[0]
    assert "(12166800 bytes)" in errors[0]


def test_a_config_json_with_bom_and_crlf_streams(tiny_checkpoint, tmp_path):
    """config.json saved by a Windows editor: UTF-8 with a BOM, CRLF line ends."""
    checkpoint = tmp_path / "windows"
    shutil.copytree(tiny_checkpoint, checkpoint)
    document = json.loads((checkpoint / CONFIG_FILE).read_text())
    text = json.dumps(document, indent=2).replace("\n", "\r\n")
    (checkpoint / CONFIG_FILE).write_bytes(b"\xef\xbb\xbf" + text.encode())
    write_video(tmp_path / "scan.mp4", frames=FRAMES)
    result, collector = stream_file(checkpoint, "file:scan.mp4", tmp_path)
    assert_streams(result, collector)
