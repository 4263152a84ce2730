"""Patient-level splits: a held-out test set plus K cross-validation folds on the rest.

docs/model.md, "Splits": strictly by patient; 10% of patients held out as
test, 5-fold cross-validation on the rest. Deterministic for a given seed and independent of
the order the patients are listed in (they are sorted before the seeded shuffle).

A manifest ``split`` column (see :mod:`engine.manifest`) takes precedence:

* all empty: automatic (``test_fraction`` of the patients to test, the rest into ``k`` folds);
* ``train`` / ``val`` / ``test`` on every patient: one fixed fold (index 0), ``k`` ignored;
* ``test`` and/or fold numbers ``0..k-1``: exactly the ``test`` patients are the test set
  (``test_fraction`` ignored); a numbered patient is validation in that fold; patients left
  empty are dealt to the folds by the seeded shuffle, smallest fold first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from luvnet.engine.data.manifest import Manifest, ManifestRow
from luvnet.engine.errors import LuvnetError


@dataclass(frozen=True)
class Fold:
    """Who trains, who validates and who is held out, for one fold."""

    index: int
    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]


@dataclass(frozen=True)
class SplitPlan:
    test: frozenset[str]
    folds: tuple[Fold, ...]
    mode: str  # "auto", "folds" or "fixed"

    def __len__(self) -> int:
        return len(self.folds)

    def fold(self, index: int) -> Fold:
        if not 0 <= index < len(self.folds):
            if self.mode == "fixed":  # k says nothing here; name what decided it
                raise LuvnetError(
                    f"fold: expected 0, got {index}: a split column that assigns "
                    "train/val/test makes one fixed fold"
                )
            raise LuvnetError(f"fold: expected 0..{len(self.folds) - 1}, got {index}")
        return self.folds[index]


def make_splits(
    patients: Iterable[str],
    *,
    test_fraction: float = 0.10,
    k: int = 5,
    seed: int = 0,
    assigned: Mapping[str, str | None] | None = None,
) -> SplitPlan:
    """Split patient ids; ``assigned`` maps a patient to its manifest split cell."""
    ids = sorted(set(patients))
    assigned = dict(assigned or {})
    given = {p: assigned.get(p) for p in ids if assigned.get(p) is not None}
    if not 0.0 <= test_fraction < 1.0:
        raise LuvnetError(f"test_fraction: expected a number in [0, 1), got {test_fraction}")
    if not given:
        return _auto(ids, test_fraction, k, seed)
    if any(v in ("train", "val") for v in given.values()):
        return _fixed(ids, given)
    return _numbered(ids, given, k, seed)


def splits_from_manifest(
    manifest: Manifest, *, test_fraction: float = 0.10, k: int = 5, seed: int = 0
) -> SplitPlan:
    """:func:`make_splits` over the manifest's patients, honouring its ``split`` column."""
    return make_splits(
        manifest.patients(),
        test_fraction=test_fraction,
        k=k,
        seed=seed,
        assigned=manifest.patient_splits(),
    )


def rows_for(rows: Sequence[ManifestRow], patients: Iterable[str]) -> list[ManifestRow]:
    """The manifest rows of these patients, in manifest order."""
    wanted = set(patients)
    return [row for row in rows if row.patient_id in wanted]


def _check_k(k: int, available: int) -> None:
    if k < 2:
        raise LuvnetError(f"k: expected at least 2 folds, got {k}")
    if available < k:
        raise LuvnetError(
            f"k: {k} folds need at least {k} patients outside the test set, got {available}; "
            "lower k or test_fraction"
        )


def _auto(ids: list[str], test_fraction: float, k: int, seed: int) -> SplitPlan:
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_test = int(np.floor(test_fraction * len(ids) + 0.5))
    if test_fraction > 0 and n_test == 0:
        n_test = 1  # a test set was asked for: never silently drop it
    _check_k(k, len(ids) - n_test)
    test = frozenset(order[:n_test])
    chunks = np.array_split(np.array(order[n_test:], dtype=object), k)
    return _plan(test, [set(c.tolist()) for c in chunks], "auto")


def _numbered(ids: list[str], given: dict[str, str | None], k: int, seed: int) -> SplitPlan:
    test = frozenset(p for p, v in given.items() if v == "test")
    _check_k(k, len(ids) - len(test))
    vals: list[set[str]] = [set() for _ in range(k)]
    for patient, value in given.items():
        if value == "test":
            continue
        fold = int(str(value))
        if fold >= k:
            raise LuvnetError(
                f"split: patient {patient!r} is in fold {fold}; expected 0..{k - 1} for k={k}"
            )
        vals[fold].add(patient)
    free = [p for p in ids if p not in given]
    for i in np.random.default_rng(seed).permutation(len(free)):
        smallest = min(range(k), key=lambda f: (len(vals[f]), f))
        vals[smallest].add(free[i])
    empty = [f for f in range(k) if not vals[f]]
    if empty:
        raise LuvnetError(
            f"split: fold(s) {empty} have no validation patient; expected k={k} non-empty folds"
        )
    return _plan(test, vals, "folds")


def _fixed(ids: list[str], given: dict[str, str | None]) -> SplitPlan:
    missing = [p for p in ids if p not in given]
    numbered = sorted({str(v) for v in given.values() if v not in ("train", "val", "test")})
    if missing or numbered:
        what = (
            f"patients without a split: {missing[:5]}"
            if missing
            else f"fold numbers {numbered} mixed with train/val"
        )
        raise LuvnetError(f"split: {what}; with train/val every patient needs train, val or test")
    by = {name: frozenset(p for p, v in given.items() if v == name) for name in ("train", "val")}
    test = frozenset(p for p, v in given.items() if v == "test")
    if not by["train"] or not by["val"]:
        raise LuvnetError(
            "split: expected at least one train and one val patient, got "
            f"{len(by['train'])} train and {len(by['val'])} val"
        )
    return SplitPlan(test, (Fold(0, by["train"], by["val"], test),), "fixed")


def _plan(test: frozenset[str], vals: list[set[str]], mode: str) -> SplitPlan:
    everyone = frozenset().union(*vals)
    folds = tuple(
        Fold(i, everyone - frozenset(val), frozenset(val), test) for i, val in enumerate(vals)
    )
    return SplitPlan(test, folds, mode)
