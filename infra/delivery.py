"""How queued and scheduled work reaches the functions: settings shared by the CDK stacks and the
local stack, so both deliver the same way.

Plain Python only (no CDK or boto3 import): ``local/`` imports it without loading CDK.

- A queue a function consumes (``FunctionDef.consumes``) is delivered in batches of up to
  :data:`CONSUMER_BATCH_SIZE` records, gathered for at most :data:`CONSUMER_BATCHING_WINDOW_S`;
  the function reports the records that failed (``batchItemFailures``) and only those return to
  the queue. A record received :data:`MAX_RECEIVE_COUNT` times is parked in the queue's
  dead-letter queue by its redrive policy.
- Such a queue hides a received batch for :func:`visibility_timeout_s`: six times the longest
  timeout of its consumers plus the batching window, as AWS advises for Lambda event sources.
- A ``ScheduleDef`` is an EventBridge rule with :func:`rate_expression` on the default bus.
"""

from __future__ import annotations

from infra import definitions

CONSUMER_BATCH_SIZE = 10
CONSUMER_BATCHING_WINDOW_S = 2
CONSUMER_VISIBILITY_FACTOR = 6
# A message is retried this many times before it is parked in the dead-letter queue.
MAX_RECEIVE_COUNT = 5
# The ingest queue (S3 ObjectCreated of the ingest bucket), consumed by the dicom_ingest function.
INGEST_QUEUE_ID = "ingest"


def consumers(queue_id: str) -> tuple[definitions.FunctionDef, ...]:
    """The functions that consume queue ``queue_id`` (``FunctionDef.consumes``)."""
    return tuple(fn for fn in definitions.FUNCTIONS if queue_id in fn.consumes)


def visibility_timeout_s(queue_id: str) -> int | None:
    """The visibility timeout a queue is created with; None for SQS's default (30 s).

    Lambda refuses an event source whose queue hides messages for less than the function's
    timeout, hence the factor over the longest consumer's timeout.
    """
    timeouts = [fn.timeout_s for fn in consumers(queue_id)]
    if not timeouts:
        return None
    return CONSUMER_VISIBILITY_FACTOR * max(timeouts) + CONSUMER_BATCHING_WINDOW_S


def rate_expression(minutes: int) -> str:
    """EventBridge's ``rate(...)`` for a period in minutes (``rate(1 minute)``, ``rate(5 minutes)``)."""
    if minutes < 1:
        raise ValueError(f"a schedule runs at most every minute, not every {minutes}")
    return f"rate({minutes} minute{'' if minutes == 1 else 's'})"


_UNIT_MINUTES = {"minute": 1, "minutes": 1, "hour": 60, "hours": 60, "day": 24 * 60, "days": 24 * 60}


def rate_minutes(expression: str) -> int:
    """The period of a ``rate(...)`` expression in minutes (``rate(1 hour)`` -> 60).

    CDK writes ``Schedule.rate`` in the largest whole unit, so compare periods, not strings.
    Raises ValueError for anything else (a ``cron(...)`` expression included).
    """
    inner = expression.strip()
    if not (inner.startswith("rate(") and inner.endswith(")")):
        raise ValueError(f"not a rate expression: {expression!r}")
    value, _, unit = inner[len("rate("):-1].strip().partition(" ")
    if not value.isdigit() or unit.strip() not in _UNIT_MINUTES:
        raise ValueError(f"not a rate expression: {expression!r}")
    return int(value) * _UNIT_MINUTES[unit.strip()]
