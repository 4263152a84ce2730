"""The README's main job: ``luvnet stream`` on the phantom with the committed demo model.

An independent plain pyzmq + msgpack subscriber checks the wire; the phantom's own truth,
regenerated from the same seed, checks that the scores follow what the phantom draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from luvnet.engine.evaluation.roc import roc_auc
from luvnet.plugins.phantom.source import PhantomSource
from luvnet.streamer.compose import DEMO_CHECKPOINT
from tests.streamer.test_stream import PATTERNS, run_stream

pytestmark = pytest.mark.skipif(
    not (DEMO_CHECKPOINT / "config.json").is_file(),
    reason="demo model not built (python -m luvnet.engine.training.demo, README 'Demo model')",
)


def window_truth(frames: list[int], fills: list[int], size: tuple[int, int], seed: int):
    """Per message: is the pattern visible in any frame of its window (the clip-label rule)."""
    source = PhantomSource(seed=seed, size=size, realtime=False)
    source.open()
    truth = [source.read().truth for _ in range(max(frames) + 1)]
    source.close()
    labels = np.zeros((len(frames), len(PATTERNS)))
    for row, fill in enumerate(fills):
        window = frames[max(0, row - fill + 1) : row + 1]
        labels[row] = [any(truth[f][p] for f in window) for p in PATTERNS]
    return labels


def test_default_stream_on_the_phantom():
    """`luvnet stream --source phantom --max-frames 120`, as the issue states it."""
    result, sub = run_stream("--source", "phantom", "--max-frames", "120", timeout=300)
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    assert [m["seq"] for m in scores] == list(range(120)), "seq must be contiguous"
    assert max(m["fill"] for m in scores) == 30
    frames = [m["frame"] for m in scores]
    assert frames == sorted(set(frames)), "frame indices increase (gaps are grabber drops)"
    assert scores[0]["backend"] and len(scores[0]["model_id"]) == 12


def test_demo_scores_follow_the_phantom_truth():
    size, seed = (240, 320), 11  # a stream in which all four patterns come and go
    result, sub = run_stream(
        "--source",
        f"phantom:{seed}",
        "--size",
        f"{size[0]}x{size[1]}",
        "--max-frames",
        "900",
        "--as-fast-as-possible",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    assert len(scores) == 900
    frames, fills = [m["frame"] for m in scores], [m["fill"] for m in scores]
    labels = window_truth(frames, fills, size, seed)
    probs = np.array([[m["scores"][p] for p in PATTERNS] for m in scores])
    full = np.array(fills) == 30
    aucs = {}
    for j, pattern in enumerate(PATTERNS):
        y = labels[full, j]
        if 0 < y.sum() < len(y):
            aucs[pattern] = roc_auc(y, probs[full, j])
    assert len(aucs) == 4, f"seed {seed} should show every pattern both present and absent"
    # The demo model (docs/results.md, model id 50cbe92ec035) on this stream: A-lines 0.93,
    # B-lines 0.96, consolidation 0.97, effusion 0.89. It was trained on 0.8 s videos; this
    # stream is 30 s of one scene with sweeps, so a margin below its held-out clip AUCs
    # (0.97-1.00).
    assert min(aucs.values()) >= 0.85, aucs
