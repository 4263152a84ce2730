"""``luvnet compare`` through the real entry point, on prediction files written in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from luvnet.cli import main
from luvnet.engine.evaluation.predictions import write_predictions
from luvnet.engine.evaluation.roc import delong_test
from tests.engine.evaluation.prediction_files import N, prediction_data, write_file


def test_compare_matches_delong_on_shuffled_rows(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    # B lists the same clips in another order: rows must be matched by clip_id.
    b = write_file(tmp_path, "b.csv", clips, labels, pb, np.random.default_rng(1).permutation(N))
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["n_clips"] == N and list(figures["patterns"]) == [
        "a_lines",
        "b_lines",
        "consolidation",
        "pleural_effusion",
    ]
    for k, name in enumerate(["a_lines", "b_lines", "consolidation"]):
        want = delong_test(labels[:, k], pa[:, k], pb[:, k])
        got = figures["patterns"][name]
        assert got["p_value"] == pytest.approx(want.p_value, rel=1e-12)
        assert got["z"] == pytest.approx(want.z, rel=1e-12)
        assert (got["auc_a"], got["auc_b"]) == pytest.approx((want.auc_a, want.auc_b))
        assert (got["n_pos"], got["n_neg"]) == (want.n_pos, want.n_neg)
        row = next(line for line in stdout.splitlines() if line.startswith(name))
        assert f"{want.auc_a:.3f}" in row and f"{want.p_value:.3g}" in row
    cons = figures["patterns"]["consolidation"]
    assert cons["n_pos"] + cons["n_neg"] == N - 6  # only the known rows
    eff = figures["patterns"]["pleural_effusion"]
    assert eff["p_value"] is None and eff["reason"] == "no known labels"
    assert "pleural_effusion: no known labels" in stdout
    # 3 clips per video, 2 videos per patient: the test's independence is said, with counts
    assert stdout.strip().splitlines()[-1] == (
        f"note: DeLong treats the {N} clips as independent; they come from {N // 3} videos of "
        f"{N // 6} patients, whose clips are correlated, so p is optimistic (--cluster "
        "patient: a test clustered by patient)"
    )


def test_compare_is_symmetric_and_identical_files_give_p_one(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    b = write_file(tmp_path, "b.csv", clips, labels, pb)
    results = {}
    for name, pair in {"ab": (a, b), "ba": (b, a), "aa": (a, a)}.items():
        out = tmp_path / f"{name}.json"
        assert main(["compare", str(pair[0]), str(pair[1]), "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())["patterns"]
    capsys.readouterr()
    for pattern in ("a_lines", "b_lines", "consolidation"):
        ab, ba, aa = (results[k][pattern] for k in ("ab", "ba", "aa"))
        assert ab["p_value"] == pytest.approx(ba["p_value"])
        assert ab["z"] == pytest.approx(-ba["z"])
        assert (aa["p_value"], aa["z"], aa["auc_diff"]) == (1.0, 0.0, 0.0)


def _assert_one_line_error(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet compare: error: ")
    for fragment in fragments:
        assert fragment in err


def test_refuses_different_clip_sets(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    b = write_file(tmp_path, "b.csv", clips, labels, pb, np.arange(N - 1))
    code = main(["compare", str(a), str(b)])
    _assert_one_line_error(capsys, code, "b.csv: clip set differs", "1 clip(s) only in A ['c23']")


def test_refuses_different_labels(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    other = labels.copy()
    other[5, 1] = 1 - other[5, 1]
    b = write_file(tmp_path, "b.csv", clips, other, pb)
    code = main(["compare", str(a), str(b)])
    _assert_one_line_error(capsys, code, "clip 'c05', label_b_lines = 0 but 1 in", "identical")


def test_refuses_unknown_versus_known_label(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    other = labels.copy()
    other[0, 2] = 1.0  # unknown in A
    b = write_file(tmp_path, "b.csv", clips, other, pb)
    code = main(["compare", str(a), str(b)])
    _assert_one_line_error(capsys, code, "label_consolidation = 1 but unknown in")


def test_refuses_different_patterns(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    b = tmp_path / "b.csv"
    write_predictions(b, clips, labels[:, :2], pb[:, :2], ["a_lines", "b_lines"])
    code = main(["compare", str(a), str(b)])
    _assert_one_line_error(capsys, code, "patterns ['a_lines', 'b_lines'] differ")


def test_bad_file_exit_code_and_one_line(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    b = write_file(tmp_path, "b.csv", clips, labels, pb)
    lines = b.read_text().splitlines()
    fields = lines[3].split(",")
    fields[8] = "0.5x"  # prob_b_lines
    lines[3] = ",".join(fields)
    b.write_text("\n".join(lines) + "\n")
    code = main(["compare", str(a), str(b)])
    _assert_one_line_error(capsys, code, "b.csv: line 4, column prob_b_lines", "'0.5x'")
    code = main(["compare", str(a), str(tmp_path / "missing.csv")])
    _assert_one_line_error(capsys, code, "missing.csv: no such predictions file")
