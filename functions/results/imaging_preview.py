"""Render a small PNG preview of one DICOM instance for the mobile app's result view.

The preview shows the instance's representative frame (the middle frame of a multi-frame
instance) roughly as a viewer would show it at first sight:

- grayscale (MONOCHROME1/2): the modality LUT (rescale) and then the VOI LUT or window the
  instance prescribes, mapped onto 0-255; without a VOI LUT or window the frame's own range is
  stretched; MONOCHROME1 is inverted so that higher values are brighter, as in MONOCHROME2;
- colour: RGB as stored, YCbCr converted to RGB, PALETTE COLOR through its lookup table.

Only that frame is decoded. Anything that prevents a preview (not DICOM, no pixel data, a codec
or colour model that cannot be shown, an object too large to handle, corrupt data) raises
:class:`NoPreview` with a machine-readable reason, so the caller shows a placeholder instead of
failing the request. The module is pure: no AWS, no logging.

A corrupt object must not take the function down either, so sizes are checked before anything
large is allocated: the object's length, what a deflated dataset inflates to, the frame's rows
and columns, and the image a JPEG or JPEG 2000 codestream declares in its own header.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.pixels.common import PhotometricInterpretation
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.pixels.utils import as_pixel_options
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

# pydicom logs what it finds odd in a dataset, sometimes with the value (a name, an identifier).
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

REASONS = ("no-pixel-data", "unsupported-transfer-syntax", "unsupported-photometric", "too-large", "undecodable")

MAX_OBJECT_BYTES = 64 * 1024 * 1024
"""Larger objects are not downloaded for a preview; a deflated dataset may not inflate past it either."""

MAX_FRAME_PIXELS = MAX_OBJECT_BYTES // 2
"""Largest frame decoded (rows x columns): the largest uncompressed 16-bit frame an object under
:data:`MAX_OBJECT_BYTES` can hold, and above the biggest mammograms (about 30 megapixels).

A compressed object can declare a far larger frame; decoding it and applying the LUTs in float64
would not fit in the function's memory (a 30 megapixel frame already needs about 600 MB).
"""

THUMBNAIL_PX = 256

Pixels = npt.NDArray[Any]

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_STANDARD_PHOTOMETRICS = frozenset(pi.value for pi in PhotometricInterpretation)
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# pylibjpeg-rle is a Rust extension that panics on some corrupt RLE segments, raising pyo3's
# PanicException: a BaseException, which no `except Exception` catches. pydicom's own RLE decoder
# raises ordinary exceptions and is fast enough for the one frame a preview decodes.
_DECODING_PLUGINS = {RLELossless: "pydicom"}
# Start of frame markers of ITU T.81 (SOF0-3, 5-7, 9-11, 13-15) and of JPEG-LS (SOF55).
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class NoPreview(Exception):
    """No thumbnail can be made for the object.

    ``reason`` is one of :data:`REASONS` (machine-readable); ``detail`` is English text for
    operators that never contains patient data (no names, no ids, no element values beyond the
    names of standard transfer syntaxes and photometric interpretations). For ``"undecodable"``
    the underlying error is chained as ``__cause__``; its message may quote element values, so log
    ``reason`` and ``detail``, never the traceback.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown preview refusal reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def render_thumbnail(data: bytes, *, size: int = THUMBNAIL_PX) -> bytes:
    """Return a PNG of the representative frame of the DICOM Part 10 object ``data``.

    The PNG's longest side is at most ``size`` pixels (smaller images are not enlarged), the
    aspect ratio is kept and the file carries no metadata chunks. The representative frame is the
    middle frame of a multi-frame instance.

    Raises :class:`NoPreview` for any ``data`` that cannot be previewed, with reason:

    - ``"too-large"``: the object is over :data:`MAX_OBJECT_BYTES`, inflates past it, or its frame
      is over :data:`MAX_FRAME_PIXELS`;
    - ``"no-pixel-data"``: the instance has no image (structured reports, RT plans, waveforms).
      pydicom ends a dataset quietly where the bytes end, so an object cut short before or inside
      encapsulated pixel data reads as one without an image and is reported this way too;
    - ``"unsupported-transfer-syntax"``: no decoder is installed for its transfer syntax;
    - ``"unsupported-photometric"``: its colour model cannot be shown;
    - ``"undecodable"``: it is not DICOM Part 10, or it is truncated or corrupt.

    Raises :class:`ValueError` if ``size`` is below 1: that is a caller bug, not a property of the data.
    """
    if size < 1:
        raise ValueError(f"thumbnail size must be at least 1 pixel, got {size}")
    if len(data) > MAX_OBJECT_BYTES:
        raise NoPreview("too-large", f"the object is larger than {MAX_OBJECT_BYTES} bytes")
    with warnings.catch_warnings():
        # pydicom warns about malformed elements quoting their values, which may be patient data;
        # a preview has nothing to do about them.
        warnings.simplefilter("ignore")
        try:
            image = _representative_image(data)
        except NoPreview:
            raise
        except Exception as exc:
            # pydicom, numpy and the codec plugins fail on malformed input with a wide, undocumented
            # set of exceptions (ValueError, KeyError, TypeError, struct.error, RuntimeError from the
            # codecs...). A broken object must give a placeholder, not a failed request; the cause
            # stays chained for whoever debugs it.
            raise NoPreview("undecodable", "the object could not be parsed or its pixel data decoded") from exc
    return _png(image, size)


