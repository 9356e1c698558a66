"""The application audit trail: one append-only record per request touching patient data.

A record says who (user, role, tenant, clinic), what (resource type and id,
patient, action), the outcome, when (UTC), where from (source IP, user agent)
and the request id. It holds no names, CURPs, diagnoses or query values.
Writes go in the same ``TransactWriteItems`` as the change they describe; reads
write their record before any data is returned, and fail with 503 if they can't.
Records are exposed read-only as FHIR ``AuditEvent`` (see :func:`to_audit_event`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import aws
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
}


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


def audit_item(ctx: RequestContext, entry: AuditEntry, *, now: datetime | None = None) -> dict[str, Any]:
    """The audit record as a DynamoDB item (typed), for a put or a transaction."""
    recorded = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record_id = str(uuid.uuid4())
    single_patient = entry.patient_ids[0] if len(entry.patient_ids) == 1 else None
    values: dict[str, Any] = {
        "pk": _keys(ctx.tenant),
        "sk": f"{recorded}#{record_id}",
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
        "gsi2pk": f"{ctx.tenant}#AGENT#{ctx.user_id}",
        "gsi2sk": f"{recorded}#{record_id}",
    }
    if single_patient:
        values["gsi1pk"] = f"{ctx.tenant}#PATIENT#{single_patient}"
        values["gsi1sk"] = f"{recorded}#{record_id}"
    return aws.to_item(values)


def audit_put(ctx: RequestContext, entry: AuditEntry) -> dict[str, Any]:
    """A ``TransactWriteItems`` element that writes the audit record (append-only)."""
    return {
        "Put": {
            "TableName": settings().table_audit,
            "Item": audit_item(ctx, entry),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def record(ctx: RequestContext, entry: AuditEntry) -> None:
    """Write one audit record now. Raises :class:`AuditUnavailable` (503) if it fails."""
    put = audit_put(ctx, entry)["Put"]
    try:
        aws.client("dynamodb").put_item(**put)
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
        else [{"system": "urn:expediente:operation", "code": action.value}],
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
    if entities:
        event["entity"] = entities
    if int(item.get("status", 200)) >= 400:
        event["outcomeDesc"] = f"HTTP {item['status']}"
    return event
