"""The encoder as a Ray Serve deployment, and the driver's view of it as a :class:`Backend`.

:class:`EncoderReplica` loads the checkpoint's model once per replica and embeds frames in
batches gathered across every stream (``@serve.batch``): letterboxed grey frame uint8 [S, S]
in, embedding [D] out (the replica normalises it with the stream's own ``normalize``).
:func:`remote_backend` wraps a handle to the deployment as one stream's encoder: a ``submit``
that sends a frame and returns a claim on its embedding (``compose_stream(submit=...)``), and
the ``Backend`` the stream pipeline takes for its metadata and the local model's ``head``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import serve

from luvnet.engine.backends import Backend, BackendInfo, create_backend
from luvnet.engine.backends.base import PRECISIONS
from luvnet.engine.data.preprocess import normalize
from luvnet.engine.model.checkpoint import Checkpoint
from luvnet.engine.model.incremental import tap_products
from luvnet.engine.model.network import LUVNet
from luvnet.engine.runtime import resolve_device, set_threads
from luvnet.streamer.stages import Claim, Encoded, SubmitFn


def _frame_count(requests: list[np.ndarray]) -> int:
    """A batch's size in frames (a request carries one or more), for ``@serve.batch``."""
    return sum(len(request) for request in requests)


class EncoderReplica:
    """One replica: the model on its device, embedding whole batches of frames.

    ``__call__(frames uint8 [B, S, S] ndarray, letterboxed grey) -> (embeddings [B, D]
    ndarray in the backend's dtype, frames in the encoder call they were part of, this
    replica's Ray node id)``. The replica normalises the frames (the checkpoint's mean, std
    and intensity setting; :func:`~luvnet.engine.data.preprocess.normalize`, as training and
    ``luvnet stream`` do): a frame travels as S*S bytes instead of 12*S*S, so the default 12
    frames at S = 64 fit in one inline Ray message (48 KB; Ray puts arguments over 100 KB into
    its object store). Requests (from one driver or several) are batched up to
    ``max_batch_size`` frames.
    """

    def __init__(
        self,
        checkpoint: str | None,
        backend: str,
        device: str,
        precision: str,
        threads: int,
        max_batch_size: int,
        batch_wait_ms: float,
    ) -> None:
        # Imported here: the Ray worker process loads the stream's checkpoint code lazily.
        from luvnet.streamer.compose import load_stream_checkpoint

        set_threads(threads)
        loaded = load_stream_checkpoint(Path(checkpoint) if checkpoint else None)
        target = resolve_device(device)
        model = loaded.model.to(target).eval()
        self.backend = create_backend(
            backend,
            model,
            device=target,
            precision=precision,
            image_size=loaded.config.preprocess.image_size,
            window=loaded.config.clip_length,
        )
        self.preprocess = loaded.config.preprocess
        del model, loaded  # the backend holds its own copy
        self.node_id = ray.get_runtime_context().get_node_id()
        self.frames = 0
        self.batches = 0
        batcher: Any = self._embed_batch  # serve.batch's wrapper: its settings, per replica
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_ms / 1000)

    async def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, int, str]:
        return await self._embed_batch(frames)

    # The sizes here are placeholders: __init__ sets each replica's from the configuration.
    @serve.batch(max_batch_size=12, batch_wait_timeout_s=0.002, batch_size_fn=_frame_count)
    async def _embed_batch(self, requests: list[np.ndarray]) -> list[tuple[np.ndarray, int, str]]:
        # The model runs off the event loop, which meanwhile gathers the next batch.
        embeddings = await asyncio.to_thread(self._encode, np.concatenate(requests))
        total = len(embeddings)
        self.frames += total
        self.batches += 1
        replies, start = [], 0
        for request in requests:
            replies.append((embeddings[start : start + len(request)], total, self.node_id))
            start += len(request)
        return replies

    @torch.inference_mode()
    def _encode(self, frames: np.ndarray) -> np.ndarray:
        grey = torch.from_numpy(frames).to(self.backend.device)
        normalized = normalize(grey, self.preprocess, self.backend.dtype)
        return self.backend.encode_many(normalized).cpu().numpy()

    def stats(self) -> dict[str, Any]:
        """Frames and batches so far, where this replica runs (for status and tests)."""
        return {
            "frames": self.frames,
            "batches": self.batches,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "backend": self.backend.info.summary(),
            "peak_gpu_mib": (
                torch.cuda.max_memory_allocated(self.backend.device) / 2**20
                if self.backend.device.type == "cuda"
                else None
            ),
        }


