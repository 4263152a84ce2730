"""Choose a frame source by URI through the ``luvnet.sources`` entry-point group.

Our own sources register in that group exactly as third-party ones do; the table below only
backs it up when luvnet runs from a source tree without being installed. A plugin that fails
to load is logged and skipped, never fatal.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.frame_source import FrameSource, SourceOptions

log = logging.getLogger(__name__)

SourceFactory = Callable[[str, SourceOptions], FrameSource]
ENTRY_POINT_GROUP = "luvnet.sources"
BUILTIN: dict[str, str] = {
    "phantom": "luvnet.plugins.phantom.source:open_phantom",
    "file": "luvnet.plugins.sources.capture:open_file",
    "device": "luvnet.plugins.sources.capture:open_device",
    "rtsp": "luvnet.plugins.sources.capture:open_network",
    "http": "luvnet.plugins.sources.capture:open_network",
    "https": "luvnet.plugins.sources.capture:open_network",
    "udp": "luvnet.plugins.sources.capture:open_network",
}
# Schemes whose factory receives the whole URI (the URL is the spec).
_URL_SCHEMES = ("rtsp", "http", "https", "udp")


def _load(target: str) -> SourceFactory:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_sources() -> dict[str, SourceFactory]:
    """Scheme -> factory: built-ins, overridden by installed entry points that load."""
    factories: dict[str, SourceFactory] = {}
    for scheme, target in BUILTIN.items():
        factories[scheme] = _load(target) if scheme != "phantom" else _lazy(target)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factories[entry.name] = entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not stop the stream
            log.warning("source plugin %r skipped: %s", entry.name, err)
    return factories


def _lazy(target: str) -> SourceFactory:
    def factory(spec: str, options: SourceOptions) -> FrameSource:
        return _load(target)(spec, options)

    return factory


def split_uri(uri: str) -> tuple[str, str]:
    """``phantom:7`` -> (phantom, 7); ``/dev/video0`` -> (device, 0); a path -> (file, path)."""
    if uri.startswith("/dev/video"):
        return "device", uri.removeprefix("/dev/video")
    scheme, sep, rest = uri.partition(":")
    if sep and scheme in _URL_SCHEMES:
        return scheme, uri
    if sep and scheme.isidentifier() and len(scheme) > 1:
        return scheme, rest
    if Path(uri).suffix:
        return "file", uri
    return uri, ""


def open_source(uri: str, options: SourceOptions | None = None) -> FrameSource:
    """The source for ``uri`` (not yet opened: the grabber opens it, and reopens on failure)."""
    scheme, spec = split_uri(uri)
    factories = available_sources()
    if scheme not in factories:
        raise LuvnetError(
            f"--source {uri!r}: unknown scheme {scheme!r}; expected one of "
            f"{', '.join(sorted(factories))} (e.g. phantom:7, file:scan.mp4, device:0)"
        )
    try:
        return factories[scheme](spec, options or SourceOptions())
    except (ValueError, TypeError) as err:
        raise LuvnetError(f"--source {uri!r}: {err}") from err
