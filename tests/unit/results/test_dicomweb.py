"""DICOMweb in DICOM JSON: QIDO-RS query parsing and matching, the result builders, WADO-RS metadata."""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from expediente.errors import Invalid
from expediente.imaging import DCM, InstanceRecord
from functions.results.dicomweb import (
    INSTANCE_AVAILABILITY,
    QidoError,
    QidoQuery,
    accession_number,
    apply_includefield,
    combine,
    instance_result,
    instance_url,
    matches,
    metadata,
    parse_qido,
    series_result,
    study_result,
    study_uid,
)

ROOT = Path(__file__).resolve().parents[3]
BASE = "https://api.example.test/dicomweb"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"
SOP_UID = "1.2.826.0.1.3680043.8.498.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

# Tags used throughout, named once.
SPECIFIC_CHARACTER_SET, SOP_CLASS, SOP_INSTANCE = "00080005", "00080016", "00080018"
STUDY_DATE, STUDY_TIME, ACCESSION, AVAILABILITY = "00080020", "00080030", "00080050", "00080056"
MODALITY, MODALITIES, REFERRING, TZ_OFFSET = "00080060", "00080061", "00080090", "00080201"
STUDY_DESCRIPTION, SERIES_DESCRIPTION, RETRIEVE_URL, AVAILABLE_TS = "00081030", "0008103E", "00081190", "00083002"
PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX = "00100010", "00100020", "00100030", "00100040"
BODY_PART, STUDY_INSTANCE, SERIES_INSTANCE, STUDY_ID = "00180015", "0020000D", "0020000E", "00200010"
SERIES_NUMBER, INSTANCE_NUMBER = "00200011", "00200013"
N_STUDY_SERIES, N_STUDY_INSTANCES, N_SERIES_INSTANCES = "00201206", "00201208", "00201209"
FRAMES, ROWS, COLUMNS, BITS_ALLOCATED, PIXEL_DATA = "00280008", "00280010", "00280011", "00280100", "7FE00010"


# --- fixtures ---------------------------------------------------------------------------------------


def _header(name: str) -> tuple[pydicom.Dataset, dict[str, Any]]:
    """A pydicom test file's header and its DICOM JSON, binary values over 1 KiB as empty BulkDataURIs."""
    path = get_testdata_file(name)
    assert path is not None, f"pydicom ships {name}"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds, ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _element: "")


def _record(name: str, **changes: Any) -> InstanceRecord:
    ds, header = _header(name)
    number = ds.get("InstanceNumber")
    record = InstanceRecord(
        study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID), sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID), instance_number=None if number in (None, "") else int(number),
        number_of_frames=int(ds.get("NumberOfFrames") or 1), transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        size=1234, archive_key=f"t1/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm",
        added_in=1, ingested_at="2026-01-15T10:00:00Z", metadata=header,
    )
    return dataclasses.replace(record, **changes)


@pytest.fixture
def ct() -> InstanceRecord:
    return _record("CT_small.dcm")


def _study_dicom(header: dict[str, Any]) -> dict[str, Any]:
    """The study-level attributes the ingest keeps, taken from an instance header."""
    keep = {PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX, STUDY_DATE, STUDY_TIME, ACCESSION, STUDY_ID, STUDY_DESCRIPTION,
            REFERRING, SPECIFIC_CHARACTER_SET}
    return {tag: element for tag, element in header.items() if tag in keep}


def _resource(uid: str = STUDY_UID, **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": uid, "meta": {"versionId": "3", "lastUpdated": "2026-01-15T10:00:00Z"},
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
             "system": "urn:expediente:accession", "value": "A2611250ABCDEFG"},
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": "CT"}],
        "subject": {"reference": "Patient/p1"}, "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "started": "2004-01-19T07:27:30",
        "numberOfSeries": 1, "numberOfInstances": 2, "description": "CT CHEST",
        "series": [{"uid": SERIES_UID, "number": 1, "modality": {"system": DCM, "code": "CT"},
                    "description": "AXIAL 5MM", "numberOfInstances": 2, "bodySite": {"display": "CHEST"},
                    "started": "2004-01-19T07:27:30"}],
    }
    resource.update(changes)
    return resource


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def _values(result: dict[str, Any], tag: str) -> list[Any] | None:
    values: list[Any] | None = result[tag].get("Value")
    return values


def _query(level: str = "study", **params: str) -> QidoQuery:
    return parse_qido(level, params)


# --- import cost ------------------------------------------------------------------------------------


