"""The transactional outbox and its relay (decision 0028), against moto.

Items are written the way a handler writes them (``store.transact(..., events=...)``) and dated in the
past where the relay must see them; the relay is the orders function's ``outbox_relay`` schedule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from tests.conftest import World
from tests.support.aws import REGION, LambdaContext, table_name

NOW = datetime.now(UTC)


def _event(tenant: str, n: int) -> Any:
    from expediente import events

    return events.PatientUpdated(tenant_id=tenant, patient_id=f"p{n:04d}", version=n + 1)


def _commit(events: list[Any], *, age_s: int = 120) -> None:
    """Write ``events`` to the outbox as a committed transaction ``age_s`` seconds ago would have."""
    from expediente import outbox, store

    pending = outbox.pending(events, now=NOW - timedelta(seconds=age_s))
    store.transact(outbox.put_ops(pending))
    outbox.forget()


def _outbox(tenant: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=REGION).query(
        TableName=table_name("outbox"), KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{tenant}#OUTBOX"}})["Items"]
    return items


def _published(world: World) -> list[tuple[str, str, str]]:
    return sorted((e["detail-type"], e["detail"]["tenant_id"], e["detail"].get("patient_id", ""))
                  for e in world.published())


class _Calls:
    """Every AWS call the code under test makes (operation names), and a PutEvents that can refuse entries."""

    def __init__(self) -> None:
        self.operations: list[str] = []
        self.refuse: Callable[[dict[str, Any]], bool] | None = None  # entries PutEvents answers as failed
        self.down = False  # PutEvents fails as a whole
        self.unreadable = ""  # a Query naming this string is throttled

    def before_call(self, event_name: str, params: dict[str, Any], **_: Any) -> Any:
        operation = event_name.split(".", 2)[2]
        self.operations.append(operation)
        if operation == "Query" and self.unreadable and self.unreadable in str(params.get("body")):
            meta = {"HTTPStatusCode": 400, "HTTPHeaders": {}, "RetryAttempts": 2}
            return (AWSResponse("https://fault.invalid/", 400, HTTPHeaders(), None),
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"},
                     "ResponseMetadata": meta})
        if operation != "PutEvents" or not (self.down or self.refuse):
            return None
        meta = {"HTTPStatusCode": 500 if self.down else 200, "HTTPHeaders": {}, "RetryAttempts": 0}
        http = AWSResponse("https://fault.invalid/", meta["HTTPStatusCode"], HTTPHeaders(), None)
        if self.down:
            return http, {"Error": {"Code": "InternalException", "Message": "injected"}, "ResponseMetadata": meta}
        entries = json.loads(params["body"])["Entries"]
        refused = [self.refuse is not None and self.refuse(e) for e in entries]
        if not any(refused):
            return None  # nothing to refuse in this call: let moto deliver it
        accepted = [e for e, r in zip(entries, refused, strict=True) if not r]
        if accepted:  # the accepted part reaches the bus (through the test's own session: not hooked)
            boto3.client("events", region_name=REGION).put_events(Entries=accepted)
        return http, self._answer(refused, meta)

    @staticmethod
    def _answer(refused: list[bool], meta: dict[str, Any]) -> dict[str, Any]:
        return {"FailedEntryCount": sum(refused), "ResponseMetadata": meta,
                "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"} if r else {"EventId": "x"}
                            for r in refused]}


@pytest.fixture
def calls(world: World) -> Iterator[_Calls]:
    from expediente import aws
    from tests.support import aws as support

    recorder = _Calls()
    aws.session().events.register("before-call", recorder.before_call, unique_id="outbox-relay-test")
    support.reset_caches()
    try:
        yield recorder
    finally:
        aws.session().events.unregister("before-call", unique_id="outbox-relay-test")


def _relay(**kwargs: Any) -> Any:
    from expediente import outbox

    return outbox.relay(**kwargs)


def test_the_relay_publishes_old_items_page_by_page_and_deletes_them(world: World, calls: _Calls) -> None:
    tenant = world.tenant("clinica-norte")
    _commit([_event(tenant, n) for n in range(23)])
    report = _relay(tenants=[tenant], now=NOW, page_size=10)
    assert (report.found, report.relayed, report.failed) == (23, 23, 0)
    assert calls.operations.count("Query") == 3  # pages of 10, 10 and 3
    assert calls.operations.count("PutEvents") == 3 and "Scan" not in calls.operations
    assert _published(world) == sorted(("PatientUpdated", tenant, f"p{n:04d}") for n in range(23))
    assert _outbox(tenant) == []
    again = _relay(tenants=[tenant], now=NOW + timedelta(minutes=5))
    assert (again.found, again.relayed) == (0, 0) and world.published() == []  # never delivered twice


def test_the_relay_serves_every_registered_tenant_from_its_own_partition(world: World, calls: _Calls) -> None:
    first, second, idle = world.tenant("clinica-sur"), world.tenant("clinica-este"), world.tenant("clinica-oeste")
    _commit([_event(first, 1), _event(first, 2)])
    _commit([_event(second, 3)])
    from functions.orders.handler import lambda_handler

    result = lambda_handler({"version": "0", "id": "run-1", "detail-type": "Scheduled Event", "source": "aws.events",
                             "resources": ["arn:aws:events:us-east-1:123456789012:rule/outbox-relay"], "detail": {}},
                            LambdaContext())
    assert result == {"found": 3, "relayed": 3, "failed": 0, "tenants_failed": 0}
    assert _published(world) == sorted([("PatientUpdated", first, "p0001"), ("PatientUpdated", first, "p0002"),
                                        ("PatientUpdated", second, "p0003")])
    assert calls.operations.count("Query") == 1 + 3  # the registry, then one per tenant (idle included)
    assert "Scan" not in calls.operations
    assert _outbox(first) == _outbox(second) == _outbox(idle) == []


def test_items_younger_than_a_minute_are_left_to_the_request_that_wrote_them(world: World, calls: _Calls) -> None:
    tenant = world.tenant("clinica-centro")
    _commit([_event(tenant, 1)], age_s=10)
    _commit([_event(tenant, 2)], age_s=90)
    report = _relay(tenants=[tenant], now=NOW)
    assert (report.found, report.relayed) == (1, 1)
    assert _published(world) == [("PatientUpdated", tenant, "p0002")]
    assert len(_outbox(tenant)) == 1


def test_a_partial_put_events_failure_keeps_only_the_refused_items_for_the_next_run(
        world: World, calls: _Calls) -> None:
    tenant = world.tenant("clinica-lago")
    _commit([_event(tenant, n) for n in range(12)])
    calls.refuse = lambda entry: '"p0003"' in entry["Detail"] or '"p0011"' in entry["Detail"]
    report = _relay(tenants=[tenant], now=NOW)
    assert (report.found, report.relayed, report.failed) == (12, 10, 2)
    assert len(_published(world)) == 10
    left = sorted(json.loads(i["detail"]["S"])["patient_id"] for i in _outbox(tenant))
    assert left == ["p0003", "p0011"]
    calls.refuse = None
    retry = _relay(tenants=[tenant], now=NOW + timedelta(minutes=1))
    assert (retry.found, retry.relayed, retry.failed) == (2, 2, 0)
    assert _published(world) == [("PatientUpdated", tenant, "p0003"), ("PatientUpdated", tenant, "p0011")]
    assert _outbox(tenant) == []


def test_while_put_events_is_down_everything_stays_and_old_items_count_as_stale(world: World, calls: _Calls) -> None:
    tenant = world.tenant("clinica-rio")
    _commit([_event(tenant, 1)], age_s=120)
    _commit([_event(tenant, 2)], age_s=600)
    calls.down = True
    report = _relay(tenants=[tenant], now=NOW)
    assert (report.found, report.stale, report.relayed, report.failed) == (2, 1, 0, 2)
    assert len(_outbox(tenant)) == 2 and world.published() == []


def test_one_tenant_whose_outbox_cannot_be_read_does_not_stop_the_others(world: World, calls: _Calls) -> None:
    broken, fine = world.tenant("clinica-mar"), world.tenant("clinica-sol")
    _commit([_event(broken, 1)])
    _commit([_event(fine, 2)])
    calls.unreadable = f"{broken}#OUTBOX"
    report = _relay(tenants=[broken, fine], now=NOW)
    assert report.tenants_failed == [broken] and report.relayed == 1
    assert _published(world) == [("PatientUpdated", fine, "p0002")]
    assert len(_outbox(broken)) == 1


def test_publish_of_a_committed_event_deletes_its_item_and_a_failed_publish_keeps_it(
        world: World, calls: _Calls) -> None:
    from expediente import events, outbox, store

    tenant = world.tenant("clinica-valle")
    delivered, kept = _event(tenant, 1), _event(tenant, 2)
    store.transact([], events=(delivered,))
    assert events.publish(delivered) is True
    assert _outbox(tenant) == []
    store.transact([], events=(kept,))
    calls.down = True
    assert events.publish(kept) is False
    [item] = _outbox(tenant)
    assert json.loads(item["detail"]["S"])["patient_id"] == "p0002"
    assert outbox.claim([kept]) == [None]  # forgotten by the request: the relay owns it now


def test_an_event_rebuilt_after_the_commit_is_matched_to_its_committed_item(world: World, calls: _Calls) -> None:
    from expediente import events, store

    tenant = world.tenant("clinica-alta")
    committed = _event(tenant, 7)
    store.transact([], events=(committed,))
    rebuilt = events.PatientUpdated(tenant_id=tenant, patient_id="p0007", version=8,
                                    occurred_at="2099-01-01T00:00:00.000Z")
    assert events.publish(rebuilt) is True
    [sent] = world.published()
    assert sent["detail"]["occurred_at"] == committed.occurred_at  # the committed entry, as the relay would send it
    assert _outbox(tenant) == []
