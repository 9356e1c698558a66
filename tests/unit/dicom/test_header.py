"""Tests for functions.dicom_ingest.header: ranged header reads and quarantine reasons."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.errors import InvalidDicomError

from functions.dicom_ingest.header import (
    REASONS,
    Instance,
    Rejected,
    read_header,
    synthetic_instance,
)

KIB = 1024
MIB = 1024 * KIB
REQUIRED = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class MemoryReader:
    """A reader over bytes in memory that records every range requested."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start < end, (start, end)
        self.calls.append((start, end))
        return self.data[start:end]


# pydicom ships this file cut short on purpose and reads it without error or warning, silently
# dropping the elements that are missing: read_header must notice that the object ends early.
KNOWN_TRUNCATED = {"rtplan_truncated.dcm"}


DATA_DIR = Path(pydicom.data.__file__).parent / "test_files"


def _eligible_test_files() -> list[Path]:
    """pydicom's bundled files it reads without force that carry a transfer syntax and the 4 UIDs."""
    eligible: list[Path] = []
    # Listed from pydicom's data directory: get_testdata_files() would also try to download the others.
    paths = DATA_DIR.glob("*.dcm")
    for path in sorted(paths):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            continue
        if all(str(ds.get(k) or "").strip() for k in REQUIRED):
            eligible.append(Path(path))
    return eligible


TEST_FILES = _eligible_test_files()


def test_enough_pydicom_files_are_exercised() -> None:
    # 78 files ship with the wheel; about 60 are complete Part 10 files with the four UIDs.
    assert len(TEST_FILES) >= 50, len(TEST_FILES)
    assert {path.name for path in TEST_FILES} >= KNOWN_TRUNCATED


def _read(data: bytes, **kwargs: int) -> Instance:
    return read_header(MemoryReader(data), size=len(data), **kwargs)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_matches_pydicom_full_read(path: Path) -> None:
    data = path.read_bytes()
    full = pydicom.dcmread(path)
    uids = {k: str(full.get(k)).strip(" \x00") for k in REQUIRED}
    if path.name in KNOWN_TRUNCATED:
        # pydicom silently drops what is missing; read_header must notice the object ends early.
        with pytest.raises(Rejected) as caught:
            _read(data)
        assert caught.value.reason == "truncated"
        return
    if not all(len(v) <= 64 and UID_RE.fullmatch(v) for v in uids.values()):
        with pytest.raises(Rejected) as caught:
            _read(data)
        assert caught.value.reason == "invalid-uid"
        return

    inst = _read(data)

    assert inst.sop_instance_uid == uids["SOPInstanceUID"]
    assert inst.sop_class_uid == uids["SOPClassUID"]
    assert inst.study_uid == uids["StudyInstanceUID"]
    assert inst.series_uid == uids["SeriesInstanceUID"]
    assert inst.modality == str(full.get("Modality") or "").strip()
    assert inst.patient_id == str(full.get("PatientID") or "").strip(" \x00")
    assert inst.transfer_syntax_uid == full.file_meta.TransferSyntaxUID
    assert 0 < inst.header_bytes <= len(data)
    if inst.header_bytes < 64 * KIB:
        assert inst.bytes_read <= inst.header_bytes + 64 * KIB
    else:
        assert inst.bytes_read <= 2 * inst.header_bytes + 64 * KIB


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_small_first_chunk_extends_to_the_same_result(path: Path) -> None:
    data = path.read_bytes()
    try:
        whole = _read(data, first_chunk=len(data))
    except Rejected as exc:
        expected = exc.reason
    else:
        expected = None
    if expected is not None:
        with pytest.raises(Rejected) as caught:
            _read(data, first_chunk=256)
        assert caught.value.reason == expected
        return

    reader = MemoryReader(data)
    chunked = read_header(reader, size=len(data), first_chunk=256)

    assert dataclasses.replace(chunked, bytes_read=0) == dataclasses.replace(whole, bytes_read=0)
    assert chunked.bytes_read == sum(end - start for start, end in reader.calls)
    # Ranges are contiguous and never re-read a byte.
    assert [start for start, _ in reader.calls] == [0] + [end for _, end in reader.calls[:-1]]
    assert chunked.bytes_read <= 2 * chunked.header_bytes + 256 + 16


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_header_bytes_is_the_offset_of_pixel_data() -> None:
    path = (DATA_DIR / "CT_small.dcm")
    data = path.read_bytes()
    buf = io.BytesIO(data)
    pydicom.dcmread(buf, stop_before_pixels=True)

    inst = _read(data)

    assert inst.header_bytes == buf.tell()
    assert data[inst.header_bytes : inst.header_bytes + 4] == struct.pack("<HH", 0x7FE0, 0x0010)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["test-SR.dcm", "rtplan.dcm", "waveform_ecg.dcm"])
