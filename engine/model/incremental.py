"""Exact incremental head for streaming: one new frame embedding in, the window's logits out.

BatchNorm (eval) and ReLU act per time step, so the temporal Conv1d can be assembled from
cached per-frame products (docs/model.md, "One head for training, evaluation and the stream"). For
each frame ``t`` we cache its ``k`` tap products ``W_j h_t`` (one [k*D, D] x [D] multiply: exactly
the new frame's share of the convolution; ``luvnet serve`` computes them for a whole request
of frames from many streams at once, :func:`tap_products`). A conv output position ``p`` is
the sum of the taps of the frames within ``k // 2`` of it; when the window slides, only
positions near its two edges change, and those are re-summed from cached taps (additions
only, no drift from add/subtract).

Variants without a temporal branch have nothing to cache beyond the embeddings, so their
state reruns the (cheap) head over the window.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from luvnet.engine.model.heads import LUVNetHead
from luvnet.engine.model.network import LUVNet

# One tap matrix per conv (and weight version), shared by every stream's state in a process:
# `luvnet serve` holds one head state per stream, and 8 copies of [k*D, D] (17 MB each for
# the demo model) would only spill the CPU's cache.
_TAP_MATRICES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _tap_matrix(conv: torch.nn.Conv1d) -> torch.Tensor:
    """The conv's weight [D_out, D_in, k] as [k*D_out, D_in], row block j = W[:, :, j].

    Stored column-major (a transposed view of a contiguous [D_in, k*D_out]): the matrix-vector
    product of one new frame then reads the weights in the order the CPU's BLAS streams them
    fastest (0.5 ms against 1.3 ms for the row-major copy on one core of the 2-core dev CPU,
    demo model, bench/RESULTS.md); the products are the same to float rounding.
    """
    weight = conv.weight.detach()
    version = weight._version
    cached = _TAP_MATRICES.get(conv)
    if cached is not None and cached[0] == version:
        matrix = cached[1]
        if matrix.device == weight.device and matrix.dtype == weight.dtype:
            return matrix
    k = weight.shape[2]
    matrix = weight.permute(2, 0, 1).reshape(k * weight.shape[0], -1).T.contiguous().T
    _TAP_MATRICES[conv] = (version, matrix)
    return matrix


@torch.inference_mode()
def tap_products(model: LUVNet, embeddings: torch.Tensor) -> torch.Tensor | None:
    """Each frame's share of the temporal Conv1d: embeddings [B, D] -> taps [B, k, D_out] in
    one product, or None when the model's head has no temporal branch.

    What :meth:`IncrementalHead.push` computes per frame, for frames of many streams at once:
    the [k*D, D] weights (17 MB for the demo model) are read once per batch instead of once
    per frame (``luvnet serve``, where a batch of embeddings comes back from the encoder).
    """
    head = model.clip_head
    if not isinstance(head, LUVNetHead):
        return None
    products = embeddings @ _tap_matrix(head.temporal.conv).T
    return products.reshape(len(embeddings), head.temporal.kernel_size, -1)


class EmbeddingWindow:
    """The last ``length`` embeddings in a preallocated ring on one device.

    Every embedding is written twice, at slot ``i % length`` and ``length`` rows further, so
    that the window oldest first is always one contiguous slice of the ring: a view, with no
    index tensor to build and no gather (on CUDA an index list is a host-to-device copy).
    """

    def __init__(self, length: int, embed_dim: int, *, device: torch.device, dtype: torch.dtype):
        self.length = length
        self.ring = torch.zeros(2 * length, embed_dim, device=device, dtype=dtype)
        self.count = 0  # frames ever pushed; the newest has absolute index count - 1

    @property
    def fill(self) -> int:
        return min(self.count, self.length)

    def push(self, emb: torch.Tensor) -> int:
        index = self.count
        slot = index % self.length
        self.ring[slot] = emb
        self.ring[slot + self.length] = emb
        self.count += 1
        return index

    @property
    def start(self) -> int:
        """Ring slot of the window's oldest frame (0 until the window has wrapped)."""
        return self.count % self.length if self.count > self.length else 0

    def padded(self) -> torch.Tensor:
        """[length, D] view: the window oldest first in its first ``fill`` rows; the rows
        after them (before the window fills) hold zeros or frames from before a reset, which
        a mask must hide."""
        return self.ring[self.start : self.start + self.length]

    def ordered(self) -> torch.Tensor:
        """Window contents oldest first: a [fill, D] view."""
        return self.padded()[: self.fill]

    def reset(self) -> None:
        self.count = 0


@dataclass(frozen=True)
class _Plan:
    """How one frame's changed conv positions are summed from cached taps."""

    rows: torch.Tensor  # [n] ring slots of the changed positions
    slots: torch.Tensor  # [n, k] ring slot of the frame each tap multiplies
    taps: torch.Tensor  # [n, k] tap index
    weights: torch.Tensor  # [n, k, 1] 1 where that frame is in the window, else 0


