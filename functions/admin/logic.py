"""Admin use cases: the chain and its clinics, practitioners, user accounts, the audit trail.

Pure domain code: no boto3, no HTTP. Collaborators come in as arguments: the
repository, the user directory (Cognito), the audit recorder (``record``), the
clock and the id generator, so every rule is testable without AWS.
Permission checks go through ``ctx.require`` only (the table in
:mod:`expediente.permissions`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from expediente import signing_keys
from expediente.audit import Action, AuditEntry, to_audit_event
from expediente.context import RequestContext, TenantId, valid_resource_id
from expediente.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    Unauthenticated,
    Unprocessable,
)
from expediente.fhir import page_size, query_fingerprint
from expediente.permissions import Interaction, Role
from expediente.store import Stored

from . import rules
from .repository import Page, ResourceWrite, UserRecord
from .rules import NewUser, Placement, UserSpec

Clock = Callable[[], datetime]
Recorder = Callable[[RequestContext, AuditEntry], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_resource_id() -> str:
    return str(uuid.uuid4())


def timestamp(clock: Clock) -> str:
    """FHIR ``instant`` in UTC with milliseconds, as ``meta.lastUpdated`` and the audit trail write it."""
    return clock().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ResourceRules(Protocol):
    resource_type: str

    def normalize(self, body: dict[str, Any], place: Placement, *, is_chain: bool) -> dict[str, Any]: ...
    def indexed(self, resource: dict[str, Any]) -> rules.Indexed: ...
    def query(self, params: Mapping[str, str]) -> rules.ResourceQuery: ...


class Repository(Protocol):
    def tenant(self, tenant: TenantId) -> dict[str, Any] | None: ...
    def get(self, tenant: TenantId, resource_type: str, resource_id: str) -> Stored | None: ...
    def get_version(self, tenant: TenantId, resource_type: str, resource_id: str,
                    version: int) -> Stored | None: ...
    def history(self, tenant: TenantId, resource_type: str, resource_id: str, *, limit: int,
                page: str | None) -> Page: ...
    def find_unique(self, tenant: TenantId, resource_type: str, value: str) -> str | None: ...

    def patient_exists(self, tenant: TenantId, patient_id: str) -> bool: ...
    def get_many(self, tenant: TenantId, resource_type: str, ids: Sequence[str]) -> list[Stored]: ...
    def search(self, tenant: TenantId, resource_type: str, *, facet: str, prefix: str, limit: int,
               page: str | None, fingerprint: str) -> Page: ...
    def save(self, ctx: RequestContext, write: ResourceWrite, *, now: str, entry: AuditEntry,
             extra: Sequence[dict[str, Any]] = ()) -> None: ...
    def get_user(self, tenant: TenantId, username: str) -> UserRecord | None: ...
    def list_users(self, tenant: TenantId, *, limit: int, page: str | None, fingerprint: str) -> Page: ...
    def save_user(self, ctx: RequestContext, user: UserRecord, *, entry: AuditEntry) -> None: ...
    def save_keys(self, ctx: RequestContext, ops: list[dict[str, Any]], *, entry: AuditEntry) -> None: ...
    def create_tenant(self, ctx: RequestContext, *, tenant_item: dict[str, Any], chain: ResourceWrite,
                      admin: UserRecord, now: str, entries: Sequence[AuditEntry]) -> None: ...
    def audit_events(self, tenant: TenantId, q: rules.AuditQuery, *, limit: int, page: str | None,
                     fingerprint: str) -> Page: ...
    def get_setting(self, key: dict[str, str]) -> dict[str, Any] | None: ...
    def save_setting(self, ctx: RequestContext, key: dict[str, str], body: str, *, version: int,
                     entry: AuditEntry) -> None: ...


class Directory(Protocol):
    def create(self, *, username: str, email: str, tenant: str, spec: UserSpec,
               password: str | None = None) -> str: ...
    def get(self, username: str) -> Any: ...
    def update(self, username: str, *, before: UserSpec, after: UserSpec) -> None: ...
    def delete(self, username: str) -> None: ...


@dataclass(frozen=True)
class Saved:
    resource: dict[str, Any]
    version: int


# ------------------------------------------------------------------ the chain ---


def chain_id(ctx: RequestContext, repo: Repository) -> str:
    """The tenant's chain Organization id; 401 when the token names no active tenant."""
    record = repo.tenant(ctx.tenant)
    if record is None or record.get("status") != "active":
        raise Unauthenticated("The token's tenant is not an active tenant")
    return str(record["organization_id"])


