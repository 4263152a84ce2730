"""Pipeline stages (Holoscan-operator style): each a small object, one step per call.

    source --GrabbedFrame--> Preprocess --[1,3,S,S]--> Embed --Encoded [D]--> Head
    --logits, attn--> Postprocess --Scores--> Publish

(``luvnet serve``: Preprocess stops at the letterboxed grey uint8 [1,S,S], which Embed sends to
a replica that normalises it; the driver adds the frame's temporal tap products to its
:class:`Encoded`, computed for a whole request at once.)

Inputs, outputs and parameters are declared in each constructor and ``__call__``; the
wiring lives in :mod:`streamer.pipeline`. No stage knows about another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import torch

from luvnet.engine.data.letterbox import as_tensor
from luvnet.engine.data.preprocess import FramePreprocessor, SectorParams, normalize, to_gray_u8
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.incremental import EmbeddingWindow, IncrementalHead
from luvnet.engine.model.network import LUVNet

HEAD_MODES = ("incremental", "window")
Tag = TypeVar("Tag")

EncodeFn = Callable[[torch.Tensor], torch.Tensor]
HeadFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Encoded(NamedTuple):
    """One frame's encoder output."""

    embedding: torch.Tensor  # [D]
    # [k, D_out]: its temporal tap products when the encoder side computed them, batched
    # across streams (``luvnet serve``, :func:`~luvnet.engine.model.incremental.tap_products`);
    # None: the head computes them.
    taps: torch.Tensor | None = None


Claim = Callable[[], Encoded]  # waits for one frame's encoder output
SubmitFn = Callable[[torch.Tensor], Claim]  # starts one frame's encoder call


