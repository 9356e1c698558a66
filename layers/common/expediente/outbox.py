"""Transactional outbox: no domain event is lost once the change it describes is committed (decision 0028).

Every event is written as an item of the ``outbox`` table **in the same** ``TransactWriteItems`` as the
change it announces (:func:`expediente.store.transact` with ``events=``): the change and its events are
committed together or not at all. After the commit the handler publishes at once, as before
(:func:`expediente.events.publish` recognises the events it committed here), and deletes the items
that reached the bus. What a failed ``PutEvents`` (or a Lambda that died after the commit) leaves
behind, the ``outbox_relay`` schedule publishes a minute later (:func:`relay`).

Layout (callers never build these keys): partition ``<tenant>#OUTBOX``, sort key
``<ISO 8601 UTC time>#<uuid>`` so one Query per tenant finds the items older than a cutoff, oldest
first. An item holds the ``PutEvents`` entry (source, detail-type, detail JSON; the bus is added
when it is sent) and a TTL 14 days away, a backstop only: the relay alarm fires long before.
The outbox is not clinical data (events carry opaque ids only), so delivered items are deleted.

Delivery is at least once: an event whose item could not be deleted after it was published is
published again by the relay, so consumers are idempotent (the orders consumer advances an order only
when its status actually changes).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from expediente import aws
from expediente.settings import settings

if TYPE_CHECKING:
    from expediente.events import DomainEvent

logger = Logger(service="expediente")

TTL_DAYS = 14
# The relay leaves younger items to the request that wrote them (it publishes within milliseconds).
RELAY_MIN_AGE_S = 60
# An item this old has survived several relay runs: the OutboxStale alarm (infra/constructs/monitoring.py).
STALE_AFTER_S = 300
RELAY_PAGE = 100
BATCH_DELETE_MAX = 25  # BatchWriteItem quota
# Committed-but-not-yet-published items remembered per execution context; older ones are left to the relay.
_REMEMBERED_MAX = 1000


def partition(tenant: str) -> str:
    return f"{tenant}#OUTBOX"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Pending:
    """One outbox item: its key and the ``PutEvents`` entry it carries (without the bus)."""

    tenant: str
    sk: str
    entry: dict[str, str]
    event: Any = field(default=None, compare=False)

    def key(self) -> dict[str, Any]:
        return aws.to_item({"pk": partition(self.tenant), "sk": self.sk})


def pending(events: Iterable[DomainEvent], *, now: datetime | None = None) -> list[Pending]:
    """The outbox items of ``events`` (not yet written)."""
    moment = _iso(now or datetime.now(UTC))
    return [Pending(e.tenant_id, f"{moment}#{uuid.uuid4()}", _entry(e), e) for e in events]


def _entry(event: DomainEvent) -> dict[str, str]:
    return {"Source": _source(), "DetailType": event.detail_type(),
            "Detail": json.dumps(event.model_dump(mode="json"))}


def _source() -> str:
    from expediente.events import SOURCE

    return SOURCE


def put_ops(items: Sequence[Pending], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """``TransactWriteItems`` elements writing ``items`` (each one new: a duplicate key fails the transaction)."""
    expires = int(((now or datetime.now(UTC)) + timedelta(days=TTL_DAYS)).timestamp())
    table = settings().table_outbox
    return [{"Put": {
        "TableName": table,
        "Item": aws.to_item({"pk": partition(p.tenant), "sk": p.sk, "source": p.entry["Source"],
                             "detail_type": p.entry["DetailType"], "detail": p.entry["Detail"],
                             "expires_at": expires}),
        "ConditionExpression": "attribute_not_exists(pk)",
    }} for p in items]


# ------------------------------------------------------------------ after the commit ---

_committed: ContextVar[tuple[Pending, ...]] = ContextVar("expediente_outbox_committed", default=())


def remember(items: Sequence[Pending]) -> None:
    """Record ``items`` as committed in this execution context (``store.transact`` calls it)."""
    if items:
        _committed.set((*_committed.get(), *items)[-_REMEMBERED_MAX:])


def claim(events: Sequence[DomainEvent]) -> list[Pending | None]:
    """For each event, its committed outbox item (now forgotten here), or None if it was not committed here.

    An event matches the item of the same object or, failing that, of an event of the same type and
    content apart from ``occurred_at`` (a handler may build its event again after the commit); the
    item's entry, as committed, is what gets published.
    """
    remaining = list(_committed.get())
    found: list[Pending | None] = []
    for event in events:
        index = next((i for i, p in enumerate(remaining) if p.event is event), None)
        if index is None:
            wanted = _content(event)
            index = next((i for i, p in enumerate(remaining) if p.event is not None and _content(p.event) == wanted),
                         None)
        found.append(None if index is None else remaining.pop(index))
    _committed.set(tuple(remaining))
    return found


def _content(event: DomainEvent) -> tuple[str, dict[str, Any]]:
    return event.detail_type(), event.model_dump(exclude={"occurred_at"})


def forget() -> None:
    """Drop what this context remembers (tests; the items stay in the table for the relay)."""
    _committed.set(())


def delete(items: Sequence[Pending]) -> int:
    """Delete delivered items, best effort: returns how many are known deleted.

    A failure is logged by key only and leaves the item for the relay, which publishes it again
    (at least once).
    """
    from expediente.context import tenant_scope

    deleted = 0
    by_tenant: dict[str, list[Pending]] = {}
    for item in items:
        by_tenant.setdefault(item.tenant, []).append(item)
    # One batch per tenant, signed with that tenant's credentials (decision 0023): a batch is
    # authorized key by key, and one caller may publish events of several tenants (dicom_ingest).
    chunks = [(tenant, group[start:start + BATCH_DELETE_MAX]) for tenant, group in by_tenant.items()
              for start in range(0, len(group), BATCH_DELETE_MAX)]
    for tenant, chunk in chunks:
        request = {settings().table_outbox: [{"DeleteRequest": {"Key": p.key()}} for p in chunk]}
        try:
            with tenant_scope(tenant):
                response = aws.client("dynamodb").batch_write_item(RequestItems=request)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("outbox items not deleted", extra={"items": len(chunk),
                                                               "error": aws.error_code(exc) or type(exc).__name__})
            continue
        left = len((response.get("UnprocessedItems") or {}).get(settings().table_outbox, []))
        if left:
            logger.warning("outbox items not deleted", extra={"items": left, "error": "unprocessed"})
        deleted += len(chunk) - left
    return deleted


# ------------------------------------------------------------------ relay ---


@dataclass
class RelayReport:
    """What one relay run found and did, over every tenant."""

    found: int = 0        # items older than the minimum age
    stale: int = 0        # of those, older than STALE_AFTER_S (alarmed)
    relayed: int = 0      # published and deleted
    failed: int = 0       # not accepted by PutEvents: kept for the next run
    tenants_failed: list[str] = field(default_factory=list)


def relay(tenants: Iterable[str], *, now: datetime | None = None, min_age_s: int = RELAY_MIN_AGE_S,
          page_size: int = RELAY_PAGE) -> RelayReport:
    """Publish every outbox item older than ``min_age_s`` of each tenant, and delete the delivered ones.

    One Query per page on each tenant's partition (never a Scan), under that tenant's scoped
    credentials. Items PutEvents refuses stay for the next run. A tenant whose outbox cannot be read
    is logged, named in the report and skipped; the others go on.
    """
    from expediente.context import tenant_scope

    moment = now or datetime.now(UTC)
    cutoff = _iso(moment - timedelta(seconds=min_age_s))
    stale_before = _iso(moment - timedelta(seconds=STALE_AFTER_S))
    report = RelayReport()
    for tenant in tenants:
        try:
            with tenant_scope(tenant):
                _relay_tenant(tenant, cutoff, stale_before, page_size, report)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("outbox relay failed for a tenant",
                           extra={"tenant": tenant, "error": aws.error_code(exc) or type(exc).__name__})
            report.tenants_failed.append(tenant)
    return report


def _relay_tenant(tenant: str, cutoff: str, stale_before: str, page_size: int, report: RelayReport) -> None:
    from expediente import events

    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {
            "TableName": settings().table_outbox,
            "KeyConditionExpression": "pk = :pk AND sk < :cutoff",
            "ExpressionAttributeValues": aws.to_item({":pk": partition(tenant), ":cutoff": cutoff}),
            "Limit": page_size,
        }
        if start:
            args["ExclusiveStartKey"] = start
        response = aws.client("dynamodb").query(**args)
        found = [_from_item(tenant, aws.from_item(raw)) for raw in response.get("Items", [])]
        report.found += len(found)
        report.stale += sum(1 for p in found if p.sk < stale_before)
        accepted = events.send([p.entry for p in found])
        delivered = [p for p, ok in zip(found, accepted, strict=True) if ok]
        report.failed += len(found) - len(delivered)
        delete(delivered)
        report.relayed += len(delivered)
        start = response.get("LastEvaluatedKey")
        if not start:
            return


def _from_item(tenant: str, item: dict[str, Any]) -> Pending:
    return Pending(tenant, str(item["sk"]), {"Source": str(item["source"]), "DetailType": str(item["detail_type"]),
                                             "Detail": str(item["detail"])})
