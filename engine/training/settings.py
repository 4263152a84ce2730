"""What a training run is asked to do: :class:`TrainSettings` for a run, :class:`FitSettings`
for one fold of it.

:class:`TrainSettings` holds one field per ``luvnet train`` option, named as the option's
``argparse`` destination (``--batch-size`` -> ``batch_size``), so ``run.json``'s ``"args"``
record keeps the keys it has always had; :meth:`TrainSettings.check` refuses a bad value with
one :class:`~luvnet.engine.errors.LuvnetError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE
from luvnet.engine.data.views import check_view_range
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import INTENSITY_MODES, MODEL_VARIANTS

LR_SCHEDULES = ("plateau", "linear")  # what each does: schedule.py
# what picks best/ and counts early stopping's epochs (stopping.py); the paper's is the loss
EVAL_METRICS = ("loss", "macro_auc")
AUGMENT_OPTIONS = ("--augment-zoom", "--augment-jitter")  # beyond the paper's flip/rotation


@dataclass(frozen=True)
class FitSettings:
    """The training loop's settings for one fold (:class:`~.fit.FoldTrainer`)."""

    epochs: int = 150
    patience: int = 50
    lr: float = 1e-6
    batch_size: int = 4
    accumulate: int = 1
    amp: bool = False
    seed: int = 0
    save_every: int = 200  # optimizer steps between mid-epoch state saves; 0 = epoch ends only
    budget_s: float | None = None  # wall clock for this fold, summed over resumed invocations
    num_workers: int = 0
    pos_weight: tuple[float, ...] | None = None
    tensorboard: bool = True
    bn_recalibrate: int = 0  # training batches to re-estimate BatchNorm statistics before val
    augment: bool = True  # flip/rotation on training clips (docs/model.md, "Training")
    augment_zoom: float = 1.0  # with augment: zoom U(1, this) and shift per clip (1 = off)
    augment_jitter: float = 0.0  # with augment: gain, gamma, noise per clip (0 = off)
    lr_decay: float = 1.0  # multiply the lr by this ...
    lr_patience: int = 0  # ... after every lr_patience epochs without eval_metric's gain (0 = off)
    lr_schedule: str = "plateau"  # or "linear": to 0 over the run (schedule.py)
    freeze_bn_after: float | None = None  # share of the run after which BatchNorm is frozen
    freeze_encoder: bool = False  # trunk fixed; the head trains on cached embeddings
    trainable_blocks: int | None = None  # only the trunk's last N blocks train; None: all
    ema: float = 0.0  # decay of the weight average validated and kept (averaging.py); 0 = off
    eval_metric: str = "loss"  # one of EVAL_METRICS: what picks best/ (stopping.py)


