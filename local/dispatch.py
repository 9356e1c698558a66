"""What Lambda and EventBridge do with queued and scheduled work, for the local stack.

moto stores SQS messages and schedule rules but never invokes a function. Two background services
do it here, in-process, through the front door's :class:`~local.frontdoor.FunctionRunner` (the
function's environment, a Lambda-like context and the process-wide lock, so at most one handler
runs at a time in the process, whoever called it):

- :class:`QueueDispatcher` — the SQS event source mappings of ``FunctionDef.consumes``. One
  thread per (function, queue) long-polls the queue (waits of :data:`POLL_WAIT_S`), builds the
  event Lambda sends (``{"Records": [...]}``, ``eventSource`` ``aws:sqs``) for up to
  ``infra.delivery.CONSUMER_BATCH_SIZE`` messages and invokes the handler. As with
  ``ReportBatchItemFailures``: the messages a handler lists in ``batchItemFailures`` stay in the
  queue (visible again after its visibility timeout; the redrive policy parks them in the
  dead-letter queue after ``maxReceiveCount`` receives) and the others are deleted; if the handler
  raises, times out or answers something Lambda would reject, no message is deleted.
- :class:`Scheduler` — the EventBridge schedules of ``SCHEDULES``. One thread per schedule
  invokes the function every ``minutes`` with the ``Scheduled Event`` EventBridge sends
  (``source`` ``aws.events``, the rule's ARN in ``resources``). ``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS``
  replaces every period with that many seconds (tests, demos); ``0`` turns the schedules off.

Both stop cleanly: ``stop`` sets an event, lets the current poll (at most :data:`POLL_WAIT_S`)
or invocation finish and joins the threads.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra import delivery
from infra.definitions import FUNCTIONS
from local.aws import LocalAws, QueueInfo, ScheduleInfo
from local.frontdoor import FunctionError, FunctionRunner

logger = logging.getLogger(__name__)

SCHEDULE_SECONDS_ENV = "EXPEDIENTE_LOCAL_SCHEDULE_SECONDS"
# Long-poll wait per receive: short, so that stop() returns within about a second.
POLL_WAIT_S = 1
# Pause after a failed receive or delete (the embedded AWS stopping, a transient error).
ERROR_BACKOFF_S = 1.0
JOIN_TIMEOUT_S = 30.0

# The message system attributes Lambda copies into a record's ``attributes``.
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
    "SequenceNumber", "MessageGroupId", "MessageDeduplicationId", "AWSTraceHeader",
)


@dataclass(frozen=True)
class EventSourceMapping:
    """One SQS event source: ``queue_id`` delivered to ``function_id`` in batches."""

    function_id: str
    queue_id: str
    batch_size: int = delivery.CONSUMER_BATCH_SIZE
    report_batch_item_failures: bool = True


def event_source_mappings() -> tuple[EventSourceMapping, ...]:
    """The mappings ``infra.definitions`` declares (``FunctionDef.consumes``), as the CDK stack makes them."""
    return tuple(EventSourceMapping(fn.id, queue_id) for fn in FUNCTIONS for queue_id in fn.consumes)


def describe_event_sources() -> dict[str, dict[str, dict[str, Any]]]:
    """``{function_id: {queue_id: {"batch_size", "report_batch_item_failures"}}}`` of the dispatcher."""
    described: dict[str, dict[str, dict[str, Any]]] = {}
    for mapping in event_source_mappings():
        described.setdefault(mapping.function_id, {})[mapping.queue_id] = {
            "batch_size": mapping.batch_size,
            "report_batch_item_failures": mapping.report_batch_item_failures,
        }
    return described


# -- events -------------------------------------------------------------------------------------


def sqs_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The record Lambda builds for one message of ``ReceiveMessage`` (``AttributeNames=["All"]``)."""
    body = str(message.get("Body", ""))
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {
            name: str(value) for name, value in (message.get("Attributes") or {}).items()
            if name in _RECORD_ATTRIBUTES
        },
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode("utf-8")).hexdigest(),  # noqa: S324 - SQS's checksum
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS's ``{"StringValue"|"BinaryValue", "DataType"}`` in Lambda's camelCase record form."""
    attribute: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType")}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        attribute["binaryValue"] = base64.b64encode(raw).decode("ascii") if isinstance(raw, bytes) else raw
    return attribute


def sqs_event(messages: Iterable[Mapping[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The event an SQS event source mapping sends: ``{"Records": [...]}``."""
    return {"Records": [sqs_record(message, queue_arn=queue_arn, region=region) for message in messages]}