def test_importing_the_module_loads_neither_pydicom_nor_aws() -> None:
    """The results handler may import it at cold start: pydicom loads on the first DICOMweb request."""
    probe = ("import sys; import functions.results.dicomweb; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydicom', 'boto3', 'botocore', 'pydantic'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# --- parse_qido -------------------------------------------------------------------------------------


def test_keywords_and_tags_name_the_same_attribute() -> None:
    by_keyword = _query(PatientID="1CT1", StudyInstanceUID=STUDY_UID)
    by_tag = parse_qido("study", {"00100020": "1CT1", "0020000d": STUDY_UID})
    assert by_keyword.filters == by_tag.filters == ((PATIENT_ID, "1CT1"), (STUDY_INSTANCE, STUDY_UID))


def test_defaults_when_only_filters_are_given() -> None:
    query = _query(PatientID="1CT1")
    assert (query.level, query.limit, query.offset) == ("study", None, 0)
    assert (query.includefield, query.include_all, query.fuzzymatching) == (None, False, False)


def test_filter_values_are_stripped_of_surrounding_spaces() -> None:
    assert _query(PatientID="  1CT1 ").filters == ((PATIENT_ID, "1CT1"),)


def test_includefield_takes_keywords_and_tags_separated_by_commas() -> None:
    query = _query(includefield="StudyDescription, 00080060,00101010")
    assert query.includefield == frozenset({STUDY_DESCRIPTION, MODALITY, "00101010"})
    assert query.include_all is False


def test_includefield_all_is_a_flag() -> None:
    assert _query(includefield="all").include_all is True
    assert _query(includefield="all").includefield is None
    mixed = _query(includefield="PatientAge,all")
    assert mixed.include_all is True
    assert mixed.includefield == frozenset({"00101010"})


def test_includefield_accepts_private_tags() -> None:
    assert _query(includefield="00091001").includefield == frozenset({"00091001"})


def test_includefield_naming_an_unknown_attribute_is_rejected() -> None:
    with pytest.raises(QidoError, match="includefield") as caught:
        _query(includefield="StudyDescription,NotAnAttribute")
    assert caught.value.parameter == "includefield"
    assert "NotAnAttribute" in str(caught.value)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("limit", "1", 1), ("limit", "1000", 1000), ("limit", "101", 101), ("offset", "0", 0), ("offset", "250", 250),
])
def test_limit_and_offset_within_bounds(name: str, value: str, expected: int) -> None:
    assert getattr(_query(**{name: value}), name) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("limit", "0"), ("limit", "1001"), ("limit", "-1"), ("limit", "ten"), ("limit", "1.5"), ("limit", ""),
    ("limit", "１０"), ("offset", "-1"), ("offset", "x"), ("offset", "1e3"), ("offset", "9" * 5000),
])
def test_limit_and_offset_out_of_bounds_are_rejected(name: str, value: str) -> None:
    with pytest.raises(QidoError, match=f"^{name} must be an integer") as caught:
        _query(**{name: value})
    assert caught.value.parameter == name


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("TRUE", True)])
def test_fuzzymatching_flag(value: str, expected: bool) -> None:
    assert _query(fuzzymatching=value).fuzzymatching is expected


def test_fuzzymatching_must_be_a_boolean() -> None:
    with pytest.raises(QidoError, match="fuzzymatching must be true or false"):
        _query(fuzzymatching="yes")


def test_unknown_parameter_is_rejected_by_name() -> None:
    with pytest.raises(QidoError, match="'PatientNmae'") as caught:
        _query(PatientNmae="DOE")
    assert caught.value.parameter == "PatientNmae"


@pytest.mark.parametrize("name", ["00089999", "limitt", "patientid"])
def test_names_dicom_does_not_know_are_unknown_parameters(name: str) -> None:
    with pytest.raises(QidoError, match="unknown query parameter") as caught:
        _query(**{name: "x"})
    assert caught.value.parameter == name


def test_qido_error_is_a_400_value_error() -> None:
    with pytest.raises(QidoError) as caught:
        _query(Nope="x")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, Invalid)
    assert caught.value.status == HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(("level", "name"), [
    ("study", "PatientAge"), ("study", "Modality"), ("study", "SeriesInstanceUID"), ("study", "SOPInstanceUID"),
    ("series", "InstanceNumber"), ("series", "SOPClassUID"), ("instance", "Rows"), ("study", "00091001"),
])
def test_known_attributes_outside_the_level_are_not_supported_for_matching(level: str, name: str) -> None:
    with pytest.raises(QidoError, match="is not supported for matching") as caught:
        parse_qido(level, {name: "1"})
    assert caught.value.parameter == name
    assert name in str(caught.value)


def test_an_unsupported_key_given_as_a_tag_is_reported_with_its_keyword() -> None:
    with pytest.raises(QidoError, match=r"00101010 \(PatientAge\) is not supported for matching"):
        _query(**{"00101010": "045Y"})


def test_sequence_paths_are_not_supported_for_matching() -> None:
    with pytest.raises(QidoError, match="not supported for matching"):
        _query(**{"ReferencedSeriesSequence.SeriesInstanceUID": SERIES_UID})


@pytest.mark.parametrize(("level", "params"), [
    ("study", {"StudyDate": "20040119", "PatientName": "DOE*", "ModalitiesInStudy": "CT", "StudyID": "1",
               "AccessionNumber": "A1", "ReferringPhysicianName": "X", "StudyTime": "0700-", "PatientID": "1"}),
    ("series", {"StudyInstanceUID": STUDY_UID, "PatientID": "1", "Modality": "CT", "SeriesNumber": "2",
                "SeriesInstanceUID": SERIES_UID}),
    ("instance", {"StudyDate": "-20041231", "Modality": "CT", "SOPClassUID": CT_IMAGE, "SOPInstanceUID": SOP_UID,
                  "InstanceNumber": "3"}),
])
def test_keys_of_the_level_and_the_levels_above_are_supported(level: str, params: dict[str, str]) -> None:
    query = parse_qido(level, params)
    assert len(query.filters) == len(params)


def test_media_type_parameters_are_left_to_the_handler() -> None:
    query = _query(accept="application/dicom+json", charset="utf-8", PatientID="1")
    assert query.filters == ((PATIENT_ID, "1"),)


def test_an_unknown_level_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown QIDO-RS level") as caught:
        parse_qido("patient", {})
    assert not isinstance(caught.value, QidoError)


