"""Reliability tests reuse the stream fixtures: a tiny real checkpoint, real videos, free ports."""

from __future__ import annotations

from tests.streamer.conftest import short_video, tiny_checkpoint  # noqa: F401 - fixtures
