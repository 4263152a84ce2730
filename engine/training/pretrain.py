"""``luvnet pretrain``: self-supervised contrastive pretraining of a trunk on unlabelled frames.

Method: SimCLR's NT-Xent loss over a projection head (Chen et al., ICML 2020, sections 2.1-2.2),
with the positive pair drawn, as in USCL (Chen et al., MICCAI 2021), from two frames of the
same video at most ``max_offset`` frames apart, each augmented on its own; the other videos of
the batch are the negatives. Labels are never read: only the frames of one fold's *training*
patients are used, so that fold's validation and test patients stay unseen, and the result
feeds ``luvnet train --init OUT --freeze-encoder`` like any checkpoint.

The trunk starts from ``init`` (its config, preprocessing included, is kept, so the output fits
``--init`` of a run with the same ``--backbone``/``--image-size``); frames come from the same
frame cache, sector crop, letterbox and :func:`~luvnet.engine.data.preprocess.normalize` as
training, evaluation and the stream.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luvnet.engine.data.frame_cache import CachedVideo, FrameCache, default_cache_dir
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.preprocess import normalize
from luvnet.engine.data.split_record import fold_record, new_salt
from luvnet.engine.data.splits import rows_for, splits_from_manifest
from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE, Timing, model_frame_rate, video_rate
from luvnet.engine.data.unreadable import readable_rows
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import write_json
from luvnet.engine.model.checkpoint import default_provenance, load_checkpoint, save_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.progress import ProgressBar
from luvnet.engine.runtime import command_line, resolve_device, set_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainSettings:
    """One field per ``luvnet pretrain`` option (same name)."""

    manifest: Path
    out: Path
    init: Path
    folds: int = 5
    fold: int = 0
    test_fraction: float = 0.1
    seed: int = 0
    steps: int = 600
    batch_size: int = 64  # videos per step: 2 x batch_size frames
    lr: float = 3e-4
    temperature: float = 0.2
    max_offset: int = 30  # frames between the two views of a video
    projection: int = 128
    max_minutes: float | None = None
    cache: Path | None = None
    threads: int | None = None
    device: str | None = None

    def check(self) -> None:
        """Raises LuvnetError naming the first bad option."""
        for name in ("steps", "batch_size", "lr", "temperature", "projection", "folds"):
            value = getattr(self, name)
            if value <= 0:
                flag = name.replace("_", "-")
                raise LuvnetError(f"--{flag}: expected a positive number, got {value}")
        if self.batch_size < 2:
            raise LuvnetError(f"--batch-size: expected at least 2 videos, got {self.batch_size}")
        if self.max_offset < 0:
            raise LuvnetError(f"--max-offset: expected frames >= 0, got {self.max_offset}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise LuvnetError(f"--max-minutes: expected > 0, got {self.max_minutes}")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1), mean over the 2N views.

    Args:
        z1, z2: float [N, K] projections of the two views; row i of each is a positive pair,
            every other row of either is a negative.
        temperature: tau > 0.

    Returns:
        The scalar loss (log(2N - 1) for features that tell nothing apart).
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def augment_views(
    frames: torch.Tensor, generator: torch.Generator, *, max_zoom: float = 1.5
) -> torch.Tensor:
    """One random view per frame: zoom in up to ``max_zoom`` x with a random shift, horizontal
    flip (p 0.5), rotation within ±10 degrees, gain 0.6-1.4, gamma 0.7-1.4 and Gaussian noise
    of sd 0-8 grey levels, each drawn per frame.

    Args:
        frames: uint8 [N, S, S] letterboxed grey frames (the frame cache's).
        generator: CPU generator all draws come from.

    Returns:
        uint8 [N, S, S] views (black where the zoom/rotation leaves the canvas).
    """
    n = frames.shape[0]

    def draw(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    zoom = 1.0 / draw(1.0, max_zoom)
    angle = draw(-10.0, 10.0) * math.pi / 180.0
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift_x, shift_y = draw(-1.0, 1.0) * (1 - zoom), draw(-1.0, 1.0) * (1 - zoom)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)],
        1,
    )
    grey = frames.to(torch.float32).unsqueeze(1) / 255.0
    grid = F.affine_grid(theta, list(grey.shape), align_corners=False)
    grey = F.grid_sample(grey, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain, gamma = draw(0.6, 1.4), draw(0.7, 1.4)
    grey = grey.clamp(0.0, 1.0).pow(gamma.view(n, 1, 1, 1)) * gain.view(n, 1, 1, 1) * 255.0
    noise = torch.randn(grey.shape, generator=generator) * draw(0.0, 8.0).view(n, 1, 1, 1)
    grey = torch.where(grey > 0, grey + noise, grey)  # the letterbox stays black
    return grey.squeeze(1).round().clamp(0, 255).to(torch.uint8)


class PairSampler:
    """Positive pairs of frames: ``batch_size`` distinct videos per step, in each a frame and
    another at most ``max_offset`` frames away. uint8 [N, S, S] twice per :meth:`draw`."""

    def __init__(self, videos: list[CachedVideo], max_offset: int, seed: int) -> None:
        self.frames = [video.frames() for video in videos]
        self.max_offset = max_offset
        self.rng = np.random.default_rng(seed)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.rng.choice(len(self.frames), size=batch_size, replace=False)
        first, second = [], []
        for index in chosen:
            video = self.frames[index]
            t = int(self.rng.integers(len(video)))
            lo, hi = max(0, t - self.max_offset), min(len(video) - 1, t + self.max_offset)
            first.append(video[t])
            second.append(video[int(self.rng.integers(lo, hi + 1))])
        return torch.from_numpy(np.stack(first)), torch.from_numpy(np.stack(second))


def projection_head(embed_dim: int, out: int) -> nn.Module:
    """SimCLR's projection g(.): Linear-BN-ReLU-Linear, [N, D] -> [N, out]; dropped after."""
    return nn.Sequential(
        nn.Linear(embed_dim, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, out)
    )


def pretrain(settings: PretrainSettings, *, command: str | None = None) -> Path:
    """Pretrain ``settings.init``'s trunk on the frames of fold ``settings.fold``'s training
    patients; write the whole model (the init's head unchanged) to ``settings.out``.

    Returns:
        ``settings.out``: ``model.safetensors``, ``config.json`` and ``history.json`` (loss per
        logged step).

    Raises:
        LuvnetError: a bad option, an unreadable init checkpoint or manifest, a fold with fewer
            than two readable training videos.
    """
    s = settings
    s.check()
    set_threads(s.threads)
    device = resolve_device(s.device or None)
    torch.manual_seed(s.seed)
    source = load_checkpoint(s.init)
    model, config = source.model, source.config
    manifest = read_manifest(s.manifest)
    plan = splits_from_manifest(manifest, test_fraction=s.test_fraction, k=s.folds, seed=s.seed)
    fold = plan.fold(s.fold)
    rates = [video_rate(row.video) for row in manifest.rows]
    timing = Timing(model_frame_rate(rates), DEFAULT_DECIMATE_ABOVE)
    cache_dir = s.cache or default_cache_dir()
    rows, skipped = readable_rows(
        rows_for(manifest.rows, fold.train), config.preprocess, cache_dir, manifest.path,
        skip=True, timing=timing,
    )  # fmt: skip
    if len(rows) < 2:
        raise LuvnetError(
            f"{s.manifest}: fold {s.fold}'s training set has {len(rows)} readable videos; "
            "contrastive pretraining needs at least 2 (other videos are the negatives)"
        )
    cache = FrameCache(cache_dir, config.preprocess, timing=timing)
    sampler = PairSampler([cache.load(row.video) for row in rows], s.max_offset, s.seed)
    batch = min(s.batch_size, len(rows))
    log.info(
        "pretraining trunk of %s (model id %s) on %d videos of fold %d's training patients: "
        "%d steps of %d pairs",
        config.backbone, source.model_id, len(rows), s.fold, s.steps, batch,
    )  # fmt: skip
    trunk = model.encoder.to(device).train()
    head = projection_head(model.embed_dim, s.projection).to(device).train()
    params = [*trunk.parameters(), *head.parameters()]
    optimiser = torch.optim.Adam(params, lr=s.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=s.steps)
    generator = torch.Generator().manual_seed(s.seed)
    history: list[dict[str, float]] = []
    bar = ProgressBar(s.steps, "pretrain")
    started = time.monotonic()
    step = 0
    for step in range(1, s.steps + 1):
        a, b = sampler.draw(batch)
        views = torch.cat([augment_views(a, generator), augment_views(b, generator)])
        x = normalize(views.to(device), config.preprocess)
        z = head(trunk(x))
        loss = nt_xent(z[:batch], z[batch:], s.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.update(1, loss=loss.item())
        if step % 10 == 0 or step == 1:
            seconds = time.monotonic() - started
            history.append({"step": step, "loss": loss.item(), "seconds": seconds})
        if s.max_minutes is not None and time.monotonic() - started > s.max_minutes * 60:
            log.info("--max-minutes %g reached after %d steps", s.max_minutes, step)
            break
    bar.close()
    model.encoder.eval()
    record = _record(s, source.model_id, step, rows, skipped, plan, fold.index, config.preprocess)
    provenance = {
        **default_provenance(s.manifest, command or command_line()),
        "init": {"model_id": source.model_id},
        "pretrain": record,
    }
    save_checkpoint(model.cpu(), s.out, config=config, provenance=provenance)
    write_json(s.out / "history.json", {"chance_loss": math.log(2 * batch - 1), "steps": history})
    return s.out


def _record(
    s: PretrainSettings,
    init_id: str,
    steps_run: int,
    rows: list[Any],
    skipped: list[Any],
    plan: Any,
    fold: int,
    preprocess: PreprocessConfig,
) -> dict[str, Any]:
    """What the checkpoint keeps of the pretraining: settings (no paths), counts, the split's
    digests (no patient ids)."""
    options = {k: v for k, v in asdict(s).items() if k not in ("manifest", "out", "init", "cache")}
    salt = new_salt()  # the digests of a set differ between runs, as training's
    return {
        "method": "SimCLR NT-Xent, positive pairs from one video (USCL)",
        "options": options,
        "steps_run": steps_run,
        "videos": len(rows),
        "skipped_videos": len(skipped),
        "image_size": preprocess.image_size,
        "split": fold_record(plan, fold, seed=s.seed, test_fraction=s.test_fraction, salt=salt),
    }
