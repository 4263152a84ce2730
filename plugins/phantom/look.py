"""A scene's look: how one scanner and its settings render it (domain randomisation).

The layers draw a scene's anatomy and patterns; the look scales their grey levels. It is
drawn per scene from its own generator, so a scene's geometry, motion and frame-level truth
never depend on it. Its ranges were widened to cover real convex-probe lung ultrasound, where
at 64 px the phantom's aerated lung was a dark smooth haze and its B-lines near-white beams
(docs/results.md, "Sim-to-real", diagnosis).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LOOKS = ("plain", "varied")  # the phantom's own fixed rendering, or one drawn per scene
SQUEEZE_MID = 40.0  # grey the squeeze keeps fixed and B-line gains scale from (plain lung)


def check_look(kind: str) -> None:
    """Raises ValueError (one line) unless ``kind`` is one of LOOKS."""
    if kind not in LOOKS:
        raise ValueError(f"look: expected one of {', '.join(LOOKS)}, got {kind!r}")


@dataclass(frozen=True)
class Look:
    """One scene's rendering settings (the module docstring says why and how drawn)."""

    lung_lift: float  # grey added below the pleura (the lung field's gain; consolidations too)
    b_line_gain: float  # share of a B-line's brightness above the lung it keeps, 0..1
    b_line_edge: float  # exponent of the discrete B-line's lateral profile: 2 soft, 4 sharp
    a_line_gain: float  # brightness of the reverberations (not the pleural line), 0..1
    shadow_fill: float  # grey inside a rib shadow (no echo passes a rib: nothing else shows)
    squeeze: float  # dynamic range kept around SQUEEZE_MID, 0..1
    blur_mm: float  # Gaussian sigma of the system's point spread beyond the speckle, mm

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Look:
        lung_lift = float(rng.uniform(0.0, 20.0))
        rng.uniform(0.0, 14.0)  # the removed lung texture's draw: later draws stay as they were
        return cls(
            lung_lift=lung_lift,
            b_line_gain=float(rng.uniform(0.35, 1.0)),
            b_line_edge=float(rng.uniform(2.0, 4.0)),
            a_line_gain=float(rng.uniform(0.45, 1.0)),
            shadow_fill=float(rng.uniform(0.0, 30.0)),
            squeeze=float(rng.uniform(0.65, 1.0)),
            blur_mm=float(rng.uniform(0.0, 1.2)),
        )

    @classmethod
    def for_scene(cls, kind: str, seed: int) -> Look:
        """The look of a scene: PLAIN_LOOK, or one drawn from the scene's own generator.

        Raises:
            ValueError: ``kind`` is not one of LOOKS.
        """
        check_look(kind)
        return cls.sample(np.random.default_rng([seed, 2])) if kind == "varied" else PLAIN_LOOK

    def to_u8(
        self,
        x: np.ndarray,
        rows_per_mm: float,
        cols_per_mm: float,
        gain: float = 0.0,
        squeeze: bool = False,
    ) -> np.ndarray:
        """A float grey layer as displayed: blurred by the point spread (``blur_mm`` in rows
        and columns), squeezed around SQUEEZE_MID when ``squeeze``, offset by ``gain``."""
        if self.blur_mm > 0.05:
            sig_r, sig_c = (
                max(self.blur_mm * rows_per_mm, 0.3),
                max(self.blur_mm * cols_per_mm, 0.3),
            )
            x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=sig_c, sigmaY=sig_r)
        if squeeze and self.squeeze != 1.0:
            x = SQUEEZE_MID + (x - SQUEEZE_MID) * self.squeeze
        return np.clip(x + gain, 0, 255).astype(np.uint8)


# The phantom as drawn before looks existed (and as the demo model was trained): every scale 1,
# nothing added, full rib shadows, no blur. Each operation is then an exact identity.
PLAIN_LOOK = Look(
    lung_lift=0.0,
    b_line_gain=1.0,
    b_line_edge=4.0,
    a_line_gain=1.0,
    shadow_fill=0.0,
    squeeze=1.0,
    blur_mm=0.0,
)