@pytest.mark.parametrize(("name", "value"), [
    ("StudyInstanceUID", "1.2.abc"), ("StudyInstanceUID", "1.02.3"), ("StudyInstanceUID", "1.2,,1.3"),
    ("StudyInstanceUID", "1." + "2" * 70), ("StudyInstanceUID", "1.2*"),
    ("StudyDate", "2004"), ("StudyDate", "20041301"), ("StudyDate", "2004-01-19"), ("StudyDate", "-"),
    ("StudyDate", "20040101-20041231-20051231"), ("StudyDate", "2004*"),
    ("StudyTime", "25"), ("StudyTime", "0760"), ("StudyTime", "07.5"), ("StudyTime", "-07x"),
    ("PatientBirthDate", "Juan Perez"),
])
def test_malformed_values_are_rejected_without_echoing_them(name: str, value: str) -> None:
    with pytest.raises(QidoError, match=f"^{name} must be") as caught:
        _query(**{name: value})
    assert caught.value.parameter == name
    if len(value) > 3:
        assert value not in str(caught.value)


@pytest.mark.parametrize(("level", "name", "value"), [
    ("series", "SeriesNumber", "two"), ("series", "SeriesNumber", "1.5"), ("instance", "InstanceNumber", "*3"),
])
def test_numbers_must_be_integers(level: str, name: str, value: str) -> None:
    with pytest.raises(QidoError, match=f"{name} must be an integer"):
        parse_qido(level, {name: value})


def test_universal_values_need_no_format() -> None:
    assert _query(StudyDate="", StudyInstanceUID="*").filters == ((STUDY_DATE, ""), (STUDY_INSTANCE, "*"))


# --- matches ----------------------------------------------------------------------------------------


STUDY_ATTRS: dict[str, Any] = {
    STUDY_DATE: {"vr": "DA", "Value": ["20040119"]},
    STUDY_TIME: {"vr": "TM", "Value": ["072730.250"]},
    ACCESSION: {"vr": "SH", "Value": ["A2611250ABCDEFG"]},
    MODALITIES: {"vr": "CS", "Value": ["CT", "SR"]},
    REFERRING: {"vr": "PN"},
    STUDY_DESCRIPTION: {"vr": "LO", "Value": ["CT (CHEST) w/contrast"]},
    PATIENT_NAME: _pn("Pérez García^José Luis^^"),
    PATIENT_ID: {"vr": "LO", "Value": ["MRN-0042"]},
    STUDY_INSTANCE: {"vr": "UI", "Value": [STUDY_UID]},
    SERIES_NUMBER: {"vr": "IS", "Value": [3]},
}


def _match(level: str = "study", attrs: dict[str, Any] = STUDY_ATTRS, **params: str) -> bool:
    return matches(parse_qido(level, params), attrs)


def test_no_filters_match_anything() -> None:
    assert _match()
    assert _match(attrs={})


def test_single_value_string_matching_is_exact_and_case_sensitive() -> None:
    assert _match(PatientID="MRN-0042")
    assert not _match(PatientID="mrn-0042")
    assert not _match(PatientID="MRN-004")
    assert _match(AccessionNumber="A2611250ABCDEFG")


@pytest.mark.parametrize(("pattern", "expected"), [
    ("MRN-*", True), ("*0042", True), ("MRN-00?2", True), ("*", True), ("M*N*2", True),
    ("MRN-?", False), ("mrn-*", False), ("MRN.0042", False), ("MRN-004", False),
])
def test_wildcards_on_strings(pattern: str, expected: bool) -> None:
    assert _match(PatientID=pattern) is expected


def test_wildcards_treat_regular_expression_characters_literally() -> None:
    assert _match(StudyDescription="CT (CHEST)*")
    assert not _match(StudyDescription="CT .CHEST.*")


def test_a_pathological_wildcard_answers_at_once() -> None:
    # A backtracking regular expression takes minutes over this; the query must not hold a Lambda.
    attrs = {STUDY_DESCRIPTION: {"vr": "LO", "Value": ["a" * 64]}}
    started = time.perf_counter()
    assert not _match(attrs=attrs, StudyDescription="*a" * 30 + "*b")
    assert _match(attrs=attrs, StudyDescription="*a" * 30 + "*")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("pattern", ["", "*", "?", "a*", "*b", "a?b", "*a*b*", "**a", "?*?", "a*a*a", "b*?a"])
@pytest.mark.parametrize("text", ["", "a", "ab", "ba", "aab", "abab", "bbaa"])
def test_wildcards_agree_with_shell_style_matching(pattern: str, text: str) -> None:
    attrs = {PATIENT_ID: {"vr": "LO", "Value": [text]}} if text else {}  # an empty value is an absent one
    universal = pattern in ("", "*")
    expected = universal or (bool(text) and fnmatch.fnmatchcase(text, pattern))
    assert _match(attrs=attrs, PatientID=pattern) is expected


@pytest.mark.parametrize("value", [
    STUDY_UID, f"1.2.3,{STUDY_UID}", f"1.2.3\\{STUDY_UID}", f"{STUDY_UID}, 1.2.3",
])
def test_uid_list_matching(value: str) -> None:
    assert _match(StudyInstanceUID=value)


def test_uid_matching_is_exact() -> None:
    assert not _match(StudyInstanceUID="1.2.3,1.2.4")
    assert not _match(StudyInstanceUID=STUDY_UID + ".1")
    assert not _match(StudyInstanceUID=STUDY_UID.rsplit(".", 1)[0])


