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


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_orders, types=("ServiceRequest",))
