"""DICOM ingest from the ingest bucket: archived and attached to its order, or quarantined with a reason."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.integration.imaging.conftest import Imaging, dicom_bytes
from tests.support.aws import REGION, bucket_name


def _study(imaging: Imaging, study_uid: str) -> dict[str, Any]:
    reply = imaging.physician.results("GET", f"/fhir/ImagingStudy/{study_uid}")
    assert reply.status == 200, reply.body
    return dict(reply.body)


def _head(bucket_id: str, key: str) -> dict[str, Any]:
    return dict(boto3.client("s3", region_name=REGION).head_object(Bucket=bucket_name(bucket_id), Key=key))


def test_an_instance_is_archived_attached_to_its_order_and_announced(imaging: Imaging) -> None:
    order = imaging.order()
    accession = imaging.accession(order)
    data = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=accession)
    notification = imaging.upload(data)
    source_key = notification["Records"][0]["s3"]["object"]["key"]

    assert imaging.deliver(notification) == {"batchItemFailures": []}

    import pydicom

    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    archived = f"{imaging.tenant}/{study}/{series}/{sop}.dcm"
    assert imaging.keys("imaging", imaging.tenant) == [archived]
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket_name("imaging"), Key=archived)["Body"]
    assert body.read() == data
    assert imaging.keys("ingest", imaging.tenant) == [], f"{source_key} is still in the ingest bucket"

    resource = _study(imaging, study)
    assert resource["subject"] == {"reference": f"Patient/{imaging.patient_id}"}
    assert resource["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert resource["numberOfSeries"] == 1 and resource["numberOfInstances"] == 1
    assert resource["modality"][0]["code"] == "CT"
    assert resource["series"][0]["instance"] == [
        {"uid": sop, "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{ds.SOPClassUID}"},
         "number": int(ds.InstanceNumber)}]
    assert {"system": "urn:expediente:accession", "value": accession}.items() <= resource["identifier"][1].items()
    from expediente.fhir import validate

    validate("ImagingStudy", resource)

    published = imaging.deliver_events_to_orders()
    ingested = [e for e in published if e["detail-type"] == "DicomInstanceIngested"]
    assert [e["detail"]["sop_instance_uid"] for e in ingested] == [sop]
    assert ingested[0]["detail"]["order_id"] == order["id"]
    assert "PatientID" not in str(ingested[0]) and imaging.patient_id == ingested[0]["detail"]["patient_id"]
    from functions.orders.logic import order_status

    started = imaging.physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}")
    assert order_status(started.body) == "in-process" and started.body["meta"]["versionId"] == "2"
    imaging.deliver_events_to_orders()  # nothing left to deliver; a redelivered event would change nothing
    assert imaging.physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}").body["meta"]["versionId"] == "2"


def test_redelivery_and_reupload_change_nothing(imaging: Imaging) -> None:
    order = imaging.order()
    data = dicom_bytes("MR_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    notification = imaging.upload(data)
    imaging.deliver(notification)
    import pydicom

    study = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).StudyInstanceUID
    first = _study(imaging, study)

    assert imaging.deliver(notification) == {"batchItemFailures": []}  # the same notification again
    imaging.ingest(data)  # the same instance uploaded again under another key

    again = _study(imaging, study)
    assert again["meta"]["versionId"] == first["meta"]["versionId"] == "1"
    assert again["numberOfInstances"] == 1
    assert imaging.keys("ingest", imaging.tenant) == []
    assert len(imaging.keys("imaging", imaging.tenant)) == 1
    assert imaging.keys("quarantine") == []


def test_instances_of_one_study_in_one_batch_make_one_version(imaging: Imaging) -> None:
    order = imaging.order()
    import pydicom.uid

    study, series, other = (pydicom.uid.generate_uid() for _ in range(3))
    files = [dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order),
                         study_uid=study, series_uid=series if i < 3 else other) for i in range(5)]
    assert imaging.deliver(*[imaging.upload(f) for f in files]) == {"batchItemFailures": []}
    resource = _study(imaging, study)
    assert resource["meta"]["versionId"] == "1"
    assert resource["numberOfSeries"] == 2 and resource["numberOfInstances"] == 5
    assert sorted(s["numberOfInstances"] for s in resource["series"]) == [2, 3]
    assert sum(len(s["instance"]) for s in resource["series"]) == 5

    more = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order),
                       study_uid=study, series_uid=series)
    imaging.ingest(more)
    later = _study(imaging, study)
    assert later["meta"]["versionId"] == "2" and later["numberOfInstances"] == 6
    first_version = imaging.physician.results("GET", f"/fhir/ImagingStudy/{study}/_history/1").body
    assert sum(len(s["instance"]) for s in first_version["series"]) == 5


@pytest.mark.parametrize("how", ["curp", "folio"])
def test_patient_id_may_be_the_curp_or_the_record_number(imaging: Imaging, how: str) -> None:
    patient = imaging.physician.patients("GET", f"/fhir/Patient/{imaging.patient_id}").body
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    from expediente.identifiers import CURP_SYSTEM, FOLIO_SYSTEM

    value = systems[CURP_SYSTEM if how == "curp" else FOLIO_SYSTEM]
    order = imaging.order()
    data = dicom_bytes("CT_small.dcm", patient_id=value.lower() if how == "curp" else value,
                       accession=imaging.accession(order))
    imaging.ingest(data)
    assert len(imaging.keys("imaging", imaging.tenant)) == 1
    assert imaging.keys("quarantine") == []
