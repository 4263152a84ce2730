"""Ultrasound DICOM (US Multi-frame and single-frame US images) as frames with timestamps.

:func:`read_dicom` decodes through pydicom and its pixel-data plugins (the ``dicom`` extra:
pylibjpeg with its libjpeg, openjpeg and RLE backends): JPEG baseline/extended/lossless,
JPEG-LS, JPEG 2000, RLE Lossless and uncompressed. Colour comes back as BGR (like OpenCV's
frames): RGB as is, YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT converted to RGB first,
PALETTE COLOR through its lookup table. Grey comes back as uint8, MONOCHROME1 inverted (so
white is always bright) and more than 8 bits scaled to 8.

Frame timing, the first present and valid of: Frame Time Vector (0018,1065) (per-frame
increments, ms), Frame Time (0018,1063) (ms), Cine Rate (0018,0040) (frames/s). The imaging
region is taken from a Sequence of Ultrasound Regions (0018,6011), if any.

Privacy: nothing from a header that could identify a person (names, IDs, dates, institution)
is ever put in an error, a log line or a return value: only the file's path and technical
attributes (transfer syntax, photometric interpretation, sizes, timing). pydicom's own log
and warnings are kept from the user's log for the same reason (they can quote values).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from luvnet.engine.errors import LuvnetError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")
PREAMBLE_BYTES = 128  # the DICM marker follows a 128-byte preamble (PS3.10 7.1)
# Timestamps when the header gives no timing: steps of 1/30 s (fps stays 0.0 = unknown).
NOMINAL_FPS = 30.0
_INSTALL = "pip install 'luvnet[dicom]'"
_TISSUE = 1  # RegionDataType: tissue
_SPATIAL_2D = 1  # RegionSpatialFormat: 2D
_YBR = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


@dataclass(frozen=True)
class DicomVideo:
    """A decoded DICOM image or cine loop.

    ``frames``: T arrays, HxWx3 BGR uint8 for colour or HxW uint8 for grey (T >= 1).
    ``timestamps``: float64 [T], seconds from the first frame (0.0).
    ``fps``: frames per second from the header; 0.0 when it says nothing.
    ``region``: the imaging region (x, y, w, h) in pixels from the Sequence of Ultrasound
    Regions, clipped to the image; None when there is none.
    """

    frames: list[np.ndarray]
    timestamps: np.ndarray
    fps: float
    region: tuple[int, int, int, int] | None


def is_dicom(path: Path) -> bool:
    """Whether the file is a DICOM Part 10 file: 'DICM' after the 128-byte preamble (the
    content decides, not the extension)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREAMBLE_BYTES + 4)
    except OSError:
        return False
    return head[PREAMBLE_BYTES:] == b"DICM"


def read_dicom(path: Path, max_frames: int | None = None) -> DicomVideo:
    """All frames (or the first ``max_frames``) of a DICOM image, with timing and region.

    Raises LuvnetError (one line naming the file and what is wrong or missing) for a missing
    file, a file that is not DICOM, one without pixel data, pixel data no installed plugin can
    decode, or a decoding failure; never with a value from the header.
    """
    path = Path(path)
    ds = read_header(path, pixels=True)
    missing = [name for name in ("Rows", "Columns") if name not in ds]
    if "PixelData" not in ds or missing:
        raise LuvnetError(_no_pixels(path, ds, missing))
    total = number_of_frames(ds)
    count = total if max_frames is None else max(0, min(total, max_frames))
    frames = list(_decode(path, ds, count))
    timestamps, fps = frame_timing(ds, total, path)
    return DicomVideo(frames, timestamps[: len(frames)], fps, imaging_region(ds))


