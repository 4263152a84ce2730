"""What a checkpoint records about its patient split: counts and digests, never patient ids.

Patient ids are often hospital record numbers, and checkpoints get shared, so a checkpoint (and
``run.json``) keeps only what is needed to re-derive and check its split against the manifest it
was trained on: the split settings (mode, seed, test fraction, folds, fold), the number of
patients per set, and one digest per set::

    "split": {"mode": "auto", "seed": 0, "test_fraction": 0.1, "folds": 5, "fold": 0,
              "patient_counts": {"train": 43, "val": 11, "test": 6},
              "patient_digests": {"method": "scrypt", "n": 16384, "r": 8, "p": 1,
                                  "salt": "<32 hex>", "train": "<64 hex>", ...}}

A digest is scrypt over the JSON list of the set's sorted patient ids, with a random salt drawn
per training run and stored beside it. Why one digest per set and not one per patient: with the
salt published, a per-patient hash lets anyone who can list candidate ids (record numbers are
short numbers) test each one and so recover every id; a set digest only confirms a complete,
exact list, which nobody can guess. ``luvnet evaluate`` re-derives the split from the manifest
with the recorded settings (splits depend only on the patient ids, the ``split`` column and the
settings) and uses it only when its digest matches; the salt keeps digests of the same set
unlinkable across runs, and scrypt makes each guess cost about 0.1 s and 16 MiB.

Checkpoints written before this carried the ids in clear (``"patients": {"train": [...]}``):
they still load and evaluate as before, and :func:`redact_checkpoint` rewrites one in this form
without touching its weights.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from luvnet.engine.data.manifest import Manifest
from luvnet.engine.data.splits import SplitPlan, splits_from_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open
from luvnet.engine.model.checkpoint import CONFIG_FILE, read_config

SETS = ("train", "val", "test")
# scrypt cost: 16 MiB and ~0.1 s per digest on one core (2**15 exceeds OpenSSL's default 32 MiB).
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def new_salt() -> str:
    """128 random bits as 32 hex digits, drawn once per training run."""
    return secrets.token_hex(16)


def patients_digest(patients: Iterable[str], salt: str, *, n: int, r: int, p: int) -> str:
    """64 hex digits: scrypt of the JSON list of the sorted, distinct ids, salted with ``salt``."""
    text = json.dumps(sorted(set(patients)), ensure_ascii=False, separators=(",", ":"))
    key = hashlib.scrypt(text.encode("utf-8"), salt=bytes.fromhex(salt), n=n, r=r, p=p, dklen=32)
    return key.hex()


def recorded_digest(digests: Mapping[str, Any]) -> Callable[[Iterable[str]], str]:
    """:func:`patients_digest` with the salt and scrypt parameters a ``patient_digests``
    record holds, read and checked once.

    Raises:
        KeyError, TypeError, ValueError, OverflowError: the salt or a parameter is missing or
            malformed (``Infinity``, which JSON reads, overflows ``int``).
    """
    params = {k: int(digests[k]) for k in SCRYPT}
    salt = str(digests["salt"])
    bytes.fromhex(salt)  # a malformed salt is a damaged record, found before any hashing

    def digest(patients: Iterable[str]) -> str:
        return patients_digest(patients, salt, **params)

    return digest


def describe_sets(sets: Mapping[str, Iterable[str]], salt: str) -> dict[str, Any]:
    """``{"patient_counts": ..., "patient_digests": ...}`` of named patient sets."""
    lists = {name: sorted(set(ids)) for name, ids in sets.items()}
    digests: dict[str, Any] = {"method": "scrypt", **SCRYPT, "salt": salt}
    digests |= {name: patients_digest(ids, salt, **SCRYPT) for name, ids in lists.items()}
    return {"patient_counts": {n: len(ids) for n, ids in lists.items()}, "patient_digests": digests}


def fold_record(
    plan: SplitPlan, fold: int, *, seed: int, test_fraction: float, salt: str
) -> dict[str, Any]:
    """A fold's ``provenance["split"]``: the settings that re-derive it, counts and digests."""
    chosen = plan.fold(fold)
    sets = {"train": chosen.train, "val": chosen.val, "test": chosen.test}
    return {
        "mode": plan.mode,
        "seed": seed,
        "test_fraction": test_fraction,
        "folds": len(plan),
        "fold": fold,
    } | describe_sets(sets, salt)