def _representative_image(data: bytes) -> Image.Image:
    """Decode the middle frame of the instance in ``data`` and turn it into an 8-bit image."""
    ds = _parse(data)
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise NoPreview("no-pixel-data", "the instance has no pixel data")
    frame, decoded = _decode_middle_frame(ds)
    return _image(_eight_bit(frame, ds, decoded))


def _parse(data: bytes) -> Dataset:
    """Parse a Part 10 object (the preamble and file meta are required)."""
    try:
        _check_inflated_size(data)
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise NoPreview("undecodable", "the object is not a DICOM Part 10 file") from exc


def _check_inflated_size(data: bytes) -> None:
    """Refuse a deflated dataset that would inflate past :data:`MAX_OBJECT_BYTES`.

    pydicom inflates a Deflated Explicit VR Little Endian dataset whole, in one call: a small
    object could expand to gigabytes and exhaust the function's memory before any check runs.
    """
    stream = io.BytesIO(data)
    read_preamble(stream, force=False)
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=_after_file_meta)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[stream.tell() :], MAX_OBJECT_BYTES)
    if inflater.unconsumed_tail:
        raise NoPreview("too-large", f"the deflated dataset inflates to more than {MAX_OBJECT_BYTES} bytes")


def _after_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    """Stop reading at the first element after group 0002 (the file meta information)."""
    return tag >> 16 != 0x0002


def _decode_middle_frame(ds: Dataset) -> tuple[Pixels, dict[str, str | int]]:
    """Decode only the middle frame; return it with the decoder's description of it.

    The decoder converts YBR_FULL and YBR_FULL_422 to RGB when asked (``as_rgb``), and the JPEG
    2000 plugin always returns YBR_ICT and YBR_RCT as RGB, so no other conversion is needed.
    """
    decoder = _decoder(ds)
    if int(ds.Rows) * int(ds.Columns) > MAX_FRAME_PIXELS:
        raise NoPreview("too-large", f"the frame has more than {MAX_FRAME_PIXELS} pixels")
    options = as_pixel_options(ds, as_rgb=True)
    middle = int(options["number_of_frames"]) // 2
    _check_codestream_header(ds, decoder.UID, middle, options)
    plugin = _DECODING_PLUGINS.get(decoder.UID, "")
    return decoder.as_array(ds, index=middle, decoding_plugin=plugin, **options)


