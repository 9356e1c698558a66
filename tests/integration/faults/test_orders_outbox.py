"""Regression: a lab order whose transaction fails leaves no HL7 message in the outbox (found by the fault harness).

The ORM^O01 is written to S3 before the order's transaction (so every committed order has its message);
when the transaction then fails, the message of that attempt is erased (its exact version: the order does
not exist, so nothing of it may stay).
"""

from __future__ import annotations

import boto3

from tests.integration.faults.injector import TRANSACTION_CONFLICT, Fault, Injector
from tests.integration.faults.scenarios import Clinic
from tests.integration.orders.conftest import lab_order
from tests.support.aws import REGION, bucket_name


def _outbox_listing(tenant: str) -> list[str]:
    """What the laboratory's engine sees: the current messages of the tenant's outbox."""
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket=bucket_name("documents"), Prefix=f"{tenant}/hl7/outbox/")
    return [o["Key"] for o in listed.get("Contents", [])]


def _withdrawn(tenant: str) -> list[str]:
    """Messages hidden by a delete marker whose version is still kept."""
    listed = boto3.client("s3", region_name=REGION).list_object_versions(
        Bucket=bucket_name("documents"), Prefix=f"{tenant}/hl7/outbox/")
    kept = {v["Key"] for v in listed.get("Versions", [])}
    return sorted(m["Key"] for m in listed.get("DeleteMarkers", []) if m["IsLatest"] and m["Key"] in kept)


def test_a_lab_order_whose_transaction_fails_leaves_no_outbox_message(injector: Injector, clinic: Clinic) -> None:
    tenant = clinic.chain.tenant.id
    before = _outbox_listing(tenant)
    for fault in (TRANSACTION_CONFLICT, Fault("ProvisionedThroughputExceededException", 400)):
        with injector.record(mentioning=("TransactItems", fault)) as recorded:
            reply = clinic.physician.orders("POST", "/fhir/ServiceRequest",
                                            lab_order(clinic.patient, clinic.visit.encounter_id))
        assert [call for _, call, _ in recorded.injected] == ["dynamodb.TransactWriteItems"]
        assert reply.status == 503 and reply.headers["Retry-After"].isdigit(), reply.body
        assert _outbox_listing(tenant) == before
    placed = clinic.physician.orders("POST", "/fhir/ServiceRequest", lab_order(clinic.patient,
                                                                            clinic.visit.encounter_id))
    assert placed.status == 201, placed.body
    assert len(_outbox_listing(tenant)) == len(before) + 1  # a committed order keeps its message
    assert _withdrawn(tenant) == []  # erased, not hidden behind a delete marker
