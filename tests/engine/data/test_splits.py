"""engine.splits: no patient ever crosses sets; manifest split column honoured."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.splits import SplitPlan, make_splits, rows_for, splits_from_manifest
from luvnet.engine.errors import LuvnetError

HEADER = "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion"


def assert_sound(plan: SplitPlan, patients: set[str]) -> None:
    """Every fold partitions the patients into train/val/test; each non-test patient is
    validation exactly once."""
    val_count = dict.fromkeys(patients - plan.test, 0)
    for fold in plan.folds:
        assert fold.test == plan.test
        assert not (fold.train & fold.val), f"fold {fold.index}: train/val share patients"
        assert not (fold.train & fold.test), f"fold {fold.index}: train/test share patients"
        assert not (fold.val & fold.test), f"fold {fold.index}: val/test share patients"
        assert fold.train | fold.val | fold.test == patients, f"fold {fold.index} loses some"
        for patient in fold.val:
            val_count[patient] += 1
    if plan.mode != "fixed":
        assert set(val_count.values()) <= {1}, "each patient is validation in exactly one fold"


def ids(n: int) -> list[str]:
    return [f"p{i:02d}" for i in range(n)]


def test_paper_protocol_on_63_patients() -> None:
    plan = make_splits(ids(63))
    assert_sound(plan, set(ids(63)))
    assert len(plan.test) == 6 and len(plan) == 5 and plan.mode == "auto"
    assert sorted(len(f.val) for f in plan.folds) == [11, 11, 11, 12, 12]


def test_deterministic_and_order_independent() -> None:
    a = make_splits(ids(40), seed=3)
    b = make_splits(list(reversed(ids(40))) + ids(5), seed=3)  # shuffled order, duplicates
    assert a == b
    assert make_splits(ids(40), seed=4) != a


def test_test_fraction_parameter_and_minimum_one() -> None:
    assert len(make_splits(ids(50), test_fraction=0.2).test) == 10
    assert len(make_splits(ids(7), test_fraction=0.01, k=2).test) == 1
    assert not make_splits(ids(7), test_fraction=0.0, k=2).test


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 1}, "k: expected at least 2 folds, got 1"),
        ({"k": 10}, "10 folds need at least 10 patients outside the test set, got 5"),
        ({"test_fraction": 1.0}, "test_fraction: expected a number in [0, 1), got 1.0"),
        ({"test_fraction": -0.1}, "got -0.1"),
    ],
)
def test_bad_parameters(kwargs: dict, fragment: str) -> None:
    with pytest.raises(LuvnetError) as err:
        make_splits(ids(6), **kwargs)
    assert fragment in str(err.value)


def test_fold_index_out_of_range() -> None:
    with pytest.raises(LuvnetError, match=r"fold: expected 0..4, got 5"):
        make_splits(ids(20)).fold(5)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=80),
    st.integers(2, 6),
    st.floats(0.0, 0.5),
    st.integers(0, 2**32),
)
def test_no_patient_crosses_sets(patients: list[str], k: int, fraction: float, seed: int) -> None:
    unique = set(patients)
    try:
        plan = make_splits(patients, k=k, test_fraction=fraction, seed=seed)
    except LuvnetError as err:
        assert "folds need at least" in str(err)
        return
    assert_sound(plan, unique)
    sizes = [len(f.val) for f in plan.folds]
    assert max(sizes) - min(sizes) <= 1, sizes


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([None, "test", "0", "1", "2"]), min_size=3, max_size=40))
def test_numbered_assignments_are_respected(cells: list[str | None]) -> None:
    assume(any(cell is not None for cell in cells))  # all empty is the automatic mode
    patients = ids(len(cells))
    assigned = dict(zip(patients, cells, strict=True))
    try:
        plan = make_splits(patients, k=3, assigned=assigned)
    except LuvnetError as err:
        assert "no validation patient" in str(err) or "folds need at least" in str(err)
        return
    assert_sound(plan, set(patients))
    assert plan.test == {p for p, c in assigned.items() if c == "test"}
    for patient, cell in assigned.items():
        if cell not in (None, "test"):
            assert patient in plan.fold(int(cell)).val


def test_fixed_split_is_one_fold() -> None:
    assigned = {"a": "train", "b": "train", "c": "val", "d": "test"}
    plan = make_splits(assigned, assigned=assigned)
    assert plan.mode == "fixed" and len(plan) == 1
    fold = plan.fold(0)
    assert (fold.train, fold.val, fold.test) == ({"a", "b"}, {"c"}, {"d"})
    with pytest.raises(LuvnetError, match=r"^fold: expected 0, got 1: a split column that assigns"):
        plan.fold(1)


@pytest.mark.parametrize(
    ("assigned", "fragment"),
    [
        ({"a": "train", "b": "val", "c": None}, "patients without a split: ['c']"),
        ({"a": "train", "b": "val", "c": "2"}, "fold numbers ['2'] mixed with train/val"),
        ({"a": "train", "b": "train", "c": "test"}, "got 2 train and 0 val"),
        ({"a": "0", "b": "7", "c": "1"}, "patient 'b' is in fold 7; expected 0..2 for k=3"),
        ({"a": "0", "b": "0", "c": "test"}, "3 folds need at least 3 patients"),
    ],
)
def test_bad_assignments(assigned: dict[str, str | None], fragment: str) -> None:
    with pytest.raises(LuvnetError) as err:
        make_splits(assigned, k=3, assigned=assigned)
    assert fragment in str(err.value)


def test_splits_from_manifest_column(tmp_path: Path) -> None:
    rows = [
        "v0.mp4,alice,1,0,,,test",
        "v1.mp4,alice,1,0,,,test",
        "v2.mp4,bob,1,0,,,0",
        "v3.mp4,carol,1,0,,,",
        "v4.mp4,dave,1,0,,,",
        "v5.mp4,erin,1,0,,,1",
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join([HEADER + ",split", *rows]) + "\n")
    manifest = read_manifest(path, check_files=False)
    plan = splits_from_manifest(manifest, k=2, test_fraction=0.5)  # fraction ignored
    assert plan.mode == "folds" and plan.test == {"alice"}
    assert "bob" in plan.fold(0).val and "erin" in plan.fold(1).val
    assert_sound(plan, {"alice", "bob", "carol", "dave", "erin"})
    test_rows = rows_for(manifest.rows, plan.test)
    assert [r.video.name for r in test_rows] == ["v0.mp4", "v1.mp4"]


def test_manifest_without_split_column_is_automatic(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    lines = [f"v{i}.mp4,p{i % 12},0,0,0,0" for i in range(36)]
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    plan = splits_from_manifest(read_manifest(path, check_files=False))
    assert plan.mode == "auto" and len(plan.test) == 1
    assert_sound(plan, {f"p{i}" for i in range(12)})
