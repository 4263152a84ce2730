"""Checkpoint round trip and refusal of anything that is not a luvnet checkpoint."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    save_checkpoint,
)
from luvnet.engine.model.network import build_luvnet


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_luvnet("resnet18", kernel_size=5, fusion_hidden=64).eval()
    config = model.config.replace(thresholds=(0.1, 0.2, 0.3, 0.4))
    save_checkpoint(model, tmp_path / "ckpt", config=config)
    return model, tmp_path / "ckpt"


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    assert loaded.config.thresholds == (0.1, 0.2, 0.3, 0.4)
    assert loaded.config.kernel_size == 5 and loaded.config.fusion_hidden == 64
    assert len(loaded.model_id) == 12
    clip = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        a, _ = model(clip)
        b, _ = loaded.model(clip)
    assert torch.equal(a, b)
    assert "command" in loaded.provenance and "created" in loaded.provenance


def test_loading_the_weights_file_path_works(saved):
    _, path = saved
    assert load_checkpoint(path / WEIGHTS_FILE).config.backbone == "resnet18"


def test_wrong_backbone_is_named(saved):
    _, path = saved
    with pytest.raises(LuvnetError, match="backbone is 'resnet18', expected 'densenet161'"):
        load_checkpoint(path, expect_backbone="densenet161")


def test_shape_mismatch_names_the_key(saved):
    _, path = saved
    document = json.loads((path / CONFIG_FILE).read_text())
    document["model"]["fusion_hidden"] = 32
    (path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(LuvnetError, match=r"key 'clip_head\.fusion\.0\.weight' has shape"):
        load_checkpoint(path)


def test_missing_and_unexpected_keys_are_named(saved, tmp_path):
    model, path = saved
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.pop("clip_head.classifier.3.bias")
    save_file(state, str(path / WEIGHTS_FILE))
    with pytest.raises(LuvnetError, match=r"missing key 'clip_head\.classifier\.3\.bias'"):
        load_checkpoint(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path / WEIGHTS_FILE))
    with pytest.raises(LuvnetError, match=r"unexpected key 'extra\.weight'"):
        load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('pwned')",))


def test_malicious_pickle_is_refused_without_running(saved, tmp_path, monkeypatch):
    _, path = saved
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_PATH", str(marker))
    (path / WEIGHTS_FILE).write_bytes(pickle.dumps({"state": _Exploit()}))
    with pytest.raises(LuvnetError, match="pickle; refusing"):
        load_checkpoint(path)
    assert not marker.exists(), "the pickle was executed"
    # A torch.save file passed directly is refused as well.
    torch.save({"x": _Exploit()}, tmp_path / "model.pt")
    with pytest.raises(LuvnetError, match="never loads pickled"):
        load_checkpoint(tmp_path / "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, bytes(range(256)) * 4])
def test_random_bytes_are_refused(saved, content):
    _, path = saved
    (path / WEIGHTS_FILE).write_bytes(content)
    with pytest.raises(LuvnetError, match="safetensors"):
        load_checkpoint(path)


def test_bad_config_json_is_one_line(saved):
    _, path = saved
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(LuvnetError, match="not valid JSON"):
        load_checkpoint(path)


def test_cli_reports_a_bad_checkpoint_in_one_line(saved):
    _, path = saved
    (path / WEIGHTS_FILE).write_bytes(pickle.dumps([1, 2, 3]))
    result = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "info", "--checkpoint", str(path), "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "refusing" in result.stderr


# --------------------------------------------------------------------------- copies gone wrong

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 45678912\n"
)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda data: LFS_POINTER.encode(),
            "a git-lfs pointer, not the weights: the repository was cloned without git-lfs; run "
            "`git lfs install && git lfs pull` in the clone, or fetch the real file "
            "(45678912 bytes)",
        ),
        (
            lambda data: b"<!DOCTYPE html>\n<html><body>model.safetensors</body></html>",
            "a web page (HTML), not the weights",
        ),
        (
            lambda data: data + b"\0" * 4096,
            "4096 bytes past the end of its tensors ({n} bytes, its header says {size}); the "
            "copy looks incomplete or padded",
        ),
        (
            lambda data: data[:-1000],
            "truncated: {n} bytes, but its header says the tensors end at byte {size} (1000 "
            "missing); the copy looks incomplete",
        ),
        (lambda data: data[:100], "truncated inside its header (100 bytes, the header alone"),
    ],
    ids=["git-lfs-pointer", "html-page", "padded", "truncated", "truncated-header"],
)
def test_a_bad_copy_of_the_weights_names_the_likely_cause(saved, make, message):
    _, path = saved
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(make(data))
    with pytest.raises(LuvnetError) as err:
        load_checkpoint(path)
    expected = message.format(n=weights.stat().st_size, size=len(data))
    assert str(err.value).startswith(f"{weights}: {expected}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_git_annex_link_without_its_content_names_git_annex(saved):
    _, path = saved
    weights = path / WEIGHTS_FILE
    weights.unlink()
    weights.symlink_to("../.git/annex/objects/Xx/Yy/SHA256E-s1--00.safetensors")
    with pytest.raises(LuvnetError, match=r"which is not there; in a git-annex clone, run `git"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),  # Notepad, UTF-8
        lambda text: text.replace("\n", "\r\n").encode("utf-16"),  # Notepad's "Unicode"
    ],
    ids=["utf8-bom-crlf", "utf16-bom-crlf"],
)
def test_a_config_saved_by_a_windows_editor_loads(saved, encode):
    model, path = saved
    config = path / CONFIG_FILE
    config.write_bytes(encode(config.read_text()))
    loaded = load_checkpoint(path)
    assert loaded.config == model.config.replace(thresholds=(0.1, 0.2, 0.3, 0.4))
