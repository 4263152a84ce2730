"""bench.decode_speed runs both readers over real files (speed itself is never asserted)."""

from __future__ import annotations

import subprocess
import sys

from luvnet.bench.decode_speed import compare_readers
from luvnet.commands.decode_speed import main
from tests.streamer.conftest import write_video


def test_compares_both_readers_on_the_same_files(tmp_path, capsys):
    paths = [write_video(tmp_path / f"{i}.mp4", frames=6 + i) for i in range(3)]
    result = compare_readers(paths)
    assert (result.files, result.frames, result.same_count) == (3, 6 + 7 + 8, 3)
    assert len(result.opencv_s) == len(result.pyav_s) == 3 and min(result.pyav_s) > 0
    run = subprocess.run(
        [sys.executable, "-m", "luvnet.commands.decode_speed", str(tmp_path), "--count", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "files 2," in run.stdout and "OpenCV / PyAV" in run.stdout


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
