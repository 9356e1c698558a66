"""HTTP routes for results: Observation (vital signs, laboratory), DiagnosticReport, critical-result alerts.

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction;
events are published after the commit. The same function runs the critical-result escalation
every minute (an EventBridge ``Scheduled Event``, see :func:`lambda_handler`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, critical_policy, records
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
from expediente.clinical import ClinicalRepository, new_id
from expediente.context import RequestContext, service_context
from expediente.critical_policy import Policy
from expediente.errors import Invalid, NotFound
from expediente.fhir import searchset
from expediente.permissions import Interaction
from expediente.routes import ClinicalRoutes, patients_of
from expediente.store import Stored

from . import critical, diagnostic_reports, imaging, observations, views
from .repository import repository

app = create_app()

OBSERVATION = "Observation"
REPORT = diagnostic_reports.REPORT
ALERT = critical.COMMUNICATION


# ------------------------------------------------------------------ collaborators ---


def _load(ctx: RequestContext, ref: records.Ref) -> dict[str, Any] | None:
    """Another domain's resource (Patient, Encounter, ServiceRequest) in the caller's tenant, or None."""
    return records.find(ctx.tenant, ref.resource_type, ref.id)


def _load_results(ctx: RequestContext, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {s.resource["id"]: s.resource for s in repository().get_many(ctx, OBSERVATION, ids)}


def _policy(ctx: RequestContext) -> Policy:
    """The tenant's critical-result policy (remembered for a minute)."""
    return critical_policy.in_force(ctx.tenant)


def _publish(published: Iterable[Any]) -> None:
    from expediente import events

    events.publish(*published)


def _included(ctx: RequestContext, repo: ClinicalRepository, found: list[Stored], includes: set[str]
              ) -> list[Stored]:
    """``DiagnosticReport:result`` (the report's Observations) and ``Communication:about``, read by key."""
    extra: list[Stored] = []
    if "DiagnosticReport:result" in includes:
        ids = [i for s in found for i in diagnostic_reports.result_ids(s.resource)]
        extra += repo.get_many(ctx, OBSERVATION, ids)
    if "Communication:about" in includes:
        extra += repo.get_many(ctx, OBSERVATION, [critical.observation_of(s.resource) for s in found])
    return extra


def _present(ctx: RequestContext, stored: Stored) -> dict[str, Any]:
    if stored.resource.get("resourceType") == imaging.STUDY:
        return imaging.present(ctx, stored)
    return stored.resource


routes = ClinicalRoutes(
    app, repository,
    searches={OBSERVATION: observations.SEARCH, REPORT: diagnostic_reports.SEARCH, ALERT: critical.SEARCH,
              imaging.STUDY: imaging.SEARCH},
    includes={REPORT: {"_include": frozenset({"DiagnosticReport:result"})},
              ALERT: {"_include": frozenset({"Communication:about"})}},
    include=_included,
    present=_present,
)


# ------------------------------------------------------------------ Observation ---


@app.post("/fhir/Observation")
def create_observation() -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.CREATE)
    body = json_body(app, resource_type=OBSERVATION)

    def run() -> Response[str]:
        recorded = observations.create(ctx, body, repo=repository(), load=_load, new_id=new_id, policy=_policy)
        _publish(recorded.events)
        logger.info("observation recorded", extra={"tenant": ctx.tenant, "critical": recorded.alert is not None,
                                                   "observation_id": recorded.saved.resource["id"]})
        return routes.created(recorded.saved.resource, recorded.saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, OBSERVATION))


@app.get("/fhir/Observation")
def search_observations() -> Response[str]:
    return routes.search(OBSERVATION, observations.search_params(query_params(app)))


@app.get(r"/fhir/Observation/\$lastn")
def lastn() -> Response[str]:
    """FHIR ``$lastn``: the latest ``max`` results of each code of a patient (by category or codes)."""
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.LASTN)
    params = observations.search_params(query_params(app))
    found = views.lastn(ctx, repository(), params)
    audit.record(ctx, AuditEntry(OBSERVATION, Action.SEARCH, None, patients_of(found), 200,
                                 query_params=tuple(sorted(params)), detail={"operation": "$lastn"}))
    bundle = searchset(base_url=base_url(app), path="/fhir/Observation/$lastn", params=query_params(app),
                       resources=[s.resource for s in found], next_token=None, total=len(found))
    return fhir_response(bundle)


