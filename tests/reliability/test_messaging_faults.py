"""Subscribers and publishers come and go, the network breaks, peers send junk: subscribers keep
receiving, report exactly what they missed, and the stream never notices a hostile peer.

Already covered elsewhere: malformed, truncated and unknown-version messages through the
decoder (tests/streamer/test_protocol.py, incl. hypothesis fuzzing of bytes, msgpack values,
fields and byte flips) and over a socket (tests/streamer/test_publisher_client.py::
test_malformed_and_unknown_version_are_skipped_and_counted); a new session without a gap
(test_gaps_are_reported_and_a_new_session_is_not_a_gap); slow and absent subscribers never
blocking publish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import ProtocolError, ScoreMessage, decode
from luvnet.streamer.publisher import ScorePublisher
from tests.reliability.helpers import Collector, LuvnetProcess, stream_args, wait_until
from tests.streamer.conftest import free_port
from tests.streamer.message_factory import join, make_score


class Relay:
    """A loopback TCP relay in front of a ZeroMQ endpoint: ``cut()`` breaks every connection
    and refuses new ones (a cable pulled, a switch rebooting), ``restore()`` comes back."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()


@pytest.fixture
def feed() -> Iterator[ScorePublisher]:
    """A real publisher sending a score every 5 ms until the test ends."""
    with ScorePublisher("tcp://127.0.0.1:*") as pub:
        stop = threading.Event()

        def loop() -> None:
            frame = 0
            while not stop.wait(0.005):
                pub.publish(make_score(frame=frame))
                frame += 1

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        yield pub
        stop.set()
        worker.join(5)


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_a_subscriber_cut_off_and_back_has_one_gap_exactly_while_away(feed: ScorePublisher):
    relay = Relay(port_of(feed.endpoint))
    collector = Collector(relay.endpoint)
    try:
        wait_until(lambda: len(collector.scores()) >= 50, 30, "50 scores through the relay")
        relay.cut()
        before = collector.scores()
        time.sleep(1.0)  # away: the publisher keeps sending (~200 scores)
        relay.restore()
        wait_until(lambda: len(collector.scores()) >= len(before) + 50, 30, "scores again")
    finally:
        collector.close()
        relay.cut()
    seqs = [m.seq for m in collector.scores()]
    jumps = [i for i in range(1, len(seqs)) if seqs[i] != seqs[i - 1] + 1]
    assert len(jumps) == 1, f"expected one run before and one after the cut, jumps at {jumps}"
    j = jumps[0]
    assert seqs[j - 1] >= before[-1].seq and seqs[j] > seqs[j - 1], "the jump is the outage"
    gaps = [g for g in collector.sub.gaps if g.kind == "scores"]
    assert gaps == [Gap("default", "scores", seqs[j - 1] + 1, seqs[j])], gaps
    assert collector.sub.restart_count == 0, "same publisher: not a restart"


