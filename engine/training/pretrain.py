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
from luvnet.engine.data.manifest import ManifestRow, read_manifest
from luvnet.engine.data.preprocess import normalize
from luvnet.engine.data.split_record import fold_record, new_salt
from luvnet.engine.data.splits import SplitPlan, rows_for, splits_from_manifest
from luvnet.engine.data.timing import (
    DEFAULT_DECIMATE_ABOVE,
    Timing,
    model_frame_rate,
    rate_record,
    video_rate,
)
from luvnet.engine.data.unreadable import SkippedVideo, readable_rows
from luvnet.engine.data.views import ViewParams, apply_views
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import write_json
from luvnet.engine.model.checkpoint import (
    WEIGHTS_FILE,
    default_provenance,
    load_checkpoint,
    save_checkpoint,
)
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.progress import ProgressBar
from luvnet.engine.runtime import command_line, resolve_device, set_threads
from luvnet.engine.training.batchnorm import recalibrate_batchnorm
from luvnet.engine.training.fold_init import check_init_fold, seen_patients
from luvnet.engine.training.run_record import split_settings
from luvnet.engine.training.settings import check_positive, check_split_options

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
    jitter: float = 0.4  # intensity jitter of the views (augment_views)
    projection: int = 128
    max_minutes: float | None = None
    cache: Path | None = None
    threads: int | None = None
    device: str | None = None

    def check(self) -> None:
        """Raises LuvnetError naming the first bad option."""
        for name in ("steps", "batch_size", "lr", "temperature", "projection", "max_minutes"):
            check_positive(name, getattr(self, name))
        check_positive("max_offset", self.max_offset, zero_ok=True)
        check_positive("seed", self.seed, zero_ok=True)
        if not 0.0 <= self.jitter < 1.0:
            raise LuvnetError(f"--jitter: expected a number in [0, 1), got {self.jitter}")
        if self.batch_size < 2:
            raise LuvnetError(f"--batch-size: expected at least 2 videos, got {self.batch_size}")
        check_split_options(self.folds, self.fold, self.test_fraction)


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
    frames: torch.Tensor,
    generator: torch.Generator,
    *,
    max_zoom: float = 1.5,
    jitter: float = 0.4,
) -> torch.Tensor:
    """One random view per frame (:mod:`luvnet.engine.data.views`): zoom in up to
    ``max_zoom`` x with a random shift, horizontal flip (p 0.5), rotation within ±10 degrees,
    then with ``jitter`` j gain 1-j..1+j, gamma 1-0.75j..1+j and Gaussian noise of sd 0..20j
    grey levels (j = 0.4: 0.6-1.4, 0.7-1.4, 0-8), each drawn per frame; the same geometry for
    any j.

    Args:
        frames: uint8 [N, S, S] letterboxed grey frames (the frame cache's).
        generator: CPU generator all draws come from.
        max_zoom: the largest magnification (>= 1; the view then shows 1 / max_zoom of the
            canvas's width).
        jitter: intensity jitter j in [0, 1); 0 keeps every grey level.

    Returns:
        uint8 [N, S, S] views. Black where the rotation leaves the canvas; the noise goes only
        on pixels that are not black, so the letterbox and the fan's corners stay black as in
        every real frame.

    Raises:
        LuvnetError: ``frames`` is not uint8 [N, S, S], ``max_zoom`` is not a finite number
            >= 1 or ``jitter`` not in [0, 1).
    """
    views = ViewParams.draw(frames.shape[0], generator, max_zoom=max_zoom, jitter=jitter)
    return apply_views(frames, views, generator)


