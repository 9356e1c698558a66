"""The only code that talks to DynamoDB for patients.

Items in the ``patients`` table (key layout hidden from callers):
- the versioned Patient (``expediente.store``): ``<tenant>#Patient#<id>`` / ``CURRENT`` and ``V#n``;
- uniqueness guards: ``<tenant>#CURP#<blind index token>`` and ``<tenant>#FOLIO#<folio>`` / ``GUARD``,
  holding the patient id; no raw CURP is ever part of a key;
- search index items: ``<tenant>#PIDX`` / ``<kind>#<value>#<id>`` (see ``search.py``).

Every change (resource, guards, index, audit record) is one ``TransactWriteItems``:
it all happens or none of it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from expediente import arco, audit, aws, tenants
from expediente.audit import Action, AuditEntry
from expediente.context import RequestContext, TenantId
from expediente.errors import Conflict, Duplicate, PreconditionFailed
from expediente.fhir import decode_page_token, encode_page_token
from expediente.settings import settings
from expediente.store import Stored, TransactionConflict, VersionedStore, get_item, query, transact

from .logic import Change
from .model import Demographics
from .search import PatientQuery, index_entries, matches

GUARD = "GUARD"


class PatientRepository:
    """Patients of every tenant; each method takes the verified context first."""

    def __init__(self) -> None:
        self.table = settings().table_patients
        self.store = VersionedStore(table=self.table, resource_type="Patient", envelope=tenants.envelope())

    # -- keys -------------------------------------------------------------

    def _curp_guard(self, tenant: TenantId, curp: str) -> dict[str, Any]:
        token = tenants.blind_index().token(tenant, "curp", curp)
        return {"pk": f"{tenant}#CURP#{token}", "sk": GUARD}

    @staticmethod
    def _folio_guard(tenant: TenantId, folio: str) -> dict[str, Any]:
        return {"pk": f"{tenant}#FOLIO#{folio}", "sk": GUARD}

    @staticmethod
    def index_partition(tenant: TenantId) -> str:
        return f"{tenant}#PIDX"

    # -- reads ------------------------------------------------------------

    def get(self, ctx: RequestContext, patient_id: str) -> Stored | None:
        return self.store.get(ctx.tenant, patient_id)

    def get_version(self, ctx: RequestContext, patient_id: str, version: int) -> Stored | None:
        return self.store.get_version(ctx.tenant, patient_id, version)

    def history(self, ctx: RequestContext, patient_id: str, *, limit: int, page: str | None,
                fingerprint: str) -> tuple[list[Stored], str | None]:
        partition = self.store.history_partition(ctx.tenant, patient_id)
        start = decode_page_token(page, partition=partition, fingerprint=fingerprint)
        versions, last = self.store.history(ctx.tenant, patient_id, limit=limit, start=start)
        return versions, (encode_page_token(last, fingerprint) if last else None)

    def _guard_owner(self, key: dict[str, Any]) -> str | None:
        item = get_item(self.table, key)
        return None if item is None else str(item["pid"])

    def find_by_curp(self, ctx: RequestContext, curp: str) -> str | None:
        return self._guard_owner(self._curp_guard(ctx.tenant, curp))

    def find_by_folio(self, ctx: RequestContext, folio: str) -> str | None:
        return self._guard_owner(self._folio_guard(ctx.tenant, folio))

    def search(self, ctx: RequestContext, q: PatientQuery, *, limit: int, page: str | None,
               fingerprint: str) -> tuple[list[Stored], str | None]:
        """One page of matches: at most ``limit`` index items read, then the patients fetched in one batch."""
        partition = self.index_partition(ctx.tenant)
        start = decode_page_token(page, partition=partition, fingerprint=fingerprint)
        values: dict[str, Any] = {":pk": partition}
        if q.key.prefix is not None:
            condition = "pk = :pk AND begins_with(sk, :prefix)"
            values[":prefix"] = q.key.prefix
        else:
            condition = "pk = :pk AND sk BETWEEN :low AND :high"
            values.update({":low": q.key.low, ":high": q.key.high})
        args: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": condition,
                                "ExpressionAttributeValues": aws.to_item(values), "Limit": limit}
        if start:
            args["ExclusiveStartKey"] = start
        response = query(**args)
        ids = [str(aws.from_item(item)["pid"]) for item in response.get("Items", [])
               if matches(aws.from_item(item), q.filters)]
        found = self.store.batch_get(ctx.tenant, ids)
        last = response.get("LastEvaluatedKey")
        return [found[i] for i in dict.fromkeys(ids) if i in found], (
            encode_page_token(last, fingerprint) if last else None)

    def get_many(self, ctx: RequestContext, patient_ids: list[str]) -> list[Stored]:
        found = self.store.batch_get(ctx.tenant, patient_ids)
        return [found[i] for i in patient_ids if i in found]

    # -- writes -----------------------------------------------------------

    def _index_items(self, tenant: TenantId, patient_id: str, demo: Demographics) -> dict[str, dict[str, Any]]:
        return {f"{prefix}#{patient_id}": {**attrs, "pid": patient_id}
                for prefix, attrs in index_entries(demo).items()}

    def _index_changes(self, tenant: TenantId, patient_id: str, old: Demographics | None,
                       new: Demographics) -> list[dict[str, Any]]:
        partition = self.index_partition(tenant)
        old_items = self._index_items(tenant, patient_id, old) if old else {}
        new_items = self._index_items(tenant, patient_id, new)
        ops: list[dict[str, Any]] = [
            {"Delete": {"TableName": self.table, "Key": aws.to_item({"pk": partition, "sk": sk})}}
            for sk in old_items.keys() - new_items.keys()
        ]
        ops += [
            {"Put": {"TableName": self.table, "Item": aws.to_item({"pk": partition, "sk": sk, **attrs})}}
            for sk, attrs in new_items.items() if old_items.get(sk) != attrs
        ]
        return ops

    def _guard_changes(self, tenant: TenantId, patient_id: str, old: Demographics | None,
                       new: Demographics) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        pairs = (
            (old.curp if old else None, new.curp, self._curp_guard),
            (old.folio if old else None, new.folio, self._folio_guard),
        )
        for before, after, key_of in pairs:
            if before == after:
                continue
            if before:
                ops.append({"Delete": {"TableName": self.table, "Key": aws.to_item(key_of(tenant, before)),
                                       "ConditionExpression": "pid = :pid",
                                       "ExpressionAttributeValues": aws.to_item({":pid": patient_id})}})
            if after:
                ops.append({"Put": {"TableName": self.table,
                                    "Item": aws.to_item({**key_of(tenant, after), "pid": patient_id}),
                                    "ConditionExpression": "attribute_not_exists(pk)"}})
        return ops

    def create(self, ctx: RequestContext, patient_id: str, resource: dict[str, Any], demo: Demographics,
               now: str, extra: Sequence[dict[str, Any]] = ()) -> None:
        """Store version 1 with its guards, index and audit record (and ``extra`` elements, e.g. an HL7
        message guard); 409 if the CURP or folio was taken meanwhile."""
        ops = self.store.write(ctx.tenant, patient_id, resource, version=1, last_updated=now)
        ops += list(extra)
        ops += self._guard_changes(ctx.tenant, patient_id, None, demo)
        ops += self._index_changes(ctx.tenant, patient_id, None, demo)
        ops += audit.audit_puts(ctx, AuditEntry("Patient", Action.CREATE, patient_id, (patient_id,), 201))
        from expediente import events, identifiers  # the event models load on the first write only

        registered = events.PatientRegistered(
            tenant_id=ctx.tenant, patient_id=patient_id, request_id=ctx.request_id,
            has_curp=any(i.get("system") == identifiers.CURP_SYSTEM for i in resource.get("identifier") or []))
        try:
            transact(ops, events=(registered,))  # the event in the outbox with the record (decision 0028)
        except TransactionConflict as exc:
            owner = self.find_by_curp(ctx, demo.curp) if demo.curp else None
            if owner:
                raise Duplicate(f"A patient with this CURP is already registered: Patient/{owner}",
                                expression="Patient.identifier", headers={"Location": f"Patient/{owner}"}) from exc
            owner = self.find_by_folio(ctx, demo.folio)
            if owner:
                raise Duplicate(f"Folio {demo.folio} belongs to Patient/{owner}",
                                expression="Patient.identifier") from exc
            raise Duplicate("A patient with this CURP or folio was registered at the same time; search for it",
                            expression="Patient.identifier") from exc

    def update(self, ctx: RequestContext, patient_id: str, resource: dict[str, Any], demo: Demographics,
               previous: Stored, old: Demographics, now: str, extra: Sequence[dict[str, Any]] = ()) -> None:
        """Store the next version (with ``extra`` elements); 412 if another writer got there first."""
        ops = self.store.write(ctx.tenant, patient_id, resource, version=previous.version + 1, last_updated=now)
        ops += list(extra)
        ops += self._guard_changes(ctx.tenant, patient_id, old, demo)
        ops += self._index_changes(ctx.tenant, patient_id, old, demo)
        ops += audit.audit_puts(ctx, AuditEntry("Patient", Action.UPDATE, patient_id, (patient_id,), 200))
        from expediente import events

        updated = events.PatientUpdated(tenant_id=ctx.tenant, patient_id=patient_id, version=previous.version + 1,
                                        request_id=ctx.request_id)
        try:
            transact(ops, events=(updated,))  # the event in the outbox with the record (decision 0028)
        except TransactionConflict as exc:
            if exc.failed(0):
                raise PreconditionFailed(f"Patient/{patient_id} was changed by someone else; read it again") from exc
            raise Duplicate("The new CURP or folio belongs to another patient",
                            expression="Patient.identifier") from exc

    def merge(self, ctx: RequestContext, source: Change, target: Change, now: str) -> None:
        """Write both new versions, the source's index change and one audit record, atomically."""
        ops: list[dict[str, Any]] = []
        for change in (source, target):
            pid = change.resource["id"]
            ops += self.store.write(ctx.tenant, pid, change.resource, version=change.previous.version + 1,
                                    last_updated=now)
            ops += self._index_changes(ctx.tenant, pid, change.old, change.demo)
        ids = (source.resource["id"], target.resource["id"])
        ops += audit.audit_puts(ctx, AuditEntry("Patient", Action.MERGE, ids[1], ids, 200,
                                                   detail={"source": ids[0], "target": ids[1]}))
        from expediente import events

        merged = events.PatientMerged(tenant_id=ctx.tenant, source_patient_id=ids[0], target_patient_id=ids[1],
                                      request_id=ctx.request_id)
        try:
            transact(ops, events=(merged,))  # the event in the outbox with the records (decision 0028)
        except TransactionConflict as exc:
            raise Conflict("One of the records changed during the merge; read both and try again") from exc

    def block(self, ctx: RequestContext, change: Change, now: str, *, until: str, request_date: str) -> None:
        """Write the blocked version (its item carries the end of retention), its index change and the
        audit record, atomically; 412 if the record changed meanwhile. Nothing is deleted."""
        pid = change.resource["id"]
        ops = self.store.write(ctx.tenant, pid, change.resource, version=change.previous.version + 1,
                               last_updated=now, attrs={arco.BLOCK_ATTR: until})
        ops += self._index_changes(ctx.tenant, pid, change.old, change.demo)
        ops += audit.audit_puts(ctx, AuditEntry("Patient", Action.OPERATION, pid, (pid,), 200, detail={
            "operation": "$arco-cancel", "request_date": request_date, "retention_until": until}))
        try:
            transact(ops)
        except TransactionConflict as exc:
            raise PreconditionFailed(f"Patient/{pid} was changed by someone else; try again") from exc


@cache
def repository() -> PatientRepository:
    return PatientRepository()
