"""The only code that talks to DynamoDB for prescriptions.

Items in the ``prescriptions`` table (layout hidden from callers; see :mod:`expediente.clinical`):
- versioned ``MedicationRequest``, ``DetectedIssue``, ``AllergyIntolerance``, ``MedicationDispense``,
  the tenant's local ``Medication`` items and the prescriptions' signature ``Provenance``;
- their search index items (a patient's prescriptions; the current ones, draft or active, that
  the checks read; a prescription's alerts and dispensations; a patient's allergies; local items);
- hidden catalogue items: ``<tenant>#FORMULARY#HIDDEN`` / ``<item id>``;
- receta verification tokens: ``RECETA#<token>`` / ``TOKEN`` (tenant and prescription id), the
  only tenant-less key, because a pharmacy reads it without an account.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from expediente import aws
from expediente.clinical import ClinicalRepository
from expediente.context import RequestContext, TenantId
from expediente.settings import settings
from expediente.store import get_item, query

from .formulary import Formulary, Item, local_item

TYPES = ("MedicationRequest", "DetectedIssue", "AllergyIntolerance", "MedicationDispense", "Medication", "Provenance")


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_prescriptions, types=TYPES)


def _hidden_partition(tenant: TenantId) -> str:
    return f"{tenant}#FORMULARY#HIDDEN"


def hidden_ids(tenant: TenantId) -> frozenset[str]:
    """The catalogue items the tenant hides (one Query; a chain hides at most a few hundred)."""
    found: set[str] = set()
    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {"TableName": settings().table_prescriptions,
                                "KeyConditionExpression": "pk = :pk",
                                "ExpressionAttributeValues": aws.to_item({":pk": _hidden_partition(tenant)})}
        if start:
            args["ExclusiveStartKey"] = start
        response = query(**args)
        for raw in response.get("Items", []):
            item = aws.from_item(raw)
            if item.get("hidden"):
                found.add(str(item["sk"]))
        start = response.get("LastEvaluatedKey")
        if not start:
            return frozenset(found)


def hide_op(ctx: RequestContext, item_id: str, *, hidden: bool) -> dict[str, Any]:
    """A transaction element hiding (or showing again) a catalogue item for the tenant."""
    return {"Put": {"TableName": settings().table_prescriptions, "Item": aws.to_item({
        "pk": _hidden_partition(ctx.tenant), "sk": item_id, "hidden": hidden, "by": ctx.user_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds")})}}


def local_items(ctx: RequestContext) -> dict[str, Item]:
    """The tenant's local items (and its versions of catalogue items), by id."""
    repo = repository()
    ids: list[str] = []
    token: str | None = None
    while True:
        page = repo.indexes["Medication"].page(ctx.tenant, "formulary", "local", limit=100, token=token,
                                               fingerprint="local")
        ids += page.ids
        token = page.next_token
        if token is None:
            break
    stored = repo.stores["Medication"].batch_get(ctx.tenant, ids) if ids else {}
    return {rid: local_item(s.resource, rid) for rid, s in stored.items()}


def formulary(ctx: RequestContext) -> Formulary:
    """The tenant's view of the formulary."""
    return Formulary(local=local_items(ctx), hidden=hidden_ids(ctx.tenant))


def token_item(token: str, tenant: TenantId, request_id: str) -> dict[str, Any]:
    """A transaction element creating the receta verification token (never reused)."""
    return {"Put": {"TableName": settings().table_prescriptions,
                    "Item": aws.to_item({"pk": f"RECETA#{token}", "sk": "TOKEN", "tenant": tenant,
                                         "rid": request_id}),
                    "ConditionExpression": "attribute_not_exists(pk)"}}


def find_token(token: str) -> tuple[TenantId, str] | None:
    """The tenant and prescription id a receta token names, or None.

    Read with the execution role (decision 0023): no tenant is known before the token names one.
    """
    with aws.global_access():
        item = get_item(settings().table_prescriptions, {"pk": f"RECETA#{token}", "sk": "TOKEN"})
    return None if item is None else (TenantId(str(item["tenant"])), str(item["rid"]))
