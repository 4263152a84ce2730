"""Ultrasound DICOM: decoding (transfer syntaxes, photometric interpretations), timing, the
imaging region, one-line errors, the dicom-manifest command and that no header value leaks.

Files are written here with pydicom and its encoders; the handed cases come from
``../shared/cases/dicom`` (skipped when absent).
"""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the dicom extra is not installed")

from pydicom import uid  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import convert_color_space, get_encoder  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

from luvnet.cli import main  # noqa: E402
from luvnet.engine.data.dicom import is_dicom, read_dicom  # noqa: E402
from luvnet.engine.data.dicom_manifest import SALT_NAME  # noqa: E402
from luvnet.engine.data.manifest import read_manifest  # noqa: E402
from luvnet.engine.errors import LuvnetError  # noqa: E402
from luvnet.engine.model.config import PATTERNS  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CASES = REPO.parent / "shared" / "cases" / "dicom"
# The id's own part has letters: as digits alone ("12345") it turned up by chance inside a
# number of a published scores message, which the leak checks below cannot tell from a leak.
ID_NUMBER = "4J7Q2X"
NAME, PATIENT = "Doe^Jane", f"MRN-{ID_NUMBER}"
BOX = (slice(52, 68), slice(102, 128))  # inside the coloured box of the handed cases