class IncrementalHead:
    """Feeds one embedding at a time; returns what ``model.head`` gives on the current window.

    ``push(emb [D], taps [k, D_out] | None) -> (logits [P], attention [P, fill, N_a])``
    (``taps``: the frame's tap products from :func:`tap_products`, else computed here). The
    window holds at most
    ``model.config.clip_length`` frames; before it is full it holds every frame so far,
    which equals ``head`` over the shorter clip (or over the padded clip with its mask).
    """

    def __init__(self, model: LUVNet, *, length: int | None = None) -> None:
        if model.training:
            raise ValueError("IncrementalHead needs the model in eval mode (model.eval())")
        self.model = model
        param = next(model.parameters())
        self.length = length or model.config.clip_length
        self.window = EmbeddingWindow(
            self.length, model.embed_dim, device=param.device, dtype=param.dtype
        )
        head = model.clip_head
        self.temporal = head.temporal if isinstance(head, LUVNetHead) else None
        if self.temporal is not None:
            k = self.temporal.kernel_size
            weight = self.temporal.conv.weight.detach()  # [D_out, D_in, k]
            # Row block j of tap_matrix is W[:, :, j]: taps = tap_matrix @ h -> [k, D_out].
            self.tap_matrix = _tap_matrix(self.temporal.conv)
            self.taps = torch.zeros(
                self.length, k, weight.shape[0], device=param.device, dtype=param.dtype
            )
            # BN + ReLU of each conv position, at ring slot p % length and length rows
            # further (as in EmbeddingWindow): the window's positions are one slice.
            self.positions = torch.zeros(
                2 * self.length, weight.shape[0], device=param.device, dtype=param.dtype
            )
            self._plans: dict[tuple[int, bool], _Plan] = {}

    @property
    def fill(self) -> int:
        return self.window.fill

    def reset(self) -> None:
        """Forget the window (e.g. after the source reconnects or the sector moves)."""
        self.window.reset()

    @torch.inference_mode()
    def push(
        self, emb: torch.Tensor, taps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``taps`` [k, D_out]: the frame's tap products when computed already, batched with
        other streams' frames (:func:`tap_products`); None computes them here."""
        index = self.window.push(emb)
        if self.temporal is None:
            window = self.window.ordered().unsqueeze(0)
            logits, attention = self.model.head(window)
            return logits[0], attention[0]
        return self._push_temporal(index, emb, taps)

    def _push_temporal(
        self, index: int, emb: torch.Tensor, taps: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        temporal = self.temporal_update(index, emb, taps)
        head = self.model.clip_head
        assert isinstance(head, LUVNetHead)  # a temporal branch exists only in LUV-Net's head
        window = self.window.ordered().unsqueeze(0)
        mask = torch.ones(window.shape[:2], dtype=torch.bool, device=window.device)
        pooled, attention = head.attention(window, mask)
        logits = head.classify(temporal, pooled)
        return logits[0], attention[0]

    def temporal_update(
        self, index: int, emb: torch.Tensor, taps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The temporal branch's output [1, D] after frame ``index`` (already in the window);
        ``taps`` [k, D_out] as in :meth:`push`.

        Public so ``luvnet bench`` can time it against rerunning the branch over the window.
        """
        temporal = self.temporal
        assert temporal is not None  # push() takes this path only with a temporal branch
        k = temporal.kernel_size
        if taps is None:
            taps = (self.tap_matrix @ emb).reshape(k, -1)
        elif taps.shape != self.taps.shape[1:]:  # [D_out] would broadcast over the k taps
            raise ValueError(
                f"taps: expected {tuple(self.taps.shape[1:])}, got {tuple(taps.shape)}"
            )
        self.taps[index % self.length] = taps
        plan = self._plan(index)
        conv = (self.taps[plan.slots, plan.taps] * plan.weights).sum(1)  # [n, D]
        # BN and ReLU act per position, so only the changed positions are redone.
        out = temporal.positionwise(conv)
        self.positions[plan.rows] = out
        self.positions[plan.rows + self.length] = out
        start, fill = self.window.start, self.window.fill  # the same ring layout
        return self.positions[start : start + fill].mean(0, keepdim=True)

    def _plan(self, index: int) -> _Plan:
        """Which conv positions frame ``index`` changed and how to sum them from cached taps.

        Depends only on (index mod length, whether a frame left: then the window is full,
        else it holds frames 0..index), so a stream builds at most 2 * length plans (no
        per-frame Python lists or host-to-device copies).
        """
        key = (index % self.length, index >= self.length)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._build_plan(index, self.window.fill)
        return plan

    def _build_plan(self, index: int, fill: int) -> _Plan:
        # Tap j of the conv multiplies input p + j - pad, so position p takes tap j of frame
        # t = p + j - pad when t is in the window; outside it the conv's zero padding
        # contributes nothing.
        assert self.temporal is not None
        k = self.temporal.kernel_size
        pad = k // 2
        first = index - fill + 1  # oldest absolute index in the window
        # Positions whose neighbourhood changed: near the new frame, and just after the
        # frame that left (index - length), if one did.
        changed = set(range(max(first, index - pad), index + 1))
        if index >= self.length:
            changed.update(range(first, min(first + pad, index + 1)))
        positions = sorted(changed)
        frames = [[p + j - pad for j in range(k)] for p in positions]
        valid = [[first <= t <= index for t in row] for row in frames]
        device = self.taps.device
        return _Plan(
            rows=torch.tensor([p % self.length for p in positions], device=device),
            slots=torch.tensor([[t % self.length for t in row] for row in frames], device=device),
            taps=torch.arange(k, device=device).expand(len(positions), k),
            weights=torch.tensor(valid, dtype=self.taps.dtype, device=device).unsqueeze(-1),
        )
