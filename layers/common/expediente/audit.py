"""The application audit trail: one append-only record per request touching patient data.

A record says who (user, role, tenant, clinic), what (resource type and id,
patient, action), the outcome, when (UTC), where from (source IP, user agent)
and the request id. It holds no names, CURPs, diagnoses or query values.
Writes go in the same ``TransactWriteItems`` as the change they describe; reads
write their record before any data is returned, and fail with 503 if they can't.
Records are exposed read-only as FHIR ``AuditEvent`` (see :func:`to_audit_event`).
Records are hash-chained as they are written (:mod:`expediente.audit_chain`, decision 0022).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit_chain, aws
from expediente.context import RequestContext, TenantId
from expediente.errors import AuditUnavailable
from expediente.settings import settings


class Action(StrEnum):
    """FHIR restful-interaction codes (plus operations) used in audit records."""

    CREATE = "create"
    READ = "read"
    VREAD = "vread"
    HISTORY = "history-instance"
    SEARCH = "search-type"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "$merge"
    OPERATION = "operation"
    # Sign-in (decision 0029): an attempt and a success from the user pool's triggers
    # (functions/sign_in), a failure from Cognito's sign-in event log (functions/admin/sign_in_failures.py).
    LOGIN_ATTEMPT = "login-attempt"
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"


# FHIR AuditEvent.action: C R U D E
_CRUDE = {
    Action.CREATE: "C",
    Action.READ: "R",
    Action.VREAD: "R",
    Action.HISTORY: "R",
    Action.SEARCH: "E",
    Action.UPDATE: "U",
    Action.DELETE: "D",
    Action.MERGE: "U",
    Action.OPERATION: "E",
    Action.LOGIN_ATTEMPT: "E",
    Action.LOGIN: "E",
    Action.LOGIN_FAILED: "E",
}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_AUTHENTICATION = {"system": _DCM, "code": "110114", "display": "User Authentication"}


@dataclass(frozen=True)
class AuditEntry:
    """What a request did. ``patient_ids`` are the patients whose data it touched."""

    resource_type: str
    action: Action
    resource_id: str | None = None
    patient_ids: tuple[str, ...] = ()
    status: int = 200
    query_params: tuple[str, ...] = ()  # parameter names only, never values
    detail: dict[str, str] = field(default_factory=dict)


def _keys(tenant: TenantId) -> str:
    return f"{tenant}#AUDIT"


def patient_partition(tenant: TenantId, patient_id: str) -> str:
    """The ``by_patient`` index partition of one patient's audit trail."""
    return f"{tenant}#PATIENT#{patient_id}"


def agent_partition(tenant: TenantId, user_id: str) -> str:
    """The ``by_agent`` index partition of one user's actions."""
    return f"{tenant}#AGENT#{user_id}"


