"""HTTP routes for the formulary, allergies, prescriptions, their alerts, the receta and dispensing.

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, records, signing_keys
from expediente.api import (
    base_url,
    create_app,
    fhir_response,
    header,
    idempotent,
    json_body,
    logger,
    query_params,
    request_context,
)
from expediente.audit import Action, AuditEntry
from expediente.clinical import new_id
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Conflict, Invalid, MethodNotAllowed, NotFound, Unprocessable
from expediente.fhir import page_size, searchset
from expediente.permissions import Interaction
from expediente.routes import ClinicalRoutes
from expediente.store import transact

from . import formulary as catalogue_module
from . import logic
from .logic import ALLERGY, DISPENSE, ISSUE, MR
from .repository import formulary, hide_op, repository

app = create_app()
routes = ClinicalRoutes(app, repository, searches={MR: logic.SEARCH, ISSUE: logic.ISSUE_SEARCH,
                                                   ALLERGY: logic.ALLERGY_SEARCH, DISPENSE: logic.DISPENSE_SEARCH})
MEDICATION = "Medication"


def _publish(make: Callable[[Any], Any]) -> None:
    from expediente import events

    events.publish(make(events))


def _alerts_header(alerts: list[dict[str, Any]]) -> dict[str, str]:
    if not alerts:
        return {"X-Alerts": "0"}
    counts: dict[str, int] = {}
    for alert in alerts:
        severity = logic.severity_of(alert)
        counts[severity] = counts.get(severity, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return {"X-Alerts": f"{len(alerts)} ({summary})"}


# ---------------------------------------------------------------- Medication (formulary) ---


def _offset(token: str | None, fingerprint: str) -> int:
    if not token:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
        if decoded["q"] != fingerprint:
            raise ValueError("another search")
        return int(decoded["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid("_page is not a page token of this search", expression="_page") from exc


def _page_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": fingerprint}).encode()).decode().rstrip("=")


@app.get("/fhir/Medication")
def search_medications() -> Response[str]:
    """``name`` (accent-insensitive prefix of any word), ``code`` (Cuadro Básico key), ``atc`` (code or
    class prefix), ``status`` (active, inactive = hidden); paged with ``_count``/``_page``."""
    ctx = request_context(app)
    ctx.require(MEDICATION, Interaction.SEARCH)
    params = query_params(app)
    unknown = sorted(set(params) - {"name", "code", "atc", "status", "_count", "_page"})
    if unknown:
        raise Invalid(f"Unsupported Medication search parameter(s): {', '.join(unknown)}", expression=unknown[0])
    if not any(params.get(p) for p in ("name", "code", "atc")):
        raise Invalid("Medication search needs name, code or atc", expression="Medication")
    status = params.get("status") or "active"
    if status not in ("active", "inactive"):
        raise Invalid("status is active or inactive (hidden by the clinic)", expression="status")
    code = (params.get("code") or "").split("|")[-1] or None
    view = formulary(ctx)
    found = view.search(name=params.get("name"), code=code, atc=params.get("atc"),
                        include_hidden=status == "inactive")
    if status == "inactive":
        found = [i for i in found if i.id in view.hidden]
    fingerprint = json.dumps({k: v for k, v in sorted(params.items()) if k != "_page"})
    start, size = _offset(params.get("_page"), fingerprint), page_size(params)
    page = found[start:start + size]
    more = start + size < len(found)
    audit.record(ctx, AuditEntry(MEDICATION, Action.SEARCH, None, (), 200, query_params=tuple(sorted(params))))
    bundle = searchset(base_url=base_url(app), path="/fhir/Medication", params=params,
                       resources=[catalogue_module.to_fhir(i, hidden=i.id in view.hidden) for i in page],
                       next_token=_page_token(start + size, fingerprint) if more else None, total=len(found))
    return fhir_response(bundle)


@app.get("/fhir/Medication/<resource_id>")
def read_medication(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(MEDICATION, Interaction.READ)
    view = formulary(ctx)
    item = view.get(resource_id, include_hidden=True) if valid_resource_id(resource_id) else None
    if item is None:
        raise NotFound(f"Medication/{resource_id} not found")
    audit.record(ctx, AuditEntry(MEDICATION, Action.READ, resource_id, (), 200))
    return fhir_response(catalogue_module.to_fhir(item, hidden=item.id in view.hidden))


def _save_local(ctx: RequestContext, resource_id: str, body: dict[str, Any], *, if_match: int | None) -> Response[str]:
    from expediente.clinical import now_instant, stamp

    if body.get("resourceType") != MEDICATION:
        raise Invalid("resourceType must be Medication", expression="resourceType")
    item = catalogue_module.local_item(body, resource_id)
    catalogue_item = catalogue_module.catalogue().get(resource_id)
    if catalogue_item is not None and item.key != catalogue_item.key:
        raise Invalid(f"Medication/{resource_id} is the clinic's version of catalogue key {resource_id}: keep that "
                      "key in code.coding", expression="Medication.code.coding")
    if catalogue_item is None and item.key and item.key in catalogue_module.catalogue():
        raise Conflict(f"Key {item.key} is in the catalogue: PUT /fhir/Medication/{item.key} to give the clinic's "
                       "version of it")
    repo = repository()
    current = repo.get(ctx, MEDICATION, resource_id)
    if current is not None:
        if if_match is None:
            routes.if_match()
        from expediente.clinical import check_version

        check_version(current, if_match or 0)
    now = now_instant()
    version = 1 if current is None else current.version + 1
    resource = stamp({**catalogue_module.to_fhir(item), "resourceType": MEDICATION}, resource_id, version, now)
    saved = repo.put(ctx, resource, index=logic.medication_entry, now=now, previous=current)
    return (routes.created if current is None else routes.saved)(saved.resource, saved.version)


@app.post("/fhir/Medication")
def create_medication() -> Response[str]:
    """A local item of the clinic's formulary (a medicine the national catalogue does not list)."""
    ctx = request_context(app)
    ctx.require(MEDICATION, Interaction.CREATE)
    body = json_body(app, resource_type=MEDICATION)
    return idempotent(app, ctx, lambda: _save_local(ctx, new_id(), body, if_match=None),
                      on_replay=routes.replayed(ctx, MEDICATION))


