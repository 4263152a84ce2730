"""The facts about a model that travel with its weights (timm ``PretrainedCfg`` style).

Preprocessing, training, evaluation and the streamer read image size, mean/std, clip length,
pattern names and thresholds from here; they are never repeated as constants elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PATTERNS: tuple[str, ...] = ("a_lines", "b_lines", "consolidation", "pleural_effusion")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
MODEL_VARIANTS: tuple[str, ...] = ("luvnet", "no-temporal", "frame", "usvn")
INTENSITY_MODES: tuple[str, ...] = ("none", "sector")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a raw frame becomes a model input: sector crop, letterbox, normalise."""

    image_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Fixed sector box (x, y, w, h) in source pixels; None = detect from pixels that change.
    crop_box: tuple[int, int, int, int] | None = None
    # Per-frame intensity normalisation before mean/std (one of INTENSITY_MODES):
    # "none" (older checkpoints lack the key and keep it) or "sector", each frame's pixels
    # inside the sector standardised to one brightness and contrast (engine/data/preprocess.py).
    intensity: str = "none"

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(
                f"preprocess.intensity: expected one of {INTENSITY_MODES}, got {self.intensity!r}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture plus everything a consumer of the checkpoint needs to use it correctly."""

    backbone: str = "densenet161"
    variant: str = "luvnet"
    num_patterns: int = 4
    num_heads: int = 8
    kernel_size: int = 13
    fusion_hidden: int = 4096
    classifier_hidden: int = 512
    dropout: float = 0.5
    clip_length: int = 30
    clip_step: int = 24
    pattern_names: tuple[str, ...] = PATTERNS
    thresholds: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Frames per second the model was trained at, measured from its training videos'
    # timestamps (engine/data/timing.py); None = unknown (an older checkpoint): no decimation.
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if self.variant not in MODEL_VARIANTS:
            raise ValueError(f"variant: expected one of {MODEL_VARIANTS}, got {self.variant!r}")
        if len(self.pattern_names) != self.num_patterns:
            raise ValueError(
                f"pattern_names: expected {self.num_patterns} names, got {len(self.pattern_names)}"
            )
        for name in (
            "num_patterns",
            "num_heads",
            "fusion_hidden",
            "classifier_hidden",
            "clip_length",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if (
            not isinstance(self.kernel_size, int)
            or self.kernel_size < 1
            or self.kernel_size % 2 == 0
        ):
            raise ValueError(
                f"kernel_size: expected an odd positive integer, got {self.kernel_size!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if not 1 <= self.clip_step <= self.clip_length:
            raise ValueError(
                f"clip_step: expected 1..clip_length ({self.clip_length}), got {self.clip_step}"
            )
        if self.frame_rate is not None and not (
            isinstance(self.frame_rate, int | float) and 0 < self.frame_rate < float("inf")
        ):
            raise ValueError(
                f"frame_rate: expected a positive number or null, got {self.frame_rate!r}"
            )
        if len(self.thresholds) != self.num_patterns:
            raise ValueError(
                f"thresholds: expected {self.num_patterns} values, got {len(self.thresholds)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from JSON; unknown keys are an error naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"model config: unknown key(s) {unknown}; expected among {sorted(known)}"
            )
        data = dict(data)
        pre = dict(data.pop("preprocess", {}) or {})
        pre_known = {f.name for f in dataclasses.fields(PreprocessConfig)}
        bad = sorted(set(pre) - pre_known)
        if bad:
            raise ValueError(f"model config: unknown preprocess key(s) {bad}")
        for key in ("mean", "std", "crop_box"):
            if pre.get(key) is not None:
                pre[key] = tuple(pre[key])
        for key in ("pattern_names", "thresholds"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data, preprocess=PreprocessConfig(**pre))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
