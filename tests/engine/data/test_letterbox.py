"""engine.letterbox: the torch letterbox against OpenCV, on the CPU and (where there is one)
the GPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from luvnet.engine.data.letterbox import Letterbox, axis_taps, letterbox_geometry
from luvnet.engine.errors import LuvnetError


def structured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blurred noise: smooth areas and edges, every grey level, no flat ties."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2)


def opencv_letterbox(gray: np.ndarray, size: int) -> np.ndarray:
    h, w = gray.shape
    new_w, new_h, x0, y0 = letterbox_geometry(h, w, size)
    interp = cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR
    canvas = np.zeros((size, size), np.uint8)
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(gray, (new_w, new_h), None, 0, 0, interp)
    return canvas


@pytest.mark.parametrize(("height", "width", "size"), [(924, 1232, 256), (240, 320, 64)])
def test_non_integer_shrink_equals_opencv_area(height: int, width: int, size: int):
    gray = structured(height, width)
    ours = Letterbox(size)(torch.from_numpy(gray), None).numpy()
    np.testing.assert_array_equal(ours, opencv_letterbox(gray, size))


@pytest.mark.parametrize(("height", "width", "size"), [(512, 512, 256), (100, 200, 256)])
def test_integer_shrink_and_growth_within_one_grey_level_of_opencv(
    height: int, width: int, size: int
):
    # OpenCV's integer paths round ties up (2x2 means) and use 11-bit bilinear weights.
    gray = structured(height, width, seed=1)
    ours = Letterbox(size)(torch.from_numpy(gray), None).numpy().astype(int)
    diff = np.abs(ours - opencv_letterbox(gray, size).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.15


def test_taps_weights_sum_to_one_inside_and_zero_on_the_border():
    for src, dst in ((924, 256), (256, 256), (100, 256), (7, 3)):
        taps = axis_taps(src, dst, offset=5, size=dst + 9)
        sums = taps.weight.sum(1)
        torch.testing.assert_close(sums[5 : 5 + dst], torch.ones(dst))
        assert (sums[:5] == 0).all() and (sums[5 + dst :] == 0).all()
        assert int(taps.index.min()) >= 0 and int(taps.index.max()) < src


def test_constant_image_stays_constant_on_a_black_canvas():
    out = Letterbox(64)(torch.full((90, 200), 200, dtype=torch.uint8), None)
    new_w, new_h, x0, y0 = letterbox_geometry(90, 200, 64)
    assert (out[y0 : y0 + new_h, x0 : x0 + new_w] == 200).all()
    assert int(out.sum()) == 200 * new_w * new_h


def test_box_and_batch():
    video = np.stack([structured(120, 160, seed=s) for s in range(5)])
    box = (10, 20, 100, 80)
    letterbox = Letterbox(48)
    batched = letterbox(torch.from_numpy(video), box)
    for i in range(5):
        crop = np.ascontiguousarray(video[i, 20:100, 10:110])
        torch.testing.assert_close(batched[i], letterbox(torch.from_numpy(crop), None))


def test_bad_input_is_one_line():
    with pytest.raises(LuvnetError, match="gray: expected uint8"):
        Letterbox(32)(torch.zeros(10, 10), None)
    with pytest.raises(LuvnetError, match="crop_box: expected"):
        Letterbox(32)(torch.zeros(10, 10, dtype=torch.uint8), (50, 50, 5, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_letterbox_matches_the_cpu():
    gray = structured(924, 1232)
    cpu = Letterbox(256)(torch.from_numpy(gray), (100, 50, 1000, 800))
    gpu = Letterbox(256)(torch.from_numpy(gray).cuda(), (100, 50, 1000, 800)).cpu()
    diff = (cpu.int() - gpu.int()).abs()
    # Same taps and order; fused multiply-adds on the GPU may round a tie the other way.
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
