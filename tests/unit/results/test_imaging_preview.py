"""Tests for functions.results.imaging_preview: PNG thumbnails of one DICOM instance, or a reasoned refusal."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from functions.results import imaging_preview
from functions.results.imaging_preview import REASONS, THUMBNAIL_PX, NoPreview, render_thumbnail

# Every file pydicom ships, listed from its data directory: get_testdata_files("*") would also try
# to download pydicom-data's ~80 extra files from GitHub, which a unit test must not depend on.
# Non-DICOM files (README.txt, *.json, *.dump, zipMR.gz, crayons.icc) are kept: they must be refused.
TEST_FILES_DIR = Path(DATA_ROOT) / "test_files"
TEST_FILES = sorted(path for path in TEST_FILES_DIR.iterdir() if path.is_file())

MPEG2 = UID("1.2.840.10008.1.2.4.100")


def _bytes(name: str) -> bytes:
    return (TEST_FILES_DIR / name).read_bytes()


def _open_png(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def _pixels(png: bytes) -> npt.NDArray[Any]:
    return np.asarray(_open_png(png)).astype(np.int64)


def _outcome(data: bytes) -> Image.Image | NoPreview:
    """The rendered PNG, opened, or the refusal; any other exception propagates and fails the test."""
    try:
        return _open_png(render_thumbnail(data))
    except NoPreview as refusal:
        return refusal


def _assert_png_or_refusal(outcome: Image.Image | NoPreview) -> None:
    if isinstance(outcome, NoPreview):
        assert outcome.reason in REASONS
        assert outcome.detail
    else:
        assert 1 <= max(outcome.size) <= THUMBNAIL_PX
        assert outcome.mode in ("L", "RGB")


def _refusal(data: bytes) -> NoPreview:
    with pytest.raises(NoPreview) as caught:
        render_thumbnail(data)
    assert caught.value.reason in REASONS
    return caught.value


def _part10(ds: Dataset, transfer_syntax: UID = ExplicitVRLittleEndian) -> bytes:
    """``ds`` as a Part 10 file, with the identifying elements a real instance has."""
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Ruiz^Ana"
    ds.PatientID = "RUPA800101MOCZXN09"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    # All transfer syntaxes used here are explicit VR little endian (the encoding a private one needs spelled out).
    pydicom.dcmwrite(out, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


def _image(pixels: npt.NDArray[Any], photometric: str, bits_stored: int, **elements: Any) -> Dataset:
    ds = Dataset()
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _ramp(photometric: str = "MONOCHROME2", **elements: Any) -> bytes:
    """A 10x10 frame of stored values 0..99, row by row."""
    return _part10(_image(np.arange(100, dtype=np.uint16).reshape(10, 10), photometric, 12, **elements))


def _encapsulated(transfer_syntax: UID) -> bytes:
    ds = Dataset()
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([bytes(16)])
    ds["PixelData"].VR = "OB"
    return _part10(ds, transfer_syntax)


# --- every shipped file ------------------------------------------------------------------------


def test_all_shipped_files_are_exercised() -> None:
    names = {path.name for path in TEST_FILES}
    assert len(TEST_FILES) >= 80, len(TEST_FILES)
    assert {"CT_small.dcm", "MR_small_RLE.dcm", "examples_palette.dcm", "rtstruct.dcm", "test-SR.dcm"} <= names


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_every_shipped_file_gives_a_small_png_or_a_reasoned_refusal(path: Path) -> None:
    _assert_png_or_refusal(_outcome(path.read_bytes()))


# --- what must render ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("CT_small.dcm", "L"),  # explicit VR little endian, signed 16-bit with rescale
        ("MR_small.dcm", "L"),
        ("MR_small_bigendian.dcm", "L"),
        ("JPGExtended.dcm", "L"),  # JPEG extended, 12-bit
        ("MR_small_jp2klossless.dcm", "L"),  # JPEG 2000
        ("MR_small_jpeg_ls_lossless.dcm", "L"),  # JPEG-LS
        ("MR_small_RLE.dcm", "L"),  # RLE
        ("image_dfl.dcm", "L"),  # deflated dataset
        ("liver_1frame.dcm", "L"),  # 1 bit allocated
        ("rtdose.dcm", "L"),  # 15 frames of 32-bit
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),  # JPEG baseline, YBR_FULL
        ("SC_rgb_jpeg_gdcm.dcm", "RGB"),  # JPEG lossless
        ("examples_jpeg2k.dcm", "RGB"),  # JPEG 2000, YBR_RCT
        ("examples_rgb_color.dcm", "RGB"),
        ("SC_ybr_full_422_uncompressed.dcm", "RGB"),
        ("SC_rgb_rle_32bit_2frame.dcm", "RGB"),
        ("examples_ybr_color.dcm", "RGB"),  # 30 frames, JPEG baseline YBR_FULL_422
        ("examples_palette.dcm", "RGB"),
    ],
)
def test_known_images_render(name: str, mode: str) -> None:
    image = _open_png(render_thumbnail(_bytes(name)))
    assert image.mode == mode
    assert 1 <= max(image.size) <= THUMBNAIL_PX


def test_ct_thumbnail_is_not_uniform() -> None:
    pixels = _pixels(render_thumbnail(_bytes("CT_small.dcm")))
    assert pixels.shape == (128, 128)
    assert pixels.max() - pixels.min() > 100


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_lossless_encodings_of_one_image_render_identically(name: str) -> None:
    assert np.array_equal(_pixels(render_thumbnail(_bytes(name))), _pixels(render_thumbnail(_bytes("MR_small.dcm"))))


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("SC_rgb_rle_16bit.dcm", 0),  # 16-bit samples scaled to 8
        ("SC_rgb_rle_32bit.dcm", 0),
        ("SC_rgb_jpeg_dcmtk.dcm", 2),  # lossy JPEG stored as YBR_FULL
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 2),  # lossy JPEG stored as YBR_FULL_422
        ("SC_ybr_full_422_uncompressed.dcm", 2),  # native YBR_FULL_422
    ],
)
def test_colour_encodings_of_one_image_render_alike(name: str, tolerance: float) -> None:
    reference = _pixels(render_thumbnail(_bytes("SC_rgb_rle.dcm")))
    assert np.abs(_pixels(render_thumbnail(_bytes(name))) - reference).mean() <= tolerance


def test_palette_colour_is_coloured() -> None:
    pixels = _pixels(render_thumbnail(_bytes("examples_palette.dcm")))
    assert (pixels[..., 0] != pixels[..., 2]).any()


def test_middle_frame_is_the_representative_one() -> None:
    frames = np.zeros((3, 4, 6, 3), dtype=np.uint8)
    frames[1] = (200, 100, 50)
    frames[2] = 255
    pixels = _pixels(render_thumbnail(_part10(_image(frames, "RGB", 8))))
    assert pixels.shape == (4, 6, 3)
    assert (pixels == (200, 100, 50)).all()


def test_without_a_window_the_frame_range_is_stretched() -> None:
    pixels = _pixels(render_thumbnail(_ramp()))
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_window_is_honoured_rather_than_stretched() -> None:
    # 12-bit stored values 0..99 under a window over 0..1000 stay in the darkest tenth.
    pixels = _pixels(render_thumbnail(_ramp(WindowCenter=500, WindowWidth=1000)))
    assert pixels.min() == 0
    assert 20 <= pixels.max() <= 30


def test_rescale_is_applied_before_the_window() -> None:
    # Stored v means 10 * v - 500; the window covers -100..100, i.e. stored 40..60.
    pixels = _pixels(render_thumbnail(_ramp(RescaleSlope=10, RescaleIntercept=-500, WindowCenter=0, WindowWidth=200)))
    ramp = pixels.reshape(-1)
    assert ramp[39] == 0
    assert 120 <= ramp[50] <= 135
    assert ramp[61] == 255


def test_voi_lut_is_applied() -> None:
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [100, 0, 8])
    lut.add_new("LUTData", "US", list(range(99, -1, -1)))  # an inverting LUT: stored 0 shows brightest
    pixels = _pixels(render_thumbnail(_ramp(VOILUTSequence=Sequence([lut]))))
    assert pixels.reshape(-1)[0] == 255
    assert pixels.reshape(-1)[99] == 0


def test_malformed_window_falls_back_to_the_frame_range() -> None:
    pixels = _pixels(render_thumbnail(_ramp(WindowCenter=50, WindowWidth=0)))
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_monochrome1_is_inverted() -> None:
    pixels = _pixels(render_thumbnail(_ramp("MONOCHROME1")))
    assert pixels.reshape(-1)[0] == 255
    assert pixels.reshape(-1)[99] == 0


def test_float_pixel_data_ignores_non_finite_values() -> None:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 2, 4, 1, 32
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.FloatPixelData = np.array([[np.nan, 1, 2, 3], [np.inf, 1, 2, 3]], dtype=np.float32).tobytes()
    pixels = _pixels(render_thumbnail(_part10(ds)))
    assert pixels[0].tolist() == [0, 0, 128, 255]


# --- size and format ---------------------------------------------------------------------------


def test_longest_side_equals_size_for_a_larger_image() -> None:
    assert _open_png(render_thumbnail(_bytes("CT_small.dcm"), size=32)).size == (32, 32)


def test_aspect_ratio_is_kept() -> None:
    # JPEG2000.dcm is 1024 rows by 256 columns.
    assert _open_png(render_thumbnail(_bytes("JPEG2000.dcm"), size=32)).size == (8, 32)
    # examples_palette.dcm is 350 rows by 800 columns.
    assert _open_png(render_thumbnail(_bytes("examples_palette.dcm"), size=80)).size == (80, 35)


def test_smaller_images_are_not_enlarged() -> None:
    assert _open_png(render_thumbnail(_bytes("SC_rgb_small_odd.dcm"))).size == (3, 3)


def test_a_one_pixel_thumbnail_is_possible() -> None:
    assert _open_png(render_thumbnail(_bytes("examples_palette.dcm"), size=1)).size == (1, 1)


def test_size_below_one_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        render_thumbnail(_bytes("CT_small.dcm"), size=0)


def test_png_carries_no_metadata_chunks() -> None:
    png = render_thumbnail(_bytes("CT_small.dcm"))
    chunks, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        chunks.append(png[position + 4 : position + 8].decode("ascii"))
        position += 12 + length
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test-SR.dcm", "reportsi.dcm", "rtplan.dcm", "waveform_ecg.dcm"])
def test_instances_without_an_image_have_no_pixel_data(name: str) -> None:
    assert _refusal(_bytes(name)).reason == "no-pixel-data"


def test_rt_structure_set_without_file_meta_is_undecodable() -> None:
    # pydicom ships rtstruct.dcm without the 'DICM' preamble; force=False refuses such files.
    assert _refusal(_bytes("rtstruct.dcm")).reason == "undecodable"


@pytest.mark.parametrize("data", [b"", b"DICM", random.Random(0).randbytes(4096)], ids=["empty", "magic", "random"])
def test_non_dicom_bytes_are_undecodable(data: bytes) -> None:
    assert _refusal(data).reason == "undecodable"


def test_missing_transfer_syntax_is_undecodable() -> None:
    assert _refusal(_bytes("meta_missing_tsyntax.dcm")).reason == "undecodable"


def test_objects_over_the_limit_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging_preview, "MAX_OBJECT_BYTES", 1024)
    assert _refusal(b"not even DICOM" * 100).reason == "too-large"


def test_deflated_dataset_inflating_past_the_limit_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _bytes("image_dfl.dcm")  # about 4.6 KB, inflating to over 256 KB
    monkeypatch.setattr(imaging_preview, "MAX_OBJECT_BYTES", 100_000)
    assert _refusal(data).reason == "too-large"


def test_frames_over_the_pixel_limit_are_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging_preview, "MAX_FRAME_PIXELS", 128 * 128 - 1)
    assert _refusal(_bytes("CT_small.dcm")).reason == "too-large"


def test_transfer_syntax_without_a_decoder_is_unsupported() -> None:
    assert _refusal(_encapsulated(MPEG2)).reason == "unsupported-transfer-syntax"


def test_transfer_syntax_whose_plugins_are_missing_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Decoder, "is_available", property(lambda decoder: False))
    assert _refusal(_bytes("MR_small_RLE.dcm")).reason == "unsupported-transfer-syntax"


def test_unsupported_photometric_interpretation_is_refused() -> None:
    ds = _image(np.zeros((4, 4, 3), dtype=np.uint8), "RGB", 8)
    ds.PhotometricInterpretation = "HSV"
    assert _refusal(_part10(ds)).reason == "unsupported-photometric"


def test_refusal_text_echoes_no_element_values() -> None:
    odd_photometric = _image(np.zeros((4, 4, 3), dtype=np.uint8), "RGB", 8)
    odd_photometric.PhotometricInterpretation = "RUPA800101"
    private_syntax = UID("1.2.826.0.1.3680043.8.498.1")
    for data in (_part10(odd_photometric), _encapsulated(private_syntax), _part10(Dataset()), _bytes("badVR.dcm")):
        text = str(_refusal(data))
        for value in ("Ruiz", "RUPA800101", private_syntax, "1A"):
            assert value not in text


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        NoPreview("corrupt", "made up")


# --- damaged input -----------------------------------------------------------------------------


def test_first_half_of_ct_is_refused() -> None:
    data = _bytes("CT_small.dcm")
    assert _refusal(data[: len(data) // 2]).reason == "undecodable"


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm", "image_dfl.dcm"]
)
def test_truncated_objects_never_raise_anything_but_no_preview(name: str, fraction: float) -> None:
    # A cut inside trailing padding leaves a complete image; everything else is refused.
    data = _bytes(name)
    _assert_png_or_refusal(_outcome(data[: int(len(data) * fraction)]))


def test_object_cut_inside_encapsulated_pixel_data_reads_as_having_none() -> None:
    # pydicom drops an encapsulated element that the bytes end inside of (a documented limit).
    data = _bytes("MR_small_RLE.dcm")
    assert _refusal(data[: len(data) // 2]).reason == "no-pixel-data"


def test_corrupt_rle_segment_offset_is_refused_not_a_codec_panic() -> None:
    # pylibjpeg-rle panics (pyo3 PanicException, a BaseException) on this segment table.
    data = _bytes("MR_small_RLE.dcm")
    table = struct.pack("<3I", 2, 64, 1948)  # two segments, at 64 and 1948
    assert data.count(table) == 1
    _assert_png_or_refusal(_outcome(data.replace(table, struct.pack("<3I", 2, 64, 1949))))


@pytest.mark.parametrize(
    ("name", "marker", "offset", "replacement"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", b"\xff\xc0", 5, b"\xff" * 4),  # SOF0: rows and columns
        ("JPGExtended.dcm", b"\xff\xc1", 5, b"\xff" * 4),  # SOF1
        ("JPGExtended.dcm", b"\xff\xc1", 5, b"\x00\x00"),  # height 0: left to a DNL marker
        ("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7", 5, b"\xff" * 4),  # SOF55 (JPEG-LS)
        ("examples_jpeg2k.dcm", b"\xff\x4f\xff\x51", 8, b"\xff" * 4),  # SIZ: image width
    ],
    ids=["jpeg-baseline", "jpeg-extended", "jpeg-height-0", "jpeg-ls", "jpeg-2000"],
)
def test_codestream_describing_another_image_is_refused_before_decoding(
    name: str, marker: bytes, offset: int, replacement: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unguarded, each of these makes a codec allocate gigabytes (the process was killed for lack of
    # memory): the decoder is replaced so that a regression fails here instead of exhausting memory.
    data = _bytes(name)
    at = data.find(marker) + offset
    assert data.count(marker) == 1
    assert at > data.find(b"\xe0\x7f\x10\x00")  # inside the Pixel Data element
    calls: list[object] = []
    monkeypatch.setattr(Decoder, "as_array", lambda *args, **kwargs: calls.append(args))
    assert _refusal(data[:at] + replacement + data[at + len(replacement) :]).reason == "undecodable"
    assert calls == []


def test_jp2_wrapper_with_a_zero_box_length_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydicom loops forever walking such a wrapper; the decoder is replaced so a regression fails
    # here instead of hanging the test run.
    data = _bytes("GDCMJ2K_TextGBR.dcm")  # JPEG 2000 inside a JP2 file wrapper
    header_box = b"\x00\x00\x05sjp2h"  # the JP2 header box, 0x573 bytes long
    assert data.count(header_box) == 1
    calls: list[object] = []
    monkeypatch.setattr(Decoder, "as_array", lambda *args, **kwargs: calls.append(args))
    assert _refusal(data.replace(header_box, b"\x00\x00\x00\x00jp2h")).reason == "undecodable"
    assert calls == []


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm", "image_dfl.dcm"]
)
def test_corrupted_bytes_never_raise_anything_but_no_preview(name: str) -> None:
    data = _bytes(name)
    rng = random.Random(name)
    for _ in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        _assert_png_or_refusal(_outcome(bytes(damaged)))


def test_deflate_stream_cut_short_is_undecodable() -> None:
    data = _bytes("image_dfl.dcm")
    assert _refusal(data[: len(data) // 2]).reason == "undecodable"
