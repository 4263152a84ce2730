"""The live phantom: an endless, deterministic stream of synthetic scans (``phantom:SEED``).

One synthetic patient per stream; the probe moves to a new place every 4-9 s (a new scene:
which patterns are present and their parameters), and within a scene it sweeps, so the scores
of a live model change over time. Each frame carries its truth. The screen layout depends only
on the size and frame rate, so it stays static across scenes. The next scene's textures (a few
hundred ms at native size) are built on a worker thread while the current one plays, so scene
changes do not stall a paced stream.

URI spec (what follows ``phantom:``): empty (seed 0), ``SEED``, or either followed by
``?frames=N`` to end with ``SourceEnded`` after N frames (restarting instead when
``SourceOptions.loop`` is set). Size and frame rate come from ``SourceOptions``.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from luvnet.plugins.phantom.geometry import NATIVE_SIZE, Geometry
from luvnet.plugins.phantom.scene import Anatomy
from luvnet.plugins.phantom.video import DEFAULT_FPS, PhantomVideo
from luvnet.plugins.sources.pacing import Pacer
from luvnet.streamer.frame_source import SourceEnded, SourceError, SourceFrame, SourceOptions

SCENE_SECONDS = (4.0, 9.0)
MAX_FPS = 240.0
_SPEC = re.compile(r"^(?P<seed>\d*)(?:\?frames=(?P<frames>\d+))?$")


class PhantomSource:
    """``FrameSource`` over consecutive phantom scenes of one synthetic patient."""

    retry_open = True  # nothing external can fail; a retry simply resumes the stream

    def __init__(
        self,
        seed: int = 0,
        size: tuple[int, int] = NATIVE_SIZE,
        fps: float = DEFAULT_FPS,
        realtime: bool = True,
        max_frames: int | None = None,
        loop: bool = False,
    ):
        if not 0 < fps <= MAX_FPS:
            raise ValueError(f"fps: expected a frame rate in (0, {MAX_FPS:g}], got {fps}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"frames: expected a positive frame budget, got {max_frames}")
        Geometry.for_size(*size)  # validates the size now rather than at the first read
        self.name = f"phantom:{seed}"
        self.seed = seed
        self.size = size
        self._fps = float(fps)
        self.realtime = realtime
        self.max_frames = max_frames
        self.loop = loop
        self.anatomy = Anatomy.sample(np.random.default_rng([seed, 0]))
        self._opened = False
        self._pool: ThreadPoolExecutor | None = None
        self._upcoming: Future[PhantomVideo] | None = None
        self._rewind()

    @property
    def fps(self) -> float:
        return self._fps

    def _rewind(self) -> None:
        self._drop_upcoming()
        self.frames_read = 0
        self._scene_index = -1
        self._video: PhantomVideo | None = None
        self._in_scene = 0
        self._pacer = Pacer(self._fps)

    def _drop_upcoming(self) -> None:
        if self._upcoming is not None:
            self._upcoming.cancel()
            self._upcoming = None

    def _build_scene(self, k: int) -> PhantomVideo:
        seconds = np.random.default_rng([self.seed, 1, k]).uniform(*SCENE_SECONDS)
        frames = max(1, round(seconds * self._fps))
        video = PhantomVideo(
            [self.seed, 2, k],
            size=self.size,
            fps=self._fps,
            num_frames=frames,
            anatomy=self.anatomy,
        )
        video.renderer  # noqa: B018 - build the textures now (on the worker thread)
        return video

    def _next_scene(self) -> PhantomVideo:
        self._scene_index += 1
        k = self._scene_index
        upcoming, self._upcoming = self._upcoming, None
        video = upcoming.result() if upcoming is not None else self._build_scene(k)
        if self._pool is not None:
            self._upcoming = self._pool.submit(self._build_scene, k + 1)
        return video

    def open(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phantom-scene")
        self._opened = True
        self._pacer.reset()

    def read(self) -> SourceFrame:
        if not self._opened:
            raise SourceError(f"{self.name}: read before open")
        if self.max_frames is not None and self.frames_read >= self.max_frames:
            if not self.loop:
                raise SourceEnded(f"{self.name}: frame budget of {self.max_frames} reached")
            self._rewind()
        if self._video is None or self._in_scene >= len(self._video):
            self._video = self._next_scene()
            self._in_scene = 0
        i = self._in_scene
        image = self._video.frame(i)
        truth = self._video.truth_at(i)
        meta: dict[str, object] = {
            "scene": self._scene_index,
            "scene_frame": i,
            "frame": self.frames_read,
        }
        self._in_scene += 1
        self.frames_read += 1
        if self.realtime:
            self._pacer.wait()
        return SourceFrame(image=image, truth=truth, meta=meta)

    def close(self) -> None:
        """Stop the worker; the position in the stream is kept for a later ``open``."""
        self._opened = False
        if self._pool is not None:
            # A scene being built cannot be interrupted; forget it and let it finish.
            self._drop_upcoming()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def parse_spec(spec: str) -> tuple[int, int | None]:
    """``""`` / ``"7"`` / ``"7?frames=300"`` -> (seed, frame budget or None)."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(
            f"phantom spec: expected SEED (a non-negative integer), optionally followed by "
            f"?frames=N, got {spec!r}"
        )
    frames = match["frames"]
    return int(match["seed"] or 0), (int(frames) if frames is not None else None)


def open_phantom(spec: str, options: SourceOptions) -> PhantomSource:
    """Entry point of the ``phantom`` scheme in ``luvnet.sources``."""
    seed, frames = parse_spec(spec)
    size = options.size or NATIVE_SIZE
    return PhantomSource(
        seed=seed,
        size=(int(size[0]), int(size[1])),
        fps=float(options.fps or DEFAULT_FPS),
        realtime=options.realtime,
        max_frames=frames,
        loop=options.loop,
    )
