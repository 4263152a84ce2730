"""Odd and hostile input through the live stream: frames of every shape and dtype, broken video
files, checkpoints posing as something else. Each is scored, or skipped with a one-line reason;
none stops the stream or corrupts what it publishes.

Already covered elsewhere (not repeated here): every decoder-level bad file in
tests/engine/data/test_video.py::test_bad_files, the frame formats of
tests/engine/data/test_preprocess.py::test_to_gray_u8_formats/_rejects and its property tests,
manifest rows in tests/engine/data/test_manifest.py, checkpoint shapes, keys and pickles at
the loader in tests/engine/model/test_checkpoint.py, and an empty frame in
tests/streamer/test_faults.py.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.frame_source import SourceEnded, SourceFrame
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from tests.reliability.helpers import REPO
from tests.streamer.conftest import write_video

RNG = np.random.default_rng(0)


def noise(shape: tuple[int, ...], dtype: Any = np.uint8, high: int = 255) -> np.ndarray:
    return RNG.integers(0, high, shape, endpoint=True).astype(dtype)


def read_only(image: np.ndarray) -> np.ndarray:
    image.setflags(write=False)
    return image


# (name, image, None when it must be scored, else a fragment of the skip reason)
FRAMES: list[tuple[str, Any, str | None]] = [
    ("grey HxW", noise((60, 80)), None),
    ("grey HxWx1", noise((60, 80, 1)), None),
    ("BGR", noise((60, 80, 3)), None),
    ("BGRA", noise((60, 80, 4)), None),
    ("16-bit grey", noise((60, 80), np.uint16, 65535), None),
    ("16-bit BGR", noise((60, 80, 3), np.uint16, 65535), None),
    ("float32 in [0, 1]", noise((60, 80)).astype(np.float32) / 255, None),
    ("float16 in [0, 1]", noise((60, 80)).astype(np.float16) / 255, None),
    ("1x1", noise((1, 1, 3)), None),
    ("1x4000", noise((1, 4000)), None),
    ("4000x3000 BGR", noise((3000, 4000, 3)), None),
    ("all black", np.zeros((60, 80, 3), np.uint8), None),
    ("all white", np.full((60, 80, 3), 255, np.uint8), None),
    ("strided view", noise((60, 160, 3))[:, ::2], None),
    ("read-only", read_only(noise((60, 80, 3))), None),
    ("float 0..255", noise((60, 80)).astype(np.float32), "expected float values in [0, 1]"),
    ("float NaN", np.full((60, 80), np.nan, np.float32), "expected float values in [0, 1]"),
    ("big-endian 16-bit", noise((60, 80), ">u2", 65535), "expected dtype uint8, uint16"),
    ("int32", noise((60, 80), np.int32), "got int32"),
    ("bool", np.ones((60, 80), bool), "got bool"),
    ("complex", np.ones((60, 80), np.complex64), "got complex64"),
    ("2 channels", noise((60, 80, 2)), "got (60, 80, 2)"),
    ("4-D", noise((2, 60, 80, 3)), "got (2, 60, 80, 3)"),
    ("None", None, "expected a numpy array, got NoneType"),
    ("nested list", [[0, 1], [2, 3]], "expected a numpy array, got list"),
]


class ListSource:
    """A third-party-style source that yields the given images in order, then ends."""

    name = "hostile-frames"
    retry_open = True

    def __init__(self, images: list[Any]) -> None:
        self.images = images
        self.index = 0

    @property
    def fps(self) -> float:
        return 30.0

    def open(self) -> None:
        pass

    def read(self) -> SourceFrame:
        if self.index >= len(self.images):
            raise SourceEnded(self.name)
        self.index += 1
        return SourceFrame(image=self.images[self.index - 1])

    def close(self) -> None:
        pass


def run_source(tiny_checkpoint: Path, frames: Any, **settings: Any) -> tuple[list, Any]:
    """The stream over ``frames`` (a FrameSource) or, when None, over ``settings["source"]``."""
    messages: list = []
    # Block policy: every frame is scored or skipped, none dropped, so indices line up.
    stream = StreamSettings(checkpoint=tiny_checkpoint, realtime=False, **settings)
    pipeline = compose_stream(stream, messages.append, source=frames)
    pipeline.run(threading.Event())
    return messages, pipeline


def test_odd_frames_through_the_live_stream_are_scored_or_skipped_one_by_one(
    tiny_checkpoint, caplog
):
    # 40, not 30: the sector crop locks during the tail, which rightly restarts the window.
    good_tail = [noise((60, 80, 3)) for _ in range(40)]
    images = [image for _, image, _ in FRAMES] + good_tail
    with caplog.at_level(logging.WARNING, logger="luvnet.streamer.pipeline"):
        messages, pipeline = run_source(tiny_checkpoint, ListSource(images))
    scores = [m for m in messages if isinstance(m, ScoreMessage)]
    scored = {m.frame for m in scores}
    skipped = {r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")}
    for i, (name, _, reason) in enumerate(FRAMES):
        if reason is None:
            assert i in scored, f"{name} (frame {i}): expected a score, got none"
        else:
            assert i not in scored, f"{name} (frame {i}): expected it skipped, got a score"
            lines = [s for s in skipped if s.startswith(f"skipped frame {i}: ")]
            assert len(lines) == 1 and reason in lines[0], f"{name}: {lines}"
            assert "\n" not in lines[0]
    bad = sum(reason is not None for _, _, reason in FRAMES)
    assert pipeline.counters.failed_frames == bad
    assert len(scores) == len(images) - bad, "every frame is either scored or skipped"
    # After all that, the stream is healthy: the good tail fills the window and scores sanely.
    last = scores[-1]
    assert last.frame == len(images) - 1 and last.fill == 30
    assert all(np.isfinite(list(m.scores.values())).all() for m in scores)
    assert np.allclose(last.attention.astype(float).sum(1), 8.0, atol=0.05)
    status = [m for m in messages if isinstance(m, StatusMessage)][-1]
    assert status.state == "ended" and status.frames_published == len(scores)


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    out = path.with_name(f"cut-{path.name}")
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def _avi(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (80, 60))
    for i in range(frames):
        writer.write(np.full((60, 80, 3), (i * 7) % 255, np.uint8))
    writer.release()
    return path


def _renamed(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


# (id, make(tmp) -> path, expected final state, scores published (None: some but not all))
FILES = [
    ("zero-bytes", lambda d: _write(d / "zero.mp4", b""), "error", 0),
    ("text-as-mp4", lambda d: _write(d / "t.mp4", b"not a video " * 99), "error", 0),
    ("cut-mp4", lambda d: _cut(write_video(d / "a.mp4", 20), 0.5), "error", 0),
    ("cut-avi", lambda d: _cut(_avi(d / "a.avi", 40), 0.6), "ended", None),
    ("avi-named-txt", lambda d: _renamed(_avi(d / "a.avi", 12), "a.txt"), "ended", 12),
    ("no-extension", lambda d: _renamed(_avi(d / "a.avi", 12), "noext"), "ended", 12),
    ("one-frame", lambda d: write_video(d / "one.mp4", 1), "ended", 1),
    ("directory", lambda d: (d / "dir.mp4").mkdir() or d / "dir.mp4", "error", 0),
    ("missing", lambda d: d / "missing.mp4", "error", 0),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "state", "count"),
    [f[1:] for f in FILES],
    ids=[f[0] for f in FILES],
)
def test_odd_video_files_through_the_live_stream(tiny_checkpoint, tmp_path, make, state, count):
    path = make(tmp_path)
    messages, pipeline = run_source(tiny_checkpoint, None, source=f"file:{path}")
    scores = [m for m in messages if isinstance(m, ScoreMessage)]
    final = [m for m in messages if isinstance(m, StatusMessage)][-1]
    assert final.state == state, final
    if count is None:
        assert len(scores) > 0, "the decodable part of a cut file is scored"
    else:
        assert len(scores) == count
    if state == "error":
        assert str(path) in final.last_error and "\n" not in final.last_error
    assert [m.frame for m in scores] == list(range(len(scores)))


class _Exploit:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('pwned')",))


def _luvnet_stream(checkpoint: Path, env_marker: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "stream", "--checkpoint", str(checkpoint)]
        + ["--source", "phantom", "--max-frames", "1", "--bind", "tcp://127.0.0.1:*"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PWNED_PATH": str(env_marker)},
    )


def test_a_pickle_posing_as_a_checkpoint_is_refused_by_the_stream_without_running(
    tiny_checkpoint, tmp_path
):
    fake = tmp_path / "fake"
    shutil.copytree(tiny_checkpoint, fake)
    (fake / "model.safetensors").write_bytes(pickle.dumps({"state": _Exploit()}))
    marker = tmp_path / "pwned"
    result = _luvnet_stream(fake, marker)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "refusing to load it" in result.stderr
    assert not marker.exists(), "the pickle was executed"


def _with_config(tiny_checkpoint: Path, tmp_path: Path, **model: Any) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    document = json.loads((bad / "config.json").read_text())
    document["model"].update(model)
    (bad / "config.json").write_text(json.dumps(document))
    return bad


@pytest.mark.parametrize(
    "model", [{"kernel_size": 12}, {"num_heads": -1}, {"num_heads": 7}], ids=str
)
def test_a_checkpoint_config_with_impossible_sizes_is_a_one_line_error(
    tiny_checkpoint, tmp_path, model
):
    bad = _with_config(tiny_checkpoint, tmp_path, **model)
    with pytest.raises(LuvnetError):
        compose_stream(StreamSettings(checkpoint=bad, source="phantom"), lambda _: None)


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"clip_length": 2000}, "window: expected 1..1024"),
        ({"clip_length": 10**9}, "window: expected 1..1024"),  # refused before allocating
        ({"pattern_names": ["A-lines", "b", "c", "d"]}, "patterns[0]"),
        ({"thresholds": [1.5, 0.5, 0.5, 0.5]}, "thresholds.a_lines"),
    ],
    ids=["window-2000", "window-1e9", "pattern-name", "threshold"],
)
def test_a_checkpoint_whose_scores_cannot_be_published_is_refused_at_start(
    tiny_checkpoint, tmp_path, model, named
):
    """It used to stream with every single frame skipped (ProtocolError per message)."""
    bad = _with_config(tiny_checkpoint, tmp_path, **model)
    with pytest.raises(LuvnetError, match="its scores cannot be published") as err:
        compose_stream(StreamSettings(checkpoint=bad, source="phantom"), lambda _: None)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_a_manifest_cell_over_the_csv_field_limit_is_a_one_line_error(tmp_path):
    _avi(tmp_path / "a.avi", 2)
    manifest = tmp_path / "m.csv"
    header = "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion"
    manifest.write_text(f"{header}\na.avi,{'p' * 200_000},0,0,0,0\n")
    with pytest.raises(LuvnetError, match="field larger than field limit"):
        read_manifest(manifest)


def test_an_unreadable_file_source_is_said_once_as_the_last_line(tiny_checkpoint, tmp_path):
    bad = _write(tmp_path / "bad.mp4", b"not a video")
    result = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "stream", "--checkpoint", str(tiny_checkpoint)]
        + ["--source", f"file:{bad}", "--max-frames", "5", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "not a readable video" in lines[-1]
    assert sum("not a readable video" in line for line in lines) == 1, result.stderr
