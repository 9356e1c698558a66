"""A chest X-ray arrives as DICOM over a presigned upload and is read back with a DICOMweb client.

Everything runs through the local stack as a gateway and a viewer would use it: the presigned PUT goes
to the embedded S3, S3 notifies the ingest queue, the queue dispatcher runs dicom_ingest, the bus
delivers DicomInstanceIngested to the orders function, and ``dicomweb-client`` (a published DICOMweb
library) searches and reads the study through the front door with a Cognito token.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

pytestmark = pytest.mark.e2e
SNOMED = "http://snomed.info/sct"
STATUS = "https://expediente.mx/fhir/StructureDefinition/estado-orden"
WAIT_S = 30


def _xray(physician: Any, patient: str) -> dict[str, Any]:
    encounter = physician.post("/fhir/Encounter", json={
        "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{patient}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}).json()
    reply = physician.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "R06.0"}]}],
        "category": [{"coding": [{"system": SNOMED, "code": "363679005"}]}],
        "code": {"text": "Radiografía de tórax PA"}, "bodySite": [{"text": "Tórax"}],
        "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}]}]})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _dicom(patient: str, accession: str, study: str) -> bytes:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID = patient, accession, study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _until(check: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_presigned_upload_ingest_and_dicomweb_client(api, local_stack):
    tenant = api.tenant(0)
    patient = tenant.patient_ids[0]
    physician, radiology = api.as_user("physician"), api.as_user("radiology")
    order = _xray(physician, patient)
    accession = next(i["value"] for i in order["identifier"] if i["system"] == "urn:expediente:accession")
    study = generate_uid()
    data = _dicom(patient, accession, study)

    issued = radiology.post(f"/fhir/ServiceRequest/{order['id']}/$dicom-upload", json={
        "resourceType": "Parameters", "parameter": [{"name": "size", "valueInteger": len(data)}]})
    assert issued.status_code == 200, issued.text
    parts = {p["name"]: p for p in issued.json()["parameter"][0]["part"]}
    url = parts["url"]["valueUrl"]
    assert url.startswith("http://127.0.0.1:") and "X-Amz-SignedHeaders=content-length%3Bcontent-type" in url
    put = requests.put(url, data=data, headers={"Content-Type": "application/dicom"}, timeout=10)
    assert put.status_code == 200, put.text

    def started() -> bool:
        current = physician.get(f"/fhir/ServiceRequest/{order['id']}").json()
        return next(e["valueCode"] for e in current["extension"] if e["url"] == STATUS) == "in-process"

    assert _until(started), "the order did not start with its first image"

    session = requests.Session()
    session.headers["Authorization"] = physician.headers["Authorization"]
    client = DICOMwebClient(url=f"{api.url}/dicomweb", session=session)
    studies = client.search_for_studies(search_filters={"AccessionNumber": accession})
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    series = client.search_for_series(study_instance_uid=study)
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series_uid)
    sop = instances[0]["00080018"]["Value"][0]
    metadata = client.retrieve_study_metadata(study)
    assert pydicom.Dataset.from_json(metadata[0]).PatientID == patient
    assert client.retrieve_instance_metadata(study, series_uid, sop)["00080018"]["Value"] == [sop]

    retrieved = session.get(f"{api.url}/dicomweb/studies/{study}/series/{series_uid}/instances/{sop}", timeout=10)
    assert retrieved.status_code == 200 and retrieved.content == data
    assert retrieved.history[0].status_code == 303
    thumbnail = session.get(f"{api.url}/dicomweb/studies/{study}/series/{series_uid}/thumbnail", timeout=10)
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\x89PNG")

    outsider = requests.Session()
    outsider.headers["Authorization"] = api.as_user("physician", tenant_index=1).headers["Authorization"]
    assert DICOMwebClient(url=f"{api.url}/dicomweb", session=outsider).search_for_studies() == []


def test_a_stray_upload_is_quarantined(api, local_stack):
    aws = local_stack.aws
    s3 = aws.client("s3")
    key = f"{api.tenant(0).id}/gateway/{generate_uid()}.dcm"
    s3.put_object(Bucket=aws.buckets["ingest"], Key=key, Body=b"not a DICOM file" * 20)

    def quarantined() -> list[dict[str, Any]]:
        admin = api.as_user("admin")
        items = admin.get("/admin/dicom-quarantine").json()["items"]
        return [i for i in items if i["reason"] == "not-dicom"]

    assert _until(quarantined), "the stray upload was not quarantined"
    assert s3.list_objects_v2(Bucket=aws.buckets["ingest"], Prefix=key).get("KeyCount", 0) == 0