def _stamp(resource: dict[str, Any], resource_type: str, resource_id: str, version: int,
           now: str) -> dict[str, Any]:
    return {"resourceType": resource_type, "id": resource_id, "meta": {"versionId": str(version), "lastUpdated": now},
            **{k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}}


def present(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with ``resourceType``, ``id`` and ``meta`` first, as FHIR JSON is usually read."""
    head: dict[str, Any] = {k: resource[k] for k in ("resourceType", "id", "meta") if k in resource}
    return {**head, **{k: v for k, v in resource.items() if k not in head}}


def new_chain(*, tenant: str, name: str, organization_id: str, now: str) -> ResourceWrite:
    """Version 1 of a tenant's chain Organization (the operator command's part of a new tenant)."""
    place = Placement(tenant=tenant, chain_id=organization_id, resource_id=organization_id)
    body = {"resourceType": "Organization", "name": name, "active": True}
    resource = rules.ORGANIZATION.normalize(body, place, is_chain=True)
    resource = _stamp(resource, "Organization", organization_id, 1, now)
    return ResourceWrite(resource, 1, rules.ORGANIZATION.indexed(resource))


# ------------------------------------------------------------------ Organization / Practitioner ---


def _resource_id(resource_type: str, value: str) -> str:
    if not valid_resource_id(value):
        raise NotFound(f"{resource_type}/{value} not found")
    return value


class SigningKeys(Protocol):
    """Creates a practitioner's signing key (KMS) when the practitioner is registered."""

    def create(self, tenant: str, practitioner_id: str, *, now: str) -> signing_keys.KeyRecord: ...
    def abandon(self, record: signing_keys.KeyRecord) -> None: ...


def create(ctx: RequestContext, kind: ResourceRules, body: dict[str, Any], *, repo: Repository,
           clock: Clock = utc_now, new_id: Callable[[], str] = new_resource_id,
           keys: SigningKeys | None = None) -> Saved:
    """Create version 1 (a clinic of the chain, or a practitioner); 409 when its CLUES/cédula is taken.

    A practitioner gets a signing key pair (``keys``) recorded in the same transaction; if the
    transaction fails the new key is scheduled for deletion, so no unrecorded key stays usable.
    """
    ctx.require(kind.resource_type, Interaction.CREATE)
    resource_id = new_id()
    place = Placement(ctx.tenant, chain_id(ctx, repo), resource_id)
    now = timestamp(clock)
    resource = _stamp(kind.normalize(body, place, is_chain=False), kind.resource_type, resource_id, 1, now)
    key = keys.create(ctx.tenant, resource_id, now=now) if keys is not None else None
    extra = signing_keys.put_ops(ctx.tenant, key) if key is not None else []
    try:
        repo.save(ctx, ResourceWrite(resource, 1, kind.indexed(resource)), now=now, extra=extra,
                  entry=AuditEntry(kind.resource_type, Action.CREATE, resource_id, status=201,
                                   detail={"signing-key": key.kid} if key else {}))
    except DomainError:
        if key is not None and keys is not None:
            keys.abandon(key)
        raise
    return Saved(resource, 1)


def read(ctx: RequestContext, kind: ResourceRules, resource_id: str, *, repo: Repository,
         record: Recorder) -> Stored:
    """The current version; 404 when the tenant has none (another tenant's id answers the same)."""
    ctx.require(kind.resource_type, Interaction.READ)
    stored = repo.get(ctx.tenant, kind.resource_type, _resource_id(kind.resource_type, resource_id))
    if stored is None:
        raise NotFound(f"{kind.resource_type}/{resource_id} not found")
    record(ctx, AuditEntry(kind.resource_type, Action.READ, resource_id))
    return stored


