"""Options no other test ran through the command line, each run for real on small inputs.

tests/test_option_coverage.py lists which options need a test; the tests here fill the gaps it
found: ``--help`` of every command, and flags of info, phantom, stream, export, record,
attention, train, evaluate, bench and the ``python -m luvnet.commands`` tools. Each checks the
option's effect (a recorded setting, a file's frame rate, a stream's pace), not only the exit
status. Everything is real: ``luvnet.cli.main`` or a subprocess, real files, ZeroMQ on loopback.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import torch

from luvnet import cli
from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.network import build_luvnet
from luvnet.streamer.publisher import ScorePublisher
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset
from tests.streamer.conftest import write_video
from tests.streamer.message_factory import make_score, make_status
from tests.streamer.test_stream import run_stream

REPO = Path(__file__).resolve().parents[1]
MODULE_COMMANDS = ("demo_model", "phantom_speed", "soak")  # python -m luvnet.commands.NAME


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init LUV-Net on the smallest trunk, 64 px input (seconds to build)."""
    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", fusion_hidden=32, classifier_hidden=16).eval()
    config = model.config.replace(preprocess=PreprocessConfig(image_size=64))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "small", config=config)


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


# --------------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "command", [*cli.COMMANDS, *cli.consumer_commands(), *(f"-m {m}" for m in MODULE_COMMANDS)]
)
def test_every_command_prints_its_help(command: str, capsys: pytest.CaptureFixture[str]):
    if command.startswith("-m "):
        module = importlib.import_module(f"luvnet.commands.{command[3:]}")
        call = lambda: module.main(["--help"])  # noqa: E731 - one call, two forms
    else:
        module_name = {**cli.COMMANDS, **cli.consumer_commands()}[command][0]
        module = importlib.import_module(module_name)
        call = lambda: cli.main([command, "--help"])  # noqa: E731
    with pytest.raises(SystemExit) as done:
        call()
    assert done.value.code == 0
    out = capsys.readouterr().out
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    listed = [option for option in _long_options(parser) if option not in out]
    assert not listed, f"--help of {command} does not list {listed}"


# --------------------------------------------------------------------------- info, phantom


