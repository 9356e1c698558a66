"""Every malformed or mismatched upload is quarantined with its reason; nothing is attached or lost."""

from __future__ import annotations

from typing import Any

import boto3
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.integration.imaging.conftest import Imaging, dicom_bytes
from tests.integration.notes.conftest import Staff
from tests.support.aws import REGION, bucket_name


def _quarantined(imaging: Imaging, reason: str, *, tenant: str | None = None) -> dict[str, Any]:
    """The single quarantined object: its bucket metadata, the record the admin sees, the event."""
    owner = tenant or imaging.tenant
    keys = imaging.keys("quarantine", owner)
    assert len(keys) == 1, keys
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=bucket_name("quarantine"), Key=keys[0])
    assert head["Metadata"]["reason"] == reason
    events = [e for e in imaging.chain.world.world.published() if e["detail-type"] == "DicomInstanceQuarantined"]
    assert [e["detail"]["reason"] for e in events] == [reason]
    assert events[0]["detail"]["tenant_id"] == owner
    assert imaging.keys("ingest") == [], "the upload is no longer in the ingest bucket"
    assert imaging.keys("imaging") == [], "nothing was attached"
    return {"key": keys[0], "quarantine_id": head["Metadata"]["quarantine-id"]}


def _listed(imaging: Imaging) -> list[dict[str, Any]]:
    reply = imaging.quarantine_call("GET", "/admin/dicom-quarantine")
    assert reply.status == 200, reply.body
    return list(reply.body["items"])


def _ct(imaging: Imaging, **kw: Any) -> bytes:
    order = kw.pop("order", None) or imaging.order()
    values = {"patient_id": imaging.patient_id, "accession": imaging.accession(order), **kw}
    return dicom_bytes("CT_small.dcm", **values)


def test_not_dicom(imaging: Imaging) -> None:
    imaging.ingest(b"PK\x03\x04 this is a zip file, not an image" * 10)
    found = _quarantined(imaging, "not-dicom")
    [item] = _listed(imaging)
    assert item["reason"] == "not-dicom" and item["status"] == "quarantined" and item["id"] == found["quarantine_id"]
    assert "source_key" not in item and "quarantine_key" not in item


def test_truncated(imaging: Imaging) -> None:
    data = _ct(imaging)
    imaging.ingest(data[:2000])
    _quarantined(imaging, "truncated")


def test_missing_uid(imaging: Imaging) -> None:
    imaging.ingest(_ct(imaging, edit=lambda ds: delattr(ds, "SeriesInstanceUID")))
    _quarantined(imaging, "missing-uid")


@pytest.mark.parametrize(("reason", "accession"), [("missing-accession", ""), ("no-matching-order", "A000000NOSUCH")])
def test_accession_that_names_no_order(imaging: Imaging, reason: str, accession: str) -> None:
    imaging.ingest(dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=accession))
    _quarantined(imaging, reason)


def test_laboratory_order_number(imaging: Imaging) -> None:
    from tests.integration.orders.conftest import lab_order

    lab = imaging.physician.orders("POST", "/fhir/ServiceRequest", lab_order(imaging.patient_id, imaging.encounter_id))
    placer = next(i["value"] for i in lab.body["identifier"] if i["system"] == "urn:expediente:placer")
    imaging.ingest(dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=placer))
    _quarantined(imaging, "not-an-imaging-order")


def test_cancelled_order(imaging: Imaging) -> None:
    order = imaging.order()
    reply = imaging.physician.orders("POST", f"/fhir/ServiceRequest/{order['id']}/$status",
                                     {"resourceType": "Parameters", "parameter": [
                                         {"name": "status", "valueCode": "cancelled"},
                                         {"name": "reason", "valueString": "duplicada"}]},
                                     headers={"If-Match": 'W/"1"'})
    assert reply.status == 200, reply.body
    imaging.ingest(_ct(imaging, order=order))
    _quarantined(imaging, "order-closed")


def test_patient_mismatch_never_attaches_to_either_patient(imaging: Imaging, reception: Staff) -> None:
    other = imaging.chain.register_patient(reception)
    imaging.ingest(_ct(imaging, patient_id=other))
    _quarantined(imaging, "patient-mismatch")
    for patient in (imaging.patient_id, other):
        found = imaging.physician.results("GET", "/fhir/ImagingStudy", query={"patient": patient})
        assert found.body["total"] == 0


def test_missing_patient_id(imaging: Imaging) -> None:
    imaging.ingest(_ct(imaging, patient_id=""))
    _quarantined(imaging, "missing-patient-id")


def test_unknown_tenant_prefix(imaging: Imaging) -> None:
    imaging.ingest(_ct(imaging), key="no-such-tenant/gateway/x.dcm")
    _quarantined(imaging, "unknown-tenant", tenant="unassigned")
    assert _listed(imaging) == []


