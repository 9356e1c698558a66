"""HTTP routes of the admin function: parse, call the logic, answer.

Routes (``infra.definitions`` FunctionDef "admin"): the CapabilityStatement (public),
``Organization`` and ``Practitioner`` (create, read, vread, history, search, update; no
delete), ``AuditEvent`` search, and the user accounts under ``/admin/users`` (JSON, not FHIR;
errors are still ``OperationOutcome``). Every route that touches tenant data writes its
audit record before answering; a refused request is audited too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit, aws, signing_keys
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
from expediente.context import RequestContext
from expediente.errors import AuditUnavailable, DomainError, Invalid, MethodNotAllowed, PreconditionRequired
from expediente.fhir import history_bundle, parse_if_match, searchset
from expediente.permissions import Interaction
from expediente.settings import settings
from expediente.store import Stored

from . import audit_report, logic, rules, sign_in_failures
from .capability import capability_statement
from .directory import CognitoDirectory
from .repository import repository

app = create_app()
JSON = "application/json"


def _directory() -> CognitoDirectory:
    return CognitoDirectory(aws.client("cognito-idp"), settings().user_pool_id)


def _resource_response(stored: Stored | logic.Saved, *, status: int = 200, location: bool = False) -> Response[str]:
    resource = logic.present(stored.resource)
    where = None
    if location:
        where = f"{base_url(app)}/fhir/{resource['resourceType']}/{resource['id']}/_history/{stored.version}"
    return fhir_response(resource, status=status, version=stored.version, location=where,
                         last_modified=resource["meta"]["lastUpdated"])


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status_code=status, content_type=JSON, body=json.dumps(body), headers=headers or {})


Route = Callable[..., Response[str]]


def audited(resource_type: str, action: Action) -> Callable[[Route], Route]:
    """Audit a refused request (4xx) as well: NOM-024 traceability covers denied attempts.

    Successful requests write their own record (in their transaction, or before the data
    leaves). A 401 has no verified tenant to audit under, and a 5xx has already failed to
    reach the store. Recording a refusal is best effort: it never changes the answer.
    """

    def wrap(route: Route) -> Route:
        @functools.wraps(route)
        def run(**path: str) -> Response[str]:
            try:
                return route(**path)
            except DomainError as exc:
                if 400 <= exc.status < 500 and exc.status != 401:
                    _record_refusal(resource_type, action, path, exc)
                raise

        return run

    return wrap


def _record_refusal(resource_type: str, action: Action, path: dict[str, str], exc: DomainError) -> None:
    try:
        ctx = request_context(app)
    except DomainError:
        return
    resource_id = next(iter(path.values()), None)
    entry = AuditEntry(resource_type, action, resource_id, status=int(exc.status),
                       query_params=tuple(sorted(query_params(app))), detail={"refused": type(exc).__name__})
    try:
        audit.record(ctx, entry)
    except AuditUnavailable:
        logger.warning("refused request not audited", extra={"tenant": ctx.tenant, "status": int(exc.status)})


def _replay_audit(ctx: RequestContext, resource_type: str) -> Callable[[Response[str]], None]:
    def replayed(response: Response[str]) -> None:
        body = json.loads(response.body or "{}")
        resource_id = body.get("id") or body.get("username")
        audit.record(ctx, AuditEntry(resource_type, Action.CREATE, resource_id, status=response.status_code,
                                     detail={"idempotent": "replayed"}))

    return replayed


# ------------------------------------------------------------------ CapabilityStatement ---


@app.get("/fhir/metadata")
def metadata() -> Response[str]:
    """Public: what this API serves (no token, no tenant data, no audit)."""
    response = fhir_response(capability_statement(base_url(app)))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@app.get("/openapi.json")
def openapi_document() -> Response[str]:
    """Public: the OpenAPI 3 description of every route (generated from the code)."""
    from . import openapi_page

    return Response(200, "application/json", json.dumps(openapi_page.document()),
                    headers={"Cache-Control": "public, max-age=300"})


@app.get("/docs")
def openapi_page_html() -> Response[str]:
    """Public: the API's routes as a page (from the OpenAPI description)."""
    from . import openapi_page

    return Response(200, "text/html; charset=utf-8", openapi_page.page(),
                    headers={"Cache-Control": "public, max-age=300"})


# ------------------------------------------------------------------ Organization / Practitioner ---


