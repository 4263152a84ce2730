"""Every video of a run tried once, up front: all unreadable ones named together, or skipped.

``luvnet train`` and ``luvnet evaluate`` call :func:`readable_rows` on the manifest rows they
will use before any clip is cut. It decodes each video through the
:class:`~luvnet.engine.data.frame_cache.FrameCache` (so the work is not repeated: the clip
datasets built next read the same cache files) and collects the
:class:`~luvnet.engine.errors.LuvnetError` of each video that cannot be read. Then either

* one :class:`UnreadableVideos` error lists them all (``2 of 5 videos ... are unreadable``,
  one ``video: reason`` line each, and the ``--skip-unreadable`` hint), or
* with ``skip=True`` each is logged as a warning and left out, and the caller records the
  :class:`SkippedVideo` list (metrics.json ``"skipped_videos"``, checkpoint provenance).

Videos are named as the manifest gives them: relative to the manifest's folder (absolute
when the file lies outside it). Nothing else about a row (its patient) is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from luvnet.engine.data.frame_cache import FrameCache
from luvnet.engine.data.manifest import ManifestRow
from luvnet.engine.data.timing import Timing
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PreprocessConfig

log = logging.getLogger(__name__)

SKIP_HINT = "--skip-unreadable goes on without them and records which were skipped and why"


class UnreadableVideos(LuvnetError):
    """Some videos of a run cannot be read; the message lists every one of them."""

    def __init__(self, skipped: Sequence[SkippedVideo], total: int, manifest: Path) -> None:
        self.skipped = list(skipped)
        lines = [
            f"{len(self.skipped)} of {total} videos in {manifest} are unreadable:",
            *(f"  {s.video}: {s.reason}" for s in self.skipped),
            SKIP_HINT,
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class SkippedVideo:
    """A video left out of a run: its path as the manifest gives it, and why (``path``, the
    resolved file, is for matching rows and is never recorded)."""

    video: str
    reason: str
    path: Path

    def to_dict(self) -> dict[str, str]:
        return {"video": self.video, "reason": self.reason}


def manifest_name(video: Path, manifest: Path) -> str:
    """``video`` relative to the manifest's folder (POSIX), or absolute when outside it."""
    root = manifest.resolve().parent
    return video.relative_to(root).as_posix() if video.is_relative_to(root) else str(video)


def readable_rows(
    rows: Sequence[ManifestRow],
    preprocess: PreprocessConfig,
    cache_dir: str | Path,
    manifest: Path,
    *,
    skip: bool,
    quiet: bool = False,
    timing: Timing | None = None,
) -> tuple[list[ManifestRow], list[SkippedVideo]]:
    """The rows whose videos decode, and the skipped ones with their reasons.

    Every video is tried (and cached) before anything is decided, so one call names all the
    unreadable ones. ``quiet`` leaves out the warnings (processes other than the first under
    torchrun, which would repeat them). ``timing``: the decimation the clips will use (the
    cache entries are built for it).

    Raises:
        UnreadableVideos: any video cannot be read and ``skip`` is False; lists every one.
    """
    cache = FrameCache(cache_dir, preprocess, timing=timing)
    good: list[ManifestRow] = []
    skipped: list[SkippedVideo] = []
    for row in rows:
        reason = _try(cache, row.video)
        if reason is None:
            good.append(row)
        else:
            skipped.append(SkippedVideo(manifest_name(row.video, manifest), reason, row.video))
    if skipped and not skip:
        raise UnreadableVideos(skipped, len(rows), manifest)
    if not quiet:
        for item in skipped:
            log.warning("skipped unreadable video %s: %s", item.video, item.reason)
    return good, skipped


def _try(cache: FrameCache, video: Path) -> str | None:
    """None when ``video`` decodes (now cached), else the reason on one line."""
    try:
        cache.load(video)
    except LuvnetError as err:
        return _reason(str(err), video)
    except OSError as err:  # e.g. no permission to read the file
        return f"cannot be read ({err.strerror or err})"
    return None


def _reason(message: str, video: Path) -> str:
    # The reader's messages start with the file's path; the list names the file already.
    for prefix in (f"{video}: ", f"{video.resolve()}: "):
        message = message.removeprefix(prefix)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
