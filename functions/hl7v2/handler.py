"""``POST /hl7v2``: HL7 v2 ER7 messages in (one, or a batch), ACKs out.

Thin: verify the caller (an interface user of the chain: role ``lab`` for a laboratory's results,
``reception`` for a registration system's ADT), split and read the messages with
:mod:`expediente.hl7v2`, hand each to :mod:`.ingest`, answer each with its ACK (``AA`` stored,
``AE`` refused for its content, ``AR`` rejected as unsupported or not permitted), ERR segments naming
segment and field. A batch (``BHS ... BTS``) is answered with a batch of ACKs; each message in it
stands alone. The HTTP status is 200 whenever an ACK is returned (HL7 over HTTP); 401 without a
verified token; 415 for a body that is not ER7 text; 413 over 1 MiB (the API's limit);
an AR ACK for a body that is not UTF-8.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, records
from expediente import hl7v2 as codec
from expediente.api import body_text, create_app, header, logger, request_context
from expediente.audit import Action, AuditEntry
from expediente.clinical import now_instant
from expediente.context import RequestContext
from expediente.critical_policy import in_force
from expediente.errors import AuditUnavailable, Conflict, Duplicate, Invalid, UnsupportedMediaType

if TYPE_CHECKING:
    from . import ingest

app = create_app()
ER7 = "x-application/hl7-v2+er7"
ACCEPTED_TYPES = frozenset({ER7, "application/hl7-v2", "text/plain", "application/edi-hl7", ""})


# ------------------------------------------------------------------ collaborators ---


def _results_ports() -> ingest.ResultsPorts:
    from functions.orders.repository import find_by_number
    from functions.patients.repository import repository as patients
    from functions.results.repository import repository as results

    from . import ingest

    return ingest.ResultsPorts(
        repo=results(),
        load=lambda ctx, ref: records.find(ctx.tenant, ref.resource_type, ref.id),
        policy=lambda ctx: in_force(ctx.tenant),
        find_order=lambda ctx, number: find_by_number(ctx.tenant, number),
        find_patient_by_curp=lambda ctx, curp: patients().find_by_curp(ctx, curp),
        load_many=lambda ctx, refs: {key: stored.resource
                                     for key, stored in records.load_many(ctx.tenant, refs).items()},
    )


def _patients_ports() -> ingest.PatientsPorts:
    from functions.patients import logic
    from functions.patients.repository import repository

    from . import ingest

    return ingest.PatientsPorts(repo=repository(), create=logic.create, update=logic.update)


def _publish(published: list[Any]) -> None:
    if published:
        from expediente import events

        events.publish(*published)


# ------------------------------------------------------------------ one message ---


def _ack(parsed_header: codec.Header | None, code: str, *, errors: list[codec.Hl7Error] | None = None,
         raw: str | None = None) -> str:
    return codec.ack(parsed_header, code, control_id=f"ACK{uuid.uuid4().hex[:17].upper()}", errors=errors or (),
                     now=datetime.now(UTC), raw_msh=raw)


def _refused(ctx: RequestContext, header_: codec.Header | None, error: codec.Hl7Error) -> None:
    """A refused message leaves an audit record too (NOM-024 traceability of attempts); best effort."""
    entry = AuditEntry("MessageHeader", Action.CREATE, header_.control_id if header_ else None, (),
                       400 if error.ack_code == "AE" else 422,
                       detail={"message": f"{header_.message_type}^{header_.trigger_event}" if header_ else "?",
                               "ack": error.ack_code, "error": f"{error.code} {error.location}"})
    try:
        audit.record(ctx, entry)
    except AuditUnavailable:
        logger.warning("refused HL7 message not audited", extra={"tenant": ctx.tenant})


def handle_message(ctx: RequestContext, text: str) -> tuple[str, list[Any]]:
    """The ACK for one ER7 message and the events to publish."""
    from . import ingest  # the domains' rules load with the first message, not at cold start

    parsed: codec.Parsed | None = None
    try:
        parsed = codec.parse(text)
        message = codec.read(parsed)
        key = ingest.message_key(parsed.header)
        if isinstance(message, codec.OruMessage):
            ports = _results_ports()
            ingest.check_results_sender(ctx)  # a role that may not send results learns nothing, not even "seen"
            if ingest.already_stored(ports.repo.table, ctx, key) is not None:
                return _ack(parsed.header, "AA", raw=parsed.raw_msh), []
            now = now_instant()
            plan = ingest.plan_oru(ctx, message, key, ports, now=now)
            try:
                outcome = ingest.store_oru(ctx, plan, key, repo=ports.repo, now=now, patient=None)
            except Duplicate:
                return _ack(parsed.header, "AA", raw=parsed.raw_msh), []
        else:
            patients = _patients_ports()
            if ingest.already_stored(patients.repo.table, ctx, key) is not None:
                return _ack(parsed.header, "AA", raw=parsed.raw_msh), []
            outcome = ingest.ingest_adt(ctx, message, key, patients)
    except codec.Hl7Error as error:
        header_ = parsed.header if parsed else None
        _refused(ctx, header_, error)
        logger.info("HL7 message refused", extra={"tenant": ctx.tenant, "ack": error.ack_code, "code": error.code,
                                                  "where": error.location,
                                                  "control_id": header_.control_id if header_ else None})
        return _ack(header_, error.ack_code, errors=[error], raw=parsed.raw_msh if parsed else text), []
    except Conflict as exc:
        locked = codec.Hl7Error.at("206", "MSH", 10, exc.message)
        return _ack(parsed.header if parsed else None, "AE", errors=[locked], raw=text), []
    logger.info("HL7 message stored", extra={"tenant": ctx.tenant, "control_id": parsed.header.control_id,
                                             "type": parsed.header.message_type, "written": len(outcome.written),
                                             "duplicate": outcome.duplicate})
    return _ack(parsed.header, "AA", raw=parsed.raw_msh), list(outcome.events)


@app.post("/hl7v2")
def receive() -> Response[str]:
    ctx = request_context(app)
    content_type = (header(app, "content-type") or "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(f"Send HL7 v2 ER7 text as {ER7} (or text/plain), not {content_type}")
    try:
        body = body_text(app)  # 413 over the API's body limit, as every route
    except Invalid as error:  # not UTF-8 (or broken base64): a NAK, as for any unreadable message
        unreadable = codec.Hl7Error.at("102", "MSH", 18, f"{error.message}; send UNICODE UTF-8", framing=True)
        return Response(200, ER7, _ack(None, unreadable.ack_code, errors=[unreadable]))
    try:
        messages = codec.split(body)
    except codec.Hl7Error as error:
        return Response(200, ER7, _ack(None, error.ack_code, errors=[error], raw=body[:2000]))
    acks: list[str] = []
    published: list[Any] = []
    for text in messages:
        reply, message_events = handle_message(ctx, text)
        acks.append(reply)
        published += message_events
    _publish(published)
    batch = body.lstrip().startswith(("FHS", "BHS")) or len(messages) > 1
    answer = codec.join_batch(acks, now=datetime.now(UTC)) if batch else acks[0]
    return Response(200, ER7, answer)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
