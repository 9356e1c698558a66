"""Deliveries that fail half way: only the failed records come back, and redelivery completes them once."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from botocore.exceptions import ClientError

from tests.integration.imaging.conftest import Imaging, dicom_bytes


def _throttled(*_: Any, **__: Any) -> Any:
    raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "CopyObject")


def test_a_transient_failure_fails_only_its_study_and_redelivery_completes_it(
        imaging: Imaging, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.dicom_ingest import objects

    order = imaging.order()
    good = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    unlucky = dicom_bytes("MR_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    stray = b"not dicom" * 50
    notifications = [imaging.upload(good), imaging.upload(unlucky), imaging.upload(stray)]
    unlucky_study = pydicom.dcmread(pydicom.filebase.DicomBytesIO(unlucky)).StudyInstanceUID
    real_copy = objects.copy

    def flaky_copy(source: Any, bucket: str, key: str, **kw: Any) -> Any:
        if unlucky_study in key:
            _throttled()
        return real_copy(source, bucket, key, **kw)

    monkeypatch.setattr(objects, "copy", flaky_copy)
    from functions.dicom_ingest.handler import lambda_handler
    from tests.integration.imaging.conftest import sqs_record
    from tests.support.aws import LambdaContext

    records = [sqs_record(n) for n in notifications]
    answer = lambda_handler({"Records": records}, LambdaContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": records[1]["messageId"]}]}
    assert len(imaging.keys("imaging")) == 1 and len(imaging.keys("quarantine")) == 1
    assert len(imaging.keys("ingest")) == 1, "the failed upload waits for its redelivery"

    monkeypatch.setattr(objects, "copy", real_copy)
    assert lambda_handler({"Records": [records[1]]}, LambdaContext()) == {"batchItemFailures": []}
    assert imaging.keys("ingest") == [] and len(imaging.keys("imaging")) == 2
    study = imaging.physician.results("GET", f"/fhir/ImagingStudy/{unlucky_study}").body
    assert study["meta"]["versionId"] == "1" and study["numberOfInstances"] == 1


def test_an_announcement_that_cannot_be_published_is_made_on_redelivery(
        imaging: Imaging, monkeypatch: pytest.MonkeyPatch) -> None:
    from expediente import events

    order = imaging.order()
    data = dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(order))
    notification = imaging.upload(data)
    monkeypatch.setattr(events, "publish", lambda *_: False)
    answer = imaging.deliver(notification)
    assert len(answer["batchItemFailures"]) == 1
    assert len(imaging.keys("ingest")) == 1 and len(imaging.keys("imaging")) == 1, "stored, not yet announced"

    monkeypatch.undo()
    assert imaging.deliver(notification) == {"batchItemFailures": []}
    announced = [e for e in imaging.deliver_events_to_orders() if e["detail-type"] == "DicomInstanceIngested"]
    assert len(announced) == 1
    assert imaging.keys("ingest") == []
    sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    assert imaging.physician.results("GET", f"/fhir/ImagingStudy/{sop.StudyInstanceUID}").body["meta"][
        "versionId"] == "1"


def test_a_malformed_notification_is_dropped_without_failing_the_batch(imaging: Imaging) -> None:
    from functions.dicom_ingest.handler import lambda_handler
    from tests.support.aws import LambdaContext

    event = {"Records": [{"messageId": "bad", "body": "{not json", "eventSource": "aws:sqs"},
                         {"messageId": "test", "body": '{"Event": "s3:TestEvent"}', "eventSource": "aws:sqs"}]}
    assert lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}


def test_presigned_upload_rules(imaging: Imaging) -> None:
    order = imaging.order()

    def ask(*sizes: Any, by: Any = None, order_id: str | None = None) -> Any:
        body = {"resourceType": "Parameters", "parameter": [{"name": "size", "valueInteger": s} for s in sizes]}
        return (by or imaging.radiology).orders("POST", f"/fhir/ServiceRequest/{order_id or order['id']}/$dicom-upload",
                                                body)

    ok = ask(1024, 2048)
    assert ok.status == 200, ok.body
    uploads = [{p["name"]: p for p in u["part"]} for u in ok.body["parameter"]]
    assert [u["size"]["valueInteger"] for u in uploads] == [1024, 2048]
    url = uploads[0]["url"]["valueUrl"]
    assert f"/{imaging.tenant}/orders/{imaging.accession(order)}/" in url
    assert "X-Amz-SignedHeaders=content-length%3Bcontent-type" in url and "X-Amz-Expires=900" in url
    for bad in ((), (0,), (2**31,), ("12",), (True,)):
        assert ask(*bad).status == 400, bad
    assert ask(*([1] * 101)).status == 400
    assert ask(10, by=imaging.chain.staff("nurse")).status == 403
    from tests.integration.orders.conftest import lab_order

    lab = imaging.physician.orders("POST", "/fhir/ServiceRequest", lab_order(imaging.patient_id, imaging.encounter_id))
    assert ask(10, order_id=lab.body["id"]).status == 422
    cancel = {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "cancelled"},
                                                          {"name": "reason", "valueString": "duplicada"}]}
    imaging.physician.orders("POST", f"/fhir/ServiceRequest/{order['id']}/$status", cancel,
                             headers={"If-Match": 'W/"1"'})
    assert ask(10).status == 409