@pytest.mark.parametrize(("value", "expected"), [
    ("20040119", True), ("20040118", False),
    ("20040101-20041231", True), ("20040119-20040119", True), ("20040120-20041231", False),
    ("-20041231", True), ("-20040118", False), ("-20040119", True),
    ("20040101-", True), ("20040120-", False), ("20040119-", True),
])
def test_date_single_value_and_ranges(value: str, expected: bool) -> None:
    assert _match(StudyDate=value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("072730.250", True), ("072730", True), ("0727", True), ("07", True), ("08", False), ("072731", False),
    ("0700-0800", True), ("0728-", False), ("-0727", True), ("-072729", False), ("072730.25-072730.26", True),
    ("07:27-07:28", True),
])
def test_time_matches_at_the_precision_of_the_value(value: str, expected: bool) -> None:
    assert _match(StudyTime=value) is expected


def test_birth_date_range() -> None:
    attrs = {BIRTH_DATE: {"vr": "DA", "Value": ["19800229"]}}
    assert _match(attrs=attrs, PatientBirthDate="19800101-19801231")
    assert not _match(attrs=attrs, PatientBirthDate="19810101-")


def test_legacy_dates_and_times_in_stored_headers_still_match() -> None:
    attrs = {STUDY_DATE: {"vr": "DA", "Value": ["2004.01.19"]}, STUDY_TIME: {"vr": "TM", "Value": ["07:27:30"]}}
    assert _match(attrs=attrs, StudyDate="20040119", StudyTime="072730")


def test_stored_values_that_are_not_dates_do_not_match() -> None:
    attrs = {STUDY_DATE: {"vr": "DA", "Value": ["unknown"]}}
    assert not _match(attrs=attrs, StudyDate="20040101-")


ACQUISITION_DATETIME = "0008002A"


def _dt(filter_value: str, stored: str) -> bool:
    query = QidoQuery(level="instance", filters=((ACQUISITION_DATETIME, filter_value),))
    return matches(query, {ACQUISITION_DATETIME: {"vr": "DT", "Value": [stored]}})


@pytest.mark.parametrize(("value", "stored", "expected"), [
    ("20040119072730", "20040119072730.123456", True),
    ("2004", "20040119072730", True),
    ("200401", "20040131235959", True),
    ("200402", "20040131235959", False),
    ("20040101-20040131", "20040119072730", True),
    ("20040120-", "20040119072730", False),
    ("-2004011907", "20040119072730", True),
    # Both with offsets: compared in UTC (12:00-05:00 is 17:00Z).
    ("200401191700+0000-200401191800+0000", "20040119120000-0500", True),
    ("200401191200+0000-200401191300+0000", "20040119120000-0500", False),
    # Only one with an offset: local clock readings.
    ("200401191200-200401191300", "20040119120000-0500", True),
    # A value that reads as a single DT with an offset is one.
    ("20040119-0500", "20040119120000-0500", True),
    # Moving the calendar's first day to UTC would leave the calendar: clamped, not a server error.
    ("0001+1400-", "00010101000000+1400", True),
    ("-9999-1200", "99991231235959-1200", True),
])
def test_datetime_matching(value: str, stored: str, expected: bool) -> None:
    assert _dt(value, stored) is expected


def test_person_names_match_on_the_alphabetic_group_ignoring_case() -> None:
    assert _match(PatientName="pérez garcía^josé luis")
    assert _match(PatientName="PÉREZ GARCÍA^JOSÉ LUIS^^^")
    assert _match(PatientName="Pérez García^José Luis=ペレス")
    assert not _match(PatientName="Pérez García")
    assert not _match(PatientName="perez garcia^jose luis")


def test_person_names_with_wildcards() -> None:
    assert _match(PatientName="pérez*")
    assert _match(PatientName="*JOSÉ*")
    assert _match(PatientName="P?REZ*")
    assert not _match(PatientName="garcía*")


def test_person_names_stored_as_plain_text_are_read_too() -> None:
    attrs = {PATIENT_NAME: {"vr": "PN", "Value": ["Doe^John"]}}
    assert _match(attrs=attrs, PatientName="DOE^JOHN")


def test_fuzzy_person_name_matching_ignores_accents_and_matches_word_prefixes() -> None:
    assert _match(PatientName="perez jose", fuzzymatching="true")
    assert _match(PatientName="garc^lu", fuzzymatching="true")
    assert _match(PatientName="*garcia*", fuzzymatching="true")
    assert not _match(PatientName="perez maria", fuzzymatching="true")
    assert not _match(PatientName="perez jose", fuzzymatching="false")


def test_a_name_that_is_empty_or_has_no_alphabetic_group_does_not_match() -> None:
    assert not _match(ReferringPhysicianName="*a*")
    assert not _match(attrs={PATIENT_NAME: {"vr": "PN", "Value": [{"Ideographic": "山田"}]}}, PatientName="*a*")


def test_modalities_in_study_matches_when_any_value_does() -> None:
    assert _match(ModalitiesInStudy="CT")
    assert _match(ModalitiesInStudy="SR")
    assert not _match(ModalitiesInStudy="MR")


def test_code_string_lists_match_any_of_their_values() -> None:
    assert _match(ModalitiesInStudy="MR,CT")
    assert _match(ModalitiesInStudy="MR\\SR")
    assert _match(ModalitiesInStudy="M*,S?")
    assert not _match(ModalitiesInStudy="MR,US")


