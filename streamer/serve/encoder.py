"""The encoder as a Ray Serve deployment, and the driver's view of it as a :class:`Backend`.

:class:`EncoderReplica` loads the checkpoint's model once per replica and embeds frames in
batches gathered across every stream (``@serve.batch``): frame [3, S, S] in, embedding [D]
out. :func:`remote_backend` wraps a handle to the deployment as the ``Backend`` the stream
pipeline already takes (``compose_stream(backend=...)``): its ``encode`` sends one frame and
waits for its embedding, its ``head`` is the local model's.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import serve

from luvnet.engine.backends import Backend, BackendInfo, create_backend
from luvnet.engine.backends.base import PRECISIONS
from luvnet.engine.model.checkpoint import Checkpoint
from luvnet.engine.runtime import resolve_device, set_threads


class EncoderReplica:
    """One replica: the model on its device, embedding whole batches of frames.

    ``__call__(frame [3, S, S] float32/float16 ndarray) -> (embedding [D] ndarray in the
    backend's dtype, size of the batch it was part of, this replica's Ray node id)``.
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
        del model, loaded  # the backend holds its own copy
        self.node_id = ray.get_runtime_context().get_node_id()
        self.frames = 0
        self.batches = 0
        batcher: Any = self._embed_batch  # serve.batch's wrapper: its settings, per replica
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_ms / 1000)

    async def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, int, str]:
        return await self._embed_batch(frame)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _embed_batch(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, int, str]]:
        # The model runs off the event loop, which meanwhile gathers the next batch.
        embeddings = await asyncio.to_thread(self._encode, frames)
        self.frames += len(frames)
        self.batches += 1
        return [(emb, len(frames), self.node_id) for emb in embeddings]

    @torch.inference_mode()
    def _encode(self, frames: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(np.stack(frames))
        return self.backend.encode_many(batch).cpu().numpy()

    def stats(self) -> dict[str, Any]:
        """Frames and batches so far, where this replica runs (for status and tests)."""
        return {
            "frames": self.frames,
            "batches": self.batches,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "backend": self.backend.info.summary(),
        }


class LostFrame(RuntimeError):
    """The encoder call of one frame failed or timed out (a replica died, the cluster is
    gone): the frame is skipped and the stream's window restarts."""


@dataclass
class BatchTally:
    """What the driver saw of the encoder's batching, over every frame of every stream."""

    frames: int = 0
    batches: float = 0.0  # sum of 1 / batch size over frames: the number of batches
    nodes: set[str] | None = None

    def add(self, batch_size: int, node_id: str) -> None:
        self.frames += 1
        self.batches += 1.0 / batch_size
        if self.nodes is None:
            self.nodes = set()
        self.nodes.add(node_id)

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


def remote_backend(
    handle: Any,
    checkpoint: Checkpoint,
    *,
    device: torch.device,
    precision: str,
    backend_name: str,
    timeout_s: float,
    tally: BatchTally,
    on_lost: Callable[[], None] | None = None,
) -> tuple[Backend, Callable[[Callable[[], None]], None]]:
    """A :class:`Backend` whose ``encode`` is the deployment behind ``handle``.

    ``encode([1, 3, S, S]) -> [1, D]`` in the precision's dtype on ``device``; a failed or
    timed-out call raises :class:`LostFrame` after calling the ``on_lost`` callback (set with
    the returned setter once the stream's head exists), so the stream restarts its window
    rather than score a window with a hole. ``head`` is ``checkpoint``'s model, local.
    """
    dtype = PRECISIONS[precision]
    model = checkpoint.model
    lost: list[Callable[[], None]] = [on_lost] if on_lost is not None else []
    lock = threading.Lock()

    def encode(frames: torch.Tensor) -> torch.Tensor:
        frame = frames[0].cpu().numpy()
        try:
            emb, batch_size, node_id = handle.remote(frame).result(timeout_s=timeout_s)
        except Exception as err:  # noqa: BLE001 - any failure of the remote call loses the frame
            for callback in lost:
                callback()
            raise LostFrame(f"encoder call failed ({type(err).__name__}): {err}"[:300]) from None
        with lock:
            tally.add(batch_size, node_id)
        return torch.as_tensor(emb.copy()).to(device, dtype).unsqueeze(0)

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

    return Backend(info, encode, head, device=device, dtype=dtype), set_on_lost