def scheduled_event(*, rule_arn: str, region: str, account_id: str, now: float | None = None) -> dict[str, Any]:
    """The ``Scheduled Event`` EventBridge sends a rule's target, field for field."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def failed_message_ids(result: Any, batch: Sequence[str]) -> set[str] | None:
    """The message ids to keep after a ``ReportBatchItemFailures`` invocation that returned ``result``.

    An empty set means every message succeeded (``None``, ``{}``, no or an empty or null
    ``batchItemFailures``); ``None`` means Lambda would treat the whole batch as failed (not an
    object, or an entry without a string ``itemIdentifier`` naming a message of the batch).
    """
    if result is None:
        return set()
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch:
            return None
        failed.add(identifier)
    return failed


# -- services ------------------------------------------------------------------------------------


class _Service:
    """Daemon threads that run until ``stop``."""

    name = "service"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Stop every thread after its current poll or invocation; safe to call twice."""
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("%s did not stop within %.0f s", thread.name, JOIN_TIMEOUT_S)
        if threads:
            logger.info("%s stopped", self.name)


class QueueDispatcher(_Service):
    """Delivers the consumed queues to their functions, as Lambda's SQS event sources do.

    ``mappings`` defaults to :func:`event_source_mappings`; ``queues`` (queue id → ``QueueInfo``)
    to the provisioned ones, so a test can point a mapping at a queue of its own.
    """

    name = "queue dispatcher"

    def __init__(
        self,
        local_aws: LocalAws,
        runner: FunctionRunner,
        *,
        mappings: Sequence[EventSourceMapping] | None = None,
        queues: Mapping[str, QueueInfo] | None = None,
    ) -> None:
        super().__init__()
        self._local_aws = local_aws
        self._runner = runner
        self.mappings = tuple(event_source_mappings() if mappings is None else mappings)
        self._queues = dict(local_aws.queues if queues is None else queues)
        for mapping in self.mappings:
            if mapping.queue_id not in self._queues:
                raise KeyError(f"{mapping.function_id} consumes {mapping.queue_id!r}, which is not provisioned")

    def start(self) -> None:
        """One polling thread per mapping."""
        for mapping in self.mappings:
            self._spawn(f"sqs {mapping.queue_id} -> {mapping.function_id}", functools.partial(self._poll, mapping))
        if self.mappings:
            logger.info("queue dispatcher polling %s",
                        ", ".join(f"{m.queue_id} -> {m.function_id}" for m in self.mappings))

    def _poll(self, mapping: EventSourceMapping) -> None:
        queue = self._queues[mapping.queue_id]
        sqs = self._local_aws.client("sqs")
        while not self._stop.is_set():
            try:
                answer = sqs.receive_message(
                    QueueUrl=queue.url, MaxNumberOfMessages=min(mapping.batch_size, 10),
                    WaitTimeSeconds=POLL_WAIT_S, AttributeNames=["All"], MessageAttributeNames=["All"],
                )
            except (BotoCoreError, ClientError) as error:
                if not self._stop.is_set():
                    logger.warning("cannot receive from %s: %s", queue.name, error)
                    self._stop.wait(ERROR_BACKOFF_S)
                continue
            messages = answer.get("Messages", [])
            if not messages:
                continue
            if self._stop.is_set():  # received while stopping: hand them back at once
                self._release(sqs, queue, messages)
                break
            try:
                self.deliver(mapping, queue, messages, sqs=sqs)
            except (BotoCoreError, ClientError) as error:  # the deletes: the messages come back later
                logger.warning("cannot delete delivered messages from %s: %s", queue.name, error)

    def deliver(self, mapping: EventSourceMapping, queue: QueueInfo, messages: Sequence[Mapping[str, Any]],
                *, sqs: Any = None) -> set[str]:
        """Invoke the function with ``messages``; delete those that succeeded and return their ids."""
        sqs = sqs or self._local_aws.client("sqs")
        event = sqs_event(messages, queue_arn=queue.arn, region=self._local_aws.region)
        batch = [str(message["MessageId"]) for message in messages]
        try:
            result = self._runner.invoke(mapping.function_id, event)
        except FunctionError as error:
            logger.error("%s failed on a batch of %d from %s: %s; every message returns to the queue",
                         mapping.function_id, len(batch), queue.name, error)
            return set()
        failed = failed_message_ids(result, batch) if mapping.report_batch_item_failures else set()
        if failed is None:
            logger.error("%s answered a batch of %s with an invalid batchItemFailures response; every message "
                         "returns to the queue", mapping.function_id, queue.name)
            return set()
        done = [message for message in messages if message["MessageId"] not in failed]
        self._delete(sqs, queue, done)
        if failed:
            logger.warning("%s reported %d of %d messages from %s as failed; they return to the queue",
                           mapping.function_id, len(failed), len(batch), queue.name)
        return {str(message["MessageId"]) for message in done}

    def _delete(self, sqs: Any, queue: QueueInfo, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            answer = sqs.delete_message_batch(QueueUrl=queue.url, Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(chunk)
            ])
            for failure in answer.get("Failed", []):
                logger.warning("cannot delete a message from %s: %s", queue.name, failure.get("Code"))

    def _release(self, sqs: Any, queue: QueueInfo, messages: Sequence[Mapping[str, Any]]) -> None:
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue.url, Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
                for index, message in enumerate(messages)
            ])
        except (BotoCoreError, ClientError) as error:
            logger.debug("cannot hand messages back to %s: %s", queue.name, error)


