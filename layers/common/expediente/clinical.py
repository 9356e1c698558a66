"""Versioned clinical resources with search index items: the repository base of the clinical domains.

Notes (Encounter, Composition, Condition, Provenance) and results (Observation) share the same
shape: every version kept (:class:`expediente.store.VersionedStore`), found through index items
(:class:`expediente.index.ResourceIndex`) written in the same ``TransactWriteItems`` as the
resource and its audit record, read only by the patient's own user when the caller has the
``patient`` role. Domain functions describe their resources (what to index, what to check);
this module does the storage, the transactions and the compartment rule once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from expediente import arco, audit, records, tenants
from expediente.audit import Action, AuditEntry
from expediente.context import RequestContext
from expediente.errors import Conflict, Invalid, NotFound, PreconditionFailed
from expediente.fhir import decode_page_token, encode_page_token
from expediente.index import HIGH, Entry, Page, ResourceIndex
from expediente.store import Stored, TransactionConflict, VersionedStore, transact


def now_instant(clock: Callable[[], datetime] | None = None) -> str:
    """The current instant as FHIR ``instant`` with milliseconds, UTC (``...Z``)."""
    moment = clock() if clock else datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp(resource: dict[str, Any], resource_id: str, version: int, now: str) -> dict[str, Any]:
    """``resource`` with its id and server meta (versionId, lastUpdated); other meta is kept."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    meta.update({"versionId": str(version), "lastUpdated": now})
    return {**resource, "id": resource_id, "meta": meta}


def visible_to(ctx: RequestContext, stored: Stored) -> bool:
    """The patient role sees only resources of its own record (others do not exist for it).

    A resource without a subject (a Provenance) names its patient in the ``patient`` attribute.
    """
    if not ctx.is_patient_only:
        return True
    owner = records.subject_of(stored.resource) or stored.attrs.get("patient")
    return owner == ctx.patient_id


def check_version(current: Stored, if_match: int) -> None:
    """412 naming the current version when ``if_match`` (the version the client read) is not it."""
    if current.version != if_match:
        ref = f"{current.resource['resourceType']}/{current.resource['id']}"
        raise PreconditionFailed(f"{ref} is at version {current.version}, not {if_match}: read it again",
                                 headers={"ETag": f'W/"{current.version}"'})


@dataclass(frozen=True)
class Saved:
    """A version just stored."""

    resource: dict[str, Any]
    version: int


@dataclass(frozen=True)
class Write:
    """One resource version to store, with how it is indexed and extra server attributes."""

    resource_type: str
    resource: dict[str, Any]
    version: int
    entry: Entry
    previous: Entry | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.resource["id"])


