"""A tiny RTSP server on loopback for the network-source tests; run by the SYSTEM python.

GStreamer's RTSP server comes from the distribution (python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-base and -good), not from PyPI, so the project's virtual environment
cannot import it; tests/streamer/test_network_sources.py starts this file with /usr/bin/python3.

Usage: ``python3 rtsp_server.py`` serves a live 160x120 30 fps MJPEG test picture at
``rtsp://127.0.0.1:PORT/test`` and prints ``ready PORT`` once bound (the port is the kernel's
choice, so parallel runs never collide). Prints ``missing: WHAT`` and exits 3 when a package
is absent. Runs until killed.
"""

from __future__ import annotations

import sys

ELEMENTS = ("videotestsrc", "videoconvert", "jpegenc", "rtpjpegpay")
# rtpjpegpay takes only 4:2:0 JPEG, hence the I420 caps before the encoder.
LAUNCH = (
    "( videotestsrc is-live=true pattern=ball ! videoconvert"
    " ! video/x-raw,width=160,height=120,framerate=30/1,format=I420"
    " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)


def main() -> int:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as err:
        print(f"missing: python3-gi or gir1.2-gst-rtsp-server-1.0 ({err})", flush=True)
        return 3
    Gst.init(None)
    absent = [name for name in ELEMENTS if Gst.ElementFactory.find(name) is None]
    if absent:
        print(f"missing: GStreamer elements {', '.join(absent)}", flush=True)
        return 3
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")  # any free port; reported below
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    factory.set_shared(True)  # one pipeline for every client (the stream reconnects)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print("missing: could not bind a port on 127.0.0.1", flush=True)
        return 3
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