def configured_schedule_seconds() -> float | None:
    """``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS`` as a number (0 = schedules off), or None when unset.

    Raises ValueError when it is set to something else than a non-negative number.
    """
    raw = os.environ.get(SCHEDULE_SECONDS_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{SCHEDULE_SECONDS_ENV} must be a number of seconds, not {raw!r}") from None
    if seconds < 0:
        raise ValueError(f"{SCHEDULE_SECONDS_ENV} must not be negative, not {raw!r}")
    return seconds


class Scheduler(_Service):
    """Invokes each scheduled function every period with a ``Scheduled Event``, as EventBridge does.

    The period is the schedule's ``minutes``, unless ``period_s`` (or, when it is None,
    ``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS``) gives seconds for every schedule; 0 runs nothing. The
    first run comes one period after ``start``; a run that overlaps the next tick delays it
    (EventBridge would run both, but invocations here are one at a time anyway).
    """

    name = "scheduler"

    def __init__(self, local_aws: LocalAws, runner: FunctionRunner, *, period_s: float | None = None,
                 schedules: Mapping[str, ScheduleInfo] | None = None) -> None:
        super().__init__()
        self._local_aws = local_aws
        self._runner = runner
        self._period_override = configured_schedule_seconds() if period_s is None else period_s
        self.schedules = dict(local_aws.schedules if schedules is None else schedules)
        self.runs: dict[str, int] = dict.fromkeys(self.schedules, 0)

    def period_s(self, schedule: ScheduleInfo) -> float:
        """Seconds between two runs of ``schedule`` (0: it does not run)."""
        return schedule.minutes * 60.0 if self._period_override is None else self._period_override

    def start(self) -> None:
        """One thread per schedule with a positive period."""
        for schedule in self.schedules.values():
            period = self.period_s(schedule)
            if period <= 0:
                logger.info("schedule %s is off (%s=0)", schedule.id, SCHEDULE_SECONDS_ENV)
                continue
            self._spawn(f"schedule {schedule.id}", functools.partial(self._run, schedule, period))
            logger.info("schedule %s invokes %s every %g s", schedule.id, schedule.function, period)

    def _run(self, schedule: ScheduleInfo, period: float) -> None:
        next_run = time.monotonic() + period
        while not self._stop.wait(max(0.0, next_run - time.monotonic())):
            self.fire(schedule)
            next_run = max(next_run + period, time.monotonic())

    def fire(self, schedule: ScheduleInfo) -> Any:
        """Invoke ``schedule``'s function once now; returns its result (None if it failed)."""
        event = scheduled_event(rule_arn=schedule.rule_arn, region=self._local_aws.region,
                                account_id=self._local_aws.account_id)
        self.runs[schedule.id] = self.runs.get(schedule.id, 0) + 1
        try:
            return self._runner.invoke(schedule.function, event)
        except FunctionError as error:
            logger.error("schedule %s: %s (the next run comes in %g s)", schedule.id, error, self.period_s(schedule))
            return None
