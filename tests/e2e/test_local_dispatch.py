"""The local stack runs queued and scheduled work as Lambda and EventBridge do (``local/dispatch.py``).

A stack of its own, started in this process with a throwaway recording handler (a module written
under a temporary folder, put on ``sys.path``) standing in for the orders and results functions,
and with ``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS`` shortening the one-minute schedule. The handler's
behaviour per record comes from the message body: ``ok``, ``fail`` (reported in
``batchItemFailures``), ``fail-once``, ``raise-once``, ``raise``.

It resets moto's in-process state when it starts, so it cannot run beside the in-process session
stack (``EXPEDIENTE_E2E_IN_PROCESS=1``): skipped then. The session stack of the other e2e tests is
a child process, untouched.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from infra import definitions
from local.aws import QueueInfo
from local.dispatch import (
    SCHEDULE_SECONDS_ENV,
    EventSourceMapping,
    QueueDispatcher,
    Scheduler,
    failed_message_ids,
    scheduled_event,
)
from local.frontdoor import FunctionRunner
from local.stack import LocalStack

# As tests/e2e/conftest.py decides where the session stack runs.
IN_PROCESS = os.environ.get("EXPEDIENTE_E2E_IN_PROCESS") == "1"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(IN_PROCESS, reason="would reset the in-process session stack's moto state"),
]

SCHEDULE_PERIOD_S = 0.4
WAIT_S = 10.0

_PROBE = textwrap.dedent('''
    """Throwaway Lambda handler for tests/e2e/test_local_dispatch.py: records every invocation."""
    import json
    import os

    CALLS = []


    def lambda_handler(event, context):
        CALLS.append({
            "event": event,
            "service": os.environ.get("POWERTOOLS_SERVICE_NAME"),
            "function_name": context.function_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        })
        if "Records" not in event:
            return None
        failures = []
        for record in event["Records"]:
            body = json.loads(record["body"])
            outcome = body.get("outcome") or body.get("detail", {}).get("outcome", "ok")
            first = record["attributes"]["ApproximateReceiveCount"] == "1"
            if outcome == "raise" or (outcome == "raise-once" and first):
                raise RuntimeError("the probe was told to raise")
            if outcome == "fail" or (outcome == "fail-once" and first):
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}
''')


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    folder = tmp_path_factory.mktemp("probe")
    name = f"dispatch_probe_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(_PROBE, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def stack(probe: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SCHEDULE_SECONDS_ENV, str(SCHEDULE_PERIOD_S))
        local = LocalStack(
            aws_port=0, api_port=0, seed=False, stack_file=tmp_path_factory.mktemp("dispatch") / "stack.json",
            handlers={"orders": probe.lambda_handler, "results": probe.lambda_handler},
        )
        local.start()
    try:
        yield local
    finally:
        local.stop()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def records_for(probe: ModuleType, marker: str) -> list[dict[str, Any]]:
    """Every (call, record) the probe saw whose body carries ``marker``, oldest first."""
    return [
        {"call": call, "record": record}
        for call in list(probe.CALLS)
        for record in call["event"].get("Records", [])
        if marker in record["body"]
    ]


def queue_counts(stack: LocalStack, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = stack.aws.client("sqs").get_queue_attributes(  # type: ignore[union-attr]
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def send(stack: LocalStack, queue_url: str, outcome: str) -> str:
    marker = str(uuid.uuid4())
    stack.aws.client("sqs").send_message(  # type: ignore[union-attr]
        QueueUrl=queue_url, MessageBody=json.dumps({"marker": marker, "outcome": outcome}),
    )
    return marker


def scratch_queue(stack: LocalStack, *, visibility_s: int, max_receive_count: int) -> QueueInfo:
    """A queue (and DLQ) of this test alone, so nothing else polls it."""
    assert stack.aws is not None
    sqs = stack.aws.client("sqs")
    name = f"dispatch-scratch-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(visibility_s),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
    })["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return QueueInfo("scratch", name, url, arn, dlq_url, dlq_arn)


def receive_batch(stack: LocalStack, queue: QueueInfo, count: int) -> list[dict[str, Any]]:
    sqs = stack.aws.client("sqs")  # type: ignore[union-attr]
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while len(messages) < count and time.monotonic() < deadline:
        messages += sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
    assert len(messages) == count
    return messages


# -- the consumed queue, end to end --------------------------------------------------------------


def test_a_message_on_order_results_reaches_the_orders_handler_as_an_sqs_event_and_is_deleted(stack, probe):
    queue = stack.aws.queues["order_results"]
    marker = send(stack, queue.url, "ok")

    (seen,) = wait_for(lambda: records_for(probe, marker), "the orders handler to receive the message")
    record, call = seen["record"], seen["call"]
    assert set(record) == {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                           "eventSource", "eventSourceARN", "awsRegion"}
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue.arn
    assert record["awsRegion"] == stack.aws.region
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["messageAttributes"] == {}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    # Invoked like the front door invokes: the function's environment and a Lambda-like context.
    assert call["service"] == "expediente-orders"
    assert call["function_name"] == "expediente-local-orders"
    assert 0 < call["remaining_ms"] <= 15_000
    wait_for(lambda: queue_counts(stack, queue.url) == (0, 0), "the message to be deleted")


def test_a_result_recorded_on_the_bus_reaches_the_orders_handler(stack, probe):
    """EventBridge rule results_to_orders → order_results → the dispatcher → the orders function."""
    marker = str(uuid.uuid4())
    answer = stack.aws.client("events").put_events(Entries=[{
        "Source": "expediente", "DetailType": "ResultRecorded", "EventBusName": stack.aws.event_bus_name,
        "Detail": json.dumps({"tenant_id": "e2e-tenant", "marker": marker, "outcome": "ok"}),
    }])
    assert answer["FailedEntryCount"] == 0
    (seen,) = wait_for(lambda: records_for(probe, marker), "the ResultRecorded event to reach the orders handler")
    event = json.loads(seen["record"]["body"])
    assert event["detail-type"] == "ResultRecorded"
    assert event["source"] == "expediente"
    assert event["detail"]["marker"] == marker


def test_a_message_reported_as_failed_stays_in_the_queue_and_comes_back(stack, probe):
    queue = stack.aws.queues["order_results"]
    marker = send(stack, queue.url, "fail-once")

    (first,) = wait_for(lambda: records_for(probe, marker), "the first delivery")
    assert first["record"]["attributes"]["ApproximateReceiveCount"] == "1"
    time.sleep(0.3)  # the dispatcher has deleted what it deletes by now
    assert queue_counts(stack, queue.url) == (0, 1), "kept, hidden for the queue's visibility timeout"
    # Skip the 92 s visibility timeout: make it visible now, as its expiry would.
    stack.aws.client("sqs").change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=first["record"]["receiptHandle"], VisibilityTimeout=0,
    )
    second = wait_for(lambda: records_for(probe, marker)[1:], "the redelivery")[0]
    assert second["record"]["messageId"] == first["record"]["messageId"]
    assert second["record"]["attributes"]["ApproximateReceiveCount"] == "2"
    wait_for(lambda: queue_counts(stack, queue.url) == (0, 0), "the message to be deleted once it succeeded")


def test_a_handler_that_raises_keeps_the_message(stack, probe):
    queue = stack.aws.queues["order_results"]
    marker = send(stack, queue.url, "raise-once")

    (first,) = wait_for(lambda: records_for(probe, marker), "the first delivery")
    time.sleep(0.3)
    assert queue_counts(stack, queue.url) == (0, 1)
    stack.aws.client("sqs").change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=first["record"]["receiptHandle"], VisibilityTimeout=0,
    )
    wait_for(lambda: records_for(probe, marker)[1:], "the redelivery")
    wait_for(lambda: queue_counts(stack, queue.url) == (0, 0), "the message to be deleted once it succeeded")


# -- batches, deterministically (the test receives, the dispatcher delivers) --------------------------


def test_a_partial_batch_failure_deletes_only_the_successes(stack):
    queue = scratch_queue(stack, visibility_s=30, max_receive_count=5)
    markers = {send(stack, queue.url, outcome): outcome for outcome in ("ok", "fail", "ok")}
    messages = receive_batch(stack, queue, 3)
    deleted = stack.dispatcher.deliver(EventSourceMapping("orders", "scratch"), queue, messages)

    outcome_of = {m["MessageId"]: markers[json.loads(m["Body"])["marker"]] for m in messages}
    assert {outcome_of[i] for i in deleted} == {"ok"}
    assert len(deleted) == 2
    assert queue_counts(stack, queue.url) == (0, 1)


def test_a_raising_handler_deletes_no_message_of_the_batch(stack):
    queue = scratch_queue(stack, visibility_s=30, max_receive_count=5)
    for outcome in ("ok", "raise", "ok"):
        send(stack, queue.url, outcome)
    messages = receive_batch(stack, queue, 3)
    assert stack.dispatcher.deliver(EventSourceMapping("orders", "scratch"), queue, messages) == set()
    assert queue_counts(stack, queue.url) == (0, 3)


def test_messages_that_keep_failing_are_parked_in_the_dead_letter_queue(stack, probe):
    """The dispatcher leaves failures in the queue; the redrive policy parks them after maxReceiveCount."""
    queue = scratch_queue(stack, visibility_s=1, max_receive_count=2)
    runner = FunctionRunner(stack.aws, handlers={"orders": probe.lambda_handler})
    dispatcher = QueueDispatcher(stack.aws, runner, mappings=[EventSourceMapping("orders", "scratch")],
                                 queues={"scratch": queue})
    marker = send(stack, queue.url, "fail")
    dispatcher.start()
    try:
        wait_for(lambda: queue_counts(stack, queue.dlq_url)[0] == 1, "the message in the dead-letter queue")
    finally:
        dispatcher.stop()
    assert [r["record"]["attributes"]["ApproximateReceiveCount"] for r in records_for(probe, marker)] == ["1", "2"]
    assert queue_counts(stack, queue.url) == (0, 0)


@pytest.mark.parametrize(("result", "expected"), [
    (None, set()),
    ({}, set()),
    ({"batchItemFailures": None}, set()),
    ({"batchItemFailures": []}, set()),
    ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
    ({"batchItemFailures": [{"itemIdentifier": "z"}]}, None),  # not in the batch
    ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
    ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
    ({"batchItemFailures": [{"itemId": "a"}]}, None),  # bad key name
    ({"batchItemFailures": "a"}, None),
    ("ok", None),
])
def test_batch_item_failures_are_read_as_lambda_reads_them(result, expected):
    assert failed_message_ids(result, ["a", "b", "c"]) == expected


# -- the scheduler ------------------------------------------------------------------------------------


def test_the_scheduler_invokes_the_results_function_with_a_scheduled_event(stack, probe):
    schedule = stack.aws.schedules["critical_escalation"]
    assert (schedule.function, schedule.minutes) == ("results", 1)
    assert stack.scheduler.period_s(schedule) == SCHEDULE_PERIOD_S

    def scheduled() -> list[dict[str, Any]]:
        return [call for call in list(probe.CALLS) if call["event"].get("detail-type") == "Scheduled Event"
                and call["service"] == "expediente-results"]  # other functions run schedules of their own

    calls = wait_for(lambda: scheduled()[1:], "two scheduled runs")
    event = calls[0]["event"]
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["version"] == "0"
    assert event["source"] == "aws.events"
    assert event["account"] == stack.aws.account_id
    assert event["region"] == stack.aws.region
    assert event["resources"] == [schedule.rule_arn]
    assert event["detail"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert uuid.UUID(event["id"]) and event["id"] != calls[1]["event"]["id"]
    assert calls[0]["service"] == "expediente-results"
    assert calls[0]["function_name"] == "expediente-local-results"
    # The rule it stands for exists in the embedded AWS, as the stateless stack declares it.
    rule = stack.aws.client("events").describe_rule(Name=schedule.rule_name)
    assert rule["Arn"] == schedule.rule_arn
    assert rule["ScheduleExpression"] == "rate(1 minute)"


def test_scheduled_event_matches_eventbridges_shape():
    event = scheduled_event(rule_arn="arn:aws:events:us-east-1:123456789012:rule/r", region="us-east-1",
                            account_id="123456789012", now=0)
    assert event["time"] == "1970-01-01T00:00:00Z"
    assert event["detail-type"] == "Scheduled Event"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/r"]


# -- starting and stopping ------------------------------------------------------------------------


def test_dispatcher_and_scheduler_stop_promptly_and_leave_no_thread(stack, probe):
    runner = FunctionRunner(stack.aws, handlers={"orders": probe.lambda_handler, "results": probe.lambda_handler})
    dispatcher = QueueDispatcher(stack.aws, runner, mappings=[EventSourceMapping("orders", "scratch")],
                                 queues={"scratch": scratch_queue(stack, visibility_s=30, max_receive_count=5)})
    scheduler = Scheduler(stack.aws, runner, period_s=60)
    dispatcher.start()
    scheduler.start()
    assert dispatcher.running and scheduler.running
    started = time.monotonic()
    scheduler.stop()
    dispatcher.stop()
    assert time.monotonic() - started < 3
    assert not dispatcher.running and not scheduler.running
    names = {thread.name for thread in threading.enumerate()}
    assert "sqs scratch -> orders" not in names


def test_a_zero_period_turns_the_schedules_off(stack):
    scheduler = Scheduler(stack.aws, FunctionRunner(stack.aws), period_s=0)
    scheduler.start()
    assert not scheduler.running
    scheduler.stop()


def test_the_local_stack_runs_both_services(stack):
    assert stack.dispatcher is not None and stack.dispatcher.running
    assert [(m.function_id, m.queue_id) for m in stack.dispatcher.mappings] == [
        (fn.id, queue) for fn in definitions.FUNCTIONS for queue in fn.consumes]
    assert ("dicom_ingest", "ingest") in [(m.function_id, m.queue_id) for m in stack.dispatcher.mappings]
    assert stack.scheduler is not None and stack.scheduler.running
