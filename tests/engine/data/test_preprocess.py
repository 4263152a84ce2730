"""engine.preprocess: grey conversion, sector crop, letterbox, normalisation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from luvnet.engine.data.letterbox import letterbox_geometry
from luvnet.engine.data.preprocess import (
    FramePreprocessor,
    SectorParams,
    detect_sector,
    find_sector_box,
    letterbox_u8,
    normalize,
    preprocess_frames,
    to_gray_u8,
)
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

S = 256
FAN_BOX = (31, 49, 259, 162)  # bounding box of the fan drawn by synthetic_scan()


def synthetic_scan(frames: int = 16, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    """[T, 240, 320] uint8: static scanner UI (title bar, text, depth ruler), a running
    frame counter, and a convex fan of fresh speckle every frame, plus capture noise."""
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    ui = np.zeros((h, w), np.uint8)
    cv2.rectangle(ui, (0, 0), (w - 1, 24), 90, -1)
    cv2.putText(ui, "LUS C5-2 12cm", (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    for y in range(40, h - 10, 20):
        cv2.line(ui, (w - 12, y), (w - 4, y), 200, 1)
    fan = np.zeros((h, w), np.uint8)
    cv2.ellipse(fan, (160, 10), (200, 200), 0, 50, 130, 255, -1)
    cv2.circle(fan, (160, 10), 50, 0, -1)
    out = np.empty((frames, h, w), np.uint8)
    for t in range(frames):
        frame = ui.copy()
        cv2.putText(frame, f"{t:03d}", (w - 60, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
        speckle = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.0)
        image = frame.astype(np.float32)
        image[fan > 0] = speckle[fan > 0] * 1.5
        image += rng.normal(0, noise, (h, w))
        out[t] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def write_avi(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


# --------------------------------------------------------------------------- to_gray_u8

GREY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (GREY, GREY),
        (GREY[:, :, None], GREY),
        (np.repeat(GREY[:, :, None], 3, axis=2), GREY),
        (np.dstack([GREY, GREY, GREY, np.full_like(GREY, 7)]), GREY),  # alpha ignored
        (GREY.astype(np.uint16) * 257, GREY),
        (np.full((2, 2), 65535, np.uint16), np.full((2, 2), 255, np.uint8)),
        (GREY.astype(np.float32) / 255.0, GREY),
        (GREY.astype(np.float64) / 255.0, GREY),
    ],
    ids=["gray", "hw1", "bgr", "bgra", "u16", "u16-max", "f32", "f64"],
)
def test_to_gray_u8_formats(image: np.ndarray, expected: np.ndarray) -> None:
    out = to_gray_u8(image)
    assert out.dtype == np.uint8 and out.shape == expected.shape, (out.dtype, out.shape)
    np.testing.assert_array_equal(out, expected)


def test_to_gray_u8_bgr_order_weights_blue_least() -> None:
    blue = np.zeros((1, 1, 3), np.uint8)
    blue[..., 0] = 255
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 2] = 255
    assert to_gray_u8(blue)[0, 0] == 29 and to_gray_u8(red)[0, 0] == 76


def test_to_gray_u8_uint16_ranges() -> None:
    twelve_bit = np.array([[0, 4095]], np.uint16)
    np.testing.assert_array_equal(to_gray_u8(twelve_bit, uint16_max=4095), [[0, 255]])
    np.testing.assert_array_equal(to_gray_u8(twelve_bit, uint16_max=None), [[0, 255]])
    assert to_gray_u8(np.zeros((2, 2), np.uint16), uint16_max=None).max() == 0


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros((4, 4), np.int32), "got int32"),
        (np.zeros((4, 4), bool), "got bool"),
        (np.zeros((4, 4, 2), np.uint8), "got (4, 4, 2)"),
        (np.zeros((2, 4, 4, 3), np.uint8), "got (2, 4, 4, 3)"),
        (np.zeros((0, 4), np.uint8), "non-empty"),
        (np.full((2, 2), 1.5, np.float32), "[0, 1]"),
        (np.full((2, 2), np.nan, np.float32), "[0, 1]"),
    ],
    ids=["int32", "bool", "2-channel", "4d", "empty", "float>1", "nan"],
)
def test_to_gray_u8_rejects(image: np.ndarray, fragment: str) -> None:
    with pytest.raises(LuvnetError, match="^image: expected") as err:
        to_gray_u8(image)
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (100, 200, (256, 128, 0, 64)),
        (200, 100, (128, 256, 64, 0)),
        (3000, 4000, (256, 192, 0, 32)),
        (1, 1, (256, 256, 0, 0)),
        (1, 4000, (256, 1, 0, 127)),
        (256, 256, (256, 256, 0, 0)),
    ],
)
def test_letterbox_geometry(h: int, w: int, expected: tuple[int, int, int, int]) -> None:
    assert letterbox_geometry(h, w, S) == expected


def test_letterbox_keeps_aspect_with_black_borders() -> None:
    out = letterbox_u8(np.full((100, 200), 200, np.uint8), None, S)
    assert out.shape == (S, S) and out.dtype == np.uint8
    assert (out[64:192] == 200).all(), "content rows should be the image"
    assert (out[:64] == 0).all() and (out[192:] == 0).all(), "borders should be black"


def test_letterbox_extreme_sizes() -> None:
    assert (letterbox_u8(np.full((1, 1), 77, np.uint8), None, S) == 77).all()
    big = np.full((3000, 4000), 120, np.uint8)
    out = letterbox_u8(big, None, S)
    assert (out[32:224] == 120).all() and (out[:32] == 0).all() and (out[224:] == 0).all()


def test_letterbox_crops_to_box() -> None:
    image = np.zeros((100, 100), np.uint8)
    image[20:60, 10:30] = 255  # a 20 x 40 (w x h) white patch
    out = letterbox_u8(image, (10, 20, 20, 40), 64)
    # Portrait 20x40 -> 32x64 centred: white in columns 16..47, black outside.
    assert (out[:, 16:48] == 255).all() and (out[:, :16] == 0).all() and (out[:, 48:] == 0).all()
    partly_outside = letterbox_u8(image, (90, 90, 50, 50), 64)
    assert partly_outside.shape == (64, 64)
    with pytest.raises(LuvnetError, match=r"crop_box: expected .* got \(200, 0, 10, 10\)"):
        letterbox_u8(image, (200, 0, 10, 10), 64)


# --------------------------------------------------------------------------- sector detection


def test_sector_found_in_decoded_video(tmp_path: Path) -> None:
    frames, _ = read_video(write_avi(tmp_path / "scan.avi", synthetic_scan()))
    found = detect_sector(frames)
    assert found.detected, found.reason
    assert np.abs(np.subtract(found.box, FAN_BOX)).max() <= 3, f"{found.box} vs {FAN_BOX}"


@pytest.mark.parametrize("noise", [0.0, 5.0])
def test_sector_robust_to_noise(noise: float) -> None:
    box = find_sector_box(synthetic_scan(noise=noise, seed=1))
    assert np.abs(np.subtract(box, FAN_BOX)).max() <= 2, f"noise {noise}: {box} vs {FAN_BOX}"


def test_sector_spans_a_fan_split_by_a_rib_shadow() -> None:
    frames = synthetic_scan()
    frames[:, :, 150:175] //= 10
    box = find_sector_box(frames)
    assert np.abs(np.subtract(box, FAN_BOX)).max() <= 2, f"{box} vs {FAN_BOX}"


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (synthetic_scan(frames=1), "1 frame(s)"),
        (np.zeros((8, 40, 60), np.uint8), "no pixel varies"),
        (np.repeat(synthetic_scan(frames=1), 5, axis=0), "no pixel varies"),
    ],
    ids=["one-frame", "all-black", "static"],
)
def test_sector_falls_back_to_full_frame(frames: np.ndarray, reason: str) -> None:
    found = detect_sector(frames)
    h, w = frames.shape[1:]
    assert found.box == (0, 0, w, h) and not found.detected
    assert reason in found.reason, found.reason


def test_sector_list_of_color_frames_and_mismatched_sizes() -> None:
    frames = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGRA) for f in synthetic_scan(frames=8)]
    assert np.abs(np.subtract(find_sector_box(frames), FAN_BOX)).max() <= 2
    with pytest.raises(LuvnetError, match="expected every frame to be 320x240"):
        find_sector_box([np.zeros((240, 320), np.uint8), np.zeros((10, 10), np.uint8)])
    with pytest.raises(LuvnetError, match="at least one frame"):
        find_sector_box([])


def test_preprocess_frames_fixed_box_and_detected() -> None:
    video = synthetic_scan(frames=6)
    out, found = preprocess_frames(video, PreprocessConfig(image_size=64))
    assert out.shape == (6, 64, 64) and out.dtype == np.uint8 and found.detected
    fixed = PreprocessConfig(image_size=64, crop_box=(0, 0, 100, 50))
    out, found = preprocess_frames(video, fixed)
    assert found.box == (0, 0, 100, 50) and not found.detected
    np.testing.assert_array_equal(out[0], letterbox_u8(video[0], (0, 0, 100, 50), 64))


# --------------------------------------------------------------------------- FramePreprocessor


def test_frame_preprocessor_holds_its_calibration_frames_then_locks() -> None:
    """The frames the sector is found from are held, then all handed back with the box that
    detect_sector finds in them (the rule evaluation uses), none lost and none uncropped."""
    video = synthetic_scan(frames=10)
    pre: FramePreprocessor[int] = FramePreprocessor(PreprocessConfig(), calibrate_frames=8)
    for i, frame in enumerate(video[:7]):
        assert pre.push(frame, i) == [], "held while calibrating"
        assert pre.box is None and pre.calibrating and pre.held == i + 1
    ready = pre.push(video[7], 7)
    assert [tag for tag, _, _ in ready] == list(range(8)), "every held frame, in order"
    assert pre.box is not None and np.abs(np.subtract(pre.box, FAN_BOX)).max() <= 2
    assert (
        pre.box
        == detect_sector(video[:8]).box
        == detect_sector(video, SectorParams(first_frames=8)).box
    )
    assert all(box == pre.box for _, _, box in ready)
    np.testing.assert_array_equal(ready[3][1], video[3])
    ((tag, gray, box),) = pre.push(video[9], 9)
    assert tag == 9 and box == pre.box
    np.testing.assert_array_equal(pre(video[9]), letterbox_u8(video[9], pre.box, S))
    assert pre.push(np.zeros((50, 60), np.uint8), 10) == []  # the source changed resolution
    assert pre.box is None and pre.calibrating, "a new frame size calibrates again"


def test_frame_preprocessor_flush_locks_on_a_short_video() -> None:
    video = synthetic_scan(frames=5)
    pre: FramePreprocessor[int] = FramePreprocessor(PreprocessConfig(), calibrate_frames=30)
    for i, frame in enumerate(video):
        assert pre.push(frame, i) == []
    ready = pre.flush()
    assert [tag for tag, _, _ in ready] == [0, 1, 2, 3, 4]
    assert pre.box == detect_sector(video).box and not pre.calibrating
    assert pre.flush() == []


def test_a_size_change_locks_the_held_frames_of_the_old_size() -> None:
    video = synthetic_scan(frames=6)
    pre: FramePreprocessor[int] = FramePreprocessor(PreprocessConfig(), calibrate_frames=30)
    for i, frame in enumerate(video):
        pre.push(frame, i)
    ready = pre.push(np.zeros((50, 60), np.uint8), 6)
    assert pre.size_changed == (video.shape[1:], (50, 60))
    assert [tag for tag, _, _ in ready] == list(range(6)), "the old size's frames, locked"
    assert all(box == detect_sector(video).box for _, _, box in ready)
    assert pre.held == 1 and pre.box is None


def test_frame_preprocessor_fixed_box_wins() -> None:
    frame = synthetic_scan(frames=1)[0]
    pre = FramePreprocessor(PreprocessConfig(crop_box=(1, 2, 30, 40)), calibrate_frames=4)
    assert pre.box == (1, 2, 30, 40)
    np.testing.assert_array_equal(pre(frame), letterbox_u8(frame, (1, 2, 30, 40), S))
    explicit = FramePreprocessor(PreprocessConfig(crop_box=(1, 2, 30, 40)), box=(0, 0, 5, 5))
    assert explicit.box == (0, 0, 5, 5)
    manual = FramePreprocessor(PreprocessConfig())
    assert manual.calibrate(synthetic_scan(frames=8)).detected
    assert np.abs(np.subtract(manual.box, FAN_BOX)).max() <= 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrays(
        dtype=st.sampled_from([np.uint8, np.uint16]),
        shape=st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([0, 1, 3, 4])).map(
            lambda s: s[:2] if s[2] == 0 else s
        ),
    ),
    st.sampled_from([16, 256]),
)
def test_any_image_becomes_a_square_u8(image: np.ndarray, size: int) -> None:
    out = FramePreprocessor(PreprocessConfig(image_size=size))(image)
    assert out.shape == (size, size) and out.dtype == np.uint8


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 48), st.integers(1, 48))))
def test_any_video_gives_a_box_inside_it(video: np.ndarray) -> None:
    x, y, w, h = find_sector_box(video)
    assert x >= 0 and y >= 0 and w >= 1 and h >= 1
    assert x + w <= video.shape[2] and y + h <= video.shape[1]


# --------------------------------------------------------------------------- normalize


def test_normalize_values_shape_and_channels() -> None:
    cfg = PreprocessConfig(image_size=4)
    batch = torch.tensor([0, 255, 128, 64], dtype=torch.uint8).view(1, 1, 2, 2)
    batch = batch.repeat(2, 3, 2, 2)  # [2, 3(frames), 4, 4]
    out = normalize(batch, cfg)
    assert out.shape == (2, 3, 3, 4, 4) and out.dtype == torch.float32
    ref = torch.stack(
        [(batch.float() / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
        dim=-3,
    )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for c in range(3):
        assert out[0, 0, c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c])
        assert out[0, 0, c, 0, 1].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])


def test_normalize_half_and_custom_stats() -> None:
    cfg = PreprocessConfig(image_size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    out = normalize(torch.full((2, 2), 255, dtype=torch.uint8), cfg, dtype=torch.half)
    assert out.dtype == torch.half and out.shape == (3, 2, 2)
    assert out[:, 0, 0].tolist() == [1.0, 2.0, 0.5]


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (torch.zeros(1, 256, 256), "expected a uint8 tensor, got torch.float32"),
        (torch.zeros(1, 128, 256, dtype=torch.uint8), "expected shape [..., 256, 256]"),
        (torch.zeros(256, dtype=torch.uint8), "got (256,)"),
    ],
)
def test_normalize_rejects(tensor: torch.Tensor, fragment: str) -> None:
    with pytest.raises(LuvnetError) as err:
        normalize(tensor, PreprocessConfig())
    assert fragment in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_normalize_on_gpu_matches_cpu() -> None:
    batch = torch.randint(0, 256, (2, 30, S, S), dtype=torch.uint8)
    cpu = normalize(batch, PreprocessConfig())
    gpu = normalize(batch.cuda(), PreprocessConfig())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