class KmsSigningKeys:
    """Practitioners' signing keys in KMS (ECC_NIST_P256), created when they are registered."""

    def create(self, tenant: str, practitioner_id: str, *, now: str) -> signing_keys.KeyRecord:
        from expediente import signing  # loaded when a practitioner is registered (cold start)

        key = signing.KmsSigner(aws.unscoped_client("kms")).create_key(tenant=tenant, practitioner_id=practitioner_id)
        return signing_keys.KeyRecord(practitioner_id=practitioner_id, kid=key.kid, kind=signing_keys.KMS,
                                      public_key_pem=key.public_key_pem, algorithms=(signing.ES256,),
                                      created=now, key_id=key.key_id)

    def abandon(self, record: signing_keys.KeyRecord) -> None:
        from expediente import signing

        signing.KmsSigner(aws.unscoped_client("kms")).schedule_deletion(record.key_id)


def _create(kind: logic.ResourceRules) -> Response[str]:
    ctx = request_context(app)
    body = json_body(app, resource_type=kind.resource_type)

    def run() -> Response[str]:
        keys = KmsSigningKeys() if kind.resource_type == "Practitioner" else None
        saved = logic.create(ctx, kind, body, repo=repository(), keys=keys)
        logger.info("resource created", extra={"tenant": ctx.tenant, "resource": kind.resource_type,
                                               "id": saved.resource["id"]})
        return _resource_response(saved, status=201, location=True)

    return idempotent(app, ctx, run, on_replay=_replay_audit(ctx, kind.resource_type))


def _search(kind: logic.ResourceRules) -> Response[str]:
    ctx = request_context(app)
    params = query_params(app)
    page = logic.search(ctx, kind, params, repo=repository(), record=audit.record)
    bundle = searchset(base_url=base_url(app), path=f"/fhir/{kind.resource_type}", params=params,
                       resources=[logic.present(s.resource) for s in page.items], next_token=page.next_token,
                       total=page.total)
    return fhir_response(bundle)


def _read(kind: logic.ResourceRules, resource_id: str) -> Response[str]:
    stored = logic.read(request_context(app), kind, resource_id, repo=repository(), record=audit.record)
    return _resource_response(stored)


def _vread(kind: logic.ResourceRules, resource_id: str, version: str) -> Response[str]:
    stored = logic.vread(request_context(app), kind, resource_id, version, repo=repository(), record=audit.record)
    return _resource_response(stored)


def _history(kind: logic.ResourceRules, resource_id: str) -> Response[str]:
    page = logic.history(request_context(app), kind, resource_id, query_params(app), repo=repository(),
                         record=audit.record)
    bundle = history_bundle(base_url=base_url(app), path=f"/fhir/{kind.resource_type}/{resource_id}/_history",
                            versions=[logic.present(s.resource) for s in page.items], next_token=page.next_token,
                            total=page.total)
    return fhir_response(bundle)


def _update(kind: logic.ResourceRules, resource_id: str) -> Response[str]:
    ctx = request_context(app)
    body = json_body(app, resource_type=kind.resource_type)
    if_match = parse_if_match(header(app, "if-match"))
    if if_match is None:
        # Versioned update only: an update without If-Match could silently overwrite a colleague's change.
        raise PreconditionRequired('Updates need If-Match with the version read (ETag, e.g. W/"1")',
                                   expression="If-Match")
    saved = logic.update(ctx, kind, resource_id, body, if_match=if_match, repo=repository())
    return _resource_response(saved)


def _delete(kind: logic.ResourceRules) -> Response[str]:
    request_context(app)  # still 401 for an anonymous caller
    # NOM-004-SSA3 5.11 and NOM-024 traceability: nothing is erased; deactivation keeps the history.
    raise MethodNotAllowed(f"{kind.resource_type} resources are never deleted. To deactivate one, update it "
                           "with active=false (PUT with If-Match).", headers={"Allow": "GET, PUT"})


ORG, PRAC = rules.ORGANIZATION, rules.PRACTITIONER


@app.post("/fhir/Organization")
@audited("Organization", Action.CREATE)
def create_organization() -> Response[str]:
    return _create(ORG)


@app.get("/fhir/Organization")
@audited("Organization", Action.SEARCH)
def search_organizations() -> Response[str]:
    return _search(ORG)


@app.get("/fhir/Organization/<resource_id>")
@audited("Organization", Action.READ)
def read_organization(resource_id: str) -> Response[str]:
    return _read(ORG, resource_id)


@app.get("/fhir/Organization/<resource_id>/_history")
@audited("Organization", Action.HISTORY)
def organization_history(resource_id: str) -> Response[str]:
    return _history(ORG, resource_id)


@app.get("/fhir/Organization/<resource_id>/_history/<version>")
@audited("Organization", Action.VREAD)
def vread_organization(resource_id: str, version: str) -> Response[str]:
    return _vread(ORG, resource_id, version)


@app.put("/fhir/Organization/<resource_id>")
@audited("Organization", Action.UPDATE)
def update_organization(resource_id: str) -> Response[str]:
    return _update(ORG, resource_id)