def test_object_without_pixel_data_has_the_whole_file_as_header(name: str) -> None:
    data = (DATA_DIR / name).read_bytes()

    inst = _read(data)
    chunked = _read(data, first_chunk=256)

    assert inst.header_bytes == chunked.header_bytes == len(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deflated_file_is_read_whole_when_small() -> None:
    data = (DATA_DIR / "image_dfl.dcm").read_bytes()

    inst = _read(data, first_chunk=256)

    assert inst.transfer_syntax_uid == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert inst.header_bytes == len(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_large_deflated_file_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.dicom_ingest import header

    data = (DATA_DIR / "image_dfl.dcm").read_bytes()
    monkeypatch.setattr(header, "DEFLATED_LIMIT", 1024)

    with pytest.raises(Rejected) as caught:
        _read(data, first_chunk=256)

    assert caught.value.reason == "unreadable-header"
    assert "deflated transfer syntax" in caught.value.detail


# --- quarantine reasons -------------------------------------------------------------------------


def _ct_small() -> bytes:
    return (DATA_DIR / "CT_small.dcm").read_bytes()


def _rewritten(edit: Callable[[pydicom.Dataset], None]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(_ct_small()))
        edit(ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _reason(data: bytes, **kwargs: int) -> Rejected:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Rejected) as caught:
            _read(data, **kwargs)
    assert caught.value.reason in REASONS
    return caught.value


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000


@pytest.mark.parametrize(
    "data",
    [PNG, b"just some text\n" * 100, b"", b"x" * 100, b"\x00" * 128],
    ids=["png", "text", "empty", "short", "preamble-only"],
)
def test_non_dicom_objects_are_not_dicom(data: bytes) -> None:
    assert _reason(data).reason == "not-dicom"


def test_object_ending_inside_the_marker_is_truncated() -> None:
    assert _reason(b"\x00" * 128 + b"DI").reason == "truncated"


@pytest.mark.parametrize("cut", [200, 500, 900, 1500])
def test_file_cut_inside_its_header_is_truncated(cut: int) -> None:
    data = _ct_small()
    assert _read(data).header_bytes > cut

    assert _reason(data[:cut]).reason == "truncated"


def test_file_cut_inside_its_header_is_truncated_after_extending() -> None:
    data = _ct_small()[:1500]

    assert _reason(data, first_chunk=256).reason == "truncated"


def test_reader_returning_less_than_the_declared_size_is_truncated() -> None:
    data = _ct_small()
    short = data[:1000]

    with pytest.raises(Rejected) as caught:
        read_header(lambda start, end: short[start:end], size=len(data), first_chunk=256)

    assert caught.value.reason == "truncated"


def test_missing_sop_instance_uid() -> None:
    def drop(ds: pydicom.Dataset) -> None:
        del ds.SOPInstanceUID

    rejected = _reason(_rewritten(drop))

    assert rejected.reason == "missing-uid"
    assert rejected.detail == "SOPInstanceUID is missing"


def test_empty_study_uid_is_missing() -> None:
    def empty(ds: pydicom.Dataset) -> None:
        ds.StudyInstanceUID = ""

    assert _reason(_rewritten(empty)).detail == "StudyInstanceUID is missing"


@pytest.mark.parametrize("bad", ["1.2.03", "abc", "1.2.", ".1.2", "1." + "2" * 70])
def test_invalid_sop_instance_uid(bad: str) -> None:
    def set_uid(ds: pydicom.Dataset) -> None:
        ds.SOPInstanceUID = bad

    rejected = _reason(_rewritten(set_uid))

    assert rejected.reason == "invalid-uid"
    assert "SOPInstanceUID" in rejected.detail
    assert bad not in rejected.detail


def test_header_larger_than_max_header() -> None:
    data = _ct_small()

    rejected = _reason(data, first_chunk=256, max_header=1024)

    assert rejected.reason == "header-too-large"


def test_garbage_after_marker_is_unreadable() -> None:
    data = b"\x00" * 128 + b"DICM" + bytes(range(256)) * 8

    assert _reason(data).reason == "unreadable-header"


def test_garbage_inside_the_file_meta_is_unreadable() -> None:
    # A file meta group with a nonsense element length that points past the end.
    data = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + b"\xff\xff" + b"1.2" * 10

    assert _reason(data).reason in {"unreadable-header", "truncated"}


def test_missing_patient_id_is_returned_empty() -> None:
    def drop(ds: pydicom.Dataset) -> None:
        del ds.PatientID

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _read(_rewritten(drop)).patient_id == ""


SECRET_ID = "CURP-SECRET-0001"
SECRET_NAME = "SECRETO^PACIENTE"


@pytest.mark.parametrize(
    "edit",
    [
        lambda ds: delattr(ds, "SOPInstanceUID"),
        lambda ds: setattr(ds, "SeriesInstanceUID", SECRET_ID),
        lambda ds: setattr(ds, "StudyInstanceUID", "1.2.3." + SECRET_ID),
    ],
    ids=["missing", "invalid-is-patient-id", "invalid-contains-patient-id"],
)
def test_details_never_contain_patient_data(edit: Callable[[pydicom.Dataset], None]) -> None:
    def apply(ds: pydicom.Dataset) -> None:
        ds.PatientID = SECRET_ID
        ds.PatientName = SECRET_NAME
        edit(ds)

    data = _rewritten(apply)
    for cut in (None, 700):
        rejected = _reason(data if cut is None else data[:cut])
        for text in (rejected.detail, str(rejected)):
            assert SECRET_ID not in text
            assert "SECRETO" not in text and "PACIENTE" not in text


def test_instance_fields_are_normalised() -> None:
    def edit(ds: pydicom.Dataset) -> None:
        ds.StudyDate = "20240229"
        ds.StudyTime = "0930"
        ds.BodyPartExamined = "HEAD"
        ds.AccessionNumber = "ACC123"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inst = _read(_rewritten(edit))

    assert inst.study_date == "2024-02-29"
    assert inst.study_time == "09:30:00"
    assert inst.body_part == "HEAD"
    assert inst.accession_number == "ACC123"
    assert inst.number_of_frames == 1


def test_invalid_study_date_is_none() -> None:
    def edit(ds: pydicom.Dataset) -> None:
        ds.StudyDate = "20230229"
        ds.StudyTime = "256000"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inst = _read(_rewritten(edit))

    assert inst.study_date is None
    assert inst.study_time is None


# --- synthetic generator ------------------------------------------------------------------------

SYNTH = {
    "patient_id": "SYN-0001",
    "accession": "SYNACC1",
    "study_uid": "1.2.826.0.1.3680043.8.498.1",
    "series_uid": "1.2.826.0.1.3680043.8.498.1.1",
    "sop_uid": "1.2.826.0.1.3680043.8.498.1.1.1",
}


class SyntheticReader:
    """Serves ranges of a generated object from its header alone: everything after it is zeros."""

    def __init__(self, size: int) -> None:
        chunks = synthetic_instance(size=size, **SYNTH)
        self.header = next(chunks)
        # The last 4 header bytes are the pixel data length; the rest is never generated.
        (pixel_length,) = struct.unpack("<I", self.header[-4:])
        self.size = len(self.header) + pixel_length
        self.bytes_served = 0

    def __call__(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        head = self.header[start:end]
        self.bytes_served += end - start
        return head + bytes(end - start - len(head))


def test_synthetic_one_mib_parses_fully_with_pydicom() -> None:
    data = b"".join(synthetic_instance(size=MIB, **SYNTH))

    ds = pydicom.dcmread(io.BytesIO(data))
    inst = _read(data)

    assert abs(len(data) - MIB) <= 512 * 512 * 2
    assert ds.SOPInstanceUID == SYNTH["sop_uid"]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert len(ds.PixelData) == int(ds.NumberOfFrames) * ds.Rows * ds.Columns * 2
    assert (inst.study_uid, inst.series_uid, inst.sop_instance_uid) == (
        SYNTH["study_uid"],
        SYNTH["series_uid"],
        SYNTH["sop_uid"],
    )
    assert inst.patient_id == SYNTH["patient_id"]
    assert inst.accession_number == SYNTH["accession"]
    assert inst.modality == "CT"
    assert inst.number_of_frames == int(ds.NumberOfFrames)
    assert inst.header_bytes + 12 + len(ds.PixelData) == len(data)
    assert inst.bytes_read <= 64 * KIB + inst.header_bytes


def test_synthetic_chunks_are_at_most_8_mib() -> None:
    sizes = [len(chunk) for chunk in synthetic_instance(size=20 * MIB, **SYNTH)]

    assert max(sizes[1:]) <= 8 * MIB
    assert sum(sizes) <= 20 * MIB


def test_synthetic_100_mib_reads_only_the_header() -> None:
    reader = SyntheticReader(100 * MIB)

    inst = read_header(reader, size=reader.size)

    assert reader.size > 99 * MIB
    assert inst.sop_instance_uid == SYNTH["sop_uid"]
    assert inst.header_bytes == len(reader.header) - 12
    assert inst.bytes_read == reader.bytes_served <= 64 * KIB
    assert inst.number_of_frames * 512 * 512 * 2 == reader.size - len(reader.header)
