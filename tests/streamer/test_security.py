"""CURVE keys: layout, one-line errors, and who receives the stream."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq.auth

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.client import ScoreSubscriber
from luvnet.streamer.publisher import ScorePublisher
from luvnet.streamer.security import (
    add_client,
    generate_keys,
    load_client_keys,
    load_server_keys,
)
from tests.streamer.message_factory import make_status


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return generate_keys(tmp_path / "keys")


def test_layout_and_permissions(keys: Path) -> None:
    names = {p.relative_to(keys).as_posix() for p in keys.rglob("*")}
    expected = {"server.key", "server.key_secret", "client.key", "client.key_secret"}
    assert names == expected | {"authorized", "authorized/client.key"}
    for secret in ("server.key_secret", "client.key_secret"):
        mode = stat.S_IMODE((keys / secret).stat().st_mode)
        assert mode == 0o600, f"{secret}: expected mode 0600, got {oct(mode)}"
    server = load_server_keys(keys)
    client = load_client_keys(keys)
    assert server.authorized_count == 1
    assert client.server_public == server.public
    assert zmq.auth.load_certificate(keys / "authorized" / "client.key")[0] == client.public
    assert server.secret.decode() not in repr(server) and client.secret.decode() not in repr(client)


def test_generate_refuses_to_overwrite(keys: Path) -> None:
    with pytest.raises(LuvnetError, match="already holds server.key_secret"):
        generate_keys(keys)


def test_add_client(keys: Path) -> None:
    public, secret = add_client(keys, "nurse-station")
    assert (keys / "authorized" / "nurse-station.key").is_file()
    assert load_server_keys(keys).authorized_count == 2
    mine = load_client_keys(client_secret_file=secret, server_public_file=keys / "server.key")
    assert mine.public == zmq.auth.load_certificate(public)[0]
    for bad in ("nurse-station", "server", "a/b"):
        with pytest.raises(LuvnetError, match="client"):
            add_client(keys, bad)


def break_file(path: Path) -> None:
    path.write_text('curve\n    public-key = "tooshort"\n')


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda d: d.rename(d.with_name("gone")), "not a directory"),
        (lambda d: (d / "server.key_secret").unlink(), "server.key_secret: key file not found"),
        (lambda d: (d / "authorized" / "client.key").unlink(), "no client public keys"),
        (lambda d: break_file(d / "authorized" / "client.key"), "client.key: expected a public"),
        (lambda d: (d / "server.key_secret").write_text("junk\n"), "not a ZeroMQ certificate"),
    ],
)
def test_server_key_errors_are_one_line(keys: Path, damage, named: str) -> None:
    damage(keys)
    with pytest.raises(LuvnetError, match=named) as err:
        load_server_keys(keys)
    assert "\n" not in str(err.value)


def test_client_key_errors(keys: Path) -> None:
    (keys / "server.key").unlink()
    with pytest.raises(LuvnetError, match="server.key: key file not found"):
        load_client_keys(keys)
    with pytest.raises(LuvnetError, match="key directory or both key files"):
        load_client_keys(client_secret_file=keys / "client.key_secret")


def test_only_authorised_subscribers_receive(keys: Path, tmp_path: Path) -> None:
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir()
    _, intruder_secret = zmq.auth.create_certificates(intruder_dir, "intruder")
    intruder = load_client_keys(
        client_secret_file=intruder_secret, server_public_file=keys / "server.key"
    )
    with (
        ScorePublisher("tcp://127.0.0.1:*", curve_keys=keys) as pub,
        ScoreSubscriber(pub.endpoint, curve=intruder) as refused,
        ScoreSubscriber(pub.endpoint) as plaintext,
    ):
        assert not pub.wait_for_subscriber(0.5), "a refused subscriber must not get through"
        with ScoreSubscriber(pub.endpoint, curve=load_client_keys(keys)) as allowed:
            assert pub.wait_for_subscriber(10)
            for _ in range(20):  # a bounded wait while messages demonstrably flow
                pub.publish(make_status())
                assert refused.recv(0) is None and plaintext.recv(0) is None
            heard = 0
            while allowed.recv(300) is not None:
                heard += 1
        assert heard == 20, f"the authorised subscriber: expected all 20 messages, got {heard}"
        assert refused.recv(100) is None and plaintext.recv(100) is None
    assert refused.received_count == plaintext.received_count == 0