def test_numbers_match_as_numbers() -> None:
    assert _match("series", SeriesNumber="3")
    assert _match("series", SeriesNumber="03")
    assert not _match("series", SeriesNumber="4")
    assert _match("series", {SERIES_NUMBER: {"vr": "IS", "Value": ["3"]}}, SeriesNumber="3")


def test_absent_attributes_do_not_match_a_filter_on_them() -> None:
    assert not _match(attrs={}, PatientID="MRN-0042")
    assert not _match(attrs={PATIENT_ID: {"vr": "LO"}}, PatientID="MRN-0042")
    assert not _match(attrs={PATIENT_ID: {"vr": "LO", "Value": []}}, PatientID="*0042")
    assert not _match(StudyID="1")


@pytest.mark.parametrize("value", ["", "*"])
def test_universal_matching_matches_absent_attributes(value: str) -> None:
    assert _match(attrs={}, PatientID=value, StudyDate=value, StudyInstanceUID=value)


def test_every_filter_must_match() -> None:
    assert _match(PatientID="MRN-0042", StudyDate="20040101-", ModalitiesInStudy="CT")
    assert not _match(PatientID="MRN-0042", StudyDate="20050101-", ModalitiesInStudy="CT")


def test_a_malformed_value_in_a_query_built_by_hand_is_a_qido_error() -> None:
    query = QidoQuery(level="study", filters=((STUDY_DATE, "yesterday"),))
    with pytest.raises(QidoError, match="StudyDate must be"):
        matches(query, STUDY_ATTRS)


# --- study_result -----------------------------------------------------------------------------------

STUDY_REQUIRED = {
    STUDY_DATE: "DA", STUDY_TIME: "TM", ACCESSION: "SH", MODALITIES: "CS", REFERRING: "PN", RETRIEVE_URL: "UR",
    PATIENT_NAME: "PN", PATIENT_ID: "LO", BIRTH_DATE: "DA", SEX: "CS", STUDY_INSTANCE: "UI", STUDY_ID: "SH",
    N_STUDY_SERIES: "IS", N_STUDY_INSTANCES: "IS",
}


def test_study_result_takes_patient_and_study_attributes_from_the_study_dicom(ct: InstanceRecord) -> None:
    study_dicom = _study_dicom(ct.metadata)
    result = study_result(_resource(ct.study_uid), study_dicom, base_url=BASE)
    for tag, vr in STUDY_REQUIRED.items():
        assert result[tag]["vr"] == vr, tag
    assert _values(result, PATIENT_NAME) == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert _values(result, PATIENT_ID) == ["1CT1"]
    assert _values(result, SEX) == ["O"]
    assert _values(result, STUDY_DATE) == ["20040119"]
    assert _values(result, STUDY_TIME) == ["072730"]
    assert _values(result, STUDY_ID) == ["1CT1"]
    assert _values(result, STUDY_DESCRIPTION) == ["e+1"]  # the header's, not the resource's
    assert _values(result, SPECIFIC_CHARACTER_SET) == ["ISO_IR 100"]
    assert _values(result, STUDY_INSTANCE) == [ct.study_uid]
    assert _values(result, AVAILABILITY) == [INSTANCE_AVAILABILITY]


def test_study_result_falls_back_to_the_resource() -> None:
    result = study_result(_resource(), {}, base_url=BASE)
    assert _values(result, STUDY_DATE) == ["20040119"]
    assert _values(result, STUDY_TIME) == ["072730"]
    assert _values(result, ACCESSION) == ["A2611250ABCDEFG"]
    assert _values(result, STUDY_DESCRIPTION) == ["CT CHEST"]
    assert _values(result, STUDY_INSTANCE) == [STUDY_UID]


def test_an_empty_value_in_the_study_dicom_gives_way_to_the_resource(ct: InstanceRecord) -> None:
    study_dicom = _study_dicom(ct.metadata)
    assert "Value" not in study_dicom[ACCESSION]  # CT_small has an empty Accession Number
    result = study_result(_resource(ct.study_uid), study_dicom, base_url=BASE)
    assert _values(result, ACCESSION) == ["A2611250ABCDEFG"]


def test_study_result_keeps_required_attributes_empty_when_unknown() -> None:
    result = study_result(_resource(started=None, identifier=[]), {}, base_url=BASE)
    for tag in (STUDY_DATE, STUDY_TIME, ACCESSION, REFERRING, PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX, STUDY_ID):
        assert result[tag] == {"vr": STUDY_REQUIRED[tag]}, tag
    for tag in (SPECIFIC_CHARACTER_SET, TZ_OFFSET):
        assert tag not in result


def test_study_result_leaves_out_an_unknown_description() -> None:
    resource = _resource()
    del resource["description"]
    assert STUDY_DESCRIPTION not in study_result(resource, {}, base_url=BASE)


@pytest.mark.parametrize(("started", "date", "time"), [
    ("2004-01-19", ["20040119"], None),
    ("2004-01-19T07:27:30.125-05:00", ["20040119"], ["072730.125"]),
    ("2004-01-19T07:27:30Z", ["20040119"], ["072730"]),
    ("2004-01", None, None),
    ("2004", None, None),
])
def test_study_date_and_time_from_started(started: str, date: list[str] | None, time: list[str] | None) -> None:
    result = study_result(_resource(started=started), {}, base_url=BASE)
    assert _values(result, STUDY_DATE) == date
    assert _values(result, STUDY_TIME) == time


