"""Read and validate the header of one DICOM Part 10 object with ranged reads.

DICOM objects arrive in S3 and can be gigabytes long, so the ingest never downloads a whole
object: it hands :func:`read_header` a callable that returns a byte range, and this module reads
only as much as the header needs. Nothing here stores anything or talks to AWS.

How header completeness is decided
----------------------------------
pydicom parses through a file object sequentially. :func:`read_header` gives it a
:class:`_Window`: an in-memory buffer holding the first bytes of the object that also knows the
object's true size. When pydicom asks for bytes beyond the buffer but inside the object, the
window records how far it needs to read and raises :class:`_NeedMore`; the loop then fetches the
next range (doubling the total read each time, up to ``max_header``) and parses again. The
request is recorded on the window, not only raised, because pydicom converts some exceptions
(for instance while reading a sequence item tag) into ``OSError``.

Because a read past the buffer always stops the parse, pydicom only ever sees short reads at the
real end of the object. A short read that returned some bytes, or that was not a tag read, means
the object ends inside an element: :class:`Rejected` ``"truncated"``. A tag read returning no
bytes is the normal end of a dataset without pixel data (SR, RT structure sets). With
``stop_before_pixels=True`` pydicom rewinds to the start of (7FE0,0010) (or the float/double
pixel data tags), so the window position after a successful parse is the header length.
A cut exactly at an element boundary cannot be told apart from a complete object (Part 10 has no
overall length), so such an object is accepted with whatever elements it has.

Deflated transfer syntax compresses the whole dataset, so pydicom asks for the rest of the
object in one read; that is allowed only for objects up to :data:`DEFLATED_LIMIT` bytes.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO, cast

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

# pydicom logs what it finds odd in a header, sometimes with the value (a name, an identifier).
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

Reader = Callable[[int, int], bytes]
"""``read(start, end_exclusive) -> bytes``; may return fewer bytes only at the end of the object."""

REASONS = ("not-dicom", "truncated", "missing-uid", "invalid-uid", "unreadable-header", "header-too-large")

BULK_DATA_THRESHOLD = 1024
"""Binary element values longer than this stay out of the stored DICOM JSON (served as BulkDataURI)."""

DEFLATED_LIMIT = 8 * 1024 * 1024
"""Largest deflated object read whole: its header cannot be read without inflating everything."""

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

_PREAMBLE = 128
_MAGIC = b"DICM"
_MIN_PART10 = _PREAMBLE + len(_MAGIC)
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# pydicom reads an element tag (8 bytes) at the start of each element and peeks 1 byte after the
# file meta; an empty read of exactly these sizes is a clean end of dataset, anything else is not.
_CLEAN_EOF_READS = (1, 8)
_SYNTHETIC_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Instance:
    """What the ingest needs from one DICOM header. Strings are stripped of DICOM padding."""

    patient_id: str
    accession_number: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    study_date: str | None
    study_time: str | None
    body_part: str | None
    number_of_frames: int
    series_number: int | None
    instance_number: int | None
    series_description: str | None
    transfer_syntax_uid: str
    header_bytes: int
    bytes_read: int
    # The header as DICOM JSON (PS3.18 F.2) for WADO-RS metadata: binary values over
    # :data:`BULK_DATA_THRESHOLD` bytes are left out as ``{"vr": ..., "BulkDataURI": ""}``.
    metadata: dict[str, Any] = field(default_factory=dict)


class Rejected(Exception):
    """The object must be quarantined.

    ``reason`` is one of :data:`REASONS` (machine-readable); ``detail`` is human text that never
    contains patient data (no names, no PatientID, no element values).
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _NeedMore(Exception):
    """pydicom asked for bytes that the object has but the buffer does not (yet)."""


