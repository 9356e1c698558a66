"""HTTP routes for Encounter, Composition (clinical notes), Condition and Provenance.

Thin: read the verified caller, check the permission table, call the rules, answer. Every read
writes its audit record before data leaves; every write's audit record is in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, records, signing_keys
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
from expediente.context import RequestContext
from expediente.errors import Invalid, MethodNotAllowed, Unprocessable
from expediente.fhir import searchset
from expediente.permissions import Interaction, reads_narrative, reads_sensitive_diagnoses
from expediente.routes import ClinicalRoutes, patients_of
from expediente.store import Stored

from . import compositions, conditions, encounters
from .repository import repository

app = create_app()



# ------------------------------------------------------------------ collaborators ---


def _patient(ctx: RequestContext, patient_id: str) -> dict[str, Any] | None:
    return records.find(ctx.tenant, "Patient", patient_id)


def _patient_exists(ctx: RequestContext, patient_id: str) -> bool:
    return _patient(ctx, patient_id) is not None


def _clinic_org(ctx: RequestContext, clues: str) -> str | None:
    return records.find_unique(ctx.tenant, "Organization", clues)


def _practitioner_active(ctx: RequestContext, practitioner_id: str) -> bool:
    practitioner = records.find(ctx.tenant, "Practitioner", practitioner_id)
    return practitioner is not None and practitioner.get("active", True) is not False


@cache
def _kms_signer() -> Any:
    from expediente import aws, signing

    return signing.KmsSigner(aws.unscoped_client("kms"))  # signing keys: execution role (decision 0023)


def _publish(make: Callable[[Any], Any]) -> None:
    """Publish an event; the pydantic event models load on the first signature only."""
    from expediente import events

    events.publish(make(events))


# ------------------------------------------------------------------ shared routes ---


def _present(ctx: RequestContext, stored: Stored) -> dict[str, Any]:
    if stored.resource["resourceType"] == "Composition":
        return compositions.present(stored, ctx.roles, narrative=reads_narrative(ctx.roles))
    if stored.resource["resourceType"] == "Condition":
        return conditions.present(stored.resource, sensitive_reader=reads_sensitive_diagnoses(ctx.roles))
    return stored.resource


def _included(ctx: RequestContext, repo: ClinicalRepository, found: list[Stored], includes: set[str]
              ) -> list[Stored]:
    """The resources ``_include``/``_revinclude`` ask for, read by key (never another tenant's)."""
    extra: list[Stored] = []
    if "Composition:encounter" in includes or "Condition:encounter" in includes:
        ids = [str(s.resource.get("encounter", {}).get("reference", "")).split("/")[-1] for s in found]
        extra += repo.get_many(ctx, "Encounter", [i for i in ids if i])
    if "Composition:author" in includes:
        authors = {a["reference"].split("/")[1] for s in found for a in s.resource.get("author") or []}
        extra += [s for a in sorted(authors) if (s := records.load(ctx.tenant, records.Ref("Practitioner", a)))]
    if "Encounter:patient" in includes:
        patients = {records.subject_of(s.resource) or "" for s in found}
        extra += [s for p in sorted(patients) if p and (s := records.load(ctx.tenant, records.Ref("Patient", p)))]
    if "Provenance:target" in includes:
        ids = [str(s.attrs["provenance"]) for s in found if s.attrs.get("provenance")]
        extra += repo.get_many(ctx, "Provenance", ids)
    return extra


routes = ClinicalRoutes(
    app, repository,
    searches={"Encounter": encounters.SEARCH, "Composition": compositions.SEARCH, "Condition": conditions.SEARCH},
    includes={
        "Composition": {"_include": frozenset({"Composition:encounter", "Composition:author"}),
                        "_revinclude": frozenset({"Provenance:target"})},
        "Encounter": {"_include": frozenset({"Encounter:patient"})},
        "Condition": {"_include": frozenset({"Condition:encounter"})},
    },
    include=_included,
    present=_present,
)
_id = routes.id


# ------------------------------------------------------------------ Encounter ---


@app.post("/fhir/Encounter")
def create_encounter() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Encounter", Interaction.CREATE)
    body = json_body(app, resource_type="Encounter")

    def run() -> Response[str]:
        saved = encounters.create(ctx, body, repo=repository(), clinic_org=_clinic_org,
                                  patient_exists=_patient_exists, new_id=new_id)
        return routes.created(saved.resource, saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, "Encounter"))


@app.get("/fhir/Encounter")
def search_encounters() -> Response[str]:
    return routes.search("Encounter")


@app.get("/fhir/Encounter/<resource_id>")
def read_encounter(resource_id: str) -> Response[str]:
    return routes.read("Encounter", resource_id)


@app.get("/fhir/Encounter/<resource_id>/_history")
def encounter_history(resource_id: str) -> Response[str]:
    return routes.history("Encounter", resource_id)