def test_study_result_counts_and_retrieve_url() -> None:
    result = study_result(_resource(numberOfSeries=3, numberOfInstances=120), {}, base_url=BASE + "/")
    assert _values(result, N_STUDY_SERIES) == [3]
    assert _values(result, N_STUDY_INSTANCES) == [120]
    assert _values(result, RETRIEVE_URL) == [f"{BASE}/studies/{STUDY_UID}"]


def test_study_counts_are_derived_from_the_series_when_the_resource_has_none() -> None:
    series = [{"uid": "1.2.3", "modality": {"code": "CT"}, "numberOfInstances": 4},
              {"uid": "1.2.4", "modality": {"code": "SR"}, "numberOfInstances": 1}]
    resource = _resource(series=series)
    for key in ("numberOfSeries", "numberOfInstances", "modality"):
        del resource[key]
    result = study_result(resource, {}, base_url=BASE)
    assert _values(result, N_STUDY_SERIES) == [2]
    assert _values(result, N_STUDY_INSTANCES) == [5]
    assert _values(result, MODALITIES) == ["CT", "SR"]


def test_modalities_in_study_come_from_the_resource_without_repeats() -> None:
    resource = _resource(modality=[{"system": DCM, "code": "CT"}, {"system": DCM, "code": "SR"},
                                   {"system": DCM, "code": "CT"}])
    assert _values(study_result(resource, {}, base_url=BASE), MODALITIES) == ["CT", "SR"]


def test_study_uid_prefers_the_dicom_identifier() -> None:
    assert study_uid(_resource()) == STUDY_UID
    assert study_uid({"id": "1.2.3"}) == "1.2.3"
    with pytest.raises(ValueError, match="no Study Instance UID"):
        study_uid({"resourceType": "ImagingStudy"})


def test_accession_number_by_type_or_system() -> None:
    assert accession_number(_resource()) == "A2611250ABCDEFG"
    assert accession_number({"identifier": [{"system": "urn:expediente:accession", "value": "A1"}]}) == "A1"
    assert accession_number({"identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2"}]}) is None


# --- series_result ----------------------------------------------------------------------------------


def test_series_result_attributes() -> None:
    resource = _resource()
    result = series_result(resource, resource["series"][0], base_url=BASE)
    assert result == {
        MODALITY: {"vr": "CS", "Value": ["CT"]},
        SERIES_DESCRIPTION: {"vr": "LO", "Value": ["AXIAL 5MM"]},
        RETRIEVE_URL: {"vr": "UR", "Value": [f"{BASE}/studies/{STUDY_UID}/series/{SERIES_UID}"]},
        BODY_PART: {"vr": "CS", "Value": ["CHEST"]},
        STUDY_INSTANCE: {"vr": "UI", "Value": [STUDY_UID]},
        SERIES_INSTANCE: {"vr": "UI", "Value": [SERIES_UID]},
        SERIES_NUMBER: {"vr": "IS", "Value": [1]},
        N_SERIES_INSTANCES: {"vr": "IS", "Value": [2]},
    }
    assert list(result) == sorted(result)


def test_series_result_without_optional_elements() -> None:
    series = {"uid": SERIES_UID, "modality": {"system": DCM, "code": "MR"}, "numberOfInstances": 7}
    result = series_result(_resource(), series, base_url=BASE)
    assert SERIES_DESCRIPTION not in result
    assert BODY_PART not in result
    assert result[SERIES_NUMBER] == {"vr": "IS"}
    assert _values(result, N_SERIES_INSTANCES) == [7]
    assert _values(result, MODALITY) == ["MR"]


# --- instance_result --------------------------------------------------------------------------------


def test_instance_result_attributes(ct: InstanceRecord) -> None:
    result = instance_result(ct, base_url=BASE)
    assert _values(result, SOP_CLASS) == [CT_IMAGE]
    assert _values(result, SOP_INSTANCE) == [ct.sop_uid]
    assert _values(result, STUDY_INSTANCE) == [ct.study_uid]
    assert _values(result, SERIES_INSTANCE) == [ct.series_uid]
    assert result[INSTANCE_NUMBER] == {"vr": "IS", "Value": [1]}
    assert result[ROWS] == {"vr": "US", "Value": [128]}
    assert result[COLUMNS] == {"vr": "US", "Value": [128]}
    assert result[BITS_ALLOCATED] == {"vr": "US", "Value": [16]}
    assert result[AVAILABLE_TS] == {"vr": "UI", "Value": [EXPLICIT_LE]}
    assert _values(result, AVAILABILITY) == ["ONLINE"]
    assert _values(result, RETRIEVE_URL) == [instance_url(BASE, ct.study_uid, ct.series_uid, ct.sop_uid)]
    assert FRAMES not in result  # single frame, none in the header
    assert PATIENT_NAME not in result
    assert list(result) == sorted(result)


def test_instance_result_gives_the_frames_of_a_multiframe_header() -> None:
    record = _record("SC_rgb_rle_2frame.dcm")
    result = instance_result(record, base_url=BASE)
    assert result[FRAMES] == {"vr": "IS", "Value": [2]}
    assert _values(result, AVAILABLE_TS) == ["1.2.840.10008.1.2.5"]  # RLE Lossless, served as stored


def test_instance_result_gives_frames_known_only_to_the_record(ct: InstanceRecord) -> None:
    result = instance_result(dataclasses.replace(ct, number_of_frames=4), base_url=BASE)
    assert result[FRAMES] == {"vr": "IS", "Value": [4]}


