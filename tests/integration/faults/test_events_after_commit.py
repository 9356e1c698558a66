"""Events are published after the commit: what a PutEvents failure at that point does (decisions 0026, 0028).

The change is committed and the client gets its success (retrying would write it twice). The event is
not lost: it was written to the transactional outbox in the same TransactWriteItems as the result, the
failed publish leaves it there, and the outbox relay (the orders function's ``outbox_relay`` schedule)
publishes it once it is a minute old; the orders consumer then advances the order. A transaction that
fails leaves no outbox item, so nothing is ever announced that did not happen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from tests.integration.faults.injector import Fault, Injector
from tests.integration.faults.scenarios import Clinic
from tests.integration.imaging.conftest import sqs_record
from tests.integration.results.test_laboratory import lab_result
from tests.support.aws import REGION, LambdaContext, table_name

PUT_EVENTS_DOWN = Fault("InternalException", 500)
STORE_THROTTLED = Fault("ProvisionedThroughputExceededException", 400)
# Only the PutEvents request carries "DetailType" (the outbox item stores it as detail_type).
PUT_EVENTS_CALL = "DetailType"


def _outbox(tenant: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=REGION).query(
        TableName=table_name("outbox"), KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{tenant}#OUTBOX"}})["Items"]
    return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]


def _report(injector: Injector, clinic: Clinic) -> tuple[int, list[dict[str, object]], str, str]:
    order = clinic.lab_order()
    clinic.chain.world.world.published()
    body = lab_result(clinic.patient, "2823-3", 4.2, "mmol/L", order=order["id"])
    with injector.record(mentioning=(PUT_EVENTS_CALL, PUT_EVENTS_DOWN)) as recorded:
        reply = clinic.lab.results("POST", "/fhir/Observation", body)
    assert [call for _, call, _ in recorded.injected] == ["eventbridge.PutEvents"]
    return reply.status, clinic.chain.world.world.published(), str(reply.body.get("id")), str(order["id"])


def _relay(minutes_later: int = 2) -> dict[str, int]:
    from functions.orders.handler import relay_outbox

    return relay_outbox(now=datetime.now(UTC) + timedelta(minutes=minutes_later))


def _order_status(clinic: Clinic, order_id: str) -> str:
    reply = clinic.physician.orders("GET", f"/fhir/ServiceRequest/{order_id}")
    assert reply.status == 200, reply.body
    return str(next(e["valueCode"] for e in reply.body["extension"] if e["url"].endswith("/estado-orden")))


def test_a_publish_failure_after_the_commit_keeps_the_committed_result_and_answers_success(
        injector: Injector, clinic: Clinic) -> None:
    status, published, observation_id, _ = _report(injector, clinic)
    assert status == 201
    assert not [e for e in published if e["detail-type"] == "ResultRecorded"]
    assert clinic.lab.results("GET", f"/fhir/Observation/{observation_id}").status == 200


def test_an_event_whose_publish_failed_stays_in_the_outbox_committed_with_the_result(
        injector: Injector, clinic: Clinic) -> None:
    _, _, observation_id, _ = _report(injector, clinic)
    [item] = [i for i in _outbox(clinic.chain.tenant.id) if i["detail_type"] == "ResultRecorded"]
    assert f'"resource_id": "{observation_id}"' in item["detail"]
    assert int(item["expires_at"]) > datetime.now(UTC).timestamp() + 13 * 86400  # TTL: a backstop only


def test_a_result_recorded_event_whose_publish_failed_still_reaches_the_bus(
        injector: Injector, clinic: Clinic) -> None:
    _, published, observation_id, order_id = _report(injector, clinic)
    assert not [e for e in published if e["detail-type"] == "ResultRecorded"]
    assert _relay(minutes_later=0)["relayed"] == 0  # younger than a minute: left to its request
    assert _relay()["relayed"] == 1
    [event] = [e for e in clinic.chain.world.world.published() if e["detail-type"] == "ResultRecorded"]
    assert event["detail"]["resource_id"] == observation_id and event["detail"]["order_ids"] == [order_id]
    assert _outbox(clinic.chain.tenant.id) == []
    assert _relay(minutes_later=5) == {"found": 0, "relayed": 0, "failed": 0, "tenants_failed": 0}
    assert clinic.chain.world.world.published() == []  # the relay delivers it once

    from functions.orders.handler import lambda_handler  # the order advances from the relayed event

    assert _order_status(clinic, order_id) == "requested"
    assert lambda_handler({"Records": [sqs_record(event)]}, LambdaContext()) == {"batchItemFailures": []}
    assert _order_status(clinic, order_id) == "completed"


def test_a_published_event_leaves_nothing_in_the_outbox(injector: Injector, clinic: Clinic) -> None:
    order = clinic.lab_order()
    clinic.chain.world.world.published()
    reply = clinic.lab.results("POST", "/fhir/Observation",
                               lab_result(clinic.patient, "2823-3", 4.2, "mmol/L", order=order["id"]))
    assert reply.status == 201, reply.body
    assert [e["detail-type"] for e in clinic.chain.world.world.published()] == ["ResultRecorded"]
    assert _outbox(clinic.chain.tenant.id) == []
    assert _relay()["found"] == 0


def test_a_failed_transaction_leaves_no_outbox_item_and_publishes_nothing(
        injector: Injector, clinic: Clinic) -> None:
    order = clinic.lab_order()
    clinic.chain.world.world.published()
    body = lab_result(clinic.patient, "2823-3", 4.2, "mmol/L", order=order["id"])
    with injector.record(mentioning=("ResultRecorded", STORE_THROTTLED)) as recorded:
        reply = clinic.lab.results("POST", "/fhir/Observation", body)
    assert [call for _, call, _ in recorded.injected] == ["dynamodb.TransactWriteItems"]
    assert reply.status == 503
    assert _outbox(clinic.chain.tenant.id) == []
    assert _relay()["found"] == 0
    assert clinic.chain.world.world.published() == []
