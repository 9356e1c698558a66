"""HTTP routes for Observation (vital signs now; laboratory results later, same routes).

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import records
from expediente.api import (
    create_app,
    idempotent,
    json_body,
    logger,
    query_params,
    request_context,
)
from expediente.clinical import new_id
from expediente.context import RequestContext
from expediente.permissions import Interaction
from expediente.routes import ClinicalRoutes

from . import observations
from .repository import repository

app = create_app()

OBSERVATION = "Observation"


# ------------------------------------------------------------------ collaborators ---


def _load(ctx: RequestContext, ref: records.Ref) -> dict[str, Any] | None:
    """Another domain's resource (Patient, Encounter) in the caller's tenant, or None."""
    return records.find(ctx.tenant, ref.resource_type, ref.id)


routes = ClinicalRoutes(app, repository, searches={OBSERVATION: observations.SEARCH})


# ------------------------------------------------------------------ Observation ---


@app.post("/fhir/Observation")
def create_observation() -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.CREATE)
    body = json_body(app, resource_type=OBSERVATION)

    def run() -> Response[str]:
        saved = observations.create(ctx, body, repo=repository(), load=_load, new_id=new_id)
        logger.info("observation recorded", extra={"tenant": ctx.tenant, "observation_id": saved.resource["id"]})
        return routes.created(saved.resource, saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, OBSERVATION))


@app.get("/fhir/Observation")
def search_observations() -> Response[str]:
    return routes.search(OBSERVATION, observations.search_params(query_params(app)))


@app.get("/fhir/Observation/<resource_id>")
def read_observation(resource_id: str) -> Response[str]:
    return routes.read(OBSERVATION, resource_id)


@app.get("/fhir/Observation/<resource_id>/_history")
def observation_history(resource_id: str) -> Response[str]:
    return routes.history(OBSERVATION, resource_id)


@app.get("/fhir/Observation/<resource_id>/_history/<version>")
def vread_observation(resource_id: str, version: str) -> Response[str]:
    return routes.vread(OBSERVATION, resource_id, version)


@app.put("/fhir/Observation/<resource_id>")
def update_observation(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require(OBSERVATION, Interaction.UPDATE)
    body = json_body(app, resource_type=OBSERVATION)
    saved = observations.update(ctx, routes.id(OBSERVATION, resource_id), body, if_match=routes.if_match(),
                                repo=repository(), load=_load)
    return routes.saved(saved.resource, saved.version)


@app.delete("/fhir/Observation/<resource_id>")
def delete_observation(resource_id: str) -> Response[str]:
    return routes.refuse_delete(OBSERVATION, "Correct it with PUT (status amended or corrected) or mark it "
                                             "entered-in-error.")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
