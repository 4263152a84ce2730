"""``luvnet dicom-manifest DIR --out manifest.csv``: a manifest for a folder of DICOM cine loops.

One row per cine loop with empty label columns to fill in; the ``patient_id`` column holds a
salted one-way key of the Patient ID, never the ID (see
:mod:`luvnet.engine.data.dicom_manifest`). Nothing from a header is printed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from luvnet.engine.data.dicom_manifest import SALT_NAME, load_or_create_salt, scan_dicom_folder
from luvnet.engine.data.manifest import read_manifest, write_manifest
from luvnet.engine.errors import LuvnetError

HELP = "build a manifest (labels to fill in) for a folder of DICOM cine loops"
log = logging.getLogger("luvnet.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet dicom-manifest DIR --out manifest.csv [--salt FILE]"
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder of DICOM files (walked)")
    parser.add_argument(
        "--out", type=Path, required=True, help="manifest CSV to write (never overwritten)"
    )
    parser.add_argument(
        "--salt",
        type=Path,
        default=None,
        help=f"salt file of the patient keys, created once (0600) and reused so keys stay the "
        f"same across runs; keep it private (default: {SALT_NAME} beside --out)",
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.is_dir():
        raise LuvnetError(f"--out {out}: is a folder; expected a CSV file path")
    if not out.parent.is_dir():
        raise LuvnetError(f"--out {out}: folder {out.parent} does not exist")
    if out.exists():
        raise LuvnetError(
            f"--out {out}: exists (its labels may be filled in already); choose another path "
            "or remove it"
        )
    if not args.folder.is_dir():  # before the salt file is created
        raise LuvnetError(f"{args.folder}: no such folder; expected a folder of DICOM files")
    salt_path: Path = args.salt or out.parent / SALT_NAME
    salt = load_or_create_salt(salt_path)
    scan = scan_dicom_folder(args.folder, salt)
    for line in scan.skipped:
        log.warning("skipped %s", line)
    if not scan.rows:
        raise LuvnetError(
            f"{args.folder}: no DICOM cine loop found ({scan.not_dicom} non-DICOM files, "
            f"{scan.single_frame} single-frame images, {len(scan.skipped)} skipped); expected "
            "multi-frame ultrasound DICOM files"
        )
    write_manifest(out, scan.rows)
    manifest = read_manifest(out)  # what we wrote must pass the same validation as any input
    print(
        f"wrote {len(manifest)} cine loops of {len(manifest.patients())} patients to {out} "
        f"(labels empty: fill them in); left out {scan.single_frame} single-frame images, "
        f"{len(scan.skipped)} unusable and {scan.not_dicom} non-DICOM files; patient keys "
        f"salted by {salt_path}"
    )
    return 0
