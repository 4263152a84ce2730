"""The scanner's screen around the fan: depth ruler, focus mark, text, grey bar and a logo.

All of it is static (identical in every frame of a stream at one size and frame rate), as on a
real scanner, so that sector cropping, which looks for pixels that change over time, has
something to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import cv2
import numpy as np

from luvnet.plugins.phantom.geometry import Geometry

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_GREY = 200
_LOGO_BGR = (180, 150, 30)  # teal badge


@dataclass(frozen=True)
class UiLayer:
    grey: np.ndarray  # HxW uint8: everything but the logo; the fan is drawn over it
    logo_box: tuple[int, int, int, int]  # x0, y0, x1, y1
    logo: np.ndarray  # BGR patch for logo_box
    logo_mask: np.ndarray  # bool, where the patch replaces the frame


def _text(img: np.ndarray, text: str, x: float, y: float, scale: float, value: int) -> None:
    thickness = max(1, round(scale * 2))
    cv2.putText(img, text, (round(x), round(y)), _FONT, scale, value, thickness, cv2.LINE_AA)


@lru_cache(maxsize=8)
def draw_ui(geometry: Geometry, fps: float) -> UiLayer:
    """Static screen for one geometry and frame rate; cached, do not modify the arrays."""
    g = geometry
    s = g.scale
    grey = np.zeros((g.height, g.width), dtype=np.uint8)
    x_left = g.apex_x - 616 * s  # left edge of the native 1232-wide layout
    y_top = g.apex_y + g.r_near - 60 * s  # top of the native layout

    # Depth ruler right of the fan: a tick per centimetre, numbers every 2 cm.
    x_ruler = g.fan_box[2] + 6 * s
    for cm in range(int(g.depth_mm // 10) + 1):
        y = g.apex_y + g.r_near + cm * 10 * g.px_per_mm
        long = cm % 2 == 0
        length = (14 if long else 7) * s
        p0, p1 = (round(x_ruler), round(y)), (round(x_ruler + length), round(y))
        cv2.line(grey, p0, p1, _TEXT_GREY, max(1, round(2 * s)), cv2.LINE_AA)
        if long and cm:
            _text(grey, str(cm), x_ruler + 18 * s, y + 8 * s, 0.6 * s, _TEXT_GREY)
    # Focus mark: a small triangle pointing at the focal depth.
    y_f = g.apex_y + g.r_near + 60 * g.px_per_mm
    tri = np.array(
        [[x_ruler - 2 * s, y_f], [x_ruler - 16 * s, y_f - 8 * s], [x_ruler - 16 * s, y_f + 8 * s]]
    )
    cv2.fillPoly(grey, [np.round(tri).astype(np.int32)], 230, cv2.LINE_AA)

    lines = [
        "LUVNET PHANTOM",
        "C5-2   LUNG",
        f"{fps:g} Hz   D {g.depth_mm / 10:.1f} cm",
        "G 52   DR 66",
    ]
    for i, line in enumerate(lines):
        _text(grey, line, x_left + 24 * s, y_top + (40 + 34 * i) * s, 0.75 * s, _TEXT_GREY)
    _text(grey, "MI 0.9  TIb 0.3", x_left + 1000 * s, y_top + 140 * s, 0.55 * s, _TEXT_GREY)
    _text(grey, "2025-06-01  10:42", x_left + 24 * s, y_top + 900 * s, 0.6 * s, 160)

    # Grey bar bottom-left: the display map.
    bar_x, bar_y, bar_h, bar_w = x_left + 40 * s, y_top + 640 * s, 200 * s, 16 * s
    y0, y1 = round(bar_y), round(bar_y + bar_h)
    x0, x1 = round(bar_x), round(bar_x + bar_w)
    if y1 > y0 and x1 > x0:
        grey[y0:y1, x0:x1] = np.linspace(255, 0, y1 - y0, dtype=np.float32)[:, None].astype(
            np.uint8
        )
    # Orientation marker at the left end of the probe face.
    mx, my = g.polar_to_xy(-0.5, -0.5)
    cv2.circle(
        grey,
        (round(float(mx) - 14 * s), round(float(my))),
        max(2, round(7 * s)),
        220,
        -1,
        cv2.LINE_AA,
    )

    # Logo badge top-right, the only colour on screen.
    lx0, ly0 = round(x_left + 1040 * s), round(y_top + 16 * s)
    lx1, ly1 = round(x_left + 1200 * s), round(y_top + 80 * s)
    logo = np.zeros((max(ly1 - ly0, 1), max(lx1 - lx0, 1), 3), dtype=np.uint8)
    cv2.rectangle(logo, (0, 0), (logo.shape[1] - 1, logo.shape[0] - 1), _LOGO_BGR, -1)
    scale = 1.1 * s
    cv2.putText(
        logo,
        "LUV",
        (round(24 * s), round(48 * s)),
        _FONT,
        scale,
        (255, 255, 255),
        max(1, round(3 * s)),
        cv2.LINE_AA,
    )
    mask = cast(np.ndarray, logo.any(axis=2))  # stub allows a scalar; axis=2 of 3-D is 2-D
    return UiLayer(grey=grey, logo_box=(lx0, ly0, lx1, ly1), logo=logo, logo_mask=mask)