@app.put("/fhir/Medication/<resource_id>")
def update_medication(resource_id: str) -> Response[str]:
    """Revise a local item, or give the clinic's version of a catalogue item (PUT to its key): e.g. the
    routes of an injectable, the sale group or the maximum dose from the product's registration."""
    ctx = request_context(app)
    ctx.require(MEDICATION, Interaction.UPDATE)
    resource_id = routes.id(MEDICATION, resource_id)
    body = json_body(app, resource_type=MEDICATION)
    if body.get("id") not in (None, resource_id):
        raise Invalid(f"Medication.id {body.get('id')!r} does not match the URL id", expression="Medication.id")
    known = catalogue_module.catalogue().get(resource_id) is not None or repository().get(
        ctx, MEDICATION, resource_id) is not None
    if not known:
        raise NotFound(f"Medication/{resource_id} not found")
    from expediente.fhir import parse_if_match

    return _save_local(ctx, resource_id, body, if_match=parse_if_match(header(app, "if-match")))


@app.post(r"/fhir/Medication/<resource_id>/\$hide")
def hide_medication(resource_id: str) -> Response[str]:
    """``Parameters`` ``hidden`` (valueBoolean, default true): hide a catalogue item the clinic does not
    stock, or show it again. Prescriptions already written keep their item."""
    ctx = request_context(app)
    ctx.require(MEDICATION, Interaction.HIDE)
    body = json_body(app, resource_type="Parameters")
    values = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    hidden = (values.get("hidden") or {}).get("valueBoolean", True)
    if not isinstance(hidden, bool):
        raise Invalid("hidden is a valueBoolean", expression="Parameters.hidden")
    if not valid_resource_id(resource_id) or formulary(ctx).get(resource_id, include_hidden=True) is None:
        raise NotFound(f"Medication/{resource_id} not found")
    transact([hide_op(ctx, resource_id, hidden=hidden), *audit.audit_puts(ctx, logic.audit_hide(ctx, resource_id,
                                                                                               hidden))])
    view = formulary(ctx)
    item = view.get(resource_id, include_hidden=True)
    assert item is not None
    return fhir_response(catalogue_module.to_fhir(item, hidden=item.id in view.hidden))


# ---------------------------------------------------------------- MedicationRequest ---


def _with_alerts(resource: dict[str, Any], version: int, alerts: list[dict[str, Any]], *,
                 created: bool) -> Response[str]:
    response = routes.created(resource, version) if created else routes.saved(resource, version)
    response.headers.update(_alerts_header(alerts))
    return response


@app.post("/fhir/MedicationRequest")
def create_prescription() -> Response[str]:
    """A draft prescription; its alerts are stored as DetectedIssues, listed in ``detectedIssue`` (with a
    one-line summary each) and counted in the ``X-Alerts`` header."""
    ctx = request_context(app)
    ctx.require(MR, Interaction.CREATE)
    body = json_body(app, resource_type=MR)

    def run() -> Response[str]:
        outcome = logic.prescribe(ctx, body, repo=repository(), formulary=formulary(ctx), new_id=new_id)
        logger.info("prescription drafted", extra={"tenant": ctx.tenant, "medication_request_id":
                                                   outcome.resource["id"], "alerts": len(outcome.alerts)})
        return _with_alerts(outcome.resource, outcome.version, outcome.alerts, created=True)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, MR))


