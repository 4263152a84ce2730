"""Synthetic lung-ultrasound phantom: convex-probe videos with exact frame-level truth.

``PhantomVideo`` is the Python API (training data, tests); ``source.open_phantom`` is the live
frame source (``phantom:SEED``); ``generate`` writes labelled sets (``luvnet phantom``).
"""

from luvnet.plugins.phantom.geometry import NATIVE_SIZE, PAPER_PROBE, Geometry, Probe
from luvnet.plugins.phantom.scene import Anatomy, Scene
from luvnet.plugins.phantom.video import PhantomVideo

__all__ = ["NATIVE_SIZE", "PAPER_PROBE", "Anatomy", "Geometry", "PhantomVideo", "Probe", "Scene"]
