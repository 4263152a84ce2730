"""engine.clips: clip geometry, labels from ranges, the frame cache, the dataset, augment."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luvnet.engine.data.clips import ClipAugment, ClipDataset, clip_labels, clip_spans, take_clip
from luvnet.engine.data.frame_cache import FrameCache
from luvnet.engine.data.manifest import LabelSpec, read_manifest
from luvnet.engine.data.preprocess import letterbox_u8
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import ModelConfig, PreprocessConfig

SIZE = 32  # small canvas keeps the tests fast; geometry is the same code at 256
HEADER = "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion"


def write_video(path: Path, frames: int, offset: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    """Frame t is flat grey 20 + 3 * ((t + offset) % 70), so frames can be told apart."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    assert writer.isOpened()
    for t in range(frames):
        writer.write(np.full((h, w, 3), 20 + 3 * ((t + offset) % 70), np.uint8))
    writer.release()
    return path


def frame_level(frame: np.ndarray | torch.Tensor) -> int:
    """The grey level a frame was written with (centre pixel, MJPG tolerance)."""
    value = int(frame[SIZE // 2, SIZE // 2])
    return round((value - 20) / 3)


# --------------------------------------------------------------------------- clip geometry


@pytest.mark.parametrize(
    ("n", "spans"),
    [
        (1, [(0, 0)]),
        (29, [(0, 28)]),
        (30, [(0, 29)]),
        (31, [(0, 29), (24, 30)]),
        (54, [(0, 29), (24, 53)]),
        (55, [(0, 29), (24, 53), (48, 54)]),
        (100, [(0, 29), (24, 53), (48, 77), (72, 99)]),
    ],
)
def test_clip_spans_paper_defaults(n: int, spans: list[tuple[int, int]]) -> None:
    assert clip_spans(n, 30, 24) == spans


def test_clip_spans_other_steps_and_errors() -> None:
    assert clip_spans(10, 5, 5) == [(0, 4), (5, 9)]
    assert clip_spans(7, 4, 2) == [(0, 3), (2, 5), (4, 6)]
    with pytest.raises(LuvnetError, match="expected n_frames and length >= 1, got 0, 30"):
        clip_spans(0, 30, 24)
    with pytest.raises(LuvnetError, match=r"clip_step: expected 1..30 \(the clip length\), got 31"):
        clip_spans(100, 30, 31)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400), st.integers(1, 40), st.integers(1, 40))
def test_clip_spans_cover_every_frame(n: int, length: int, step: int) -> None:
    step = min(step, length)
    spans = clip_spans(n, length, step)
    covered = set()
    for i, (start, end) in enumerate(spans):
        assert 0 <= start <= end < n and end - start + 1 <= length
        if i < len(spans) - 1:
            assert end - start + 1 == length, "only the last clip may be short"
            assert spans[i + 1][0] == start + step
        covered.update(range(start, end + 1))
    assert spans[-1][1] == n - 1 and covered == set(range(n))


def test_take_clip_pads_with_last_frame_and_masks() -> None:
    frames = np.arange(55, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    clip, mask = take_clip(frames, 48, 54, 30)
    assert clip.shape == (30, 2, 2) and mask.dtype == bool
    assert clip[:, 0, 0].tolist() == list(range(48, 55)) + [54] * 23
    assert mask.tolist() == [True] * 7 + [False] * 23
    full, mask = take_clip(frames, 0, 29, 30)
    assert full[:, 0, 0].tolist() == list(range(30)) and mask.all()


def test_clip_labels_from_ranges() -> None:
    labels = {
        "a_lines": LabelSpec.parse("40-50"),
        "b_lines": LabelSpec.parse("1"),
        "consolidation": LabelSpec.parse(""),
        "pleural_effusion": LabelSpec.parse("0"),
    }
    values, known = clip_labels(labels, 0, 29)
    assert values[[0, 1, 3]].tolist() == [0.0, 1.0, 0.0] and math.isnan(values[2])
    assert known.tolist() == [True, True, False, True]
    values, _ = clip_labels(labels, 24, 53)
    assert values[0] == 1.0


# --------------------------------------------------------------------------- frame cache


def test_cache_builds_then_hits(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 12)
    cache = FrameCache(tmp_path / "cache", PreprocessConfig(image_size=SIZE))
    first = cache.load(video)
    assert first.built and first.n_frames == 12 and first.source_size == (40, 30)
    npy, sidecar = cache.paths(video)
    stamp = npy.stat().st_mtime_ns
    second = cache.load(video)
    assert not second.built, "second load should come from the cache"
    assert npy.stat().st_mtime_ns == stamp
    frames = second.frames()
    assert isinstance(frames, np.memmap) and frames.shape == (12, SIZE, SIZE)
    assert [frame_level(f) for f in frames] == list(range(12))
    meta = json.loads(sidecar.read_text())
    assert meta["key"]["video"]["size"] == video.stat().st_size
    assert meta["key"]["image_size"] == SIZE and meta["n_frames"] == 12


def test_cache_rebuilds_when_video_changes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 12)
    cache = FrameCache(tmp_path / "cache", PreprocessConfig(image_size=SIZE))
    cache.load(video)
    write_video(video, 9, offset=5)  # rewritten in place: new size, content and mtime
    again = cache.load(video)
    assert again.built and again.n_frames == 9
    assert frame_level(again.frames()[0]) == 5
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1, "rebuilt in place"