def _decoder(ds: Dataset) -> Decoder:
    """The pixel data decoder for the instance's transfer syntax, if one is installed."""
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    if transfer_syntax is None:
        raise NoPreview("undecodable", "the file meta information has no transfer syntax")
    uid = UID(transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise NoPreview("unsupported-transfer-syntax", f"no decoder exists for {_transfer_syntax_name(uid)}") from exc
    if not decoder.is_available:
        raise NoPreview("unsupported-transfer-syntax", f"no decoder is installed for {_transfer_syntax_name(uid)}")
    return decoder


def _check_codestream_header(ds: Dataset, transfer_syntax: UID, index: int, options: dict[str, Any]) -> None:
    """Refuse a JPEG, JPEG-LS or JPEG 2000 frame whose codestream describes another image than the header.

    The codecs allocate for what the codestream declares before pydicom can compare it with Rows,
    Columns and Samples per Pixel: one corrupt byte in a SOF or SIZ marker segment asks for
    gigabytes of memory or minutes of decoding, and a JPEG height of 0 (left to a later DNL
    marker) makes libjpeg allocate until it runs out (all seen fuzzing pydicom's sample files).
    A header this cannot read is left to the codec to reject.
    """
    if transfer_syntax in JPEG2000TransferSyntaxes:
        read_size = _j2k_size
    elif transfer_syntax in JPEGTransferSyntaxes or transfer_syntax in JPEGLSTransferSyntaxes:
        read_size = _jpeg_size
    else:
        return
    frame = get_frame(
        ds.PixelData,
        index,
        number_of_frames=int(options["number_of_frames"]),
        extended_offsets=options.get("extended_offsets"),
    )
    declared = read_size(frame)
    expected = (int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))
    if declared is not None and declared != expected:
        raise NoPreview("undecodable", "the compressed frame describes another image than the DICOM header")


def _jpeg_size(codestream: bytes) -> tuple[int, int, int] | None:
    """Rows, columns and components from a JPEG or JPEG-LS frame header (ITU T.81 B.2.2)."""
    if not codestream.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 10 <= len(codestream) and codestream[offset] == 0xFF:
        marker = codestream[offset + 1]
        if marker == 0xFF:  # a fill byte before the marker
            offset += 1
        elif marker in _JPEG_SOF_MARKERS:
            rows, columns, components = struct.unpack_from(">HHB", codestream, offset + 5)
            return rows, columns, components
        else:
            offset += 2 + struct.unpack_from(">H", codestream, offset + 2)[0]
    return None


def _j2k_size(codestream: bytes) -> tuple[int, int, int] | None:
    """Rows, columns and components from a JPEG 2000 image header (ISO/IEC 15444-1 A.5.1)."""
    start = _jp2_codestream_start(codestream) if codestream.startswith(_JP2_SIGNATURE) else 0
    if not codestream.startswith(_J2K_SOC_SIZ, start) or start + 42 > len(codestream):
        return None
    width, height, left, top = struct.unpack_from(">4I", codestream, start + 8)
    (components,) = struct.unpack_from(">H", codestream, start + 40)
    return height - top, width - left, components


def _jp2_codestream_start(jp2: bytes) -> int:
    """Where the codestream starts inside a JP2 file wrapper (ISO/IEC 15444-1 I.4).

    PS3.5 A.4.4 excludes the wrapper, yet some encoders write it and pydicom accepts it. pydicom
    walks its boxes by their lengths without checking them, and loops forever on a box length of 0
    (seen fuzzing): such a wrapper is refused here, before pydicom sees it.
    """
    offset = len(_JP2_SIGNATURE)
    while offset < len(jp2):  # as pydicom walks it, down to a box header cut short at the end
        length = int.from_bytes(jp2[offset : offset + 4], "big")
        box_type = jp2[offset + 4 : offset + 8]
        if box_type == b"jp2c":
            return offset + 8
        if length < 8:
            raise NoPreview("undecodable", "the JPEG 2000 file wrapper has a corrupt box length")
        offset += length
    return offset


