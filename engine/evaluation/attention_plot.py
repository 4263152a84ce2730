"""Per-pattern attention curves of one video as a PNG figure (``luvnet attention``).

The figure of docs/model.md, "Attention curves", drawn with OpenCV: one panel per
pattern with alpha_t (attention summed over heads, min-max normalised per clip; see
:mod:`engine.attention_curves`) against the frame index, the top-3 frames marked and shown as
thumbnails, each clip's probability, and the ground truth shaded when ``--manifest`` knows it.
The video goes through the checkpoint's own preprocessing and :func:`engine.inference.score_clips`
(embed per frame, then head), as in evaluation and the live streamer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from luvnet.engine.data.clips import clip_spans, take_clip
from luvnet.engine.data.manifest import LabelSpec, read_manifest
from luvnet.engine.data.preprocess import preprocess_frames
from luvnet.engine.data.timing import Timing, kept_indices
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.attention_curves import VideoCurves, stitch
from luvnet.engine.evaluation.inference import score_clips
from luvnet.engine.evaluation.report import DISPLAY_NAMES
from luvnet.engine.files import atomic_open
from luvnet.engine.model.checkpoint import Checkpoint, load_checkpoint
from luvnet.engine.runtime import resolve_device, set_threads

TOP_K = 3
# Layout in pixels; the figure is WIDTH x figure_height(P).
WIDTH = 1280
TITLE_H = 64
PANEL_H = 230
FOOTER_H = 40
THUMB = 150
THUMB_GAP = 10
PLOT_LEFT = 84
PLOT_RIGHT_GAP = 24
# BGR
INK = (40, 40, 40)
GRID = (225, 225, 225)
TRUTH = (200, 235, 200)
CLIP_EDGE = (190, 190, 190)
COLOURS = [(180, 100, 20), (20, 120, 230), (40, 40, 200), (150, 60, 150)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def figure_size(num_patterns: int) -> tuple[int, int]:
    """(width, height) of the PNG for this many patterns."""
    return WIDTH, TITLE_H + num_patterns * PANEL_H + FOOTER_H


@dataclass(frozen=True)
class Truth:
    """Ground truth of one pattern over the video's frames: [T] bool, or None = unknown."""

    frames: np.ndarray | None


def truth_from_manifest(manifest_path: Path, video: Path, n_frames: int) -> list[Truth]:
    manifest = read_manifest(manifest_path, check_files=False)
    target = video.resolve()
    for row in manifest.rows:
        if row.video == target:
            return [_truth(spec, n_frames) for spec in row.labels.values()]
    raise LuvnetError(
        f"--manifest {manifest_path}: no row for video {video}; expected the video to be listed"
    )


def _truth(spec: LabelSpec, n_frames: int) -> Truth:
    if spec.ranges is None:
        return Truth(None)
    marked = np.zeros(n_frames, dtype=bool)
    for start, end in spec.ranges:
        marked[start : min(end, n_frames - 1) + 1] = True
    return Truth(marked)


def video_curves(
    ckpt: Checkpoint, video: Path, clip: int | None
) -> tuple[VideoCurves, np.ndarray, np.ndarray]:
    """(curves, letterboxed uint8 frames [T, S, S], int [T] source frame number of each),
    the video decimated to the model's frame rate as evaluation decimates it."""
    config = ckpt.config
    decoded = read_video(video)
    kept = kept_indices(decoded.timestamps, Timing(config.frame_rate), decoded.fps)
    source = np.arange(len(decoded.frames)) if kept is None else kept
    frames, _ = preprocess_frames(decoded.frames[source], config.preprocess, region=decoded.region)
    spans = clip_spans(len(frames), config.clip_length, config.clip_step)
    if clip is not None:
        if not 0 <= clip < len(spans):
            raise LuvnetError(
                f"--clip: expected 0..{len(spans) - 1} for {video.name} "
                f"({len(frames)} frames, {len(spans)} clips), got {clip}"
            )
        spans = [spans[clip]]
    clips, masks = zip(
        *(take_clip(frames, a, b, config.clip_length) for a, b in spans), strict=True
    )
    with torch.inference_mode():
        logits, attention = score_clips(
            ckpt.model,
            torch.from_numpy(np.stack(clips)),
            torch.from_numpy(np.stack(masks)),
            config.preprocess,
        )
    offset = spans[0][0]
    local = [(a - offset, b - offset) for a, b in spans]
    curves = stitch(
        attention.cpu().numpy(), np.stack(masks), local, torch.sigmoid(logits).cpu().numpy()
    )
    shown = slice(offset, offset + curves.raw.shape[1])
    return curves, frames[shown], source[shown]


