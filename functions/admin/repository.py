"""The only code that talks to DynamoDB for the admin domain.

Items in the ``admin`` table (callers never build these keys):

- the tenant record (:mod:`expediente.tenants`): ``TENANT#<tenant>`` / ``TENANT``;
- versioned Organizations and Practitioners (:mod:`expediente.store`):
  ``<tenant>#<Type>#<id>`` / ``CURRENT`` and ``V#n``;
- uniqueness guards (CLUES, cédula): ``<tenant>#<Type>#UNIQUE#<value>`` / ``GUARD``, holding the id;
- search index items: ``<tenant>#<Type>#IDX#<facet>`` / ``<term>#<id>``, holding the id;
- the user directory (Cognito cannot list users by a custom attribute):
  ``<tenant>#USER`` / ``<username>``.

Audit records are read from the ``audit`` table: the tenant's partition and the
``by_patient`` / ``by_agent`` indexes. Every change (resource, guard, index items, audit
record) is one ``TransactWriteItems``: all of it happens or none of it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from expediente import audit, aws, records, store, tenants
from expediente.audit import AuditEntry
from expediente.context import RequestContext, TenantId
from expediente.crypto import Envelope
from expediente.errors import Conflict, Duplicate, PreconditionFailed
from expediente.fhir import decode_page_token, encode_page_token
from expediente.settings import settings
from expediente.store import Stored, TransactionConflict, VersionedStore

from .rules import AuditQuery, Indexed

GUARD = "GUARD"
_USER_FIELDS = ("username", "user_id", "role", "clinic_ids", "practitioner_id", "patient_id", "enabled",
                "created", "updated", "version")


@dataclass(frozen=True)
class AdminTables:
    """Physical names of the tables this domain uses."""

    admin: str
    audit: str


@dataclass(frozen=True)
class UserRecord:
    """A directory entry: the tenant's view of one Cognito account (no email: Cognito holds it)."""

    username: str
    user_id: str
    role: str
    clinic_ids: tuple[str, ...]
    practitioner_id: str | None
    patient_id: str | None
    enabled: bool
    created: str
    updated: str
    version: int = 1


@dataclass(frozen=True)
class Page:
    """One page of a query and the continuation token of the next (None on the last page)."""

    items: list[Any]
    next_token: str | None
    first: bool = True

    @property
    def total(self) -> int | None:
        """The exact total when this page is the whole result."""
        return len(self.items) if self.first and self.next_token is None else None


@dataclass(frozen=True)
class ResourceWrite:
    """A version of a resource to store, with what it contributes to the tenant's lookups."""

    resource: dict[str, Any]
    version: int
    indexed: Indexed
    previous: Indexed | None = None
    extra: list[dict[str, Any]] = field(default_factory=list)


Transact = Callable[[list[dict[str, Any]]], None]


