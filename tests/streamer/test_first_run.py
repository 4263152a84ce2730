"""The first run as a user sees it, through the real command line.

`luvnet stream` shows the newest scores once a second (the same numbers it publishes), explains
dropped frames, counts none with --as-fast-as-possible, and says who stopped it; `luvnet
--help` is an overview by group; every command's --help shows its defaults; `luvnet listen`
says what it waits for; `luvnet info` says what it is doing when a person is watching.
Everything is real: subprocesses or ``luvnet.cli.main``, ZeroMQ on loopback, a real terminal
(pty) where one matters.
"""

from __future__ import annotations

import logging
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from luvnet import cli
from luvnet.streamer.grabber import FrameGrabber
from luvnet.streamer.progress import StreamProgress
from luvnet.streamer.publisher import ScorePublisher
from tests.reliability.helpers import LuvnetProcess, wait_until
from tests.streamer.conftest import free_port
from tests.streamer.message_factory import make_score, make_status
from tests.streamer.test_faults import ScriptedSource
from tests.streamer.test_stream import PlainSubscriber

REPO = Path(__file__).resolve().parents[2]
# `[   1.0s] frame 29  A 0.91* B 0.12  C 0.05  E 0.33  | 28.7 fps scored of 30.0, 3 dropped`
SCORE_LINE = re.compile(
    r"\[\s*[\d.]+s\] frame (?P<frame>\d+)  "
    r"A (?P<a_lines>\d\.\d\d)(?P<a_flag>[* ]) B (?P<b_lines>\d\.\d\d)(?P<b_flag>[* ]) "
    r"C (?P<consolidation>\d\.\d\d)(?P<c_flag>[* ]) "
    r"E (?P<pleural_effusion>\d\.\d\d)(?P<e_flag>[* ])"
    r" \| +[\d.]+ fps scored of [\d.]+, (?P<dropped>\d+) dropped"
)
FLAG_GROUPS = {
    "a_lines": "a_flag",
    "b_lines": "b_flag",
    "consolidation": "c_flag",
    "pleural_effusion": "e_flag",
}


def stream_command(endpoint: str, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "stream",
        "--bind",
        endpoint,
        "--checkpoint",
        str(checkpoint),
        "--source",
        "phantom",
        "--size",
        "240x320",  # the phantom renders a small frame fast, so this machine keeps up
        *extra,
    ]


