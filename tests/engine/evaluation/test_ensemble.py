"""``luvnet ensemble`` through the real entry point, on prediction files written in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from luvnet.cli import main
from luvnet.engine.evaluation.metrics import compute_metrics, write_metrics
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.evaluation.roc import roc_auc, youden_threshold
from tests.engine.evaluation.prediction_files import N, prediction_data, write_file


def test_mean_probability_per_clip_matched_by_id_and_its_metrics(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    pc = np.random.default_rng(7).random((N, 4))
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    # the others list the same clips in other orders: rows are matched by clip_id
    b = write_file(tmp_path, "b.csv", clips, labels, pb, np.random.default_rng(1).permutation(N))
    c = write_file(tmp_path, "c.csv", clips, labels, pc, np.arange(N)[::-1])
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), str(c), "--out", str(out)]) == 0
    mean = (pa + pb + pc) / 3
    written = read_predictions(out / "predictions.csv")
    assert [clip.clip_id for clip in written.clips] == [clip.clip_id for clip in clips]
    np.testing.assert_allclose(written.probs, mean, rtol=1e-6)
    np.testing.assert_array_equal(written.labels, labels)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ensemble"] == {
        "method": "mean_probability",
        "members": [str(a), str(b), str(c)],
    }
    assert metrics["threshold_source"] == "youden" and metrics["n_clips"] == N
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"3 members, {N} clips; probabilities averaged"
    for k, name in enumerate(("a_lines", "b_lines", "consolidation")):
        known = ~np.isnan(labels[:, k])
        y = labels[known, k]
        want = roc_auc(y, mean[known, k])
        assert metrics["patterns"][name]["auc"] == pytest.approx(want, rel=1e-6)
        threshold = youden_threshold(y, written.probs[known, k])
        assert metrics["patterns"][name]["threshold"] == pytest.approx(threshold)
        members = [roc_auc(y, p[known, k]) for p in (pa, pb, pc)]
        row = next(line for line in table if line.startswith(name))
        assert f"{min(members):.3f}-{max(members):.3f}" in row and f"{want:.3f}" in row
    effusion = next(line for line in table if line.startswith("pleural_effusion"))
    assert "n/a" in effusion and "no known labels" in effusion


def test_thresholds_from_another_metrics_file(tmp_path):
    clips, labels, pa, pb = prediction_data()
    a, b = (write_file(tmp_path, f"{n}.csv", clips, labels, p) for n, p in (("a", pa), ("b", pb)))
    given = tmp_path / "val_metrics.json"
    write_metrics(given, compute_metrics(labels, pa, [0.2, 0.4, 0.6, None]))
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), "--out", str(out), "--thresholds", str(given)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold_source"] == "given"
    got = [metrics["patterns"][n]["threshold"] for n in metrics["patterns"]]
    assert got == [0.2, 0.4, 0.6, None]
    mean = (pa + pb) / 2
    positive = mean[:, 0] >= 0.2
    sensitivity = (positive & (labels[:, 0] == 1)).sum() / (labels[:, 0] == 1).sum()
    assert metrics["patterns"]["a_lines"]["sensitivity"] == pytest.approx(sensitivity)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_refuses_one_member_other_clips_and_bad_thresholds_in_one_line(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    out = str(tmp_path / "ens")
    err = _error(capsys, ["ensemble", str(a), "--out", out])
    assert "predictions: expected 2 or more files, got 1" in err
    fewer = write_file(tmp_path, "fewer.csv", clips[:-1], labels[:-1], pb[:-1])
    err = _error(capsys, ["ensemble", str(a), str(fewer), "--out", out])
    assert f"{fewer}: clip set differs from {a}: 1 clip(s) only in A" in err
    b = write_file(tmp_path, "b.csv", clips, labels, pb)
    metrics = compute_metrics(labels, pa)
    metrics["patterns"]["b_lines"]["threshold"] = "high"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(metrics))
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", out, "--thresholds", str(bad)])
    assert (
        f"{bad}: patterns.b_lines.threshold: expected a probability in [0, 1] or null, got 'high'"
        in err
    )
    del metrics["patterns"]["pleural_effusion"]
    metrics["patterns"]["b_lines"]["threshold"] = 0.5
    bad.write_text(json.dumps(metrics))
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", out, "--thresholds", str(bad)])
    assert f"{bad}: patterns: no entry for ['pleural_effusion']" in err
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", out, "--thresholds", str(a)])
    assert f"{a}: not a readable JSON file" in err
    metrics["patterns"]["pleural_effusion"] = metrics["patterns"]["b_lines"] | {"threshold": 5}
    bad.write_text(json.dumps(metrics))
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", out, "--thresholds", str(bad)])
    assert "patterns.pleural_effusion.threshold: expected a probability in [0, 1]" in err
    assert not (tmp_path / "ens").exists()  # nothing written by a refused run


def test_refuses_a_member_twice_and_an_out_that_overwrites_an_input(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "predictions.csv", clips, labels, pa)
    b = write_file(tmp_path, "b.csv", clips, labels, pb)
    out = tmp_path / "ens"
    again = tmp_path / "." / "predictions.csv"
    err = _error(capsys, ["ensemble", str(a), str(b), str(again), "--out", str(out)])
    assert f"predictions: {again} is the same file as {a}; expected each member once" in err
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", str(tmp_path)])
    assert f"--out {tmp_path}: writing predictions.csv there would overwrite the input {a}" in err
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 0  # validation, say
    thresholds = out / "metrics.json"
    before = thresholds.read_bytes()
    argv = ["ensemble", str(a), str(b), "--out", str(out), "--thresholds", str(thresholds)]
    err = _error(capsys, argv)
    assert "writing metrics.json there would overwrite the input" in err
    assert thresholds.read_bytes() == before
    blocked = tmp_path / "file"
    blocked.write_text("")
    err = _error(capsys, ["ensemble", str(a), str(b), "--out", str(blocked / "ens")])
    assert err.startswith(f"luvnet ensemble: error: --out {blocked / 'ens'}: cannot write (")
