"""The asynchronous paths of the local stack: S3 ingest → SQS, and bus rules → queues and topics.

Topics are read through their local inbox queue (an SQS subscriber with raw delivery). The
``order_results`` queue is consumed by the queue dispatcher (the orders function), so its path is
proved in ``test_local_dispatch.py`` with a recording handler instead of by reading the queue.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

import pytest

from expediente.events import (
    SOURCE,
    CriticalResultDetected,
    CriticalResultEscalated,
    DomainEvent,
    PatientRegistered,
    ResultRecorded,
)

pytestmark = pytest.mark.e2e


def receive_all(sqs: Any, queue_url: str, *, wait_s: int = 2) -> list[dict[str, Any]]:
    """Every message now in the queue (deleted after reading), bodies parsed as JSON."""
    bodies: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        wait_s = 0


def put_on_bus(local_aws: Any, event: DomainEvent) -> None:
    answer = local_aws.client("events").put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": event.detail_type(),
                "Detail": event.model_dump_json(),
                "EventBusName": local_aws.event_bus_name,
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0


def test_upload_to_ingest_bucket_reaches_dicom_ingest(local_aws):
    """S3 → ingest queue → queue dispatcher → dicom_ingest: an upload under no registered tenant is quarantined."""
    s3 = local_aws.client("s3")
    key = f"e2e-tenant/uploads/{uuid.uuid4()}.dcm"
    s3.put_object(Bucket=local_aws.buckets["ingest"], Key=key, Body=b"DICM-not-really")

    deadline = time.monotonic() + 30
    while s3.list_objects_v2(Bucket=local_aws.buckets["ingest"], Prefix=key).get("KeyCount", 0):
        assert time.monotonic() < deadline, "the upload was not taken from the ingest bucket"
        time.sleep(0.5)
    quarantined = s3.list_objects_v2(Bucket=local_aws.buckets["quarantine"], Prefix="unassigned/")
    reasons = {s3.head_object(Bucket=local_aws.buckets["quarantine"], Key=o["Key"])["Metadata"]["reason"]
               for o in quarantined.get("Contents", [])}
    assert reasons == {"unknown-tenant"}


def test_upload_to_another_bucket_notifies_nobody(local_aws):
    sqs, s3 = local_aws.client("sqs"), local_aws.client("s3")
    key = f"e2e-tenant/{uuid.uuid4()}.pdf"
    s3.put_object(Bucket=local_aws.buckets["documents"], Key=key, Body=b"%PDF-1.7")
    bodies = receive_all(sqs, local_aws.queues["ingest"].url, wait_s=1)
    keys = [unquote_plus(record["s3"]["object"]["key"]) for body in bodies for record in body.get("Records", [])]
    assert key not in keys


def test_patient_registered_reaches_the_integration_queue_only(local_aws):
    sqs = local_aws.client("sqs")
    event = PatientRegistered(tenant_id="e2e-tenant", patient_id=str(uuid.uuid4()), has_curp=True)
    put_on_bus(local_aws, event)

    delivered = receive_all(sqs, local_aws.queues["integration"].url)
    matching = [body for body in delivered if body["detail"].get("patient_id") == event.patient_id]
    assert len(matching) == 1
    assert matching[0]["detail-type"] == "PatientRegistered"
    assert matching[0]["source"] == "expediente"
    assert PatientRegistered.model_validate(matching[0]["detail"]) == event
    alerts = receive_all(sqs, local_aws.queues["critical_alerts"].url, wait_s=1)
    assert [body for body in alerts if body["detail"].get("patient_id") == event.patient_id] == []


def _critical(observation_id: str) -> CriticalResultDetected:
    return CriticalResultDetected(
        tenant_id="e2e-tenant", alert_id=str(uuid.uuid4()), observation_id=observation_id, patient_id="p-1",
        clinic="HGIMB000151", code="2823-3", interpretation="HH", practitioner_id=None,
        acknowledge_by="2026-01-01T00:30:00.000Z",
    )


def test_critical_result_goes_to_critical_alerts_and_the_topic_not_integration(local_aws):
    sqs = local_aws.client("sqs")
    event = _critical(str(uuid.uuid4()))
    put_on_bus(local_aws, event)

    def ours(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [body for body in bodies if body["detail"].get("observation_id") == event.observation_id]

    alerts = ours(receive_all(sqs, local_aws.queues["critical_alerts"].url))
    assert [body["detail-type"] for body in alerts] == ["CriticalResultDetected"]
    # EventBridge → SNS → SQS (raw delivery): the inbox holds the event itself, as the queue does.
    notified = ours(receive_all(sqs, local_aws.topics["critical_notifications"].inbox_url))
    assert [body["detail-type"] for body in notified] == ["CriticalResultDetected"]
    assert notified[0]["id"] == alerts[0]["id"]
    assert notified[0]["source"] == SOURCE
    assert CriticalResultDetected.model_validate(notified[0]["detail"]) == event
    assert ours(receive_all(sqs, local_aws.queues["integration"].url, wait_s=1)) == []


def test_escalation_reaches_the_queue_and_the_topic(local_aws):
    sqs = local_aws.client("sqs")
    event = CriticalResultEscalated(
        tenant_id="e2e-tenant", alert_id=str(uuid.uuid4()), observation_id=str(uuid.uuid4()), patient_id="p-1",
        clinic="HGIMB000151", level=2, practitioner_id="pr-2", acknowledge_by="2026-01-01T01:00:00.000Z",
    )
    put_on_bus(local_aws, event)

    def ours(bodies: list[dict[str, Any]]) -> list[str]:
        return [body["detail-type"] for body in bodies if body["detail"].get("alert_id") == event.alert_id]

    assert ours(receive_all(sqs, local_aws.queues["critical_alerts"].url)) == ["CriticalResultEscalated"]
    assert ours(receive_all(sqs, local_aws.topics["critical_notifications"].inbox_url)) == ["CriticalResultEscalated"]


def test_events_without_a_topic_target_notify_nobody(local_aws):
    sqs = local_aws.client("sqs")
    recorded = ResultRecorded(
        tenant_id="e2e-tenant", resource_type="Observation", resource_id=str(uuid.uuid4()), version=1,
        patient_id="p-1", status="final", order_ids=[],
    )
    registered = PatientRegistered(tenant_id="e2e-tenant", patient_id=str(uuid.uuid4()), has_curp=False)
    put_on_bus(local_aws, recorded)
    put_on_bus(local_aws, registered)
    inbox = receive_all(sqs, local_aws.topics["critical_notifications"].inbox_url, wait_s=1)
    assert [b for b in inbox if b["detail"].get("resource_id") == recorded.resource_id
            or b["detail"].get("patient_id") == registered.patient_id] == []
    # ResultRecorded goes to order_results only (read by the orders function, not here).
    alerts = receive_all(sqs, local_aws.queues["critical_alerts"].url, wait_s=1)
    assert [b for b in alerts if b["detail"].get("resource_id") == recorded.resource_id] == []
    integration = receive_all(sqs, local_aws.queues["integration"].url, wait_s=1)
    assert [b["detail-type"] for b in integration
            if b["detail"].get("patient_id") == registered.patient_id] == ["PatientRegistered"]
    assert [b for b in integration if b["detail"].get("resource_id") == recorded.resource_id] == []


def test_the_stack_file_names_topics_inboxes_and_schedules(local_stack):
    from local.stack import read_stack_file

    document = read_stack_file(local_stack.stack_file)
    topic = document["topics"]["critical_notifications"]
    assert topic["arn"].startswith("arn:aws:sns:")
    assert topic["inbox_url"].startswith(local_stack.aws.endpoint)
    schedule = document["schedules"]["critical_escalation"]
    assert schedule["function"] == "results"
    assert schedule["minutes"] == 1
    assert schedule["rule_arn"].startswith("arn:aws:events:")
