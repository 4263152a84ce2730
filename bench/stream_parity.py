"""The live stream against ``luvnet evaluate`` on the same videos: identical windows, same scores.

For each video of a manifest, :func:`stream_parity` scores

* every clip with ``luvnet evaluate``'s own function (:func:`~luvnet.engine.evaluation.evaluate.
  evaluate`, split ``all``): its predictions CSV holds each clip's frame span and probabilities;
* every frame with the live pipeline (:func:`~luvnet.streamer.compose.compose_stream`, a
  ``file:`` source as fast as possible, the eager backend on the CPU): each score message holds
  the frame, how full its window is, and the probabilities.

A full-length clip ``[start, end)`` of evaluate (``L`` frames the stream scored in it: by time
when the video is decimated) is the same window as the stream's message at frame ``end - 1``
when that message's window is full: the two must agree (docs/results.md).
Also counted: the videos whose frame ``L - 1`` (29 for a 30-frame model) already has a full
window, which needs the stream to keep the frames it found the sector from.
"""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.evaluation.evaluate import evaluate
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.runtime import set_threads
from luvnet.streamer.compose import DEMO_CHECKPOINT, StreamSettings, compose_stream
from luvnet.streamer.protocol import ScoreMessage, StatusMessage


@dataclass
class VideoParity:
    video: str
    frames_scored: int  # score messages the stream published
    windows_compared: int  # evaluate's full-length clips matched to a full stream window
    max_abs_diff: float  # over those windows and every pattern; 0.0 when none
    full_window_at: int | None  # the first frame whose stream window is full


@dataclass
class ParityReport:
    checkpoint: str
    window: int
    videos: list[VideoParity] = field(default_factory=list)

    @property
    def windows_compared(self) -> int:
        return sum(v.windows_compared for v in self.videos)

    @property
    def max_abs_diff(self) -> float:
        return max((v.max_abs_diff for v in self.videos), default=0.0)

    @property
    def full_at_last_frame_of_first_window(self) -> int:
        """Videos whose frame ``window - 1`` is scored with a full window."""
        return sum(v.full_window_at == self.window - 1 for v in self.videos)

    def summary(self) -> str:
        return (
            f"{len(self.videos)} videos: {self.windows_compared} identical windows compared, "
            f"max |stream - evaluate| {self.max_abs_diff:.3g}; "
            f"{self.full_at_last_frame_of_first_window} of {len(self.videos)} videos have a "
            f"full {self.window}-frame window at frame {self.window - 1}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "checkpoint": self.checkpoint,
            "window": self.window,
            "windows_compared": self.windows_compared,
            "max_abs_diff": self.max_abs_diff,
            "videos_with_full_window_at_last_frame_of_first_window": (
                self.full_at_last_frame_of_first_window
            ),
            "videos": [asdict(v) for v in self.videos],
        }


def subset_manifest(manifest: Path, out: Path, count: int | None) -> Path:
    """The first ``count`` rows of ``manifest`` (all when None), video paths made absolute."""
    table = read_manifest(manifest)
    root = table.path.resolve().parent
    with table.path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0]) if rows else ["video"]
    rows = rows[:count] if count is not None else rows
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"video": str((root / row["video"]).resolve())})
    return out


def stream_messages(video: Path, checkpoint: Path | None) -> list[ScoreMessage]:
    """Every score message the live pipeline publishes for a ``file:`` replay of ``video``."""
    messages: list[ScoreMessage] = []

    def publish(message: ScoreMessage | StatusMessage) -> None:
        if isinstance(message, ScoreMessage):
            messages.append(message)

    settings = StreamSettings(
        source=f"file:{video}", checkpoint=checkpoint, device="cpu", realtime=False
    )
    compose_stream(settings, publish).run(threading.Event())
    return messages


def stream_parity(
    manifest: Path,
    out: Path,
    *,
    checkpoint: Path | None = None,
    count: int | None = None,
    cache: Path | None = None,
    threads: int | None = 1,
) -> ParityReport:
    """Evaluate and stream the first ``count`` videos of ``manifest``; ``OUT/parity.json``."""
    set_threads(threads)
    ckpt_dir = checkpoint or DEMO_CHECKPOINT
    window = load_checkpoint(ckpt_dir).config.clip_length
    subset = subset_manifest(manifest, out / "manifest.csv", count)
    evaluate(ckpt_dir, subset, out / "evaluate", split="all", cache=cache, threads=threads)
    predictions = read_predictions(out / "evaluate" / "predictions.csv")
    clips: dict[Path, list[int]] = {}
    for i, clip in enumerate(predictions.clips):
        clips.setdefault((subset.parent / clip.video).resolve(), []).append(i)
    report = ParityReport(str(ckpt_dir), window)
    for row in read_manifest(subset).rows:
        video = row.video.resolve()
        by_frame = {m.frame: m for m in stream_messages(video, checkpoint)}
        scored = np.array(sorted(by_frame))
        diffs: list[float] = []
        for i in clips.get(video, []):
            clip = predictions.clips[i]  # [start, end) in source frames (decimated: by time)
            message = by_frame.get(clip.end - 1)
            inside = int(((scored >= clip.start) & (scored < clip.end)).sum())
            if inside != window or message is None or message.fill != window:
                continue  # a short last clip, or no full stream window there
            live = np.array([message.scores[name] for name in predictions.pattern_names])
            diffs.append(float(np.abs(live - predictions.probs[i]).max()))
        full = [f for f, m in sorted(by_frame.items()) if m.fill == window]
        report.videos.append(
            VideoParity(
                video=video.name,
                frames_scored=len(by_frame),
                windows_compared=len(diffs),
                max_abs_diff=max(diffs, default=0.0),
                full_window_at=full[0] if full else None,
            )
        )
    (out / "parity.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report
