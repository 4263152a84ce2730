"""Random views (engine/data/views.py) and the clip zoom/jitter of ClipAugment that uses them."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from luvnet.engine.data.clips import ClipAugment
from luvnet.engine.data.views import ViewParams, apply_views
from luvnet.engine.errors import LuvnetError
from luvnet.engine.training.pretrain import augment_views

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
    for seed in range(8):
        gen, ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        out = ClipAugment()(clip, gen)
        flip, rotate, angle = torch.rand(3, generator=ref).tolist()
        expected = clip.flip(-1) if flip < 0.5 else clip
        if rotate < 0.5:
            expected = tvf.rotate(
                expected, (2 * angle - 1) * 10.0, interpolation=InterpolationMode.BILINEAR
            )
        assert torch.equal(out, expected)
        assert torch.equal(gen.get_state(), ref.get_state()), "three draws per clip, no more"


def test_views_draw_in_the_order_luvnet_pretrain_always_drew() -> None:
    """The order (zoom, angle, flip, shift x, shift y, gain, gamma, then the noise and its sd)
    keeps `luvnet pretrain`'s views what they were when its results were measured."""
    n, frames = 5, textured_clip(5)
    gen, ref = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    views = ViewParams.draw(n, gen, max_zoom=1.5, jitter=0.4)
    u = [torch.rand(n, generator=ref) for _ in range(7)]
    torch.testing.assert_close(views.zoom, 1.0 / (1.0 + 0.5 * u[0]))
    torch.testing.assert_close(views.angle, (-10.0 + 20.0 * u[1]) * math.pi / 180.0)
    assert torch.equal(views.flip, torch.where(u[2] < 0.5, -1.0, 1.0))
    torch.testing.assert_close(views.shift_y, (-1.0 + 2.0 * u[4]) * (1 - views.zoom))
    torch.testing.assert_close(views.gamma, 0.7 + 0.7 * u[6])
    apply_views(frames, views, gen)
    torch.randn(frames.unsqueeze(1).shape, generator=ref)
    torch.rand(n, generator=ref)  # the noise sd, one per frame
    assert torch.equal(gen.get_state(), ref.get_state())


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


def test_jitter_is_one_gain_gamma_and_noise_sd_per_clip_and_varies_between_clips() -> None:
    clip = textured_clip(8)
    aug = ClipAugment(p_flip=0.0, p_rotate=0.0, jitter=0.4)
    means, sds = [], []
    for seed in range(12):
        out = aug(clip, torch.Generator().manual_seed(seed)).float()
        field = out[:, clip[0] == 60]  # flat grey 60 in the input: what varies is the noise
        frame_means, frame_sds = field.mean(dim=1), field.std(dim=1)
        # the noise differs between frames; its sd, the gain and the gamma do not
        assert float(frame_means.max() - frame_means.min()) < 3.0
        assert float(frame_sds.max() - frame_sds.min()) < 0.25 * float(frame_sds.mean()) + 0.5
        assert int((out[:, :2] > 0).sum()) == 0, "the letterbox stays black"
        means.append(float(frame_means.mean()))
        sds.append(float(frame_sds.mean()))
    assert max(means) - min(means) > 15.0, "gain and gamma should vary between clips"
    assert max(sds) - min(sds) > 2.0, "the noise sd should vary between clips"
    # pretrain's views draw an sd per frame: there the frames' noise differs in strength
    flat = torch.full((8, SIZE, SIZE), 60, dtype=torch.uint8)
    per_frame = augment_views(flat, torch.Generator().manual_seed(0), max_zoom=1.0).float()
    frame_sds = per_frame[:, 8:24, 8:24].std(dim=(1, 2))  # inside any rotation of <= 10 deg
    assert float(frame_sds.max() - frame_sds.min()) > 2.0


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
    for zoom in (0.5, math.inf, math.nan):
        with pytest.raises(LuvnetError, match="max_zoom: expected a finite magnification >= 1"):
            ClipAugment(max_zoom=zoom)
    with pytest.raises(LuvnetError, match=r"jitter: expected a number in \[0, 1\)"):
        ViewParams.draw(1, torch.Generator(), max_zoom=1.0, jitter=1.0)