def vread(ctx: RequestContext, kind: ResourceRules, resource_id: str, version: str, *, repo: Repository,
          record: Recorder) -> Stored:
    ctx.require(kind.resource_type, Interaction.VREAD)
    resource_id = _resource_id(kind.resource_type, resource_id)
    stored = repo.get_version(ctx.tenant, kind.resource_type, resource_id, int(version)) if version.isdigit() \
        else None
    if stored is None:
        raise NotFound(f"{kind.resource_type}/{resource_id}/_history/{version} not found")
    record(ctx, AuditEntry(kind.resource_type, Action.VREAD, resource_id, detail={"version": str(stored.version)}))
    return stored


def history(ctx: RequestContext, kind: ResourceRules, resource_id: str, params: Mapping[str, str], *,
            repo: Repository, record: Recorder) -> Page:
    """Versions newest first, one page."""
    ctx.require(kind.resource_type, Interaction.HISTORY)
    rules.check_params(params, frozenset({"_count", "_page"}))
    resource_id = _resource_id(kind.resource_type, resource_id)
    page = repo.history(ctx.tenant, kind.resource_type, resource_id, limit=page_size(params),
                        page=params.get("_page"))
    if page.first and not page.items:
        raise NotFound(f"{kind.resource_type}/{resource_id} not found")
    record(ctx, AuditEntry(kind.resource_type, Action.HISTORY, resource_id))
    return page


def search(ctx: RequestContext, kind: ResourceRules, params: Mapping[str, str], *, repo: Repository,
           record: Recorder) -> Page:
    """One page of matches: a unique-identifier lookup, or one index facet read in order."""
    ctx.require(kind.resource_type, Interaction.SEARCH)
    q = kind.query(params)
    if q.empty:
        page = Page([], None)
    elif q.identifier is not None:
        if params.get("_page"):
            raise Invalid("_page is not a continuation token of this search", expression="_page")
        found = repo.find_unique(ctx.tenant, kind.resource_type, q.identifier)
        page = Page(repo.get_many(ctx.tenant, kind.resource_type, [found] if found else []), None)
    else:
        page = repo.search(ctx.tenant, kind.resource_type, facet=q.facet, prefix=q.prefix,
                           limit=page_size(params), page=params.get("_page"), fingerprint=query_fingerprint(params))
    matched = [s for s in page.items if q.matches(s.resource)]
    record(ctx, AuditEntry(kind.resource_type, Action.SEARCH, query_params=tuple(sorted(params))))
    return Page(matched, page.next_token, page.first)


def update(ctx: RequestContext, kind: ResourceRules, resource_id: str, body: dict[str, Any], *, if_match: int,
           repo: Repository, clock: Clock = utc_now) -> Saved:
    """Store the next version; 412 when ``if_match`` is not the current version (no update-as-create)."""
    ctx.require(kind.resource_type, Interaction.UPDATE)
    resource_id = _resource_id(kind.resource_type, resource_id)
    if body.get("id") != resource_id:
        raise Invalid(f"{kind.resource_type}.id must be {resource_id}, the id in the URL",
                      expression=f"{kind.resource_type}.id")
    current = repo.get(ctx.tenant, kind.resource_type, resource_id)
    if current is None:
        raise NotFound(f"{kind.resource_type}/{resource_id} not found")
    if if_match != current.version:
        raise PreconditionFailed(f"{kind.resource_type}/{resource_id} is at version {current.version}, "
                                 f"not {if_match}; read it again")
    chain = chain_id(ctx, repo)
    is_chain = kind.resource_type == "Organization" and resource_id == chain
    resource = kind.normalize(body, Placement(ctx.tenant, chain, resource_id), is_chain=is_chain)
    if is_chain and resource.get("active") is False:
        raise Unprocessable("The chain organization cannot be deactivated here; suspending a tenant is an "
                            "operator act", expression="Organization.active")
    version = current.version + 1
    now = timestamp(clock)
    resource = _stamp(resource, kind.resource_type, resource_id, version, now)
    write = ResourceWrite(resource, version, kind.indexed(resource), previous=kind.indexed(current.resource))
    repo.save(ctx, write, now=now, entry=AuditEntry(kind.resource_type, Action.UPDATE, resource_id,
                                                    detail={"version": str(version)}))
    return Saved(resource, version)