@app.get(r"/fhir/Observation/\$trend")
def trend() -> Response[str]:
    """One test of one patient over time, oldest first, as points ready for a chart (values, units, ranges, flags)."""
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.TREND)
    params = observations.search_params(query_params(app))
    series = views.trend(ctx, repository(), params)
    audit.record(ctx, AuditEntry(OBSERVATION, Action.SEARCH, None, patients_of(series.found), 200,
                                 query_params=tuple(sorted(params)), detail={"operation": "$trend"}))
    return fhir_response(series.parameters)


@app.put("/fhir/Observation/<resource_id>")
def update_observation(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.UPDATE)
    body = json_body(app, resource_type=OBSERVATION)
    recorded = observations.update(ctx, routes.id(OBSERVATION, resource_id), body, if_match=routes.if_match(),
                                   repo=repository(), load=_load, policy=_policy, new_id=new_id)
    _publish(recorded.events)
    return routes.saved(recorded.saved.resource, recorded.saved.version)


@app.post(r"/fhir/Observation/<resource_id>/\$acknowledge")
def acknowledge(resource_id: str) -> Response[str]:
    """A physician acknowledges a critical result with the read-back; answers the completed alert(s)."""
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.ACKNOWLEDGE)
    body = json_body(app, resource_type="Parameters")
    saved = critical.acknowledge(ctx, routes.id(OBSERVATION, resource_id), body, repo=repository())
    _publish(critical.acknowledged_event(ctx, s.resource) for s in saved)
    logger.info("critical result acknowledged", extra={"tenant": ctx.tenant, "observation_id": resource_id,
                                                       "alerts": [s.resource["id"] for s in saved]})
    if len(saved) == 1:
        return routes.saved(saved[0].resource, saved[0].version)
    return fhir_response({"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": s.resource} for s in saved]})


@app.delete("/fhir/Observation/<resource_id>")
def delete_observation(resource_id: str) -> Response[str]:
    return routes.refuse_delete(OBSERVATION, "Correct it with PUT (status amended or corrected) or mark it "
                                             "entered-in-error.")


# ------------------------------------------------------------------ DiagnosticReport ---


@app.post("/fhir/DiagnosticReport")
def create_report() -> Response[str]:
    ctx = request_context(app)
    ctx.require(REPORT, Interaction.CREATE)
    body = json_body(app, resource_type=REPORT)

    def run() -> Response[str]:
        recorded = diagnostic_reports.create(ctx, body, repo=repository(), load=_load, load_results=_load_results,
                                             new_id=new_id)
        _publish(recorded.events)
        return routes.created(recorded.saved.resource, recorded.saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, REPORT))


@app.get("/fhir/DiagnosticReport")
def search_reports() -> Response[str]:
    return routes.search(REPORT, observations.search_params(query_params(app)))


