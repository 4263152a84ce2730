"""luvnet train on tiny hand-made videos: outputs, thresholds, report, budget, SIGKILL resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.split_record import patients_digest
from luvnet.engine.data.splits import splits_from_manifest
from luvnet.engine.evaluation.metrics import read_metrics, youden_thresholds
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.model.checkpoint import file_sha256, load_checkpoint
from luvnet.engine.model.loss import masked_bce, parse_pos_weight
from luvnet.engine.training.batchnorm import recalibrate_batchnorm
from luvnet.engine.training.state import (
    join_optimizer_state,
    load_state,
    save_state,
    split_optimizer_state,
)
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos"), root / "cache"


@pytest.fixture(scope="module")
def trained(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, cache = data
    out = tmp_path_factory.mktemp("run") / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "2", "--bn-recalibrate", "2"]) == 0
    return out


def test_run_writes_checkpoints_history_and_metrics(trained: Path, data: tuple[Path, Path]):
    fold = trained / "fold_0"
    for name in (
        "best/model.safetensors",
        "best/config.json",
        "last/state.json",
        "history.csv",
        "metrics_val.json",
        "predictions_val.csv",
        "metrics_test.json",
        "predictions_test.csv",
    ):
        assert (fold / name).is_file(), f"missing {name}"
    run = json.loads((trained / "run.json").read_text())
    assert (run["model"], run["backbone"]) == ("luvnet", "mobilenet_v3_small")
    with (fold / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["val_loss"]) > 0 for r in rows)
    state = load_state(fold / "last")
    assert state is not None
    assert (state.progress.epoch, state.progress.stop_reason) == (2, "max_epochs")
    for split in ("val", "test"):
        metrics = read_metrics(fold / f"metrics_{split}.json")
        assert metrics["n_clips"] == len(read_predictions(fold / f"predictions_{split}.csv").clips)


def test_youden_thresholds_land_in_the_checkpoint(trained: Path, data: tuple[Path, Path]):
    fold = trained / "fold_0"
    val = read_predictions(fold / "predictions_val.csv")
    expected = youden_thresholds(val.labels, val.probs)
    ckpt = load_checkpoint(fold / "best")
    assert all(t is not None for t in expected), "tiny set should define every threshold"
    assert ckpt.config.thresholds == pytest.approx(expected, abs=0.0)
    test_metrics = read_metrics(fold / "metrics_test.json")
    assert test_metrics["threshold_source"] == "given"
    applied = [test_metrics["patterns"][p]["threshold"] for p in ckpt.config.pattern_names]
    assert applied == list(ckpt.config.thresholds)


def test_provenance_records_manifest_hash_and_patient_split(trained, data):
    manifest, _ = data
    ckpt = load_checkpoint(trained / "fold_0" / "best")
    assert ckpt.provenance["manifest_sha256"] == file_sha256(manifest)
    record = ckpt.provenance["split"]
    assert "patients" not in record, "patient ids must not be stored in clear"
    plan = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0)
    fold = plan.fold(0)
    sets = {"train": fold.train, "val": fold.val, "test": fold.test}
    assert all(sets.values())
    assert not (fold.train & fold.val or fold.train & fold.test or fold.val & fold.test)
    assert record["patient_counts"] == {k: len(v) for k, v in sets.items()}
    digests = record["patient_digests"]
    params = {k: digests[k] for k in ("n", "r", "p")}
    for name, patients in sets.items():
        assert digests[name] == patients_digest(patients, digests["salt"], **params), name
    # A set digest checks the whole list, not one patient: one swapped id changes it.
    swapped = (fold.test - {min(fold.test)}) | {min(fold.train)}
    assert patients_digest(swapped, digests["salt"], **params) != digests["test"]
    tested = {c.patient_id for c in read_predictions(trained / "fold_0/predictions_test.csv").clips}
    assert tested == fold.test
    run = json.loads((trained / "run.json").read_text())
    assert run["split"]["patient_counts"] == {"test": len(fold.test)}
    assert run["split"]["patient_digests"]["test"] == patients_digest(
        fold.test, run["split"]["patient_digests"]["salt"], **params
    )


def test_no_patient_id_in_checkpoints_run_json_or_logs(data, tmp_path: Path):
    """Record-number-like ids through the real `luvnet train`: none of them lands in a
    checkpoint, the resume state, run.json, metrics, history or the log; only the local
    per-clip predictions name patients (docs/threat-model.md)."""
    manifest, cache = data
    rows = list(csv.DictReader(manifest.open()))
    ids = {p: f"MRN-{4711000 + i}-X" for i, p in enumerate(sorted({r["patient_id"] for r in rows}))}
    renamed = manifest.with_name("manifest_mrn.csv")  # beside the videos it names
    with renamed.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "patient_id": ids[r["patient_id"]]} for r in rows)
    out = tmp_path / "run"
    result = subprocess.run(
        _cli("train", "--manifest", str(renamed), "--out", str(out), "--cache", str(cache),
             *TINY_TRAIN_ARGS, "--epochs", "1"),
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {"run.json", "config.json", "model.safetensors", "state.json"} <= {p.name for p in files}
    local = {"predictions_val.csv", "predictions_test.csv"}
    leaks = {
        str(path.relative_to(out)): [i for i in ids.values() if i.encode() in path.read_bytes()]
        for path in files
        if path.name not in local
    }
    assert not any(leaks.values()), leaks
    assert not [i for i in ids.values() if i in result.stdout + result.stderr], result.stderr
    named = {c.patient_id for c in read_predictions(out / "fold_0/predictions_test.csv").clips}
    assert named and named <= set(ids.values()), "the local predictions keep their patients"


@pytest.mark.parametrize("split", ["val", "test"])
def test_report_reads_the_run(trained: Path, split: str, capsys: pytest.CaptureFixture[str]):
    assert main(["report", str(trained), "--split", split]) == 0
    out = capsys.readouterr().out
    assert "| luvnet (mobilenet_v3_small, 8 heads) | 1 |" in out, out


def test_budget_stops_cleanly_and_keeps_a_best_checkpoint(data, tmp_path: Path):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "50", "--max-minutes", "0.0001"]) == 0
    state = load_state(out / "fold_0" / "last")
    assert state is not None and state.progress.stop_reason == "budget"
    assert state.progress.history[-1]["partial"] is True
    assert len(state.progress.history) == 1
    assert load_checkpoint(out / "fold_0" / "best").config.backbone == "mobilenet_v3_small"
    assert (out / "fold_0" / "metrics_test.json").is_file()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "luvnet.cli", *args]


def _wait_for_mid_epoch(proc: subprocess.Popen, state_json: Path, timeout: float = 120.0) -> None:
    """Until the saved state is in epoch 2 (index 1) past its second batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be killed mid-epoch"
        try:
            progress = json.loads(state_json.read_text())["progress"]
        except (OSError, ValueError, KeyError):
            progress = None
        if progress and progress["epoch"] == 1 and progress["step"] >= 2:
            return
        time.sleep(0.01)
    raise AssertionError("no mid-epoch state saved in time")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_continues(data, tmp_path: Path):
    manifest, cache = data
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = ["train", "--manifest", str(manifest), "--cache", str(cache), *TINY_TRAIN_ARGS]
    command = [*base, "--epochs", "2", "--batch-size", "1", "--save-every", "1"]
    killed = tmp_path / "killed"
    state_json = killed / "fold_0" / "last" / "state.json"
    proc = subprocess.Popen(
        _cli(*command, "--out", str(killed)),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_mid_epoch(proc, state_json)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = json.loads(state_json.read_text())["progress"]
    assert before["epoch"] == 1 and before["step"] >= 2

    resumed = subprocess.run(
        _cli(*command, "--out", str(killed)), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"epoch 2, batch {before['step']}" in resumed.stderr, resumed.stderr[-2000:]
    assert "epoch 1/2" not in resumed.stderr, "the resumed run retrained epoch 1"
    after = load_state(killed / "fold_0" / "last")
    assert after is not None
    assert after.progress.epoch == 2 and after.progress.stop_reason == "max_epochs"
    assert [row["epoch"] for row in after.progress.history] == [1, 2]
    # Epoch 1 was not redone: its row, timings included, is the one saved before the kill.
    assert after.progress.history[0] == before["history"][0]

    # The continuation is the same training: same batches, augmentation and RNG as a run that
    # was never interrupted (CPU kernels are deterministic; a small tolerance for BLAS order).
    straight = tmp_path / "straight"
    done = subprocess.run(
        _cli(*command, "--out", str(straight)), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = load_state(straight / "fold_0" / "last")
    assert reference is not None
    assert after.progress.global_step == reference.progress.global_step
    for key, value in reference.model.items():
        if value.is_floating_point():
            assert torch.allclose(after.model[key], value, rtol=1e-3, atol=1e-5), key


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "-1", "--lr: expected a positive number, got -1.0"),
        ("--model", "resnet", "--model: expected one of luvnet, no-temporal, frame, usvn"),
        ("--fold", "7", "fold: expected 0..1, got 7"),
        ("--kernel-size", "4", "--kernel-size: expected an odd positive number, got 4"),
        ("--pos-weight", "1,2", "--pos-weight: expected 'auto' or 4 positive numbers"),
        ("--crop-box", "1,2", "--crop-box: expected x,y,w,h (4 integers), got '1,2'"),
        ("--num-heads", "7", "does not divide embed_dim 576"),
        ("--test-fraction", "1.5", "--test-fraction: expected a number in [0, 1), got 1.5"),
        ("--lr-schedule", "cosine", "--lr-schedule: expected one of plateau, linear, got 'cosine'"),
        ("--freeze-bn-after", "1.5", "--freeze-bn-after: expected a share of the run in [0, 1)"),
        ("--freeze-bn-after", "0.5", "--freeze-bn-after: needs --bn-recalibrate N"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
):
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY_TRAIN_ARGS]
    argv += ["--cache", str(cache), "--epochs", "1", flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet train: error: "), err
    assert message in err, err


def test_missing_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "nope.csv"
    assert main(["train", "--manifest", str(missing), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err, err


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    labels = torch.tensor([[1.0, float("nan"), 0.0, float("nan")]])
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(0.5))) / 2
    assert masked_bce(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    weighted = masked_bce(logits, labels, torch.tensor([3.0, 1.0, 1.0, 1.0])).item()
    assert weighted == pytest.approx((3 * np.log1p(np.exp(-2.0)) + np.log1p(np.exp(0.5))) / 2)
    assert parse_pos_weight("auto", ["a", "b"]) == "auto"
    assert parse_pos_weight("1,2.5", ["a", "b"]) == [1.0, 2.5]


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        model(torch.randn(5, 3)).square().sum().backward()
        opt.step()
    tensors, rest = split_optimizer_state(opt.state_dict())
    json.dumps(rest)  # the non-tensor part must be plain JSON
    joined = join_optimizer_state(tensors, json.loads(json.dumps(rest)))
    original = opt.state_dict()
    for pid, entries in original["state"].items():
        for key, value in entries.items():
            assert torch.equal(joined["state"][pid][key], value), (pid, key)
    from luvnet.engine.training.state import Progress

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    fingerprint = {"seed": 0}
    save_state(tmp_path, progress=Progress(epoch=1), fingerprint=fingerprint, model=model,
               optimizer=opt, scaler=scaler)  # fmt: skip
    save_state(tmp_path, progress=Progress(epoch=2), fingerprint=fingerprint, model=model,
               optimizer=opt, scaler=scaler)  # fmt: skip
    assert len(list(tmp_path.glob("state-*.safetensors"))) == 1, "older generations are removed"
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_state(tmp_path)
    assert loaded is not None and loaded.progress.epoch == 2
    fresh = torch.optim.Adam(model.parameters(), lr=0.01)
    fresh.load_state_dict(loaded.optimizer)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], original["state"][0]["exp_avg"])


def test_batchnorm_recalibration_replaces_stale_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    norm = model[1]
    norm.running_mean.fill_(100.0)  # stale, as after fast weight updates
    batches = [{"x": torch.randn(16, 3)} for _ in range(4)]
    with torch.no_grad():
        features = torch.cat([model[0](b["x"]) for b in batches])
    count = recalibrate_batchnorm(model, batches, lambda b: model(b["x"]))
    assert count == 4
    torch.testing.assert_close(norm.running_mean, features.mean(0))
    # Cumulative average of the per-batch unbiased variances.
    per_batch = torch.stack([model[0](b["x"]).var(0) for b in batches]).mean(0).detach()
    torch.testing.assert_close(norm.running_var, per_batch)
    assert norm.momentum == 0.1, "the layer's momentum is restored"


def test_lr_decays_after_each_epoch_without_a_better_validation_loss(data, tmp_path: Path):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    # An lr this high makes the validation loss worsen, so the decay has to act.
    argv += [
        *TINY_TRAIN_ARGS,
        "--epochs",
        "5",
        "--lr",
        "0.05",
        "--lr-decay",
        "0.5",
        "--lr-patience",
        "1",
    ]
    assert main(argv) == 0
    with (out / "fold_0" / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["lr"]) == pytest.approx(0.05)
    assert any(r["best"] == "0" for r in rows[:-1]), "no epoch without gain: decay untested"
    for previous, row in zip(rows, rows[1:], strict=False):
        factor = 1.0 if previous["best"] == "1" else 0.5
        assert float(row["lr"]) == pytest.approx(float(previous["lr"]) * factor), rows


def test_linear_schedule_decays_the_lr_to_zero_over_the_epochs(data, tmp_path: Path):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    argv += [*TINY_TRAIN_ARGS, "--epochs", "2", "--lr-schedule", "linear"]
    assert main(argv) == 0
    with (out / "fold_0" / "history.csv").open() as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    base = 1e-3  # TINY_TRAIN_ARGS
    # Step k of 2n sets base * (1 - k / 2n); history logs the last step's lr of each epoch,
    # so epoch 2 ends at k = 2n - 1 with base / 2n, and epoch 1 at k = n - 1.
    steps_per_epoch = base / (2 * lrs[1])
    n = round(steps_per_epoch)
    assert steps_per_epoch == pytest.approx(n, rel=1e-4) and n >= 1, lrs  # CSV: 6 digits
    assert lrs[0] == pytest.approx(base * (n + 1) / (2 * n), rel=1e-4), lrs


def test_linear_schedule_refuses_plateau_patience(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY_TRAIN_ARGS]
    argv += ["--cache", str(cache), "--lr-schedule", "linear", "--lr-patience", "2"]
    assert main(argv) == 2
    assert "--lr-patience: applies to --lr-schedule plateau only" in capsys.readouterr().err


def test_frozen_batchnorm_statistics_stay_fixed_through_training_and_resume(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    argv += [*TINY_TRAIN_ARGS, "--bn-recalibrate", "2", "--freeze-bn-after", "0"]

    def saved() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
        state = load_state(out / "fold_0" / "last")
        assert state is not None
        running = ("running_mean", "running_var")
        stats = {k: v for k, v in state.model.items() if k.endswith(running)}
        weights = {k: v for k, v in state.model.items() if k.endswith("conv.weight")}
        return stats, weights, state.progress.bn_frozen

    assert main([*argv, "--epochs", "1"]) == 0
    assert "BatchNorm frozen at epoch 1, batch 0" in capsys.readouterr().err
    stats_1, weights_1, frozen = saved()
    assert frozen and stats_1
    assert main([*argv, "--epochs", "2"]) == 0  # resumes with the statistics still frozen
    stats_2, weights_2, _ = saved()
    assert any(not torch.equal(weights_1[k], weights_2[k]) for k in weights_1), "no training"
    for key, value in stats_1.items():
        assert torch.equal(value, stats_2[key]), key


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_resume(data, tmp_path: Path):
    """The DistributedDataParallel path with the Gloo backend (no GPU needed), with a weight
    average and the AUC picking best/: rank 0 validates both, every rank adopts its counters
    and resumes the same average."""
    manifest, cache = data
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    base = [*launcher, "--nproc-per-node", "2", "-m", "luvnet.cli", "train"]
    base += [
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--cache",
        str(cache),
        *TINY_TRAIN_ARGS,
        *("--ema", "0.5", "--eval-metric", "macro_auc"),
    ]
    for epochs in ("1", "2"):
        done = subprocess.run(
            [*base, "--epochs", epochs], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "epoch 2, batch 0" in done.stderr
    state = load_state(out / "fold_0" / "last")
    assert state is not None and [r["epoch"] for r in state.progress.history] == [1, 2]
    assert (out / "fold_0" / "metrics_test.json").is_file()
    assert state.average["steps"].item() == state.progress.global_step > 0
    aucs = [row["val_macro_auc"] for row in state.progress.history]
    assert state.progress.best_score == max(aucs)
    provenance = load_checkpoint(out / "fold_0" / "best").provenance
    assert (provenance["ema"], provenance["eval_metric"]) == (0.5, "macro_auc")
    # One line per fold from rank 0 only, not one per process.
    assert done.stderr.count("training clips") == 1