@pytest.mark.slow
def test_the_publisher_restarts_under_running_subscribers(tiny_checkpoint, short_video, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    recording = tmp_path / "rec.jsonl"
    # Subscribers first: they wait (ZeroMQ retries the connection) for the stream to appear.
    collector = Collector(endpoint)
    recorder = LuvnetProcess(
        # --follow: without it the recorder ends with the first stream, as it should.
        ["record", "--out", str(recording), "--endpoint", endpoint, "--follow"],
        tmp_path / "record.log",
    )
    args = stream_args(endpoint, tiny_checkpoint, f"file:{short_video}", "--loop")
    streams = []

    def sessions() -> set[int]:
        return {m.session for m in collector.scores()}

    try:
        for run in range(2):
            streams.append(LuvnetProcess(args, tmp_path / f"stream{run}.log"))
            wait_until(lambda run=run: len(sessions()) == run + 1, 120, f"stream {run} scores")
            count = len(collector.scores())
            wait_until(lambda c=count: len(collector.scores()) >= c + 20, 60, "20 more scores")
            streams[-1].signal(signal.SIGTERM)
            assert streams[-1].wait(30) == 0, streams[-1].stderr
        recorder.signal(signal.SIGTERM)
        assert recorder.wait(30) == 0, recorder.stderr
    finally:
        for process in [*streams, recorder]:
            process.kill()
        collector.close()
    scores = collector.scores()
    first, second = sorted({m.session for m in scores}, key=[m.session for m in scores].index)
    for session in (first, second):
        seqs = [m.seq for m in scores if m.session == session]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "contiguous within a session"
    assert collector.sub.gap_count == 0, list(collector.sub.gaps)
    assert collector.sub.restart_count >= 1
    records = [json.loads(line) for line in recording.read_text().splitlines()]
    assert not [r for r in records if r["kind"] == "gap"], "the recorder saw a false gap"
    assert {r["session"] for r in records if r["kind"] == "scores"} == {first, second}
    assert records[-1]["kind"] == "end" and records[-1]["gaps"] == 0


def test_an_oversized_message_costs_a_reconnect_not_the_subscription():
    """libzmq drops a connection for good after a frame over MAXMSGSIZE; the client must
    come back by itself (it did not before: it went silent forever)."""
    context = zmq.Context()
    raw = context.socket(zmq.PUB)
    raw.linger = 0
    raw.bind("tcp://127.0.0.1:*")
    seqs = iter(range(10**6))

    def send() -> None:
        raw.send_multipart(dataclasses.replace(make_score(), seq=next(seqs), session=1).encode())

    try:
        with ScoreSubscriber(raw.getsockopt_string(zmq.LAST_ENDPOINT)) as sub:
            join(send, sub)
            raw.send_multipart([b"luvnet.scores", b"\x00" * (2 << 20)])  # 2 MiB > 1 MiB limit
            after = None
            for _ in range(600):  # publish until heard again; bounded at ~30 s
                send()
                after = sub.recv(50)
                if after is not None:
                    break
            assert isinstance(after, ScoreMessage), "the subscriber never heard again"
            assert sub.reconnect_count == 1 and sub.gap_count == 1
    finally:
        raw.close()
        context.term()


def test_junk_on_the_publisher_port_does_not_disturb_the_stream(feed: ScorePublisher):
    port = port_of(feed.endpoint)
    junk = [
        os.urandom(4096),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        # A ZMTP 3 greeting, then a frame header that claims 2^63 bytes.
        b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00NULL" + b"\x00" * 16 + b"\x00" * 32,
        b"\x02" + struct.pack(">Q", 2**63 - 1) + b"x" * 100,
    ]
    with ScoreSubscriber(feed.endpoint) as sub:
        wait_until(lambda: sub.recv(100) is not None, 30, "the legitimate subscriber hears")
        for _ in range(20):
            for data in junk:
                # The publisher may hang up before all is sent: that is the point.
                with (
                    socket.create_connection(("127.0.0.1", port)) as peer,
                    contextlib.suppress(OSError),
                ):
                    peer.sendall(data)
        heard = [m for m in (sub.recv(200) for _ in range(50)) if m is not None]
    assert len(heard) == 50 and sub.gap_count == 0 and sub.malformed_count == 0
    assert not feed.closed and feed.dropped == 0


# (name, body) the decoder must refuse in one line without building anything big
MSGPACK_BOMBS = [
    ("nested arrays 200k deep", b"\x91" * 200_000 + b"\xc0"),
    ("nested maps 100k deep", b"\x81\xa1k" * 100_000 + b"\xc0"),
    ("array32 claiming 4G items", b"\xdd" + struct.pack(">I", 2**32 - 1)),
    ("map32 claiming 4G pairs", b"\xdf" + struct.pack(">I", 2**32 - 1)),
    ("str32 claiming 4 GiB", b"\xdb" + struct.pack(">I", 2**32 - 1) + b"abc"),
    ("bin32 claiming 4 GiB", b"\xc6" + struct.pack(">I", 2**32 - 1) + b"abc"),
    ("ext type", b"\xd4\x01\x00"),
    ("timestamp ext", b"\xd6\xff\x00\x00\x00\x00"),
]


@pytest.mark.parametrize("body", [b for _, b in MSGPACK_BOMBS], ids=[n for n, _ in MSGPACK_BOMBS])
def test_msgpack_bombs_are_refused_in_one_line(body: bytes):
    with pytest.raises(ProtocolError, match="^body: not valid msgpack") as err:
        decode([b"luvnet.scores", body])
    assert "\n" not in str(err.value)


def anon_rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


# A peer speaking raw XSUB, which may send any subscription it likes. In its own process:
# libzmq tears down its own 4 MiB-deep subscription trie recursively and crashes doing so.
HOSTILE_SUBSCRIBER = """
import os, sys, time, zmq
sock = zmq.Context().socket(zmq.XSUB)
sock.connect(sys.argv[1])
sock.send(b"\\x01luvnet." + b"x" * (4 << 20))
time.sleep(1.0)
os._exit(0)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_one_huge_subscription_is_refused_not_stored(feed: ScorePublisher):
    """libzmq stores a trie node per byte of a subscription: one 4 MiB subscription cost the
    publisher about 200 MiB (three of 200 MiB: 23 GiB) before inbound messages were capped."""
    with ScoreSubscriber(feed.endpoint) as sub:
        wait_until(lambda: sub.recv(100) is not None, 30, "the legitimate subscriber hears")
        before = anon_rss_mib()
        hostile = subprocess.run(
            [sys.executable, "-c", HOSTILE_SUBSCRIBER, feed.endpoint], timeout=60, check=True
        )
        heard = [m for m in (sub.recv(200) for _ in range(100)) if m is not None]
        grown = anon_rss_mib() - before
    assert hostile.returncode == 0
    assert grown < 64, f"the publisher's process grew by {grown:.0f} MiB"
    assert len(heard) == 100 and sub.gap_count == 0