@app.get("/fhir/Encounter/<resource_id>/_history/<version>")
def vread_encounter(resource_id: str, version: str) -> Response[str]:
    return routes.vread("Encounter", resource_id, version)


@app.put("/fhir/Encounter/<resource_id>")
def update_encounter(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Encounter", Interaction.UPDATE)
    body = json_body(app, resource_type="Encounter")
    saved = encounters.update(ctx, _id("Encounter", resource_id), body, if_match=routes.if_match(), repo=repository(),
                              clinic_org=_clinic_org)
    return routes.saved(saved.resource, saved.version)


@app.delete("/fhir/Encounter/<resource_id>")
def delete_encounter(resource_id: str) -> Response[str]:
    return routes.refuse_delete("Encounter", "Cancel it (status cancelled) or mark it entered-in-error with PUT.")


# ------------------------------------------------------------------ Condition ---


@app.post("/fhir/Condition")
def create_condition() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Condition", Interaction.CREATE)
    body = json_body(app, resource_type="Condition")

    def run() -> Response[str]:
        saved = conditions.create(ctx, body, repo=repository(), patient_exists=_patient_exists, new_id=new_id)
        return routes.created(saved.resource, saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, "Condition"))


@app.get("/fhir/Condition")
def search_conditions() -> Response[str]:
    return routes.search("Condition")


@app.get("/fhir/Condition/<resource_id>")
def read_condition(resource_id: str) -> Response[str]:
    return routes.read("Condition", resource_id)


@app.get("/fhir/Condition/<resource_id>/_history")
def condition_history(resource_id: str) -> Response[str]:
    return routes.history("Condition", resource_id)


@app.get("/fhir/Condition/<resource_id>/_history/<version>")
def vread_condition(resource_id: str, version: str) -> Response[str]:
    return routes.vread("Condition", resource_id, version)