@app.delete("/fhir/Organization/<resource_id>")
@audited("Organization", Action.DELETE)
def delete_organization(resource_id: str) -> Response[str]:
    return _delete(ORG)


@app.post("/fhir/Practitioner")
@audited("Practitioner", Action.CREATE)
def create_practitioner() -> Response[str]:
    return _create(PRAC)


@app.get("/fhir/Practitioner")
@audited("Practitioner", Action.SEARCH)
def search_practitioners() -> Response[str]:
    return _search(PRAC)


@app.get("/fhir/Practitioner/<resource_id>")
@audited("Practitioner", Action.READ)
def read_practitioner(resource_id: str) -> Response[str]:
    return _read(PRAC, resource_id)


@app.get("/fhir/Practitioner/<resource_id>/_history")
@audited("Practitioner", Action.HISTORY)
def practitioner_history(resource_id: str) -> Response[str]:
    return _history(PRAC, resource_id)


@app.get("/fhir/Practitioner/<resource_id>/_history/<version>")
@audited("Practitioner", Action.VREAD)
def vread_practitioner(resource_id: str, version: str) -> Response[str]:
    return _vread(PRAC, resource_id, version)


@app.put("/fhir/Practitioner/<resource_id>")
@audited("Practitioner", Action.UPDATE)
def update_practitioner(resource_id: str) -> Response[str]:
    return _update(PRAC, resource_id)


@app.delete("/fhir/Practitioner/<resource_id>")
@audited("Practitioner", Action.DELETE)
def delete_practitioner(resource_id: str) -> Response[str]:
    return _delete(PRAC)


@app.get(r"/fhir/Practitioner/<resource_id>/\$public-key")  # "$" escaped: routes are regular expressions
@audited("Practitioner", Action.OPERATION)
def practitioner_public_key(resource_id: str) -> Response[str]:
    """The practitioner's signing key (active, or ``?kid=``), as Parameters or as PEM (``_format=pem``)."""
    ctx = request_context(app)
    params = query_params(app)
    key = logic.public_key(ctx, resource_id, kid=params.get("kid"), repo=repository(), record=audit.record)
    if params.get("_format") == "pem":
        pem = key.certificate_pem or key.public_key_pem
        return Response(status_code=200, content_type="application/x-pem-file", body=pem)
    parts: list[dict[str, Any]] = [{"name": "kid", "valueString": key.kid},
                                   {"name": "kind", "valueCode": key.kind},
                                   {"name": "public-key", "valueString": key.public_key_pem},
                                   {"name": "created", "valueDateTime": key.created}]
    parts += [{"name": "algorithm", "valueCode": alg} for alg in key.algorithms]
    if key.certificate_pem:
        parts += [{"name": "certificate", "valueString": key.certificate_pem},
                  {"name": "not-after", "valueDateTime": key.not_after}]
    return fhir_response({"resourceType": "Parameters", "parameter": parts})