class ClinicalRepository:
    """The versioned resources of one domain table, by type.

    Every method takes the verified context first; the tenant in every key comes from it.
    """

    def __init__(self, *, table: str, types: Iterable[str]) -> None:
        self.table = table
        envelope = tenants.envelope()
        self.stores = {t: VersionedStore(table=table, resource_type=t, envelope=envelope) for t in types}
        self.indexes = {t: ResourceIndex(table=table, resource_type=t) for t in types}

    # -- reads ------------------------------------------------------------

    def get(self, ctx: RequestContext, resource_type: str, resource_id: str) -> Stored | None:
        """The current version, None when not visible; 403 when its patient's record is blocked (ARCO)."""
        stored = self.stores[resource_type].get(ctx.tenant, resource_id)
        if stored is None or not visible_to(ctx, stored):
            return None
        arco.refuse_blocked(ctx, stored)  # reads and the updates/operations that start with this read
        return stored

    def require(self, ctx: RequestContext, resource_type: str, resource_id: str) -> Stored:
        """The current version; 404 when missing, another tenant's, or not the patient user's own."""
        stored = self.get(ctx, resource_type, resource_id)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} not found")
        return stored

    def for_update(self, ctx: RequestContext, resource_type: str, resource_id: str, body: Mapping[str, Any], *,
                   if_match: int) -> Stored:
        """The current version an update replaces: 400 when the body names another id, 404 when missing,
        412 (with the current ETag) when ``if_match`` is not the current version."""
        if body.get("id") not in (None, resource_id):
            raise Invalid(f"{resource_type}.id {body.get('id')!r} does not match the URL id {resource_id}",
                          expression=f"{resource_type}.id")
        current = self.require(ctx, resource_type, resource_id)
        check_version(current, if_match)
        return current

    def get_version(self, ctx: RequestContext, resource_type: str, resource_id: str, version: int) -> Stored | None:
        stored = self.stores[resource_type].get_version(ctx.tenant, resource_id, version)
        if stored is None or not visible_to(ctx, stored):
            return None
        arco.refuse_blocked(ctx, stored)
        return stored

    def history(self, ctx: RequestContext, resource_type: str, resource_id: str, *, limit: int,
                page: str | None) -> tuple[list[Stored], str | None]:
        store = self.stores[resource_type]
        partition = store.history_partition(ctx.tenant, resource_id)
        start = decode_page_token(page, partition=partition, fingerprint=resource_id)
        versions, last = store.history(ctx.tenant, resource_id, limit=limit, start=start)
        return versions, (encode_page_token(last, resource_id) if last else None)

    def get_many(self, ctx: RequestContext, resource_type: str, ids: Sequence[str]) -> list[Stored]:
        found = self.stores[resource_type].batch_get(ctx.tenant, ids)
        # Searches and includes leave blocked patients' resources out (ARCO cancellation).
        return arco.without_blocked(ctx, [found[i] for i in dict.fromkeys(ids) if i in found
                                          and visible_to(ctx, found[i])])

    def search(self, ctx: RequestContext, resource_type: str, facet: str, value: str, *, limit: int,
               token: str | None, fingerprint: str, low: str | None = None, high: str | None = None,
               keep: Callable[[Mapping[str, Any]], bool] | None = None) -> tuple[list[Stored], Page]:
        """One page of ``resource_type`` listed under ``facet=value``, newest first."""
        page = self.indexes[resource_type].page(ctx.tenant, facet, value, limit=limit, token=token,
                                                 fingerprint=fingerprint, low=low, high=high, keep=keep)
        return self.get_many(ctx, resource_type, page.ids), page

    # -- writes -----------------------------------------------------------

    def write_ops(self, ctx: RequestContext, write: Write, *, now: str) -> list[dict[str, Any]]:
        """Transaction elements for one version: the resource (conditioned on the version) and its index."""
        ops = self.stores[write.resource_type].write(ctx.tenant, write.id, write.resource, version=write.version,
                                                     last_updated=now, attrs=dict(write.attrs))
        ops += self.indexes[write.resource_type].changes(ctx.tenant, write.id, write.previous, write.entry)
        return ops

    def save(self, ctx: RequestContext, writes: Sequence[Write], *, now: str, entry: AuditEntry,
             extra: Sequence[dict[str, Any]] = (), events: Sequence[Any] = ()) -> None:
        """Store ``writes`` with the audit record (and ``extra`` elements) in one transaction.

        ``events`` announcing the change go to the outbox in the same transaction (decision 0028).

        Raises 412 when the first write's version is no longer the expected one (someone else
        saved first), 409 when another write's condition failed.
        """
        ops: list[dict[str, Any]] = []
        first_ops = 0
        for index, write in enumerate(writes):
            ops += self.write_ops(ctx, write, now=now)
            if index == 0:
                first_ops = len(ops)
        ops += list(extra)
        ops += audit.audit_puts(ctx, entry)
        try:
            transact(ops, events=events)
        except TransactionConflict as exc:
            head = writes[0]
            if exc.failed(0) and head.version > 1:
                raise PreconditionFailed(f"{head.resource_type}/{head.id} was changed by someone else; read it again",
                                         headers={"ETag": f'W/"{head.version - 1}"'}) from exc
            failed = [i for i in range(len(ops)) if exc.failed(i)]
            if failed and failed[0] >= first_ops:
                raise Conflict("A related record changed at the same time; read it again and retry") from exc
            raise Conflict(f"{head.resource_type}/{head.id} could not be saved: it changed at the same time") from exc

    def put(self, ctx: RequestContext, resource: dict[str, Any], *, index: Callable[[dict[str, Any]], Entry],
            now: str, previous: Stored | None = None, action: Action | None = None,
            detail: Mapping[str, str] | None = None, extra: Sequence[dict[str, Any]] = (),
            events: Sequence[Any] = ()) -> Saved:
        """Store one stamped resource version with its index items and one audit record naming its patient.

        ``previous`` is the version it replaces (none for a create: audited as create, 201; else
        update, 200, unless ``action`` says otherwise); errors as :meth:`save`.
        """
        resource_type, version = resource["resourceType"], int(resource["meta"]["versionId"])
        patient = records.subject_of(resource)
        self.save(ctx, [Write(resource_type, resource, version, index(resource),
                              previous=index(previous.resource) if previous is not None else None)],
                  now=now, extra=extra, events=events,
                  entry=AuditEntry(resource_type, action or (Action.CREATE if previous is None else Action.UPDATE),
                                   resource["id"], (patient,) if patient else (), 201 if previous is None else 200,
                                   detail=dict(detail or {})))
        return Saved(resource, version)

    def update_attrs(self, ctx: RequestContext, resource_type: str, resource_id: str, *, expression: str,
                     values: Mapping[str, Any]) -> dict[str, Any]:
        """A transaction element updating server attributes of the current item (not the resource body)."""
        from expediente import aws

        store = self.stores[resource_type]
        return {"Update": {
            "TableName": self.table,
            "Key": store.current_key(ctx.tenant, resource_id),
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": aws.to_item(dict(values)),
        }}


# ------------------------------------------------------------------ search ---