@app.put("/fhir/Condition/<resource_id>")
def update_condition(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Condition", Interaction.UPDATE)
    body = json_body(app, resource_type="Condition")
    saved = conditions.update(ctx, _id("Condition", resource_id), body, if_match=routes.if_match(), repo=repository(),
                              patient_exists=_patient_exists)
    return routes.saved(saved.resource, saved.version)


@app.delete("/fhir/Condition/<resource_id>")
def delete_condition(resource_id: str) -> Response[str]:
    return routes.refuse_delete("Condition", "Set verificationStatus to entered-in-error or refuted, or "
                                             "clinicalStatus to resolved, with PUT.")


# ------------------------------------------------------------------ Composition ---


@app.post("/fhir/Composition")
def create_composition() -> Response[str]:
    ctx = request_context(app)
    ctx.require("Composition", Interaction.CREATE)
    body = json_body(app, resource_type="Composition")

    def run() -> Response[str]:
        saved = compositions.create(ctx, body, repo=repository(), load_patient=_patient,
                                    practitioner_active=_practitioner_active, new_id=new_id)
        logger.info("note written", extra={"tenant": ctx.tenant, "composition_id": saved.resource["id"]})
        return routes.created(saved.resource, saved.version)

    return idempotent(app, ctx, run, on_replay=routes.replayed(ctx, "Composition"))


@app.get("/fhir/Composition")
def search_compositions() -> Response[str]:
    return routes.search("Composition")


@app.get("/fhir/Composition/<resource_id>")
def read_composition(resource_id: str) -> Response[str]:
    return routes.read("Composition", resource_id)


@app.get("/fhir/Composition/<resource_id>/_history")
def composition_history(resource_id: str) -> Response[str]:
    return routes.history("Composition", resource_id)


@app.get("/fhir/Composition/<resource_id>/_history/<version>")
def vread_composition(resource_id: str, version: str) -> Response[str]:
    return routes.vread("Composition", resource_id, version)


@app.put("/fhir/Composition/<resource_id>")
def update_composition(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Composition", Interaction.UPDATE)
    body = json_body(app, resource_type="Composition")
    saved = compositions.update(ctx, _id("Composition", resource_id), body, if_match=routes.if_match(),
                                repo=repository(), load_patient=_patient, practitioner_active=_practitioner_active)
    return routes.saved(saved.resource, saved.version)


@app.patch("/fhir/Composition/<resource_id>")
def patch_composition(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Composition", Interaction.UPDATE)  # before the note is looked up: nothing to learn without it
    stored = repository().require(ctx, "Composition", _id("Composition", resource_id))
    compositions.refuse_if_signed(stored)
    raise MethodNotAllowed("PATCH is not supported; save the whole note with PUT and If-Match",
                           headers={"Allow": "GET, PUT"})


@app.delete("/fhir/Composition/<resource_id>")
def delete_composition(resource_id: str) -> Response[str]:
    ctx = request_context(app)
    ctx.require("Composition", Interaction.READ)  # before the note is looked up: nothing to learn without it
    stored = repository().require(ctx, "Composition", _id("Composition", resource_id))
    compositions.refuse_if_signed(stored)
    return routes.refuse_delete("Composition", "A draft that should not exist stays as a draft; a signed note is "
                                               "retracted by a signed addendum (relatesTo replaces, with the reason).")


def _parameters(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}


@app.post(r"/fhir/Composition/<resource_id>/\$sign")  # "$" escaped: routes are regular expressions
def sign_composition(resource_id: str) -> Response[str]:
    from . import signature  # loaded by the signing routes only (docs/decisions/0009-cold-start.md)

    ctx = request_context(app)
    ctx.require("Composition", Interaction.SIGN)
    note_id = _id("Composition", resource_id)
    raw = (app.current_event.body or "").strip()  # not decoded_body: json_body refuses bodies that are not UTF-8
    params = _parameters(json_body(app, resource_type="Parameters")) if raw else {}
    if_match = routes.if_match()
    if not ctx.practitioner_id:
        raise Unprocessable("Your user is not linked to a Practitioner, so it has no signing key")
    key = signing_keys.active(ctx.tenant, ctx.practitioner_id)
    if key is None:
        raise Unprocessable(f"Practitioner/{ctx.practitioner_id} has no signing key; an administrator registers "
                            "the practitioner again or the practitioner registers a certificate")
    if (params.get("prepare") or {}).get("valueBoolean") is True:
        prepared = signature.prepare(ctx, note_id, if_match=if_match, repo=repository(), key=key)
        audit.record(ctx, AuditEntry("Composition", Action.OPERATION, note_id,
                                     (records.subject_of(prepared.document) or "",), 200,
                                     detail={"operation": "$sign", "step": "prepare"}))
        return fhir_response(signature.prepared_parameters(prepared))
    device_jws = (params.get("signature") or {}).get("valueString")

    def run() -> Response[str]:
        signed = signature.sign(ctx, note_id, if_match=if_match, repo=repository(), key=key,
                                kms_sign=_kms_signer().sign_jws, device_jws=device_jws)
        patient = records.subject_of(signed.note) or ""
        target = compositions.addendum_target(signed.note)
        _publish(lambda ev: ev.NoteSigned(tenant_id=ctx.tenant, note_id=note_id, patient_id=patient,
                                          version=signed.version, note_type=compositions.note_type(signed.note).kind,
                                          provenance_id=signed.provenance["id"],
                                          addendum_of=target[1] if target else None, request_id=ctx.request_id))
        logger.info("note signed", extra={"tenant": ctx.tenant, "composition_id": note_id})
        response = fhir_response(signed.note, version=signed.version, last_modified=signed.note["meta"]["lastUpdated"])
        response.headers["X-Provenance"] = f"Provenance/{signed.provenance['id']}"
        return response

    return idempotent(app, ctx, run)


@app.route(r"/fhir/Composition/<resource_id>/\$verify-signature", method=["GET", "POST"])
def verify_composition(resource_id: str) -> Response[str]:
    from . import signature

    ctx = request_context(app)
    ctx.require("Composition", Interaction.VERIFY)
    note_id = _id("Composition", resource_id)
    report = signature.verify(ctx, note_id, repo=repository(),
                              key_for=lambda practitioner, kid: signing_keys.by_kid(ctx.tenant, practitioner, kid))
    patient = report.patient
    audit.record(ctx, AuditEntry("Composition", Action.OPERATION, note_id, (patient,) if patient else (), 200,
                                 detail={"operation": "$verify-signature", "valid": str(report.valid).lower()}))
    return fhir_response(signature.parameters(report))


# ------------------------------------------------------------------ Provenance ---


@app.get("/fhir/Provenance")
def search_provenance() -> Response[str]:
    """``Provenance?target=Composition/<id>``: the signature of a note (found through the note)."""
    ctx = request_context(app)
    ctx.require("Provenance", Interaction.SEARCH)
    params = query_params(app)
    unknown = sorted(set(params) - {"target", "_count"})
    if unknown or not params.get("target"):
        raise Invalid("Provenance search takes target=Composition/<id> (a note's signature)",
                      expression=unknown[0] if unknown else "target")
    repo = repository()
    found: list[Stored] = []
    for value in params["target"].split(","):
        ref = records.parse(value if "/" in value else f"Composition/{value}", where="target",
                            types=("Composition",))
        note = repo.get(ctx, "Composition", ref.id)
        provenance = note.attrs.get("provenance") if note is not None else None
        stored = repo.get(ctx, "Provenance", str(provenance)) if provenance else None
        if stored is not None:
            found.append(stored)
    audit.record(ctx, AuditEntry("Provenance", Action.SEARCH, None, patients_of(found), 200,
                                 query_params=tuple(sorted(params))))
    bundle = searchset(base_url=base_url(app), path="/fhir/Provenance", params=params,
                       resources=[s.resource for s in found], next_token=None, total=len(found))
    return fhir_response(bundle)


@app.get("/fhir/Provenance/<resource_id>")
def read_provenance(resource_id: str) -> Response[str]:
    return routes.read("Provenance", resource_id)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