# ------------------------------------------------------------------ users ---


def _user_view(user: UserRecord, account: Any = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "username": user.username,
        "user_id": user.user_id,
        "role": user.role,
        "clinic_ids": list(user.clinic_ids),
        "practitioner_id": user.practitioner_id,
        "patient_id": user.patient_id,
        "enabled": user.enabled,
        "created": user.created,
        "updated": user.updated,
        "version": user.version,
    }
    if account is not None:
        view["email"] = account.email
        view["status"] = account.status
    return view


def _check_references(ctx: RequestContext, spec: UserSpec, *, repo: Repository,
                      previous: UserSpec | None = None) -> None:
    """Each clinic an active clinic of the chain, the practitioner and the patient the tenant's (422 otherwise)."""
    chain = chain_id(ctx, repo)
    kept = set(previous.clinic_ids) if previous else set()
    for i, clues in enumerate(spec.clinic_ids):
        if clues in kept:
            continue  # already granted; a later deactivation does not block other changes
        org_id = repo.find_unique(ctx.tenant, "Organization", clues)
        stored = repo.get(ctx.tenant, "Organization", org_id) if org_id else None
        if stored is None or not rules.ORGANIZATION.is_active_clinic(stored.resource, chain):
            raise Unprocessable(f"clinic_ids[{i}]: CLUES {clues} is not an active clinic of this chain",
                                expression=f"clinic_ids[{i}]")
    # The id is not echoed: another tenant's patient id must answer exactly like a made-up one.
    if (spec.patient_id and spec.patient_id != (previous.patient_id if previous else None)
            and not repo.patient_exists(ctx.tenant, spec.patient_id)):
        raise Unprocessable("patient_id: no patient of this chain has this id", expression="patient_id")
    if spec.practitioner_id and spec.practitioner_id != (previous.practitioner_id if previous else None):
        practitioner = repo.get(ctx.tenant, "Practitioner", spec.practitioner_id)
        if practitioner is None or practitioner.resource.get("active") is False:
            raise Unprocessable(f"practitioner_id: Practitioner/{spec.practitioner_id} is not an active "
                                "practitioner of this chain", expression="practitioner_id")


def create_user(ctx: RequestContext, body: Mapping[str, Any], *, repo: Repository, directory: Directory,
                clock: Clock = utc_now) -> dict[str, Any]:
    """Create a Cognito account for the caller's tenant and its directory entry.

    The tenant is the caller's (never from the body). The account is removed again if
    the directory entry cannot be written, so a failure leaves no half-made user.
    """
    ctx.require("User", Interaction.CREATE)
    request = rules.new_user(body)
    _check_references(ctx, request.spec, repo=repo)
    user_id = directory.create(username=request.username, email=request.email, tenant=ctx.tenant,
                               spec=request.spec)
    now = timestamp(clock)
    user = UserRecord(request.username, user_id, request.spec.role, request.spec.clinic_ids,
                      request.spec.practitioner_id, request.spec.patient_id, True, now, now)
    try:
        repo.save_user(ctx, user, entry=AuditEntry("User", Action.CREATE, user.username, status=201,
                                                   detail={"role": user.role}))
    except Exception:  # undo the Cognito account whatever failed, then re-raise
        directory.delete(request.username)
        raise
    return _user_view(user)


def _spec(user: UserRecord) -> UserSpec:
    return UserSpec(user.role, user.clinic_ids, user.practitioner_id, user.patient_id, user.enabled)


def _user(ctx: RequestContext, username: str, repo: Repository) -> UserRecord:
    try:
        name = rules.username(username)
    except Invalid:
        name = ""
    user = repo.get_user(ctx.tenant, name) if name else None
    if user is None:
        raise NotFound(f"User {username} not found")
    return user