class _Window(io.BytesIO):
    """The bytes read so far of an object of ``size`` bytes, as a file object for pydicom.

    Reading past the buffer but within the object records ``need`` (the end offset required)
    and raises :class:`_NeedMore`. Short reads happen only at the real end of the object and
    are classified as a clean end of dataset or a truncation.
    """

    def __init__(self, buffer: bytes, size: int) -> None:
        super().__init__(buffer)
        self._have = len(buffer)
        self._size = size
        self.need: int | None = None
        self.wants_rest = False
        self.truncated = False
        self.hit_eof = False

    def read(self, size: int | None = -1, /) -> bytes:
        pos = self.tell()
        if size is None or size < 0:
            if self._have < self._size:
                # Only the deflated transfer syntax reads "the rest of the file" in one call.
                self.wants_rest = True
                self._ask(self._size)
            return super().read()
        end = pos + size
        if end > self._have and self._have < self._size:
            self._ask(min(end, self._size))
        data = super().read(size)
        if len(data) < size:
            self.hit_eof = True
            if data or size not in _CLEAN_EOF_READS:
                self.truncated = True
        return data

    def _ask(self, end: int) -> None:
        self.need = end if self.need is None else max(self.need, end)
        raise _NeedMore


class _Fetcher:
    """Wraps the reader: counts every byte requested and notices an object shorter than declared."""

    def __init__(self, read: Reader, size: int) -> None:
        self._read = read
        self.size = size
        self.bytes_read = 0

    def fetch(self, start: int, end: int) -> bytes:
        self.bytes_read += end - start
        data = self._read(start, end)
        if len(data) > end - start:
            data = data[: end - start]
        if len(data) < end - start:
            # The object is shorter than its declared size: treat its real end as the end.
            self.size = start + len(data)
        return data


def read_header(
    read: Reader,
    *,
    size: int,
    first_chunk: int = 64 * 1024,
    max_header: int = 64 * 1024 * 1024,
) -> Instance:
    """Read, parse and validate the header of a DICOM Part 10 object of ``size`` bytes.

    Reads ``min(size, first_chunk)`` bytes first; if the header is longer, reads further ranges,
    doubling the total read each time, never past ``max_header`` bytes. Returns an
    :class:`Instance` with ``header_bytes`` (offset of the pixel data element, or the object size
    when there is none or the dataset is deflated) and ``bytes_read`` (every byte requested).

    Raises :class:`Rejected` with reason:

    - ``not-dicom``: no ``DICM`` marker at offset 128. Objects of 128 bytes or fewer are
      ``not-dicom`` (nothing in them identifies DICOM); 129-131 bytes whose tail is a prefix of
      ``DICM`` are ``truncated``.
    - ``truncated``: the object ends inside the header (inside an element or a sequence).
    - ``header-too-large``: the header needs more than ``max_header`` bytes.
    - ``unreadable-header``: no file meta group or transfer syntax, a parse failure (including
      garbage after ``DICM``), or a deflated object larger than :data:`DEFLATED_LIMIT`.
    - ``missing-uid`` / ``invalid-uid``: Study, Series, SOP Instance or SOP Class UID absent,
      empty, or not a valid UID (digits and dots, at most 64 characters, no leading zeros).

    A missing PatientID is not rejected here: it is returned as ``""`` for the caller to decide.
    Raises ``ValueError`` if ``first_chunk`` or ``max_header`` is smaller than 132 bytes.
    """
    if first_chunk < _MIN_PART10 or max_header < _MIN_PART10:
        raise ValueError(f"first_chunk and max_header must be at least {_MIN_PART10} bytes")
    # pydicom's warnings about odd values can quote them (names, identifiers): never let them reach a log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read(read, size=size, first_chunk=first_chunk, max_header=max_header)


def _read(read: Reader, *, size: int, first_chunk: int, max_header: int) -> Instance:
    fetcher = _Fetcher(read, size)
    if size <= 0:
        raise Rejected("not-dicom", "the object is empty")
    buffer = fetcher.fetch(0, min(size, first_chunk, max_header))
    _check_part10(buffer)

    while True:
        window = _Window(buffer, fetcher.size)
        dataset: FileDataset | None = None
        failure: Exception | None = None
        try:
            dataset = pydicom.dcmread(cast(BinaryIO, window), stop_before_pixels=True, force=False)
        except Exception as exc:  # noqa: BLE001 - untrusted input: any parser failure is a quarantine reason
            failure = exc
        if window.need is not None:
            buffer += _extend(fetcher, window, len(buffer), max_header)
            continue
        if window.truncated or (failure is not None and window.hit_eof):
            raise Rejected("truncated", f"the object ends inside its header ({fetcher.size} bytes)")
        if failure is not None or dataset is None:
            name = type(failure).__name__
            raise Rejected("unreadable-header", f"the header could not be parsed ({name})") from failure
        return _instance(dataset, header_end=window.tell(), fetcher=fetcher)


