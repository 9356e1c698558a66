"""The verified request context: tenant, user, roles, clinics.

The context is built only from the claims that API Gateway's Cognito authorizer
(or the local front door, which verifies the token the same way) placed in
``requestContext.authorizer.claims``. The tenant never comes from a path, a query
or a body. Every claim value arrives as a string; lists such as
``cognito:groups`` arrive comma-separated (REST API) or as ``[a b]`` (HTTP API).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NewType

from expediente.errors import Forbidden, NotFound, Unauthenticated
from expediente.permissions import Interaction, Role, allowed

TenantId = NewType("TenantId", str)

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
_CLUES = re.compile(r"^[A-Z]{5}\d{6}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# The tenant whose data the code running now may touch: bound when the verified context is built
# (context_from_event, service_context), read by expediente.aws to sign data calls with that
# tenant's scoped credentials (docs/decisions/0023-tenant-scoped-credentials.md).
_bound_tenant: ContextVar[str | None] = ContextVar("expediente_tenant", default=None)


def bind_tenant(tenant: str | None) -> None:
    """Make ``tenant`` (a verified tenant id) the current one; ``None`` unbinds.

    Raises ValueError for a value that is not a tenant id: it becomes an IAM session tag.
    """
    if tenant is not None and not TENANT_ID.match(tenant):
        raise ValueError("not a tenant id")
    _bound_tenant.set(tenant)


def bound_tenant() -> str | None:
    """The tenant bound now (None outside a request or event of a known tenant)."""
    return _bound_tenant.get()


@contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Bind ``tenant`` for the block and restore what was bound before (``None``: no tenant)."""
    if tenant is not None and not TENANT_ID.match(tenant):
        raise ValueError("not a tenant id")
    token = _bound_tenant.set(tenant)
    try:
        yield
    finally:
        _bound_tenant.reset(token)


@dataclass(frozen=True)
class RequestContext:
    """Who is asking, for which tenant, from where.

    ``clinic`` is the clinic the user acts in: the ``X-Clinic`` header when it
    names one of the user's clinics, else the user's first clinic.
    """

    tenant: TenantId
    user_id: str
    username: str
    roles: frozenset[Role]
    clinic_ids: tuple[str, ...]
    clinic: str | None
    practitioner_id: str | None
    patient_id: str | None
    request_id: str
    source_ip: str
    user_agent: str

    @property
    def role_names(self) -> str:
        return ",".join(sorted(self.roles))

    def require(self, resource_type: str, interaction: Interaction) -> None:
        """Raise :class:`Forbidden` unless the permission table grants the interaction."""
        if not allowed(self.roles, resource_type, interaction):
            raise Forbidden(f"Role {self.role_names} may not {interaction} {resource_type}")

    def require_own_patient(self, patient_id: str) -> None:
        """For the ``patient`` role: only the user's own record exists (others answer 404)."""
        if self.roles == frozenset({Role.PATIENT}) and patient_id != self.patient_id:
            raise NotFound(f"Patient/{patient_id} not found")

    @property
    def is_patient_only(self) -> bool:
        return self.roles == frozenset({Role.PATIENT})


def split_claim(value: Any) -> tuple[str, ...]:
    """A list claim as API Gateway renders it (``a,b``, ``[a b]``) or a real list."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return tuple(part for part in re.split(r"[,\s]+", text) if part)


def context_from_event(event: Mapping[str, Any]) -> RequestContext:
    """Build the context from an API Gateway REST proxy event.

    Raises :class:`Unauthenticated` (401) when the claims are absent or malformed:
    no subject, no valid tenant, or no known role.
    """
    request = event.get("requestContext") or {}
    claims = (request.get("authorizer") or {}).get("claims")
    if not isinstance(claims, Mapping):
        raise Unauthenticated("No verified identity on the request")
    if claims.get("token_use", "id") != "id":
        raise Unauthenticated("An ID token is required")
    user_id = str(claims.get("sub") or "")
    tenant = str(claims.get("custom:tenant_id") or "")
    if not user_id:
        raise Unauthenticated("The token has no subject")
    if not TENANT_ID.match(tenant):
        raise Unauthenticated("The token carries no valid tenant")
    roles = frozenset(Role(g) for g in split_claim(claims.get("cognito:groups")) if g in Role.__members__.values())
    if not roles:
        raise Unauthenticated("The user has no role")
    clinic_ids = tuple(c for c in split_claim(claims.get("custom:clinic_ids")) if _CLUES.match(c))
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items() if isinstance(v, str)}
    wanted = headers.get("x-clinic")
    if wanted and wanted not in clinic_ids:
        raise Forbidden(f"X-Clinic {wanted} is not one of the user's clinics")
    identity = request.get("identity") or {}
    bind_tenant(tenant)  # from here on data calls are signed for this tenant only
    practitioner_id = str(claims.get("custom:practitioner_id") or "") or None
    patient_id = str(claims.get("custom:patient_id") or "") or None
    return RequestContext(
        tenant=TenantId(tenant),
        user_id=user_id,
        username=str(claims.get("cognito:username") or user_id),
        roles=roles,
        clinic_ids=clinic_ids,
        clinic=wanted or (clinic_ids[0] if clinic_ids else None),
        practitioner_id=practitioner_id if practitioner_id and _RESOURCE_ID.match(practitioner_id) else None,
        patient_id=patient_id if patient_id and _RESOURCE_ID.match(patient_id) else None,
        request_id=str(request.get("requestId") or ""),
        source_ip=str(identity.get("sourceIp") or ""),
        user_agent=str(identity.get("userAgent") or headers.get("user-agent") or ""),
    )


def valid_resource_id(value: str) -> bool:
    """FHIR ``id`` syntax: 1–64 of ``[A-Za-z0-9-.]``."""
    return bool(_RESOURCE_ID.match(value))


def identity_context(tenant: str, user_id: str, username: str, *, user_agent: str, source_ip: str = "",
                     request_id: str | None = None) -> RequestContext:
    """The identity of someone acting on ``tenant`` outside an API request: a user signing in, an operator,
    a service. It holds no role, so the permission table grants it nothing; it names who acted in the audit
    records it writes."""
    import uuid

    return RequestContext(
        tenant=TenantId(tenant), user_id=user_id, username=username, roles=frozenset(), clinic_ids=(), clinic=None,
        practitioner_id=None, patient_id=None, request_id=request_id or str(uuid.uuid4()), source_ip=source_ip,
        user_agent=user_agent,
    )


def service_context(tenant: str, service: str, *, request_id: str | None = None) -> RequestContext:
    """The identity of the system acting on ``tenant`` without a user (a schedule, a queue consumer).

    It holds no role, so the permission table grants it nothing: only code paths that never call
    :meth:`RequestContext.require` (escalations, order updates from results) run with it. Its
    audit records name the service (``user_id = service:<name>``). Building it binds ``tenant``
    (:func:`bind_tenant`; raises ValueError for a malformed tenant id).
    """
    bind_tenant(tenant)  # the event named its tenant: data calls from here on are signed for it
    return identity_context(tenant, f"service:{service}", f"service:{service}", user_agent=f"expediente/{service}",
                            request_id=request_id)
