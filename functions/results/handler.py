"""HTTP routes for Observation (vital signs now; laboratory results later, same routes).

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, records
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
from expediente.clinical import new_id, plan_search
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Invalid, MethodNotAllowed, NotFound, PreconditionRequired
from expediente.fhir import history_bundle, page_size, parse_if_match, query_fingerprint, searchset
from expediente.permissions import Interaction
from expediente.store import Stored

from . import observations
from .repository import repository

app = create_app()

OBSERVATION = "Observation"


# ------------------------------------------------------------------ collaborators ---


def _load(ctx: RequestContext, ref: records.Ref) -> dict[str, Any] | None:
    """Another domain's resource (Patient, Encounter) in the caller's tenant, or None."""
    stored = records.load(ctx.tenant, ref) if valid_resource_id(ref.id) else None
    return None if stored is None else stored.resource


# ------------------------------------------------------------------ helpers ---


def _id(value: str) -> str:
    if not valid_resource_id(value):
        raise NotFound(f"{OBSERVATION}/{value} not found")
    return value


def _patients_of(stored: list[Stored]) -> tuple[str, ...]:
    found = (records.subject_of(s.resource) or s.attrs.get("patient") for s in stored)
    return tuple(dict.fromkeys(p for p in found if p))


def _resource_response(stored: Stored) -> Response[str]:
    return fhir_response(stored.resource, version=stored.version, last_modified=stored.last_updated)


def _if_match() -> int:
    value = parse_if_match(header(app, "if-match"))
    if value is None:
        raise PreconditionRequired('This change needs If-Match with the version read (ETag, e.g. W/"1")',
                                   expression="If-Match")
    return value


def _created(resource: dict[str, Any], version: int) -> Response[str]:
    location = f"{base_url(app)}/fhir/{resource['resourceType']}/{resource['id']}/_history/{version}"
    return fhir_response(resource, status=201, version=version, location=location,
                         last_modified=resource["meta"]["lastUpdated"])


def _replayed(ctx: RequestContext) -> Callable[[Response[str]], None]:
    def replayed(response: Response[str]) -> None:
        location = str(response.headers.get("Location", ""))
        resource_id = location.split(f"/{OBSERVATION}/")[-1].split("/")[0] if location else None
        audit.record(ctx, AuditEntry(OBSERVATION, Action.CREATE, resource_id or None, (), response.status_code,
                                     detail={"idempotent": "replayed"}))

    return replayed


def _refuse_includes(params: dict[str, str]) -> None:
    """No ``_include``/``_revinclude`` yet: say so rather than answer without what was asked."""
    for kind in ("_include", "_revinclude"):
        if params.get(kind):
            raise Invalid(f"{kind} is not supported for {OBSERVATION} (supported: none)", expression=kind)


# ------------------------------------------------------------------ Observation ---


@app.post("/fhir/Observation")
def create_observation() -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.CREATE)
    body = json_body(app, resource_type=OBSERVATION)

    def run() -> Response[str]:
        saved = observations.create(ctx, body, repo=repository(), load=_load, new_id=new_id)
        logger.info("observation recorded", extra={"tenant": ctx.tenant, "observation_id": saved.resource["id"]})
        return _created(saved.resource, saved.version)

    return idempotent(app, ctx, run, on_replay=_replayed(ctx))


@app.get("/fhir/Observation")
def search_observations() -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.SEARCH)
    params = observations.search_params(query_params(app))
    _refuse_includes(params)
    plan = plan_search(ctx, observations.SEARCH, params)
    if plan.empty:
        found: list[Stored] = []
        next_token = None
    else:
        found, page = repository().search(ctx, OBSERVATION, plan.facet, plan.value, limit=page_size(params),
                                          token=params.get("_page"), fingerprint=query_fingerprint(params),
                                          low=plan.low, high=plan.high, keep=plan.keep)
        next_token = page.next_token
    audit.record(ctx, AuditEntry(OBSERVATION, Action.SEARCH, None, _patients_of(found), 200,
                                 query_params=tuple(sorted(params))))
    total = len(found) if next_token is None and not params.get("_page") else None
    bundle = searchset(base_url=base_url(app), path="/fhir/Observation", params=params,
                       resources=[s.resource for s in found], next_token=next_token, total=total)
    return fhir_response(bundle)


@app.get("/fhir/Observation/<resource_id>")
def read_observation(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.READ)
    stored = repository().require(ctx, OBSERVATION, _id(resource_id))
    audit.record(ctx, AuditEntry(OBSERVATION, Action.READ, resource_id, _patients_of([stored]), 200))
    return _resource_response(stored)


@app.get("/fhir/Observation/<resource_id>/_history")
def observation_history(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.HISTORY)
    repo = repository()
    current = repo.require(ctx, OBSERVATION, _id(resource_id))
    params = query_params(app)
    unknown = sorted(set(params) - {"_count", "_page"})
    if unknown:
        raise Invalid(f"Unsupported _history parameter(s): {', '.join(unknown)}", expression=unknown[0])
    versions, next_token = repo.history(ctx, OBSERVATION, resource_id, limit=page_size(params),
                                        page=params.get("_page"))
    audit.record(ctx, AuditEntry(OBSERVATION, Action.HISTORY, resource_id, _patients_of([current]), 200))
    bundle = history_bundle(base_url=base_url(app), path=f"/fhir/Observation/{resource_id}/_history",
                            versions=[v.resource for v in versions], next_token=next_token, total=current.version)
    return fhir_response(bundle)


@app.get("/fhir/Observation/<resource_id>/_history/<version>")
def vread_observation(resource_id: str, version: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.VREAD)
    stored = repository().get_version(ctx, OBSERVATION, _id(resource_id), int(version)) \
        if version.isdigit() else None
    if stored is None:
        raise NotFound(f"{OBSERVATION}/{resource_id}/_history/{version} not found")
    audit.record(ctx, AuditEntry(OBSERVATION, Action.VREAD, resource_id, _patients_of([stored]), 200,
                                 detail={"version": version}))
    return _resource_response(stored)


@app.put("/fhir/Observation/<resource_id>")
def update_observation(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.UPDATE)
    body = json_body(app, resource_type=OBSERVATION)
    saved = observations.update(ctx, _id(resource_id), body, if_match=_if_match(), repo=repository(), load=_load)
    return fhir_response(saved.resource, version=saved.version, last_modified=saved.resource["meta"]["lastUpdated"])


@app.delete("/fhir/Observation/<resource_id>")
def delete_observation(resource_id: str) -> Response[str]:
    request_context(app)  # still 401 for an anonymous caller
    raise MethodNotAllowed(f"{OBSERVATION} resources are never deleted (NOM-004-SSA3 5.11). Correct it with PUT "
                           "(status amended or corrected) or mark it entered-in-error.",
                           headers={"Allow": "GET, PUT, POST"})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