def _check_part10(buffer: bytes) -> None:
    if len(buffer) >= _MIN_PART10:
        if buffer[_PREAMBLE:_MIN_PART10] != _MAGIC:
            raise Rejected("not-dicom", "no DICM marker at offset 128")
        # A Part 10 file meta group (0002,xxxx) must follow, explicit VR little endian; checking it
        # here makes garbage after DICM a parse failure instead of a guess at some encoding.
        if len(buffer) >= _MIN_PART10 + 2 and buffer[_MIN_PART10 : _MIN_PART10 + 2] != b"\x02\x00":
            raise Rejected("unreadable-header", "no file meta information after the DICM marker")
        return
    tail = buffer[_PREAMBLE:]
    if tail and _MAGIC.startswith(tail):
        raise Rejected("truncated", f"the object ends inside the DICM marker ({len(buffer)} bytes)")
    raise Rejected("not-dicom", f"the object is too small to be DICOM ({len(buffer)} bytes)")


def _extend(fetcher: _Fetcher, window: _Window, have: int, max_header: int) -> bytes:
    """Fetch the next range after a :class:`_NeedMore`; raise :class:`Rejected` if not allowed."""
    need = cast(int, window.need)
    if window.wants_rest and fetcher.size > min(DEFLATED_LIMIT, max_header):
        raise Rejected(
            "unreadable-header",
            f"deflated transfer syntax: objects over {DEFLATED_LIMIT} bytes are not inflated",
        )
    if need > max_header:
        raise Rejected("header-too-large", f"the header needs more than {max_header} bytes")
    # Doubling keeps the number of round trips logarithmic and the total read under about twice
    # the header size.
    target = min(fetcher.size, max_header, max(need, 2 * have))
    return fetcher.fetch(have, target)


def _instance(ds: FileDataset, *, header_end: int, fetcher: _Fetcher) -> Instance:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = _text(meta, "TransferSyntaxUID") if meta is not None else None
    if not transfer_syntax:
        raise Rejected("unreadable-header", "the file meta has no TransferSyntaxUID (0002,0010)")
    uids = {keyword: _uid(ds, keyword) for keyword in _REQUIRED_UIDS}
    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    return Instance(
        patient_id=_text(ds, "PatientID") or "",
        accession_number=_text(ds, "AccessionNumber") or "",
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        modality=_text(ds, "Modality") or "",
        study_date=_date(_text(ds, "StudyDate")),
        study_time=_time(_text(ds, "StudyTime")),
        body_part=_text(ds, "BodyPartExamined"),
        number_of_frames=_frames(ds),
        series_number=_integer(ds, "SeriesNumber"),
        instance_number=_integer(ds, "InstanceNumber"),
        series_description=_text(ds, "SeriesDescription"),
        transfer_syntax_uid=transfer_syntax,
        # The window position is inside the inflated copy for deflated objects; the whole object
        # was read, so the object size is the honest header size.
        header_bytes=fetcher.size if deflated else header_end,
        bytes_read=fetcher.bytes_read,
        metadata=_json(ds),
    )


def _json(ds: Dataset) -> dict[str, Any]:
    """The dataset as DICOM JSON; elements pydicom cannot encode are left out rather than refusing the object."""
    try:
        return ds.to_json_dict(bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=lambda _: "",
                               suppress_invalid_tags=True)
    except Exception as exc:
        raise Rejected("unreadable-header", f"the header could not be encoded as DICOM JSON ({type(exc).__name__})") \
            from exc


def _value(ds: Dataset, keyword: str) -> object:
    try:
        return ds.get(keyword)
    except Exception as exc:  # pydicom converts raw values lazily: any failure makes the header unreadable
        raise Rejected("unreadable-header", f"{keyword} could not be decoded ({type(exc).__name__})") from exc


