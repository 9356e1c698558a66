"""The DICOM header reader under malformed objects: an Instance or a quarantine reason, never a crash.

Objects are pydicom's own test files (``pydicom.data.get_testdata_file``: CT, MR, RT plan,
SR, deflated, JPEG 2000, big endian) with bytes flipped, overwritten, inserted,
deleted, cut short or with an element length blown up, mostly inside the header where the reader
decides; plus random bytes behind a valid preamble and ``DICM`` marker. The reader is called as the
ingest calls it, with ranged reads and a small first chunk so that the refetch loop runs too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from functions.dicom_ingest.header import REASONS, Instance, Rejected, read_header
from tests.unit.fuzz.strategies import fuzz_settings, mutated_bytes

NAMES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "image_dfl.dcm",
         "JPEG2000.dcm", "ExplVR_BigEnd.dcm")
UID_CHARS = set("0123456789.")


def _load(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} ships with the pydicom wheel"
    return Path(str(path)).read_bytes()


FILES = {name: _load(name) for name in NAMES}


def read(data: bytes, first_chunk: int, max_header: int = 64 * 1024 * 1024) -> Instance | Rejected:
    def ranged(start: int, end: int) -> bytes:
        assert 0 <= start < end
        return data[start:end]

    try:
        return read_header(ranged, size=len(data), first_chunk=first_chunk, max_header=max_header)
    except Rejected as rejected:
        return rejected


def assert_instance_or_reason(result: Instance | Rejected, data: bytes) -> None:
    if isinstance(result, Rejected):
        assert result.reason in REASONS and result.detail
        return
    for uid in (result.study_uid, result.series_uid, result.sop_instance_uid, result.sop_class_uid):
        assert uid and len(uid) <= 64 and set(uid) <= UID_CHARS
    assert 0 < result.header_bytes <= len(data) and result.number_of_frames >= 1
    assert isinstance(result.metadata, dict)


@pytest.mark.parametrize("name", NAMES)
def test_the_seed_files_are_read_so_the_mutations_start_from_valid_objects(name: str) -> None:
    assert isinstance(read(FILES[name], 64 * 1024), Instance)


chunks = st.sampled_from([132, 256, 1024, 4096, 64 * 1024])


@fuzz_settings(600)
@given(data=st.sampled_from(NAMES).flatmap(lambda name: mutated_bytes(FILES[name], focus=2048, skip=132)),
       first_chunk=chunks)
def test_a_mutated_real_file_is_read_or_quarantined_with_a_reason(data: bytes, first_chunk: int) -> None:
    assert_instance_or_reason(read(data, first_chunk), data)


@fuzz_settings(200)
@given(name=st.sampled_from(NAMES), cut=st.integers(min_value=0, max_value=4096), first_chunk=chunks)
def test_a_real_file_cut_anywhere_in_its_header_is_read_or_quarantined(name: str, cut: int, first_chunk: int) -> None:
    data = FILES[name][:cut]
    if not data:
        return
    assert_instance_or_reason(read(data, first_chunk), data)


@fuzz_settings(200)
@given(tail=st.binary(max_size=600), meta=st.booleans(), first_chunk=chunks)
def test_random_bytes_after_the_dicm_marker_are_quarantined_not_a_crash(tail: bytes, meta: bool,
                                                                        first_chunk: int) -> None:
    data = b"\x00" * 128 + b"DICM" + (b"\x02\x00" if meta else b"") + tail
    result = read(data, first_chunk)
    assert_instance_or_reason(result, data)


@fuzz_settings(100)
@given(data=st.binary(min_size=1, max_size=400))
def test_random_bytes_are_quarantined_as_not_dicom(data: bytes) -> None:
    result = read(data, 132)
    assert isinstance(result, Rejected) and result.reason in REASONS


@fuzz_settings(100)
@given(data=st.sampled_from(NAMES).flatmap(lambda name: mutated_bytes(FILES[name], focus=1024, skip=132)))
def test_a_mutated_header_larger_than_the_reader_allows_is_refused_as_too_large_or_read(data: bytes) -> None:
    result = read(data, 132, max_header=512)
    assert_instance_or_reason(result, data)
    if isinstance(result, Instance):
        assert result.header_bytes <= 512 or result.transfer_syntax_uid.endswith(".1.99")