def test_info_model_variant_and_image_size(capsys: pytest.CaptureFixture[str]):
    def info(*args: str) -> dict:
        assert cli.main(["info", "--backbone", "mobilenet_v3_small", "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)

    frame = info("--model", "frame", "--image-size", "64")
    full = info("--model", "luvnet", "--image-size", "96")
    assert (frame["variant"], frame["image_size"]) == ("frame", 64)
    assert (full["variant"], full["image_size"]) == ("luvnet", 96)
    assert frame["params_head"] < full["params_head"], "the frame baseline has no temporal head"
    assert frame["params_encoder"] == full["params_encoder"]
    # MACs per frame grow with the input area: (96/64)^2 = 2.25, up to rounding of strides.
    assert 1.8 < full["macs_per_frame"] / frame["macs_per_frame"] < 2.7


def test_phantom_fps_sets_the_videos_frame_rate(tmp_path: Path):
    out = tmp_path / "ph"
    args = ["phantom", "--out", str(out), "--videos", "1", "--seconds", "1", "--fps", "12"]
    assert cli.main([*args, "--size", "96x128"]) == 0
    (video,) = sorted(out.glob("*.mp4"))
    capture = cv2.VideoCapture(str(video))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
    capture.release()
    assert (round(fps), int(frames)) == (12, 12)


# --------------------------------------------------------------------------- stream


def test_stream_fp16_on_a_cpu_is_one_line(small_checkpoint: Path):
    result, sub = run_stream(
        *("--checkpoint", str(small_checkpoint), "--device", "cpu", "--precision", "fp16"),
        *("--max-frames", "1"),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("luvnet stream: error:") and "--precision fp16" in last, last
    assert "Traceback" not in result.stderr and not sub.of_kind("scores")


@pytest.mark.slow
def test_stream_fps_paces_the_phantom(small_checkpoint: Path):
    result, sub = run_stream(
        *("--source", "phantom:2", "--size", "96x128", "--fps", "10"),
        *("--checkpoint", str(small_checkpoint), "--max-frames", "12"),
    )
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    assert len(scores) == 12
    # At 10 fps, 12 frames span 1.1 s of capture; the default 30 fps would take 0.37 s.
    span_s = (scores[-1]["capture_ns"] - scores[0]["capture_ns"]) / 1e9
    assert 0.95 < span_s < 3.0, span_s


# --------------------------------------------------------------------------- export


def test_export_opset_and_no_check(small_checkpoint: Path, tmp_path: Path, capsys):
    onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'luvnet[onnx]')")
    out = tmp_path / "onnx"
    args = ["export", "--format", "onnx", "--checkpoint", str(small_checkpoint), "--out", str(out)]
    assert cli.main([*args, "--opset", "14", "--no-check"]) == 0
    printed = capsys.readouterr().out
    assert "parity" not in printed, "--no-check must skip the onnxruntime parity check"
    meta = json.loads((out / "luvnet-onnx.json").read_text())
    assert meta["opset"] == 14
    for part in ("encoder", "head"):
        model = onnx.load(str(out / meta[part]["file"]))
        versions = {o.domain: o.version for o in model.opset_import}
        assert versions.get("", versions.get("ai.onnx")) == 14, versions


# --------------------------------------------------------------------------- record


@pytest.fixture()
def ward_feed(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A CURVE-encrypted publisher under ``luvnet.ward3`` carrying streams bed1 and bed2,
    every 10 ms; the key folder authorises one named client pair, ``nurse``, and no default."""
    keys = tmp_path / "keys"
    assert cli.main(["keys", str(keys)]) == 0
    assert cli.main(["keys", str(keys), "--client", "nurse"]) == 0
    (keys / "client.key_secret").unlink()  # only --client nurse can connect now
    pub = ScorePublisher("tcp://127.0.0.1:*", topic_prefix="luvnet.ward3", curve_keys=keys)
    stop = threading.Event()

    def loop() -> None:
        frame = 0
        while not stop.wait(0.01):
            for bed in ("bed1", "bed2"):
                pub.publish(make_status(stream_id=bed))
                pub.publish(make_score(frame=frame, stream_id=bed))
            frame += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield pub.endpoint, keys
    finally:
        stop.set()
        worker.join(10)
        pub.close()


def test_record_topic_prefix_curve_keys_client_and_duration(ward_feed, tmp_path: Path):
    endpoint, keys = ward_feed
    out = tmp_path / "bed1.jsonl"
    start = time.monotonic()
    rc = cli.main(
        [
            *("record", "--out", str(out), "--endpoint", endpoint),
            *("--topic-prefix", "luvnet.ward3.bed1", "--curve-keys", str(keys)),
            *("--client", "nurse", "--duration", "1.5", "--timeout", "30"),
        ]
    )
    elapsed = time.monotonic() - start
    assert rc == 0
    assert 1.5 <= elapsed < 30, f"--duration 1.5 ended after {elapsed:.1f} s"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    scores = [r for r in records if r["kind"] == "scores"]
    assert scores, "nothing recorded through CURVE with the named client pair"
    assert {r["stream_id"] for r in scores} == {"bed1"}, "--topic-prefix must select bed1 only"


# --------------------------------------------------------------------------- attention


def test_attention_threads_sets_torchs_cpu_threads(small_checkpoint: Path, tmp_path: Path):
    video = write_video(tmp_path / "scan.mp4", frames=40)
    out = tmp_path / "attention.png"
    before = torch.get_num_threads()
    try:
        args = ["attention", "--checkpoint", str(small_checkpoint), "--video", str(video)]
        assert cli.main([*args, "--out", str(out), "--device", "cpu", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert out.stat().st_size > 0


# --------------------------------------------------------------------------- train, evaluate

TRAIN_OPTIONS = ["--dropout", "0.2", "--seed", "5", "--patience", "7", "--accumulate", "2"]
TRAIN_OPTIONS += ["--amp", "--num-workers", "1", "--no-augment", "--epochs", "2"]


@pytest.fixture(scope="module")
def trained_with_options(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run folder, manifest, trunk weights file) of a tiny run with the options above."""
    root = tmp_path_factory.mktemp("options")
    manifest = make_dataset(root / "videos")
    weights = root / "trunk.pth"  # a local trunk file, as --weights PATH takes it
    import torchvision

    torch.manual_seed(1)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights)
    run = root / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(run), *TINY_TRAIN_ARGS]
    assert cli.main([*argv, *TRAIN_OPTIONS, "--weights", str(weights)]) == 0
    return run, manifest, weights


@pytest.mark.slow
def test_train_options_reach_the_run(trained_with_options):
    run, _, weights = trained_with_options
    recorded = json.loads((run / "run.json").read_text())
    args = recorded["args"]
    assert (args["patience"], args["accumulate"], args["num_workers"]) == (7, 2, 1)
    assert args["amp"] is True and args["augment"] is False
    best = json.loads((run / "fold_0" / "best" / "config.json").read_text())
    assert best["model"]["dropout"] == 0.2
    assert best["provenance"]["seed"] == 5 and best["provenance"]["split"]["seed"] == 5
    assert best["provenance"]["weights"] == str(weights)
    with (run / "fold_0" / "history.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2, "--epochs 2"


def _predictions(path: Path) -> dict[str, list[float]]:
    """clip id -> the four probabilities of a predictions.csv."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c.startswith("prob_")]
    assert len(columns) == 4, rows[0]
    return {r["clip_id"]: [float(r[c]) for c in columns] for r in rows}


@pytest.mark.slow
def test_evaluate_num_workers_and_amp_score_as_the_plain_run(trained_with_options, tmp_path):
    run, manifest, _ = trained_with_options
    base = ["evaluate", "--checkpoint", str(run / "fold_0" / "best"), "--manifest", str(manifest)]
    base += ["--device", "cpu", "--threads", "1"]
    assert cli.main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "workers"), "--num-workers", "1"]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "amp"), "--amp"]) == 0
    plain = _predictions(tmp_path / "plain" / "predictions.csv")
    assert _predictions(tmp_path / "workers" / "predictions.csv") == plain
    amp = _predictions(tmp_path / "amp" / "predictions.csv")
    assert amp.keys() == plain.keys()
    worst = max(abs(a - b) for k in plain for a, b in zip(amp[k], plain[k], strict=True))
    assert worst < 0.05, f"bf16 autocast moved a score by {worst}"


# --------------------------------------------------------------------------- bench, tools


@pytest.mark.slow
def test_bench_checkpoint_device_precision_backends_paced_source_head_threads(
    small_checkpoint: Path, tmp_path: Path
):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "luvnet.cli", "bench", "--checkpoint", str(small_checkpoint)),
            *("--device", "cpu", "--precision", "fp32", "--backends", "eager", "--threads", "1"),
            *("--size", "96x128", "--frames", "3", "--warmup", "1", "--naive-frames", "1"),
            *("--paced", "30", "--paced-seconds", "1", "--paced-source", "live"),
            *("--paced-head", "window", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {"cached_eager", "naive_eager"}, sorted(report["modes"])
    (paced,) = report["paced"].values()
    assert (paced["source"], paced["backend"]) == ("live", "eager")
    assert "window" in next(iter(report["paced"])), report["paced"].keys()
    assert paced["published"] >= 1


def test_phantom_speed_frames_and_scenes(capsys: pytest.CaptureFixture[str]):
    from luvnet.commands import phantom_speed

    assert phantom_speed.main(["--frames", "3", "--scenes", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 scenes x 3 frames" in out and "median" in out


@pytest.mark.slow
def test_soak_with_a_looped_file_and_a_random_trunk(tmp_path: Path):
    video = write_video(tmp_path / "scan.mp4", frames=20)
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "luvnet.commands.soak", "--minutes", "0.1"),
            *("--source", f"file:{video}", "--loop", "--as-fast-as-possible", "--fps", "30"),
            *("--backbone", "mobilenet_v3_small", "--image-size", "64", "--device", "cpu"),
            *("--backend", "eager", "--head", "window", "--threads", "1"),
            *("--warmup-s", "2", "--sample-s", "1", "--max-growth", "1", "--json", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    # 20 frames looped for 6 s as fast as the model goes: far more than one pass of the file.
    assert report["published"] > 20, report["published"]
    assert report["subscriber"]["scores"] == report["published"]