class PreprocessStage(Generic[Tag]):
    """Raw image -> normalised [1, 3, S, S] on the engine's device (training's own functions).

    With ``normalized=False`` it stops one step short, at the letterboxed grey frame uint8
    [1, S, S]: for an encoder that normalises on its side with the same
    :func:`~luvnet.engine.data.preprocess.normalize` (``luvnet serve``'s replicas, where a
    frame then crosses the process boundary as S*S bytes, not 12*S*S).

    Grey conversion and the sector calibration run on the CPU; the letterbox runs where the
    engine is: on CUDA the grey frame goes up through a pinned buffer and is cropped and
    resized there (on the H100 the CPU resize of a 924x1232 frame was the stream's largest
    and noisiest stage, p50 2.1 / p99 4.1 ms).

    :meth:`push` returns the frames ready now (none while the sector calibration holds them,
    all of them in order once it locks: :class:`FramePreprocessor`), each with a
    ``box_version`` that changes when the crop box or the frame size changes, so the head can
    restart its window instead of mixing differently cropped frames; ``size_changed`` is
    ((H, W) before, (H, W) now) on the frame where the size changed.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        box: tuple[int, int, int, int] | None = None,
        calibrate_frames: int | None = None,
        normalized: bool = True,
    ) -> None:
        self.config = config.preprocess
        self.normalized = normalized
        self.device = device
        self.dtype = dtype
        sector = SectorParams()
        self.preprocessor: FramePreprocessor[Tag] = FramePreprocessor(
            config.preprocess,
            box,
            calibrate_frames=sector.first_frames if calibrate_frames is None else calibrate_frames,
            sector=sector,
        )
        self._pin = device.type == "cuda"
        # Pinned staging buffer, reallocated only when the frame size changes: one
        # host-to-device copy per frame, no allocation.
        self._host = torch.empty((0, 0), dtype=torch.uint8)
        self._copied: torch.cuda.Event | None = None
        self._last: tuple[tuple[int, int, int, int] | None, tuple[int, ...]] | None = None
        self.box_version = 0

    def push(
        self, image: np.ndarray, tag: Tag, region: tuple[int, int, int, int] | None = None
    ) -> list[tuple[Tag, torch.Tensor, int]]:
        """(tag, [1, 3, S, S] (uint8 [1, S, S] unless ``normalized``), box_version) of each
        frame ready now, in order; ``region``:
        the imaging region the source declares (a DICOM file's), else None."""
        out = []
        for ready_tag, gray, box in self.preprocessor.push(image, tag, region):
            out.append((ready_tag, self._prepare(gray, box), self.box_version))
        return out

    def flush(self) -> list[tuple[Tag, torch.Tensor, int]]:
        """The frames held for calibration, locked on what there is (the source ended)."""
        return [
            (tag, self._prepare(g, box), self.box_version)
            for tag, g, box in self.preprocessor.flush()
        ]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """One frame with the box in use now, no calibration (a fixed or locked box)."""
        gray = to_gray_u8(image)
        return self._prepare(gray, self.preprocessor.box)

    def _prepare(self, gray: np.ndarray, box: tuple[int, int, int, int] | None) -> torch.Tensor:
        if (box, gray.shape) != self._last:
            self._last = (box, gray.shape)
            self.box_version += 1
        letterboxed = self.preprocessor.letterbox(self._upload(gray), box).unsqueeze(0)
        if not self.normalized:
            return letterboxed
        return normalize(letterboxed, self.config, self.dtype)

    @property
    def size_changed(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        return self.preprocessor.size_changed

    def _upload(self, gray: np.ndarray) -> torch.Tensor:
        if not self._pin:
            return as_tensor(gray).to(self.device)
        if self._copied is not None:
            self._copied.synchronize()  # the last frame's copy has left the pinned buffer
        if self._host.shape != gray.shape:
            self._host = torch.empty(gray.shape, dtype=torch.uint8, pin_memory=True)
        self._host.copy_(as_tensor(gray))
        on_device = self._host.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return on_device


class EmbedStage:
    """[1, 3, S, S] (or what ``submit`` takes) -> :class:`Encoded` (embedding [D]): exactly
    one encoder call per new frame.

    ``submit`` (optional) starts a frame's encoder call and returns a claim that waits for
    its :class:`Encoded` (``luvnet serve``: the frame, uint8 [1, S, S], goes to the batched
    remote encoder while the stream preprocesses the next one); with it, every frame goes
    through ``submit``, one at a time too. Without it, ``encode`` runs here and a claim holds
    an embedding computed at once.
    """

    def __init__(self, encode: EncodeFn, submit: SubmitFn | None = None) -> None:
        self.encode = encode
        self._submit = submit

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        return self.encoded(frame).embedding

    def encoded(self, frame: torch.Tensor) -> Encoded:
        """``frame``'s encoder output, waited for."""
        if self._submit is not None:
            return self._submit(frame)()  # the remote encoder's call
        return Encoded(self.encode(frame)[0])

    def submit(self, frame: torch.Tensor) -> Claim:
        """Start ``frame``'s encoder call; the claim returns its :class:`Encoded` (and raises
        what the call raised)."""
        if self._submit is not None:
            return self._submit(frame)
        encoded = self.encoded(frame)
        return lambda: encoded


class HeadStage:
    """Embedding [D] -> (logits [P], attention [P, L, N_a] zero-padded, fill).

    ``incremental``: the exact incremental temporal state (new frame's share of the Conv1d).
    ``window``: rerun ``head`` over the fixed-shape [1, L, D] ring with a mask (what a compiled
    head wants: one static shape from the first frame on).
    """

    def __init__(self, model: LUVNet, *, mode: str = "incremental", head: HeadFn | None = None):
        if mode not in HEAD_MODES:
            raise ValueError(f"head mode: expected one of {HEAD_MODES}, got {mode!r}")
        self.mode = mode
        self.length = model.config.clip_length
        param = next(model.parameters())
        if mode == "incremental":
            self.state = IncrementalHead(model)
        else:
            self.window = EmbeddingWindow(
                self.length, model.embed_dim, device=param.device, dtype=param.dtype
            )
            self.head = head or model.head
            # masks[f]: [1, L] with the first f frames real; a view per frame, no kernel.
            real = torch.arange(self.length + 1).unsqueeze(1) > torch.arange(self.length)
            self._masks = real.unsqueeze(1).to(param.device)

    @property
    def fill(self) -> int:
        return self.state.fill if self.mode == "incremental" else self.window.fill

    def reset(self) -> None:
        (self.state if self.mode == "incremental" else self.window).reset()

    @torch.inference_mode()
    def __call__(
        self, emb: torch.Tensor, taps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``taps``: the frame's tap products if computed already (:class:`Encoded`); the
        window mode has no use for them."""
        if self.mode == "incremental":
            logits, attention = self.state.push(emb, taps)
        else:
            self.window.push(emb)
            # Oldest first, real frames then masked rows: the layout head() was trained on.
            window = self.window.padded().unsqueeze(0)
            logits, attention = self.head(window, self._masks[self.window.fill])
            logits, attention = logits[0], attention[0]
        fill = self.fill
        if attention.shape[1] < self.length:
            pad = attention.new_zeros(
                attention.shape[0], self.length - attention.shape[1], attention.shape[2]
            )
            attention = torch.cat([attention, pad], dim=1)
        return logits, attention, fill


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # [P] float
    attention: np.ndarray  # [P, L] float16: per-pattern sum over heads (docs/model.md)
    fill: int


class PostprocessStage:
    """Logits -> probabilities; attention -> per-pattern curve over the window (host side)."""

    def __call__(self, logits: torch.Tensor, attention: torch.Tensor, fill: int) -> Scores:
        probabilities = torch.sigmoid(logits.float()).cpu().numpy()
        curve = attention.float().sum(-1).cpu().numpy().astype("<f2")
        return Scores(probabilities=probabilities, attention=curve, fill=fill)
