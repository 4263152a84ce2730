"""What the running plugin exposes and what it will load (docs/threat-model.md).

Already covered elsewhere: the bind-address rules of ScorePublisher
(tests/streamer/test_publisher_client.py::test_non_loopback_bind_is_refused), CURVE key layout
and who receives at the library level (tests/streamer/test_security.py), pickles refused by the
checkpoint loader (tests/engine/model/test_checkpoint.py::test_malicious_pickle_is_refused_without_
running) and by `luvnet stream` (test_hostile_inputs.py here).
"""

from __future__ import annotations

import ast
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from luvnet.streamer.client import ScoreSubscriber
from luvnet.streamer.protocol import MAX_TEXT_CHARS, SCHEMA_VERSION
from luvnet.streamer.security import load_client_keys
from tests.reliability.helpers import REPO, LuvnetProcess, stream_args, wait_until
from tests.streamer.conftest import free_port


def luvnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "[::]"])
def test_stream_refuses_a_public_bind_without_allow_remote(tiny_checkpoint, host):
    port = free_port()
    done = luvnet("stream", "--bind", f"tcp://{host}:{port}", "--checkpoint", str(tiny_checkpoint))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--allow-remote" in done.stderr, done.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port must not have been bound"


# Every key a message may carry (docs/protocol.md): scores, attention curves, health. No key,
# and no size, leaves room for a frame (a 120x160 frame is 57 KB; these are about 1.5 KB).
WIRE_KEYS = {
    "v", "kind", "stream_id", "session", "seq", "frame", "capture_ns", "publish_ns", "fill",
    "window", "patterns", "scores", "thresholds", "flags", "latency_ms", "model_id", "backend",
    "device", "attention", "source", "state", "input_fps", "output_fps", "frames_captured",
    "frames_dropped", "frames_published", "uptime_s", "last_error",
}  # fmt: skip


@pytest.mark.slow
def test_curve_stream_reaches_authorised_listeners_only_and_carries_no_frames(
    tiny_checkpoint, short_video, tmp_path
):
    keys = tmp_path / "keys"
    assert luvnet("keys", str(keys)).returncode == 0
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stream = LuvnetProcess(
        stream_args(endpoint, tiny_checkpoint, f"file:{short_video}", "--loop")
        + ["--curve-keys", str(keys)],
        tmp_path / "stream.log",
    )
    # A raw CURVE subscriber with the authorised client keys: the bytes as they travel.
    client = load_client_keys(keys)
    context = zmq.Context()
    raw = context.socket(zmq.SUB)
    raw.linger = 0
    raw.curve_secretkey, raw.curve_publickey = client.secret, client.public
    raw.curve_serverkey = client.server_public
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(endpoint)
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir()
    _, secret = zmq.auth.create_certificates(intruder_dir, "intruder")
    intruder = ScoreSubscriber(
        endpoint,
        curve=load_client_keys(client_secret_file=secret, server_public_file=keys / "server.key"),
    )
    try:
        wait_until(lambda: raw.poll(100), 120, "the first message to the authorised client")
        listened = luvnet(
            "listen", "--endpoint", endpoint, "--curve-keys", str(keys), "--count", "5"
        )
        plain = luvnet("listen", "--endpoint", endpoint, "--count", "1", "--timeout", "5")
        wire = [raw.recv_multipart() for _ in range(40)]
        heard_by_intruder = intruder.recv(500)
        stream.signal(signal.SIGTERM)
        assert stream.wait(30) == 0, stream.stderr
    finally:
        stream.kill()
        intruder.close()
        raw.close()
        context.term()
    assert listened.returncode == 0, listened.stderr
    assert sum(line.startswith("seq ") for line in listened.stdout.splitlines()) == 5
    assert plain.returncode == 2 and "no message" in plain.stderr, "plaintext must hear nothing"
    assert heard_by_intruder is None and intruder.received_count == 0
    for topic, body in wire:
        assert topic in (b"luvnet.scores", b"luvnet.status")
        assert len(body) < 4096, f"{len(body)} bytes: more than scores and a 4x30 attention curve"
        message = msgpack.unpackb(body, raw=False)
        assert message["v"] == SCHEMA_VERSION and set(message) <= WIRE_KEYS, sorted(message)
        assert all(len(str(v)) <= MAX_TEXT_CHARS for k, v in message.items() if k != "attention")


# ----------------------------------------------------------------------- nothing unpickled

SCANNED = ("luvnet", "engine", "streamer", "plugins", "bench")
# Modules whose whole purpose is building objects (and so running code) from bytes.
PICKLING_MODULES = {
    "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal",
    "jsonpickle", "msgpack_numpy",
}  # fmt: skip
# Loaders that unpickle whatever their arguments.
PICKLING_LOADERS = {
    "torch.jit.load", "torch.export.load", "torch_tensorrt.load", "pandas.read_pickle",
    "yaml.load", "yaml.unsafe_load", "numpy.lib.format.read_array",
}  # fmt: skip
# Reviewed exceptions: (file, finding) -> why it is safe. Each must still be present.
ALLOWED = {
    ("engine/backends/tensorrt.py", "torch.export.load"): (
        "reloads the engine this process built and cached in the user's own cache directory "
        "(docs/threat-model.md: the compiled-artefact cache is trusted like the code)"
    ),
}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def unpickling_calls(path: Path) -> list[tuple[int, str]]:
    """(line, finding) for every way this file could unpickle or exec data."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[(name.asname or name.name).split(".")[0]] = name.name.split(".")[0]
                if name.name.split(".")[0] in PICKLING_MODULES:
                    found.append((node.lineno, f"import {name.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
            if root in PICKLING_MODULES:
                found.append((node.lineno, f"from {node.module} import"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name):
            name = _dotted(node, aliases)
            if name in PICKLING_LOADERS:
                found.append((node.lineno, name))
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name == "torch.load" and not _keyword_is(node, "weights_only", True):
            found.append((node.lineno, "torch.load without weights_only=True"))
        if name in ("numpy.load", "numpy.fromfile") and any(
            k.arg == "allow_pickle" and not _keyword_is(node, "allow_pickle", False)
            for k in node.keywords
        ):
            found.append((node.lineno, f"{name} with allow_pickle"))
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            found.append((node.lineno, f"{node.func.id}()"))
    return sorted(set(found))


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle as p\nimport numpy as np\nimport torch\nfrom torch import export\n"
        "torch.load('a')\ntorch.load('a', weights_only=True)\nnp.load('a', allow_pickle=True)\n"
        "np.load('a')\nexport.load('x')\nf = torch.jit.load\nexec('1')\nmodel.eval()\n"
    )
    assert unpickling_calls(sample) == [
        (1, "import pickle"),
        (5, "torch.load without weights_only=True"),
        (7, "numpy.load with allow_pickle"),
        (9, "torch.export.load"),
        (10, "torch.jit.load"),
        (11, "exec()"),
    ]


def test_nothing_is_unpickled_on_any_load_path():
    findings = {}
    for package in SCANNED:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            for line, what in unpickling_calls(path):
                findings[(relative, what)] = line
    unreviewed = {k: v for k, v in findings.items() if k not in ALLOWED}
    assert not unreviewed, "\n".join(
        f"{f}:{line}: {what}" for (f, what), line in unreviewed.items()
    )
    stale = [k for k in ALLOWED if k not in findings]
    assert not stale, f"allowed exceptions no longer in the code (remove them): {stale}"