def audit_items(ctx: RequestContext, entry: AuditEntry, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The audit record as DynamoDB items (typed): the record, plus one patient-index copy per patient
    when the request touched several (a search, a merge), so each patient's own trail shows it.

    The record sits in the tenant's audit partition and the ``by_agent`` index; it is in the
    ``by_patient`` index itself when it touched exactly one patient. Copies live in a separate
    partition (so the tenant-wide listing shows each request once) and carry the record's id.
    """
    recorded = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record_id = str(uuid.uuid4())
    sort_key = f"{recorded}#{record_id}"
    values: dict[str, Any] = {
        "pk": _keys(ctx.tenant),
        "sk": sort_key,
        "id": record_id,
        "recorded": recorded,
        "tenant": ctx.tenant,
        "user_id": ctx.user_id,
        "username": ctx.username,
        "roles": ctx.role_names,
        "clinic": ctx.clinic,
        "practitioner_id": ctx.practitioner_id,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "patient_ids": list(entry.patient_ids) or None,
        "action": entry.action.value,
        "status": entry.status,
        "outcome": "0" if entry.status < 400 else ("4" if entry.status < 500 else "8"),
        "query_params": list(entry.query_params) or None,
        "detail": entry.detail or None,
        "source_ip": ctx.source_ip,
        "user_agent": ctx.user_agent[:512],
        "request_id": ctx.request_id,
        "gsi2pk": agent_partition(ctx.tenant, ctx.user_id),
        "gsi2sk": sort_key,
    }
    if len(entry.patient_ids) == 1:
        values["gsi1pk"] = patient_partition(ctx.tenant, entry.patient_ids[0])
        values["gsi1sk"] = sort_key
        return [aws.to_item(values)]
    copies = []
    for patient_id in dict.fromkeys(entry.patient_ids):
        copy = {k: v for k, v in values.items() if k not in ("gsi2pk", "gsi2sk")}
        copy.update({"pk": f"{_keys(ctx.tenant)}#PATIENT-INDEX", "sk": f"{sort_key}#{patient_id}",
                     "gsi1pk": patient_partition(ctx.tenant, patient_id), "gsi1sk": sort_key})
        copies.append(aws.to_item(copy))
    return [aws.to_item(values), *copies]


def audit_puts(ctx: RequestContext, entry: AuditEntry, *, table: str | None = None) -> list[dict[str, Any]]:
    """``TransactWriteItems`` elements that write the audit record (append-only puts).

    Send them with :func:`expediente.store.transact`, which seals them into the writer's hash chain
    and advances the chain only if the transaction succeeds (decision 0022).
    """
    return [
        {"Put": {"TableName": table or settings().table_audit, "Item": item,
                 "ConditionExpression": "attribute_not_exists(pk)"}}
        for item in audit_items(ctx, entry)
    ]


def new_chain_key(tenant: str, chain: str) -> tuple[bytes, bytes]:
    """The key of a hash chain this process opens: a KMS data key under the app key, bound to the tenant and
    the chain (:mod:`expediente.audit_chain`). Raises :class:`AuditUnavailable` when KMS fails."""
    try:
        return audit_chain.kms_key_maker(aws.client("kms"), settings().key_app_arn)(tenant, chain)
    except (BotoCoreError, ClientError) as exc:
        raise AuditUnavailable("The access could not be audited, so no data is returned") from exc


def record(ctx: RequestContext, entry: AuditEntry) -> None:
    """Write one audit record now. Raises :class:`AuditUnavailable` (503) if it fails.

    One ``PutItem`` for a request about one patient (or none); one ``BatchWriteItem`` per 25 items
    when it touched several. The record is sealed into this writer's hash chain
    (:mod:`expediente.audit_chain`); the chain advances only when the write succeeded.
    """
    table = settings().table_audit
    items = audit_items(ctx, entry)
    client = aws.client("dynamodb")
    with audit_chain.seal_items(items, new_key=new_chain_key):
        try:
            if len(items) == 1:
                client.put_item(TableName=table, Item=items[0], ConditionExpression="attribute_not_exists(pk)")
                return
            for start in range(0, len(items), 25):
                pending: dict[str, Any] = {table: [{"PutRequest": {"Item": i}} for i in items[start:start + 25]]}
                for _ in range(5):
                    pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                    if not pending:
                        break
                if pending:
                    raise AuditUnavailable("The access could not be audited, so no data is returned")
        except (BotoCoreError, ClientError) as exc:
            raise AuditUnavailable("The access could not be audited, so no data is returned") from exc


def audit_partition(tenant: TenantId) -> str:
    """The partition holding a tenant's audit records (for the AuditEvent reader)."""
    return _keys(tenant)


def to_audit_event(item: dict[str, Any]) -> dict[str, Any]:
    """A stored record (plain values) as a FHIR R4 ``AuditEvent``."""
    entities: list[dict[str, Any]] = []
    for patient_id in item.get("patient_ids") or []:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient_id}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
            }
        )
    if item.get("resource_id") and item.get("resource_type") != "Patient":
        entities.append(
            {
                "what": {"reference": f"{item['resource_type']}/{item['resource_id']}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
            }
        )
    if item.get("query_params"):
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
                "description": f"{item['resource_type']} search on: {', '.join(item['query_params'])}",
            }
        )
    action = Action(item["action"])
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
            ]
        },
        "who": {"identifier": {"system": "urn:expediente:user", "value": item["user_id"]}, "display": item["username"]},
        "requestor": True,
        "role": [{"text": role} for role in str(item.get("roles", "")).split(",") if role],
        "network": {"address": item.get("source_ip") or "unknown", "type": "2"},
    }
    if item.get("practitioner_id"):
        agent["who"]["reference"] = f"Practitioner/{item['practitioner_id']}"
    if item.get("clinic"):
        agent["location"] = {"display": f"CLUES {item['clinic']}"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": item["id"],
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": action.value.lstrip("$")}]
        if action not in (Action.MERGE, Action.OPERATION)
        # An operation names itself ($everything, $sign, $arco-cancel...) when the record says which.
        else [{"system": "urn:expediente:operation",
               "code": str((item.get("detail") or {}).get("operation") or action.value)}],
        "action": _CRUDE[action],
        "recorded": item["recorded"],
        "outcome": item["outcome"],
        "agent": [agent],
        "source": {
            "site": item["tenant"],
            "observer": {"display": "Expediente"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if action in (Action.LOGIN, Action.LOGIN_ATTEMPT, Action.LOGIN_FAILED):
        event["type"] = dict(_AUTHENTICATION)
        event["subtype"] = [{"system": _DCM, "code": "110122", "display": "Login"},
                            {"system": "urn:expediente:auth", "code": action.value}]
    if entities:
        event["entity"] = entities
    if int(item.get("status", 200)) >= 400:
        event["outcomeDesc"] = f"HTTP {item['status']}"
    return event