def run_cli(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- the stream


def test_the_stream_shows_the_scores_it_publishes(tiny_checkpoint):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = PlainSubscriber(endpoint)
    try:
        result = run_cli(
            stream_command(endpoint, tiny_checkpoint, "--max-frames", "40")
            + ["--wait-subscriber", "20"]
        )
        time.sleep(0.3)  # the last messages
    finally:
        sub.close()
    assert result.returncode == 0, result.stderr
    lines = [m for m in map(SCORE_LINE.search, result.stderr.splitlines()) if m]
    assert lines, f"no score line:\n{result.stderr}"
    assert "A = a_lines, B = b_lines, C = consolidation, E = pleural_effusion" in result.stderr
    published = {m["frame"]: m for m in sub.of_kind("scores")}
    for line in lines:
        msg = published[int(line["frame"])]
        for pattern, flag in FLAG_GROUPS.items():
            assert line[pattern] == f"{msg['scores'][pattern]:.2f}", (line.group(0), msg)
            assert (line[flag] == "*") == msg["flags"][pattern], (line.group(0), msg["flags"])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("luvnet stream: stopped after 40 frames (--max-frames): 40 frames")
    assert "source ended" not in result.stderr


def test_as_fast_as_possible_drops_nothing(tiny_checkpoint):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = PlainSubscriber(endpoint)
    try:
        result = run_cli(
            stream_command(endpoint, tiny_checkpoint, "--max-frames", "20")
            + ["--as-fast-as-possible", "--wait-subscriber", "20"]
        )
        time.sleep(0.3)
    finally:
        sub.close()
    assert result.returncode == 0, result.stderr
    statuses = sub.of_kind("status")
    assert statuses[-1]["frames_published"] == 20, statuses[-1]
    assert statuses[-1]["frames_dropped"] == 0, statuses[-1]
    # Final, although the reader holds one more frame in the slot that nobody will take.
    assert statuses[-1]["state"] == "ended", statuses[-1]
    assert "20 frames scored" in result.stderr and "none dropped" in result.stderr
    assert "frames dropped" not in result.stderr


def test_the_block_policy_counts_no_drop_at_stop():
    """The frame the reader holds when the stream stops (the end of --max-frames) was the one
    drop of every --as-fast-as-possible run: it is now discarded uncounted."""
    grabber = FrameGrabber(ScriptedSource(10**6), policy="block").start()
    taken = sum(grabber.get(timeout_s=5) is not None for _ in range(20))
    wait_until(lambda: grabber.captured >= taken + 1, 10, "the next frame in the slot")
    time.sleep(0.2)  # the reader now waits with one more frame in hand
    grabber.stop()
    left = 1 if grabber.get(timeout_s=0) is not None else 0
    assert (taken, grabber.dropped, left) == (20, 0, 1)
    assert grabber.captured == taken + left


@pytest.mark.parametrize(
    ("sig", "words"),
    [
        (signal.SIGINT, "stopped by the user (Ctrl-C)"),
        (signal.SIGTERM, "stopped on request (SIGTERM)"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_stop_says_who_stopped_it(tiny_checkpoint, tmp_path, sig, words):
    """Exit 0 for both (docs/reliability.md): a stop asked for is a clean end."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stream = LuvnetProcess(stream_command(endpoint, tiny_checkpoint), tmp_path / "stream.log")
    try:
        wait_until(lambda: SCORE_LINE.search(stream.stderr), 120, "a score line")
        stream.signal(sig)
        rc = stream.wait(30)
    finally:
        stream.kill()
    assert rc == 0, stream.stderr
    last = stream.stderr.strip().splitlines()[-1]
    assert last.startswith(f"luvnet stream: {words}: "), stream.stderr
    assert "source ended" not in stream.stderr and "Traceback" not in stream.stderr


def test_drops_are_explained_with_this_machines_rate(caplog):
    progress = StreamProgress()
    with caplog.at_level(logging.INFO, logger="luvnet.streamer.progress"):
        for frame in range(10):  # 200 ms a frame: 5 fps
            progress(make_score(frame=frame, latency_ms={"preprocess": 20, "embed": 180}))
        progress(make_status(input_fps=30.0, frames_dropped=50, uptime_s=2.0))
        progress(make_status(state="ended", input_fps=30.0, frames_dropped=50, uptime_s=2.5))
        summary = progress.finish("the source ended", 10)
    explained = [r.getMessage() for r in caplog.records if "frames dropped:" in r.getMessage()]
    assert len(explained) == 1, caplog.text
    for text in (explained[0], summary):
        assert "the source sends 30.0 fps" in text and "scores about 5.0 fps" in text, text
        assert "newest frame" in text and "--as-fast-as-possible" in text, text
    assert summary.startswith("the source ended: 10 frames scored in 2.5 s; 50 of 300 frames")


# --------------------------------------------------------------------------- help


def test_help_is_an_overview_by_group(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = []
        elif current and line.startswith("  "):
            sections[current].append(line.split()[0])
    assert sections["live"] == ["stream", "serve", "listen", "record", "overlay"], sections
    assert sections["models"] == [
        *("train", "pretrain", "evaluate", "compare", "ensemble", "report", "attention", "info"),
        "export",
    ]
    assert sections["data"] == ["phantom", "covid-blues-manifest", "dicom-manifest"]
    assert sections["tools"] == ["bench", "keys"]
    assert "luvnet stream --max-frames 300" in out and "luvnet listen" in out
    assert "dispatcher" not in out, "a user's overview, not the module's docstring"


@pytest.mark.parametrize("command", [*cli.COMMANDS, *cli.consumer_commands()])
def test_every_help_shows_defaults_once(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "(default: False)" not in out, out
    # An option's help block (argparse wraps it): at most one mention of its default.
    blocks = re.split(r"\n  (?=-)", out)
    twice = [block for block in blocks if block.count("(default") > 1]
    assert not twice, twice


def test_help_shows_the_defaults_of_stream_and_phantom(capsys):
    with pytest.raises(SystemExit):
        cli.main(["stream", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks
    for default in ("(default: tcp://127.0.0.1:5555)", "(default: eager)", "(default: phantom)"):
        assert default in out, default
    with pytest.raises(SystemExit):
        cli.main(["phantom", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "number of videos (default: 8)" in out and "default 8" not in out


# --------------------------------------------------------------------------- listen, info


def test_listen_says_what_it_waits_for(capsys):
    with ScorePublisher("tcp://127.0.0.1:*") as silent:
        rc = cli.main(["listen", "--endpoint", silent.endpoint, "--timeout", "2.5"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err[0].startswith(
        f"luvnet listen: waiting for messages from {silent.endpoint} (topics under luvnet)"
    ), err
    assert err[-1] == f"luvnet listen: error: no message from {silent.endpoint} within 2.5 s"


def read_terminal(args: list[str], timeout: float = 120) -> tuple[str, str]:
    """Run ``python -m luvnet.cli ARGS`` with stderr on a real terminal; (stdout, stderr)."""
    main, side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "luvnet.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=side,
        text=True,
    )
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read() if process.stdout else ""
    process.wait(timeout)
    os.close(main)
    return out, b"".join(chunks).decode()


def test_info_says_what_it_is_doing_on_a_terminal():
    out, err = read_terminal(["info", "--backbone", "mobilenet_v3_small"])
    assert "params_total" in out, (out, err)
    assert (
        "building luvnet on mobilenet_v3_small (random weights) and counting its parameters" in err
    ), err
