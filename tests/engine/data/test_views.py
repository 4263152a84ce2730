"""Random views (engine/data/views.py) and the clip zoom/jitter of ClipAugment that uses them."""

from __future__ import annotations

import pytest
import torch

from luvnet.engine.data.clips import ClipAugment
from luvnet.engine.data.views import ViewParams, apply_views
from luvnet.engine.errors import LuvnetError

SIZE = 32


def textured_clip(frames: int = 6) -> torch.Tensor:
    """One frame, repeated: a bright block near the centre of a mid-grey field with a black
    border (the letterbox)."""
    image = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    image[2:30, 2:30] = 60
    image[13:19, 12:20] = 200
    return image.expand(frames, SIZE, SIZE).clone()


def test_the_defaults_draw_what_flip_and_rotation_drew_alone() -> None:
    clip = textured_clip()
    for seed in range(6):
        plain = ClipAugment()(clip, torch.Generator().manual_seed(seed))
        off = ClipAugment(max_zoom=1.0, jitter=0.0)(clip, torch.Generator().manual_seed(seed))
        assert torch.equal(plain, off)


def test_zoom_is_one_view_for_every_frame_of_a_clip() -> None:
    clip = textured_clip()
    aug = ClipAugment(p_flip=0.0, p_rotate=0.0, max_zoom=1.6)
    bright = []
    for seed in range(5):
        out = aug(clip, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.uint8 and out.shape == clip.shape
        assert not torch.equal(out, clip), "a zoom with a shift should move the block"
        assert all(torch.equal(out[0], frame) for frame in out), "same view for every frame"
        bright.append(int((out[0] > 150).sum()))
    # magnified (U(1, 1.6)), never shrunk: the central block never covers fewer pixels
    assert min(bright) >= int((clip[0] > 150).sum()) and max(bright) > 1.5 * min(bright)


def test_jitter_is_one_gain_and_gamma_per_clip_and_varies_between_clips() -> None:
    clip = textured_clip(8)
    aug = ClipAugment(p_flip=0.0, p_rotate=0.0, jitter=0.4)
    means = []
    for seed in range(12):
        out = aug(clip, torch.Generator().manual_seed(seed)).float()
        frame_means = out[:, 2:30, 2:30].mean(dim=(1, 2))
        # per-pixel noise differs between frames, its sd and the gain/gamma do not
        assert float(frame_means.max() - frame_means.min()) < 1.5
        assert int((out[:, :2] > 0).sum()) == 0, "the letterbox stays black"
        means.append(float(frame_means.mean()))
    assert max(means) - min(means) > 15.0, "gain and gamma should vary between clips"


def test_zoom_and_jitter_need_the_frame_caches_uint8_frames() -> None:
    clip = textured_clip().float().unsqueeze(1) / 255
    with pytest.raises(LuvnetError, match=r"zoom and jitter expect uint8 \[L, S, S\] frames"):
        ClipAugment(max_zoom=1.2)(clip, torch.Generator().manual_seed(0))


def test_views_refuse_a_count_that_is_not_the_frames() -> None:
    views = ViewParams.draw(2, torch.Generator().manual_seed(0), max_zoom=1.5, jitter=0.4)
    with pytest.raises(LuvnetError, match=r"views: expected 3, one per frame, got \(2,\)"):
        apply_views(textured_clip(3), views, torch.Generator())
    with pytest.raises(LuvnetError, match="expected one view to repeat, got 2"):
        views.repeat(4)
    with pytest.raises(LuvnetError, match="max_zoom: expected a magnification >= 1"):
        ViewParams.draw(1, torch.Generator(), max_zoom=0.5, jitter=0.0)
