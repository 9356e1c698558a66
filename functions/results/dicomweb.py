"""DICOMweb answers in DICOM JSON: QIDO-RS searches (PS3.18 10.6) and WADO-RS metadata (PS3.18 10.4).

Pure: it turns an ``ImagingStudy`` resource, the study-level DICOM JSON and the stored
:class:`~expediente.imaging.InstanceRecord` objects into the DICOM JSON model (PS3.18 F.2) and
parses and evaluates QIDO-RS queries. Nothing here talks to AWS or knows the HTTP framework.

Every result is a dict of 8-hex-digit tags in tag order, each ``{"vr": ..., "Value": [...]}``
following pydicom's JSON conventions (IS and US values are ints, DS values numbers, PN values
``{"Alphabetic": ...}``, an empty attribute has no ``Value``); ``Dataset.from_json`` reads them.

Result attributes (PS3.18 Tables 10.6.3-3, -4 and -5): attributes the standard requires are always
present, empty when unknown (as C-FIND return keys are); the conditional ones (Specific Character
Set, Instance Availability, Timezone Offset From UTC, descriptions, image attributes) only when
known. Which levels a response combines is the caller's choice, per PS3.18 10.6.3.2: a search for
all series adds the study attributes to each series, a search for all instances adds study and series
attributes, a search for a study's instances adds the series attributes; :func:`combine` merges them.

Matching (PS3.4 C.2.2.2 as profiled by PS3.18 10.6.1.3): see :func:`matches`.
"""

from __future__ import annotations

import calendar
import copy
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from expediente.errors import Invalid
from expediente.identifiers import ACCESSION_SYSTEM

if TYPE_CHECKING:
    from expediente.imaging import InstanceRecord

STUDY, SERIES, INSTANCE = "study", "series", "instance"
LEVELS = (STUDY, SERIES, INSTANCE)

LIMIT_MAX = 1000
# Instances live in S3 Standard with no lifecycle transition: each one is retrievable at once.
INSTANCE_AVAILABILITY = "ONLINE"

DICOM_UID_SYSTEM = "urn:dicom:uid"  # as expediente.imaging, which this pure module does not import (boto3)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

# The matching keys of each level (PS3.18 Table 10.6.1-5, plus the study and series attributes this
# server also returns). A search matches on the keys of its level and of the levels above it.
MATCHING_KEYS: dict[str, tuple[str, ...]] = {
    STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
            "StudyDescription"),
    SERIES: ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined"),
    INSTANCE: ("SOPClassUID", "SOPInstanceUID", "InstanceNumber"),
}

_CONTROLS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
# Media-type query parameters (PS3.18 8.3.3.1): content negotiation is the handler's, not a filter.
_NEGOTIATION = frozenset({"accept", "charset"})
_PIXEL_DATA = frozenset({"7FE00008", "7FE00009", "7FE00010"})  # Float, Double Float and Pixel Data

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DA_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_TM_RE = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_DT_RE = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?)?)?)?"
    r"(?:([+-])([0-9]{2})([0-9]{2}))?"
)
_FHIR_DATETIME_RE = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)

# Value representations by how QIDO-RS matches them.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FD", "FL"})
_MOMENT_VRS = frozenset({"DA", "DT", "TM"})

_Element = dict[str, Any]
Attributes = dict[str, Any]


