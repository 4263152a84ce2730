"""The measured modes: each drives the real stages and returns latency samples in ms.

- ``cached``: what luvnet does — one encoder call per new frame, then the head.
- ``naive``: what a clip model must do — re-encode all L frames of the window per new frame.
- head ``incremental`` vs head ``window`` rerun, and the temporal branch alone both ways.
- ``paced``: the whole live pipeline (grabber thread, latest-wins slot, publisher) fed by a
  source at a fixed frame rate; end-to-end = grab to publish.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import TypedDict

import numpy as np
import torch

from luvnet.engine.backends import Backend
from luvnet.engine.model.incremental import IncrementalHead
from luvnet.engine.model.network import LUVNet
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.frame_source import FrameSource
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import ScorePublisher
from luvnet.streamer.stages import EmbedStage, HeadStage, PostprocessStage, PreprocessStage


def _now(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter_ns()


def run_cached(
    model: LUVNet,
    frames: list[np.ndarray],
    encode,
    device: torch.device,
    dtype: torch.dtype,
    head_mode: str,
    warmup: int,
) -> dict[str, list[float]]:
    """Per new frame: preprocess -> one encoder call -> head -> postprocess."""
    preprocess: PreprocessStage[None] = PreprocessStage(
        model.config, device=device, dtype=dtype, calibrate_frames=0
    )
    preprocess.preprocessor.calibrate(frames)  # the crop rule's box, locked before timing
    embed, head, post = EmbedStage(encode), HeadStage(model, mode=head_mode), PostprocessStage()
    samples: dict[str, list[float]] = defaultdict(list)
    for i, image in enumerate(frames):
        t0 = _now(device)
        x = preprocess(image)
        t1 = _now(device)
        emb = embed(x)
        t2 = _now(device)
        logits, attention, fill = head(emb)
        t3 = _now(device)
        post(logits, attention, fill)
        t4 = _now(device)
        if i >= warmup:
            for name, a, b in (
                ("preprocess", t0, t1),
                ("embed", t1, t2),
                ("head", t2, t3),
                ("postprocess", t3, t4),
                ("total", t0, t4),
            ):
                samples[name].append((b - a) / 1e6)
    return dict(samples)


@torch.inference_mode()
def run_naive(
    model: LUVNet,
    frames: list[np.ndarray],
    encode_batch,
    device: torch.device,
    dtype: torch.dtype,
    measured: int,
) -> dict[str, list[float]]:
    """Per new frame: re-encode the whole window (a clip model), then the head."""
    preprocess: PreprocessStage[None] = PreprocessStage(
        model.config, device=device, dtype=dtype, calibrate_frames=0
    )
    preprocess.preprocessor.calibrate(frames)  # the crop rule's box, locked before timing
    length = model.config.clip_length
    window: deque[torch.Tensor] = deque(maxlen=length)
    samples: dict[str, list[float]] = defaultdict(list)
    for image in frames:
        t0 = _now(device)
        window.append(preprocess(image))
        if len(window) < length:
            continue
        t1 = _now(device)
        emb = encode_batch(torch.cat(list(window))).unsqueeze(0)
        t2 = _now(device)
        model.head(emb)
        t3 = _now(device)
        samples["preprocess"].append((t1 - t0) / 1e6)
        samples["embed"].append((t2 - t1) / 1e6)
        samples["head"].append((t3 - t2) / 1e6)
        samples["total"].append((t3 - t0) / 1e6)
        if len(samples["total"]) >= measured:
            break
    return dict(samples)


@torch.inference_mode()
def run_heads(
    model: LUVNet, device: torch.device, dtype: torch.dtype, steps: int, warmup: int
) -> dict[str, list[float]]:
    """Head update per new frame: incremental state vs rerun over the window; temporal alone."""
    length = model.config.clip_length
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(steps + warmup, model.embed_dim, generator=gen).to(device, dtype)
    incremental = IncrementalHead(model)
    window_head = HeadStage(model, mode="window")
    samples: dict[str, list[float]] = defaultdict(list)
    temporal = getattr(model.clip_head, "temporal", None)
    full_mask = torch.ones(1, length, dtype=torch.bool, device=device)
    probe = IncrementalHead(model) if temporal is not None else None
    for i, emb in enumerate(embeddings):
        t0 = _now(device)
        incremental.push(emb)
        t1 = _now(device)
        window_head(emb)
        t2 = _now(device)
        record = i >= warmup
        if record:
            samples["head_incremental"].append((t1 - t0) / 1e6)
            samples["head_window"].append((t2 - t1) / 1e6)
        if probe is not None:
            assert temporal is not None  # probe exists only when the head has a temporal branch
            index = probe.window.push(emb)
            t3 = _now(device)
            probe.temporal_update(index, emb)
            t4 = _now(device)
            ring = probe.window.ordered().unsqueeze(0)
            mask = full_mask[:, : ring.shape[1]]
            t5 = _now(device)
            temporal(ring, mask)
            t6 = _now(device)
            if record:
                samples["temporal_incremental"].append((t4 - t3) / 1e6)
                samples["temporal_window"].append((t6 - t5) / 1e6)
    return dict(samples)


def run_backend_head(backend: Backend, steps: int, warmup: int) -> list[float]:
    """The backend's own head (compiled where it compiles) over a full [1, L, D] window."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, backend.info.window, backend.info.embed_dim)
    window = torch.randn(shape, generator=gen).to(backend.device, backend.dtype)
    samples = []
    for i in range(steps + warmup):
        t0 = _now(backend.device)
        backend.head(window)
        t1 = _now(backend.device)
        if i >= warmup:
            samples.append((t1 - t0) / 1e6)
    return samples


class PacedRun(TypedDict):
    """What :func:`run_paced` measured; latencies in ms, one per published frame."""

    e2e: list[float]
    stages: dict[str, list[float]]
    published: int
    captured: int
    dropped: int
    sustained_fps: float
    seconds: float


def run_paced(
    settings: StreamSettings,
    seconds: float,
    backend: Backend | None = None,
    source: FrameSource | None = None,
) -> PacedRun:
    """The live pipeline at the source's own pace for ``seconds``; e2e = grab -> published."""
    e2e: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    statuses: list[StatusMessage] = []
    with ScorePublisher("tcp://127.0.0.1:*") as publisher:

        def publish(msg: ScoreMessage | StatusMessage) -> None:
            publisher.publish(msg)
            if isinstance(msg, ScoreMessage):
                e2e.append((time.monotonic_ns() - msg.capture_ns) / 1e6)
                for name, value in msg.latency_ms.items():
                    stages[name].append(value)
            else:
                statuses.append(msg)

        pipeline = compose_stream(settings, publish, source=source, backend=backend)
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        started = time.monotonic()
        try:
            published = pipeline.run(stop)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
    grabber = pipeline.grabber
    return {
        "e2e": e2e,
        "stages": dict(stages),
        "published": published,
        "captured": grabber.captured,
        "dropped": grabber.dropped,
        "sustained_fps": published / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
    }
