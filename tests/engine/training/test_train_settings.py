"""``luvnet train``'s options as typed settings, their checks, and the loop's stop decisions."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import pytest

from luvnet.commands.train import add_arguments, crop_box, settings_from
from luvnet.engine.errors import LuvnetError
from luvnet.engine.training.settings import FitSettings, TrainSettings
from luvnet.engine.training.state import Progress
from luvnet.engine.training.stopping import record_validation, stop_reason

BASE = TrainSettings(manifest=Path("m.csv"), out=Path("run"))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--manifest", "m.csv", "--out", "run", *argv])


def test_one_field_per_option_with_the_same_name_order_and_default():
    args = _parse()
    assert list(vars(args)) == [f.name for f in fields(TrainSettings)]
    assert settings_from(args) == BASE


def test_run_json_args_record_keeps_the_parsed_options_keys_and_values():
    args = _parse("--crop-box", "1,2,30,40", "--pos-weight", "auto", "--cache", "c", "--fold", "1")
    record = settings_from(args).record()
    expected = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    assert record == expected
    assert list(record) == list(expected)
    assert record["crop_box"] == "1,2,30,40" and record["cache"] == "c"


def test_crop_box_is_parsed_or_refused_in_one_line():
    assert crop_box(None) is None
    assert crop_box("0,5,20,30") == (0, 5, 20, 30)
    with pytest.raises(LuvnetError, match=r"^--crop-box: expected x,y,w,h \(4 integers\), got"):
        crop_box("1,2")
    with pytest.raises(LuvnetError, match=r"^--crop-box: expected x, y >= 0 and w, h >= 1, got"):
        crop_box("0,0,0,5")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "resnet"}, "--model: expected one of luvnet, no-temporal, frame, usvn"),
        ({"epochs": 0}, "--epochs: expected a positive number, got 0"),
        ({"max_minutes": -1.0}, "--max-minutes: expected a positive number, got -1.0"),
        ({"threads": -1}, "--threads: expected 0 or more, got -1"),
        ({"lr_patience": -2}, "--lr-patience: expected 0 or more, got -2"),
        ({"split_seed": -1}, "--split-seed: expected 0 or more, got -1"),
        ({"kernel_size": 4}, "--kernel-size: expected an odd positive number, got 4"),
        ({"test_fraction": 1.0}, "--test-fraction: expected a number in [0, 1), got 1.0"),
        ({"lr_schedule": "cosine"}, "--lr-schedule: expected one of plateau, linear"),
        ({"lr_schedule": "linear", "lr_patience": 1}, "--lr-patience: applies to --lr-schedule"),
        ({"freeze_bn_after": 1.0}, "--freeze-bn-after: expected a share of the run in [0, 1)"),
        ({"freeze_bn_after": 0.5}, "--freeze-bn-after: needs --bn-recalibrate N"),
        ({"lr_decay": 0.0}, "--lr-decay: expected a factor in (0, 1], got 0.0"),
        ({"dropout": 1.0}, "--dropout: expected a number in [0, 1), got 1.0"),
        ({"fold": -1}, "--fold: expected 0..4, got -1"),
        ({"fold": 5}, "--fold: expected 0..4, got 5"),
        ({"folds": 1}, "--folds: expected at least 2, got 1"),
    ],
)
def test_a_bad_value_is_one_error_naming_its_option(change: dict, message: str):
    with pytest.raises(LuvnetError) as caught:
        replace(BASE, **change).check()
    assert str(caught.value).startswith(message), caught.value


def test_the_defaults_pass_the_checks():
    BASE.check()
    replace(BASE, freeze_bn_after=0.0, bn_recalibrate=1, lr_schedule="linear").check()


def test_stop_reasons():
    settings = FitSettings(epochs=3, patience=2, budget_s=10.0)
    assert stop_reason(Progress(epoch=1), settings, 0.0) is None
    assert stop_reason(Progress(epoch=3), settings, 0.0) == "max_epochs"
    assert stop_reason(Progress(epoch=1, best_score=0.1, bad_epochs=2), settings, 0.0) == (
        "early_stop"
    )
    assert stop_reason(Progress(epoch=1, bad_epochs=5), settings, 0.0) is None, "never validated"
    assert stop_reason(Progress(epoch=1), settings, 10.0) == "budget"
    assert stop_reason(Progress(epoch=1), FitSettings(epochs=3), 1e9) is None, "no budget"


def test_validation_loss_bookkeeping_for_early_stopping():
    progress = Progress(epoch=0)
    assert record_validation(progress, 0.5, "loss")
    progress.epoch = 1
    assert not record_validation(progress, 0.6, "loss")
    assert not record_validation(progress, 0.5, "loss"), "equal is not better"
    assert (progress.best_epoch, progress.best_score, progress.bad_epochs) == (0, 0.5, 2)
    progress.epoch = 3
    assert record_validation(progress, 0.4, "loss")
    assert (progress.best_epoch, progress.best_score, progress.bad_epochs) == (3, 0.4, 0)


def test_validation_auc_bookkeeping_keeps_the_highest():
    progress = Progress(epoch=0)
    assert record_validation(progress, 0.6, "macro_auc")
    progress.epoch = 1
    assert not record_validation(progress, 0.5, "macro_auc"), "a lower AUC is no gain"
    assert not record_validation(progress, 0.6, "macro_auc"), "equal is not better"
    assert (progress.best_epoch, progress.best_score, progress.bad_epochs) == (0, 0.6, 2)
    progress.epoch = 3
    assert record_validation(progress, 0.7, "macro_auc")
    assert (progress.best_epoch, progress.best_score, progress.bad_epochs) == (3, 0.7, 0)