class QidoError(Invalid, ValueError):
    """A QIDO-RS query the server cannot run: HTTP 400. ``parameter`` is the query parameter at fault.

    The message names the parameter but never repeats its value, which may be a patient's name.
    """

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS search (PS3.18 10.6.1): build it with :func:`parse_qido`.

    ``filters`` holds ``(tag, value)`` matching keys in the order given, values stripped of
    surrounding spaces; ``includefield`` the tags listed (None when none were), and ``include_all``
    whether ``includefield=all`` was asked.
    """

    level: str
    filters: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    offset: int = 0
    includefield: frozenset[str] | None = None
    include_all: bool = False
    fuzzymatching: bool = False


def parse_qido(level: str, params: Mapping[str, str]) -> QidoQuery:
    """Parse the query parameters of a QIDO-RS search at ``level`` (``study``, ``series``, ``instance``).

    Attributes are named by keyword (``PatientID``) or tag (``00100020``, any case); ``includefield``
    is a comma-separated list of them or ``all``; ``limit`` is 1 to :data:`LIMIT_MAX`, ``offset`` 0 or
    more, ``fuzzymatching`` ``true`` or ``false``. ``accept`` and ``charset`` are left to the handler.
    Every matching value is checked for its VR here, so :func:`matches` never fails on a parsed query.

    Raises :class:`QidoError` naming the parameter when it is not a DICOM attribute or a control, when
    the attribute is not a matching key of this level or the levels above (``… is not supported for
    matching``), or when a value is malformed (a bad UID, date, time, range or number). Raises
    ``ValueError`` for an unknown ``level``, which is a programming error.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown QIDO-RS level {level!r}; expected one of {', '.join(LEVELS)}")
    supported = _supported(level)
    filters: list[tuple[str, str]] = []
    for name, raw in params.items():
        if name in _CONTROLS or name in _NEGOTIATION:
            continue
        tag = _attribute(name, parameter=name)
        if tag not in supported:
            raise QidoError(f"{_label(name, tag)} is not supported for matching in a {level} search",
                            parameter=name)
        value = raw.strip()
        if not _universal(value):
            _compile(_dictionary_vr(tag), value, name)
        filters.append((tag, value))
    include_all, includefield = _includefield(params.get("includefield"))
    return QidoQuery(
        level=level,
        filters=tuple(filters),
        limit=_integer(params, "limit", low=1, high=LIMIT_MAX),
        offset=_integer(params, "offset", low=0, high=None) or 0,
        includefield=includefield,
        include_all=include_all,
        fuzzymatching=_boolean(params, "fuzzymatching"),
    )


def matches(query: QidoQuery, attrs: Mapping[str, Any]) -> bool:
    """Whether DICOM JSON ``attrs`` satisfy every matching key of ``query`` (PS3.4 C.2.2.2).

    - An empty value or ``*`` is universal matching: anything matches, even an absent attribute.
      Otherwise an attribute absent from ``attrs``, or present without a value, does not match.
    - UI: UID list matching; the value is one UID or several separated by ``,`` or ``\\``.
    - DA, TM, DT: single value or range (``20040101-20041231``, ``-20041231``, ``20040101-``). A value
      matches at its own precision (``TM 07`` matches any time from 07:00 to 07:59:59.999999); DT values
      are compared in UTC when both carry an offset, as local clock readings otherwise.
    - PN: the Alphabetic component, case-insensitive, trailing empty components ignored, with ``*`` and
      ``?`` wildcards. With ``fuzzymatching`` accents are ignored too and each word of the value need
      only begin a word of the name (``perez jo`` matches ``Pérez García^José``).
    - Other strings: exact and case-sensitive, with ``*`` and ``?`` wildcards; for CS a list of values
      separated by ``,`` or ``\\`` matches any of them.
    - Numbers: equal as numbers (``1`` matches ``1.0``).
    - A multi-valued attribute (ModalitiesInStudy) matches when any of its values does.

    Raises :class:`QidoError` for a malformed value, which only a query built by hand can hold.
    """
    for tag, value in query.filters:
        if _universal(value):
            continue
        element = attrs.get(tag)
        if not isinstance(element, Mapping) or not element.get("Value"):
            return False
        vr = _dictionary_vr(tag) or str(element.get("vr", ""))
        test = _compile(vr, value, _keyword(tag) or tag, query.fuzzymatching)
        if not any(test(item) for item in element["Value"]):
            return False
    return True


