"""Latency CDFs drawn with OpenCV (no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 100, 0),
    (255, 0, 255),
]
LEGEND_WIDTH = 300  # names sit beside the plot, never over the curves


def plot_cdfs(series: dict[str, list[float]], path: Path, title: str) -> None:
    """One curve per mode on a log-latency axis; writes a PNG."""
    width, height, margin = 900, 520, 70
    canvas = np.full((height, width + LEGEND_WIDTH, 3), 255, np.uint8)
    curves = {k: np.sort(np.asarray(v)) for k, v in series.items() if len(v)}
    if not curves:
        raise ValueError("plot: no latency samples")
    lo = max(min(float(v[0]) for v in curves.values()), 1e-3)
    hi = max(float(v[-1]) for v in curves.values())
    lo_log, hi_log = np.log10(lo) - 0.05, np.log10(hi) + 0.05

    def x_of(ms: np.ndarray) -> np.ndarray:
        frac = (np.log10(np.maximum(ms, lo)) - lo_log) / (hi_log - lo_log)
        return (margin + frac * (width - 2 * margin)).astype(np.int32)

    def y_of(p: np.ndarray) -> np.ndarray:
        return (height - margin - p * (height - 2 * margin)).astype(np.int32)

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.rectangle(canvas, (margin, margin), (width - margin, height - margin), (0, 0, 0), 1)
    for decade in range(int(np.floor(lo_log)), int(np.ceil(hi_log)) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0**decade
            if lo_log <= np.log10(value) <= hi_log:
                x = int(x_of(np.array([value]))[0])
                cv2.line(canvas, (x, margin), (x, height - margin), (225, 225, 225), 1)
                cv2.putText(
                    canvas,
                    f"{value:g}",
                    (x - 12, height - margin + 18),
                    font,
                    0.4,
                    (0, 0, 0),
                    1,
                    cv2.LINE_AA,
                )
    for p in (0.5, 0.9, 0.99):
        y = int(y_of(np.array([p]))[0])
        cv2.line(canvas, (margin, y), (width - margin, y), (225, 225, 225), 1)
        cv2.putText(canvas, f"p{round(p * 100)}", (margin - 40, y + 4), font, 0.4, (0, 0, 0), 1)
    for i, (name, values) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        probs = np.arange(1, len(values) + 1) / len(values)
        points = np.stack([x_of(values), y_of(probs)], axis=1).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        cv2.putText(
            canvas,
            name,
            (width - margin + 15, margin + 10 + 18 * i),
            font,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    cv2.putText(canvas, title, (margin, margin - 20), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas,
        "latency per new frame (ms, log scale)",
        (width // 2 - 150, height - 20),
        font,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write {path}")