_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4}(-\d{2}(-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?)$")
_PAGING = frozenset({"_count", "_page", "_sort", "_include", "_revinclude", "_total"})


@dataclass(frozen=True)
class SearchSpec:
    """The search parameters of one resource type.

    ``facets`` maps a parameter to the index facet it reads (the first one present is the
    Query's partition; the others become filters on the same attribute name); ``filters`` maps
    a token parameter to the index attribute it is checked against; ``date`` names the parameter
    that ranges over the index sort date.
    """

    resource_type: str
    facets: Mapping[str, str]
    filters: Mapping[str, str] = field(default_factory=dict)
    date: str | None = None
    # token parameters checked on the resource itself after it is read (values that change when the
    # resource changes, such as a note's status, so its index items need not be rewritten then)
    resource_filters: Mapping[str, Callable[[Mapping[str, Any]], str]] = field(default_factory=dict)
    references: Mapping[str, str] = field(default_factory=dict)  # param -> referenced type (strip "Type/")


@dataclass(frozen=True)
class SearchPlan:
    facet: str
    value: str
    low: str | None
    high: str | None
    conditions: tuple[tuple[str, frozenset[str]], ...]
    empty: bool = False  # the patient role asked for another patient's record: nothing matches
    resource_conditions: tuple[tuple[Callable[[Mapping[str, Any]], str], frozenset[str]], ...] = ()

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """Whether a fetched resource satisfies the conditions checked on resources."""
        return all(read(resource) in wanted for read, wanted in self.resource_conditions)

    def keep(self, attrs: Mapping[str, Any]) -> bool:
        """Whether index attributes satisfy every condition (a list attribute: any of its values)."""
        for attr, wanted in self.conditions:
            value = attrs.get(attr, "")
            values = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
            if not wanted.intersection(values):
                return False
        return True


def date_bounds(param: str, value: str) -> tuple[str | None, str | None]:
    """(low, high) ISO prefixes for a FHIR date parameter (eq, ge, gt, le, lt; partial dates)."""
    match = _DATE.match(value)
    if not match:
        raise Invalid(f"{param} {value!r} must be a date such as 2026, 2026-05, 2026-05-12 or ge2026-05-12",
                      expression=param)
    op, date = match.group(1) or "eq", match.group(2)
    if op in ("ne", "sa", "eb"):
        raise Invalid(f"{param} prefix {op} is not supported (use eq, gt, lt, ge, le)", expression=param)
    if op == "eq":
        return date, date
    if op in ("ge", "gt"):
        return (date if op == "ge" else date + HIGH), None
    return None, (date if op == "le" else _before(date))


def _before(date: str) -> str:
    """The largest sort key strictly before ``date`` (for ``lt``)."""
    return date[:-1] + chr(ord(date[-1]) - 1) + HIGH


def plan_search(ctx: RequestContext, spec: SearchSpec, params: Mapping[str, str]) -> SearchPlan:
    """Turn FHIR search parameters into one bounded index Query plus filters; 400 for anything unsupported."""
    allowed = {*spec.facets, *spec.filters, *spec.resource_filters, *([spec.date] if spec.date else []), *_PAGING}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Invalid(f"Unsupported {spec.resource_type} search parameter(s): {', '.join(unknown)}",
                      expression=unknown[0])
    values: dict[str, str] = {}
    for param in (*spec.facets, *spec.filters):
        raw = params.get(param)
        if raw is None:
            continue
        if not raw.strip():
            raise Invalid(f"{param} must not be empty", expression=param)
        kind = spec.references.get(param)
        if kind and "," not in raw:
            raw = raw.removeprefix(f"{kind}/")
        values[param] = raw.strip()
    empty = False
    if ctx.is_patient_only and "patient" in spec.facets:
        # The patient role's searches are confined to its own record.
        if values.get("patient", ctx.patient_id) != ctx.patient_id:
            empty = True
        values["patient"] = ctx.patient_id or "-"
    facet_param = next((p for p in spec.facets if p in values and "," not in values[p]), None)
    if facet_param is None:
        options = ", ".join(spec.facets)
        raise Invalid(f"{spec.resource_type} search needs one of: {options} (a single value)",
                      expression=spec.resource_type)
    conditions = [(spec.facets[p], frozenset(values[p].split(","))) for p in spec.facets
                  if p in values and p != facet_param]
    conditions += [(spec.filters[p], frozenset(v.strip() for v in values[p].split(","))) for p in spec.filters
                   if p in values]
    low = high = None
    if spec.date and params.get(spec.date):
        low, high = date_bounds(spec.date, params[spec.date])
    sort = params.get("_sort")
    if sort not in (None, "", "-date", "-_lastUpdated"):
        raise Invalid("_sort supports -date only (newest first, the default)", expression="_sort")
    on_resource = tuple((read, frozenset(v.strip() for v in params[p].split(",")))
                        for p, read in spec.resource_filters.items() if params.get(p))
    return SearchPlan(spec.facets[facet_param], values[facet_param], low, high, tuple(conditions), empty,
                      on_resource)


def new_id() -> str:
    """A new resource id: 20 random lowercase base32 characters (100 bits; unguessable)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(20))