@app.put("/fhir/DiagnosticReport/<resource_id>")
def update_report(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(REPORT, Interaction.UPDATE)
    body = json_body(app, resource_type=REPORT)
    recorded = diagnostic_reports.update(ctx, routes.id(REPORT, resource_id), body, if_match=routes.if_match(),
                                         repo=repository(), load=_load, load_results=_load_results)
    _publish(recorded.events)
    return routes.saved(recorded.saved.resource, recorded.saved.version)


@app.get(r"/fhir/DiagnosticReport/<resource_id>/\$print")
def print_report(resource_id: str) -> Response[Any]:
    """The printable report: ``_format=pdf`` (default) or ``html``, with a trend chart per abnormal test."""
    ctx = request_context(app)
    ctx.require(REPORT, Interaction.PRINT)
    fmt = (query_params(app).get("_format") or "pdf").lower()
    if fmt not in ("pdf", "html"):
        raise Invalid("_format must be pdf or html", expression="_format")
    document = views.printable(ctx, repository(), routes.id(REPORT, resource_id), load=_load, fmt=fmt)
    audit.record(ctx, AuditEntry(REPORT, Action.READ, resource_id, (document.patient_id,), 200,
                                 detail={"operation": "$print", "format": fmt}))
    if fmt == "html":
        return Response(200, "text/html; charset=utf-8", document.html or "",
                        headers={"Cache-Control": "no-store"})
    return Response(200, "application/pdf", document.pdf or b"",
                    headers={"Cache-Control": "no-store",
                             "Content-Disposition": f'inline; filename="informe-{resource_id}.pdf"'})


@app.delete("/fhir/DiagnosticReport/<resource_id>")
def delete_report(resource_id: str) -> Response[str]:
    return routes.refuse_delete(REPORT, "Correct it with PUT (status amended or corrected) or mark it "
                                        "entered-in-error.")


# ------------------------------------------------------------------ critical-result alerts ---


@app.get("/fhir/Communication")
def search_alerts() -> Response[str]:
    return routes.search(ALERT)


@app.get(r"/fhir/Communication/\$time-to-acknowledge")
def time_to_acknowledge() -> Response[str]:
    """Per clinic: how many critical results, how many acknowledged, escalated, and how fast."""
    ctx = request_context(app)
    ctx.require(ALERT, Interaction.TIME_TO_ACKNOWLEDGE)
    params = query_params(app)
    summary = views.time_to_acknowledge(ctx, repository(), params)
    audit.record(ctx, AuditEntry(ALERT, Action.SEARCH, None, (), 200, query_params=tuple(sorted(params)),
                                 detail={"operation": "$time-to-acknowledge"}))
    return fhir_response(summary)


# ------------------------------------------------------------------ imaging studies ---


@app.get("/fhir/ImagingStudy")
def search_studies() -> Response[str]:
    return routes.search(imaging.STUDY, imaging.search_params(query_params(app)))


# DICOMweb (PS3.18): QIDO-RS searches and WADO-RS metadata in DICOM JSON, instances by redirect to
# a short-lived presigned URL, a PNG thumbnail per series. Same tokens, tenancy and audit as FHIR.
_DICOMWEB = "/dicomweb/studies"
_SERIES = _DICOMWEB + "/<study_uid>/series/<series_uid>"


def _dicom_json(results: list[dict[str, Any]]) -> Response[str]:
    return Response(200, imaging.DICOM_JSON, json.dumps(results), headers={"Cache-Control": "no-store"})


def _dicomweb_base() -> str:
    return f"{base_url(app)}/dicomweb"


def _audited_search(ctx: RequestContext, found: imaging.Found, level: str) -> Response[str]:
    audit.record(ctx, AuditEntry(imaging.STUDY, Action.SEARCH, None, found.patients, 200,
                                 query_params=tuple(sorted(query_params(app))), detail={"dicomweb": level}))
    return _dicom_json(found.results)


def _study_for(ctx: RequestContext, interaction: Interaction, study_uid: str) -> Stored:
    ctx.require(imaging.STUDY, interaction)
    return imaging.study(ctx, repository(), study_uid)


def _audited_read(ctx: RequestContext, stored: Stored, what: str) -> None:
    audit.record(ctx, AuditEntry(imaging.STUDY, Action.READ, stored.resource["id"], (imaging.patient_of(stored),),
                                 200, detail={"dicomweb": what}))


@app.get(_DICOMWEB)
def qido_studies() -> Response[str]:
    ctx = request_context(app)
    ctx.require(imaging.STUDY, Interaction.SEARCH)
    found = imaging.search_studies(ctx, repository(), query_params(app), base_url=_dicomweb_base())
    return _audited_search(ctx, found, "studies")


@app.get(_DICOMWEB + "/<study_uid>/series")
def qido_series(study_uid: str) -> Response[str]:
    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.SEARCH, study_uid)
    return _audited_search(ctx, imaging.search_series(ctx, stored, query_params(app), base_url=_dicomweb_base()),
                           "series")