class LostFrame(RuntimeError):
    """The encoder call of one frame failed or timed out (a replica died, the cluster is
    gone), or the driver could not use its embedding: the frame is skipped and the stream's
    window restarts."""


@dataclass
class BatchTally:
    """What the driver saw of the encoder's batching, over every frame of every stream."""

    frames: int = 0
    batches: float = 0.0  # sum of 1 / batch size over frames: the number of encoder calls
    nodes: set[str] = field(default_factory=set)

    def add(self, batch_size: int, node_id: str, frames: int = 1) -> None:
        self.frames += frames
        self.batches += frames / batch_size
        self.nodes.add(node_id)

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


@dataclass
class _Pending:
    frame: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    encoded: Encoded | None = None
    error: str | None = None


BatchOutputs = Callable[[np.ndarray], list[Encoded]]  # embeddings [B, D] -> per frame


def batch_outputs(model: LUVNet, *, taps: bool) -> BatchOutputs:
    """What the driver makes of a request's embeddings [B, D] (float ndarray from the replica):
    each frame's :class:`Encoded` on the device and in the dtype of ``model`` (the streams'
    heads), with its temporal tap products when ``taps`` (streams with the incremental head)
    and the model has a temporal branch.

    The tap products of the whole request are one [B, D] x [D, k*D_out] product
    (:func:`~luvnet.engine.model.incremental.tap_products`), not B products of one frame each:
    the weights (17 MB for the demo model) are read once per request.
    """
    param = next(model.parameters())

    def outputs(embeddings: np.ndarray) -> list[Encoded]:
        # A copy: the arrays Ray hands back are read-only.
        batch = torch.tensor(embeddings).to(param.device, param.dtype)
        products = tap_products(model, batch) if taps else None
        if products is None:
            return [Encoded(row) for row in batch]
        return [Encoded(row, tap) for row, tap in zip(batch, products, strict=True)]

    return outputs


class FrameCoalescer:
    """The driver's streams' frames, sent to the deployment as a few multi-frame requests.

    Each Ray Serve request costs milliseconds of CPU on both ends (measured on this 2-core CPU:
    about as much as the demo model's encoder itself), so the driver's streams share requests:
    ``senders`` threads each take up to ``max_batch`` waiting frames (after waiting at most
    ``wait_s`` for more) and send them as one request; ``@serve.batch`` on the replicas then
    batches requests from every sender and every driver. ``submit(frame uint8 [S, S])`` queues a
    frame and returns at once; ``result(pending) -> Encoded`` waits for the frame's output
    (which ``outputs`` makes from the request's embeddings, on the sender thread) and raises
    :class:`LostFrame` when the request failed, took longer than ``timeout_s``, or its
    embeddings could not be used.
    """

    def __init__(
        self,
        handle: Any,
        *,
        max_batch: int,
        wait_s: float,
        timeout_s: float,
        senders: int,
        tally: BatchTally,
        outputs: BatchOutputs,
    ) -> None:
        self.handle = handle
        self.outputs = outputs
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.tally = tally
        self._queue: list[_Pending] = []
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"serve-sender-{i}", daemon=True)
            for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, frame: np.ndarray) -> _Pending:
        pending = _Pending(frame)
        with self._ready:
            if self._closed:
                pending.error = "the encoder connection is closed"
                pending.done.set()
                return pending
            self._queue.append(pending)
            self._ready.notify()
        return pending

    def result(self, pending: _Pending) -> Encoded:
        # From the wait, not the submit: a frame queued behind others gets its full time.
        if not pending.done.wait(self.timeout_s + self.wait_s + 1.0):
            raise LostFrame(f"no embedding within {self.timeout_s:g} s")
        if pending.encoded is None:
            raise LostFrame(pending.error or "encoder call failed")
        return pending.encoded

    def _take(self) -> list[_Pending] | None:
        """Up to ``max_batch`` waiting frames, once one waits (and ``wait_s`` passed for more,
        or the batch is full); None once closed."""
        with self._ready:
            while True:
                while not self._queue and not self._closed:
                    self._ready.wait(0.5)
                if self._closed:
                    return None
                deadline = time.monotonic() + self.wait_s
                while 0 < len(self._queue) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                if self._queue:  # another sender may have taken them meanwhile
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    return batch

    def _send_loop(self) -> None:
        while (batch := self._take()) is not None:
            frames = np.stack([p.frame for p in batch])
            try:
                embeddings, call_size, node_id = self.handle.remote(frames).result(
                    timeout_s=self.timeout_s
                )
            except Exception as err:  # noqa: BLE001 - any failure of the call loses its frames
                _fail(batch, "encoder call failed", err)
                continue
            with self._ready:
                self.tally.add(call_size, node_id, len(batch))
            try:
                pairs = list(zip(batch, self.outputs(embeddings), strict=True))
            except Exception as err:  # noqa: BLE001 - the driver's side: its frames are lost
                _fail(batch, "the request's embeddings could not be used", err)
                continue
            for pending, output in pairs:
                pending.encoded = output
                pending.done.set()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            for pending in self._queue:
                pending.error = "the stream was stopped"
                pending.done.set()
            self._queue.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(self.timeout_s + 1.0)