def study_result(resource: Mapping[str, Any], study_dicom: Mapping[str, Any], *, base_url: str) -> Attributes:
    """The QIDO-RS study result (PS3.18 Table 10.6.3-3) of an ``ImagingStudy`` and its study-level DICOM JSON.

    Patient and study attributes come from ``study_dicom`` when it holds a value for them, otherwise
    from the resource (StudyDate and StudyTime from ``started``, AccessionNumber from the ``ACSN``
    identifier, StudyDescription from ``description``). The Study Instance UID, ModalitiesInStudy,
    the counts and the Retrieve URL always come from the resource, which reflects what is stored.
    Raises ``ValueError`` if the resource names no Study Instance UID.
    """
    uid = study_uid(resource)
    date, clock = _dicom_date_time(resource.get("started"))
    series = _list(resource.get("series"))
    modalities = _codes([resource.get("modality")]) or _codes(s.get("modality") for s in series)
    out: Attributes = {}
    _copy(out, study_dicom, "SpecificCharacterSet", "TimezoneOffsetFromUTC")
    _pick(out, study_dicom, "StudyDate", date)
    _pick(out, study_dicom, "StudyTime", clock)
    _pick(out, study_dicom, "AccessionNumber", accession_number(resource))
    _set(out, "InstanceAvailability", INSTANCE_AVAILABILITY)
    _set(out, "ModalitiesInStudy", *modalities)
    for keyword in ("ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyID"):
        _pick(out, study_dicom, keyword, None)
    _set(out, "RetrieveURL", _url(base_url, uid))
    _set(out, "StudyInstanceUID", uid)
    description = resource.get("description")
    if _value_of(study_dicom, "StudyDescription") or description:
        _pick(out, study_dicom, "StudyDescription", description)
    number_of_series = resource.get("numberOfSeries")
    number_of_instances = resource.get("numberOfInstances")
    _set(out, "NumberOfStudyRelatedSeries", len(series) if number_of_series is None else int(number_of_series))
    _set(out, "NumberOfStudyRelatedInstances",
         sum(int(s.get("numberOfInstances") or 0) for s in series) if number_of_instances is None
         else int(number_of_instances))
    return _sorted(out)


def series_result(resource: Mapping[str, Any], series: Mapping[str, Any], *, base_url: str) -> Attributes:
    """The QIDO-RS series result (PS3.18 Table 10.6.3-4) of one ``ImagingStudy.series`` entry.

    Adds the Study Instance UID (so a result names its study) and BodyPartExamined (from
    ``bodySite.display``) when known. Raises ``ValueError`` if the resource names no Study Instance
    UID, ``KeyError`` if the series has no ``uid``.
    """
    study = study_uid(resource)
    uid = str(series["uid"])
    modality = _codes([series.get("modality")])
    number = series.get("number")
    instances = series.get("numberOfInstances")
    body_site = series.get("bodySite")
    out: Attributes = {}
    _set(out, "Modality", *modality[:1])
    if series.get("description"):
        _set(out, "SeriesDescription", str(series["description"]))
    _set(out, "RetrieveURL", _url(base_url, study, uid))
    if isinstance(body_site, Mapping) and body_site.get("display"):
        _set(out, "BodyPartExamined", str(body_site["display"]))
    _set(out, "StudyInstanceUID", study)
    _set(out, "SeriesInstanceUID", uid)
    _set(out, "SeriesNumber", None if number is None else int(number))
    _set(out, "NumberOfSeriesRelatedInstances", None if instances is None else int(instances))
    return _sorted(out)


def instance_result(record: InstanceRecord, *, base_url: str) -> Attributes:
    """The QIDO-RS instance result (PS3.18 Table 10.6.3-5) of one stored instance.

    NumberOfFrames is given when the header has it or the instance has more than one frame; Rows,
    Columns, BitsAllocated, SpecificCharacterSet and TimezoneOffsetFromUTC when the header has them.
    AvailableTransferSyntaxUID is the stored transfer syntax: instances are served as stored.
    """
    header = record.metadata
    out: Attributes = {}
    _copy(out, header, "SpecificCharacterSet", "TimezoneOffsetFromUTC", "Rows", "Columns", "BitsAllocated")
    _set(out, "SOPClassUID", record.sop_class_uid)
    _set(out, "SOPInstanceUID", record.sop_uid)
    _set(out, "InstanceAvailability", INSTANCE_AVAILABILITY)
    _set(out, "RetrieveURL", instance_url(base_url, record.study_uid, record.series_uid, record.sop_uid))
    _set(out, "AvailableTransferSyntaxUID", record.transfer_syntax_uid)
    _set(out, "StudyInstanceUID", record.study_uid)
    _set(out, "SeriesInstanceUID", record.series_uid)
    _set(out, "InstanceNumber", record.instance_number)
    if _value_of(header, "NumberOfFrames"):
        _copy(out, header, "NumberOfFrames")
    elif record.number_of_frames > 1:
        _set(out, "NumberOfFrames", record.number_of_frames)
    return _sorted(out)


