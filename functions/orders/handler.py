"""HTTP routes for ServiceRequest: place lab and imaging orders, follow their status, worklists.

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit, records
from expediente.api import (
    base_url,
    create_app,
    fhir_response,
    idempotent,
    json_body,
    logger,
    query_params,
    request_context,
)
from expediente.audit import Action, AuditEntry
from expediente.clinical import new_id
from expediente.context import RequestContext, service_context
from expediente.errors import Invalid, MethodNotAllowed, ServiceUnavailable
from expediente.fhir import searchset
from expediente.permissions import Interaction
from expediente.routes import ClinicalRoutes, patients_of
from expediente.store import transact

from . import logic
from .repository import find_by_number, repository, result_summary

if TYPE_CHECKING:
    from datetime import datetime

    from .outbox import Queued

app = create_app()
ORDER = "ServiceRequest"
routes = ClinicalRoutes(app, repository, searches={ORDER: logic.SEARCH})


def _patient_exists(ctx: RequestContext, patient_id: str) -> bool:
    return records.find(ctx.tenant, "Patient", patient_id) is not None


def _publish(make: Callable[[Any], Any]) -> None:
    """Publish an event; the pydantic event models load on the first write only."""
    from expediente import events

    events.publish(make(events))


@app.post("/fhir/ServiceRequest")
def create_order() -> Response[str]:
    ctx = request_context(app)
    ctx.require(ORDER, Interaction.CREATE)
    body = json_body(app, resource_type=ORDER)

    def run() -> Response[str]:
        queued: list[Queued] = []

        def to_outbox(order: dict[str, Any]) -> Callable[[], None] | None:
            if logic.category_of(order) != logic.LABORATORY:
                return None
            from . import outbox  # the HL7 codec loads on the first lab order, not at cold start

            message = outbox.queue(ctx, order)
            queued[:] = [message]

            def withdraw() -> None:  # the order was not committed: its message must not stay behind
                queued.clear()
                outbox.withdraw(message)

            return withdraw

        saved = logic.create(ctx, body, repo=repository(), patient_exists=_patient_exists, new_id=new_id,
                             before_commit=to_outbox,
                             announce=lambda order: [_queued_event(ctx, order["id"], m) for m in queued])
        order = saved.resource
        _publish(lambda ev: ev.OrderStatusChanged(tenant_id=ctx.tenant, order_id=order["id"],
                                                  patient_id=records.subject_of(order) or "", status="requested",
                                                  request_id=ctx.request_id))
        for message in queued:
            _announce(ctx, order["id"], message)
        logger.info("order placed", extra={"tenant": ctx.tenant, "order_id": order["id"]})
        return routes.created(order, saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, ORDER))


@app.get("/fhir/ServiceRequest")
def search_orders() -> Response[str]:
    """Search; ``clinic`` with one ``status`` reads that clinic's worklist; ``identifier`` finds by number."""
    params = dict(query_params(app))
    for param in ("code", "category"):
        if params.get(param):
            params[param] = ",".join(v.split("|")[-1] for v in params[param].split(","))
    if params.get("identifier"):
        return _by_number(params)
    if params.get("clinic") and params.get("status") and "," not in params["status"]:
        params["worklist"] = f"{params.pop('clinic')}|{params['status']}"
    return routes.search(ORDER, params)


def _by_number(params: dict[str, str]) -> Response[str]:
    ctx = request_context(app)
    ctx.require(ORDER, Interaction.SEARCH)
    if set(params) - {"identifier", "_count"}:
        raise Invalid("identifier (an accession or placer number) is searched alone", expression="identifier")
    number = params["identifier"].split("|")[-1].strip().upper()
    order_id = find_by_number(ctx.tenant, number)
    found = [s for s in ([repository().get(ctx, ORDER, order_id)] if order_id else []) if s is not None]
    audit.record(ctx, AuditEntry(ORDER, Action.SEARCH, None, patients_of(found), 200, query_params=("identifier",)))
    return fhir_response(searchset(base_url=base_url(app), path="/fhir/ServiceRequest", params=params,
                                   resources=[s.resource for s in found], next_token=None, total=len(found)))


@app.get("/fhir/ServiceRequest/<resource_id>")
def read_order(resource_id: str) -> Response[str]:
    return routes.read(ORDER, resource_id)


