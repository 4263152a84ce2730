"""``--head auto`` and a backend passed in to ``compose_stream``: what the stream runs."""

from __future__ import annotations

import pytest
import torch

from luvnet.engine.backends import create_backend
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.network import build_luvnet
from luvnet.streamer.compose import StreamSettings, compose_stream, resolve_head_mode

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


def test_a_backend_passed_in_is_used_without_a_second_build(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    backend = create_backend("eager", checkpoint.model, image_size=64, window=30)
    settings = StreamSettings(source="phantom", checkpoint=tiny_checkpoint, device="cpu")
    pipeline = compose_stream(settings, lambda message: None, backend=backend)
    assert pipeline.embed.encode == backend.encode


def test_a_backend_built_for_other_shapes_is_refused_in_one_line(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    backend = create_backend("eager", checkpoint.model, image_size=32, window=30)
    settings = StreamSettings(source="phantom", checkpoint=tiny_checkpoint, device="cpu")
    with pytest.raises(LuvnetError) as err:
        compose_stream(settings, lambda message: None, backend=backend)
    message = str(err.value)
    assert "\n" not in message
    assert "built for" in message and "(cpu, 32, 30" in message.replace("'", "")
    assert "(cpu, 64, 30" in message.replace("'", "")
