"""streamer.stages.PreprocessStage: the training preprocessing, on the engine's device."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from luvnet.engine.data.preprocess import letterbox_u8, normalize
from luvnet.engine.model.config import ModelConfig, PreprocessConfig

SIZE = 64


def frames(count: int, height: int = 240, width: int = 320, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 2)
        image.setflags(write=False)  # as a decoder or a shared replay buffer hands it over
        out.append(image)
    return out


def stage(
    device: str,
    box: tuple[int, int, int, int] | None = (20, 10, 260, 200),
    *,
    normalized: bool = True,
):
    from luvnet.streamer.stages import PreprocessStage

    config = ModelConfig(preprocess=PreprocessConfig(image_size=SIZE))
    return PreprocessStage(
        config, device=torch.device(device), box=box, calibrate_frames=0, normalized=normalized
    )


def expected(image: np.ndarray, box: tuple[int, int, int, int] | None) -> torch.Tensor:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    letterboxed = torch.from_numpy(letterbox_u8(gray, box, SIZE))
    return normalize(letterboxed.unsqueeze(0), PreprocessConfig(image_size=SIZE))


def test_cpu_stage_is_the_training_preprocessing():
    pre = stage("cpu")
    for image in frames(3):
        torch.testing.assert_close(pre(image), expected(image, (20, 10, 260, 200)))


def test_unnormalized_stage_stops_at_the_letterboxed_grey_frame():
    """``luvnet serve`` sends uint8 [1, S, S] to its replicas, which normalise with the same
    function: the same tensor as the stage's own normalised output, bit for bit."""
    grey, full = stage("cpu", normalized=False), stage("cpu")
    for image in frames(3):
        out = grey(image)
        assert out.dtype == torch.uint8 and out.shape == (1, SIZE, SIZE)
        assert torch.equal(normalize(out, PreprocessConfig(image_size=SIZE)), full(image))


def test_a_new_frame_size_is_followed():
    pre = stage("cpu", box=None)
    small, large = frames(1, 120, 160)[0], frames(1, 480, 640, seed=1)[0]
    for image in (small, large, small):
        out = pre(image)
        assert out.shape == (1, 3, SIZE, SIZE)
        torch.testing.assert_close(out, expected(image, None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_stage_letterboxes_on_the_gpu_like_the_cpu():
    cpu, gpu = stage("cpu"), stage("cuda")
    for image in frames(4):
        on_gpu = gpu(image)
        assert on_gpu.device.type == "cuda"
        # One grey level of 255 at most (a rounding tie), after normalisation ~0.02.
        torch.testing.assert_close(on_gpu.cpu(), cpu(image), atol=0.02, rtol=0)
