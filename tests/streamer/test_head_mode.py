"""``--head auto``: which head stage the stream runs for a given backend and device."""

from __future__ import annotations

import pytest
import torch

from engine.backends import create_backend
from engine.model import build_luvnet
from streamer.compose import resolve_head_mode

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small_model():
    torch.manual_seed(0)
    return build_luvnet("resnet18", kernel_size=5, fusion_hidden=64).eval()


def test_auto_on_the_cpu_is_the_incremental_state():
    backend = create_backend("eager", small_model(), image_size=32, window=8)
    assert resolve_head_mode("auto", backend) == "incremental"


@pytest.mark.parametrize("mode", ["incremental", "window"])
def test_an_explicit_mode_is_kept(mode):
    backend = create_backend("eager", small_model(), image_size=32, window=8)
    assert resolve_head_mode(mode, backend) == mode


@needs_cuda
def test_auto_on_cuda_is_eager_incremental_and_compiled_window():
    model = small_model().cuda()
    eager = create_backend("eager", model, device="cuda", image_size=32, window=8)
    assert resolve_head_mode("auto", eager) == "incremental"
    compiled = create_backend("inductor", model, device="cuda", image_size=32, window=8)
    assert resolve_head_mode("auto", compiled) == "window"