def apply_includefield(query: QidoQuery, result: Mapping[str, Any], full: Mapping[str, Any]) -> Attributes:
    """``result`` with the attributes ``includefield`` asks for added from ``full`` (PS3.18 10.6.1.2.1).

    ``full`` is the fuller attribute set of the result (the study-level DICOM JSON, an instance's
    header). The attributes of the query's own matching keys are added too, as the standard
    requires. Attributes already in ``result`` are kept as they are; pixel data and bulk data (whose
    URI is the WADO-RS metadata's business) are never added. Returns a new dict in tag order.
    """
    wanted: Iterable[str] = full.keys() if query.include_all else (
        (query.includefield or frozenset()) | {tag for tag, _ in query.filters})
    out = dict(result)
    for tag in wanted:
        element = full.get(tag)
        if tag in out or tag in _PIXEL_DATA or not isinstance(element, Mapping):
            continue
        kept = _rewrite_bulk(copy.deepcopy(dict(element)), uri=None)
        if kept is not None:
            out[tag] = kept
    return _sorted(out)


def combine(*results: Mapping[str, Any]) -> Attributes:
    """Results of several levels merged into one (later ones win, e.g. the more specific RetrieveURL).

    For searches that span levels (PS3.18 10.6.3.2), and for :func:`matches` on keys of the levels
    above: ``combine(study, series, instance)``.
    """
    out: Attributes = {}
    for result in results:
        out.update(result)
    return _sorted(out)


def metadata(record: InstanceRecord, *, base_url: str) -> Attributes:
    """The WADO-RS metadata of one instance (PS3.18 10.4.1.1.2): its stored header as DICOM JSON.

    Every empty BulkDataURI, at any depth, becomes the instance's retrieve URL. Pixel data is never
    inline: a top-level Pixel Data (or Float / Double Float Pixel Data) element becomes a BulkDataURI.
    The Study, Series and SOP Instance UIDs are set from the record (the archive is keyed by them),
    SOPClassUID and AvailableTransferSyntaxUID added when the header lacks them. ``record`` is not
    changed. Returns a new dict in tag order.
    """
    url = instance_url(base_url, record.study_uid, record.series_uid, record.sop_uid)
    out: Attributes = {}
    for tag, element in copy.deepcopy(record.metadata).items():
        if tag in _PIXEL_DATA and "BulkDataURI" not in element:
            element = {"vr": element.get("vr") or "OW", "BulkDataURI": ""}
        kept = _rewrite_bulk(element, uri=url)
        if kept is not None:
            out[tag] = kept
    _set(out, "StudyInstanceUID", record.study_uid)
    _set(out, "SeriesInstanceUID", record.series_uid)
    _set(out, "SOPInstanceUID", record.sop_uid)
    if not _value_of(out, "SOPClassUID"):
        _set(out, "SOPClassUID", record.sop_class_uid)
    if not _value_of(out, "AvailableTransferSyntaxUID"):
        _set(out, "AvailableTransferSyntaxUID", record.transfer_syntax_uid)
    return _sorted(out)