@app.post(r"/fhir/MedicationRequest/\$check")
def check_prescription() -> Response[str]:
    """The alerts a proposed prescription (or a Bundle of them) would raise, without saving it."""
    ctx = request_context(app)
    ctx.require(MR, Interaction.CHECK)
    body = json_body(app)
    bundle, patient = logic.check_proposals(ctx, body, repo=repository(), formulary=formulary(ctx))
    audit.record(ctx, AuditEntry(MR, Action.OPERATION, None, (patient,), 200,
                                 detail={"operation": "$check", "alerts": str(bundle["total"])}))
    return fhir_response(bundle)


@app.get("/fhir/MedicationRequest")
def search_prescriptions() -> Response[str]:
    params = dict(query_params(app))
    if params.get("code"):
        params["code"] = ",".join(v.split("|")[-1] for v in params["code"].split(","))
    return routes.search(MR, params)


@app.put("/fhir/MedicationRequest/<resource_id>")
def update_prescription(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(MR, Interaction.UPDATE)
    prescription_id = routes.id(MR, resource_id)
    body = json_body(app, resource_type=MR)
    outcome = logic.revise(ctx, prescription_id, body, if_match=routes.if_match(), repo=repository(),
                           formulary=formulary(ctx))
    return _with_alerts(outcome.resource, outcome.version, outcome.alerts, created=False)


@app.delete("/fhir/MedicationRequest/<resource_id>")
def delete_prescription(resource_id: str) -> Response[str]:
    return routes.refuse_delete(MR, "Cancel it with $status (status cancelled and a reason).")


def _parameters(body: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    reasons: dict[str, str] = {}
    general: str | None = None
    for parameter in body.get("parameter") or []:
        if not isinstance(parameter, dict):
            continue
        if parameter.get("name") == "overrideReason":
            general = str(parameter.get("valueString") or "").strip() or None
        elif parameter.get("name") == "override":
            parts = {p.get("name"): p for p in parameter.get("part") or [] if isinstance(p, dict)}
            issue = parts.get("issue") or {}
            reference = str((issue.get("valueReference") or {}).get("reference") or issue.get("valueString") or "")
            reason = str((parts.get("reason") or {}).get("valueString") or "").strip()
            if not reference or not reason:
                raise Invalid("override needs issue (DetectedIssue/<id>) and reason", expression="Parameters.override")
            reasons[reference.removeprefix(f"{ISSUE}/")] = reason
    return reasons, general


@app.post(r"/fhir/MedicationRequest/<resource_id>/\$sign")
def sign_prescription(resource_id: str) -> Response[str]:
    """Sign a draft (the prescriber): it becomes active and immutable. ``Parameters``: ``overrideReason``
    (valueString, for every blocking alert) or ``override`` parts (``issue``, ``reason``) per alert;
    for a prescriber with a registered certificate, ``prepare`` (valueBoolean) first, then
    ``signature`` (the detached JWS). 409 with the blocking alerts when one lacks a reason."""
    from . import signature

    ctx = request_context(app)
    ctx.require(MR, Interaction.SIGN)
    prescription_id = routes.id(MR, resource_id)
    if_match = routes.if_match()
    body = json_body(app, resource_type="Parameters") if app.current_event.body else {"parameter": []}
    reasons, general = _parameters(body)
    if not ctx.practitioner_id:
        raise Unprocessable("Your user is not linked to a Practitioner, so it has no signing key")
    key = signing_keys.active(ctx.tenant, ctx.practitioner_id)
    if key is None:
        raise Unprocessable(f"Practitioner/{ctx.practitioner_id} has no signing key; an administrator registers "
                            "the practitioner again or the practitioner registers a certificate")
    values = {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    if (values.get("prepare") or {}).get("valueBoolean") is True:
        prepared = signature.prepare(ctx, prescription_id, if_match=if_match, repo=repository(),
                                     formulary=formulary(ctx), key=key, reasons=reasons, general_reason=general)
        if isinstance(prepared, logic.Outcome):
            raise BlockingAlerts(prepared.alerts)
        logic.record_read(ctx, MR, prescription_id, records.subject_of(prepared.document) or "", "$sign prepare")
        return fhir_response(signature.prepared_parameters(prepared))
    device_jws = (values.get("signature") or {}).get("valueString")

    def run() -> Response[str]:
        result = signature.sign(ctx, prescription_id, if_match=if_match, repo=repository(), formulary=formulary(ctx),
                                key=key, kms_sign=_kms_signer().sign_jws, reasons=reasons, general_reason=general,
                                new_id=new_id, device_jws=device_jws)
        if isinstance(result, logic.Outcome):
            raise BlockingAlerts(result.alerts)
        patient = records.subject_of(result.resource) or ""
        _publish(lambda ev: ev.PrescriptionSigned(
            tenant_id=ctx.tenant, medication_request_id=prescription_id, patient_id=patient, version=result.version,
            provenance_id=result.provenance["id"],
            controlled_group=result.group if result.group in ("I", "II", "III") else None,
            overridden_alerts=result.overridden, request_id=ctx.request_id))
        logger.info("prescription signed", extra={"tenant": ctx.tenant, "medication_request_id": prescription_id,
                                                  "overrides": result.overridden})
        from expediente import metrics

        metrics.count("PrescriptionsSigned")
        if result.overridden:
            metrics.count("PrescriptionAlertsOverridden", result.overridden)
        response = _with_alerts(result.resource, result.version, result.alerts, created=False)
        response.headers["X-Provenance"] = f"Provenance/{result.provenance['id']}"
        response.headers["X-Receta-Verify"] = f"{base_url(app)}/receta/{result.token}"
        return response

    return idempotent(app, ctx, run)


class BlockingAlerts(Conflict):
    """409 listing the contraindicated or major alerts that still need the prescriber's reason (raised, so an
    Idempotency-Key does not remember it: the retry with the reasons is a new request)."""

    def __init__(self, alerts: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(alerts)} alert(s) need an override reason before signing")
        self.alerts = alerts

    def outcome(self) -> dict[str, Any]:
        return {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "business-rule",
             "diagnostics": f"{logic.severity_of(i)}: {i['detail']} — record an override reason to sign",
             "expression": [f"{ISSUE}/{i['id']}"]} for i in self.alerts]}


def _kms_signer() -> Any:
    from expediente import aws, signing

    return signing.KmsSigner(aws.unscoped_client("kms"))  # signing keys: execution role (decision 0023)


@app.post(r"/fhir/MedicationRequest/<resource_id>/\$status")
def prescription_status(resource_id: str) -> Response[str]:
    """``Parameters`` ``status`` (completed, stopped, cancelled) and ``reason`` (required to stop or cancel)."""
    ctx = request_context(app)
    ctx.require(MR, Interaction.STATUS)
    prescription_id = routes.id(MR, resource_id)
    body = json_body(app, resource_type="Parameters")
    values = {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    status = str((values.get("status") or {}).get("valueCode") or "")
    if not status:
        raise Invalid("Parameters needs status (valueCode)", expression="Parameters.status")
    reason = (values.get("reason") or {}).get("valueString")
    change = logic.change_status(ctx, prescription_id, status, reason=reason, if_match=routes.if_match(),
                                 repo=repository())
    _publish(lambda ev: ev.PrescriptionStatusChanged(
        tenant_id=ctx.tenant, medication_request_id=prescription_id,
        patient_id=records.subject_of(change.resource) or "", status=status, previous_status=change.previous,
        request_id=ctx.request_id))
    return routes.saved(change.resource, change.version)


@app.route(r"/fhir/MedicationRequest/<resource_id>/\$verify-signature", method=["GET", "POST"])
def verify_prescription(resource_id: str) -> Response[str]:
    from . import signature

    ctx = request_context(app)
    ctx.require(MR, Interaction.VERIFY)
    current = repository().require(ctx, MR, routes.id(MR, resource_id))
    result = signature.verify(ctx.tenant, current, repo=repository(), ctx=ctx)
    patient = records.subject_of(current.resource) or ""
    logic.record_read(ctx, MR, resource_id, patient, "$verify-signature")
    parts: list[dict[str, Any]] = [{"name": "valid", "valueBoolean": result.valid},
                                   {"name": "reason", "valueString": result.reason}]
    if result.provenance is not None:
        parts.append({"name": "provenance", "resource": result.provenance})
    return fhir_response({"resourceType": "Parameters", "parameter": parts})


@app.get(r"/fhir/MedicationRequest/<resource_id>/\$print")
def print_receta(resource_id: str) -> Response[Any]:
    """The printable receta (PDF) of a signed prescription, with the QR code a pharmacy scans."""
    from . import printing

    ctx = request_context(app)
    ctx.require(MR, Interaction.PRINT)
    current = repository().require(ctx, MR, routes.id(MR, resource_id))
    if current.resource.get("status") == "draft" or not current.attrs.get("token"):
        raise Conflict(f"{MR}/{resource_id} is not signed: only a signed prescription has a receta")
    pdf = printing.receta_pdf(ctx, current, formulary(ctx), verify_base=base_url(app))
    logic.record_read(ctx, MR, resource_id, records.subject_of(current.resource) or "", "$print")
    return Response(200, "application/pdf", pdf, headers={
        "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="receta-{resource_id}.pdf"'})


routes.register_reads(MR)


# ---------------------------------------------------------------- the pharmacy's verification (public) ---


@app.get("/receta/<token>")
def verify_receta(token: str) -> Response[str]:
    """What a pharmacy sees when it scans a receta's QR code (no account): whether it is authentic and
    how much is left to dispense. HTML for a browser, JSON otherwise; the patient by initials only."""
    from . import printing

    if not (16 <= len(token) <= 64) or not all(c.isalnum() or c in "-_" for c in token):
        raise NotFound("This receta does not exist")
    answer = printing.public_verification(token)
    accept = header(app, "accept") or ""
    if "text/html" in accept:
        return Response(200, "text/html; charset=utf-8", printing.verification_html(answer),
                        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"})
    return Response(200, "application/json", json.dumps(answer), headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- DetectedIssue ---


@app.get("/fhir/DetectedIssue")
def search_issues() -> Response[str]:
    return routes.search(ISSUE)


@app.put("/fhir/DetectedIssue/<resource_id>")
def update_issue(resource_id: str) -> Response[str]:
    request_context(app)
    raise MethodNotAllowed("Alerts are written by the prescription checks; override one with the prescription's "
                           "$sign (override)", headers={"Allow": "GET"})


routes.register_reads(ISSUE)


# ---------------------------------------------------------------- AllergyIntolerance ---


@app.post("/fhir/AllergyIntolerance")
def create_allergy() -> Response[str]:
    ctx = request_context(app)
    ctx.require(ALLERGY, Interaction.CREATE)
    body = json_body(app, resource_type=ALLERGY)

    def run() -> Response[str]:
        outcome = logic.record_allergy(ctx, body, repo=repository(), formulary=formulary(ctx), new_id=new_id)
        return routes.created(outcome.resource, outcome.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, ALLERGY))


@app.put("/fhir/AllergyIntolerance/<resource_id>")
def update_allergy(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(ALLERGY, Interaction.UPDATE)
    allergy_id = routes.id(ALLERGY, resource_id)
    body = json_body(app, resource_type=ALLERGY)
    current = repository().for_update(ctx, ALLERGY, allergy_id, body, if_match=routes.if_match())
    outcome = logic.record_allergy(ctx, body, repo=repository(), formulary=formulary(ctx), new_id=new_id,
                                   current=current)
    return routes.saved(outcome.resource, outcome.version)


@app.get("/fhir/AllergyIntolerance")
def search_allergies() -> Response[str]:
    return routes.search(ALLERGY)


@app.delete("/fhir/AllergyIntolerance/<resource_id>")
def delete_allergy(resource_id: str) -> Response[str]:
    return routes.refuse_delete(ALLERGY, "Mark it inactive or refuted (clinicalStatus, verificationStatus).")


routes.register_reads(ALLERGY)


# ---------------------------------------------------------------- MedicationDispense ---


@app.post("/fhir/MedicationDispense")
def create_dispense() -> Response[str]:
    """The pharmacy dispenses a signed prescription (``authorizingPrescription``, ``quantity``)."""
    ctx = request_context(app)
    ctx.require(DISPENSE, Interaction.CREATE)
    body = json_body(app, resource_type=DISPENSE)

    def run() -> Response[str]:
        done = logic.dispense(ctx, body, repo=repository(), formulary=formulary(ctx), new_id=new_id)
        _publish(lambda ev: ev.MedicationDispensed(
            tenant_id=ctx.tenant, dispense_id=done.dispense["id"],
            medication_request_id=done.dispense["authorizingPrescription"][0]["reference"].split("/")[1],
            patient_id=records.subject_of(done.dispense) or "", remaining=done.remaining, request_id=ctx.request_id))
        from expediente import metrics

        metrics.count("MedicationsDispensed")
        response = routes.created(done.dispense, 1)
        response.headers["X-Dispensations-Remaining"] = str(done.remaining)
        return response

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, DISPENSE))


@app.get("/fhir/MedicationDispense")
def search_dispenses() -> Response[str]:
    return routes.search(DISPENSE)


routes.register_reads(DISPENSE)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
