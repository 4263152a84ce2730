"""What every backend is: two fixed-shape callables plus the facts about how they were made.

``encode(frames [1, 3, S, S]) -> embedding [1, D]`` and
``head(window [1, L, D], mask [1, L]) -> (logits [1, P], attention [1, P, L, N_a])``.
Shapes are fixed when the backend is created (compiled engines are built for them), so
both calls check them and name the expected shape; dtype and device are converted if
needed (a no-op when the caller already matches :attr:`Backend.dtype` and the device).
Logits and attention always come back as float32; the embedding in the backend's dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16}

EncodeFn = Callable[[torch.Tensor], torch.Tensor]
HeadFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class BackendSpec:
    """What the caller asked for; every loader receives one."""

    device: torch.device
    precision: str
    image_size: int
    window: int
    cache_dir: Path
    inductor_mode: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)


@dataclass(frozen=True)
class Tolerance:
    """Largest accepted max-abs differences from eager fp32."""

    logits: float
    scores: float  # sigmoid(logits)


@dataclass(frozen=True)
class Parity:
    """Max absolute differences from eager fp32 on the fixed input, and the tolerance used."""

    logits: float
    scores: float
    attention: float
    embedding: float  # reported, not enforced: its scale depends on the trunk
    tolerance: Tolerance

    @property
    def ok(self) -> bool:
        # NaN compares False, so a NaN output fails.
        return self.logits <= self.tolerance.logits and self.scores <= self.tolerance.scores

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"parity vs eager fp32: logits {self.logits:.2e} (tol {self.tolerance.logits:.0e}), "
            f"scores {self.scores:.2e} (tol {self.tolerance.scores:.0e}), "
            f"attention {self.attention:.2e}, embedding {self.embedding:.2e}"
        )


@dataclass(frozen=True)
class BackendInfo:
    """Metadata a consumer logs or publishes: what runs, where, how it was verified."""

    name: str
    device: str
    precision: str
    image_size: int
    window: int
    embed_dim: int
    load_s: float = 0.0  # wall time to build/compile/load and warm up
    parity: Parity | None = None  # set by create_backend, for every backend
    reason: str = ""  # set by ``auto``: what it picked and why
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific facts

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["parity"] = self.parity.to_dict() if self.parity else None
        return data

    def summary(self) -> str:
        parity = self.parity.summary() if self.parity else "parity not checked"
        text = f"{self.name} on {self.device} {self.precision}, loaded in {self.load_s:.1f} s, "
        return text + parity + (f"; {self.reason}" if self.reason else "")


class Backend:
    """Fixed-shape ``encode`` and ``head`` over one model on one device."""

    def __init__(
        self,
        info: BackendInfo,
        encode: EncodeFn,
        head: HeadFn,
        *,
        device: torch.device,
        dtype: torch.dtype,
        any_batch: bool = False,
    ) -> None:
        self.info = info
        self.device = device
        self.dtype = dtype
        self.any_batch = any_batch  # ``encode`` takes any batch size (eager), not only 1
        self._encode = encode
        self._head = head
        size = info.image_size
        self._frame_shape = torch.Size((1, 3, size, size))
        self._window_shape = torch.Size((1, info.window, info.embed_dim))
        self._full_mask = torch.ones(1, info.window, dtype=torch.bool, device=device)

    @property
    def name(self) -> str:
        return self.info.name

    def with_info(self, **changes: Any) -> Backend:
        """The same callables with updated metadata (parity figures, auto's reason)."""
        info = dataclasses.replace(self.info, **changes)
        return Backend(
            info,
            self._encode,
            self._head,
            device=self.device,
            dtype=self.dtype,
            any_batch=self.any_batch,
        )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames [1, 3, S, S] -> embedding [1, D] in :attr:`dtype`."""
        if frames.shape != self._frame_shape:
            raise ValueError(
                f"{self.name}.encode: expected frames {tuple(self._frame_shape)}, "
                f"got {tuple(frames.shape)}"
            )
        return self._encode(frames.to(self.device, self.dtype))

    def encode_many(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames [B, 3, S, S] -> embeddings [B, D] in :attr:`dtype`.

        One call when the backend takes any batch (eager); a backend built for batch 1 (a
        compiled one) encodes the frames one at a time. Raises ValueError for another frame
        shape.
        """
        if frames.shape[1:] != self._frame_shape[1:]:
            size = self.info.image_size
            raise ValueError(
                f"{self.name}.encode_many: expected frames (B, 3, {size}, {size}), "
                f"got {tuple(frames.shape)}"
            )
        if self.any_batch:
            return self._encode(frames.to(self.device, self.dtype))
        return torch.cat([self.encode(frame.unsqueeze(0)) for frame in frames])

    def head(
        self, window: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Window [1, L, D], mask [1, L] (True = real; None = all) -> float32 logits, attention."""
        if window.shape != self._window_shape:
            raise ValueError(
                f"{self.name}.head: expected window {tuple(self._window_shape)}, "
                f"got {tuple(window.shape)}"
            )
        if mask is None:
            mask = self._full_mask
        elif mask.shape != self._full_mask.shape:
            raise ValueError(
                f"{self.name}.head: expected mask {tuple(self._full_mask.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        logits, attention = self._head(
            window.to(self.device, self.dtype), mask.to(self.device, torch.bool)
        )
        return logits.float(), attention.float()
