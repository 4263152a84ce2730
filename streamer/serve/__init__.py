"""``luvnet serve``: many streams, one encoder deployment on Ray Serve (docs/serve.md).

The encoder (frame -> embedding) is a Ray Serve deployment that batches frames across all
streams (:mod:`.encoder`); the per-stream work (grab, preprocess, embedding window, head,
publish) runs in the driver process, one thread per stream, on one ZeroMQ socket
(:mod:`.driver`); :mod:`.cluster` starts or joins the Ray cluster and removes what it started.
"""
