"""Valid messages for protocol, publisher and consumer tests (keyword arguments override), and
the slow-joiner handshake the PUB/SUB tests start with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from luvnet.streamer.client import ScoreSubscriber
from luvnet.streamer.protocol import Message, ScoreMessage, StatusMessage

PATTERNS = ("a_lines", "b_lines", "consolidation", "pleural_effusion")


def make_score(window: int = 30, **overrides: Any) -> ScoreMessage:
    rng = np.random.default_rng(0)
    fields: dict[str, Any] = {
        "frame": 17,
        "capture_ns": 1_000_000_000,
        "fill": min(12, window),
        "window": window,
        "patterns": PATTERNS,
        "scores": dict(zip(PATTERNS, (0.9, 0.2, 0.5, 0.01), strict=True)),
        "thresholds": dict(zip(PATTERNS, (0.5, 0.4, 0.5, 0.3), strict=True)),
        "attention": rng.random((len(PATTERNS), window)) * 8,
        "latency_ms": {"preprocess": 0.8, "embed": 2.6, "head": 0.6},
        "model_id": "bb19422e34b5",
        "backend": "torch",
        "device": "cpu",
    }
    return ScoreMessage(**(fields | overrides))


def make_status(**overrides: Any) -> StatusMessage:
    fields: dict[str, Any] = {
        "source": "phantom:seed=1",
        "state": "running",
        "input_fps": 30.0,
        "output_fps": 29.5,
        "frames_captured": 300,
        "frames_dropped": 7,
        "frames_published": 293,
        "backend": "torch",
        "device": "cpu",
        "model_id": "bb19422e34b5",
        "uptime_s": 10.0,
        "last_error": None,
    }
    return StatusMessage(**(fields | overrides))


def join(publish: Callable[[], object], sub: ScoreSubscriber, tries: int = 200) -> Message:
    """Publish until the subscriber hears something (PUB drops what it sends before a
    subscriber has connected); return the first message heard."""
    for _ in range(tries):
        publish()
        msg = sub.recv(50)
        if msg is not None:
            return msg
    raise AssertionError(f"subscriber heard nothing from {sub.endpoint} in {tries} tries")