def _eight_bit(frame: Pixels, ds: Dataset, decoded: dict[str, str | int]) -> Pixels:
    """Map a decoded frame onto 8-bit gray or RGB as its colour model requires."""
    # The decoder's account of the frame counts, not the header's: it may have converted YCbCr to
    # RGB, or found a JPEG codestream that contradicts the header.
    photometric = str(decoded["photometric_interpretation"])
    if photometric in _GRAYSCALE:
        return _grayscale(frame, ds, inverted=photometric == "MONOCHROME1")
    if photometric == "PALETTE COLOR":
        return _palette(frame, ds)
    if photometric == "RGB":
        return _scale_colour(frame, bits=int(decoded["bits_stored"]))
    raise NoPreview("unsupported-photometric", f"{_photometric_name(photometric)} pixels cannot be shown")


def _grayscale(frame: Pixels, ds: Dataset, *, inverted: bool) -> Pixels:
    """Map a grayscale frame to 8 bits: modality LUT, then VOI LUT or window, else the frame's range."""
    values = apply_modality_lut(frame, ds)
    values, output_range = _apply_voi(values, ds)
    low, high = output_range or _finite_range(values)
    pixels = _to_uint8(values, low, high)
    return 255 - pixels if inverted else pixels


def _apply_voi(values: Pixels, ds: Dataset) -> tuple[Pixels, tuple[float, float] | None]:
    """Apply the VOI LUT or window the instance prescribes and return the range it maps onto.

    The range is what the display maps onto black..white, so values inside a window keep their
    contrast instead of being stretched. ``None`` when the instance prescribes neither, or when
    what it prescribes is malformed (a zero window width, an unknown VOI function): the frame is
    then shown with its own range rather than refused.
    """
    try:
        if ds.get("VOILUTSequence"):
            lut = ds.VOILUTSequence[0]
            entries, first_mapped = int(lut.LUTDescriptor[0]) or 2**16, int(lut.LUTDescriptor[1])
            every_output = apply_voi(np.arange(first_mapped, first_mapped + entries), ds)
            return apply_voi(values, ds), (float(every_output.min()), float(every_output.max()))
        if "WindowCenter" in ds and "WindowWidth" in ds:
            # Everything below a window maps onto its lower end and everything above onto its upper.
            ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
            return apply_windowing(values, ds), (float(ends[0]), float(ends[1]))
    except (ValueError, NotImplementedError):
        pass
    return values, None


def _finite_range(values: Pixels) -> tuple[float, float]:
    """Lowest and highest finite value (float pixel data may hold NaN or infinities)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def _palette(frame: Pixels, ds: Dataset) -> Pixels:
    """Colour a PALETTE COLOR frame through its lookup tables, dropping any alpha channel."""
    rgb = apply_color_lut(frame, ds)[..., :3]
    return _scale_colour(rgb, bits=8 * rgb.dtype.itemsize)


def _scale_colour(rgb: Pixels, *, bits: int) -> Pixels:
    """Map colour samples of ``bits`` significant bits onto 0-255."""
    return _to_uint8(rgb, 0.0, float(2**bits - 1))


def _to_uint8(values: Pixels, low: float, high: float) -> Pixels:
    """Map ``low``..``high`` linearly onto 0..255, clipping outside; a flat range gives black."""
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    # In place on one float copy: a frame at MAX_FRAME_PIXELS is hundreds of megabytes as float64.
    scaled = values.astype(np.float64)
    scaled -= low
    scaled *= 255.0 / (high - low)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _image(pixels: Pixels) -> Image.Image:
    """Wrap an 8-bit frame as a Pillow image: (rows, columns) or (rows, columns, 3) only."""
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3):
        return Image.fromarray(np.ascontiguousarray(pixels))
    raise NoPreview("unsupported-photometric", "the samples per pixel do not match the photometric interpretation")


def _png(image: Image.Image, size: int) -> bytes:
    """Shrink ``image`` to fit ``size`` x ``size`` (aspect kept) and encode it as PNG without metadata."""
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _transfer_syntax_name(uid: UID) -> str:
    """The standard name of a transfer syntax; an unknown UID is not echoed."""
    return uid.name if uid.name != str(uid) else "an unknown transfer syntax"


def _photometric_name(photometric: str) -> str:
    """A standard photometric interpretation by name; anything else is not echoed."""
    return photometric if photometric in _STANDARD_PHOTOMETRICS else "a non-standard photometric interpretation"