@app.get(_DICOMWEB + "/<study_uid>/instances")
def qido_study_instances(study_uid: str) -> Response[str]:
    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.SEARCH, study_uid)
    found = imaging.search_instances(ctx, stored, None, query_params(app), base_url=_dicomweb_base())
    return _audited_search(ctx, found, "instances")


@app.get(_SERIES + "/instances")
def qido_series_instances(study_uid: str, series_uid: str) -> Response[str]:
    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.SEARCH, study_uid)
    found = imaging.search_instances(ctx, stored, series_uid, query_params(app), base_url=_dicomweb_base())
    return _audited_search(ctx, found, "instances")


@app.get(_DICOMWEB + "/<study_uid>/metadata")
def wado_study_metadata(study_uid: str) -> Response[str]:
    return _metadata(study_uid, None, None)


@app.get(_SERIES + "/metadata")
def wado_series_metadata(study_uid: str, series_uid: str) -> Response[str]:
    return _metadata(study_uid, series_uid, None)


@app.get(_SERIES + "/instances/<sop_uid>/metadata")
def wado_instance_metadata(study_uid: str, series_uid: str, sop_uid: str) -> Response[str]:
    return _metadata(study_uid, series_uid, sop_uid)


def _metadata(study_uid: str, series_uid: str | None, sop_uid: str | None) -> Response[str]:
    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.READ, study_uid)
    found = imaging.metadata(ctx, stored, series_uid=series_uid, sop_uid=sop_uid, base_url=_dicomweb_base())
    _audited_read(ctx, stored, "metadata")
    return _dicom_json(found)


@app.get(_SERIES + "/instances/<sop_uid>")
def wado_instance(study_uid: str, series_uid: str, sop_uid: str) -> Response[str]:
    """The instance itself: 303 to a presigned URL of the archive (the bytes never pass through here)."""
    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.READ, study_uid)
    url = imaging.retrieve_url(ctx, stored, series_uid, sop_uid)
    _audited_read(ctx, stored, "instance")
    return Response(303, "text/plain", "", headers={"Location": url, "Cache-Control": "no-store"})


@app.get(_SERIES + "/thumbnail")
def series_thumbnail(study_uid: str, series_uid: str) -> Response[Any]:
    """A PNG of the series' middle instance; 404 with the reason when no preview can be made."""
    from .imaging_preview import NoPreview

    ctx = request_context(app)
    stored = _study_for(ctx, Interaction.READ, study_uid)
    _audited_read(ctx, stored, "thumbnail")
    try:
        png = imaging.thumbnail(ctx, stored, series_uid)
    except NoPreview as exc:
        raise NotFound(f"No preview: {exc.reason} ({exc.detail})", headers={"X-Preview": exc.reason}) from exc
    return Response(200, "image/png", png, headers={"Cache-Control": "private, max-age=300"})


for _type in (OBSERVATION, REPORT, ALERT, imaging.STUDY):  # after the $operation GETs above, so those match first
    routes.register_reads(_type)


# ------------------------------------------------------------------ schedule ---


def escalate_all(now_clock: Any = None) -> int:
    """Escalate the overdue critical-result alerts of every tenant; returns how many were escalated.

    One tenant's failure is logged and does not stop the others (the next run retries it).
    """
    from expediente import tenants
    from expediente.errors import DomainError

    count = 0
    for tenant in tenants.registered_tenants():
        ctx = service_context(tenant, "critical-escalation")
        try:
            published = critical.escalate_due(ctx, repo=repository(), policy=_policy(ctx), clock=now_clock)
        except DomainError:
            logger.exception("critical-result escalation failed", extra={"tenant": tenant})
            continue
        _publish(published)
        count += len(published)
        if published:
            logger.info("critical results escalated", extra={"tenant": tenant, "count": len(published)})
    from expediente import metrics

    metrics.count("CriticalResultsEscalated", count)  # alarmed: critical results unacknowledged past their deadline
    return count


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return {"escalated": escalate_all()}
    return app.resolve(event, context)
