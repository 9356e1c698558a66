"""Search index items for versioned resources: bounded, newest-first lists without a Scan.

A resource is found through small index items written in the same transaction as the
resource (so they never disagree with it). Each item sits in one *facet* partition,
``<tenant>#<Type>#IX#<facet>#<value>`` (for example every note of one patient, or every
encounter of one clinic), with sort key ``<sort>#<id>`` where ``<sort>`` is the resource's
date. A list is one ``Query`` on one facet partition, newest first, reading at most
``_count`` items per page whatever the size of the table or of the patient's record:
listing a patient with 5,000 notes costs what listing one with 10 costs. The other search
parameters are checked on attributes the items carry (status, type, ...), never on the
encrypted body. Index items hold opaque ids and codes only, never names or narrative.

Callers describe a resource with an :class:`Entry`; repositories turn entries into
``TransactWriteItems`` elements with :meth:`ResourceIndex.changes` and read pages with
:meth:`ResourceIndex.page`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expediente import aws
from expediente.context import TenantId
from expediente.fhir import decode_page_token, encode_page_token
from expediente.store import query

HIGH = "\uffff"


@dataclass(frozen=True)
class Entry:
    """How one resource version is found.

    ``sort`` orders a facet (an ISO date or instant; newest first); ``facets`` maps a facet
    name to the values the resource is listed under; ``attrs`` are what searches filter on.
    """

    sort: str
    facets: Mapping[str, tuple[str, ...]]
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    ids: list[str]
    next_token: str | None


class ResourceIndex:
    """The index items of one resource type in one table."""

    def __init__(self, *, table: str, resource_type: str) -> None:
        self.table = table
        self.resource_type = resource_type

    def partition(self, tenant: TenantId, facet: str, value: str) -> str:
        return f"{tenant}#{self.resource_type}#IX#{facet}#{value}"

    def _items(self, tenant: TenantId, resource_id: str, entry: Entry | None) -> dict[tuple[str, str], dict[str, Any]]:
        if entry is None:
            return {}
        attrs = {**entry.attrs, "rid": resource_id, "at": entry.sort}
        return {
            (self.partition(tenant, facet, value), f"{entry.sort}#{resource_id}"): attrs
            for facet, values in entry.facets.items()
            for value in dict.fromkeys(values)
            if value
        }

    def changes(self, tenant: TenantId, resource_id: str, old: Entry | None, new: Entry) -> list[dict[str, Any]]:
        """Transaction elements moving the resource's index items from ``old`` to ``new``."""
        before, after = self._items(tenant, resource_id, old), self._items(tenant, resource_id, new)
        ops: list[dict[str, Any]] = [
            {"Delete": {"TableName": self.table, "Key": aws.to_item({"pk": pk, "sk": sk})}}
            for pk, sk in before.keys() - after.keys()
        ]
        ops += [
            {"Put": {"TableName": self.table, "Item": aws.to_item({"pk": pk, "sk": sk, **attrs})}}
            for (pk, sk), attrs in after.items()
            if before.get((pk, sk)) != attrs
        ]
        return ops

    def page(
        self,
        tenant: TenantId,
        facet: str,
        value: str,
        *,
        limit: int,
        token: str | None,
        fingerprint: str,
        low: str | None = None,
        high: str | None = None,
        newest_first: bool = True,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Page:
        """One page of resource ids listed under ``facet=value``, between the dates ``low`` and ``high``.

        Reads at most ``limit`` index items; ``keep`` drops items whose attributes do not match
        the other search parameters (a page may then hold fewer than ``limit`` ids and still
        have a next page). ``token`` continues a previous page of the same search only.
        """
        items, next_token = self.items(tenant, facet, value, limit=limit, token=token, fingerprint=fingerprint,
                                       low=low, high=high, newest_first=newest_first)
        ids = [str(item["rid"]) for item in items if keep is None or keep(item)]
        return Page(list(dict.fromkeys(ids)), next_token)

    def items(
        self,
        tenant: TenantId,
        facet: str,
        value: str,
        *,
        limit: int,
        token: str | None,
        fingerprint: str,
        low: str | None = None,
        high: str | None = None,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of index items (their attributes, ``rid`` and ``at``) and the next page's token.

        For summaries that need only what the items carry (counts, statuses), not the resources.
        """
        partition = self.partition(tenant, facet, value)
        start = decode_page_token(token, partition=partition, fingerprint=fingerprint)
        # Sort keys start with an ISO date, so "0" is below all of them (DynamoDB rejects an empty key value).
        values: dict[str, Any] = {":pk": partition, ":low": low or "0", ":high": (high or "") + HIGH}
        args: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": aws.to_item(values),
            "ScanIndexForward": not newest_first,
            "Limit": limit,
        }
        if start:
            args["ExclusiveStartKey"] = start
        response = query(**args)
        items = [aws.from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return items, (encode_page_token(last, fingerprint) if last else None)