def _fail(batch: list[_Pending], what: str, err: Exception) -> None:
    """Every frame of ``batch`` lost, with one line saying why."""
    first = (str(err).strip().splitlines() or [""])[0]  # Ray's texts run to lines
    text = f"{what} ({type(err).__name__}): {first}"[:300]
    for pending in batch:
        pending.error = text
        pending.done.set()


@dataclass
class RemoteEncoder:
    """One stream's view of the deployment (:func:`remote_backend`)."""

    backend: Backend  # encode: the deployment, waited for; head: the local model's
    submit: SubmitFn  # a frame's encoder call started now, its embedding claimed later
    set_on_lost: Callable[[Callable[[], None]], None]  # what a lost frame calls (head reset)


def remote_backend(
    coalescer: FrameCoalescer,
    checkpoint: Checkpoint,
    *,
    device: torch.device,
    precision: str,
    backend_name: str,
) -> RemoteEncoder:
    """The deployment, through ``coalescer``, as one stream's encoder.

    ``submit(uint8 [1, S, S]) -> claim`` sends a letterboxed grey frame (the replica
    normalises it: ``compose_stream(encoder_normalizes=True)``) and returns a claim that waits
    for its :class:`Encoded` (the coalescer's ``outputs``), so the stream can preprocess
    its next frame meanwhile; ``EmbedStage`` sends every frame this way, one at a time too. A
    lost frame raises :class:`LostFrame` from the claim after calling the on-lost callback
    (set once the stream's head exists), so the stream restarts its window rather than score
    a window with a hole. The returned :class:`Backend` carries the metadata and ``head``
    (``checkpoint``'s model, local); its ``encode`` refuses (the frames go through ``submit``).
    """
    dtype = PRECISIONS[precision]
    model = checkpoint.model
    lost: list[Callable[[], None]] = []

    def claim_of(pending: _Pending) -> Encoded:
        try:
            return coalescer.result(pending)
        except LostFrame:
            for callback in lost:
                callback()
            raise

    def submit(frames: torch.Tensor) -> Claim:
        pending = coalescer.submit(frames[0].cpu().numpy())
        return lambda: claim_of(pending)

    def encode(frames: torch.Tensor) -> torch.Tensor:
        # Backend.encode checks for normalised [1, 3, S, S]; the replicas take grey uint8.
        raise RuntimeError(
            "the remote encoder takes letterboxed uint8 [1, S, S] frames through submit "
            "(compose_stream(submit=..., encoder_normalizes=True)), not Backend.encode"
        )

    @torch.inference_mode()
    def head(window: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.head(window, mask)

    config = checkpoint.config
    info = BackendInfo(
        name=f"serve-{backend_name}",
        device=str(device),
        precision=precision,
        image_size=config.preprocess.image_size,
        window=config.clip_length,
        embed_dim=model.embed_dim,
        reason="encoder batched across streams on Ray Serve",
    )

    def set_on_lost(callback: Callable[[], None]) -> None:
        lost[:] = [callback]

    backend = Backend(info, encode, head, device=device, dtype=dtype)
    return RemoteEncoder(backend, submit, set_on_lost)