def _text(ds: Dataset, keyword: str) -> str | None:
    """The element's first value as stripped text; None when absent or empty."""
    value = _value(ds, keyword)
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    if value is None:
        return None
    text = str(value).strip(" \x00")
    return text or None


def _uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword)
    if value is None:
        raise Rejected("missing-uid", f"{keyword} is missing")
    if len(value) > 64 or not _UID_RE.fullmatch(value):
        # The value is not echoed: a malformed UID field may hold anything, including identifiers.
        raise Rejected("invalid-uid", f"{keyword} is not a valid UID ({len(value)} characters)")
    return value


def _integer(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    # IS values are integers, but some writers emit "1.0"; anything fractional is invalid.
    return int(number) if number.is_integer() else None


def _frames(ds: Dataset) -> int:
    frames = _integer(ds, "NumberOfFrames")
    return frames if frames is not None and frames > 0 else 1


def _date(text: str | None) -> str | None:
    """DA ``YYYYMMDD`` (or the retired ``YYYY.MM.DD``) as ``YYYY-MM-DD``; None if invalid."""
    if text is None:
        return None
    digits = text.replace(".", "") if len(text) == 10 else text
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()
    except ValueError:
        return None


def _time(text: str | None) -> str | None:
    """TM ``HH[MM[SS[.F]]]`` (or the retired ``HH:MM:SS``) as ``HH:MM:SS``; None if invalid."""
    if text is None:
        return None
    whole = text.split(".", 1)[0].replace(":", "")
    if len(whole) not in (2, 4, 6) or not whole.isdigit():
        return None
    hh, mm, ss = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    # 60 seconds is allowed by DICOM for leap seconds.
    if hh > 23 or mm > 59 or ss > 60:
        return None
    return f"{hh:02d}:{mm:02d}:{ss:02d}"


def synthetic_instance(
    *,
    size: int,
    patient_id: str,
    accession: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str = "CT",
    rows: int = 512,
    cols: int = 512,
) -> Iterator[bytes]:
    """Generate a valid Part 10 CT image of roughly ``size`` bytes as a stream of chunks.

    The first chunk is the complete header (preamble, file meta, dataset, and the tag, VR and
    length of the OW pixel data element); the rest are zero pixel bytes in chunks of at most
    8 MiB, so a 1 GB object never sits in memory. Pixels are 16-bit monochrome, ``rows`` ×
    ``cols`` per frame; NumberOfFrames is the number of whole frames that fit in ``size``
    (at least one), so the total is ``size`` rounded down to a whole frame, or one frame when
    ``size`` is smaller. Only synthetic values should be passed. Raises ``ValueError`` if the
    pixel data would not fit a 32-bit length.
    """
    frame = rows * cols * 2
    ds = _synthetic_dataset(patient_id, accession, study_uid, series_uid, sop_uid, modality, rows, cols)
    ds.NumberOfFrames = 1
    frames = max(1, (size - len(_encode(ds)) - 12) // frame)
    ds.NumberOfFrames = frames
    pixel_length = frames * frame
    if pixel_length >= 0xFFFFFFFF:
        raise ValueError("the pixel data would not fit a 32-bit element length")
    # (7FE0,0010) OW with a 4-byte length: tag, VR, two reserved bytes, length.
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
    yield _encode(ds) + pixel_header
    zeros = bytes(min(_SYNTHETIC_CHUNK, pixel_length))
    remaining = pixel_length
    while remaining > 0:
        step = min(remaining, len(zeros))
        yield zeros if step == len(zeros) else zeros[:step]
        remaining -= step


def _synthetic_dataset(
    patient_id: str,
    accession: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str,
    rows: int,
    cols: int,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["expediente-synthetic"])
    ds = FileDataset("synthetic", Dataset(), file_meta=meta, preamble=b"\x00" * _PREAMBLE)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = "SYNTHETIC^PATIENT"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.StudyDate = "20240115"
    ds.StudyTime = "093000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = "SYNTHETIC"
    ds.BodyPartExamined = "CHEST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _encode(ds: FileDataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
