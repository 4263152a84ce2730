"""Optional CURVE encryption and authentication for the score stream (ZeroMQ CurveZMQ).

One key directory serves both ends; ``generate_keys(DIR)`` creates::

    DIR/server.key            server public key: give it to every subscriber
    DIR/server.key_secret     server key pair: stays on the publishing host (mode 0600)
    DIR/client.key_secret     a client key pair, for a first subscriber (mode 0600)
    DIR/client.key            its public key
    DIR/authorized/*.key      allow-list: public keys of the subscribers the publisher accepts

The publisher (``--curve-keys DIR``) reads ``server.key_secret`` and ``authorized/``; a
subscriber (``--curve-keys DIR``) reads ``client.key_secret`` (``NAME.key_secret`` with
``--client NAME``, the pair ``add_client(DIR, NAME)`` made) and ``server.key``. To admit
another subscriber, create its pair (``add_client(DIR, name)`` or ``zmq.auth.create_certificates``
on its host) and copy its public ``.key`` file into ``DIR/authorized/``, then restart the
publisher. Files use the ZeroMQ certificate format, so pyzmq, czmq and cppzmq tools read them.

Unauthorised subscribers are refused during the handshake by a ``ThreadAuthenticator`` and
receive nothing; without ``--curve-keys`` the stream is plain TCP, which is why the publisher
refuses non-loopback binds unless asked.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from luvnet.engine.errors import LuvnetError

SERVER_NAME = "server"
CLIENT_NAME = "client"
AUTHORIZED_DIR = "authorized"
_CREATE_HINT = "create keys with `luvnet keys DIR`"
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class CurveServerKeys:
    """What a publisher needs: its key pair and the directory of accepted client keys."""

    public: bytes
    secret: bytes = field(repr=False)  # keep secrets out of logs and tracebacks
    authorized_dir: Path
    authorized_count: int


@dataclass(frozen=True)
class CurveClientKeys:
    """What a subscriber needs: its own key pair and the publisher's public key."""

    public: bytes
    secret: bytes = field(repr=False)  # keep secrets out of logs and tracebacks
    server_public: bytes


def _check_key(path: Path, key: bytes | None, what: str) -> bytes:
    # A CURVE key is 32 bytes, written as 40 Z85 characters.
    try:
        if key is not None and len(key) == 40 and len(zmq.utils.z85.decode(key)) == 32:
            return key
    except (ValueError, KeyError):  # z85.decode raises KeyError on a character outside Z85
        pass
    raise LuvnetError(f"{path}: expected a {what} of 40 Z85 characters; regenerate the key files")


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise LuvnetError(f"{path}: key file not found; {_CREATE_HINT}")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise LuvnetError(f"{path}: not a ZeroMQ certificate ({err})") from None
    public = _check_key(path, public, "public-key")
    if secret:
        secret_key = _check_key(path, secret_key, "secret-key")
    return public, secret_key


def _key_dir(key_dir: str | os.PathLike[str]) -> Path:
    path = Path(key_dir)
    if not path.is_dir():
        raise LuvnetError(f"--curve-keys {path}: not a directory; {_CREATE_HINT}")
    return path


def load_server_keys(key_dir: str | os.PathLike[str]) -> CurveServerKeys:
    """Read ``DIR/server.key_secret`` and check ``DIR/authorized/`` holds valid public keys."""
    path = _key_dir(key_dir)
    public, secret = _load(path / f"{SERVER_NAME}.key_secret", secret=True)
    authorized = path / AUTHORIZED_DIR
    key_files = sorted(authorized.glob("*.key")) if authorized.is_dir() else []
    if not key_files:
        raise LuvnetError(
            f"--curve-keys {path}: no client public keys in {authorized}/; every subscriber "
            "would be refused (copy a client's .key file there)"
        )
    for key_file in key_files:
        _load(key_file, secret=False)
    assert secret is not None  # _load(secret=True) guarantees it
    return CurveServerKeys(public, secret, authorized, len(key_files))


def load_client_keys(
    key_dir: str | os.PathLike[str] | None = None,
    *,
    client: str = CLIENT_NAME,
    client_secret_file: str | os.PathLike[str] | None = None,
    server_public_file: str | os.PathLike[str] | None = None,
) -> CurveClientKeys:
    """A subscriber's keys: ``DIR/<client>.key_secret`` (``client`` as named by
    ``luvnet keys DIR --client NAME``) and ``DIR/server.key``, or the two files named explicitly
    (e.g. a pair made on the subscriber's own host)."""

    def pick(explicit: str | os.PathLike[str] | None, default_name: str) -> Path:
        if explicit is not None:
            return Path(explicit)
        if key_dir is None:
            raise LuvnetError("curve keys: give a key directory or both key files")
        return _key_dir(key_dir) / default_name

    mine = pick(client_secret_file, f"{client}.key_secret")
    if client_secret_file is None and not mine.is_file():
        others = sorted(
            path.name.removesuffix(".key_secret")
            for path in mine.parent.glob("*.key_secret")
            if path.name != f"{SERVER_NAME}.key_secret"
        )
        if others:
            raise LuvnetError(
                f"{mine}: key file not found; this directory holds the client pair(s) "
                f"{', '.join(others)}: pass --client {others[0]}"
            )
    server = pick(server_public_file, f"{SERVER_NAME}.key")
    public, secret = _load(mine, secret=True)
    server_public, _ = _load(server, secret=False)
    assert secret is not None
    return CurveClientKeys(public, secret, server_public)


def apply_server_curve(socket: zmq.Socket, keys: CurveServerKeys) -> None:
    """Make ``socket`` a CURVE server; call before bind."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def apply_client_curve(socket: zmq.Socket, keys: CurveClientKeys) -> None:
    """Make ``socket`` a CURVE client of the server whose public key is in ``keys``."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


def start_authenticator(context: zmq.Context, keys: CurveServerKeys) -> ThreadAuthenticator:
    """Accept only the clients whose public keys are in ``keys.authorized_dir``.

    One authenticator per context (it binds the context's ZAP endpoint); stop it before
    terminating the context.
    """
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth


def _private_file(path: str) -> None:
    os.chmod(path, 0o600)


def add_client(key_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Create the pair ``DIR/<name>.key(_secret)`` and authorise it; return (public, secret)."""
    path = _key_dir(key_dir)
    if not _CLIENT_NAME.fullmatch(name) or name == SERVER_NAME:
        raise LuvnetError(
            f"client name: expected [A-Za-z0-9_-]{{1,64}}, not 'server'; got {name!r}"
        )
    if (path / f"{name}.key_secret").exists():
        raise LuvnetError(f"{path / name}.key_secret exists; choose another client name")
    public_file, secret_file = zmq.auth.create_certificates(path, name)
    _private_file(secret_file)
    authorized = path / AUTHORIZED_DIR
    authorized.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(public_file, authorized / f"{name}.key")
    return Path(public_file), Path(secret_file)


def generate_keys(key_dir: str | os.PathLike[str]) -> Path:
    """Create the server pair, one authorised client pair ("client"), and the layout above."""
    path = Path(key_dir)
    if (path / f"{SERVER_NAME}.key_secret").exists():
        raise LuvnetError(
            f"{path}: already holds {SERVER_NAME}.key_secret; use an empty directory or add_client"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _, secret_file = zmq.auth.create_certificates(path, SERVER_NAME)
        _private_file(secret_file)
        add_client(path, CLIENT_NAME)
    except OSError as err:
        raise LuvnetError(f"{path}: cannot write keys ({err.strerror})") from None
    return path
