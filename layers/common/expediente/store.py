"""Versioned FHIR resources on DynamoDB: the repository base every domain uses.

Layout (callers never build these keys): a resource lives in the partition
``<tenant>#<Type>#<id>``; sort key ``CURRENT`` holds the current version and
``V#<version>`` every version ever written, so vread and ``_history`` read
exactly what was stored. Resource bodies are encrypted at the application level
(:class:`expediente.crypto.Envelope`) with the tenant, type, id and version as
associated data. Nothing is ever hard-deleted (NOM-004 5.11).

A write of version *n* is a pair of puts conditioned on the current version
being *n-1* (optimistic concurrency: the loser gets 412), returned as
``TransactWriteItems`` elements so the caller adds its guards, index items and
audit record to the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit, audit_chain, aws
from expediente.context import TenantId
from expediente.crypto import Envelope
from expediente.errors import ServiceUnavailable

CURRENT = "CURRENT"


@dataclass(frozen=True)
class Stored:
    """One stored version of a resource (decrypted)."""

    resource: dict[str, Any]
    version: int
    last_updated: str
    attrs: dict[str, Any] = field(default_factory=dict)


class TransactionConflict(Exception):
    """A condition in a transaction failed; ``reasons`` has one code per element."""

    def __init__(self, reasons: list[str]):
        super().__init__(",".join(reasons))
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


def partition(tenant: TenantId, resource_type: str, resource_id: str) -> str:
    return f"{tenant}#{resource_type}#{resource_id}"


def version_sk(version: int) -> str:
    return f"V#{version:010d}"


class VersionedStore:
    """Current and historical versions of one resource type in one table."""

    def __init__(self, *, table: str, resource_type: str, envelope: Envelope) -> None:
        self.table = table
        self.resource_type = resource_type
        self._envelope = envelope

    def current_key(self, tenant: TenantId, resource_id: str) -> dict[str, Any]:
        return aws.to_item({"pk": partition(tenant, self.resource_type, resource_id), "sk": CURRENT})

    def get(self, tenant: TenantId, resource_id: str) -> Stored | None:
        """The current version, or None if the tenant has no such resource."""
        item = _call(
            "get_item", TableName=self.table, Key=self.current_key(tenant, resource_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else self.decode(tenant, resource_id, aws.from_item(item))

    def get_version(self, tenant: TenantId, resource_id: str, version: int) -> Stored | None:
        key = aws.to_item({"pk": partition(tenant, self.resource_type, resource_id), "sk": version_sk(version)})
        item = _call("get_item", TableName=self.table, Key=key).get("Item")
        return None if item is None else self.decode(tenant, resource_id, aws.from_item(item))

    def history(
        self, tenant: TenantId, resource_id: str, *, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[Stored], dict[str, Any] | None]:
        """Versions newest first, one page; returns the page and the next start key."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :v)",
            "ExpressionAttributeValues": aws.to_item(
                {":pk": partition(tenant, self.resource_type, resource_id), ":v": "V#"}
            ),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            args["ExclusiveStartKey"] = start
        response = _call("query", **args)
        items = [self.decode(tenant, resource_id, aws.from_item(i)) for i in response.get("Items", [])]
        return items, response.get("LastEvaluatedKey")

    def history_partition(self, tenant: TenantId, resource_id: str) -> str:
        return partition(tenant, self.resource_type, resource_id)

    def batch_get(self, tenant: TenantId, resource_ids: Sequence[str]) -> dict[str, Stored]:
        """Current versions of several resources (missing ones are absent), in one or more calls."""
        found: dict[str, Stored] = {}
        ids = list(dict.fromkeys(resource_ids))
        for start in range(0, len(ids), 100):
            keys = [self.current_key(tenant, rid) for rid in ids[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = _call("batch_get_item", RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table, []):
                    item = aws.from_item(raw)
                    rid = str(item["pk"]).rsplit("#", 1)[1]
                    found[rid] = self.decode(tenant, rid, item)
                request = response.get("UnprocessedKeys") or {}
        return found

    def write(
        self,
        tenant: TenantId,
        resource_id: str,
        resource: dict[str, Any],
        *,
        version: int,
        last_updated: str,
        attrs: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Transaction elements writing ``resource`` as ``version`` (1 = create).

        The first element (current) fails its condition when another writer got
        there first; the caller maps that to 409 (create) or 412 (update).
        """
        pk = partition(tenant, self.resource_type, resource_id)
        body = self._envelope.encrypt(tenant, _canonical(resource), self._aad(resource_id, version))
        values = {**(attrs or {}), "pk": pk, "version": version, "last_updated": last_updated, "body": body}
        if version == 1:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :expected",
                "ExpressionAttributeValues": aws.to_item({":expected": version - 1}),
            }
        return [
            {"Put": {"TableName": self.table, "Item": aws.to_item({**values, "sk": CURRENT}), **condition}},
            {
                "Put": {
                    "TableName": self.table,
                    "Item": aws.to_item({**values, "sk": version_sk(version)}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]

    def decode(self, tenant: TenantId, resource_id: str, item: dict[str, Any]) -> Stored:
        version = int(item["version"])
        plaintext = self._envelope.decrypt(tenant, str(item["body"]), self._aad(resource_id, version))
        attrs = {k: v for k, v in item.items() if k not in {"pk", "sk", "body", "version", "last_updated"}}
        return Stored(json.loads(plaintext), version, str(item["last_updated"]), attrs)

    def _aad(self, resource_id: str, version: int) -> str:
        return f"{self.resource_type}/{resource_id}/{version}"


def transact(items: list[dict[str, Any]], *, events: Sequence[Any] = ()) -> None:
    """Run one ``TransactWriteItems``; raises :class:`TransactionConflict` on a failed condition.

    Audit records among ``items`` are sealed into the writer's hash chain first; the chain advances
    only if the transaction succeeds and is abandoned on any failure or unknown outcome (decision 0022).
    ``events`` (domain events describing this change) are written to the outbox in the same transaction
    (decision 0028): publish them after it returns with :func:`expediente.events.publish`.
    """
    from expediente import outbox

    staged = outbox.pending(events) if events else []
    if staged:
        items = [*items, *outbox.put_ops(staged)]
    with audit_chain.seal_transaction(items, new_key=audit.new_chain_key):
        _transact_write_items(items)
    outbox.remember(staged)


def _transact_write_items(items: list[dict[str, Any]]) -> None:
    try:
        aws.client("dynamodb").transact_write_items(TransactItems=items)
    except ClientError as exc:
        if aws.error_code(exc) == "TransactionCanceledException":
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                raise TransactionConflict(reasons) from exc
            # Only TransactionConflict / throttling reasons: another request was writing one of the items
            # at that instant. Nothing was written and the caller's version may still be current, so this
            # is a 503 to retry, not a 409/412 (which would tell the client its data is stale).
        raise ServiceUnavailable("The record store is unavailable; nothing was changed") from exc
    except BotoCoreError as exc:
        raise ServiceUnavailable("The record store is unavailable; nothing was changed") from exc


def get_item(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """One item by its (plain-valued) key, read consistently; None when absent."""
    item = _call("get_item", TableName=table, Key=aws.to_item(key), ConsistentRead=True).get("Item")
    return None if item is None else aws.from_item(item)


def batch_get(request: dict[str, Any]) -> dict[str, Any]:
    """One ``BatchGetItem`` (``RequestItems``) with errors mapped to 503."""
    return _call("batch_get_item", RequestItems=request)


def query(**kwargs: Any) -> dict[str, Any]:
    """A DynamoDB ``Query`` with errors mapped to 503."""
    return _call("query", **kwargs)


def _call(operation: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response: dict[str, Any] = getattr(aws.client("dynamodb"), operation)(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The record store is unavailable") from exc
    return response


def _canonical(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