@app.get("/fhir/ServiceRequest/<resource_id>/_history")
def order_history(resource_id: str) -> Response[str]:
    return routes.history(ORDER, resource_id)


@app.get("/fhir/ServiceRequest/<resource_id>/_history/<version>")
def vread_order(resource_id: str, version: str) -> Response[str]:
    return routes.vread(ORDER, resource_id, version)


@app.post(r"/fhir/ServiceRequest/<resource_id>/\$status")  # "$" escaped: routes are regular expressions
def order_status(resource_id: str) -> Response[str]:
    """``Parameters`` ``status`` (in-process, completed, cancelled) and, to cancel, ``reason``; If-Match."""
    ctx = request_context(app)
    ctx.require(ORDER, Interaction.STATUS)
    order_id = routes.id(ORDER, resource_id)
    body = json_body(app, resource_type="Parameters")
    values = {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    status = (values.get("status") or {}).get("valueCode")
    if not status:
        raise Invalid("Parameters needs status (valueCode)", expression="Parameters.status")
    reason = (values.get("reason") or {}).get("valueString")
    saved = logic.change_status(ctx, order_id, str(status), reason=reason, if_match=routes.if_match(),
                                repo=repository())
    order = saved.resource
    _publish(lambda ev: ev.OrderStatusChanged(tenant_id=ctx.tenant, order_id=order_id,
                                              patient_id=records.subject_of(order) or "", status=str(status),
                                              previous_status=saved.previous_status, request_id=ctx.request_id))
    if status == "cancelled" and logic.category_of(order) == logic.LABORATORY:
        from . import outbox

        try:
            message = outbox.queue(ctx, order, control="CA")
        except (BotoCoreError, ClientError):
            # The cancellation is committed and OrderStatusChanged announces it; only the ORM^O01 CA failed.
            logger.exception("cancellation message not queued", extra={"tenant": ctx.tenant, "order_id": order_id})
        else:
            # The S3 message is the change committed here: its event goes to the event outbox before it is
            # published, so a failed PutEvents leaves it to the relay (decision 0028).
            event = _queued_event(ctx, order_id, message)
            try:
                transact([], events=(event,))
            except ServiceUnavailable:
                logger.warning("event not written to the outbox", extra={"tenant": ctx.tenant, "order_id": order_id})
            _publish(lambda ev: event)
    return routes.saved(order, saved.version)


def _queued_event(ctx: RequestContext, order_id: str, message: Queued) -> Any:
    from expediente import events

    return events.OrderMessageQueued(tenant_id=ctx.tenant, order_id=order_id, message_type=message.message_type,
                                     control_id=message.control_id, bucket=message.bucket, object_key=message.key,
                                     request_id=ctx.request_id)


def _announce(ctx: RequestContext, order_id: str, message: Queued) -> None:
    _publish(lambda ev: _queued_event(ctx, order_id, message))


@app.post(r"/fhir/ServiceRequest/<resource_id>/\$dicom-upload")
def dicom_upload(resource_id: str) -> Response[str]:
    """Presigned PUT URLs for the DICOM files of an imaging order: ``Parameters`` with one ``size``
    (valueInteger, bytes) per file; answers one ``upload`` part per file (url, method, headers)."""
    ctx = request_context(app)
    ctx.require(ORDER, Interaction.DICOM_UPLOAD)
    order = repository().require(ctx, ORDER, routes.id(ORDER, resource_id))
    body = json_body(app, resource_type="Parameters")
    sizes = [p.get("valueInteger") for p in body.get("parameter") or []
             if isinstance(p, dict) and p.get("name") == "size"]
    from . import uploads

    issued = uploads.presign(ctx, order.resource, sizes)
    audit.record(ctx, AuditEntry(ORDER, Action.OPERATION, order.resource["id"], patients_of([order]), 200,
                                 detail={"operation": "$dicom-upload", "files": str(len(issued))}))
    return fhir_response(uploads.parameters(issued))


@app.put("/fhir/ServiceRequest/<resource_id>")
def update_order(resource_id: str) -> Response[str]:
    request_context(app)
    raise MethodNotAllowed("An order is not edited: change its status with $status, or cancel it and place a new "
                           "one", headers={"Allow": "GET, POST"})


@app.delete("/fhir/ServiceRequest/<resource_id>")
def delete_order(resource_id: str) -> Response[str]:
    return routes.refuse_delete(ORDER, "Cancel it with $status (status cancelled and a reason).")


# ------------------------------------------------------------------ results → orders (SQS) ---


def _results(ctx: RequestContext, order_id: str) -> logic.ResultSummary:
    reports, observations = result_summary(ctx.tenant, order_id)
    return logic.ResultSummary(tuple(reports), tuple(observations))


def on_result_recorded(detail: dict[str, Any]) -> None:
    """A ``ResultRecorded`` event: advance each order it names; publish the status changes."""
    from expediente import events

    event = events.ResultRecorded.model_validate(detail)
    ctx = service_context(event.tenant_id, "orders-from-results", request_id=event.request_id)
    for order_id in event.order_ids:
        for saved in logic.advance_with_results(ctx, order_id, repo=repository(), results=_results):
            _publish(_status_changed(ctx, saved))
            order = saved.resource
            logger.info("order advanced by its results", extra={"tenant": ctx.tenant, "order_id": order_id,
                                                                "status": logic.order_status(order)})


def _status_changed(ctx: RequestContext, saved: logic.Saved) -> Callable[[Any], Any]:
    order = saved.resource
    return lambda ev: ev.OrderStatusChanged(tenant_id=ctx.tenant, order_id=order["id"],
                                            patient_id=records.subject_of(order) or "",
                                            status=logic.order_status(order), previous_status=saved.previous_status,
                                            request_id=ctx.request_id)


def on_images_ingested(detail: dict[str, Any]) -> None:
    """A ``DicomInstanceIngested`` event: the imaging order starts (``in-process``) with its first image."""
    from expediente import events

    event = events.DicomInstanceIngested.model_validate(detail)
    ctx = service_context(event.tenant_id, "orders-from-images", request_id=event.request_id)
    for saved in logic.start_with_images(ctx, event.order_id, repo=repository()):
        _publish(_status_changed(ctx, saved))
        logger.info("imaging order started by its images", extra={"tenant": ctx.tenant, "order_id": event.order_id})


# ------------------------------------------------------------------ outbox relay (schedule) ---


def relay_outbox(now: datetime | None = None) -> dict[str, int]:
    """Publish every tenant's domain events left in the outbox for over a minute (decision 0028).

    They are the events of committed changes whose ``PutEvents`` failed (or whose Lambda stopped) after
    the commit. One tenant's failure is logged and does not stop the others; the next run retries.
    """
    from expediente import metrics, outbox, tenants

    report = outbox.relay(tenants.registered_tenants(), now=now)
    metrics.count("EventsRelayed", report.relayed)
    metrics.count("OutboxBacklog", report.found)
    metrics.count("OutboxStale", report.stale)  # alarmed: events the relay has failed to deliver for minutes
    if report.found or report.tenants_failed:
        logger.info("outbox relayed", extra={"found": report.found, "relayed": report.relayed,
                                             "failed": report.failed, "tenants_failed": len(report.tenants_failed)})
    return {"found": report.found, "relayed": report.relayed, "failed": report.failed,
            "tenants_failed": len(report.tenants_failed)}


_CONSUMED = {"ResultRecorded": on_result_recorded, "DicomInstanceIngested": on_images_ingested}


def _record_handler(record: Any) -> None:
    body = json.loads(record.body)
    handle = _CONSUMED.get(str(body.get("detail-type")))
    if handle is None:
        logger.warning("ignored an event this queue should not carry", extra={"detail_type": body.get("detail-type")})
        return
    handle(body["detail"])


def _consume(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """SQS batch: each record processed on its own; the failed ones are reported for redelivery."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    response = process_partial_response(event=event, record_handler=_record_handler,
                                        processor=BatchProcessor(event_type=EventType.SQS), context=context)
    return dict(response)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return relay_outbox()  # ScheduleDef outbox_relay, every minute (decision 0028)
    records_ = event.get("Records") or []
    if records_ and records_[0].get("eventSource") == "aws:sqs":
        return _consume(event, context)
    return app.resolve(event, context)