def read_user(ctx: RequestContext, username: str, *, repo: Repository, directory: Directory,
              record: Recorder) -> dict[str, Any]:
    """A user of the caller's tenant, with Cognito's email and status; 404 for anyone else's."""
    ctx.require("User", Interaction.READ)
    user = _user(ctx, username, repo)
    account = directory.get(user.username)
    if account is None or account.tenant != ctx.tenant:
        raise NotFound(f"User {username} not found")
    record(ctx, AuditEntry("User", Action.READ, user.username))
    return _user_view(user, account)


def list_users(ctx: RequestContext, params: Mapping[str, str], *, repo: Repository,
               record: Recorder) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's directory, by username."""
    ctx.require("User", Interaction.SEARCH)
    rules.check_params(params, frozenset({"_count", "_page"}))
    page = repo.list_users(ctx.tenant, limit=page_size(params), page=params.get("_page"),
                           fingerprint=query_fingerprint(params))
    record(ctx, AuditEntry("User", Action.SEARCH, query_params=tuple(sorted(params))))
    return [_user_view(u) for u in page.items], page.next_token


def update_user(ctx: RequestContext, username: str, body: Mapping[str, Any], *, if_match: int | None,
                repo: Repository, directory: Directory, clock: Clock = utc_now) -> dict[str, Any]:
    """Change role, clinics, practitioner or patient link, or enabled; 412 when ``if_match`` is stale."""
    ctx.require("User", Interaction.UPDATE)
    user = _user(ctx, username, repo)
    if if_match is not None and if_match != user.version:
        raise PreconditionFailed(f"User {user.username} is at version {user.version}, not {if_match}")
    before = _spec(user)
    after = rules.changed_user(body, before)
    if user.username == ctx.username and (after.role != Role.ADMIN or not after.enabled) \
            and before.role == Role.ADMIN:
        raise Unprocessable("An administrator cannot remove their own admin role or disable themselves; "
                            "ask another administrator", expression="role" if after.enabled else "enabled")
    _check_references(ctx, after, repo=repo, previous=before)
    account = directory.get(user.username)
    if account is None or account.tenant != ctx.tenant:
        raise NotFound(f"User {username} not found")
    directory.update(user.username, before=before, after=after)
    changed = replace(user, role=after.role, clinic_ids=after.clinic_ids, practitioner_id=after.practitioner_id,
                      patient_id=after.patient_id, enabled=after.enabled, updated=timestamp(clock),
                      version=user.version + 1)
    fields = sorted(k for k in ("role", "clinic_ids", "practitioner_id", "patient_id", "enabled")
                    if getattr(before, k) != getattr(after, k))
    # Privilege changes say what changed (codes and ids, never names): a role or enabled change shows from > to.
    detail = {"changed": ",".join(fields) or "nothing"}
    for name in ("role", "enabled"):
        if name in fields:
            detail[name] = f"{_code(getattr(before, name))}>{_code(getattr(after, name))}"
    if "clinic_ids" in fields:
        detail["clinic_ids"] = f"{' '.join(before.clinic_ids)}>{' '.join(after.clinic_ids)}"
    repo.save_user(ctx, changed, entry=AuditEntry("User", Action.UPDATE, user.username, detail=detail))
    return _user_view(changed)


