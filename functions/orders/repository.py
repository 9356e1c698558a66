"""The only code that talks to DynamoDB for orders.

Items in the ``orders`` table (layout hidden from callers; see :mod:`expediente.clinical`):
- versioned ``ServiceRequest`` (``<tenant>#ServiceRequest#<id>`` / ``CURRENT`` and ``V#n``);
- search index items per facet: a patient's, an encounter's, a clinic's orders, and the worklist
  of each clinic and status (``<tenant>#ServiceRequest#IX#worklist#<CLUES>|<status>``);
- number guards: ``<tenant>#NUMBER#<accession or placer number>`` / ``GUARD`` (holds the order id),
  written with the order so a number is never given twice in a tenant.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from expediente import aws
from expediente.clinical import ClinicalRepository
from expediente.context import TenantId
from expediente.index import ResourceIndex
from expediente.settings import settings
from expediente.store import get_item


def number_guard(table: str, tenant: TenantId, number: str, order_id: str) -> dict[str, Any]:
    """A transaction element claiming ``number`` for the order; fails if the number is taken."""
    return {"Put": {"TableName": table,
                    "Item": aws.to_item({"pk": f"{tenant}#NUMBER#{number}", "sk": "GUARD", "rid": order_id}),
                    "ConditionExpression": "attribute_not_exists(pk)"}}


def find_by_number(tenant: TenantId, number: str) -> str | None:
    """The id of the tenant's order with this accession or placer number, or None."""
    item = get_item(settings().table_orders, {"pk": f"{tenant}#NUMBER#{number}", "sk": "GUARD"})
    return None if item is None else str(item["rid"])


def result_summary(tenant: TenantId, order_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The index attributes (status, code) of the results domain's reports and results based on an order.

    Reads the results table's index through :class:`~expediente.index.ResourceIndex` (one Query
    per type; an order has a handful of results), never the encrypted results themselves.
    """
    found: list[list[dict[str, Any]]] = []
    for resource_type in ("DiagnosticReport", "Observation"):
        index = ResourceIndex(table=settings().table_results, resource_type=resource_type)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page, token = index.items(tenant, "order", order_id, limit=100, token=token, fingerprint=order_id)
            items += page
            if token is None:
                break
        found.append(items)
    return found[0], found[1]


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_orders, types=("ServiceRequest",))
