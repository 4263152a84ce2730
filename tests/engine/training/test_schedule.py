"""The lr schedule and BatchNorm policy of a fold, on their own (engine/training/schedule.py)."""

from __future__ import annotations

import pytest
import torch

from luvnet.engine.training.schedule import (
    Schedule,
    current_lr,
    run_fraction,
    scale_lr,
    set_lr,
    steps_per_epoch,
    train_mode,
)


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout())


def test_steps_per_epoch_rounds_up_a_partial_accumulation_group():
    assert steps_per_epoch(10, 1) == 10
    assert steps_per_epoch(10, 3) == 4
    assert steps_per_epoch(9, 3) == 3


def test_run_fraction_is_the_larger_share_of_steps_and_budget():
    assert run_fraction(5, steps_per_epoch=10, epochs=2) == pytest.approx(0.25)
    # The clock is further along than the steps: the clock wins.
    share = run_fraction(5, steps_per_epoch=10, epochs=2, elapsed_s=30.0, budget_s=60.0)
    assert share == pytest.approx(0.5)
    # The steps are further along: they win.
    share = run_fraction(15, steps_per_epoch=10, epochs=2, elapsed_s=6.0, budget_s=60.0)
    assert share == pytest.approx(0.75)
    assert run_fraction(99, steps_per_epoch=10, epochs=2) == 1.0, "clamped at the end"
    assert run_fraction(0, steps_per_epoch=0, epochs=0) == 0.0, "no division by zero"
    assert run_fraction(3, steps_per_epoch=10, epochs=1, elapsed_s=5.0) == pytest.approx(0.3)


def test_linear_lr_per_step_follows_the_formula_over_the_run():
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = Schedule(lr=0.1, kind="linear")
    epochs, n_batches, accumulate = 3, 7, 2
    per_epoch = steps_per_epoch(n_batches, accumulate)
    total = epochs * per_epoch
    seen = []
    for step in range(total):
        lr = schedule.lr_at(run_fraction(step, steps_per_epoch=per_epoch, epochs=epochs))
        assert lr is not None
        set_lr(optimizer, lr)
        seen.append(current_lr(optimizer))
    assert seen == pytest.approx([0.1 * (1 - k / total) for k in range(total)])
    assert all(g["lr"] == seen[-1] for g in optimizer.param_groups)


def test_plateau_keeps_the_lr_and_decays_after_every_patience_bad_epochs():
    schedule = Schedule(lr=0.1, kind="plateau", lr_decay=0.5, lr_patience=2)
    assert schedule.lr_at(0.7) is None, "plateau never sets the lr per step"
    assert [schedule.plateau_decay_due(b) for b in range(7)] == [
        False, False, True, False, True, False, True,
    ]  # fmt: skip
    assert not Schedule(lr=0.1, lr_patience=0).plateau_decay_due(3), "patience 0 = constant lr"
    optimizer = torch.optim.SGD(_model().parameters(), lr=0.1)
    assert scale_lr(optimizer, 0.5) == pytest.approx(0.05)
    assert scale_lr(optimizer, 0.5) == pytest.approx(0.025)


def test_batchnorm_freeze_decision():
    schedule = Schedule(lr=0.1, freeze_bn_after=0.75, bn_recalibrate=4)
    assert schedule.follows_run(bn_frozen=False), "the share must be measured to freeze"
    assert not schedule.follows_run(bn_frozen=True), "plateau and frozen: nothing to follow"
    assert not schedule.freeze_due(0.74, bn_frozen=False)
    assert schedule.freeze_due(0.75, bn_frozen=False)
    assert not schedule.freeze_due(0.9, bn_frozen=True), "frozen once"
    assert not Schedule(lr=0.1).freeze_due(1.0, bn_frozen=False), "off by default"
    assert Schedule(lr=0.1, freeze_bn_after=0.0, bn_recalibrate=1).freeze_due(0.0, False)
    assert Schedule(lr=0.1, kind="linear").follows_run(bn_frozen=True)


def test_recalibration_before_validation_only_while_not_frozen():
    schedule = Schedule(lr=0.1, bn_recalibrate=2)
    assert schedule.recalibrate_before_validation(bn_frozen=False)
    assert not schedule.recalibrate_before_validation(bn_frozen=True)
    assert not Schedule(lr=0.1).recalibrate_before_validation(bn_frozen=False)


def test_train_mode_keeps_frozen_batchnorm_statistics_fixed():
    torch.manual_seed(0)
    model = _model()
    norm = model[1]
    train_mode(model, bn_frozen=True)
    assert model.training and model[0].training and model[2].training
    assert not norm.training
    before = norm.running_mean.clone()
    model(torch.randn(8, 3) + 5.0)
    assert torch.equal(norm.running_mean, before), "frozen statistics changed"
    train_mode(model, bn_frozen=False)
    assert norm.training
    model(torch.randn(8, 3) + 5.0)
    assert not torch.equal(norm.running_mean, before)