def redact_split(split: Mapping[str, Any], salt: str | None = None) -> dict[str, Any]:
    """A split record with clear ``patients`` lists turned into counts and digests; a record
    without them is returned unchanged (as a copy)."""
    record = dict(split)
    patients = record.pop("patients", None)
    if not isinstance(patients, Mapping):
        return dict(split)
    sets = {k: [str(p) for p in v] for k, v in patients.items() if isinstance(v, list)}
    return record | describe_sets(sets, salt or new_salt())


def redact_provenance(provenance: Mapping[str, Any], salt: str | None = None) -> dict[str, Any]:
    """``provenance`` with its split's patient ids replaced by :func:`redact_split`'s form."""
    out = dict(provenance)
    if isinstance(out.get("split"), Mapping):
        out["split"] = redact_split(out["split"], salt)
    return out


def redact_checkpoint(directory: Path) -> bool:
    """Rewrite ``directory/config.json`` without clear patient ids; the weights (and so the
    model id) are untouched. Returns whether anything changed.

    Raises:
        LuvnetError: not a readable checkpoint.
    """
    _, document = read_config(directory)
    provenance = document.get("provenance") or {}
    redacted = redact_provenance(provenance)
    if redacted == provenance:
        return False
    document["provenance"] = redacted
    # The layout save_checkpoint writes.
    with atomic_open(Path(directory) / CONFIG_FILE) as handle:
        handle.write(json.dumps(document, indent=2) + "\n")
    return True


class SplitNotDerived(LuvnetError):
    """A well-formed split record that this manifest does not re-derive (other patients or
    another ``split`` column than at training); a damaged record is a plain LuvnetError."""


def recorded_patients(
    manifest: Manifest, provenance: Mapping[str, Any], split: str, checkpoint: Path
) -> frozenset[str] | None:
    """The patients of ``split`` (train, val or test) that ``provenance`` records, found in
    ``manifest``; None when it records no split (the manifest's ``split`` column decides).

    Raises:
        SplitNotDerived: the manifest does not re-derive the recorded split (another patient
            list, another ``split`` column, or settings it cannot hold).
        LuvnetError: the record is damaged.
    """
    record = provenance.get("split")
    if not isinstance(record, Mapping):
        return None
    patients = record.get("patients")
    if isinstance(patients, Mapping) and isinstance(patients.get(split), list):
        return frozenset(str(p) for p in patients[split])  # an older checkpoint: clear ids
    digests = record.get("patient_digests")
    if not isinstance(digests, Mapping) or not isinstance(digests.get(split), str):
        return None
    where = f"{checkpoint}: its {split} patients (recorded as a digest)"
    fix = (
        "use the manifest it was trained on (same patient ids and split column), "
        "or --split all to score every video"
    )
    try:
        plan = splits_from_manifest(
            manifest,
            test_fraction=float(record["test_fraction"]),
            k=int(record["folds"]),
            seed=int(record["seed"]),
        )
        fold = plan.fold(int(record["fold"]))
        found = {"train": fold.train, "val": fold.val, "test": fold.test}[split]
        digest = recorded_digest(digests)(found)
    except LuvnetError as err:
        raise SplitNotDerived(
            f"{where} cannot be re-derived from {manifest.path} ({err}); {fix}"
        ) from None
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise LuvnetError(
            f"{checkpoint}: provenance split record is damaged ({type(err).__name__}: {err}); "
            "expected the form luvnet train writes (docs/formats.md)"
        ) from None
    if digest != digests[split] or plan.mode != record.get("mode"):
        counts = record.get("patient_counts")
        had = counts.get(split) if isinstance(counts, Mapping) else None
        raise SplitNotDerived(
            f"{where} differ from the {len(found)} {split} patients {manifest.path} gives "
            f"(the checkpoint had {had if had is not None else 'an unknown number'}); "
            "the manifest has other patients or another split column than at training; " + fix
        )
    return frozenset(found)
