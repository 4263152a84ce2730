"""luvnet.engine.files and luvnet.engine.runtime: the one home of atomic writes, JSON reading
and device resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import (
    atomic_open,
    decode_text,
    read_json_object,
    read_versioned_json,
    write_json,
)
from luvnet.engine.runtime import resolve_device


def test_atomic_open_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "no temporary file left behind"
    with atomic_open(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"


def test_write_json_is_strict(tmp_path: Path) -> None:
    with pytest.raises(LuvnetError, match=r"m\.json: cannot be written as JSON"):
        write_json(tmp_path / "m.json", {"auc": float("nan")})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "m.json", {"auc": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": 0.5}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "missing; expected a config"),
        (b"{not json", "not valid JSON (Expecting property name"),
        (b"[1, 2]", "expected a config, got a JSON list"),
        (b'{"a": "\xe9"}', "not UTF-8 text (invalid continuation byte at byte 7); save it as"),
        (b"\xff\xfe{\x00}", "not UTF-16 LE text (truncated data at byte 4)"),
    ],
)
def test_read_json_object_errors_are_one_line(tmp_path: Path, raw: bytes | None, message: str):
    path = tmp_path / "c.json"
    if raw is not None:
        path.write_bytes(raw)
    with pytest.raises(LuvnetError) as err:
        read_json_object(path, expected="a config")
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_read_json_object_takes_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'\xef\xbb\xbf{\r\n  "a": 1\r\n}\r\n')
    assert read_json_object(path) == {"a": 1}


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
)
def test_decode_text_reads_what_editors_and_spreadsheets_save(encoding: str) -> None:
    """UTF-16/32 with a mark (Notepad's "Unicode", a spreadsheet's "Unicode Text"); UTF-16
    without one (known from its NUL bytes); UTF-8 with or without a mark."""
    text = 'video\tpatient_id\r\n{"ü": "肺"}\r\n'
    assert decode_text(text.encode(encoding), "f") == text


def test_decode_text_names_the_encoding_and_the_fix() -> None:
    with pytest.raises(LuvnetError) as err:
        decode_text("Lunge rechts ü".encode("cp1252"), "m.csv", hint="save as 'CSV UTF-8'")
    assert str(err.value) == (
        "m.csv: not UTF-8 text (invalid start byte at byte 13); save as 'CSV UTF-8'"
    )


def test_read_versioned_json(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json(path, {"format": "x", "format_version": 2})
    assert read_versioned_json(path, format="x", version=2, expected="x")["format"] == "x"
    with pytest.raises(LuvnetError, match=r"format_version 2 unsupported; expected 3; start over"):
        read_versioned_json(path, format="x", version=3, expected="x", hint="start over")
    with pytest.raises(LuvnetError, match=r'expected "format": "y", got \'x\''):
        read_versioned_json(path, format="y", version=2, expected="y")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    with pytest.raises(LuvnetError, match=r"--backend-device: expected auto, cpu, cuda"):
        resolve_device("tpu", option="--backend-device")
    if not torch.cuda.is_available():
        with pytest.raises(LuvnetError, match=r"--device cuda: no CUDA GPU is visible"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").index is not None  # always an explicit index