def test_instance_result_without_instance_number_or_image_attributes() -> None:
    record = InstanceRecord(
        study_uid=STUDY_UID, series_uid=SERIES_UID, sop_uid=SOP_UID, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.22",
        instance_number=None, number_of_frames=1, transfer_syntax_uid=EXPLICIT_LE, size=10, archive_key="k",
        added_in=1, ingested_at="2026-01-15T10:00:00Z", metadata={},
    )
    result = instance_result(record, base_url=BASE)
    assert result[INSTANCE_NUMBER] == {"vr": "IS"}
    assert not {ROWS, COLUMNS, BITS_ALLOCATED, FRAMES} & result.keys()


def test_instance_url() -> None:
    assert instance_url(BASE + "/", "1.2", "1.2.3", "1.2.3.4") == f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4"


# --- apply_includefield and combine -----------------------------------------------------------------


def test_includefield_all_adds_every_attribute_the_result_lacks(ct: InstanceRecord) -> None:
    before = copy.deepcopy(ct.metadata)
    base = instance_result(ct, base_url=BASE)
    result = apply_includefield(_query("instance", includefield="all"), base, ct.metadata)
    assert _values(result, "00180050") == [5.0]  # SliceThickness
    assert result[PATIENT_NAME] == ct.metadata[PATIENT_NAME]
    assert "00431029" not in result  # bulk data stays out of QIDO results
    assert result[RETRIEVE_URL] == base[RETRIEVE_URL]
    assert list(result) == sorted(result)
    assert ct.metadata == before
    assert "00180050" not in base


def test_includefield_never_replaces_what_the_result_says(ct: InstanceRecord) -> None:
    base = instance_result(ct, base_url=BASE)
    full = dict(ct.metadata, **{RETRIEVE_URL: {"vr": "UR", "Value": ["https://stale/"]},
                                INSTANCE_NUMBER: {"vr": "IS", "Value": [99]}})
    for query in (_query("instance", includefield="all"), _query("instance", includefield="RetrieveURL,00200013")):
        result = apply_includefield(query, base, full)
        assert result[RETRIEVE_URL] == base[RETRIEVE_URL]
        assert result[INSTANCE_NUMBER] == {"vr": "IS", "Value": [1]}


def test_includefield_all_never_adds_pixel_data_or_nested_bulk_data() -> None:
    full = {
        PIXEL_DATA: {"vr": "OW", "InlineBinary": "AAAA"},
        "00400275": {"vr": "SQ", "Value": [{"00400009": {"vr": "SH", "Value": ["SPS1"]},
                                            "00420011": {"vr": "OB", "BulkDataURI": ""}}]},
    }
    result = apply_includefield(_query("instance", includefield="all"), {}, full)
    assert PIXEL_DATA not in result
    assert result["00400275"] == {"vr": "SQ", "Value": [{"00400009": {"vr": "SH", "Value": ["SPS1"]}}]}


def test_includefield_adds_only_the_listed_attributes(ct: InstanceRecord) -> None:
    query = _query("instance", includefield="SliceThickness,00180060,PatientAge,00431029")
    result = apply_includefield(query, instance_result(ct, base_url=BASE), ct.metadata)
    assert _values(result, "00180050") == [5.0]
    assert _values(result, "00180060") == [120.0]  # KVP
    assert _values(result, "00101010") == ["000Y"]
    assert "00431029" not in result
    assert PATIENT_NAME not in result


def test_matching_keys_are_returned_as_if_included(ct: InstanceRecord) -> None:
    query = _query("instance", PatientID="1CT1", StudyDescription="e*")
    result = apply_includefield(query, instance_result(ct, base_url=BASE), ct.metadata)
    assert _values(result, PATIENT_ID) == ["1CT1"]
    assert _values(result, STUDY_DESCRIPTION) == ["e+1"]


def test_without_includefield_nothing_is_added(ct: InstanceRecord) -> None:
    base = instance_result(ct, base_url=BASE)
    assert apply_includefield(_query("instance"), base, ct.metadata) == base


def test_combine_merges_levels_with_the_more_specific_retrieve_url(ct: InstanceRecord) -> None:
    resource = _resource(ct.study_uid, series=[{"uid": ct.series_uid, "modality": {"code": "CT"},
                                                "numberOfInstances": 1}])
    study = study_result(resource, _study_dicom(ct.metadata), base_url=BASE)
    series = series_result(resource, resource["series"][0], base_url=BASE)
    instance = instance_result(ct, base_url=BASE)
    merged = combine(study, series, instance)
    assert merged[RETRIEVE_URL] == instance[RETRIEVE_URL]
    assert merged[PATIENT_ID] == study[PATIENT_ID]
    assert merged[MODALITY] == series[MODALITY]
    assert list(merged) == sorted(merged)
    query = _query("instance", PatientName="compressed*", Modality="CT", ModalitiesInStudy="CT",
                   StudyDate="20040101-20041231", SOPInstanceUID=ct.sop_uid, InstanceNumber="1")
    assert matches(query, merged)


# --- metadata ---------------------------------------------------------------------------------------


def test_metadata_fills_empty_bulk_data_uris_with_the_instance_url(ct: InstanceRecord) -> None:
    url = instance_url(BASE, ct.study_uid, ct.series_uid, ct.sop_uid)
    result = metadata(ct, base_url=BASE)
    assert result["00431029"] == {"vr": "OB", "BulkDataURI": url}
    assert "InlineBinary" in result["00431028"]  # small binary values stay inline
    assert not _empty_bulk_uris(result)


