"""SQS-driven handlers: a record that fails is reported alone in ``batchItemFailures``, and redelivering
the whole batch (what SQS does after the visibility timeout, and what an at-least-once queue may do at
any time) converges to the state of one clean delivery: no duplicate version, instance or event.

Consumers covered (every ``FunctionDef.consumes`` of infra/definitions.py): the orders function on
``order_results`` (ResultRecorded and DicomInstanceIngested events) and dicom_ingest on ``ingest``
(S3 notifications).
"""

from __future__ import annotations

import collections
from typing import Any

import pydicom

from infra import definitions
from tests.integration.faults.injector import Fault, Injector
from tests.integration.faults.scenarios import Clinic
from tests.integration.imaging.conftest import Imaging, dicom_bytes, sqs_record
from tests.integration.results.test_laboratory import lab_result
from tests.support.aws import LambdaContext

THROTTLED = Fault("ProvisionedThroughputExceededException", 400)


def test_every_queue_consumer_is_covered_here() -> None:
    consumers = {(f.id, queue) for f in definitions.FUNCTIONS for queue in f.consumes}
    assert consumers == {("orders", "order_results"), ("dicom_ingest", "ingest")}


def _orders_batch(event: dict[str, Any]) -> dict[str, Any]:
    from functions.orders.handler import lambda_handler

    response: dict[str, Any] = lambda_handler(event, LambdaContext())
    return response


def _status(clinic: Clinic, order_id: str) -> tuple[str, str]:
    reply = clinic.physician.orders("GET", f"/fhir/ServiceRequest/{order_id}")
    assert reply.status == 200, reply.body
    status = next(e["valueCode"] for e in reply.body["extension"] if e["url"].endswith("/estado-orden"))
    return str(status), str(reply.body["meta"]["versionId"])


def test_the_orders_consumer_reports_only_the_failed_result_and_redelivery_completes_it_once(
        injector: Injector, clinic: Clinic) -> None:
    orders = [clinic.lab_order() for _ in range(3)]
    for order in orders:
        reply = clinic.lab.results("POST", "/fhir/Observation",
                                   lab_result(clinic.patient, "2823-3", 4.2, "mmol/L", order=order["id"]))
        assert reply.status == 201, reply.body
    recorded = [e for e in clinic.chain.world.world.published() if e["detail-type"] == "ResultRecorded"]
    assert len(recorded) == 3
    batch = {"Records": [sqs_record(e) for e in recorded]}
    by_order = {e["detail"]["order_ids"][0]: r["messageId"] for e, r in zip(recorded, batch["Records"], strict=True)}
    failing = orders[1]["id"]

    with injector.record(mentioning=(failing, THROTTLED)) as recorded_calls:
        response = _orders_batch(batch)
    assert recorded_calls.injected, "the fault was never reached"
    assert response == {"batchItemFailures": [{"itemIdentifier": by_order[failing]}]}
    assert _status(clinic, failing) == ("requested", "1")
    after_first = {o["id"]: _status(clinic, o["id"]) for o in orders}
    assert {after_first[o["id"]][0] for o in orders if o["id"] != failing} == {"completed"}
    first_events = collections.Counter(e["detail"]["order_id"] for e in clinic.chain.world.world.published()
                                       if e["detail-type"] == "OrderStatusChanged")
    assert failing not in first_events

    assert _orders_batch(batch) == {"batchItemFailures": []}  # the whole batch again
    for order in orders:
        if order["id"] != failing:
            assert _status(clinic, order["id"]) == after_first[order["id"]]  # no second version
    assert _status(clinic, failing)[0] == "completed"
    assert _orders_batch(batch) == {"batchItemFailures": []}  # and once more: still nothing new
    final = {o["id"]: _status(clinic, o["id"]) for o in orders}
    assert len({version for _, version in final.values()}) == 1  # every order went through the same versions
    again = collections.Counter(e["detail"]["order_id"] for e in clinic.chain.world.world.published()
                                if e["detail-type"] == "OrderStatusChanged")
    assert again == {failing: first_events[orders[0]["id"]]}  # only the failed one's changes, once


def _study(imaging: Imaging, study_uid: str) -> dict[str, Any]:
    reply = imaging.physician.results("GET", f"/fhir/ImagingStudy/{study_uid}")
    assert reply.status == 200, reply.body
    return dict(reply.body)


def test_dicom_ingest_reports_only_the_failed_upload_and_redelivery_adds_no_duplicate(
        injector: Injector, imaging: Imaging) -> None:
    orders = [imaging.order() for _ in range(3)]
    files = [dicom_bytes("CT_small.dcm", patient_id=imaging.patient_id, accession=imaging.accession(o))
             for o in orders]
    studies = [str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(f)).StudyInstanceUID) for f in files]
    notifications = [imaging.upload(f) for f in files]
    batch = {"Records": [sqs_record(n) for n in notifications]}
    from functions.dicom_ingest.handler import lambda_handler

    for fault in (THROTTLED, Fault("SlowDown", 503), Fault("InternalException", 200, partial=True)):
        failing = studies[1] if not fault.partial else imaging.accession(orders[1])
        with injector.record(mentioning=(failing, fault)) as recorded_calls:
            response = lambda_handler(batch, LambdaContext())
        if not recorded_calls.injected:
            continue  # this fault's service was not asked about this study (already stored by a prior round)
        assert response == {"batchItemFailures": [{"itemIdentifier": batch["Records"][1]["messageId"]}]}, fault
    assert lambda_handler(batch, LambdaContext()) == {"batchItemFailures": []}
    assert lambda_handler(batch, LambdaContext()) == {"batchItemFailures": []}
    for study in studies:
        stored = _study(imaging, study)
        assert stored["numberOfInstances"] == 1 and stored["meta"]["versionId"] == "1"
    assert len(imaging.keys("imaging", imaging.tenant)) == 3  # one archived object per instance
    assert imaging.keys("ingest", imaging.tenant) == []
    assert imaging.keys("quarantine") == []
    ingested = collections.Counter(e["detail"]["study_uid"] for e in imaging.chain.world.world.published()
                                   if e["detail-type"] == "DicomInstanceIngested")
    assert set(ingested) == set(studies)  # every instance announced (at least once: consumers are idempotent)