def _code(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ------------------------------------------------------------------ a new tenant (operator) ---


@dataclass(frozen=True)
class NewTenant:
    tenant_id: str
    organization_id: str
    admin_username: str
    admin_user_id: str


def create_tenant(ctx: RequestContext, *, name: str, admin: NewUser, admin_password: str | None,
                  tenant_item: Callable[[str], dict[str, Any]], repo: Repository, directory: Directory,
                  clock: Clock = utc_now, new_id: Callable[[], str] = new_resource_id) -> NewTenant:
    """A clinic chain: its tenant record, chain Organization and first admin (operator command).

    ``ctx`` is the operator's context for the new tenant. The Cognito account is created
    first (it is the authority on usernames) and removed again if the records cannot be
    written, so a failure leaves nothing behind.
    """
    if admin.spec.role != Role.ADMIN:
        raise Invalid("The first user of a tenant is an admin", expression="role")
    organization_id = new_id()
    now = timestamp(clock)
    chain = new_chain(tenant=ctx.tenant, name=name, organization_id=organization_id, now=now)
    user_id = directory.create(username=admin.username, email=admin.email, tenant=ctx.tenant, spec=admin.spec,
                               password=admin_password)
    user = UserRecord(admin.username, user_id, Role.ADMIN.value, (), None, None, True, now, now)
    try:
        repo.create_tenant(ctx, tenant_item=tenant_item(organization_id), chain=chain, admin=user, now=now,
                           entries=(AuditEntry("Organization", Action.CREATE, organization_id, status=201,
                                               detail={"tenant": "created"}),
                                    AuditEntry("User", Action.CREATE, admin.username, status=201,
                                               detail={"role": Role.ADMIN.value})))
    except Exception:  # undo the Cognito account whatever failed, then re-raise
        directory.delete(admin.username)
        raise
    return NewTenant(ctx.tenant, organization_id, admin.username, user_id)


# ------------------------------------------------------------------ AuditEvent ---


def search_audit_events(ctx: RequestContext, params: Mapping[str, str], *, repo: Repository,
                        record: Recorder) -> Page:
    """One page of ``AuditEvent`` resources; reading the trail is itself audited.

    The auditor sees the whole tenant. The patient role sees only records about their own
    record (NOM-024 traceability, LFPDPPP access right): asking for another patient finds nothing.
    """
    page = audit_records(ctx, params, repo=repo, record=record)
    return Page([to_audit_event(item) for item in page.items], page.next_token, page.first)


def audit_records(ctx: RequestContext, params: Mapping[str, str], *, repo: Repository, record: Recorder) -> Page:
    """:func:`search_audit_events` as stored records (plain values), for reports (CSV)."""
    ctx.require("AuditEvent", Interaction.SEARCH)
    q = rules.audit_query(params)
    nothing = False
    if ctx.is_patient_only:
        if ctx.patient_id is None:
            raise Forbidden("This account is not linked to a patient record")
        nothing = q.patient is not None and q.patient != ctx.patient_id
        q = replace(q, patient=ctx.patient_id)
    if nothing or q.impossible:
        page = Page([], None)
    else:
        page = repo.audit_events(ctx.tenant, q, limit=page_size(params), page=params.get("_page"),
                                 fingerprint=query_fingerprint(params))
    record(ctx, AuditEntry("AuditEvent", Action.SEARCH, patient_ids=(q.patient,) if q.patient else (),
                           query_params=tuple(sorted(params))))
    return page


# ------------------------------------------------------------------ signing keys ---


def public_key(ctx: RequestContext, practitioner_id: str, *, kid: str | None, repo: Repository,
               record: Recorder) -> signing_keys.KeyRecord:
    """A practitioner's signing key (the active one, or ``kid``): public material only, for verifiers."""
    ctx.require("Practitioner", Interaction.PUBLIC_KEY)
    practitioner_id = _resource_id("Practitioner", practitioner_id)
    if repo.get(ctx.tenant, "Practitioner", practitioner_id) is None:
        raise NotFound(f"Practitioner/{practitioner_id} not found")
    key = (signing_keys.by_kid(ctx.tenant, practitioner_id, kid) if kid
           else signing_keys.active(ctx.tenant, practitioner_id))
    if key is None:
        raise NotFound(f"Practitioner/{practitioner_id} has no signing key{' ' + kid if kid else ''}")
    record(ctx, AuditEntry("Practitioner", Action.OPERATION, practitioner_id,
                           detail={"operation": "$public-key", "kid": key.kid}))
    return key


CERTIFICATE_PROOF_PURPOSE = "register-certificate"


def certificate_proof(practitioner_id: str, certificate_sha256: str) -> dict[str, str]:
    """What a practitioner signs with a certificate's private key to show they hold it."""
    return {"purpose": CERTIFICATE_PROOF_PURPOSE, "practitioner": f"Practitioner/{practitioner_id}",
            "certificate": certificate_sha256}


def register_certificate(ctx: RequestContext, practitioner_id: str, *, certificate: str, proof: str,
                         repo: Repository, clock: Clock = utc_now) -> signing_keys.KeyRecord:
    """Make a practitioner's own X.509 certificate (e.firma style) their signing key.

    Only the practitioner themself registers it (their verified session), and ``proof`` must be a
    detached JWS over :func:`certificate_proof` made with the certificate's private key, so
    nobody can register a certificate they do not hold. Earlier keys stay on record, so older
    signatures still verify.
    """
    from expediente import signing  # loaded by this operation only (cold start)

    ctx.require("Practitioner", Interaction.REGISTER_CERTIFICATE)
    practitioner_id = _resource_id("Practitioner", practitioner_id)
    if ctx.practitioner_id != practitioner_id:
        raise Forbidden("A practitioner registers their own certificate, from their own session")
    if repo.get(ctx.tenant, "Practitioner", practitioner_id) is None:
        raise NotFound(f"Practitioner/{practitioner_id} not found")
    now = clock()
    cert = signing.load_certificate(certificate.encode() if "BEGIN" in certificate else certificate, now=now)
    payload = signing.canonical(certificate_proof(practitioner_id, cert.sha256))
    result = signing.verify(proof, payload, certificate_pem=cert.pem, at=now)
    if not result.valid:
        raise Unprocessable(f"The proof of possession does not verify: {result.reason}",
                            expression="Parameters.proof")
    stamp_now = timestamp(clock)
    key = signing_keys.KeyRecord(
        practitioner_id=practitioner_id, kid=signing.public_key_thumbprint(cert.public_key_pem),
        kind=signing_keys.CERTIFICATE, public_key_pem=cert.public_key_pem, algorithms=cert.alg_options,
        created=stamp_now, certificate_pem=cert.pem, not_before=signing.format_signing_time(cert.not_before),
        not_after=signing.format_signing_time(cert.not_after))
    if signing_keys.by_kid(ctx.tenant, practitioner_id, key.kid) is not None:
        raise Conflict("This certificate's key is already registered for the practitioner")
    repo.save_keys(ctx, signing_keys.put_ops(ctx.tenant, key),
                   entry=AuditEntry("Practitioner", Action.OPERATION, practitioner_id,
                                    detail={"operation": "$register-certificate", "kid": key.kid}))
    return key


# ------------------------------------------------------------------ critical-result policy ---

POLICY = "CriticalResultsPolicy"


def read_critical_policy(ctx: RequestContext, *, repo: Repository) -> dict[str, Any]:
    """The tenant's critical limits in force (defaults and its own), deadline and on-call lists."""
    from expediente import critical_policy

    ctx.require(POLICY, Interaction.READ)
    return critical_policy.from_item(repo.get_setting(critical_policy.key(ctx.tenant))).to_json()


def update_critical_policy(ctx: RequestContext, body: dict[str, Any], *, if_match: int | None,
                           repo: Repository) -> dict[str, Any]:
    """Replace the tenant's own limits, deadline and on-call lists (If-Match once a policy exists).

    Raises 400 naming the field, 412 when ``if_match`` is not the stored version (or is missing
    once one exists). Audited in the same transaction; takes effect within a minute.
    """
    from expediente import critical_policy

    ctx.require(POLICY, Interaction.UPDATE)
    current = repo.get_setting(critical_policy.key(ctx.tenant))
    stored_version = int(current["version"]) if current is not None else 0
    if stored_version and if_match is None:
        raise PreconditionRequired("If-Match is required to change the critical-result policy",
                                   headers={"ETag": f'W/"{stored_version}"'})
    if if_match is not None and if_match != stored_version:
        raise PreconditionFailed("The critical-result policy was changed by someone else; read it again",
                                 headers={"ETag": f'W/"{stored_version}"'})
    policy = critical_policy.parse(
        body, is_clinic=lambda clues: repo.find_unique(ctx.tenant, "Organization", clues) is not None,
        is_practitioner=lambda pid: repo.get(ctx.tenant, "Practitioner", pid) is not None)
    version = stored_version + 1
    repo.save_setting(ctx, critical_policy.key(ctx.tenant), critical_policy.to_item_body(policy), version=version,
                      entry=AuditEntry(POLICY, Action.UPDATE, "critical-results", status=200,
                                       detail={"version": str(version)}))
    return {**policy.to_json(), "version": version}