def test_another_tenants_order_is_not_found(imaging: Imaging, other_chain: Any) -> None:
    """An upload under tenant B's prefix naming tenant A's accession number finds no order."""
    data = _ct(imaging)
    imaging.ingest(data, key=f"{other_chain.tenant.id}/gateway/x.dcm")
    _quarantined(imaging, "no-matching-order", tenant=other_chain.tenant.id)


def test_presigned_upload_for_another_order(imaging: Imaging) -> None:
    first, second = imaging.order(), imaging.order()
    data = _ct(imaging, order=second)
    imaging.ingest(data, key=f"{imaging.tenant}/orders/{imaging.accession(first)}/upload.dcm")
    _quarantined(imaging, "accession-mismatch")


def test_sop_instance_in_another_study(imaging: Imaging) -> None:
    sop = generate_uid()
    imaging.ingest(_ct(imaging, sop_uid=sop))
    imaging.ingest(_ct(imaging, sop_uid=sop))  # same SOP Instance UID, another study
    keys = imaging.keys("quarantine", imaging.tenant)
    assert len(keys) == 1 and len(imaging.keys("imaging")) == 1
    assert [i["reason"] for i in _listed(imaging)] == ["sop-conflict"]


def test_study_of_another_patient(imaging: Imaging, reception: Staff) -> None:
    from tests.integration.notes.conftest import open_visit

    other = imaging.chain.register_patient(reception)
    other_order = imaging.order(other, open_visit(imaging.physician, other).encounter_id)
    study = generate_uid()
    imaging.ingest(_ct(imaging, study_uid=study))
    imaging.ingest(_ct(imaging, order=other_order, patient_id=other, study_uid=study))
    assert [i["reason"] for i in _listed(imaging)] == ["study-conflict"]
    assert imaging.physician.results("GET", f"/fhir/ImagingStudy/{study}").body["numberOfInstances"] == 1


def test_release_after_review(imaging: Imaging, reception: Staff) -> None:
    """A technologist typed the wrong PatientID: the admin confirms the patient and releases the image."""
    order = imaging.order()
    data = _ct(imaging, order=order, patient_id="WRONG-ID-123")
    imaging.ingest(data)
    qid = _quarantined(imaging, "patient-mismatch")["quarantine_id"]
    release = f"/admin/dicom-quarantine/{qid}/$release"

    def params(**values: Any) -> dict[str, Any]:
        parts = [{"name": k, "valueBoolean" if isinstance(v, bool) else "valueString": v} for k, v in values.items()]
        return {"resourceType": "Parameters", "parameter": parts}

    denied = imaging.quarantine_call("POST", release, params(reason="x", confirmPatient=True), by=imaging.radiology)
    assert denied.status == 403
    assert imaging.quarantine_call("POST", release, params(confirmPatient=True)).status == 400
    still = imaging.quarantine_call("POST", release, params(reason="revisado"))
    assert still.status == 422 and "patient-mismatch" in still.issue

    done = imaging.quarantine_call("POST", release, params(
        reason="Paciente confirmado con la técnica radióloga", confirmPatient=True))
    assert done.status == 200, done.body
    assert done.body["status"] == "released" and done.body["patient_confirmed"] is True
    study = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).StudyInstanceUID
    resource = imaging.physician.results("GET", f"/fhir/ImagingStudy/{study}").body
    assert resource["subject"]["reference"] == f"Patient/{imaging.patient_id}"
    assert imaging.keys("quarantine", imaging.tenant) == [] and len(imaging.keys("imaging")) == 1
    assert imaging.quarantine_call("POST", release, params(reason="otra vez", confirmPatient=True)).status == 409
    assert [i["status"] for i in _listed(imaging)] == ["released"]


def test_release_to_the_right_order(imaging: Imaging) -> None:
    order = imaging.order()
    imaging.ingest(dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession="A000000TYPO"))
    qid = _quarantined(imaging, "no-matching-order")["quarantine_id"]
    reply = imaging.quarantine_call("POST", f"/admin/dicom-quarantine/{qid}/$release", {
        "resourceType": "Parameters", "parameter": [{"name": "accession", "valueString": imaging.accession(order)},
                                                    {"name": "reason", "valueString": "número mal capturado"}]})
    assert reply.status == 200, reply.body
    found = imaging.physician.results("GET", "/fhir/ImagingStudy", query={"basedon": f"ServiceRequest/{order['id']}"})
    assert found.body["total"] == 1


def test_quarantine_is_per_tenant(imaging: Imaging, other_chain: Any) -> None:
    imaging.ingest(b"not dicom" * 100)
    qid = _quarantined(imaging, "not-dicom")["quarantine_id"]
    from tests.integration.notes.conftest import call

    other_admin = other_chain.tenant.admin
    assert call(other_admin, "dicom_ingest", "GET", "/admin/dicom-quarantine").body["items"] == []
    assert call(other_admin, "dicom_ingest", "GET", f"/admin/dicom-quarantine/{qid}").status == 404
    assert imaging.quarantine_call("GET", "/admin/dicom-quarantine", by=imaging.physician).status == 403