def read_header(path: Path, *, pixels: bool) -> Dataset:
    """The dataset (pixel data read only when ``pixels``); LuvnetError if missing or not DICOM.

    Without ``pixels`` large values are left unread, so a folder walk stays fast, and
    ``"PixelData" in ds`` still tells whether there is an image.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise LuvnetError(f"{path}: no such DICOM file")
    if not is_dicom(path):
        raise LuvnetError(
            f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble); expected "
            "a DICOM Part 10 file as exported by a scanner or archive"
        )
    try:
        with _quiet_pydicom():
            return pydicom.dcmread(path, defer_size=None if pixels else 1024)
    except InvalidDicomError as err:
        raise LuvnetError(
            f"{path}: DICOM header cannot be read ({type(err).__name__}); expected a DICOM "
            "Part 10 file: export it again"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged header makes the parser raise anything
        raise LuvnetError(
            f"{path}: DICOM header cannot be read ({type(err).__name__}); the file is probably "
            "truncated or damaged: export it again"
        ) from None


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames (0028,0008); 1 for a single-frame image (absent, empty or 0)."""
    try:
        value = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        value = 1
    return max(1, value)


def frame_timing(ds: Dataset, count: int, path: Path | None = None) -> tuple[np.ndarray, float]:
    """Timestamps (float64 [count], seconds, first 0.0) and frames per second from the header.

    Frame Time Vector (ms increments, the first 0) gives per-frame times and the mean rate;
    else Frame Time (ms per frame); else Cine Rate (frames/s); else fps 0.0 (unknown) and
    timestamps at :data:`NOMINAL_FPS`. An invalid value (non-positive, wrong length) is
    logged (path only) and the next attribute is tried.
    """
    vector = _floats(ds, "FrameTimeVector")
    if vector is not None:
        if len(vector) >= count and np.all(vector[1:count] > 0) and vector[0] >= 0:
            times = np.cumsum(vector[:count]) - vector[0]
            fps = 1000.0 * (count - 1) / times[-1] if count > 1 else 0.0  # the mean rate
            return times / 1000.0, float(fps)
        log.warning("%s: Frame Time Vector (0018,1065) invalid for %d frames; ignored", path, count)
    for name, to_fps in (("FrameTime", lambda v: 1000.0 / v), ("CineRate", lambda v: v)):
        values = _floats(ds, name)
        if values is None:
            continue
        if len(values) == 1 and values[0] > 0 and np.isfinite(values[0]):
            fps = float(to_fps(float(values[0])))
            return np.arange(count, dtype=np.float64) / fps, fps
        log.warning("%s: %s is not a positive number; ignored", path, name)
    return np.arange(count, dtype=np.float64) / NOMINAL_FPS, 0.0


