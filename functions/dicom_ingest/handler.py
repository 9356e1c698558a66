"""DICOM ingest: S3 ``ObjectCreated`` notifications from SQS, and the quarantine's admin routes.

The SQS side reports partial batch failures: a record whose upload hit something transient
(throttling, a store outage) is returned to the queue and delivered again; a record that can
never succeed (not DICOM, no order, another patient) is not a failure, its object is quarantined.
Each delivery only finishes what the previous one left (see :mod:`.ingest`).

pydicom and the event models load with the first batch or release, not at cold start (decision 0009).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, aws
from expediente.api import create_app, json_body, logger, query_params, request_context
from expediente.audit import Action, AuditEntry
from expediente.context import tenant_scope
from expediente.errors import Invalid
from expediente.permissions import Interaction
from expediente.settings import settings

if TYPE_CHECKING:
    from . import ingest

app = create_app()
QUARANTINE = "DicomQuarantine"
JSON = "application/json"


def _json(body: Any, *, status: int = 200) -> Response[str]:
    return Response(status_code=status, content_type=JSON, body=json.dumps(body))


# ------------------------------------------------------------------ quarantine (admin) ---


@app.get("/admin/dicom-quarantine")
def list_quarantine() -> Response[str]:
    from . import quarantine

    ctx = request_context(app)
    ctx.require(QUARANTINE, Interaction.SEARCH)
    items, next_page = quarantine.listing(ctx, query_params(app))
    audit.record(ctx, AuditEntry(QUARANTINE, Action.SEARCH, None, (), 200,
                                 query_params=tuple(sorted(query_params(app)))))
    return _json({"items": items, "next_page": next_page})


@app.get("/admin/dicom-quarantine/<quarantine_id>")
def read_quarantine(quarantine_id: str) -> Response[str]:
    from . import quarantine

    ctx = request_context(app)
    ctx.require(QUARANTINE, Interaction.READ)
    item = quarantine.read(ctx, quarantine_id)
    audit.record(ctx, AuditEntry(QUARANTINE, Action.READ, quarantine_id, (), 200))
    return _json(quarantine.present(item))


@app.post(r"/admin/dicom-quarantine/<quarantine_id>/\$release")  # "$" escaped: routes are regular expressions
def release_quarantine(quarantine_id: str) -> Response[str]:
    """``Parameters``: ``reason`` (required), ``accession`` (the order it belongs to), ``confirmPatient``."""
    from . import quarantine

    ctx = request_context(app)
    ctx.require(QUARANTINE, Interaction.RELEASE)
    body = json_body(app, resource_type="Parameters")
    values = {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    confirm = (values.get("confirmPatient") or {}).get("valueBoolean", False)
    if not isinstance(confirm, bool):
        raise Invalid("confirmPatient must be a valueBoolean", expression="Parameters.confirmPatient")
    record, announced = quarantine.release(
        ctx, quarantine_id, accession=(values.get("accession") or {}).get("valueString"),
        patient_confirmed=confirm, reason=str((values.get("reason") or {}).get("valueString") or ""))
    from expediente import events

    events.publish(*announced)
    logger.info("dicom object released", extra={"tenant": ctx.tenant, "quarantine_id": quarantine_id})
    return _json(quarantine.present(record))


# ------------------------------------------------------------------ S3 → SQS ---


def consume(event: dict[str, Any]) -> dict[str, Any]:
    """One SQS batch of S3 notifications; returns ``batchItemFailures`` for the records to retry."""
    from expediente import events

    from . import ingest, objects

    failures: set[str] = set()
    outcome = ingest.Outcome()
    accepted: list[tuple[str, ingest.Accepted]] = []
    lookups = ingest.Lookups()
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId"))
        try:
            body = json.loads(record.get("body") or "{}")
        except json.JSONDecodeError:
            logger.error("not an S3 notification; dropped", extra={"message_id": message_id})
            continue
        try:
            for upload in ingest.uploads(body):
                if upload.bucket != settings().bucket_ingest:
                    logger.warning("notification from another bucket ignored", extra={"message_id": message_id})
                    continue
                found = ingest.prepare(upload, outcome=outcome, lookups=lookups)
                if found is not None:
                    accepted.append((message_id, found))
        except Exception as exc:  # noqa: BLE001 - one record's failure must not fail the others
            _failed(failures, [message_id], exc)
    for group in _by_study(accepted):
        ids = [message_id for message_id, _ in group]
        try:
            stored = ingest.store([item for _, item in group])
            ingest.quarantine_conflicts(stored, outcome)
            if not events.publish(*stored.announcements()):
                raise ingest.Retry("the ingest could not be announced")
            with tenant_scope(group[0][1].tenant):  # one study, one tenant (decision 0023)
                objects.delete_many(settings().bucket_ingest,
                                    [item.source.key for item in (*stored.ingested, *stored.duplicates)])
            outcome.ingested += len(stored.ingested)
            outcome.duplicates += len(stored.duplicates)
        except Exception as exc:  # noqa: BLE001 - a failed study is retried, the other studies go on
            _failed(failures, ids, exc)
    if outcome.published and not events.publish(*outcome.published):
        logger.warning("quarantine announcements not published", extra={"count": len(outcome.published)})
    logger.info("dicom batch", extra={"ingested": outcome.ingested, "duplicates": outcome.duplicates,
                                      "quarantined": outcome.quarantined, "skipped": outcome.skipped,
                                      "failed": len(failures), "bytes_read": outcome.bytes_read})
    from expediente import metrics

    metrics.count("DicomIngested", outcome.ingested)
    metrics.count("DicomQuarantined", outcome.quarantined)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in sorted(failures)]}


def _by_study(accepted: list[tuple[str, ingest.Accepted]]) -> list[list[tuple[str, ingest.Accepted]]]:
    groups: dict[tuple[str, str], list[tuple[str, ingest.Accepted]]] = {}
    for message_id, item in accepted:
        groups.setdefault((item.tenant, item.instance.study_uid), []).append((message_id, item))
    return list(groups.values())


def _failed(failures: set[str], message_ids: list[str], exc: Exception) -> None:
    from . import ingest

    failures.update(message_ids)
    if ingest.transient(exc):
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        logger.warning("dicom upload will be retried",
                       extra={"error": type(exc).__name__, "cause": aws.error_code(cause) or type(cause).__name__})
    else:
        logger.exception("dicom upload failed unexpectedly; it will be retried, then parked in the DLQ")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:sqs":
        return consume(event)
    return app.resolve(event, context)
