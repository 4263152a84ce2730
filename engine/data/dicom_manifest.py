"""A manifest from a folder of DICOM files: one row per cine loop, labels left to fill in.

Files are found by content (the 'DICM' marker), whatever their name or extension. Each
multi-frame image with pixel data is one row; single-frame images, files without pixel data
(reports, DICOMDIR) and files that are not DICOM are left out and counted.

The ``patient_id`` cell is a patient *key*, never the Patient ID itself: HMAC-SHA256 of the
Patient ID (0010,0020) under a random salt, truncated to :data:`KEY_HEX` hex digits. The salt
lives in a local file (by default :data:`SALT_NAME` beside the manifest), created once with
mode 0600 and reused, so the same patient gets the same key on every later run and splits stay
by patient; without the salt file a key cannot be tested against a guessed ID. Nothing else
from a header is written or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from luvnet.engine.data.dicom import is_dicom, number_of_frames, read_header
from luvnet.engine.data.manifest import LabelSpec, ManifestRow
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS

log = logging.getLogger(__name__)

SALT_NAME = ".luvnet-patient-salt"
SALT_BYTES = 32
KEY_HEX = 16  # 64 bits: no collision in any realistic number of patients
KEY_PREFIX = "pk-"


@dataclass
class DicomScan:
    """What a folder walk found: the rows, and what was left out (counts, and per-file
    reasons that hold only the path and what is missing)."""

    rows: list[ManifestRow] = field(default_factory=list)
    not_dicom: int = 0
    single_frame: int = 0
    skipped: list[str] = field(default_factory=list)  # "<path>: <why>", one per file


def load_or_create_salt(path: Path) -> bytes:
    """The salt in ``path``; created (random, mode 0600) if the file does not exist yet.

    LuvnetError if it exists but is not a salt this function wrote (so keys never silently
    change).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            text = path.read_text(encoding="ascii").strip()
            salt = bytes.fromhex(text)
        except (OSError, UnicodeDecodeError, ValueError):
            salt = b""
        if len(salt) != SALT_BYTES:
            raise LuvnetError(
                f"{path}: not a patient-key salt ({SALT_BYTES * 2} hex digits expected); restore "
                "the salt file of earlier runs, or remove it to start new keys (earlier "
                "manifests' keys will then not match)"
            ) from None
        return salt
    except OSError as err:
        raise LuvnetError(f"{path}: cannot create the salt file ({err.strerror})") from None
    salt = secrets.token_bytes(SALT_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(salt.hex() + "\n")
    log.info("created the patient-key salt %s (keep it: later runs reuse it)", path)
    return salt


def patient_key(patient_id: str, salt: bytes) -> str:
    """The salted one-way key of a Patient ID: ``pk-`` + 16 hex digits of HMAC-SHA256."""
    digest = hmac.new(salt, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return KEY_PREFIX + digest[:KEY_HEX]


def scan_dicom_folder(folder: Path, salt: bytes) -> DicomScan:
    """Walk ``folder`` (recursively, sorted) and build one unlabelled row per cine loop."""
    if not folder.is_dir():
        raise LuvnetError(f"{folder}: no such folder; expected a folder of DICOM files")
    scan = DicomScan()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not is_dicom(path):
            scan.not_dicom += 1
            continue
        try:
            ds = read_header(path, pixels=False)
        except LuvnetError as err:
            scan.skipped.append(str(err))
            continue
        if "PixelData" not in ds:
            scan.skipped.append(f"{path}: no Pixel Data (7FE0,0010); not an image")
            continue
        if number_of_frames(ds) < 2:
            scan.single_frame += 1
            continue
        patient_id = str(ds.get("PatientID") or "").strip()
        if not patient_id:
            scan.skipped.append(
                f"{path}: no Patient ID (0010,0020); splits by patient need one: add the row "
                "by hand with a key of your own"
            )
            continue
        labels = {name: LabelSpec.unknown() for name in PATTERNS}
        scan.rows.append(ManifestRow(path.resolve(), patient_key(patient_id, salt), labels))
    return scan
