"""ScorePublisher and ScoreSubscriber over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import ScorePublisher, check_bind_endpoint
from tests.streamer.message_factory import join, make_score, make_status

ANY_PORT = "tcp://127.0.0.1:*"


@pytest.fixture
def pub() -> Iterator[ScorePublisher]:
    with ScorePublisher(ANY_PORT) as publisher:
        yield publisher


@pytest.fixture
def raw_pub() -> Iterator[tuple[zmq.Socket, str]]:
    """A bare PUB socket, standing in for another implementation (or version) of the protocol."""
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.linger = 0
    sock.bind(ANY_PORT)
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()
    context.term()


def stamped(msg: ScoreMessage | StatusMessage, seq: int, session: int = 1) -> list[bytes]:
    return dataclasses.replace(msg, seq=seq, session=session).encode()


def drain(sub: ScoreSubscriber, wait_ms: int = 300) -> list[ScoreMessage | StatusMessage]:
    received = []
    while (msg := sub.recv(wait_ms)) is not None:
        received.append(msg)
    return received


def test_scores_arrive_in_order_with_contiguous_seq(pub: ScorePublisher) -> None:
    with ScoreSubscriber(pub.endpoint) as sub:
        first = join(lambda: pub.publish(make_status()), sub)
        assert isinstance(first, StatusMessage) and first.session == pub.session
        n = 50  # below SNDHWM and RCVHWM: nothing may be dropped
        for frame in range(n):
            assert pub.publish(make_score(frame=frame))
            if frame % 10 == 0:
                pub.publish(make_status())  # interleaved kinds keep their own counters
        received = drain(sub)
    scores = [m for m in received if isinstance(m, ScoreMessage)]
    status = [m.seq for m in received if isinstance(m, StatusMessage)]
    assert [m.seq for m in scores] == list(range(n))
    assert [m.frame for m in scores] == list(range(n))
    assert status == list(range(first.seq + 1, first.seq + 1 + len(status))) and len(status) == 5
    assert all(m.publish_ns >= m.capture_ns for m in scores)
    assert sub.gap_count == 0 and sub.malformed_count == 0
    assert pub.sent_scores == n and pub.dropped == 0


def test_malformed_and_unknown_version_are_skipped_and_counted(
    raw_pub: tuple[zmq.Socket, str],
) -> None:
    sock, endpoint = raw_pub
    seqs = iter(range(1000))
    with ScoreSubscriber(endpoint) as sub:
        join(lambda: sock.send_multipart(stamped(make_status(), next(seqs))), sub)
        future = msgpack.unpackb(make_score().encode()[1]) | {"v": 2}
        sock.send_multipart([b"luvnet.scores", b"\x00garbage"])
        sock.send_multipart([b"luvnet.scores", b"a", b"b"])
        sock.send_multipart([b"luvnet.scores", msgpack.packb(future)])
        sock.send_multipart(stamped(make_score(frame=99), seq=0))
        msg = sub.recv(5000)
        assert isinstance(msg, ScoreMessage) and msg.frame == 99
    assert sub.malformed_count == 3
    assert sub.last_malformed is not None and sub.last_malformed.startswith("v: unknown schema")


def test_gaps_are_reported_and_a_new_session_is_not_a_gap(raw_pub: tuple[zmq.Socket, str]) -> None:
    sock, endpoint = raw_pub
    seqs = iter(range(1000))
    reported: list[Gap] = []
    with ScoreSubscriber(endpoint, on_gap=reported.append) as sub:
        join(lambda: sock.send_multipart(stamped(make_status(), next(seqs))), sub)
        for seq in (0, 1, 4, 5):
            sock.send_multipart(stamped(make_score(), seq))
        sock.send_multipart(stamped(make_score(), seq=0, session=2))  # publisher restarted
        received = drain(sub)
    assert [m.seq for m in received] == [0, 1, 4, 5, 0]
    assert reported == [Gap("default", "scores", expected=2, got=4)]
    assert (sub.gap_count, sub.missed_count, sub.restart_count) == (1, 2, 1)
    assert list(sub.gaps) == reported


def test_topic_prefix_selects_one_stream(raw_pub: tuple[zmq.Socket, str]) -> None:
    sock, endpoint = raw_pub
    seqs = iter(range(1000))

    def send_both() -> None:
        seq = next(seqs)
        sock.send_multipart(
            dataclasses.replace(make_status(stream_id="cam10"), seq=seq).encode("luvnet.cam10")
        )
        sock.send_multipart(
            dataclasses.replace(make_status(stream_id="cam1"), seq=seq).encode("luvnet.cam1")
        )

    with ScoreSubscriber(endpoint, topic_prefix="luvnet.cam1") as sub:
        join(send_both, sub)
        for _ in range(5):
            send_both()
        received = drain(sub)
    assert len(received) >= 5
    assert {m.stream_id for m in received} == {"cam1"}, "luvnet.cam1 must not match luvnet.cam10"


def test_wait_for_subscriber_then_nothing_is_lost(pub: ScorePublisher) -> None:
    assert pub.wait_for_subscriber(0.05) is False
    with ScoreSubscriber(pub.endpoint) as first, ScoreSubscriber(pub.endpoint) as second:
        assert pub.wait_for_subscriber(10)
        assert pub.wait_for_subscriber(10)  # each subscriber is reported once
        pub.publish(make_score(frame=0))
        got = [first.recv(5000), second.recv(5000)]
    assert all(isinstance(m, ScoreMessage) and m.seq == 0 for m in got), got
    assert pub.wait_for_subscriber(0.05) is False


def publish_all(pub: ScorePublisher, msg: ScoreMessage, n: int) -> list[bool]:
    """Publish n messages in a thread; fail instead of hanging if publish ever blocks."""
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend(pub.publish(msg) for _ in range(n)))
    worker.start()
    worker.join(timeout=120)  # a hang guard, not a performance bound
    assert not worker.is_alive(), "publish() blocked"
    return results


def test_publish_without_subscribers_never_blocks(pub: ScorePublisher) -> None:
    results = publish_all(pub, make_score(), 10_000)
    assert len(results) == 10_000
    assert pub.sent_scores + pub.dropped == 10_000


def test_a_subscriber_that_never_reads_never_blocks_publish(pub: ScorePublisher) -> None:
    big = make_score(window=1024, fill=1024)  # 8 KiB of attention: 10k messages overflow buffers
    with ScoreSubscriber(pub.endpoint, rcvhwm=10) as sub:
        join(lambda: pub.publish(make_status()), sub)
        results = publish_all(pub, big, 10_000)
        assert len(results) == 10_000
        assert pub.sent_scores + pub.dropped == 10_000
        queued = [m for m in drain(sub) if isinstance(m, ScoreMessage)]
        assert 0 < len(queued) < 10_000, "PUB must have dropped what the reader could not take"
        pub.publish(big)
        last = sub.recv(5000)
    assert isinstance(last, ScoreMessage) and last.seq == 10_000
    assert sub.gap_count >= 1 and sub.missed_count == 10_000 - len(queued)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://0.0.0.0:5555",
        "tcp://*:5555",
        "tcp://[::]:5555",
        "tcp://192.168.1.10:5555",
        "tcp://eth0:5555",
        "tcp://scanner.example.org:5555",
        "pgm://eth0;239.192.1.1:5555",
    ],
)
def test_non_loopback_bind_is_refused(endpoint: str) -> None:
    with pytest.raises(LuvnetError, match="--allow-remote"):
        ScorePublisher(endpoint)
    check_bind_endpoint(endpoint, allow_remote=True)  # allowed when asked for


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5555",
        "tcp://127.0.0.2:*",
        "tcp://[::1]:5555",
        "tcp://localhost:5555",
        "ipc:///tmp/luvnet.sock",
        "inproc://scores",
    ],
)
def test_local_bind_is_accepted(endpoint: str) -> None:
    check_bind_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint, named", [("127.0.0.1:5555", "TRANSPORT://"), ("tcp://127.0.0.1:99999", "port")]
)
def test_malformed_bind_address(endpoint: str, named: str) -> None:
    with pytest.raises(LuvnetError, match=named):
        check_bind_endpoint(endpoint)


def test_bind_to_a_port_in_use_is_a_one_line_error(pub: ScorePublisher) -> None:
    with pytest.raises(LuvnetError, match=r"^bind tcp://127\.0\.0\.1:\d+: Address already in use$"):
        ScorePublisher(pub.endpoint)


def test_closed_publisher_refuses_to_publish() -> None:
    pub = ScorePublisher(ANY_PORT)
    pub.close()
    pub.close()
    with pytest.raises(LuvnetError, match="closed"):
        pub.publish(make_score())