@app.post(r"/fhir/Practitioner/<resource_id>/\$register-certificate")
@audited("Practitioner", Action.OPERATION)
def register_certificate(resource_id: str) -> Response[str]:
    """A practitioner's own X.509 certificate becomes their signing key (with proof of possession)."""
    ctx = request_context(app)
    body = json_body(app, resource_type="Parameters")
    values = {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    certificate = (values.get("certificate") or {})
    text = certificate.get("valueString") or certificate.get("valueBase64Binary")
    proof = (values.get("proof") or {}).get("valueString")
    if not text or not proof:
        raise Invalid("Parameters needs certificate (valueString PEM or valueBase64Binary DER) and proof (detached "
                      "JWS over the certificate-proof document)", expression="Parameters.parameter")
    key = logic.register_certificate(ctx, resource_id, certificate=str(text), proof=str(proof), repo=repository())
    return fhir_response({"resourceType": "Parameters", "parameter": [
        {"name": "kid", "valueString": key.kid}, {"name": "kind", "valueCode": key.kind},
        {"name": "not-after", "valueDateTime": key.not_after}]}, status=201)


# ------------------------------------------------------------------ AuditEvent ---


@app.get("/fhir/AuditEvent")
@audited("AuditEvent", Action.SEARCH)
def search_audit_events() -> Response[str]:
    """Search the trail; ``_format=text/csv`` (or ``Accept: text/csv``) answers the page as a CSV report."""
    ctx = request_context(app)
    params = query_params(app)
    if _wants_csv(params.get("_format"), header(app, "accept")):
        page = logic.audit_records(ctx, params, repo=repository(), record=audit.record)
        bundle = searchset(base_url=base_url(app), path="/fhir/AuditEvent", params=params, resources=[],
                           next_token=page.next_token)
        return audit_report.csv_response(page.items, next_url=next((link["url"] for link in bundle["link"]
                                                                     if link["relation"] == "next"), None))
    page = logic.search_audit_events(ctx, params, repo=repository(), record=audit.record)
    bundle = searchset(base_url=base_url(app), path="/fhir/AuditEvent", params=params, resources=page.items,
                       next_token=page.next_token, total=page.total)
    return fhir_response(bundle)


def _wants_csv(fmt: str | None, accept: str | None) -> bool:
    if fmt is not None:
        if fmt in audit_report.CSV_FORMATS:
            return True
        if fmt in ("json", "application/json", "application/fhir+json"):
            return False
        raise Invalid("_format supports text/csv, json and application/fhir+json", expression="_format")
    return accept is not None and audit_report.CSV in accept.lower()


@app.get(r"/fhir/AuditEvent/\$verify")  # "$" escaped: routes are regular expressions
@audited("AuditEvent", Action.OPERATION)
def verify_audit_trail() -> Response[str]:
    """Auditor: re-walk a period's hash chains and signed digests (decision 0022); Parameters with findings."""
    from . import audit_integrity

    ctx = request_context(app)
    ctx.require("AuditEvent", Interaction.AUDIT_VERIFY)
    start, end = audit_report.verify_period(query_params(app))
    result = audit_integrity.verify(ctx.tenant, start, end)
    audit.record(ctx, AuditEntry("AuditEvent", Action.OPERATION, None, (), 200, query_params=("end", "start"),
                                 detail={"operation": "$verify", "records": str(result.walk.records),
                                         "findings": str(len(result.findings))}))
    logger.info("audit trail verified", extra={"tenant": ctx.tenant, "records": result.walk.records,
                                               "findings": len(result.findings)})
    return fhir_response(audit_integrity.as_parameters(result, requested=(start, end)))


# ------------------------------------------------------------------ users (JSON) ---


@app.post("/admin/users")
@audited("User", Action.CREATE)
def create_user() -> Response[str]:
    ctx = request_context(app)
    body = json_body(app)

    def run() -> Response[str]:
        user = logic.create_user(ctx, body, repo=repository(), directory=_directory())
        # Usernames are often people's names: the audit record names the account, the log only the role.
        logger.info("user created", extra={"tenant": ctx.tenant, "role": user["role"]})
        return _json(user, status=201, headers={"Location": f"{base_url(app)}/admin/users/{user['username']}",
                                                "ETag": f'W/"{user["version"]}"'})

    return idempotent(app, ctx, run, on_replay=_replay_audit(ctx, "User"))


@app.get("/admin/users")
@audited("User", Action.SEARCH)
def list_users() -> Response[str]:
    ctx = request_context(app)
    params = query_params(app)
    users, next_token = logic.list_users(ctx, params, repo=repository(), record=audit.record)
    return _json({"users": users, "next_page": next_token})


@app.get("/admin/users/<username>")
@audited("User", Action.READ)
def read_user(username: str) -> Response[str]:
    user = logic.read_user(request_context(app), username, repo=repository(), directory=_directory(),
                           record=audit.record)
    return _json(user, headers={"ETag": f'W/"{user["version"]}"'})


@app.put("/admin/users/<username>")
@audited("User", Action.UPDATE)
def update_user(username: str) -> Response[str]:
    ctx = request_context(app)
    body = json_body(app)
    user = logic.update_user(ctx, username, body, if_match=parse_if_match(header(app, "if-match")),
                             repo=repository(), directory=_directory())
    return _json(user, headers={"ETag": f'W/"{user["version"]}"'})


# ------------------------------------------------------------------ critical-result policy ---


@app.get("/admin/critical-results")
@audited(logic.POLICY, Action.READ)
def read_critical_policy() -> Response[str]:
    policy = logic.read_critical_policy(request_context(app), repo=repository())
    return _json(policy, headers={"ETag": f'W/"{policy["version"]}"'})


@app.put("/admin/critical-results")
@audited(logic.POLICY, Action.UPDATE)
def update_critical_policy() -> Response[str]:
    ctx = request_context(app)
    body = json_body(app)
    raw = header(app, "if-match")
    policy = logic.update_critical_policy(ctx, body, if_match=parse_if_match(raw) if raw else None,
                                          repo=repository())
    logger.info("critical-result policy changed", extra={"tenant": ctx.tenant, "version": policy["version"]})
    return _json(policy, headers={"ETag": f'W/"{policy["version"]}"'})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if sign_in_failures.is_log_subscription(event):  # Cognito's sign-in event log (decision 0029)
        return sign_in_failures.handle(event, account_of=_directory().get)
    return app.resolve(event, context)
