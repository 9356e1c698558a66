"""HTTP routes for FHIR ``Patient``: parse, authorize, call the logic, answer.

Every route that touches patient data writes its audit record before any data
leaves: writes inside their transaction, reads with :func:`expediente.audit.record`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import arco, audit
from expediente import identifiers as ids
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
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Invalid, MethodNotAllowed, NotFound, PreconditionFailed, PreconditionRequired
from expediente.fhir import history_bundle, page_size, parse_if_match, query_fingerprint, searchset
from expediente.permissions import Interaction
from expediente.store import Stored

from . import everything, logic, search
from .repository import repository

app = create_app()


def _publish(make: Callable[[ModuleType], Any]) -> None:
    """Publish the event ``make(events)`` builds. The event models (pydantic) load on the first
    write, so reads never pay for them at cold start (docs/decisions/0009-cold-start.md)."""
    from expediente import events

    events.publish(make(events))


def _patient_id(value: str) -> str:
    if not valid_resource_id(value):
        raise NotFound(f"Patient/{value} not found")
    return value


def _read_response(stored: Stored) -> Response[str]:
    return fhir_response(stored.resource, version=stored.version, last_modified=stored.last_updated)


def _created(ctx: RequestContext, saved: logic.Saved) -> Response[str]:
    location = f"{base_url(app)}/fhir/Patient/{saved.resource['id']}/_history/{saved.version}"
    return fhir_response(saved.resource, status=201, version=saved.version, location=location,
                         last_modified=saved.resource["meta"]["lastUpdated"])


@app.post("/fhir/Patient")
def create_patient() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.CREATE)
    body = json_body(app, resource_type="Patient")

    def run() -> Response[str]:
        condition = header(app, "if-none-exist")
        if condition:
            existing = _conditional_match(ctx, condition)
            if existing is not None:
                audit.record(ctx, AuditEntry("Patient", Action.READ, existing.resource["id"],
                                             (existing.resource["id"],), 200, detail={"conditional": "create"}))
                return _read_response(existing)
        saved = logic.create(ctx, body, repo=repository())
        has_curp = any(i["system"] == ids.CURP_SYSTEM for i in saved.resource["identifier"])
        _publish(lambda ev: ev.PatientRegistered(tenant_id=ctx.tenant, patient_id=saved.resource["id"],
                                                 has_curp=has_curp, request_id=ctx.request_id))
        logger.info("patient registered", extra={"tenant": ctx.tenant, "patient_id": saved.resource["id"]})
        return _created(ctx, saved)

    def replayed(response: Response[str]) -> None:
        patient_id = str(response.headers.get("Location", "")).split("/Patient/")[-1].split("/")[0]
        audit.record(ctx, AuditEntry("Patient", Action.CREATE, patient_id or None,
                                     (patient_id,) if patient_id else (), response.status_code,
                                     detail={"idempotent": "replayed"}))

    return idempotent(app, ctx, run, on_replay=replayed)


def _conditional_match(ctx: RequestContext, condition: str) -> Stored | None:
    """``If-None-Exist: identifier=system|value``: the one existing match, None, or 412 when several."""
    params = dict(parse_qsl(condition, keep_blank_values=True))
    if set(params) != {"identifier"}:
        raise Invalid("If-None-Exist supports identifier=system|value", expression="If-None-Exist")
    found = _search_by_identifier(ctx, search.parse(params))
    if len(found) > 1:
        raise PreconditionFailed("If-None-Exist matches more than one patient")
    return found[0] if found else None


def _search_by_identifier(ctx: RequestContext, q: search.PatientQuery) -> list[Stored]:
    assert q.identifier is not None
    system, value = q.identifier
    repo = repository()
    matches: list[str] = []
    if system in (None, ids.CURP_SYSTEM):
        try:
            curp = ids.validate_curp(value, where="identifier")
        except Invalid:
            if system is not None:
                raise
        else:
            found = repo.find_by_curp(ctx, curp)
            matches += [found] if found else []
    if system in (None, ids.FOLIO_SYSTEM) and not matches:
        found = repo.find_by_folio(ctx, value.strip().upper())
        matches += [found] if found else []
    return repo.get_many(ctx, matches)


@app.get("/fhir/Patient")
def search_patients() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.SEARCH)
    params = query_params(app)
    q = search.parse(params)
    limit = page_size(params)
    fingerprint = query_fingerprint(params)
    next_token: str | None = None
    if q.identifier is not None:
        if params.get("_page"):
            raise Invalid("_page is not a continuation token of this search", expression="_page")
        results = [s for s in _search_by_identifier(ctx, q) if not q.filters or search.matches(_attrs(s), q.filters)]
    elif q.id is not None:
        results = [s for s in repository().get_many(ctx, [_patient_id(i) for i in q.id.split(",")])
                   if not q.filters or search.matches(_attrs(s), q.filters)]
    else:
        results, next_token = repository().search(ctx, q, limit=limit, page=params.get("_page"),
                                                  fingerprint=fingerprint)
    if arco.applies_to(ctx):  # records blocked by an ARCO cancellation are out of clinical use
        results = [s for s in results if not arco.blocked_until(s)]
    patient_ids = tuple(s.resource["id"] for s in results)
    audit.record(ctx, AuditEntry("Patient", Action.SEARCH, None, patient_ids, 200,
                                 query_params=tuple(sorted(params))))
    total = len(results) if next_token is None and not params.get("_page") else None
    bundle = searchset(base_url=base_url(app), path="/fhir/Patient", params=params,
                       resources=[s.resource for s in results], next_token=next_token, total=total)
    return fhir_response(bundle)


def _attrs(stored: Stored) -> dict[str, Any]:
    demo = logic.stored_demographics(stored)
    return next(iter(search.index_entries(demo).values()))


@app.get("/fhir/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.READ)
    stored = logic.read(ctx, _patient_id(patient_id), repo=repository())
    audit.record(ctx, AuditEntry("Patient", Action.READ, patient_id, (patient_id,), 200))
    return _read_response(stored)


@app.get("/fhir/Patient/<patient_id>/_history/<version>")
def vread_patient(patient_id: str, version: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.VREAD)
    logic.read(ctx, _patient_id(patient_id), repo=repository())  # 404 for another patient, 403 when blocked
    stored = repository().get_version(ctx, patient_id, int(version)) if version.isdigit() else None
    if stored is None:
        raise NotFound(f"Patient/{patient_id}/_history/{version} not found")
    audit.record(ctx, AuditEntry("Patient", Action.VREAD, patient_id, (patient_id,), 200))
    return _read_response(stored)


@app.get("/fhir/Patient/<patient_id>/_history")
def patient_history(patient_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.HISTORY)
    current = logic.read(ctx, _patient_id(patient_id), repo=repository())
    params = query_params(app)
    versions, next_token = repository().history(ctx, patient_id, limit=page_size(params),
                                                page=params.get("_page"), fingerprint=patient_id)
    audit.record(ctx, AuditEntry("Patient", Action.HISTORY, patient_id, (patient_id,), 200))
    bundle = history_bundle(base_url=base_url(app), path=f"/fhir/Patient/{patient_id}/_history",
                            versions=[v.resource for v in versions], next_token=next_token,
                            total=current.version)
    return fhir_response(bundle)


@app.put("/fhir/Patient/<patient_id>")
def update_patient(patient_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.UPDATE)
    body = json_body(app, resource_type="Patient")
    if_match = parse_if_match(header(app, "if-match"))
    if if_match is None:
        # Versioned update only: an update without If-Match could silently overwrite a colleague's change.
        raise PreconditionRequired('Updates need If-Match with the version read (ETag, e.g. W/"1")',
                                   expression="If-Match")
    saved = logic.update(ctx, _patient_id(patient_id), body, if_match=if_match, repo=repository())
    _publish(lambda ev: ev.PatientUpdated(tenant_id=ctx.tenant, patient_id=patient_id, version=saved.version,
                                          request_id=ctx.request_id))
    return fhir_response(saved.resource, version=saved.version, last_modified=saved.resource["meta"]["lastUpdated"])


@app.delete("/fhir/Patient/<patient_id>")
def delete_patient(patient_id: str) -> Response[str]:
    request_context(app)  # still 401 for an anonymous caller
    # NOM-004 5.11: no erasures. Deactivation is an update with active=false.
    raise MethodNotAllowed(
        "Patient records are never deleted (NOM-004-SSA3 5.11). To deactivate a record, update it with "
        "active=false; to resolve a duplicate, use Patient/$merge.", headers={"Allow": "GET, PUT"})


@app.post(r"/fhir/Patient/\$merge")  # "$" escaped: routes are regular expressions
def merge_patients() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Patient", Interaction.MERGE)
    body = json_body(app, resource_type="Parameters")
    refs = {p.get("name"): (p.get("valueReference") or {}).get("reference", "")
            for p in body.get("parameter") or []}
    source, target = refs.get("source-patient", ""), refs.get("target-patient", "")
    if not source.startswith("Patient/") or not target.startswith("Patient/"):
        raise Invalid("Parameters must include source-patient and target-patient as Patient references",
                      expression="Parameters.parameter")

    def run() -> Response[str]:
        new_source, new_target = logic.merge(ctx, _patient_id(source[8:]), _patient_id(target[8:]),
                                             repo=repository())
        _publish(lambda ev: ev.PatientMerged(tenant_id=ctx.tenant, source_patient_id=new_source["id"],
                                             target_patient_id=new_target["id"], request_id=ctx.request_id))
        result = {"resourceType": "Parameters", "parameter": [
            {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "information", "code": "informational",
                 "diagnostics": f"Patient/{new_source['id']} merged into Patient/{new_target['id']}"}]}},
            {"name": "result", "resource": new_target},
        ]}
        return fhir_response(result)

    return idempotent(app, ctx, run)


@app.get(r"/fhir/Patient/<patient_id>/\$everything")
def patient_everything(patient_id: str) -> Response[str]:
    """``Patient/$everything``: the whole record as one searchset Bundle (NOM-024 export, ARCO access).

    One audit record names the patient, the operation and the number of entries of the page.
    """
    ctx = request_context(app)
    ctx.require("Patient", Interaction.EVERYTHING)
    patient = logic.read(ctx, _patient_id(patient_id), repo=repository())
    params = query_params(app)
    page = everything.collect(ctx, patient, params, limit=page_size(params), medications=everything.formulary_items)
    audit.record(ctx, AuditEntry("Patient", Action.OPERATION, patient_id, (patient_id,), 200,
                                 query_params=tuple(sorted(params)),
                                 detail={"operation": "$everything", "entries": str(page.count)}))
    total = len(page.matches) if page.next_token is None and not params.get("_page") else None
    bundle = searchset(base_url=base_url(app), path=f"/fhir/Patient/{patient_id}/$everything", params=params,
                       resources=page.matches, next_token=page.next_token, total=total, included=page.included)
    return fhir_response(bundle)


@app.post(r"/fhir/Patient/<patient_id>/\$arco-cancel")
def arco_cancel(patient_id: str) -> Response[str]:
    """Record an ARCO cancellation request: the record is blocked from clinical use, never deleted."""
    ctx = request_context(app)
    ctx.require("Patient", Interaction.ARCO_CANCEL)
    body = json_body(app, resource_type="Parameters")
    request = logic.cancellation_request(body, today=logic.utc_now().date().isoformat())

    def run() -> Response[str]:
        saved = logic.arco_cancel(ctx, _patient_id(patient_id), request, repo=repository(),
                                  last_act=lambda current: everything.last_act(ctx, current))
        logger.info("patient record blocked (ARCO cancellation)", extra={"tenant": ctx.tenant,
                                                                         "patient_id": patient_id})
        return fhir_response(saved.resource, version=saved.version,
                             last_modified=saved.resource["meta"]["lastUpdated"])

    return idempotent(app, ctx, run)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