def test_cache_rebuilds_when_only_mtime_changes(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 6)
    cache = FrameCache(tmp_path / "cache", PreprocessConfig(image_size=SIZE))
    cache.load(video)
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.load(video).built


@pytest.mark.parametrize(
    "changed",
    [PreprocessConfig(image_size=16), PreprocessConfig(image_size=SIZE, crop_box=(0, 0, 20, 30))],
    ids=["image_size", "crop_box"],
)
def test_cache_separates_parameters(tmp_path: Path, changed: PreprocessConfig) -> None:
    video = write_video(tmp_path / "v.avi", 6)
    base = FrameCache(tmp_path / "cache", PreprocessConfig(image_size=SIZE))
    base.load(video)
    other = FrameCache(tmp_path / "cache", changed)
    loaded = other.load(video)
    assert loaded.built, "a changed parameter must not reuse the old frames"
    assert loaded.frames().shape == (6, changed.image_size, changed.image_size)
    if changed.crop_box:
        assert loaded.box == (0, 0, 20, 30)
    assert not base.load(video).built, "the other parameters' cache is kept"


def test_cache_mean_std_are_not_part_of_the_key(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 4)
    FrameCache(tmp_path / "c", PreprocessConfig(image_size=SIZE)).load(video)
    other = PreprocessConfig(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert not FrameCache(tmp_path / "c", other).load(video).built


def test_cache_recovers_from_damaged_sidecar(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 4)
    cache = FrameCache(tmp_path / "cache", PreprocessConfig(image_size=SIZE))
    cache.load(video)
    cache.paths(video)[1].write_text("{not json")
    assert cache.load(video).built
    cache.paths(video)[0].unlink()
    assert cache.load(video).built


def test_cache_frames_match_the_preprocessing(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 5, size=(64, 16))
    loaded = FrameCache(tmp_path / "c", PreprocessConfig(image_size=SIZE)).load(video)
    # Flat frames: nothing varies within a frame, but frames differ: the detector keeps the
    # whole frame. 64x16 letterboxes to 32x8 rows 12..19.
    assert loaded.box == (0, 0, 64, 16)
    frames = loaded.frames()
    assert (frames[:, :12] == 0).all() and (frames[:, 20:] == 0).all()
    decoded = read_video(video).frames
    np.testing.assert_array_equal(frames[3], letterbox_u8(decoded[3], loaded.box, SIZE))


def test_cache_missing_video(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "c", PreprocessConfig(image_size=SIZE))
    with pytest.raises(LuvnetError, match="no such video file"):
        cache.load(tmp_path / "absent.avi")


# --------------------------------------------------------------------------- dataset


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    write_video(tmp_path / "long.avi", 40)
    write_video(tmp_path / "short.avi", 10, offset=50)
    path = tmp_path / "m.csv"
    path.write_text(f"{HEADER}\nlong.avi,p1,30-35,1,,0\nshort.avi,p2,0,,2-3,1\n")
    return path


def dataset(manifest: Path, tmp_path: Path, **kwargs: object) -> ClipDataset:
    cfg = ModelConfig(preprocess=PreprocessConfig(image_size=SIZE))
    return ClipDataset.from_config(read_manifest(manifest).rows, cfg, tmp_path / "cache", **kwargs)


def test_dataset_items(manifest_path: Path, tmp_path: Path) -> None:
    ds = dataset(manifest_path, tmp_path)
    assert [(c.row, c.start, c.end) for c in ds.clips] == [(0, 0, 29), (0, 24, 39), (1, 0, 9)]
    first, second, third = ds[0], ds[1], ds[2]
    assert first["frames"].shape == (30, SIZE, SIZE) and first["frames"].dtype == torch.uint8
    # a_lines marked 30-35: not in frames 0..29, present in 24..39.
    assert first["mask"].all() and first["labels"][:2].tolist() == [0.0, 1.0]
    assert math.isnan(first["labels"][2]) and first["labels"][3] == 0.0
    assert first["label_mask"].tolist() == [True, True, False, True]
    assert (second["start"], second["end"]) == (24, 39) and int(second["mask"].sum()) == 16
    assert second["labels"][0] == 1.0
    levels = [frame_level(f) for f in second["frames"]]
    assert levels == list(range(24, 40)) + [39] * 14, "padding repeats the last real frame"
    assert third["labels"][0] == 0.0 and math.isnan(third["labels"][1])
    assert third["labels"][2] == 1.0 and third["labels"][3] == 1.0
    assert third["patient_id"] == "p2" and third["video"].endswith("short.avi")
    assert frame_level(third["frames"][0]) == 50


def test_dataset_batches_through_a_dataloader(manifest_path: Path, tmp_path: Path) -> None:
    ds = dataset(manifest_path, tmp_path, transform=ClipAugment(seed=1))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["frames"].shape == (3, 30, SIZE, SIZE) and batch["mask"].shape == (3, 30)
    assert batch["labels"].shape == (3, 4) and batch["start"].tolist() == [0, 24, 0]


def test_dataset_reuses_cache(manifest_path: Path, tmp_path: Path) -> None:
    assert all(v.built for v in dataset(manifest_path, tmp_path).videos)
    assert not any(v.built for v in dataset(manifest_path, tmp_path).videos)


def test_dataset_rejects_range_after_the_last_frame(tmp_path: Path) -> None:
    write_video(tmp_path / "v.avi", 10)
    path = tmp_path / "m.csv"
    path.write_text(f"{HEADER}\nv.avi,p1,,12-20,,\n")
    with pytest.raises(LuvnetError, match=r"manifest line 2: b_lines range 12-20 starts after"):
        dataset(path, tmp_path)


# --------------------------------------------------------------------------- augmentation


def asymmetric_clip(frames: int = 4) -> torch.Tensor:
    image = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    image[4:12, 2:10] = 200  # a block in the top-left corner
    return image.expand(frames, SIZE, SIZE).clone()


def test_augment_flip_only_is_exact() -> None:
    clip = asymmetric_clip()
    out = ClipAugment(p_flip=1.0, p_rotate=0.0)(clip)
    assert torch.equal(out, clip.flip(-1))


def test_augment_rotation_identical_for_all_frames() -> None:
    clip = asymmetric_clip()
    aug = ClipAugment(p_flip=0.0, p_rotate=1.0, max_degrees=10.0)
    out = aug(clip, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == clip.shape
    assert not torch.equal(out, clip), "a rotation should move the block"
    assert all(torch.equal(out[0], frame) for frame in out), "same transform for every frame"


def test_augment_float_and_channels() -> None:
    clip = asymmetric_clip().float().unsqueeze(1).expand(4, 3, SIZE, SIZE) / 255
    out = ClipAugment(p_flip=1.0, p_rotate=1.0)(clip, torch.Generator().manual_seed(2))
    assert out.shape == (4, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert all(torch.equal(out[0], frame) for frame in out)


def test_augment_seeded_and_varied() -> None:
    clip = asymmetric_clip(2)
    augments = [ClipAugment(seed=s) for s in (7, 7, 8)]
    runs = [[aug(clip) for _ in range(12)] for aug in augments]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True)), "same seed"
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))
    kinds = {bytes(out[0].flatten().tolist()) for out in runs[0]}
    assert len(kinds) > 2, "flip and rotation should vary across clips"


def test_augment_rejects_bad_shape() -> None:
    with pytest.raises(LuvnetError, match=r"clip: expected \[L, H, W\] or \[L, C, H, W\]"):
        ClipAugment()(torch.zeros(SIZE, SIZE))


class _AugmentedConstant(torch.utils.data.Dataset):
    """The same clip at every index, through one shared ClipAugment: any difference between
    items comes from the augmentation's random draws."""

    def __init__(self) -> None:
        self.augment = ClipAugment(seed=3)
        self.clip = asymmetric_clip(2)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.augment(self.clip)


def test_augment_differs_between_dataloader_workers() -> None:
    def run() -> list[torch.Tensor]:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(_AugmentedConstant(), batch_size=1, num_workers=2)
        return [batch[0] for batch in loader]

    first = run()
    # Items 0, 2, 4, 6 come from worker 0 and 1, 3, 5, 7 from worker 1: copies of one
    # generator would make every pair equal.
    assert not all(torch.equal(first[i], first[i + 1]) for i in range(0, 8, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, run(), strict=True)), "repeatable"
