"""Frames in flight (``luvnet serve``'s remote encoder): several frames at the encoder at once,
scored in order, with the same scores, counts and final status as one frame at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from luvnet.engine.backends import create_backend
from luvnet.engine.data.preprocess import normalize
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.stages import Encoded

FRAMES = 40


class SlowEncoder:
    """The real eager backend on worker threads, each call taking a few ms more (a remote
    encoder's round trip); counts how many calls were outstanding at once. With
    ``preprocess`` it takes letterboxed grey uint8 frames and normalises them first, as
    ``luvnet serve``'s replicas do."""

    def __init__(self, backend, fail_at: int | None = None, preprocess=None) -> None:
        self.backend = backend
        self.preprocess = preprocess
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.most_outstanding = 0
        self.calls = 0
        self.fail_at = fail_at

    def _encode(self, frame: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        if self.preprocess is not None:
            assert frame.dtype == torch.uint8 and frame.shape == (1, 64, 64), frame.shape
            frame = normalize(frame, self.preprocess)
        return self.backend.encode(frame)[0]

    def submit(self, frame: torch.Tensor):
        with self.lock:
            self.calls += 1
            call = self.calls
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
        future = self.pool.submit(self._encode, frame)

        def claim() -> Encoded:
            try:
                if call == self.fail_at:
                    future.result()
                    raise RuntimeError("encoder call failed (replica lost)")
                return Encoded(future.result())
            finally:
                with self.lock:
                    self.outstanding -= 1

        return claim


def run(
    tiny_checkpoint,
    frames_in_flight: int,
    fail_at: int | None = None,
    *,
    encoder_normalizes: bool = False,
):
    checkpoint = load_checkpoint(tiny_checkpoint)
    backend = create_backend("eager", checkpoint.model, image_size=64, window=30)
    preprocess = checkpoint.config.preprocess if encoder_normalizes else None
    encoder = SlowEncoder(backend, fail_at, preprocess)
    messages: list = []
    settings = StreamSettings(
        source="phantom:0",
        checkpoint=tiny_checkpoint,
        device="cpu",
        realtime=False,
        max_frames=FRAMES,
    )
    pipeline = compose_stream(
        settings,
        messages.append,
        backend=backend,
        checkpoint=checkpoint,
        submit=encoder.submit,
        frames_in_flight=frames_in_flight,
        encoder_normalizes=encoder_normalizes,
    )
    stop = threading.Event()
    guard = threading.Timer(120, stop.set)  # a stream whose every frame fails ends anyway
    guard.start()
    try:
        published = pipeline.run(stop)
    finally:
        guard.cancel()
    return pipeline, encoder, messages, published


def scores(messages):
    return [
        (m.frame, list(m.scores.values()), m.fill) for m in messages if isinstance(m, ScoreMessage)
    ]


def test_frames_in_flight_give_the_same_scores_in_order(tiny_checkpoint):
    _, one_by_one, alone, n_alone = run(tiny_checkpoint, 1)
    pipeline, overlapped, together, n_together = run(tiny_checkpoint, 3)
    assert n_alone == n_together == FRAMES
    # One at a time: every frame still goes through submit, waited for before the next.
    assert one_by_one.calls >= FRAMES and one_by_one.most_outstanding == 1
    # The stream sent frames while earlier ones were still at the encoder.
    assert overlapped.most_outstanding > 1
    assert overlapped.most_outstanding <= 3
    a, b = scores(alone), scores(together)
    assert [f for f, _, _ in a] == [f for f, _, _ in b] == sorted(f for f, _, _ in b)
    assert len(b) == FRAMES
    for (_, sa, fa), (_, sb, fb) in zip(a, b, strict=True):
        assert fa == fb
        assert torch.allclose(torch.tensor(sa), torch.tensor(sb), atol=1e-6)
    # The final status comes after the last score and counts every one of them.
    final = together[-1]
    assert isinstance(final, StatusMessage)
    assert final.frames_published == FRAMES and final.state == alone[-1].state
    assert pipeline.counters.failed_frames == 0


def test_a_failed_encoder_call_skips_its_frame_and_the_stream_goes_on(tiny_checkpoint):
    pipeline, _, messages, published = run(tiny_checkpoint, 3, fail_at=35)
    assert published == FRAMES  # the lost frame's place is taken by the next frame
    assert pipeline.counters.failed_frames == 1
    assert "replica lost" in (pipeline.counters.last_error or "")
    frames = [f for f, _, _ in scores(messages)]
    assert len(frames) == FRAMES and len(set(frames)) == FRAMES
    assert frames == sorted(frames)


def test_an_encoder_that_normalises_gets_grey_frames_and_gives_the_same_scores(tiny_checkpoint):
    """``luvnet serve``: the stream stops at the letterboxed grey uint8 frame and the replica
    normalises it; one frame at a time and with frames in flight, the scores are the ones of
    a stream that normalises itself."""
    _, _, local, _ = run(tiny_checkpoint, 1)
    for frames_in_flight in (1, 3):
        pipeline, encoder, remote, published = run(
            tiny_checkpoint, frames_in_flight, encoder_normalizes=True
        )
        assert published == FRAMES and pipeline.counters.failed_frames == 0
        assert encoder.calls >= FRAMES
        a, b = scores(local), scores(remote)
        assert [f for f, _, _ in a] == [f for f, _, _ in b]
        for (_, sa, fa), (_, sb, fb) in zip(a, b, strict=True):
            assert fa == fb
            assert torch.allclose(torch.tensor(sa), torch.tensor(sb), atol=1e-6)