# --- drawing ----------------------------------------------------------------------------------


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, **kw) -> None:
    cv2.putText(img, text, org, FONT, scale, kw.get("colour", INK), kw.get("thick", 1), cv2.LINE_AA)


def _x_ticks(n_frames: int) -> list[int]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if n_frames / s <= 12)
    return list(range(0, n_frames, step))


def draw_panel(
    canvas: np.ndarray,
    top: int,
    pattern: int,
    name: str,
    curves: VideoCurves,
    frames: np.ndarray,
    numbers: np.ndarray,
    truth: Truth | None,
    threshold: float,
) -> None:
    n = curves.raw.shape[1]
    thumbs_w = TOP_K * THUMB + (TOP_K - 1) * THUMB_GAP
    x0, x1 = PLOT_LEFT, WIDTH - thumbs_w - PLOT_RIGHT_GAP - 16
    y0, y1 = top + 48, top + PANEL_H - 40
    colour = COLOURS[pattern % len(COLOURS)]

    def px(t: float) -> int:
        return int(round(x0 + (x1 - x0) * (t / max(n - 1, 1))))

    def py(v: float) -> int:
        return int(round(y1 - (y1 - y0) * v))

    clip_probs = curves.probs[:, pattern]
    if len(clip_probs) <= 4:
        shown = "p(clip) = " + ", ".join(f"{p:.2f}" for p in clip_probs)
    else:
        shown = (
            f"p(clip) {clip_probs.min():.2f}-{clip_probs.max():.2f} over {len(clip_probs)} clips"
        )
    title = f"{DISPLAY_NAMES.get(name, name)}   {shown}   threshold {threshold:.2f}"
    _text(canvas, title, (x0, top + 22), 0.55, colour=colour, thick=2)
    if truth is not None and truth.frames is not None:
        marked = truth.frames[numbers]
        for i in np.flatnonzero(marked):
            a, b = px(i - 0.5), px(i + 0.5)
            cv2.rectangle(canvas, (max(a, x0), y0), (min(b, x1), y1), TRUTH, -1)
        note = "ground truth: present (shaded)" if marked.any() else "ground truth: absent"
    else:
        note = "ground truth: unknown" if truth is not None else "ground truth: not given"
    (note_w, _), _ = cv2.getTextSize(note, FONT, 0.42, 1)
    _text(canvas, note, (x1 - note_w, y1 + 34), 0.42)
    for v in (0.0, 0.5, 1.0):
        cv2.line(canvas, (x0, py(v)), (x1, py(v)), GRID, 1)
        _text(canvas, f"{v:.1f}", (x0 - 30, py(v) + 5), 0.4)
    for start, _ in curves.spans[1:]:
        cv2.line(canvas, (px(start), y0), (px(start), y1), CLIP_EDGE, 1, cv2.LINE_AA)
    for t in _x_ticks(n):
        cv2.line(canvas, (px(t), y1), (px(t), y1 + 4), INK, 1)
        _text(canvas, str(numbers[t]), (px(t) - 8, y1 + 18), 0.4)
    _text(canvas, "frame", ((x0 + x1) // 2 - 20, y1 + 34), 0.4)
    _text(canvas, "alpha", (8, (y0 + y1) // 2 + 5), 0.45)
    values = np.nan_to_num(curves.normalised[pattern], nan=0.0)
    points = np.array([[px(t), py(v)] for t, v in enumerate(values)], np.int32)
    cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
    cv2.rectangle(canvas, (x0, y0), (x1, y1), INK, 1)
    top_frames = curves.top_frames(pattern, TOP_K)
    for rank, t in enumerate(top_frames, start=1):
        centre = (px(t), py(values[t]))
        cv2.circle(canvas, centre, 6, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, 6, INK, 1, cv2.LINE_AA)
        _text(canvas, str(rank), (centre[0] - 4, centre[1] - 10), 0.45, thick=2)
    tx = WIDTH - thumbs_w - 16
    for rank, t in enumerate(top_frames, start=1):
        # INTER_LINEAR, as always: cv2.INTER_AREA used to sit in the ``dst`` slot and was ignored.
        thumb = cv2.resize(
            np.ascontiguousarray(frames[t]), (THUMB, THUMB), interpolation=cv2.INTER_LINEAR
        )
        x = tx + (rank - 1) * (THUMB + THUMB_GAP)
        canvas[top + 34 : top + 34 + THUMB, x : x + THUMB] = cv2.cvtColor(thumb, cv2.COLOR_GRAY2BGR)
        cv2.rectangle(canvas, (x, top + 34), (x + THUMB - 1, top + 33 + THUMB), colour, 2)
        label = f"#{rank} frame {numbers[t]}  a={values[t]:.2f}"
        _text(canvas, label, (x, top + 34 + THUMB + 18), 0.42)


def render(
    ckpt: Checkpoint,
    video: Path,
    curves: VideoCurves,
    frames: np.ndarray,
    numbers: np.ndarray,
    truths: list[Truth] | None,
) -> np.ndarray:
    config = ckpt.config
    width, height = figure_size(config.num_patterns)
    canvas = np.full((height, width, 3), 255, np.uint8)
    decimated = len(numbers) < int(numbers[-1] - numbers[0]) + 1
    clips = len(curves.spans)
    _text(canvas, f"Attention over frames: {video.name}", (PLOT_LEFT, 28), 0.75, thick=2)
    _text(
        canvas,
        f"model {ckpt.model_id} ({config.variant}, {config.backbone}, {config.num_heads} heads)"
        f"   frames {numbers[0]}-{numbers[-1]}, {clips} clip(s) of {config.clip_length}"
        + (f", decimated to the model's {config.frame_rate:g} fps" if decimated else ""),
        (PLOT_LEFT, 52),
        0.5,
    )
    for p, name in enumerate(config.pattern_names):
        truth = truths[p] if truths is not None else None
        draw_panel(
            canvas,
            TITLE_H + p * PANEL_H,
            p,
            name,
            curves,
            frames,
            numbers,
            truth,
            config.thresholds[p],
        )
    _text(
        canvas,
        "alpha_t = attention summed over heads, min-max normalised per clip; grey lines: clip "
        "starts (overlaps use the clip whose centre is nearest); dots 1-3: top frames",
        (PLOT_LEFT, height - 16),
        0.42,
    )
    return canvas


def plot_attention(
    checkpoint: Path,
    video: Path,
    out: Path,
    *,
    manifest: Path | None = None,
    clip: int | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> tuple[int, int]:
    """Draw the figure of ``video`` (all clips, or clip ``clip``) into the PNG ``out``.

    Args:
        manifest: a manifest listing the video, for the ground truth (None: not shown).
        device: ``auto``/``None`` (CUDA when visible), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (None: torch's default).

    Returns:
        (width, height) of the PNG in pixels.

    Raises:
        LuvnetError: a bad checkpoint, video, manifest or clip index, or an unwritable PNG.
    """
    set_threads(threads)
    ckpt = load_checkpoint(checkpoint, map_location=resolve_device(device))
    curves, frames, numbers = video_curves(ckpt, video, clip)
    truths = None
    if manifest is not None:
        truths = truth_from_manifest(manifest, video, int(numbers[-1]) + 1)
    image = render(ckpt, video, curves, frames, numbers, truths)
    ok, png = cv2.imencode(".png", image)
    try:
        if not ok:
            raise OSError("PNG encoding failed")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out, "wb") as handle:
            handle.write(png.tobytes())
    except OSError as err:
        raise LuvnetError(f"--out {out}: cannot write the PNG ({err.strerror or err})") from None
    return image.shape[1], image.shape[0]