@dataclass(frozen=True)
class TrainSettings:
    """``luvnet train``'s options (defaults: the paper's protocol, docs/model.md "Training")."""

    manifest: Path
    out: Path  # run directory (created; resumed if present)
    # model
    model: str = "luvnet"  # one of MODEL_VARIANTS
    backbone: str = "densenet161"
    weights: str | None = None  # 'imagenet' or a path; None: random initialisation
    kernel_size: int = 13
    num_heads: int = 8
    fusion_hidden: int = 4096
    classifier_hidden: int = 512
    dropout: float = 0.5
    image_size: int = 256
    crop_box: tuple[int, int, int, int] | None = None  # x, y, w, h; None: detect per video
    intensity: str = "none"  # per-frame intensity normalisation, one of INTENSITY_MODES
    clip_length: int = 30
    clip_step: int = 24
    # split
    folds: int = 5
    fold: int | None = None  # train only this fold (0-based); None: every fold in turn
    test_fraction: float = 0.1
    seed: int = 0
    split_seed: int | None = None  # the patient split's seed; None: seed
    # optimisation
    epochs: int = 150
    patience: int = 50
    lr: float = 1e-6
    batch_size: int = 4
    accumulate: int = 1
    amp: bool = False
    pos_weight: str | None = None  # 'auto' or one positive number per pattern, comma-separated
    # running
    device: str | None = None  # auto (None), cpu, cuda or cuda:N
    num_workers: int | None = None  # None: up to 4 on CUDA, 0 on the CPU
    threads: int | None = None
    max_minutes: float | None = None  # wall-clock budget for all folds
    save_every: int = 200
    augment: bool = True
    augment_zoom: float = 1.0  # beyond the paper's flip/rotation (engine/data/views.py)
    augment_jitter: float = 0.0
    lr_decay: float = 1.0
    lr_patience: int = 0
    lr_schedule: str = "plateau"  # one of LR_SCHEDULES
    freeze_bn_after: float | None = None
    bn_recalibrate: int = 0
    cache: Path | None = None  # frame cache folder; None: $LUVNET_CACHE or the default
    # unreadable videos: left out and recorded (metrics, provenance); False: refuse the run
    skip_unreadable: bool = False
    # sources this many times the measured model frame rate are decimated to it (0 = never)
    decimate_above: float = DEFAULT_DECIMATE_ABOVE
    # start from a checkpoint: its trunk always, its head with init_head (engine/training/init.py)
    init: Path | None = None
    init_head: bool = False
    freeze_encoder: bool = False  # trunk frozen, head trained on cached per-frame embeddings
    trainable_blocks: int | None = None  # fine-tune only the trunk's last N blocks
    usvn_heads: int = 32  # attention heads of --model usvn (its authors' runs used 32)
    ema: float = 0.0  # validate and keep a moving average of the weights (0 = off)
    eval_metric: str = "loss"  # the validation figure that picks best/, one of EVAL_METRICS

    def check(self) -> None:
        """Every bad value as one LuvnetError naming its option.

        Raises:
            LuvnetError: the first bad value, in the order of the checks below.
        """
        if self.model not in MODEL_VARIANTS:
            raise LuvnetError(
                f"--model: expected one of {', '.join(MODEL_VARIANTS)}, got {self.model!r}"
            )
        if self.intensity not in INTENSITY_MODES:
            raise LuvnetError(
                f"--intensity: expected one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}"
            )
        for name in ("epochs", "batch_size", "accumulate", "image_size", "clip_length"):
            check_positive(name, getattr(self, name))
        for name in ("lr", "max_minutes", "clip_step", "num_heads", "fusion_hidden"):
            check_positive(name, getattr(self, name))
        check_positive("classifier_hidden", self.classifier_hidden)
        check_positive("usvn_heads", self.usvn_heads)
        zero_ok = (
            "patience", "save_every", "num_workers", "seed", "split_seed", "bn_recalibrate",
            "threads",
        )  # fmt: skip
        for name in (*zero_ok, "lr_patience"):
            check_positive(name, getattr(self, name), zero_ok=True)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise LuvnetError(
                f"--kernel-size: expected an odd positive number, got {self.kernel_size}"
            )
        check_split_options(self.folds, self.fold, self.test_fraction)
        self._check_schedule()
        if not 0.0 <= self.dropout < 1.0:
            raise LuvnetError(f"--dropout: expected a number in [0, 1), got {self.dropout}")
        self._check_augment()
        self._check_init()
        self._check_ema()
        if self.eval_metric not in EVAL_METRICS:
            raise LuvnetError(
                f"--eval-metric: expected one of {', '.join(EVAL_METRICS)}, "
                f"got {self.eval_metric!r}"
            )

    def _check_ema(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise LuvnetError(
                f"--ema: expected a decay in [0, 1) (0 = off; 0.99 averages about the last 100 "
                f"optimizer steps), got {self.ema}"
            )
        if self.ema and (self.bn_recalibrate or self.freeze_bn_after is not None):
            raise LuvnetError(
                "--ema: the average keeps BatchNorm statistics averaged with the weights; "
                "drop --bn-recalibrate and --freeze-bn-after (or --ema)"
            )

    def ema_fingerprint(self) -> dict[str, float]:
        """``--ema`` as a resumed run must repeat it; empty when off, so that runs from
        before the option still resume."""
        return {"ema": self.ema} if self.ema else {}

    def eval_metric_fingerprint(self) -> dict[str, str]:
        """``--eval-metric`` as a resumed run must repeat it (its best figure so far is in
        that metric); empty for the loss, so that runs from before the option still resume."""
        return {} if self.eval_metric == "loss" else {"eval_metric": self.eval_metric}

    def _check_augment(self) -> None:
        check_view_range(self.augment_zoom, self.augment_jitter, AUGMENT_OPTIONS)
        on = (self.augment_zoom > 1.0, self.augment_jitter > 0.0)
        used = " and ".join(name for name, used in zip(AUGMENT_OPTIONS, on, strict=True) if used)
        if not self.augment and used:
            raise LuvnetError(f"{used}: augment training clips; drop --no-augment (or {used})")

    def augment_fingerprint(self) -> dict[str, float]:
        """Zoom and jitter as a resumed run must repeat them; empty when off, so that runs
        from before the options existed still resume."""
        if self.augment and (self.augment_zoom > 1.0 or self.augment_jitter > 0.0):
            return {"augment_zoom": self.augment_zoom, "augment_jitter": self.augment_jitter}
        return {}

    def _check_init(self) -> None:
        if self.init is not None and self.weights is not None:
            raise LuvnetError(
                "--init: the trunk comes from the checkpoint; drop --weights (or --init)"
            )
        if self.init_head and self.init is None:
            raise LuvnetError("--init-head: needs --init CHECKPOINT (the head to start from)")
        if self.trainable_blocks is not None:
            self._check_trainable_blocks()
        if not self.freeze_encoder:
            return
        if self.augment:
            raise LuvnetError(
                "--freeze-encoder: the head trains on cached embeddings of unaugmented frames; "
                "add --no-augment"
            )
        if self.bn_recalibrate or self.freeze_bn_after is not None:
            raise LuvnetError(
                "--freeze-encoder: the trunk's BatchNorm statistics stay as initialised; drop "
                "--bn-recalibrate and --freeze-bn-after"
            )

    def _check_trainable_blocks(self) -> None:
        """``--trainable-blocks`` against the options it needs or excludes (the count against
        the trunk's: :func:`~luvnet.engine.model.backbones.freeze_trunk`).

        Raises:
            LuvnetError: a count below 1, no trunk to start from, ``--freeze-encoder``,
                ``--bn-recalibrate`` or ``--freeze-bn-after``.
        """
        assert self.trainable_blocks is not None
        if self.trainable_blocks < 1:
            raise LuvnetError(
                f"--trainable-blocks: expected 1 or more, got {self.trainable_blocks} "
                "(--freeze-encoder fixes the whole trunk)"
            )
        if self.init is None and self.weights is None:
            raise LuvnetError(
                "--trainable-blocks: needs --init CHECKPOINT or --weights (the trunk whose "
                "first blocks stay fixed)"
            )
        if self.freeze_encoder:
            raise LuvnetError(
                "--trainable-blocks: --freeze-encoder fixes the whole trunk; drop one of them"
            )
        if self.bn_recalibrate or self.freeze_bn_after is not None:
            raise LuvnetError(
                "--trainable-blocks: the frozen blocks' BatchNorm statistics stay as "
                "initialised; drop --bn-recalibrate and --freeze-bn-after"
            )

    @property
    def patient_split_seed(self) -> int:
        """The seed the patient split is drawn with: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def split_fingerprint(self) -> dict[str, Any]:
        """The split's own seed where it is not ``seed``, as a resumed run must share it; empty
        otherwise, so that runs from before ``--split-seed`` still resume."""
        if self.patient_split_seed == self.seed:
            return {}
        return {"split_seed": self.patient_split_seed}

    def trunk_fingerprint(self) -> dict[str, Any]:
        """What of the trunk is fixed, as a resumed run and the provenance record it; empty
        when the whole trunk trains, so that runs from before the options still resume."""
        if self.freeze_encoder:
            return {"freeze_encoder": True}
        if self.trainable_blocks is not None:
            return {"trainable_blocks": self.trainable_blocks}
        return {}

    def _check_schedule(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise LuvnetError(
                f"--lr-schedule: expected one of {', '.join(LR_SCHEDULES)}, "
                f"got {self.lr_schedule!r}"
            )
        if self.lr_schedule != "plateau" and self.lr_patience > 0:
            raise LuvnetError(
                f"--lr-patience: applies to --lr-schedule plateau only, not {self.lr_schedule}"
            )
        if self.freeze_bn_after is not None:
            if not 0.0 <= self.freeze_bn_after < 1.0:
                raise LuvnetError(
                    f"--freeze-bn-after: expected a share of the run in [0, 1), "
                    f"got {self.freeze_bn_after}"
                )
            if self.bn_recalibrate <= 0:
                raise LuvnetError(
                    "--freeze-bn-after: needs --bn-recalibrate N (the training batches the "
                    "frozen statistics come from)"
                )
        if not 0.0 < self.lr_decay <= 1.0:
            raise LuvnetError(f"--lr-decay: expected a factor in (0, 1], got {self.lr_decay}")

    def record(self) -> dict[str, Any]:
        """The settings as ``run.json`` records them under ``"args"``: one key per option,
        paths as strings, the crop box as its ``x,y,w,h`` text."""
        document: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Path):
                value = str(value)
            elif field.name == "crop_box" and value is not None:
                value = ",".join(str(v) for v in value)
            document[field.name] = value
        return document


def check_split_options(folds: int, fold: int | None, test_fraction: float) -> None:
    """The patient split's options, as ``luvnet train`` and ``luvnet pretrain`` share them.

    Args:
        folds: cross-validation folds K, at least 2.
        fold: one fold, 0..K-1, or None for every fold.
        test_fraction: share of patients held out, in [0, 1).

    Raises:
        LuvnetError: the first bad value, naming its option.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise LuvnetError(f"--test-fraction: expected a number in [0, 1), got {test_fraction}")
    if folds < 2:
        raise LuvnetError(f"--folds: expected at least 2, got {folds}")
    if fold is not None and not 0 <= fold < folds:
        raise LuvnetError(f"--fold: expected 0..{folds - 1}, got {fold}")


def check_positive(name: str, value: float | int | None, *, zero_ok: bool = False) -> None:
    """``value`` > 0 (>= 0 with ``zero_ok``), or a LuvnetError naming option ``--name``."""
    if value is None:
        return
    ok = value >= 0 if zero_ok else value > 0
    if not ok:
        expected = "0 or more" if zero_ok else "a positive number"
        raise LuvnetError(f"--{name.replace('_', '-')}: expected {expected}, got {value}")
