"""A lab order leaves an ORM^O01 in the HL7 outbox (S3) and announces it; a cancellation sends CA."""

from __future__ import annotations

from typing import Any

import boto3

from expediente import hl7v2
from tests.integration.notes.conftest import CLUES, Chain, Staff, Visit
from tests.integration.orders.conftest import imaging_order, lab_order
from tests.support.aws import REGION


def queued(chain: Chain) -> list[dict[str, Any]]:
    return [e["detail"] for e in chain.world.world.published() if e["detail-type"] == "OrderMessageQueued"]


def fetch(detail: dict[str, Any]) -> Any:
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=detail["bucket"], Key=detail["object_key"])
    return body


def test_a_lab_order_is_sent_to_the_lab_as_orm_o01(physician: Staff, visit: Visit, chain: Chain) -> None:
    chain.world.world.published()
    reply = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id,
                                                                       priority="stat"))
    assert reply.status == 201, reply.body
    order = reply.body
    [detail] = queued(chain)
    assert detail["order_id"] == order["id"] and detail["message_type"] == "ORM^O01"
    assert detail["object_key"].startswith(f"{chain.tenant.id}/hl7/outbox/{CLUES}/")
    obj = fetch(detail)
    assert obj["ContentType"] == "x-application/hl7-v2+er7" and obj["Metadata"]["order-id"] == order["id"]
    message = hl7v2.parse(obj["Body"].read().decode("utf-8")).message
    assert str(message.segment("MSH")[9]) == "ORM^O01^ORM_O01"
    assert str(message.segment("MSH")[10]) == detail["control_id"]
    placer = order["identifier"][0]["value"]
    assert str(message.segment("ORC")[1]) == "NW" and str(message.segment("ORC")[2]) == placer
    assert str(message.segment("OBR")[2]) == placer and str(message.segment("OBR")[4][0][0]) == "2823-3"
    pid3 = str(message.segment("PID")[3])
    assert f"{visit.patient_id}^^^EXPEDIENTE^MR" in pid3  # what results must send back in their PID-3
    assert str(message.segment("DG1")[3][0][0]) == "I10"
    assert "S" in str(message.segment("OBR")[27])  # stat


def test_an_imaging_order_sends_no_lab_message_and_a_cancelled_lab_order_sends_ca(
        physician: Staff, visit: Visit, chain: Chain) -> None:
    chain.world.world.published()
    imaging = physician.orders("POST", "/fhir/ServiceRequest", imaging_order(visit.patient_id, visit.encounter_id))
    assert imaging.status == 201 and queued(chain) == []
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    chain.world.world.published()
    cancelled = physician.orders("POST", f"/fhir/ServiceRequest/{order['id']}/$status", {
        "resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "cancelled"},
                                                    {"name": "reason", "valueString": "Duplicada"}]},
        headers={"If-Match": 'W/"1"'})
    assert cancelled.status == 200, cancelled.body
    [detail] = queued(chain)
    message = hl7v2.parse(fetch(detail)["Body"].read().decode("utf-8")).message
    assert str(message.segment("ORC")[1]) == "CA"
    assert str(message.segment("ORC")[2]) == order["identifier"][0]["value"]
