"""All wiring of the live stream in one place: source, model, backend, stages, publisher."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from luvnet.engine.backends import Backend, create_backend
from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE, Timing
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import Checkpoint, load_checkpoint
from luvnet.engine.runtime import resolve_device
from luvnet.streamer.frame_source import FrameSource, SourceOptions
from luvnet.streamer.grabber import FrameGrabber
from luvnet.streamer.pipeline import Publish, Sink, StreamIdentity, StreamPipeline
from luvnet.streamer.protocol import MAX_WINDOW, ProtocolError, ScoreMessage
from luvnet.streamer.sources import open_source
from luvnet.streamer.stages import (
    EmbedStage,
    HeadStage,
    PostprocessStage,
    PreprocessStage,
    SubmitFn,
)

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "engine" / "demo_model"


@dataclass
class StreamSettings:
    """What the CLI chooses; everything else follows from the checkpoint's config."""

    source: str = "phantom"
    checkpoint: Path | None = None  # None: the demo model
    device: str = "auto"
    backend: str = "eager"  # eager | auto | inductor | tensorrt | onnxruntime
    precision: str = "fp32"
    head_mode: str = "auto"  # auto | incremental | window (see resolve_head_mode)
    realtime: bool = True
    loop: bool = False
    drop_policy: str | None = None  # None: "latest" when realtime, else "block"
    max_frames: int | None = None  # stop after this many frames scored and published
    crop_box: tuple[int, int, int, int] | None = None
    calibrate_frames: int | None = None  # None: the crop rule's first frames (SectorParams)
    decimate_above: float = DEFAULT_DECIMATE_ABOVE  # 0 = never decimate (engine/data/timing.py)
    stream_id: str = "default"
    source_options: dict = field(default_factory=dict)


def resolve_head_mode(requested: str, backend: Backend) -> str:
    """``auto``: on CUDA a compiled backend's head over the window (one CUDA-graph replay,
    0.52 ms against 0.95 ms for the incremental state on an H100, bench/RESULTS.md, where both
    are launch-bound); elsewhere the incremental state (5.5x faster than a rerun on a CPU)."""
    if requested != "auto":
        return requested
    compiled = backend.name in ("inductor", "tensorrt")
    return "window" if compiled and backend.device.type == "cuda" else "incremental"


def load_stream_checkpoint(path: Path | None) -> Checkpoint:
    if path is None:
        if not (DEMO_CHECKPOINT / "config.json").is_file():
            raise LuvnetError(
                f"demo model missing at {DEMO_CHECKPOINT}: pass --checkpoint DIR, or rebuild it "
                "with the command in README.md (section 'Demo model')"
            )
        path = DEMO_CHECKPOINT
    return load_checkpoint(path)


def check_publishable(checkpoint: Checkpoint) -> None:
    """Refuse at start a checkpoint whose scores the wire schema cannot carry (a window over
    MAX_WINDOW, pattern names or thresholds it rejects): each frame would be skipped, forever."""
    config = checkpoint.config
    names = config.pattern_names
    try:
        ScoreMessage(  # window is checked before attention, so this never allocates much
            frame=0,
            capture_ns=0,
            fill=1,
            window=config.clip_length,
            patterns=names,
            scores=dict.fromkeys(names, 0.0),
            thresholds=dict(zip(names, config.thresholds, strict=True)),
            attention=np.zeros((len(names), min(config.clip_length, MAX_WINDOW)), np.float16),
            latency_ms={},
            model_id=checkpoint.model_id,
            backend="eager",
            device="cpu",
        )
    except ProtocolError as err:
        raise LuvnetError(
            f"checkpoint {checkpoint.path}: its scores cannot be published ({err})"
        ) from None


def check_backend_fits(backend: Backend, checkpoint: Checkpoint, device: torch.device) -> None:
    """A backend passed in must run this checkpoint's shapes on the stream's device; refuse
    at start rather than skip every frame on a shape error."""
    info, config = backend.info, checkpoint.config
    built = (backend.device.type, info.image_size, info.window, info.embed_dim)
    needed = (
        device.type,
        config.preprocess.image_size,
        config.clip_length,
        checkpoint.model.embed_dim,
    )
    if built != needed:
        raise LuvnetError(
            f"backend {backend.name}: built for (device, image size, window, embedding) "
            f"{built}, this stream needs {needed}"
        )


def compose_stream(
    settings: StreamSettings,
    publish: Publish,
    sinks: list[Sink] | None = None,
    source: FrameSource | None = None,
    backend: Backend | None = None,
    checkpoint: Checkpoint | None = None,
    submit: SubmitFn | None = None,
    frames_in_flight: int = 1,
    encoder_normalizes: bool = False,
) -> StreamPipeline:
    """Wire the stream. ``source`` overrides ``settings.source`` (embedding luvnet in an app);
    ``backend`` reuses one already loaded for this checkpoint (no second compile);
    ``checkpoint``, loaded from ``settings.checkpoint`` already, is shared with other streams
    (``luvnet serve``: one model in the process, each stream its own head state);
    ``submit`` starts a frame's encoder call without waiting for it (a remote encoder; its
    claims return :class:`~luvnet.streamer.stages.Encoded`), and
    ``frames_in_flight`` > 1 lets that many frames be at the encoder at once, scored in order
    (:class:`StreamPipeline`); ``encoder_normalizes``: the encoder takes letterboxed grey frames
    uint8 [1, S, S] and normalises them itself (``luvnet serve``'s replicas)."""
    device = resolve_device(settings.device)
    if checkpoint is None:
        checkpoint = load_stream_checkpoint(settings.checkpoint)
    check_publishable(checkpoint)
    if settings.precision == "fp16" and device.type != "cuda":
        raise LuvnetError("--precision fp16 needs a CUDA device; use fp32 on the CPU")
    model = checkpoint.model.to(device).eval()
    if backend is None:
        backend = create_backend(
            settings.backend,
            model,
            device=device,
            precision=settings.precision,
            image_size=checkpoint.config.preprocess.image_size,
            window=checkpoint.config.clip_length,
        )
    else:
        check_backend_fits(backend, checkpoint, device)
    # The head stage's own state (ring, incremental taps) lives in the backend's dtype.
    dtype = backend.dtype
    model = model.to(dtype)
    head_mode = resolve_head_mode(settings.head_mode, backend)
    head_fn = backend.head if head_mode == "window" else None
    options = SourceOptions(
        realtime=settings.realtime, loop=settings.loop, **settings.source_options
    )
    policy = settings.drop_policy or ("latest" if settings.realtime else "block")
    grabber = FrameGrabber(
        source or open_source(settings.source, options),
        policy=policy,
    )
    config = checkpoint.config
    return StreamPipeline(
        grabber=grabber,
        preprocess=PreprocessStage(
            config,
            device=device,
            dtype=dtype,
            box=settings.crop_box,
            calibrate_frames=settings.calibrate_frames,
            normalized=not encoder_normalizes,
        ),
        embed=EmbedStage(backend.encode, submit),
        head=HeadStage(model, mode=head_mode, head=head_fn),
        postprocess=PostprocessStage(),
        publish=publish,
        config=config,
        identity=StreamIdentity(
            model_id=checkpoint.model_id,
            backend=backend.name,
            device=str(device),
            stream_id=settings.stream_id,
            detail=f"{backend.info.summary()}; head: {head_mode}",
        ),
        sinks=sinks,
        max_frames=settings.max_frames,
        timing=Timing(config.frame_rate, settings.decimate_above),
        frames_in_flight=frames_in_flight,
    )
