"""The YAML file of ``luvnet serve``, read and checked into :class:`ServeSettings`.

Every value goes through the argument type ``luvnet stream`` uses for the same option, so a
value means the same in both places. A bad value or an unknown key is one line naming the file
and the key: ``serve.yaml: encoder.replicas: expected a positive integer, got 'two'``. Paths
(checkpoint, curve_keys, file: sources) are relative to the current folder, as on the command
line. The full reference: docs/serve.md.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from luvnet.commands.options import (
    crop_box,
    device_name,
    fourcc,
    frame_size,
    nonnegative_float,
    positive_float,
    positive_int,
    source_uri,
    stream_id,
    topic_prefix,
    zmq_endpoint,
)
from luvnet.commands.stream import BACKENDS
from luvnet.engine.errors import LuvnetError
from luvnet.streamer.compose import StreamSettings
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX
from luvnet.streamer.publisher import PublisherOptions
from luvnet.streamer.serve.settings import EncoderSettings, RaySettings, ServeSettings
from luvnet.streamer.stages import HEAD_MODES

T = TypeVar("T")

TOP_KEYS: tuple[str, ...] = (
    *("checkpoint", "backend", "device", "precision", "threads"),
    *("publish", "streams", "encoder", "ray"),
)
PUBLISH_KEYS: tuple[str, ...] = ("bind", "topic_prefix", "allow_remote", "curve_keys")
STREAM_KEYS: tuple[str, ...] = (
    *("id", "source", "as_fast_as_possible", "loop", "max_frames", "crop", "size"),
    *("fps", "fourcc", "head"),
)
ENCODER_KEYS: tuple[str, ...] = (
    *("replicas", "max_batch_size", "batch_wait_ms", "frames_in_flight", "requests_in_flight"),
    *("num_cpus", "num_gpus", "threads", "max_replicas_per_node", "resources"),
)
RAY_KEYS: tuple[str, ...] = ("address", "num_cpus")


class ConfigReader:
    """Reads one YAML file; every error names ``<file>: <key path>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def fail(self, key: str, expected: str) -> LuvnetError:
        return LuvnetError(f"{self.name}: {key}: {expected}")

    def load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise LuvnetError(f"--config {self.path}: no such file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise LuvnetError(f"--config {self.path}: cannot read it ({err})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise LuvnetError(f"{self.name}: not valid YAML{where}: {problem}") from None
        return self.mapping("(top level)", data, TOP_KEYS)

    def mapping(self, key: str, value: object, allowed: tuple[str, ...]) -> dict[str, Any]:
        """``value`` as a mapping whose keys are all in ``allowed``."""
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping of {', '.join(allowed)}, got {_kind(value)}")
        prefix = "" if key == "(top level)" else f"{key}."
        for name in value:
            if name not in allowed:
                close = difflib.get_close_matches(str(name).replace("-", "_"), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise self.fail(
                    f"{prefix}{name}",
                    f"unknown key{hint}; expected one of {', '.join(allowed)}",
                )
        return value

    def typed(self, key: str, value: object, parse: Callable[[str], T]) -> T:
        """``value`` through one of luvnet.commands.options' types (numbers and strings)."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            text = _kind(value)
        else:
            text = str(value)
        try:
            return parse(text)
        except argparse.ArgumentTypeError as err:
            message = str(err)
            if text != str(value) or isinstance(value, bool):  # not a scalar at all
                message = message.rsplit(", got ", 1)[0] + f", got {text}"
            raise self.fail(key, message) from None

    def flag(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, value: object, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def text(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def nonnegative_number(text: str) -> float:
    return nonnegative_float(text)


def load_serve_settings(path: Path, *, max_frames: int | None = None) -> ServeSettings:
    """Read ``path`` into :class:`ServeSettings`; ``max_frames`` (``--max-frames``) applies to
    every stream. Raises LuvnetError naming the file and key of the first bad value."""
    reader = ConfigReader(path)
    top = reader.load()
    checkpoint = Path(reader.text("checkpoint", top["checkpoint"])) if "checkpoint" in top else None
    device = reader.typed("device", top.get("device", "auto"), device_name)
    backend = reader.choice("backend", top.get("backend", "eager"), BACKENDS)
    precision = reader.choice("precision", top.get("precision", "fp32"), ("fp32", "fp16"))
    threads = reader.typed("threads", top["threads"], positive_int) if "threads" in top else None
    publish = _publish(reader, top.get("publish", {}))
    if "streams" not in top:
        raise reader.fail("streams", "missing; expected a list of {id, source} streams")
    raw_streams = top["streams"]
    if not isinstance(raw_streams, list) or not raw_streams:
        raise reader.fail(
            "streams", f"expected a non-empty list of streams, got {_kind(raw_streams)}"
        )
    streams: list[StreamSettings] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_streams):
        stream = _stream(reader, f"streams[{i}]", raw, checkpoint, device, backend, precision)
        if max_frames is not None:
            stream.max_frames = max_frames
        if stream.stream_id in seen:
            raise reader.fail(f"streams[{i}].id", f"{stream.stream_id!r} names two streams")
        seen.add(stream.stream_id)
        streams.append(stream)
    return ServeSettings(
        streams=tuple(streams),
        publish=publish,
        encoder=_encoder(reader, top.get("encoder", {})),
        ray=_ray(reader, top.get("ray", {})),
        checkpoint=checkpoint,
        device=device,
        backend=backend,
        precision=precision,
        threads=threads,
    )


def _publish(reader: ConfigReader, raw: object) -> PublisherOptions:
    section = reader.mapping("publish", raw, PUBLISH_KEYS)
    keys = section.get("curve_keys")
    return PublisherOptions(
        bind=reader.typed("publish.bind", section.get("bind", DEFAULT_ENDPOINT), zmq_endpoint),
        topic_prefix=reader.typed(
            "publish.topic_prefix", section.get("topic_prefix", DEFAULT_TOPIC_PREFIX), topic_prefix
        ),
        allow_remote=reader.flag("publish.allow_remote", section.get("allow_remote", False)),
        curve_keys=Path(reader.text("publish.curve_keys", keys)) if keys is not None else None,
    )


def _stream(
    reader: ConfigReader,
    key: str,
    raw: object,
    checkpoint: Path | None,
    device: str,
    backend: str,
    precision: str,
) -> StreamSettings:
    section = reader.mapping(key, raw, STREAM_KEYS)
    for required in ("id", "source"):
        if required not in section:
            raise reader.fail(f"{key}.{required}", "missing; every stream needs an id and a source")
    fast = reader.flag(f"{key}.as_fast_as_possible", section.get("as_fast_as_possible", False))
    options: dict[str, Any] = {}
    if "size" in section:
        options["size"] = reader.typed(f"{key}.size", section["size"], frame_size)
    if "fps" in section:
        options["fps"] = reader.typed(f"{key}.fps", section["fps"], positive_float)
    if "fourcc" in section:
        options["fourcc"] = reader.typed(f"{key}.fourcc", section["fourcc"], fourcc)
    crop = section.get("crop")
    if isinstance(crop, list):
        crop = ",".join(str(v) for v in crop)
    return StreamSettings(
        source=reader.typed(f"{key}.source", section["source"], source_uri),
        checkpoint=checkpoint,
        device=device,
        backend=backend,
        precision=precision,
        head_mode=reader.choice(f"{key}.head", section.get("head", "auto"), ("auto", *HEAD_MODES)),
        realtime=not fast,
        loop=reader.flag(f"{key}.loop", section.get("loop", False)),
        max_frames=(
            reader.typed(f"{key}.max_frames", section["max_frames"], positive_int)
            if "max_frames" in section
            else None
        ),
        crop_box=reader.typed(f"{key}.crop", crop, crop_box) if crop is not None else None,
        stream_id=reader.typed(f"{key}.id", section["id"], stream_id),
        source_options=options,
    )


def _encoder(reader: ConfigReader, raw: object) -> EncoderSettings:
    section = reader.mapping("encoder", raw, ENCODER_KEYS)
    default = EncoderSettings()

    def number(name: str, parse: Callable[[str], T], fallback: T) -> T:
        return (
            reader.typed(f"encoder.{name}", section[name], parse) if name in section else fallback
        )

    resources: dict[str, float] = {}
    if "resources" in section:
        raw_resources = section["resources"]
        if not isinstance(raw_resources, dict):
            raise reader.fail(
                "encoder.resources",
                f"expected a mapping of Ray resource names to amounts, got {_kind(raw_resources)}",
            )
        for name, amount in raw_resources.items():
            resources[str(name)] = reader.typed(f"encoder.resources.{name}", amount, positive_float)
    return EncoderSettings(
        replicas=number("replicas", positive_int, default.replicas),
        max_batch_size=number("max_batch_size", positive_int, default.max_batch_size),
        batch_wait_ms=number("batch_wait_ms", nonnegative_number, default.batch_wait_ms),
        frames_in_flight=number("frames_in_flight", positive_int, default.frames_in_flight),
        requests_in_flight=number("requests_in_flight", positive_int, default.requests_in_flight),
        num_cpus=number("num_cpus", nonnegative_number, default.num_cpus),
        num_gpus=number("num_gpus", nonnegative_number, default.num_gpus),
        threads=number("threads", positive_int, None),
        max_replicas_per_node=number("max_replicas_per_node", positive_int, None),
        resources=resources,
    )


def _ray(reader: ConfigReader, raw: object) -> RaySettings:
    section = reader.mapping("ray", raw, RAY_KEYS)
    address = reader.text("ray.address", section.get("address", "auto"))
    cpus = section.get("num_cpus")
    return RaySettings(
        address=address,
        num_cpus=reader.typed("ray.num_cpus", cpus, positive_int) if cpus is not None else None,
    )