def instance_url(base_url: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The WADO-RS retrieve URL of an instance: ``{base_url}/studies/{s}/series/{se}/instances/{i}``."""
    return _url(base_url, study_uid, series_uid, sop_uid)


def study_uid(resource: Mapping[str, Any]) -> str:
    """The Study Instance UID of an ``ImagingStudy``: its ``urn:dicom:uid`` identifier, else its id.

    Raises ``ValueError`` when it has neither.
    """
    for identifier in _list(resource.get("identifier")):
        if identifier.get("system") == DICOM_UID_SYSTEM and identifier.get("value"):
            return str(identifier["value"]).removeprefix("urn:oid:")
    if resource.get("id"):
        return str(resource["id"])
    raise ValueError("the ImagingStudy has no Study Instance UID (no urn:dicom:uid identifier and no id)")


def accession_number(resource: Mapping[str, Any]) -> str | None:
    """The accession number of an ``ImagingStudy``: its identifier typed ``ACSN`` (v2-0203), if any."""
    for identifier in _list(resource.get("identifier")):
        codings = _list((identifier.get("type") or {}).get("coding"))
        typed = any(c.get("system") == V2_0203 and c.get("code") == "ACSN" for c in codings)
        if (typed or identifier.get("system") == ACCESSION_SYSTEM) and identifier.get("value"):
            return str(identifier["value"])
    return None


# --- attributes -------------------------------------------------------------------------------------


# pydicom takes about 200 ms to import: its data dictionary is loaded on the first DICOMweb request, so
# the results function's other routes do not pay for it at cold start (tests/unit/common/test_cold_path.py).
# Caches are bounded: keywords and tags come from query strings.


@lru_cache(maxsize=1024)
def _tag_for(keyword: str) -> str | None:
    """The tag of a DICOM keyword, None when there is no such keyword."""
    from pydicom import datadict

    number = datadict.tag_for_keyword(keyword)
    return None if number is None else f"{number:08X}"


def _tag(keyword: str) -> str:
    tag = _tag_for(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword")
    return tag


@lru_cache(maxsize=1024)
def _keyword(tag: str) -> str:
    """The keyword of a tag ("" when the dictionary does not name it)."""
    from pydicom import datadict

    return datadict.keyword_for_tag(int(tag, 16))


@lru_cache(maxsize=1024)
def _dictionary_vr(tag: str) -> str:
    """The VR the data dictionary gives ``tag``; "" for private and unknown tags, or an ambiguous VR."""
    from pydicom import datadict

    try:
        vr = datadict.dictionary_VR(int(tag, 16))
    except KeyError:
        return ""
    return "" if " or " in vr else vr


@cache
def _supported(level: str) -> frozenset[str]:
    keywords = [k for lvl in LEVELS[: LEVELS.index(level) + 1] for k in MATCHING_KEYS[lvl]]
    return frozenset(_tag(k) for k in keywords)


def _attribute(name: str, *, parameter: str) -> str:
    """The tag of an attribute named by keyword or tag; QidoError when DICOM does not know it."""
    if _TAG_RE.fullmatch(name):
        tag = name.upper()
        if int(tag[:4], 16) % 2 == 1 or _keyword(tag):
            return tag  # a private tag is a well-formed attribute even if no dictionary names it
    else:
        known = _tag_for(name)
        if known is not None:
            return known
        if "." in name and all(_TAG_RE.fullmatch(p) or _tag_for(p) for p in name.split(".")):
            raise QidoError(f"{name}: attributes inside sequences are not supported for matching",
                            parameter=parameter)
    if parameter == name:
        raise QidoError(f"unknown query parameter {name!r}: not a DICOM attribute keyword or tag, nor "
                        f"limit, offset, includefield or fuzzymatching", parameter=parameter)
    raise QidoError(f"{parameter} names {name!r}, which is not a DICOM attribute keyword or tag",
                    parameter=parameter)


def _label(name: str, tag: str) -> str:
    keyword = _keyword(tag)
    return f"{name} ({keyword})" if keyword and keyword != name else name


def _includefield(raw: str | None) -> tuple[bool, frozenset[str] | None]:
    if raw is None:
        return False, None
    include_all = False
    tags: set[str] = set()
    for item in (part.strip() for part in raw.split(",")):
        if item == "all":
            include_all = True
        elif item:
            tags.add(_attribute(item, parameter="includefield"))
    return include_all, frozenset(tags) if tags else None


def _integer(params: Mapping[str, str], name: str, *, low: int, high: int | None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
    if not re.fullmatch(r"[0-9]{1,9}", raw.strip()):  # also keeps int() far from its digit limit
        raise QidoError(f"{name} must be an integer {bounds}", parameter=name)
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise QidoError(f"{name} must be an integer {bounds}", parameter=name)
    return value


def _boolean(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false").strip().lower()
    if raw not in ("true", "false"):
        raise QidoError(f"{name} must be true or false", parameter=name)
    return raw == "true"


# --- matching ---------------------------------------------------------------------------------------

_Test = Callable[[Any], bool]


def _universal(value: str) -> bool:
    return value in ("", "*")


@lru_cache(maxsize=1024)
def _compile(vr: str, value: str, name: str, fuzzy: bool = False) -> _Test:
    """A test of one stored value against the matching key ``value``; QidoError if ``value`` is malformed."""
    if vr == "UI":
        return _uid_test(value, name)
    if vr in _MOMENT_VRS:
        return _moment_test(vr, value, name)
    if vr == "PN":
        return _person_test(value, fuzzy)
    if vr in _TEXT_VRS:
        items = re.split(r"[,\\]", value) if vr == "CS" else [value]
        tests = [_text_test(item.strip()) for item in items if item.strip()]
        return lambda stored: any(test(stored) for test in tests)
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        return _number_test(vr, value, name)
    raise QidoError(f"{name} ({vr or 'unknown VR'}) is not supported for matching", parameter=name)


def _uid_test(value: str, name: str) -> _Test:
    uids = [uid.strip() for uid in re.split(r"[,\\]", value)]
    if not all(len(uid) <= 64 and _UID_RE.fullmatch(uid) for uid in uids):
        raise QidoError(f"{name} must be a UID or a list of UIDs separated by commas", parameter=name)
    wanted = frozenset(uids)
    return lambda stored: str(stored).strip() in wanted


def _text_test(item: str) -> _Test:
    if "*" in item or "?" in item:
        return lambda stored: _glob(item, str(stored).strip())
    return lambda stored: str(stored).strip() == item


def _person_test(value: str, fuzzy: bool) -> _Test:
    wanted = _person_name(value)
    if fuzzy:
        folded = _fold(wanted)
        if "*" in folded or "?" in folded:
            return lambda stored: _glob(folded, _fold(_person_name(stored)))
        words = _words(folded)
        return lambda stored: bool(words) and all(
            any(part.startswith(word) for part in _words(_fold(_person_name(stored)))) for word in words)
    if "*" in wanted or "?" in wanted:
        return lambda stored: _glob(wanted, _person_name(stored))
    return lambda stored: _person_name(stored) == wanted


def _person_name(value: Any) -> str:
    """The Alphabetic group of a PN (a DICOM JSON object or a ``=``-separated string), case-folded,
    without trailing empty components (``Doe^John^^`` is ``Doe^John``)."""
    text = str(value.get("Alphabetic") or "") if isinstance(value, Mapping) else str(value).split("=", 1)[0]
    return text.strip().rstrip("^ ").casefold()


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\^\s,]+", text) if word]


def _glob(pattern: str, text: str) -> bool:
    """Whether ``text`` matches ``pattern`` whole, ``*`` any run of characters and ``?`` any one.

    Greedy with one backtrack point, so O(len(pattern) x len(text)) at worst: a regular expression
    would let a query such as ``*a*a*a*a*a*a*b`` backtrack exponentially.
    """
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, t, p + 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    return pattern[p:].strip("*") == ""


def _number_test(vr: str, value: str, name: str) -> _Test:
    if not (_INTEGER_RE if vr in _INTEGER_VRS else _DECIMAL_RE).fullmatch(value):
        kind = "an integer" if vr in _INTEGER_VRS else "a number"
        raise QidoError(f"{name} must be {kind}", parameter=name)
    wanted = Decimal(value)

    def test(stored: Any) -> bool:
        try:
            return Decimal(str(stored).strip()) == wanted
        except InvalidOperation:
            return False

    return test


@dataclass(frozen=True)
class _Moment:
    """A DA, TM or DT value as the interval its precision covers, with its UTC offset if it has one."""

    start: datetime
    end: datetime
    offset: timedelta | None = None

    def utc(self, other: _Moment) -> tuple[datetime, datetime]:
        """Start and end, moved to UTC when both this and ``other`` carry an offset."""
        if self.offset is not None and other.offset is not None:
            return _shift(self.start, self.offset), _shift(self.end, self.offset)
        return self.start, self.end


def _shift(moment: datetime, offset: timedelta) -> datetime:
    try:
        return moment - offset
    except OverflowError:  # year 1 or 9999 moved past the calendar's edge: clamp rather than fail
        return datetime.min if offset > timedelta(0) else datetime.max


def _moment_test(vr: str, value: str, name: str) -> _Test:
    parse = _MOMENT_PARSERS[vr]
    bounds = _moment_bounds(vr, value, parse)
    if bounds is None:
        shape = {"DA": "YYYYMMDD", "TM": "HHMMSS", "DT": "YYYYMMDDHHMMSS"}[vr]
        raise QidoError(f"{name} must be a {vr} value ({shape}) or a range of them (from-to, -to, from-)",
                        parameter=name)
    low, high = bounds

    def test(stored: Any) -> bool:
        moment = parse(str(stored))
        if moment is None:
            return False
        if low is not None and moment.utc(low)[0] < low.utc(moment)[0]:
            return False
        return high is None or moment.utc(high)[0] <= high.utc(moment)[1]

    return test


def _moment_bounds(vr: str, value: str, parse: Callable[[str], _Moment | None],
                   ) -> tuple[_Moment | None, _Moment | None] | None:
    """(low, high) of a single value (both the same) or a range with one open end; None if malformed."""
    single = parse(value)
    if single is not None:
        # A DT with a negative offset also reads as a range; the standard's single value wins.
        return single, single
    for at in (i for i, c in enumerate(value) if c == "-"):
        left, right = value[:at], value[at + 1:]
        low, high = (parse(left) if left else None), (parse(right) if right else None)
        if (left or right) and (not left or low is not None) and (not right or high is not None):
            return low, high
    return None


def _parse_da(text: str) -> _Moment | None:
    text = text.strip()
    if len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")  # ACR-NEMA YYYY.MM.DD, still found in old headers
    found = _DA_RE.fullmatch(text)
    if not found:
        return None
    try:
        start = datetime(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None
    return _Moment(start, datetime.combine(start.date(), time.max))


def _parse_tm(text: str) -> _Moment | None:
    found = _TM_RE.fullmatch(text.strip().replace(":", ""))  # ":" from ACR-NEMA HH:MM:SS
    if not found:
        return None
    return _clock(datetime(1900, 1, 1), found[1], found[2], found[3], found[4])


def _parse_dt(text: str) -> _Moment | None:
    found = _DT_RE.fullmatch(text.strip())
    if not found:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = found.groups()
    offset = None
    if sign:
        if int(off_h) > 14 or int(off_m) > 59:
            return None
        offset = (-1 if sign == "-" else 1) * timedelta(hours=int(off_h), minutes=int(off_m))
    try:
        if month is None:
            day_one = datetime(int(year), 1, 1)
            return _Moment(day_one, datetime(int(year), 12, 31, 23, 59, 59, 999999), offset)
        if day is None:
            day_one = datetime(int(year), int(month), 1)
            last = calendar.monthrange(day_one.year, day_one.month)[1]
            return _Moment(day_one, datetime.combine(day_one.replace(day=last).date(), time.max), offset)
        midnight = datetime(int(year), int(month), int(day))
    except ValueError:
        return None
    if hour is None:
        return _Moment(midnight, datetime.combine(midnight.date(), time.max), offset)
    moment = _clock(midnight, hour, minute, second, fraction)
    return None if moment is None else _Moment(moment.start, moment.end, offset)


def _clock(day: datetime, hour: str, minute: str | None, second: str | None, fraction: str | None,
           ) -> _Moment | None:
    """The interval of ``day`` at ``HH[MM[SS[.F]]]``'s precision; None for an impossible time."""
    hh, mm, ss = int(hour), int(minute or 0), int(second or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    ss = min(ss, 59)  # DICOM allows a leap second, datetime does not
    micro = int((fraction or "0").ljust(6, "0"))
    start = day.replace(hour=hh, minute=mm, second=ss, microsecond=micro)
    if fraction is not None:
        span = timedelta(microseconds=10 ** (6 - len(fraction)))
    elif second is not None:
        span = timedelta(seconds=1)
    elif minute is not None:
        span = timedelta(minutes=1)
    else:
        span = timedelta(hours=1)
    return _Moment(start, start + (span - timedelta(microseconds=1)))  # never past 23:59:59.999999


_MOMENT_PARSERS: dict[str, Callable[[str], _Moment | None]] = {"DA": _parse_da, "TM": _parse_tm, "DT": _parse_dt}


# --- building results -------------------------------------------------------------------------------


def _element(keyword: str, values: Iterable[Any]) -> _Element:
    element: _Element = {"vr": _dictionary_vr(_tag(keyword))}
    present = [value for value in values if value is not None and value != ""]
    if present:
        element["Value"] = present
    return element


def _set(out: Attributes, keyword: str, *values: Any) -> None:
    """Set ``keyword`` to ``values`` (an empty attribute when there are none); PN values given as text."""
    if _dictionary_vr(_tag(keyword)) == "PN":
        values = tuple({"Alphabetic": value} if isinstance(value, str) else value for value in values)
    out[_tag(keyword)] = _element(keyword, values)


def _value_of(source: Mapping[str, Any], keyword: str) -> list[Any] | None:
    element = source.get(_tag(keyword))
    values = element.get("Value") if isinstance(element, Mapping) else None
    return list(values) if values else None


def _pick(out: Attributes, source: Mapping[str, Any], keyword: str, fallback: Any) -> None:
    """``keyword`` from ``source`` when it has a value there, else ``fallback`` (or empty)."""
    if _value_of(source, keyword):
        out[_tag(keyword)] = copy.deepcopy(dict(source[_tag(keyword)]))
    else:
        _set(out, keyword, fallback)


def _copy(out: Attributes, source: Mapping[str, Any], *keywords: str) -> None:
    """Each of ``keywords`` that ``source`` holds with a value, copied as it is."""
    for keyword in keywords:
        if _value_of(source, keyword):
            out[_tag(keyword)] = copy.deepcopy(dict(source[_tag(keyword)]))


def _rewrite_bulk(element: _Element, *, uri: str | None) -> _Element | None:
    """Fill each empty BulkDataURI in ``element`` and its sequence items with ``uri``; with ``uri`` None,
    drop bulk data elements instead (None for ``element`` itself). Changes ``element`` in place."""
    if "BulkDataURI" in element:
        if uri is None:
            return None
        if not element["BulkDataURI"]:
            element["BulkDataURI"] = uri
    if element.get("vr") == "SQ" and element.get("Value"):
        items = []
        for item in element["Value"]:
            kept = {tag: _rewrite_bulk(child, uri=uri) for tag, child in item.items()}
            items.append({tag: child for tag, child in kept.items() if child is not None})
        element["Value"] = items
    return element


def _sorted(attributes: Mapping[str, Any]) -> Attributes:
    # Tags are upper-case hex of fixed width, so text order is tag order.
    return dict(sorted(attributes.items()))


def _url(base_url: str, study: str, series: str | None = None, instance: str | None = None) -> str:
    url = f"{base_url.rstrip('/')}/studies/{study}"
    if series is not None:
        url += f"/series/{series}"
    if instance is not None:
        url += f"/instances/{instance}"
    return url


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _codes(codings: Iterable[Any]) -> list[str]:
    """The distinct codes, in order, of Codings or lists of Codings."""
    out: list[str] = []
    for coding in codings:
        for item in coding if isinstance(coding, list) else [coding]:
            code = item.get("code") if isinstance(item, Mapping) else None
            if code and code not in out:
                out.append(str(code))
    return out


def _dicom_date_time(started: Any) -> tuple[str | None, str | None]:
    """DA and TM from a FHIR ``date`` or ``dateTime``, at the local clock of its offset.

    A partial date gives no DA (DA has no partial form); a date alone gives no TM.
    """
    found = _FHIR_DATETIME_RE.fullmatch(str(started)) if started else None
    if not found or found[3] is None:
        return None, None
    year, month, day, hour, minute, second, fraction = found.groups()
    date = f"{year}{month}{day}"
    if hour is None:
        return date, None
    clock = f"{hour}{minute}{second or '00'}" + (f".{fraction[:6]}" if fraction else "")
    return date, clock
