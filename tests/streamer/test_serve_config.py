"""`luvnet serve --config`: the YAML file is checked before anything starts; a bad value or an
unknown key is one line naming the file and the key (through the command line, no Ray)."""

from __future__ import annotations

import pytest

from luvnet.cli import main
from tests.streamer.serve_helpers import require_serve, serve_config, write_config


@pytest.fixture(autouse=True)
def _serve_extra() -> None:
    require_serve()


def run_config(tmp_path, capsys, config) -> tuple[int, str]:
    path = write_config(tmp_path / "serve.yaml", config)
    code = main(["serve", "--config", str(path), "--max-frames", "5"])
    return code, capsys.readouterr().err


def base(tmp_path) -> dict:
    return serve_config(
        "tcp://127.0.0.1:5599", tmp_path / "ckpt", [{"id": "bed1", "source": "phantom:1"}]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["encoder"].update(replicas="two"),
            "serve.yaml: encoder.replicas: expected a positive integer, got 'two'",
        ),
        (
            lambda c: c["encoder"].update(replicas=0),
            "serve.yaml: encoder.replicas: expected a positive integer, got '0'",
        ),
        (
            lambda c: c["encoder"].update(batch_wait_ms=-1),
            "serve.yaml: encoder.batch_wait_ms: expected a number >= 0, got '-1'",
        ),
        (
            lambda c: c["encoder"].update(frames_in_flight=0),
            "serve.yaml: encoder.frames_in_flight: expected a positive integer, got '0'",
        ),
        (
            lambda c: c["encoder"].update(max_batch=4),
            "serve.yaml: encoder.max_batch: unknown key (did you mean max_batch_size?)",
        ),
        (
            lambda c: c.update(bakend="eager"),
            "serve.yaml: bakend: unknown key (did you mean backend?)",
        ),
        (
            lambda c: c["streams"][0].update(source="nope:1"),
            "serve.yaml: streams[0].source: unknown scheme 'nope'",
        ),
        (
            lambda c: c["streams"][0].update({"max-frames": 3}),
            "serve.yaml: streams[0].max-frames: unknown key (did you mean max_frames?)",
        ),
        (
            lambda c: c["streams"][0].update(size="big"),
            "serve.yaml: streams[0].size: expected HxW such as 924x1232, got 'big'",
        ),
        (
            lambda c: c["streams"].append({"id": "bed1", "source": "phantom:2"}),
            "serve.yaml: streams[1].id: 'bed1' names two streams",
        ),
        (
            lambda c: c["streams"].append({"source": "phantom:2"}),
            "serve.yaml: streams[1].id: missing",
        ),
        (lambda c: c.update(streams=[]), "serve.yaml: streams: expected a non-empty list"),
        (
            lambda c: c["publish"].update(bind="tcp://127.0.0.1"),
            "serve.yaml: publish.bind: expected tcp://HOST:PORT with a port 1..65535",
        ),
        (lambda c: c.update(precision="fp8"), "serve.yaml: precision: expected one of fp32, fp16"),
        (lambda c: c.update(ray=[1]), "serve.yaml: ray: expected a mapping of address, num_cpus"),
        (
            lambda c: c["encoder"].update(resources={"node2": "x"}),
            "serve.yaml: encoder.resources.node2: expected a positive number, got 'x'",
        ),
        (
            lambda c: c["streams"][0].update(loop="yes"),
            "serve.yaml: streams[0].loop: expected true",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, capsys, change, expected):
    config = base(tmp_path)
    change(config)
    code, err = run_config(tmp_path, capsys, config)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


def test_not_yaml_and_no_file(tmp_path, capsys):
    path = tmp_path / "serve.yaml"
    path.write_text("streams: [\n  - id: bed1\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serve.yaml: not valid YAML at line" in err, err
    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_good_file_gives_the_settings(tmp_path):
    from luvnet.commands.serve_config import load_serve_settings

    config = base(tmp_path)
    config["streams"].append(
        {
            "id": "bed2",
            "source": "phantom:2",
            "as_fast_as_possible": True,
            "crop": [1, 2, 30, 40],
            "size": "240x320",
            "fps": 25,
            "head": "window",
        }
    )
    config["encoder"].update(
        resources={"node2": 1}, max_replicas_per_node=1, frames_in_flight=1, requests_in_flight=2
    )
    settings = load_serve_settings(write_config(tmp_path / "serve.yaml", config), max_frames=7)
    one, two = settings.streams
    assert (one.stream_id, one.realtime, one.max_frames) == ("bed1", True, 7)
    assert (two.crop_box, two.source_options, two.head_mode) == (
        (1, 2, 30, 40),
        {"size": (240, 320), "fps": 25.0},
        "window",
    )
    assert not two.realtime and two.max_frames == 7
    assert settings.encoder.resources == {"node2": 1.0}
    assert settings.encoder.max_replicas_per_node == 1
    assert (settings.encoder.frames_in_flight, settings.encoder.requests_in_flight) == (1, 2)
    assert settings.ray.num_cpus == 2 and settings.ray.address == "local"