def test_metadata_fills_bulk_data_uris_inside_sequences(ct: InstanceRecord) -> None:
    header = dict(ct.metadata)
    header["00400275"] = {"vr": "SQ", "Value": [{"00420011": {"vr": "OB", "BulkDataURI": ""}}]}
    result = metadata(dataclasses.replace(ct, metadata=header), base_url=BASE)
    url = instance_url(BASE, ct.study_uid, ct.series_uid, ct.sop_uid)
    assert result["00400275"]["Value"][0]["00420011"] == {"vr": "OB", "BulkDataURI": url}


def test_metadata_keeps_existing_bulk_data_uris(ct: InstanceRecord) -> None:
    header = dict(ct.metadata, **{"00431029": {"vr": "OB", "BulkDataURI": "https://elsewhere/bulk/1"}})
    result = metadata(dataclasses.replace(ct, metadata=header), base_url=BASE)
    assert result["00431029"]["BulkDataURI"] == "https://elsewhere/bulk/1"


def test_metadata_has_no_header_without_pixel_data_inline(ct: InstanceRecord) -> None:
    assert PIXEL_DATA not in metadata(ct, base_url=BASE)


def test_metadata_never_carries_pixel_data_inline(ct: InstanceRecord) -> None:
    header = dict(ct.metadata, **{PIXEL_DATA: {"vr": "OW", "InlineBinary": "AAAAAA=="}})
    result = metadata(dataclasses.replace(ct, metadata=header), base_url=BASE)
    assert result[PIXEL_DATA] == {"vr": "OW", "BulkDataURI": instance_url(BASE, ct.study_uid, ct.series_uid,
                                                                            ct.sop_uid)}


def test_metadata_guarantees_the_uids(ct: InstanceRecord) -> None:
    header = {tag: element for tag, element in ct.metadata.items()
              if tag not in {STUDY_INSTANCE, SERIES_INSTANCE, SOP_INSTANCE, SOP_CLASS}}
    result = metadata(dataclasses.replace(ct, metadata=header), base_url=BASE)
    assert _values(result, STUDY_INSTANCE) == [ct.study_uid]
    assert _values(result, SERIES_INSTANCE) == [ct.series_uid]
    assert _values(result, SOP_INSTANCE) == [ct.sop_uid]
    assert _values(result, SOP_CLASS) == [ct.sop_class_uid]
    assert _values(result, AVAILABLE_TS) == [ct.transfer_syntax_uid]
    assert list(result) == sorted(result)


def test_metadata_is_the_header_otherwise_and_leaves_the_record_alone(ct: InstanceRecord) -> None:
    before = copy.deepcopy(ct.metadata)
    result = metadata(ct, base_url=BASE)
    assert ct.metadata == before
    changed = {tag for tag in before if result.get(tag) != before[tag]}
    assert changed == {"00431029"}
    assert set(result) - set(before) == {AVAILABLE_TS}


def _empty_bulk_uris(attributes: dict[str, Any]) -> list[str]:
    found = []
    for tag, element in attributes.items():
        if element.get("BulkDataURI") == "":
            found.append(tag)
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            found += _empty_bulk_uris(item)
    return found


# --- pydicom reads every kind of result -------------------------------------------------------------


def _every_result(record: InstanceRecord) -> dict[str, dict[str, Any]]:
    resource = _resource(record.study_uid, series=[{"uid": record.series_uid, "number": 1, "numberOfInstances": 1,
                                                    "modality": {"system": DCM, "code": "CT"}}])
    study = study_result(resource, _study_dicom(record.metadata), base_url=BASE)
    series = series_result(resource, resource["series"][0], base_url=BASE)
    instance = instance_result(record, base_url=BASE)
    return {
        "study": study, "series": series, "instance": instance,
        "empty study": study_result(_resource(record.study_uid, started=None), {}, base_url=BASE),
        "combined": combine(study, series, instance),
        "includefield": apply_includefield(_query("instance", includefield="all"), instance, record.metadata),
        "metadata": metadata(record, base_url=BASE),
    }


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm"])
def test_pydicom_reads_every_result(name: str) -> None:
    record = _record(name)
    url = instance_url(BASE, record.study_uid, record.series_uid, record.sop_uid)
    asked: list[str] = []

    def bulk(tag: str, vr: str, uri: str) -> bytes:
        asked.append(uri)
        return b""

    for kind, result in _every_result(record).items():
        text = json.dumps(result)
        ds = pydicom.Dataset.from_json(text, bulk_data_uri_handler=bulk)
        assert ds.StudyInstanceUID == record.study_uid, kind
        assert set(asked) <= {url}, kind
        if kind != "metadata":
            # QIDO results use pydicom's own JSON conventions exactly: they come back unchanged.
            assert ds.to_json_dict() == result, kind
    assert all(uri == url for uri in asked)


def test_study_result_reads_back_with_the_right_python_values(ct: InstanceRecord) -> None:
    ds = pydicom.Dataset.from_json(_every_result(ct)["study"])
    assert ds.NumberOfStudyRelatedSeries == 1
    assert ds.NumberOfStudyRelatedInstances == 2
    assert str(ds.PatientName) == "CompressedSamples^CT1"
    assert ds.ModalitiesInStudy == "CT"
    assert ds.RetrieveURL == f"{BASE}/studies/{ct.study_uid}"
    assert ds.ReferringPhysicianName == ""
