"""Quarantined DICOM objects: list them, read one, and release one to its order after a review.

A quarantine record says why an object was not attached (``reason``, one of
:data:`header.REASONS` or :data:`ingest.MATCH_REASONS`) and what its header named (accession,
UIDs, modality), never the patient's identifiers. An administrator releases an object by naming
the order it belongs to (``accession``) and, when the header's PatientID is wrong but the images
are the order patient's, by confirming the patient; both need a reason and are audited. The
release runs the same matching and storing as the ingest, from the quarantine bucket; if the
object still cannot be attached, nothing changes and the answer says why.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit, aws, events, imaging
from expediente.audit import Action, AuditEntry
from expediente.clinical import now_instant
from expediente.context import RequestContext
from expediente.errors import Conflict, Invalid, NotFound, ServiceUnavailable, Unprocessable
from expediente.fhir import decode_page_token, encode_page_token, page_size
from expediente.settings import settings
from expediente.store import TransactionConflict, get_item, query, transact

from . import ingest, objects
from .header import Rejected, read_header

STATUSES = ("quarantined", "released")
_SHOWN = ("id", "status", "reason", "detail", "received_at", "quarantined_at", "size", "accession", "study",
          "series", "sop", "modality", "released_at", "released_by", "release_reason", "patient_confirmed",
          "imaging_study")


def present(item: dict[str, Any]) -> dict[str, Any]:
    """What an administrator sees of a record (no keys, no patient data)."""
    shown = {name: item[name] for name in _SHOWN if item.get(name) not in (None, "")}
    if "size" in shown:
        shown["size"] = int(shown["size"])  # DynamoDB numbers come back as Decimal
    return shown


def listing(ctx: RequestContext, params: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's records, newest first; ``status`` filters, ``_page`` continues."""
    unknown = sorted(set(params) - {"status", "_count", "_page"})
    if unknown:
        raise Invalid(f"Unsupported parameter(s): {', '.join(unknown)}", expression=unknown[0])
    status = params.get("status")
    if status and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}", expression="status")
    partition = imaging.quarantine_partition(ctx.tenant)
    fingerprint = f"quarantine|{status or ''}"
    args: dict[str, Any] = {"TableName": settings().table_results, "KeyConditionExpression": "pk = :pk",
                            "ExpressionAttributeValues": aws.to_item({":pk": partition}),
                            "ScanIndexForward": False, "Limit": page_size(params)}
    if status:
        args["FilterExpression"] = "#status = :status"
        args["ExpressionAttributeNames"] = {"#status": "status"}
        args["ExpressionAttributeValues"] = aws.to_item({":pk": partition, ":status": status})
    start = decode_page_token(params.get("_page"), partition=partition, fingerprint=fingerprint)
    if start:
        args["ExclusiveStartKey"] = start
    response = query(**args)
    items = [present(aws.from_item(i)) for i in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return items, (encode_page_token(last, fingerprint) if last else None)


def read(ctx: RequestContext, quarantine_id: str) -> dict[str, Any]:
    """The raw record (404 when the tenant has none with that id)."""
    item = get_item(settings().table_results, {"pk": imaging.quarantine_partition(ctx.tenant), "sk": quarantine_id})
    if item is None:
        raise NotFound(f"Quarantined object {quarantine_id} not found")
    return item


def release(ctx: RequestContext, quarantine_id: str, *, accession: str | None, patient_confirmed: bool,
            reason: str) -> tuple[dict[str, Any], list[events.DomainEvent]]:
    """Attach a quarantined object to its order; the updated record and the events to publish.

    400 without a reason; 409 when already released; 422 naming why it still cannot be attached.
    """
    if not reason.strip():
        raise Invalid("A release needs a reason (who checked what)", expression="Parameters.reason")
    item = read(ctx, quarantine_id)
    if item.get("status") != "quarantined":
        raise Conflict(f"Quarantined object {quarantine_id} was already released")
    source = objects.Source(settings().bucket_quarantine, str(item["quarantine_key"]))
    overrides = ingest.Overrides(accession=(accession or "").strip().upper() or None,
                                 patient_confirmed=patient_confirmed)
    try:
        instance = read_header(source.read, size=int(item["size"]) or 1)
        found = ingest.match(ctx.tenant, instance, expected=None, overrides=overrides)
    except (Rejected, ingest.Quarantined) as exc:
        raise Unprocessable(f"The object still cannot be attached: {exc.reason} ({exc.detail})") from exc
    except objects.Gone as exc:
        raise Conflict(f"Quarantined object {quarantine_id} is no longer in the quarantine bucket") from exc
    accepted = ingest.Accepted(tenant=ctx.tenant, source=source, instance=instance, match=found,
                               size=source.size or int(item["size"]))
    try:
        stored = ingest.store([accepted])
    except (ingest.Retry, BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The imaging archive or the record store is busy; nothing was released, "
                                 "try again", headers={"Retry-After": "5"}) from exc
    if stored.conflicts:
        _, why, detail = stored.conflicts[0]
        raise Unprocessable(f"The object still cannot be attached: {why} ({detail})")
    released = {"status": "released", "released_at": now_instant(), "released_by": ctx.user_id,
                "release_reason": reason.strip(), "patient_confirmed": patient_confirmed,
                "imaging_study": instance.study_uid, "accession": found.accession}
    try:
        transact([
            {"Update": {
                "TableName": settings().table_results,
                "Key": aws.to_item({"pk": item["pk"], "sk": item["sk"]}),
                "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in released),
                "ConditionExpression": "#status = :quarantined",
                "ExpressionAttributeNames": {f"#{k}": k for k in released},
                "ExpressionAttributeValues": aws.to_item({**{f":{k}": v for k, v in released.items()},
                                                          ":quarantined": "quarantined"}),
            }},
            *audit.audit_puts(ctx, AuditEntry(imaging.QUARANTINE, Action.OPERATION, quarantine_id,
                                              (found.patient_id,), 200,
                                              detail={"operation": "$release", "reason": reason.strip()[:200],
                                                      "patient_confirmed": str(patient_confirmed).lower()})),
        ])
    except TransactionConflict as exc:
        raise Conflict(f"Quarantined object {quarantine_id} was released at the same time") from exc
    objects.delete(source.bucket, source.key)
    return {**item, **released}, stored.announcements()
