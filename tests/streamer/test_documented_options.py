"""Documented options of ``luvnet stream`` and its consumers, end to end through the real CLI.

Bad values are usage errors at parse time; IPv6 loopback, the stream-id topic rule, a named
CURVE client pair, ``luvnet record`` ending with the stream and ``luvnet overlay`` writing every
frame at the source's rate all run on real loopback sockets, a real model and real files.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from luvnet import cli
from luvnet.commands import stream as stream_command
from luvnet.engine.errors import LuvnetError
from luvnet.plugins.consumers.overlay import OverlayWriter
from luvnet.streamer.frame_source import SourceOptions
from luvnet.streamer.grabber import GrabbedFrame
from luvnet.streamer.sources import open_source
from tests.streamer.conftest import free_port, write_video
from tests.streamer.message_factory import make_score

REPO = Path(__file__).resolve().parents[2]


def luvnet_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "luvnet.cli", *args]


@contextmanager
def running(*args: str, cwd: Path = REPO) -> Iterator[subprocess.Popen]:
    """``luvnet ARGS`` in the background, ended (SIGTERM, then kill) on leaving."""
    proc = subprocess.Popen(
        luvnet_command(*args), cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def stream_file(endpoint: str, checkpoint: Path, video: Path, *extra: str) -> list[str]:
    return [
        "stream",
        "--bind",
        endpoint,
        "--quiet",
        "--source",
        f"file:{video}",
        "--checkpoint",
        str(checkpoint),
        *extra,
    ]


def ipv6_loopback_port() -> int | None:
    """A free port on [::1], or None when this machine has no IPv6 loopback."""
    if not socket.has_ipv6:
        return None
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


# --------------------------------------------------------------------------- parse time


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stream", "--fourcc", "MJ"], "argument --fourcc: expected 4 characters"),
        (["stream", "--fourcc", "MJPGX"], "argument --fourcc: expected 4 characters"),
        (["stream", "--fourcc", "MJ\tG"], "argument --fourcc: expected 4 characters"),
        (["stream", "--stream-id", "bed 1"], "argument --stream-id: expected 1 to 64"),
        (["stream", "--stream-id", "ward3.bed1"], "argument --stream-id: expected 1 to 64"),
        (["stream", "--topic-prefix", "luvnet."], "argument --topic-prefix: expected dot"),
        (["stream", "--bind", "tcp://::1:5555"], "in brackets, tcp://[::1]:5555"),
        (["stream", "--bind", "localhost:5555"], "argument --bind: expected tcp://HOST:PORT"),
        (["stream", "--bind", "tcp://127.0.0.1:99999"], "with a port 1..65535"),
        (["stream", "--bind", "tcp://[::1:5555"], "IPv6 address in brackets"),
        (["stream", "--device", "gpu"], "argument --device: expected auto, cpu, cuda"),
        (["stream", "--wait-subscriber", "-1"], "argument --wait-subscriber: expected a number"),
        (["stream", "--wait-subscriber", "nan"], "argument --wait-subscriber: expected a number"),
        (["stream", "--source", "warp:9"], "unknown scheme 'warp'"),
        (["stream", "--overlay", "scores.txt"], "argument --overlay: expected a video file"),
        (["stream", "--overlay", "no-such-dir/x.mp4"], "'no-such-dir' does not exist"),
        (["overlay", "--out", "x.webm"], "argument --out: expected a video file"),
        (["listen", "--endpoint", "127.0.0.1:5555"], "argument --endpoint: expected tcp://"),
        (["listen", "--topic-prefix", "luvnet/ward3"], "argument --topic-prefix: expected"),
        (["listen", "--client", "server"], "argument --client: expected 1 to 64"),
        (["record", "--out", "x.jsonl", "--timeout", "0"], "argument --timeout: expected"),
        (["keys", "k", "--client", "a b"], "argument --client: expected 1 to 64"),
    ],
)
def test_bad_option_values_are_usage_errors_at_parse_time(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "stream_id"),
    [
        ([], "default"),
        (["--stream-id", "bed1"], "bed1"),
        (["--topic-prefix", "luvnet.ward3"], "ward3"),  # never a silent "default"
        (["--topic-prefix", "luvnet.ward3", "--stream-id", "bed1"], "bed1"),
    ],
)
def test_the_stream_id_follows_the_topic_rule(argv: list[str], stream_id: str) -> None:
    parser = argparse.ArgumentParser()
    stream_command.add_arguments(parser)
    args = parser.parse_args(argv)
    assert stream_command.settings_from_args(args).stream_id == stream_id


# --------------------------------------------------------------------------- live streams


@pytest.mark.slow
def test_ipv6_loopback_and_stream_id_topics_through_stream_and_listen(
    tiny_checkpoint: Path, short_video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = ipv6_loopback_port()
    if port is None:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    endpoint = f"tcp://[::1]:{port}"
    context = zmq.Context()
    raw = context.socket(zmq.SUB)  # what travels: topics as bytes
    raw.linger, raw.ipv6 = 0, True
    raw.setsockopt(zmq.SUBSCRIBE, b"luvnet.")
    raw.connect(endpoint)
    args = stream_file(endpoint, tiny_checkpoint, short_video, "--loop", "--stream-id", "bed1")
    try:
        with running(*args) as stream:
            # The whole namespace, as a site's monitor subscribes: every stream under luvnet.
            rc = cli.main(["listen", "--endpoint", endpoint, "--count", "3", "--timeout", "120"])
            out, err = capsys.readouterr()
            assert rc == 0, err
            scores = [line for line in out.splitlines() if "seq " in line and "frame" in line]
            assert len(scores) == 3 and all(line.startswith("[bed1] seq ") for line in scores)
            # One stream by its prefix, and a prefix that names another stream hears nothing.
            argv = ["listen", "--endpoint", endpoint, "--topic-prefix", "luvnet.bed1"]
            assert cli.main([*argv, "--count", "2", "--timeout", "30"]) == 0
            argv = ["listen", "--endpoint", endpoint, "--topic-prefix", "luvnet.bed10"]
            assert cli.main([*argv, "--timeout", "2"]) == 2
            assert "no message from" in capsys.readouterr().err
            topics = set()
            for _ in range(20):
                assert raw.poll(30_000), "the raw IPv6 subscriber heard nothing"
                topics.add(raw.recv_multipart()[0])
            assert stream.poll() is None, "the stream ended early"
    finally:
        raw.close()
        context.term()
    assert topics == {b"luvnet.bed1.scores", b"luvnet.bed1.status"}


@pytest.mark.slow
def test_a_named_client_pair_from_keys_receives_with_listen_client(
    tiny_checkpoint: Path, short_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert cli.main(["keys", str(keys)]) == 0
    assert cli.main(["keys", str(keys), "--client", "bedside"]) == 0
    assert f"--curve-keys {keys} --client bedside" in capsys.readouterr().out
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = stream_file(endpoint, tiny_checkpoint, short_video, "--loop", "--curve-keys", str(keys))
    with running(*args):
        listen = ["listen", "--endpoint", endpoint, "--curve-keys", str(keys)]
        rc = cli.main([*listen, "--client", "bedside", "--count", "2", "--timeout", "120"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert sum(line.startswith("seq ") for line in out.splitlines()) == 2
        # Without --client and without the default pair: the error names the pair there is.
        (keys / "client.key_secret").unlink()
        assert cli.main([*listen, "--timeout", "5"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "client.key_secret" in err and "--client bedside" in err


@pytest.mark.slow
def test_record_ends_with_a_max_frames_stream_and_keeps_every_message(
    tiny_checkpoint: Path, short_video: Path, tmp_path: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "run.jsonl"
    record = ["record", "--out", str(out), "--endpoint", endpoint, "--timeout", "300"]
    with running(*record) as recorder:
        stream = subprocess.run(
            luvnet_command(
                # Every frame scored (a paced replay on a loaded CPU drops frames and can run
                # out of file before 12 are scored); what is tested is that record keeps them.
                *stream_file(
                    endpoint,
                    tiny_checkpoint,
                    short_video,
                    "--max-frames",
                    "12",
                    "--as-fast-as-possible",
                ),  # fmt: skip
                "--wait-subscriber",
                "60",
            ),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert stream.returncode == 0, stream.stderr
        # No Ctrl-C: the recorder stops by itself on the stream's final status.
        _, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    assert "ended" in err and "recorded" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    scores = [r for r in records if r["kind"] == "scores"]
    assert [r["frame"] for r in scores] == list(range(12)), "every frame, the last ones too"
    assert records[-2]["kind"] == "status" and records[-2]["state"] == "ended"
    assert records[-1]["kind"] == "end" and records[-1]["scores"] == 12


@pytest.mark.slow
def test_overlay_by_default_writes_a_file_with_every_frame_at_the_source_rate(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "scan.mp4", frames=50, fps=25.0)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # Paced at the file's rate (no --as-fast-as-possible), as a user runs it.
    result = subprocess.run(
        luvnet_command("overlay", *stream_file(endpoint, tiny_checkpoint, video)[1:]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    try:
        assert written.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
        assert written.get(cv2.CAP_PROP_FRAME_COUNT) == 50
    finally:
        written.release()
    assert "overlay: 50 frames to overlay.mp4 at 25 fps" in result.stderr
    assert "were dropped" not in result.stderr


def test_overlay_window_on_a_headless_opencv_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        cv2.namedWindow("probe")
    except cv2.error:
        pass
    else:
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV build can open windows")
    assert cli.main(["overlay", "--window"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no window support" in err and "--out" in err


def test_overlay_writer_uses_the_source_rate_and_warns_of_dropped_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "live.mp4"
    writer = OverlayWriter(out)
    image = np.zeros((120, 160, 3), np.uint8)
    for index in (0, 1, 4, 5, 9):  # frames 2, 3, 6, 7, 8 were dropped before scoring
        frame = GrabbedFrame(image, index, time.monotonic_ns(), 0, None, fps=12.5)
        writer(frame, make_score(frame=index))
    # The handler on the logger itself: `luvnet` loggers do not propagate once a command ran.
    logger = logging.getLogger("luvnet.plugins.consumers.overlay")
    logger.addHandler(caplog.handler)
    try:
        writer.close()
    finally:
        logger.removeHandler(caplog.handler)
    assert "has 5 of 10 frames: 5 were dropped" in caplog.text
    assert writer.summary() == f"overlay: 5 frames to {out} at 12.5 fps"
    written = cv2.VideoCapture(str(out))
    try:
        assert written.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
        assert written.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    finally:
        written.release()


def test_a_bad_fourcc_given_to_the_library_is_refused_when_the_source_is_made() -> None:
    with pytest.raises(LuvnetError, match="fourcc: expected 4 ASCII characters"):
        open_source("device:0", SourceOptions(fourcc="MJ"))
