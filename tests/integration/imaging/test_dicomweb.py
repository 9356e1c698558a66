"""Every valid Part 10 file shipped inside pydicom is ingested against a matching order and served back
over DICOMweb; every other one is quarantined with its reason. Nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from functions.dicom_ingest.header import Rejected, read_header
from tests.integration.imaging.conftest import Imaging, dicom_bytes
from tests.integration.notes.conftest import Staff

# Listed from pydicom's data directory: get_testdata_files() would also try to download the others.
TEST_FILES = sorted(p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*") if p.is_file())


def _header_of(data: bytes) -> Any:
    return read_header(lambda start, end: data[start:end], size=len(data))


def _json(reply: Any) -> Any:
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/dicom+json"
    return reply.body if not isinstance(reply.body, str) else json.loads(reply.body)


def _value(attrs: dict[str, Any], tag: str) -> Any:
    return (attrs.get(tag, {}).get("Value") or [None])[0]


def test_every_pydicom_file_is_ingested_or_quarantined_and_served_back(imaging: Imaging) -> None:
    assert len(TEST_FILES) > 60
    order = imaging.order()
    accession = imaging.accession(order)
    ingested: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    for path in TEST_FILES:
        original = path.read_bytes()
        try:
            _header_of(original)
        except Rejected as exc:  # not Part 10, or not an instance (DICOMDIR): quarantined as it is
            refused[str(path)] = exc.reason
            imaging.ingest(original)
            continue
        try:
            data = dicom_bytes(original, patient_id=imaging.patient_id, accession=accession)
        except (TypeError, ValueError, OSError):
            # pydicom cannot write this one back: it arrives as it is (another patient, no such order),
            # is quarantined, and the administrator attaches it to the order after review.
            data = original
            imaging.ingest(data)
            _release(imaging, accession, _header_of(data).sop_instance_uid)
        else:
            imaging.ingest(data)
        ingested[str(path)] = data
    assert len(ingested) >= 140, sorted(refused.items())

    listing = imaging.quarantine_call("GET", "/admin/dicom-quarantine", query={"_count": "100"}).body["items"]
    assert sorted(i["reason"] for i in listing if i["status"] == "quarantined") == sorted(refused.values())
    assert imaging.keys("ingest") == [], "every upload was archived or quarantined"

    reader = imaging.physician
    for name, data in ingested.items():
        header = _header_of(data)
        studies = _json(reader.results("GET", "/dicomweb/studies", query={"StudyInstanceUID": header.study_uid}))
        assert [_value(s, "0020000D") for s in studies] == [header.study_uid], name
        assert _value(studies[0], "00080050") == accession
        series = _json(reader.results("GET", f"/dicomweb/studies/{header.study_uid}/series"))
        assert [_value(s, "0020000E") for s in series] == [header.series_uid], name
        base = f"/dicomweb/studies/{header.study_uid}/series/{header.series_uid}"
        instances = _json(reader.results("GET", f"{base}/instances"))
        assert [_value(i, "00080018") for i in instances] == [header.sop_instance_uid], name
        [meta] = _json(reader.results("GET", f"{base}/instances/{header.sop_instance_uid}/metadata"))
        assert _value(meta, "00080016") == header.sop_class_uid and "7FE00010" not in {
            t for t, v in meta.items() if "InlineBinary" in v}
        pydicom.Dataset.from_json(meta)
        retrieve = reader.results("GET", f"{base}/instances/{header.sop_instance_uid}")
        assert retrieve.status == 303, name
        assert requests.get(retrieve.headers["Location"], timeout=10).content == data, name


def _release(imaging: Imaging, accession: str, sop_uid: str) -> None:
    waiting = imaging.quarantine_call("GET", "/admin/dicom-quarantine", query={"status": "quarantined"})
    [item] = [i for i in waiting.body["items"] if i.get("sop") == sop_uid]
    reply = imaging.quarantine_call("POST", f"/admin/dicom-quarantine/{item['id']}/$release", {
        "resourceType": "Parameters", "parameter": [
            {"name": "accession", "valueString": accession}, {"name": "confirmPatient", "valueBoolean": True},
            {"name": "reason", "valueString": "archivo de prueba revisado"}]})
    assert reply.status == 200, reply.body


def test_searches_by_accession_patient_and_date_and_metadata_of_a_series(imaging: Imaging) -> None:
    order = imaging.order()
    accession = imaging.accession(order)
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    for _ in range(3):
        imaging.ingest(dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=accession,
                                   study_uid=study, series_uid=series))
    reader = imaging.physician
    for query in ({"AccessionNumber": accession}, {"PatientID": imaging.patient_id}, {},
                  {"StudyDate": "20040101-20041231", "ModalitiesInStudy": "CT"}):
        found = _json(reader.results("GET", "/dicomweb/studies", query=query))
        assert [_value(s, "0020000D") for s in found] == [study], query
        assert _value(found[0], "00201208") == 3  # NumberOfStudyRelatedInstances
    assert _json(reader.results("GET", "/dicomweb/studies", query={"ModalitiesInStudy": "MR"})) == []
    assert len(_json(reader.results("GET", f"/dicomweb/studies/{study}/series/{series}/metadata"))) == 3
    assert len(_json(reader.results("GET", f"/dicomweb/studies/{study}/metadata"))) == 3
    assert len(_json(reader.results("GET", f"/dicomweb/studies/{study}/instances", query={"limit": "2"}))) == 2
    bad = reader.results("GET", "/dicomweb/studies", query={"NoSuchAttribute": "x"})
    assert bad.status == 400 and "NoSuchAttribute" in bad.issue

    fhir = reader.results("GET", "/fhir/ImagingStudy", query={"identifier": f"urn:expediente:accession|{accession}"})
    assert [e["resource"]["id"] for e in fhir.body["entry"]] == [study]
    by_modality = reader.results("GET", "/fhir/ImagingStudy", query={"patient": imaging.patient_id,
                                                                     "modality": "CT", "started": "ge2004-01-01"})
    assert by_modality.body["total"] == 1
    assert reader.results("GET", "/fhir/ImagingStudy", query={"patient": imaging.patient_id,
                                                              "modality": "MR"}).body["total"] == 0


def test_thumbnail_or_a_clear_no_preview(imaging: Imaging) -> None:
    order = imaging.order()
    ct = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    sr = dicom_bytes("test-SR.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    imaging.ingest(ct)
    imaging.ingest(sr)
    for data, expected in ((ct, 200), (sr, 404)):
        header = _header_of(data)
        reply = imaging.physician.results(
            "GET", f"/dicomweb/studies/{header.study_uid}/series/{header.series_uid}/thumbnail")
        assert reply.status == expected, reply.body
        if expected == 200:
            assert reply.headers["Content-Type"] == "image/png"
        else:
            assert reply.headers["X-Preview"] == "no-pixel-data" and "No preview" in reply.issue


def test_dicomweb_is_tenant_scoped_and_role_checked(imaging: Imaging, other_chain: Any, reception: Staff) -> None:
    data = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(imaging.order()))
    imaging.ingest(data)
    header = _header_of(data)
    outsider = other_chain.staff("physician")
    assert _json(outsider.results("GET", "/dicomweb/studies")) == []
    base = f"/dicomweb/studies/{header.study_uid}"
    for path in (f"{base}/series", f"{base}/metadata",
                 f"{base}/series/{header.series_uid}/instances/{header.sop_instance_uid}"):
        assert outsider.results("GET", path).status == 404, path
        assert outsider.results("GET", f"/fhir/ImagingStudy/{header.study_uid}").status == 404
    assert reception.results("GET", "/dicomweb/studies").status == 403
    own = imaging.chain.patient_user(imaging.patient_id)
    assert own.results("GET", f"{base}/metadata").status == 200
    stranger = imaging.chain.patient_user(imaging.chain.register_patient(reception))
    assert stranger.results("GET", f"{base}/metadata").status == 404


@pytest.mark.parametrize("path", ["/dicomweb/studies/1.2.3/series", "/dicomweb/studies/not-a-uid/metadata"])
def test_unknown_study_is_not_found(imaging: Imaging, path: str) -> None:
    assert imaging.physician.results("GET", path).status == 404


def test_dicomweb_reads_are_in_the_patients_access_trail(imaging: Imaging) -> None:
    data = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(imaging.order()))
    imaging.ingest(data)
    header = _header_of(data)
    base = f"/dicomweb/studies/{header.study_uid}/series/{header.series_uid}"
    assert imaging.physician.results("GET", f"{base}/metadata").status == 200
    assert imaging.physician.results("GET", f"{base}/instances/{header.sop_instance_uid}").status == 303
    own = imaging.chain.patient_user(imaging.patient_id)
    trail = own.admin("GET", "/fhir/AuditEvent", query={"patient": imaging.patient_id})
    assert trail.status == 200, trail.body
    studies = [e["resource"] for e in trail.body["entry"]
               if {"reference": f"ImagingStudy/{header.study_uid}"} in [x.get("what") for x in
                                                                       e["resource"].get("entity", [])]]
    actions = sorted(r["subtype"][0]["code"] for r in studies)
    assert actions.count("read") >= 2 and "create" in actions, actions
