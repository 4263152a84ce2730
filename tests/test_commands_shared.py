"""luvnet.commands' shared pieces: argument types, the log format, stop on a signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal

import pytest

from luvnet.commands import options
from luvnet.commands.logs import configure_logging
from luvnet.commands.signals import StopOnSignal, StopRequested


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (options.positive_int, "3", 3),
        (options.nonnegative_int, "0", 0),
        (options.positive_float, "0.5", 0.5),
        (options.crop_box, "1,2,30,40", (1, 2, 30, 40)),
        (options.frame_size, "240x320", (240, 320)),
    ],
)
def test_argument_types_accept(parse, text, value) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (options.positive_int, "0"),
        (options.positive_int, "two"),
        (options.nonnegative_int, "-1"),
        (options.positive_float, "nan"),
        (options.positive_float, "inf"),
        (options.crop_box, "1,2,3"),
        (options.crop_box, "-1,0,3,3"),
        (options.frame_size, "240*320"),
        (options.frame_size, "0x320"),
    ],
)
def test_argument_types_refuse_at_parse_time(parse, text, capsys) -> None:
    parser = argparse.ArgumentParser(prog="luvnet x")
    parser.add_argument("--value", type=parse)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([f"--value={text}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "luvnet x: error: argument --value: expected" in err and repr(text) in err, err


def test_one_log_format(capsys) -> None:
    configure_logging("train")
    log = logging.getLogger("luvnet.engine.training.fit")
    log.info("fold 0: epoch 1")
    log.warning("slow")
    log.error("bad")
    assert capsys.readouterr().err.splitlines() == [
        "luvnet train: fold 0: epoch 1",
        "luvnet train: warning: slow",
        "luvnet train: error: bad",
    ]
    configure_logging("train")  # a second call replaces the handler, never doubles lines
    log.info("once")
    assert capsys.readouterr().err == "luvnet train: once\n"


def test_stop_on_signal_sets_the_flag_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.stop.wait(5) and stop.signum == signal.SIGTERM and not stop.by_user
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_on_signal_interrupts_start_up_once() -> None:
    with StopOnSignal(interrupt_until_started=True) as stop:
        with pytest.raises(StopRequested):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode
        assert stop.by_user
        os.kill(os.getpid(), signal.SIGINT)  # a second signal only sets the flag
        assert stop.stopped