class AdminRepository:
    """Tenants, clinics, practitioners, the user directory and audit reads.

    ``transact`` runs a ``TransactWriteItems`` (default :func:`expediente.store.transact`);
    the operator command passes one bound to its own session.
    """

    def __init__(self, *, tables: AdminTables, envelope: Envelope, transact: Transact = store.transact) -> None:
        self.tables = tables
        self._envelope = envelope
        self._transact = transact
        self._stores: dict[str, VersionedStore] = {}

    def store(self, resource_type: str) -> VersionedStore:
        if resource_type not in self._stores:
            self._stores[resource_type] = VersionedStore(
                table=self.tables.admin, resource_type=resource_type, envelope=self._envelope)
        return self._stores[resource_type]

    # -- keys -------------------------------------------------------------

    @staticmethod
    def _guard_key(tenant: str, resource_type: str, value: str) -> dict[str, Any]:
        return records.unique_key(tenant, resource_type, value)

    @staticmethod
    def _index_partition(tenant: str, resource_type: str, facet: str) -> str:
        return f"{tenant}#{resource_type}#IDX#{facet}"

    @staticmethod
    def _users_partition(tenant: str) -> str:
        return f"{tenant}#USER"

    # -- tenant -----------------------------------------------------------

    def tenant(self, tenant: TenantId) -> dict[str, Any] | None:
        """The tenant record (plain values), or None."""
        return store.get_item(self.tables.admin, aws.from_item(tenants.tenant_key(tenant)))

    # -- resources: reads -------------------------------------------------

    def get(self, tenant: TenantId, resource_type: str, resource_id: str) -> Stored | None:
        return self.store(resource_type).get(tenant, resource_id)

    def get_version(self, tenant: TenantId, resource_type: str, resource_id: str, version: int) -> Stored | None:
        return self.store(resource_type).get_version(tenant, resource_id, version)

    def history(self, tenant: TenantId, resource_type: str, resource_id: str, *, limit: int,
                page: str | None) -> Page:
        versions = self.store(resource_type)
        start = decode_page_token(page, partition=versions.history_partition(tenant, resource_id),
                                  fingerprint=resource_id)
        found, last = versions.history(tenant, resource_id, limit=limit, start=start)
        return Page(found, encode_page_token(last, resource_id) if last else None, first=start is None)

    def patient_exists(self, tenant: TenantId, patient_id: str) -> bool:
        """Whether the tenant has the Patient ``patient_id`` (its current item in the patients table; the body
        is not decrypted)."""
        key = {"pk": store.partition(tenant, "Patient", patient_id), "sk": store.CURRENT}
        return store.get_item(settings().table_patients, key) is not None

    def find_unique(self, tenant: TenantId, resource_type: str, value: str) -> str | None:
        """The id of the resource holding the unique identifier ``value``, or None."""
        item = store.get_item(self.tables.admin, self._guard_key(tenant, resource_type, value))
        return None if item is None else str(item["rid"])

    def get_many(self, tenant: TenantId, resource_type: str, ids: Sequence[str]) -> list[Stored]:
        found = self.store(resource_type).batch_get(tenant, ids)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def search(self, tenant: TenantId, resource_type: str, *, facet: str, prefix: str, limit: int,
               page: str | None, fingerprint: str) -> Page:
        """One page of the facet's index (terms starting with ``prefix``), resolved to current versions."""
        partition = self._index_partition(tenant, resource_type, facet)
        start = decode_page_token(page, partition=partition, fingerprint=fingerprint)
        values: dict[str, Any] = {":pk": partition}
        condition = "pk = :pk"
        if prefix:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = prefix
        args: dict[str, Any] = {"TableName": self.tables.admin, "KeyConditionExpression": condition,
                                "ExpressionAttributeValues": aws.to_item(values), "Limit": limit}
        if start:
            args["ExclusiveStartKey"] = start
        response = store.query(**args)
        ids = [str(aws.from_item(item)["rid"]) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return Page(self.get_many(tenant, resource_type, ids), encode_page_token(last, fingerprint) if last else None,
                    first=start is None)

    # -- resources: writes ------------------------------------------------

    def _resource_ops(self, tenant: TenantId, write: ResourceWrite, now: str) -> tuple[list[dict[str, Any]], int]:
        """Transaction elements of one resource write; returns them and the index of the guard put (-1: none)."""
        resource_type, resource_id = write.resource["resourceType"], write.resource["id"]
        table = self.tables.admin
        ops = self.store(resource_type).write(tenant, resource_id, write.resource, version=write.version,
                                              last_updated=now)
        guard_at = -1
        before = write.previous.unique if write.previous else None
        after = write.indexed.unique
        if (before.value if before else None) != (after.value if after else None):
            if before is not None:
                ops.append({"Delete": {
                    "TableName": table, "Key": aws.to_item(self._guard_key(tenant, resource_type, before.value)),
                    "ConditionExpression": "rid = :rid",
                    "ExpressionAttributeValues": aws.to_item({":rid": resource_id}),
                }})
            if after is not None:
                guard_at = len(ops)
                ops.append({"Put": {
                    "TableName": table,
                    "Item": aws.to_item({**self._guard_key(tenant, resource_type, after.value), "rid": resource_id}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }})
        old_terms = write.previous.terms if write.previous else frozenset()
        for facet, term in old_terms - write.indexed.terms:
            key = {"pk": self._index_partition(tenant, resource_type, facet), "sk": f"{term}#{resource_id}"}
            ops.append({"Delete": {"TableName": table, "Key": aws.to_item(key)}})
        for facet, term in write.indexed.terms - old_terms:
            item = {"pk": self._index_partition(tenant, resource_type, facet), "sk": f"{term}#{resource_id}",
                    "rid": resource_id}
            ops.append({"Put": {"TableName": table, "Item": aws.to_item(item)}})
        return ops, guard_at

    def _audit_ops(self, ctx: RequestContext, entry: AuditEntry) -> list[dict[str, Any]]:
        # The operator command brings its own table names, so the table is passed explicitly.
        return audit.audit_puts(ctx, entry, table=self.tables.audit)

    def save(self, ctx: RequestContext, write: ResourceWrite, *, now: str, entry: AuditEntry,
             extra: Sequence[dict[str, Any]] = ()) -> None:
        """Store a version with its guard, index items and audit record, atomically.

        Raises Duplicate (409) when the unique identifier is taken, PreconditionFailed (412)
        when another writer changed the resource first, Conflict (409) otherwise.
        """
        ops, guard_at = self._resource_ops(ctx.tenant, write, now)
        ops += list(extra)
        ops += self._audit_ops(ctx, entry)
        try:
            self._transact(ops)
        except TransactionConflict as exc:
            self._raise_conflict(exc, write, guard_at)

    def save_keys(self, ctx: RequestContext, ops: list[dict[str, Any]], *, entry: AuditEntry) -> None:
        """Record signing-key items (``expediente.signing_keys.put_ops``) with their audit record."""
        try:
            self._transact([*ops, *self._audit_ops(ctx, entry)])
        except TransactionConflict as exc:
            raise Conflict("The signing key changed at the same time; try again") from exc

    @staticmethod
    def _raise_conflict(exc: TransactionConflict, write: ResourceWrite, guard_at: int) -> None:
        resource_type, resource_id = write.resource["resourceType"], write.resource["id"]
        unique = write.indexed.unique
        if guard_at >= 0 and exc.failed(guard_at) and unique is not None:
            raise Duplicate(f"{unique.expression}: {unique.label} {unique.value} is already registered "
                            "in this chain", expression=unique.expression) from exc
        if write.version > 1 and exc.failed(0):
            raise PreconditionFailed(f"{resource_type}/{resource_id} was changed by someone else; "
                                     "read it again") from exc
        raise Conflict(f"{resource_type}/{resource_id} changed during the request; try again") from exc

    # -- user directory ---------------------------------------------------

    def _user_item(self, tenant: TenantId, user: UserRecord) -> dict[str, Any]:
        values = {name: getattr(user, name) for name in _USER_FIELDS}
        values["clinic_ids"] = list(user.clinic_ids)
        return aws.to_item({"pk": self._users_partition(tenant), "sk": user.username, **values})

    @staticmethod
    def _user_from(item: dict[str, Any]) -> UserRecord:
        return UserRecord(
            username=str(item["username"]), user_id=str(item["user_id"]), role=str(item["role"]),
            clinic_ids=tuple(str(c) for c in item.get("clinic_ids") or ()),
            practitioner_id=item.get("practitioner_id"), patient_id=item.get("patient_id"),
            enabled=bool(item.get("enabled", True)), created=str(item["created"]), updated=str(item["updated"]),
            version=int(item.get("version", 1)),
        )

    def _user_op(self, tenant: TenantId, user: UserRecord) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.tables.admin, "Item": self._user_item(tenant, user)}
        if user.version == 1:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "version = :expected"
            put["ExpressionAttributeValues"] = aws.to_item({":expected": user.version - 1})
        return {"Put": put}

    def get_user(self, tenant: TenantId, username: str) -> UserRecord | None:
        item = store.get_item(self.tables.admin, {"pk": self._users_partition(tenant), "sk": username})
        return None if item is None else self._user_from(item)

    def list_users(self, tenant: TenantId, *, limit: int, page: str | None, fingerprint: str) -> Page:
        partition = self._users_partition(tenant)
        start = decode_page_token(page, partition=partition, fingerprint=fingerprint)
        args: dict[str, Any] = {"TableName": self.tables.admin, "KeyConditionExpression": "pk = :pk",
                                "ExpressionAttributeValues": aws.to_item({":pk": partition}), "Limit": limit}
        if start:
            args["ExclusiveStartKey"] = start
        response = store.query(**args)
        users = [self._user_from(aws.from_item(item)) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return Page(users, encode_page_token(last, fingerprint) if last else None, first=start is None)

    def save_user(self, ctx: RequestContext, user: UserRecord, *, entry: AuditEntry) -> None:
        """Write a directory entry (version 1 = new) with its audit record; 409/412 on a lost race."""
        try:
            self._transact([self._user_op(ctx.tenant, user), *self._audit_ops(ctx, entry)])
        except TransactionConflict as exc:
            if user.version == 1:
                raise Duplicate(f"username: {user.username} is already in this chain's directory",
                                expression="username") from exc
            raise PreconditionFailed(f"User {user.username} was changed by someone else; read it again") from exc

    # -- tenant settings ----------------------------------------------------

    def get_setting(self, key: dict[str, str]) -> dict[str, Any] | None:
        """A tenant setting item (``expediente.critical_policy.key``), or None."""
        return store.get_item(self.tables.admin, key)

    def save_setting(self, ctx: RequestContext, key: dict[str, str], body: str, *, version: int,
                     entry: AuditEntry) -> None:
        """Write version ``version`` of a setting with its audit record; 412 when it is not the next version."""
        condition = "attribute_not_exists(pk)" if version == 1 else "version = :previous"
        put: dict[str, Any] = {"TableName": self.tables.admin,
                               "Item": aws.to_item({**key, "body": body, "version": version}),
                               "ConditionExpression": condition}
        if version > 1:
            put["ExpressionAttributeValues"] = aws.to_item({":previous": version - 1})
        try:
            self._transact([{"Put": put}, *self._audit_ops(ctx, entry)])
        except TransactionConflict as exc:
            raise PreconditionFailed("The setting was changed by someone else; read it again",
                                     headers={"ETag": f'W/"{version - 1}"'}) from exc

    # -- a new tenant -----------------------------------------------------

    def create_tenant(self, ctx: RequestContext, *, tenant_item: dict[str, Any], chain: ResourceWrite,
                      admin: UserRecord, now: str, entries: Sequence[AuditEntry]) -> None:
        """The tenant record, its chain Organization, its first admin's directory entry and the audit
        records, in one transaction (409 if the tenant id exists)."""
        ops = [{"Put": {"TableName": self.tables.admin, "Item": tenant_item,
                        "ConditionExpression": "attribute_not_exists(pk)"}},
               {"Put": {"TableName": self.tables.admin, "Item": tenants.registry_item(ctx.tenant)}}]
        resource_ops, _ = self._resource_ops(ctx.tenant, chain, now)
        ops += resource_ops
        ops.append(self._user_op(ctx.tenant, admin))
        ops += [op for entry in entries for op in self._audit_ops(ctx, entry)]
        try:
            self._transact(ops)
        except TransactionConflict as exc:
            raise Duplicate(f"Tenant {ctx.tenant} already exists") from exc

    # -- audit trail ------------------------------------------------------

    def audit_events(self, tenant: TenantId, q: AuditQuery, *, limit: int, page: str | None,
                     fingerprint: str) -> Page:
        """One page of audit records (plain values), by patient, agent or the whole tenant."""
        args: dict[str, Any] = {"TableName": self.tables.audit, "Limit": limit, "ScanIndexForward": q.ascending}
        values: dict[str, Any] = {}
        if q.patient is not None:
            args["IndexName"], pk, sk = "by_patient", "gsi1pk", "gsi1sk"
            values[":pk"] = audit.patient_partition(tenant, q.patient)
            if q.agent is not None:
                args["FilterExpression"] = "user_id = :agent"
                values[":agent"] = q.agent
        elif q.agent is not None:
            args["IndexName"], pk, sk = "by_agent", "gsi2pk", "gsi2sk"
            values[":pk"] = audit.agent_partition(tenant, q.agent)
        else:
            pk, sk = "pk", "sk"
            values[":pk"] = audit.audit_partition(tenant)
        condition = f"{pk} = :pk"
        if q.low is not None and q.high is not None:
            condition += f" AND {sk} BETWEEN :low AND :high"  # no key equals :high exactly: keys are <time>#<id>
            values.update({":low": q.low, ":high": q.high})
        elif q.low is not None:
            condition += f" AND {sk} >= :low"
            values[":low"] = q.low
        elif q.high is not None:
            condition += f" AND {sk} < :high"
            values[":high"] = q.high
        args["KeyConditionExpression"] = condition
        args["ExpressionAttributeValues"] = aws.to_item(values)
        start = decode_page_token(page, partition=values[":pk"], fingerprint=fingerprint)
        if start:
            args["ExclusiveStartKey"] = start
        response = store.query(**args)
        items = [aws.from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return Page(items, encode_page_token(last, fingerprint) if last else None, first=start is None)


def repository() -> AdminRepository:
    """The repository of this process's configuration (tables from settings, the shared envelope)."""
    cfg = settings()
    return AdminRepository(tables=AdminTables(admin=cfg.table_admin, audit=cfg.table_audit),
                           envelope=tenants.envelope())