class PairSampler:
    """Positive pairs of frames for contrastive steps.

    Each :meth:`draw` picks ``batch_size`` distinct videos (two videos of one patient can be
    each other's negatives) and in each a frame and another at most ``max_offset`` frames
    away, both uniform; ``seed`` makes the draws repeat.

    Args:
        videos: frame-cache entries, each at least one frame.
        max_offset: frames >= 0.
        seed: the draws' generator seed.
    """

    def __init__(self, videos: list[CachedVideo], max_offset: int, seed: int) -> None:
        self.videos = videos
        self.frames = [video.frames() for video in videos]
        self.max_offset = max_offset
        self.rng = np.random.default_rng(seed)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [batch_size, S, S] first frames and their partners; batch_size <= videos."""
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
    patients; write the whole model (the init's config and head unchanged) to ``settings.out``.

    Returns:
        ``settings.out``: ``model.safetensors``, ``config.json`` and ``history.json`` (loss at
        step 1, every 10th and the last).

    Raises:
        LuvnetError: a bad option, an unreadable init checkpoint or manifest, an init trained
            on this fold's validation or test patients (:func:`~.fold_init.check_init_fold`),
            an ``--out`` that is a file or already holds a checkpoint, a fold with fewer than
            two readable training videos, a loss that is not finite (nothing is written then).
    """
    s = settings
    s.check()
    _check_out(s.out)
    set_threads(s.threads)
    device = resolve_device(s.device or None)
    torch.manual_seed(s.seed)
    source = load_checkpoint(s.init)
    config = source.config
    manifest = read_manifest(s.manifest)
    plan = splits_from_manifest(manifest, test_fraction=s.test_fraction, k=s.folds, seed=s.seed)
    plan.fold(s.fold)  # range check with the plan's own message
    # A trunk trained on labels of this fold's validation or test patients would carry them
    # into every run started from this one.
    seen = seen_patients(s.init, manifest)
    if seen is not None:
        split = split_settings(plan, seed=s.seed, test_fraction=s.test_fraction)
        check_init_fold(s.init, seen, plan, s.fold, split, head=False, runs=False)
    train_rows = rows_for(manifest.rows, plan.fold(s.fold).train)
    # The rate from the training videos alone: no validation or test video is opened.
    rates = [video_rate(row.video) for row in train_rows]
    timing = Timing(model_frame_rate(rates), DEFAULT_DECIMATE_ABOVE)
    cache_dir = s.cache or default_cache_dir()
    rows, skipped = readable_rows(
        train_rows, config.preprocess, cache_dir, manifest.path, skip=True, timing=timing
    )
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
    model = source.model
    history = _fit(s, model.encoder.to(device), model.embed_dim, sampler, batch, device, config)
    frames = _recalibrate(model.encoder, sampler, batch, device, config.preprocess)
    record = _record(s, int(history[-1]["step"]), batch, rows, skipped, plan, config.preprocess)
    record["frame_rate"] = rate_record(rates, timing, sum(v.decimated for v in sampler.videos))
    record["batchnorm_frames"] = frames
    provenance = {
        **default_provenance(s.manifest, command or command_line()),
        "init": {"model_id": source.model_id},
        "pretrain": record,
    }
    save_checkpoint(model.eval().cpu(), s.out, config=config, provenance=provenance)
    write_json(s.out / "history.json", {"chance_loss": math.log(2 * batch - 1), "steps": history})
    return s.out


def _check_out(out: Path) -> None:
    if out.is_file() or (out / WEIGHTS_FILE).exists():
        what = "is a file" if out.is_file() else "already holds a checkpoint"
        raise LuvnetError(f"--out {out}: {what}; expected a new folder: choose another --out")


def _fit(
    s: PretrainSettings,
    trunk: nn.Module,
    width: int,
    sampler: PairSampler,
    batch: int,
    device: torch.device,
    config: ModelConfig,
) -> list[dict[str, float]]:
    """The contrastive steps on ``trunk`` ([N, 3, S, S] -> [N, ``width``]); returns the logged
    ``{"step", "loss", "seconds"}``."""
    trunk.train()
    head = projection_head(width, s.projection).to(device).train()
    optimiser = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=s.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=s.steps)
    generator = torch.Generator().manual_seed(s.seed)
    history: list[dict[str, float]] = []
    bar = ProgressBar(s.steps, "pretrain")
    started = time.monotonic()
    for step in range(1, s.steps + 1):
        a, b = sampler.draw(batch)
        views = torch.cat([augment_views(v, generator, jitter=s.jitter) for v in (a, b)])
        z = head(trunk(normalize(views.to(device), config.preprocess)))
        loss = nt_xent(z[:batch], z[batch:], s.temperature)
        if not torch.isfinite(loss):
            raise LuvnetError(
                f"pretraining diverged at step {step} (loss {loss.item()}); nothing was written: "
                "try a lower --lr or a higher --temperature"
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.update(1, loss=loss.item())
        seconds = time.monotonic() - started
        over = s.max_minutes is not None and seconds > s.max_minutes * 60
        if step % 10 == 0 or step in (1, s.steps) or over:
            history.append({"step": step, "loss": loss.item(), "seconds": seconds})
        if over:
            log.info("--max-minutes %g reached after %d steps", s.max_minutes, step)
            break
    bar.close()
    return history


@torch.no_grad()
def _recalibrate(
    trunk: nn.Module,
    sampler: PairSampler,
    batch: int,
    device: torch.device,
    preprocess: PreprocessConfig,
    batches: int = 32,
) -> int:
    """BatchNorm statistics re-estimated on ``batches`` x ``batch`` unaugmented training
    frames: the views' gain, gamma and noise shifted them, and ``--freeze-encoder`` embeds
    plain frames with them. Returns the frame count."""
    draws = [{"frames": sampler.draw(batch)[0]} for _ in range(batches)]
    recalibrate_batchnorm(
        trunk, draws, lambda item: trunk(normalize(item["frames"].to(device), preprocess))
    )
    trunk.eval()
    return batches * batch


def _record(
    s: PretrainSettings,
    steps_run: int,
    batch: int,
    rows: list[ManifestRow],
    skipped: list[SkippedVideo],
    plan: SplitPlan,
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
        "pairs_per_step": batch,
        "videos": len(rows),
        "skipped_videos": len(skipped),
        "image_size": preprocess.image_size,
        "split": fold_record(plan, s.fold, seed=s.seed, test_fraction=s.test_fraction, salt=salt),
    }
