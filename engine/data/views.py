"""Random views of letterboxed grey frames: zoom, shift, rotation, flip, gain, gamma, noise.

One implementation for both users: :func:`~luvnet.engine.training.pretrain.augment_views`
draws a view per frame (SimCLR's positive pairs), :class:`~luvnet.engine.data.clips.ClipAugment`
one view per clip, the same for all its frames (``luvnet train --augment-zoom/--augment-jitter``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from luvnet.engine.errors import LuvnetError


def check_view_range(max_zoom: float, jitter: float, names: tuple[str, str]) -> None:
    """The views' two settings, as ``luvnet train`` and :class:`ViewParams` take them.

    Raises:
        LuvnetError: ``max_zoom`` is not a finite number >= 1 or ``jitter`` not in [0, 1),
            naming it by ``names`` (zoom's, jitter's).
    """
    if not (math.isfinite(max_zoom) and max_zoom >= 1.0):
        raise LuvnetError(
            f"{names[0]}: expected a finite magnification >= 1 (1 = none), got {max_zoom}"
        )
    if not 0.0 <= jitter < 1.0:
        raise LuvnetError(f"{names[1]}: expected a number in [0, 1) (0 = none), got {jitter}")


@dataclass(frozen=True)
class ViewParams:
    """One view per row, the tensors float32 [N]: ``zoom`` <= 1 (the share of the canvas's
    width shown), ``angle`` radians, ``flip`` ±1 (-1 mirrors left-right), ``shift_x``/``shift_y``
    in the canvas's half-widths, ``gain`` and ``gamma`` on grey / 255; the noise's sd is drawn
    U(0, ``noise_max``) grey levels by :func:`apply_views`, once for all rows when ``shared``
    (a clip's frames) and per row otherwise."""

    zoom: torch.Tensor
    angle: torch.Tensor
    flip: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor
    gain: torch.Tensor
    gamma: torch.Tensor
    noise_max: float
    shared: bool = False

    @classmethod
    def draw(
        cls,
        n: int,
        generator: torch.Generator,
        *,
        max_zoom: float,
        jitter: float,
        max_degrees: float = 10.0,
        flip: bool = True,
    ) -> ViewParams:
        """``n`` independent views: magnification U(1, ``max_zoom``) with a shift that keeps
        the view inside the canvas, rotation U(±``max_degrees``), a left-right flip with
        p 0.5 (when ``flip``), gain U(1 ± j), gamma U(1 - 0.75 j, 1 + j) and noise sd up to
        20 j grey levels for ``jitter`` j. Every draw is made whatever the values, so the same
        generator gives the same geometry for any ``jitter``.

        Raises:
            LuvnetError: ``max_zoom`` is not a finite number >= 1 or ``jitter`` not in [0, 1).
        """
        check_view_range(max_zoom, jitter, ("max_zoom", "jitter"))

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        zoom = 1.0 / uniform(1.0, max_zoom)
        angle = uniform(-max_degrees, max_degrees) * math.pi / 180.0
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        shift_x, shift_y = uniform(-1.0, 1.0) * (1 - zoom), uniform(-1.0, 1.0) * (1 - zoom)
        gain, gamma = uniform(1 - jitter, 1 + jitter), uniform(1 - 0.75 * jitter, 1 + jitter)
        return cls(
            zoom=zoom,
            angle=angle,
            flip=mirror if flip else torch.ones(n),
            shift_x=shift_x,
            shift_y=shift_y,
            gain=gain,
            gamma=gamma,
            noise_max=20 * jitter,
        )

    def repeat(self, count: int) -> ViewParams:
        """This one view for ``count`` frames (a clip's frames share their view and noise sd).

        Raises:
            LuvnetError: this is not one view.
        """
        if self.zoom.shape != (1,):
            raise LuvnetError(f"views: expected one view to repeat, got {self.zoom.shape[0]}")
        tensors = {k: v.expand(count) for k, v in vars(self).items() if torch.is_tensor(v)}
        return ViewParams(**tensors, noise_max=self.noise_max, shared=True)


def apply_views(
    frames: torch.Tensor, views: ViewParams, generator: torch.Generator
) -> torch.Tensor:
    """Frame i seen through view i: the affine warp (bilinear, black outside the canvas), then
    gamma and gain on grey / 255, then Gaussian noise on the pixels that are not black, so the
    letterbox and the fan's corners stay black as in every real frame.

    Args:
        frames: uint8 [N, S, S] letterboxed grey frames (the frame cache's).
        views: N views (:meth:`ViewParams.draw`).
        generator: CPU generator of the noise.

    Returns:
        uint8 [N, S, S].

    Raises:
        LuvnetError: ``frames`` is not uint8 [N, S, S] or the views are not N.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 3:
        raise LuvnetError(
            f"frames: expected uint8 [N, S, S], got {frames.dtype} {tuple(frames.shape)}"
        )
    n = frames.shape[0]
    if views.zoom.shape != (n,):
        raise LuvnetError(f"views: expected {n}, one per frame, got {tuple(views.zoom.shape)}")
    cos, sin = torch.cos(views.angle) * views.zoom, torch.sin(views.angle) * views.zoom
    theta = torch.stack(
        [
            torch.stack([cos * views.flip, -sin, views.shift_x], 1),
            torch.stack([sin * views.flip, cos, views.shift_y], 1),
        ],
        1,
    )
    grey = frames.to(torch.float32).unsqueeze(1) / 255.0
    grid = F.affine_grid(theta, list(grey.shape), align_corners=False)
    grey = F.grid_sample(grey, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    grey = grey.clamp(0.0, 1.0).pow(views.gamma.view(n, 1, 1, 1)) * views.gain.view(n, 1, 1, 1)
    grey = grey * 255.0
    noise = torch.randn(grey.shape, generator=generator)  # drawn before its sd, as it always was
    sd = views.noise_max * torch.rand(1 if views.shared else n, generator=generator)
    noise = noise * sd.expand(n).view(n, 1, 1, 1)
    grey = torch.where(grey > 0, grey + noise, grey)  # the letterbox stays black
    return grey.squeeze(1).round().clamp(0, 255).to(torch.uint8)
