"""Obuchowski's clustered paired DeLong test (roc.clustered_delong_test) and ``luvnet compare
--cluster``: checked against a direct double sum over (positive, negative) pairs, and by what
clustering is for: copies of a patient's clips add no information."""

from __future__ import annotations

import json

import numpy as np
import pytest

from luvnet.cli import main
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.roc import clustered_delong_test, delong_test
from tests.engine.evaluation.prediction_files import N, prediction_data, write_file


def _cases(seed: int = 0, patients: int = 12, per_patient: int = 5):
    """Clips of ``patients`` patients whose labels and scores share a per-patient part, as a
    video-level label and a patient's look do."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i}" for i in range(patients) for _ in range(per_patient)]
    level = np.repeat(rng.normal(size=patients), per_patient)
    labels = (level + 0.7 * rng.normal(size=len(ids)) > 0).astype(float)
    known = labels.copy()
    labels[3] = np.nan  # unknown rows are left out
    a = known + np.repeat(rng.normal(size=patients), per_patient) + rng.normal(size=len(ids))
    b = 0.5 * known + rng.normal(size=len(ids))
    return labels, a, b, ids


def _direct_variance(labels, a, b, ids) -> float:
    """Obuchowski (1997) written out with a double loop over pairs: psi per pair, placements
    per case, sums per cluster; a second implementation of the same formula."""
    keep = ~np.isnan(labels)
    y, a, b = labels[keep], a[keep], b[keep]
    ids = [i for i, k in zip(ids, keep, strict=True) if k]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(s, i, j):
        return 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0

    d = {i: [psi(a, i, j) - psi(b, i, j) for j in neg] for i in pos}
    diff = sum(sum(v) for v in d.values()) / (len(pos) * len(neg))
    v10 = {i: sum(d[i]) / len(neg) for i in pos}
    v01 = {j: sum(d[i][k] for i in pos) / len(pos) for k, j in enumerate(neg)}
    clusters = sorted(set(ids))
    m, n, count = len(pos), len(neg), len(clusters)
    i10 = len({ids[i] for i in pos})  # clusters holding a positive
    i01 = len({ids[j] for j in neg})  # ... a negative
    s10 = s01 = s11 = 0.0
    for c in clusters:
        p_c = [i for i in pos if ids[i] == c]
        n_c = [j for j in neg if ids[j] == c]
        r10 = sum(v10[i] for i in p_c) - len(p_c) * diff
        r01 = sum(v01[j] for j in n_c) - len(n_c) * diff
        s10, s01, s11 = s10 + r10 * r10, s01 + r01 * r01, s11 + r10 * r01
    s10 *= i10 / ((i10 - 1) * m)
    s01 *= i01 / ((i01 - 1) * n)
    s11 *= count / (count - 1)
    return s10 / m + s01 / n + 2 * s11 / (m * n)


def test_the_variance_is_obuchowskis_double_sum():
    labels, a, b, ids = _cases()
    assert len({i for i, y in zip(ids, labels, strict=True) if y == 1}) < len(set(ids))  # I10 < I
    test = clustered_delong_test(labels, a, b, ids)
    assert test.diff is not None and test.z is not None
    assert test.z == pytest.approx(test.diff / np.sqrt(_direct_variance(labels, a, b, ids)))
    plain = delong_test(labels, a, b)  # same AUCs, only the variance differs
    assert (test.auc_a, test.auc_b, test.n_pos, test.n_neg) == (
        plain.auc_a,
        plain.auc_b,
        plain.n_pos,
        plain.n_neg,
    )


def test_copies_of_each_patients_clips_change_nothing_but_shrink_the_plain_test():
    labels, a, b, ids = _cases(seed=1)
    once = clustered_delong_test(labels, a, b, ids)
    thrice = clustered_delong_test(np.tile(labels, 3), np.tile(a, 3), np.tile(b, 3), ids * 3)
    assert thrice.z == pytest.approx(once.z, rel=1e-9)
    plain_once = delong_test(labels, a, b)
    plain_thrice = delong_test(np.tile(labels, 3), np.tile(a, 3), np.tile(b, 3))
    assert plain_once.z is not None and plain_thrice.z is not None
    assert abs(plain_thrice.z) > 1.6 * abs(plain_once.z)  # about sqrt(3): it counts copies


def test_one_case_per_cluster_is_about_the_plain_test():
    labels, a, b, _ = _cases(seed=2, patients=200, per_patient=1)
    own = [f"c{i}" for i in range(len(labels))]
    clustered, plain = clustered_delong_test(labels, a, b, own), delong_test(labels, a, b)
    assert clustered.z == pytest.approx(plain.z, rel=1e-9)  # I10/(I10-1) is ddof=1 here


def test_two_nearly_identical_models_are_not_called_certainly_different():
    """One positive-negative pair swapped among 2000 x 2000: a variance of order 1/(MN)^2,
    real, not round-off."""
    rng = np.random.default_rng(3)
    labels = np.repeat([1.0, 0.0], 2000)
    a = rng.permutation(4000).astype(float)
    b = a.copy()
    i, j = int(np.argmax(a[:2000])), 2000 + int(np.argmin(a[2000:]))
    b[i], b[j] = b[j], b[i]
    own = [f"c{k}" for k in range(4000)]
    clustered, plain = clustered_delong_test(labels, a, b, own), delong_test(labels, a, b)
    assert clustered.reason is None and clustered.p_value is not None
    assert clustered.p_value == pytest.approx(plain.p_value, rel=1e-6)


def test_undefined_cases_say_why():
    labels, a, b, ids = _cases()
    one = clustered_delong_test(labels, a, b, ["p0"] * len(ids))
    assert one.p_value is None and one.reason == (
        "a clustered test needs positives in at least 2 clusters and negatives in at least 2, "
        "got 1 and 1"
    )
    same = clustered_delong_test(labels, a, a, ids)
    assert (same.diff, same.z, same.p_value) == (0.0, 0.0, 1.0)
    with pytest.raises(LuvnetError, match=r"^clusters: expected 60 ids, one per case, got 59$"):
        clustered_delong_test(labels, a, b, ids[:-1])


def test_compare_cluster_patient_through_the_command(tmp_path, capsys):
    clips, labels, pa, pb = prediction_data()
    a = write_file(tmp_path, "a.csv", clips, labels, pa)
    b = write_file(tmp_path, "b.csv", clips, labels, pb, np.random.default_rng(1).permutation(N))
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--cluster", "patient", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["cluster"] == "patient"
    patients = [c.patient_id for c in clips]
    want = clustered_delong_test(labels[:, 0], pa[:, 0], pb[:, 0], patients)
    assert figures["patterns"]["a_lines"]["z"] == pytest.approx(want.z, rel=1e-12)
    assert stdout.strip().splitlines()[-1] == (
        f"note: clustered DeLong (Obuchowski 1997): the {N} clips grouped into {N // 6} "
        "patients, each patient one draw"
    )
    with pytest.raises(SystemExit) as refused:
        main(["compare", str(a), str(b), "--cluster", "scanner"])
    assert refused.value.code == 2
    assert "--cluster: invalid choice: 'scanner'" in capsys.readouterr().err
