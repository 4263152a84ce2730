"""``luvnet info`` through its real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "info", *args],
        capture_output=True,
        text=True,
    )


def test_densenet161_matches_the_paper():
    result = run_info("--backbone", "densenet161", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    for key in (
        "backbone",
        "embed_dim",
        "params_total",
        "params_encoder",
        "params_head",
        "macs_per_frame",
        "macs_head",
    ):
        assert key in info, f"missing {key}"
    assert abs(info["params_total"] - 135.99e6) / 135.99e6 < 0.005, info["params_total"]
    assert info["params_total"] == info["params_encoder"] + info["params_head"]
    assert info["embed_dim"] == 2208
    assert 9.9e9 < info["macs_per_frame"] < 10.3e9, info["macs_per_frame"]
    assert 1.8e9 < info["macs_head"] < 2.1e9, info["macs_head"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("--backbone", "nope"), "unknown 'nope'"),
        (("--checkpoint", "/nonexistent/ckpt"), "no such directory"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = run_info(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