def imaging_region(ds: Dataset) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the imaging region in the Sequence of Ultrasound Regions, or None.

    The region whose RegionDataType is tissue (preferring a 2D spatial format), else the
    largest region; the largest of several candidates; clipped to the image.
    """
    columns, rows = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, y0 = max(0, x0), max(0, y0)
        if columns and rows:
            x1, y1 = min(columns - 1, x1), min(rows - 1, y1)
        if x1 < x0 or y1 < y0:
            continue
        tissue = item.get("RegionDataType") == _TISSUE
        two_d = item.get("RegionSpatialFormat") == _SPATIAL_2D
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        regions.append(((tissue, tissue and two_d, area), (x0, y0, x1 - x0 + 1, y1 - y0 + 1)))
    if not regions:
        return None
    return max(regions, key=lambda r: r[0])[1]


def _floats(ds: Dataset, name: str) -> np.ndarray | None:
    """A numeric attribute as float64 [n]; None if absent or empty or not numbers."""
    value = ds.get(name)
    if value is None or value == "":
        return None
    many = isinstance(value, Sequence) and not isinstance(value, str | bytes)
    items = list(value) if many else [value]
    try:
        return np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _decode(path: Path, ds: Dataset, count: int) -> Iterator[np.ndarray]:
    """The first ``count`` frames, converted to BGR uint8 or grey uint8."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise LuvnetError(f"{path}: no Transfer Syntax UID (0002,0010); the file is damaged")
    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise LuvnetError(
            f"{path}: pixel data in transfer syntax {name!r}, which pydicom cannot decode; "
            "expected uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000: export it in one of these"
        ) from None
    if not decoder.is_available:
        raise LuvnetError(
            f"{path}: pixel data in {name!r} needs a decoder plugin that is not installed; "
            f"{_INSTALL}"
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    try:
        with _quiet_pydicom():
            for index, (array, meta) in enumerate(
                decoder.iter_array(ds, indices=range(count), as_rgb=True)
            ):
                got = str(meta.get("photometric_interpretation") or photometric).upper()
                yield _to_u8(array, got, ds)
                if index + 1 >= count:
                    break
    except LuvnetError:
        raise
    except Exception as err:  # noqa: BLE001 - plugins raise anything; their text may quote the header
        raise LuvnetError(
            f"{path}: pixel data ({name}, {photometric or 'no photometric interpretation'}) "
            f"cannot be decoded ({type(err).__name__}); the file is probably truncated or "
            "damaged: export it again"
        ) from None


def _to_u8(array: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    """One decoded frame as HxWx3 BGR uint8 (colour) or HxW uint8 (grey)."""
    from pydicom.pixels import apply_color_lut, convert_color_space

    bits = int(ds.get("BitsStored") or array.dtype.itemsize * 8)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        return _bgr(_scale(rgb, _lut_bits(ds, rgb), signed=False))
    if array.ndim == 3:
        if photometric in _YBR:  # a plugin that did not convert: do it here
            array = convert_color_space(array, photometric, "RGB")
        return _bgr(_scale(array, bits, signed=False))
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    grey = _scale(array, bits, signed=signed)
    if photometric == "MONOCHROME1":  # minimum is white
        grey = 255 - grey
    return np.ascontiguousarray(grey)


def _lut_bits(ds: Dataset, rgb: np.ndarray) -> int:
    """Bits of a palette's entries: the Red Palette Color Lookup Table Descriptor's third
    value (8 or 16). pydicom returns 8-bit entries as uint16, so the dtype alone would scale
    an 8-bit palette down to black."""
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        bits = int(descriptor[2])
    except (TypeError, ValueError, IndexError):
        bits = 0
    return bits if bits in (8, 16) else (16 if rgb.dtype.itemsize > 1 else 8)


def _scale(array: np.ndarray, bits: int, *, signed: bool) -> np.ndarray:
    """Samples of ``bits`` stored bits to uint8 over the whole representable range."""
    if array.dtype == np.uint8 and bits <= 8 and not signed:
        return array
    bits = max(1, min(bits, array.dtype.itemsize * 8))
    low = -(2 ** (bits - 1)) if signed else 0
    wide = array.astype(np.int64) - low
    return (np.clip(wide, 0, 2**bits - 1) * 255 // (2**bits - 1)).astype(np.uint8)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _no_pixels(path: Path, ds: Dataset, missing: list[str]) -> str:
    what = "no Pixel Data (7FE0,0010)" if "PixelData" not in ds else f"no {'/'.join(missing)}"
    sop = ds.get("SOPClassUID")
    kind = f" ({getattr(sop, 'name', 'unknown SOP class')})" if sop else ""
    return (
        f"{path}: DICOM file{kind} without an image: {what}; expected an ultrasound image or "
        "cine loop (e.g. Ultrasound Multi-frame Image Storage)"
    )


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's warnings can quote header values (an invalid name, a bad date): dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _pydicom() -> Any:
    """pydicom, imported on first use (an optional extra); LuvnetError if not installed."""
    try:
        import pydicom
    except ImportError:
        raise LuvnetError(f"reading DICOM needs pydicom and its plugins; {_INSTALL}") from None
    # Its log can quote header values; it never reaches the user's log.
    logging.getLogger("pydicom").propagate = False
    return pydicom
