"""The driver's coalescer of ``luvnet serve``: each frame gets its own embedding and tap
products from a multi-frame request, and a request whose embeddings the driver cannot use
loses its frames with one line saying so, while the next request goes on.

The handle stands in for Ray Serve's ``DeploymentHandle`` (``remote(...).result(timeout_s)``),
answering at once with the real model's embeddings; tests/streamer/test_serve.py runs the same
path through a real Ray cluster.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from luvnet.engine.data.preprocess import normalize
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.incremental import tap_products
from luvnet.streamer.serve.encoder import BatchTally, FrameCoalescer, LostFrame, batch_outputs


class _Reply:
    def __init__(self, value):
        self.value = value

    def result(self, timeout_s: float):
        return self.value


class _EncoderHandle:
    """Embeds a request's grey uint8 frames [B, S, S] with the model, as a replica does."""

    def __init__(self, checkpoint) -> None:
        self.model = checkpoint.model.eval()
        self.preprocess = checkpoint.config.preprocess
        self.requests: list[int] = []

    @torch.inference_mode()
    def remote(self, frames: np.ndarray) -> _Reply:
        self.requests.append(len(frames))
        embeddings = self.model.embed(normalize(torch.from_numpy(frames), self.preprocess))
        return _Reply((embeddings.numpy(), len(frames), "node-a"))


def _coalescer(handle, model, *, taps: bool, outputs=None) -> FrameCoalescer:
    return FrameCoalescer(
        handle,
        max_batch=4,
        wait_s=0.2,  # long enough that the 4 frames below go as one request
        timeout_s=10.0,
        senders=1,
        tally=BatchTally(),
        outputs=outputs or batch_outputs(model, taps=taps),
    )


@pytest.mark.parametrize("taps", [True, False])
def test_each_frame_gets_its_own_embedding_and_taps(tiny_checkpoint, taps):
    checkpoint = load_checkpoint(tiny_checkpoint)
    handle = _EncoderHandle(checkpoint)
    model = checkpoint.model.eval()
    coalescer = _coalescer(handle, model, taps=taps)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    try:
        pending = [coalescer.submit(f) for f in frames]
        got = [coalescer.result(p) for p in pending]
    finally:
        coalescer.close()
    assert handle.requests == [4], "the four frames went as one request"
    with torch.inference_mode():
        want = model.embed(normalize(torch.from_numpy(frames), checkpoint.config.preprocess))
        want_taps = tap_products(model, want)
    for i, encoded in enumerate(got):
        torch.testing.assert_close(encoded.embedding, want[i], rtol=0, atol=1e-6)
        if taps:
            assert encoded.taps is not None
            torch.testing.assert_close(encoded.taps, want_taps[i], rtol=0, atol=1e-5)
        else:
            assert encoded.taps is None


def test_unusable_embeddings_lose_that_request_only(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    handle = _EncoderHandle(checkpoint)
    good = batch_outputs(checkpoint.model.eval(), taps=True)
    calls = []

    def outputs(embeddings: np.ndarray):
        calls.append(len(embeddings))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory\nsecond line of the trace")
        return good(embeddings)

    coalescer = _coalescer(handle, checkpoint.model, taps=True, outputs=outputs)
    frames = np.zeros((4, 64, 64), dtype=np.uint8)
    try:
        first = [coalescer.submit(f) for f in frames]
        for p in first:
            with pytest.raises(LostFrame) as lost:
                coalescer.result(p)
            assert str(lost.value) == (
                "the request's embeddings could not be used (RuntimeError): CUDA out of memory"
            )
        second = [coalescer.submit(f) for f in frames]
        assert all(coalescer.result(p).taps is not None for p in second)
    finally:
        coalescer.close()
    assert coalescer.tally.frames == 8, "the encoder's work is counted, used or not"
