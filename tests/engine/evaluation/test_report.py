"""``luvnet report`` through the real entry point, on run directories written in tmp_path."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from luvnet.cli import main
from luvnet.engine.evaluation.metrics import compute_metrics, write_metrics

HEADER = (
    "| Model | Folds | A-lines | B-lines | Consolidation | Pleural effusion | Micro AUC "
    "| Macro AUC |"
)


def _fold_metrics(seed: int, effusion_known: bool) -> dict:
    rng = np.random.default_rng(seed)
    labels = (rng.random((30, 4)) < 0.5).astype(float)
    labels[:, 2] = np.nan  # consolidation never labelled: n/a in every fold
    if not effusion_known:
        labels[:, 3] = np.nan
    probs = np.clip(0.4 * np.nan_to_num(labels) + 0.6 * rng.random((30, 4)), 0, 1)
    return compute_metrics(labels, probs)


def _make_run(root, name, model, seeds, effusion_folds=None, split="val"):
    run = root / name
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"model": model, "backbone": "densenet161"}))
    folds = []
    for i, seed in enumerate(seeds):
        fold = run / f"fold_{i}"
        fold.mkdir()
        metrics = _fold_metrics(seed, effusion_folds is None or i in effusion_folds)
        write_metrics(fold / f"metrics_{split}.json", metrics)
        folds.append(metrics)
    return run, folds


def _row(stdout: str, label: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _expected(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def test_table_1_layout_mean_and_std(tmp_path, capsys):
    run_a, folds_a = _make_run(tmp_path, "r_a", "luvnet", [1, 2, 3, 4, 5], effusion_folds={0, 1})
    run_b, folds_b = _make_run(tmp_path, "r_b", "usvn", [6, 7, 8])
    out = tmp_path / "table.md"
    assert main(["report", str(run_a), str(run_b), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert out.read_text() == stdout
    assert stdout.splitlines()[0] == HEADER
    row = _row(stdout, "luvnet (densenet161)")
    assert row[1] == "5"
    assert row[2] == _expected([f["patterns"]["a_lines"]["auc"] for f in folds_a])
    assert row[3] == _expected([f["patterns"]["b_lines"]["auc"] for f in folds_a])
    assert row[4] == "n/a"
    effusion = [f["patterns"]["pleural_effusion"]["auc"] for f in folds_a[:2]]
    assert row[5] == _expected(effusion) + " (2/5)"
    assert row[6] == _expected([f["micro_auc"] for f in folds_a])
    assert row[7] == _expected([f["macro_auc"] for f in folds_a])
    row_b = _row(stdout, "usvn (densenet161)")
    assert row_b[1] == "3"
    assert row_b[7] == _expected([f["macro_auc"] for f in folds_b])
    assert "mean_of_pattern_aucs" in stdout


def test_single_fold_has_no_std_and_duplicate_labels_get_the_directory(tmp_path, capsys):
    run_a, folds_a = _make_run(tmp_path, "first", "luvnet", [1])
    run_b, _ = _make_run(tmp_path, "second", "luvnet", [2, 3])
    assert main(["report", str(run_a), str(run_b)]) == 0
    stdout = capsys.readouterr().out
    assert _row(stdout, "luvnet (densenet161) [first]")[2] == (
        f"{folds_a[0]['patterns']['a_lines']['auc']:.3f}"
    )
    assert _row(stdout, "luvnet (densenet161) [second]")[1] == "2"


def test_runs_of_one_directory_name_are_told_apart_by_their_parents(tmp_path, capsys):
    """``a/no-temporal`` and ``b/no-temporal``, as one variant's runs under two experiments."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_a, _ = _make_run(tmp_path / "a", "no-temporal", "luvnet", [1])
    run_b, _ = _make_run(tmp_path / "b", "no-temporal", "luvnet", [2, 3])
    assert main(["report", str(run_a), str(run_b), str(run_a)]) == 0
    stdout = capsys.readouterr().out
    assert _row(stdout, "luvnet (densenet161) [b/no-temporal]")[1] == "2"
    rows = [line for line in stdout.splitlines() if "[" in line and "a/no-temporal" in line]
    assert len(rows) == 2 and all(f"[{run_a}]" in row for row in rows), rows  # given twice


def test_a_run_picked_by_another_metric_says_so(tmp_path, capsys):
    run, _ = _make_run(tmp_path, "auc", "luvnet", [1, 2])
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(info | {"args": {"eval_metric": "macro_auc"}}))
    plain, _ = _make_run(tmp_path, "plain", "usvn", [3, 4])  # run.json without args: the loss
    assert main(["report", str(run), str(plain)]) == 0
    stdout = capsys.readouterr().out
    assert _row(stdout, "luvnet (densenet161, best by macro_auc)")[1] == "2"
    assert _row(stdout, "usvn (densenet161)")[1] == "2"


def test_test_split(tmp_path, capsys):
    run, folds = _make_run(tmp_path, "r", "luvnet", [1, 2], split="test")
    assert main(["report", str(run), "--split", "test"]) == 0
    stdout = capsys.readouterr().out
    assert _row(stdout, "luvnet (densenet161)")[6] == _expected([f["micro_auc"] for f in folds])
    assert "Split: test." in stdout


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda run: (run / "run.json").unlink(), "run.json: missing; expected"),
        (lambda run: (run / "run.json").write_text('{"model": "luvnet"}'), "backbone: expected"),
        (lambda run: (run / "fold_1" / "metrics_val.json").unlink(), "no such metrics file"),
        (
            lambda run: (run / "fold_0" / "metrics_val.json").write_text('{"patterns": []}'),
            "fold_0/metrics_val.json: patterns: expected an object",
        ),
        (lambda run: [p.rename(run / f"x{p.name}") for p in run.glob("fold_*")], "no fold_<i>"),
    ],
)
def test_bad_run_directory_exit_code_and_one_line(tmp_path, capsys, breakage, message):
    run, _ = _make_run(tmp_path, "r", "luvnet", [1, 2])
    breakage(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("luvnet report: error: ") and err.count("\n") == 1
    assert message in err


def test_missing_test_split_is_an_error(tmp_path, capsys):
    run, _ = _make_run(tmp_path, "r", "luvnet", [1, 2])
    assert main(["report", str(run), "--split", "test"]) == 2
    assert "fold_0/metrics_test.json: no such metrics file" in capsys.readouterr().err
