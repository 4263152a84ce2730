"""A frame size change mid-stream: the sector is found again, the window restarts, a status
message says why, and every frame is scored at its true size (issue 11, build item 5).

Through the real CLI and a plain ZeroMQ subscriber; the handed case when ../shared/cases is
there, and a generated MPEG-TS (two recordings of different sizes joined) always.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from luvnet.engine.data.preprocess import letterbox_u8, normalize
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.streamer.stages import PreprocessStage
from tests.streamer.test_stream import run_stream

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "cases"
CHANGE = "frame size changed from 320x240 to 480x360 at frame 15"


def write_segment(path: Path, frames: int, size: tuple[int, int], seed: int) -> None:
    """An MPEG-TS of a speckle fan inside a static frame (what a scanner shows), h x w."""
    rng = np.random.default_rng(seed)
    h, w = size
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=30, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            image = np.zeros((h, w, 3), np.uint8)
            image[h // 6 : h - 4, w // 5 : w - w // 5] = rng.integers(
                0, 255, (h - 4 - h // 6, w - 2 * (w // 5), 1), dtype=np.uint8
            )
            image[2:10, 2:30] = 255  # a static label
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def joined_ts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("size_change")
    write_segment(folder / "a.ts", 15, (240, 320), seed=1)
    write_segment(folder / "b.ts", 15, (360, 480), seed=2)
    joined = folder / "joined.ts"
    # MPEG-TS segments join by concatenation (how recordings of a session are spliced).
    joined.write_bytes((folder / "a.ts").read_bytes() + (folder / "b.ts").read_bytes())
    return joined


def check_size_change(video: Path, checkpoint: Path) -> None:
    result, sub = run_stream(
        "--source", f"file:{video}", "--checkpoint", str(checkpoint), "--as-fast-as-possible"
    )
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    assert [m["frame"] for m in scores] == list(range(30)), "every frame is scored"
    fills = [m["fill"] for m in scores]
    # The frames the sector is found from are kept: the window grows from the first frame of
    # each size, and at frame 15 (the change) it starts again from 1.
    assert fills == list(range(1, 16)) * 2, fills
    notes = [m["last_error"] or "" for m in sub.of_kind("status")]
    assert any(n.startswith(CHANGE) and "finding the imaging sector" in n for n in notes), notes
    found = [n for n in notes if n.startswith(CHANGE) and "sector found again" in n]
    assert found, f"a status says the sector was found again: {notes}"
    assert result.stderr.count(f"warning: {CHANGE}") == 1, result.stderr
    assert "window restarted at frame 15" in found[0], found


def test_generated_size_change(tiny_checkpoint, joined_ts) -> None:
    with av.open(str(joined_ts)) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert sizes == [(320, 240)] * 15 + [(480, 360)] * 15, "the fixture joins two sizes"
    check_size_change(joined_ts, tiny_checkpoint)


def test_handed_size_change_case(tiny_checkpoint) -> None:
    video = CASES / "video" / "13_size_change.ts"
    if not video.is_file():
        pytest.skip(f"handed case {video} is absent (../shared/cases not mounted)")
    check_size_change(video, tiny_checkpoint)


def scan(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w), np.uint8)
    image[h // 6 : h - 4, w // 5 : w - w // 5] = rng.integers(0, 255, (h - 4 - h // 6, 1))
    return image


@pytest.mark.parametrize("box", [None, (10, 10, 100, 80)])
def test_a_new_size_is_never_cut_with_the_old_box(box) -> None:
    """Calibrated or fixed (--crop), the box of the old size never crops a new-size frame."""
    cfg = PreprocessConfig(image_size=32)
    stage = PreprocessStage(
        ModelConfig(preprocess=cfg), device=torch.device("cpu"), box=box, calibrate_frames=4
    )
    for i in range(6):
        stage.push(scan(120, 160, i), i)
    assert stage.preprocessor.box is not None and stage.size_changed is None
    version = stage.box_version
    assert stage.push(scan(90, 200, 9), 6) == [], "held: the new size calibrates"
    assert stage.size_changed == ((120, 160), (90, 200))
    assert stage.preprocessor.box is None and stage.preprocessor.calibrating
    ready = []
    for i in range(3):
        ready += stage.push(scan(90, 200, 10 + i), 7 + i)
    assert [tag for tag, _, _ in ready] == [6, 7, 8, 9], "the held frames, in order"
    assert all(v > version for _, _, v in ready), "the window must restart"
    assert stage.size_changed is None and stage.preprocessor.box is not None, "locked again"
    x, y, w, h = stage.preprocessor.box
    assert x + w <= 200 and y + h <= 90, "the new box fits the new size"
    expected = letterbox_u8(scan(90, 200, 9), stage.preprocessor.box, 32)
    full = normalize(torch.from_numpy(expected).unsqueeze(0), cfg)
    torch.testing.assert_close(ready[0][1], full, rtol=0, atol=0)