def frames_rgb(count: int = 3, height: int = 48, width: int = 64) -> np.ndarray:
    """[T, H, W, 3] RGB uint8: a gradient, a red box that moves one pixel a frame."""
    rng = np.random.default_rng(0)
    out = rng.integers(0, 60, (count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        out[t, 10:20, 10 + t : 30 + t] = (220, 30, 30)
    return out


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "RGB",
    syntax: str = uid.ExplicitVRLittleEndian,
    **attrs: object,
) -> Path:
    """A DICOM Part 10 file with ``pixels`` ([T,H,W(,3)], T>1 = multi-frame) in ``syntax``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    multi = pixels is not None and pixels.shape[0] > 1
    ds.SOPClassUID = uid.UltrasoundMultiFrameImageStorage if multi else uid.UltrasoundImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "US"
    ds.PatientName = NAME
    ds.PatientID = PATIENT
    ds.InstitutionName = "St Elsewhere"
    ds.StudyDate = "20240101"
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.set_pixel_data(pixels if multi else pixels[0], photometric, 8)
        ds.PhotometricInterpretation = photometric  # set_pixel_data checks only RGB/MONO2 etc.
        if syntax not in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian):
            ds.compress(syntax)
        elif syntax == uid.ImplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def encodable(syntax: str) -> bool:
    try:
        return bool(get_encoder(syntax).is_available)
    except NotImplementedError:
        return False


SYNTAXES = [
    pytest.param(uid.ExplicitVRLittleEndian, id="explicit-le"),
    pytest.param(uid.ImplicitVRLittleEndian, id="implicit-le"),
    pytest.param(uid.RLELossless, id="rle"),
    pytest.param(
        uid.JPEG2000Lossless,
        id="j2k",
        marks=pytest.mark.skipif(
            not encodable(uid.JPEG2000Lossless), reason="no JPEG 2000 encoder (pylibjpeg-openjpeg)"
        ),
    ),
    pytest.param(
        uid.JPEGLSLossless,
        id="jpeg-ls",
        marks=pytest.mark.skipif(
            not encodable(uid.JPEGLSLossless), reason="no JPEG-LS encoder (pyjpegls) installed"
        ),
    ),
]


# --- the handed cases ------------------------------------------------------------------------


def case(name: str) -> Path:
    path = CASES / name
    if not path.is_file():
        pytest.skip(f"handed case {path} absent (../shared/cases is not on this machine)")
    return path


def test_case_10a_rgb_cine_has_3_frames_at_30_fps() -> None:
    video = read_dicom(case("10a_us_cine_rgb.dcm"), None)
    assert len(video.frames) == 3
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in video.frames)
    assert video.fps == pytest.approx(30.0, abs=0.05), "Frame Time 33.3 ms"
    np.testing.assert_allclose(video.timestamps, [0.0, 0.0333, 0.0666], atol=1e-6)


def test_case_10b_ybr422_jpeg_decodes_in_the_right_colours() -> None:
    reference = read_dicom(case("10a_us_cine_rgb.dcm"), None)
    video = read_dicom(case("10b_us_cine_ybr422_jpeg.dcm"), None)
    assert len(video.frames) == 3
    for ref, got in zip(reference.frames, video.frames, strict=True):
        assert got.shape == ref.shape == (120, 160, 3)
        ref_box = ref[BOX].reshape(-1, 3).mean(0)
        got_box = got[BOX].reshape(-1, 3).mean(0)
        # A red box, in BGR order: red high, blue and green low; within JPEG's loss of 10a.
        assert ref_box[2] > 150 and ref_box[:2].max() < 80, ref_box
        np.testing.assert_allclose(got_box, ref_box, atol=15)
        assert np.abs(got.astype(int) - ref.astype(int)).mean() < 6
    assert video.fps == pytest.approx(30.0, abs=0.05)


# --- transfer syntaxes and photometric interpretations ---------------------------------------


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_lossless_syntaxes_round_trip_colour_and_grey(tmp_path: Path, syntax: str) -> None:
    rgb = frames_rgb(3)
    colour = read_dicom(write_dicom(tmp_path / "c.dcm", rgb, "RGB", syntax, FrameTime="40"), None)
    assert len(colour.frames) == 3
    for t, frame in enumerate(colour.frames):
        np.testing.assert_array_equal(frame, rgb[t, ..., ::-1], err_msg=f"frame {t} (BGR)")
    grey_in = rgb[..., 0].copy()
    grey = read_dicom(write_dicom(tmp_path / "g.dcm", grey_in, "MONOCHROME2", syntax), None)
    assert [f.shape for f in grey.frames] == [(48, 64)] * 3
    np.testing.assert_array_equal(np.stack(grey.frames), grey_in)


def test_ybr_full_is_converted_to_bgr(tmp_path: Path) -> None:
    rgb = frames_rgb(2)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    video = read_dicom(write_dicom(tmp_path / "y.dcm", ybr, "YBR_FULL"), None)
    diff = np.abs(np.stack(video.frames).astype(int) - rgb[..., ::-1].astype(int))
    assert diff.max() <= 2, "YBR_FULL -> RGB -> BGR within rounding"


def test_jpeg_baseline_ybr_full_422_decodes_in_colour(tmp_path: Path) -> None:
    """The commonest compressed export: each frame a JPEG (4:2:2), photometric YBR_FULL_422."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    rgb = frames_rgb(3)
    jpegs = []
    for frame in rgb:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=95, subsampling=1)  # 1 = 4:2:2
        jpegs.append(buffer.getvalue())
    path = write_dicom(tmp_path / "jpeg.dcm", rgb, "RGB", FrameTime="33.3")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate(jpegs)
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    video = read_dicom(path, None)
    assert len(video.frames) == 3
    for t, frame in enumerate(video.frames):
        box = frame[10:20, 12 + t : 28 + t].reshape(-1, 3).mean(0)  # BGR
        np.testing.assert_allclose(box, (30, 30, 220), atol=20, err_msg=f"frame {t}")
        # Brightness survives; per-pixel colour noise does not (chroma is halved, 4:2:2).
        assert np.abs(frame.mean(-1) - rgb[t].mean(-1)).mean() < 4


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    grey = frames_rgb(2)[..., 1].copy()
    path = write_dicom(tmp_path / "m1.dcm", grey, "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    video = read_dicom(path, None)
    np.testing.assert_array_equal(np.stack(video.frames), 255 - grey)


def test_palette_colour_goes_through_its_lookup_table(tmp_path: Path) -> None:
    index = np.tile(np.arange(64, dtype=np.uint8), (2, 48, 1))
    path = write_dicom(tmp_path / "pal.dcm", index, "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    entries = np.arange(256, dtype=np.uint16)
    tables = (entries * 257, 0 * entries, (255 - entries) * 257)  # red, green, blue (16 bit)
    for n, table in enumerate(tables):
        ds.add_new(0x00281101 + n, "US", [256, 0, 16])  # descriptor: entries, first, bits
        ds.add_new(0x00281201 + n, "OW", table.astype("<u2").tobytes())
    ds.save_as(path)
    frame = read_dicom(path, None).frames[0]
    assert frame.shape == (48, 64, 3)
    np.testing.assert_array_equal(frame[0, :, 2], np.arange(64))  # red = index (BGR order)
    np.testing.assert_array_equal(frame[0, :, 1], 0)
    np.testing.assert_array_equal(frame[0, :, 0], 255 - np.arange(64))


def test_palette_colour_with_8_bit_entries_is_not_black(tmp_path: Path) -> None:
    """Lookup Table Descriptor bits = 8 (entries 0..255, stored in 16-bit words): pydicom
    hands them back as uint16, which must not be scaled as 16-bit samples."""
    index = np.tile(np.arange(64, dtype=np.uint8), (2, 48, 1))
    path = write_dicom(tmp_path / "pal8.dcm", index, "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    entries = np.arange(256, dtype=np.uint16)
    for n, table in enumerate((entries, 0 * entries, 255 - entries)):  # red, green, blue
        ds.add_new(0x00281101 + n, "US", [256, 0, 8])
        ds.add_new(0x00281201 + n, "OW", table.astype("<u2").tobytes())
    ds.save_as(path)
    frame = read_dicom(path, None).frames[0]
    np.testing.assert_array_equal(frame[0, :, 2], np.arange(64))  # red = index (BGR order)
    np.testing.assert_array_equal(frame[0, :, 1], 0)
    np.testing.assert_array_equal(frame[0, :, 0], 255 - np.arange(64))


def test_single_frame_image_and_max_frames(tmp_path: Path) -> None:
    single = read_dicom(write_dicom(tmp_path / "one.dcm", frames_rgb(1), "RGB"), None)
    assert len(single.frames) == 1 and single.frames[0].shape == (48, 64, 3)
    assert list(single.timestamps) == [0.0]
    cine = write_dicom(tmp_path / "five.dcm", frames_rgb(5), "RGB", uid.RLELossless, CineRate=25)
    assert len(read_dicom(cine, 2).frames) == 2
    assert len(read_dicom(cine, 2).timestamps) == 2


# --- timing and region -----------------------------------------------------------------------


def test_frame_time_vector_gives_each_frame_its_time(tmp_path: Path) -> None:
    vector = ["0", "33.3", "33.3", "200", "200"]
    path = write_dicom(tmp_path / "v.dcm", frames_rgb(5), "RGB", FrameTimeVector=vector)
    video = read_dicom(path, None)
    np.testing.assert_allclose(video.timestamps, [0, 0.0333, 0.0666, 0.2666, 0.4666], atol=1e-9)
    assert video.fps == pytest.approx(4 / 0.4666)


def test_cine_rate_and_no_timing(tmp_path: Path) -> None:
    cine = read_dicom(write_dicom(tmp_path / "c.dcm", frames_rgb(3), "RGB", CineRate=25), None)
    assert cine.fps == 25.0
    np.testing.assert_allclose(cine.timestamps, [0, 0.04, 0.08])
    bare = read_dicom(write_dicom(tmp_path / "b.dcm", frames_rgb(3), "RGB"), None)
    assert bare.fps == 0.0, "no timing attribute: fps unknown"
    assert np.all(np.diff(bare.timestamps) > 0)


def region(x0: int, y0: int, x1: int, y1: int, data_type: int, spatial: int = 1) -> Dataset:
    item = Dataset()
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.RegionDataType, item.RegionSpatialFormat = data_type, spatial
    return item


def test_ultrasound_region_is_the_tissue_region(tmp_path: Path) -> None:
    regions = Sequence([region(0, 0, 63, 47, 3), region(10, 5, 49, 34, 1)])  # colour bar, tissue
    path = write_dicom(tmp_path / "r.dcm", frames_rgb(2), SequenceOfUltrasoundRegions=regions)
    assert read_dicom(path, None).region == (10, 5, 40, 30)
    others = Sequence([region(0, 0, 9, 9, 3), region(5, 5, 200, 30, 4)])  # none is tissue
    path = write_dicom(tmp_path / "o.dcm", frames_rgb(2), SequenceOfUltrasoundRegions=others)
    assert read_dicom(path, None).region == (5, 5, 59, 26), "the largest, clipped to 64x48"
    assert read_dicom(write_dicom(tmp_path / "n.dcm", frames_rgb(2)), None).region is None


# --- errors: one line, the path, what is missing; no header value ----------------------------


def test_file_without_pixel_data_is_one_line(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", None)
    with pytest.raises(LuvnetError) as err:
        read_dicom(path, None)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "Pixel Data" in text
    assert NAME not in text and PATIENT not in text


def test_non_dicom_named_dcm_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "movie.dcm"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    assert not is_dicom(path)
    with pytest.raises(LuvnetError, match=r"not a DICOM file") as err:
        read_dicom(path, None)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_truncated_pixel_data_is_one_line_without_header_values(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cut.dcm", frames_rgb(4), "RGB", uid.RLELossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(LuvnetError) as err:
        read_dicom(path, None)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    for secret in (NAME, PATIENT, "Doe", "Elsewhere", "20240101"):
        assert secret not in text


# --- luvnet dicom-manifest -------------------------------------------------------------------


def dicom_folder(root: Path) -> Path:
    """Two patients (two loops and one), plus files the walk must leave out."""
    folder = root / "export"
    (folder / "sub").mkdir(parents=True)
    write_dicom(folder / "a1.dcm", frames_rgb(3), PatientID="P-A", CineRate=30)
    write_dicom(folder / "sub" / "IM0002", frames_rgb(3), PatientID="P-A")  # no extension
    write_dicom(folder / "b1.dcm", frames_rgb(3), "RGB", uid.RLELossless, PatientID="P-B")
    write_dicom(folder / "still.dcm", frames_rgb(1), PatientID="P-B")  # single frame
    write_dicom(folder / "sr.dcm", None, PatientID="P-B")  # no pixel data
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def manifest_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["video"]: row for row in csv.DictReader(handle)}


def test_dicom_manifest_keys_patients_and_reuses_its_salt(tmp_path: Path) -> None:
    folder = dicom_folder(tmp_path)
    out = tmp_path / "manifest.csv"
    assert main(["dicom-manifest", str(folder), "--out", str(out)]) == 0
    rows = manifest_rows(out)
    assert sorted(rows) == ["export/a1.dcm", "export/b1.dcm", "export/sub/IM0002"]
    keys = {video: row["patient_id"] for video, row in rows.items()}
    assert keys["export/a1.dcm"] == keys["export/sub/IM0002"] != keys["export/b1.dcm"]
    assert not {"P-A", "P-B"} & set(keys.values())
    assert all(row[p] == "" for row in rows.values() for p in PATTERNS), "labels to fill in"
    manifest = read_manifest(out)  # the rows (one without extension) are valid manifest rows
    assert len(manifest) == 3 and len(manifest.patients()) == 2
    salt = tmp_path / SALT_NAME
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    salt_text = salt.read_text()

    again = tmp_path / "again.csv"
    assert main(["dicom-manifest", str(folder), "--out", str(again)]) == 0
    assert salt.read_text() == salt_text, "the salt file is reused, not rewritten"
    assert {v: r["patient_id"] for v, r in manifest_rows(again).items()} == keys

    other_salt = tmp_path / "private" / "salt"
    other_salt.parent.mkdir()
    third = tmp_path / "third.csv"
    argv = ["dicom-manifest", str(folder), "--out", str(third), "--salt", str(other_salt)]
    assert main(argv) == 0
    assert other_salt.is_file() and stat.S_IMODE(other_salt.stat().st_mode) == 0o600
    third_keys = {v: r["patient_id"] for v, r in manifest_rows(third).items()}
    assert third_keys.keys() == keys.keys() and set(third_keys.values()).isdisjoint(keys.values())

    assert main(["dicom-manifest", str(folder), "--out", str(out)]) == 2, "never overwritten"


def test_dicom_manifest_refuses_a_damaged_salt(tmp_path: Path) -> None:
    folder = dicom_folder(tmp_path)
    (tmp_path / SALT_NAME).write_text("not hex\n")
    assert main(["dicom-manifest", str(folder), "--out", str(tmp_path / "m.csv")]) == 2
    assert not (tmp_path / "m.csv").exists()


def test_no_header_value_leaves_the_machine(tmp_path: Path) -> None:
    """Patient name and ID (and institution, date) appear in no manifest, salt file, message."""
    folder = dicom_folder(tmp_path)
    write_dicom(folder / "jane.dcm", frames_rgb(3), PatientName=NAME, PatientID=PATIENT)
    write_dicom(folder / "jane_sr.dcm", None, PatientName=NAME, PatientID=PATIENT)
    cut = write_dicom(folder / "jane_cut.dcm", frames_rgb(3), PatientID=PATIENT)
    cut.write_bytes(cut.read_bytes()[:400])  # a header cut short
    out = tmp_path / "manifest.csv"
    env = {**os.environ, "PYTHONWARNINGS": "always"}
    done = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "dicom-manifest", str(folder), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr, "the unusable files are named"
    texts = [done.stdout, done.stderr, out.read_text(), (tmp_path / SALT_NAME).read_text()]
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                read_dicom(path, None)
            except LuvnetError as err:
                texts.append(str(err))
    for secret in (NAME, "Doe", "Jane", PATIENT, ID_NUMBER, "St Elsewhere", "20240101"):
        for text in texts:
            assert secret not in text, f"{secret!r} leaked into: {text[:200]!r}"


# --- DICOM through evaluate and the stream ---------------------------------------------------


def scan_frames(count: int, seed: int) -> np.ndarray:
    """[T, 120, 160] grey: changing speckle in a sector-like box, a black border."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 120, 160), np.uint8)
    out[:, 20:116, 30:130] = rng.integers(0, 255, (count, 96, 100), dtype=np.uint8)
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real checkpoint (as tests/streamer/conftest.py builds it)."""
    import torch

    from luvnet.engine.model.checkpoint import save_checkpoint
    from luvnet.engine.model.config import PreprocessConfig
    from luvnet.engine.model.network import build_luvnet

    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", fusion_hidden=32, classifier_hidden=16).eval()
    config = model.config.replace(
        preprocess=PreprocessConfig(image_size=64), thresholds=(0.5, 0.5, 0.5, 0.5)
    )
    return Path(save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", config=config))


@pytest.mark.slow
def test_dicom_through_evaluate_and_the_stream_leaks_no_header_value(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from tests.streamer.test_stream import run_stream

    folder = tmp_path / "scans"
    folder.mkdir()
    for n, (patient, syntax) in enumerate(
        [(PATIENT, uid.RLELossless), (PATIENT, uid.ExplicitVRLittleEndian), ("MRN-999", None)]
    ):
        write_dicom(
            folder / f"loop{n}.dcm",
            scan_frames(32, n),
            "MONOCHROME2",
            syntax or uid.ExplicitVRLittleEndian,
            PatientName=NAME if patient == PATIENT else "Roe^Richard",
            PatientID=patient,
            FrameTime="33.3",
        )
    manifest = tmp_path / "manifest.csv"
    assert main(["dicom-manifest", str(folder), "--out", str(manifest)]) == 0
    text = manifest.read_text().splitlines()
    labelled = [text[0]] + [
        line.replace(",,,,", f",{n % 2},{1 - n % 2},0,") for n, line in enumerate(text[1:])
    ]
    manifest.write_text("\n".join(labelled) + "\n")
    out = tmp_path / "eval"
    evaluate = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "evaluate", "--checkpoint", str(tiny_checkpoint),
         "--manifest", str(manifest), "--split", "all", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    written = [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file()]
    assert written, "evaluate wrote nothing"

    stream, sub = run_stream(
        "--source", f"file:{folder / 'loop0.dcm'}", "--checkpoint", str(tiny_checkpoint),
        "--max-frames", "3", "--as-fast-as-possible",
    )  # fmt: skip
    assert stream.returncode == 0, stream.stderr
    assert len(sub.of_kind("scores")) == 3, "3 frames scored from the DICOM file"
    published = [repr(body) for _, body in sub.messages]
    texts = [evaluate.stdout, evaluate.stderr, *written, stream.stdout, stream.stderr, *published]
    for secret in (NAME, "Doe", PATIENT, ID_NUMBER, "Roe^Richard", "MRN-999", "St Elsewhere",
                   "20240101"):  # fmt: skip
        for text in texts:
            assert secret not in text, f"{secret!r} leaked into: {text[:200]!r}"
