"""AWS clients, created on first use and cached for the life of the process.

boto3 honours ``AWS_ENDPOINT_URL``, which is how the local stack points every
client at the embedded AWS. Nothing here runs at import time.

Tenant-scoped credentials (docs/decisions/0023-tenant-scoped-credentials.md): when the setting
``tenant_role_arn`` is set, :func:`client` for ``dynamodb``, ``s3`` and ``kms`` routes each call,
at call time, to a client signed with credentials of that role assumed with the session tag
``tenant=<current tenant>``. The role's policy lets those credentials touch only keys, objects and
encryption contexts of that tenant, so a handler bug that builds another tenant's key is refused by
IAM. The current tenant is the one :mod:`expediente.context` bound for the request or event. With no
tenant bound, or inside :func:`global_access`, the call goes out with the function's own (execution
role) credentials, whose policy reaches only the few global items (tenant registry, receta tokens,
an ingest object that names no tenant). Unset (tests, and anything not deployed), every call uses
the plain client.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
# S3: presigned URLs in SigV4, whose signed headers can include Content-Length (a SigV2 URL cannot
# limit an upload's size); a server-side copy of a large DICOM object may take longer than 5 s.
_S3_CONFIG = _CONFIG.merge(Config(signature_version="s3v4", read_timeout=120))
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()

# The services whose calls carry tenant data: DynamoDB items, S3 objects, KMS data keys.
SCOPED_SERVICES = frozenset({"dynamodb", "s3", "kms"})
# The session tag the tenant role's policy reads (``${aws:PrincipalTag/tenant}``).
TENANT_TAG = "tenant"
# AssumeRole's session length, and how long before its end a lease is renewed. The margin covers the
# longest presigned URL the API hands out (orders/uploads.py: 15 min): a URL dies with the credentials
# that signed it, so a lease is never used to presign with less than 20 minutes left.
SESSION_SECONDS = 3600
REFRESH_MARGIN_SECONDS = 20 * 60


@cache
def session() -> boto3.session.Session:
    """One session per process, so botocore loads each service model once."""
    return boto3.session.Session()


def _config(service: str) -> Config:
    return _S3_CONFIG if service == "s3" else _CONFIG


@cache
def unscoped_client(service: str) -> Any:
    """A client signed with the function's own credentials (its execution role).

    Use it only for what is reached before or outside any tenant (the tenant registry, a receta
    token, an object that names no tenant) and for non-data services; everything else goes
    through :func:`client`.
    """
    return session().client(service, config=_config(service))  # type: ignore[call-overload]


@cache
def client(service: str) -> Any:
    """A shared client for ``service`` (dynamodb, kms, events, s3, cognito-idp, sqs).

    For ``dynamodb``, ``s3`` and ``kms`` it is a router that signs each call with the current
    tenant's scoped credentials when tenant-scoped credentials are enabled (see the module
    docstring); it behaves as a boto3 client otherwise.
    """
    if service in SCOPED_SERVICES:
        return TenantRoutedClient(service)
    return unscoped_client(service)


# ------------------------------------------------------------------ tenant-scoped credentials ---


@dataclass(frozen=True)
class Lease:
    """Temporary credentials of the tenant role for one tenant, and when they stop working."""

    tenant: str
    access_key: str
    secret_key: str
    token: str
    expires_at: float  # epoch seconds


class TenantCredentials:
    """Assumes ``role_arn`` once per tenant and keeps the lease until ``margin_s`` before it expires.

    ``assume`` is STS ``AssumeRole`` (a boto3 STS client's bound method); ``clock`` returns epoch
    seconds. Thread-safe: two threads asking for the same tenant at once make one call. Raises what
    STS raises (botocore ``ClientError``): a tenant whose credentials cannot be obtained reaches no
    data.
    """

    def __init__(self, role_arn: str, assume: Callable[..., dict[str, Any]], *, clock: Callable[[], float] = time.time,
                 duration_s: int = SESSION_SECONDS, margin_s: int = REFRESH_MARGIN_SECONDS,
                 session_prefix: str = "expediente") -> None:
        if margin_s >= duration_s:
            raise ValueError("the refresh margin must be shorter than the session")
        self.role_arn = role_arn
        self._assume = assume
        self._clock = clock
        self._duration = duration_s
        self._margin = margin_s
        self._prefix = session_prefix
        self._leases: dict[str, Lease] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.assumed = 0  # AssumeRole calls made (for metrics and tests)

    def lease(self, tenant: str) -> Lease:
        """Valid credentials for ``tenant`` with at least the margin left."""
        current = self._leases.get(tenant)
        if current is not None and self._fresh(current):
            return current
        with self._guard:
            lock = self._locks.setdefault(tenant, threading.Lock())
        with lock:
            current = self._leases.get(tenant)
            if current is not None and self._fresh(current):
                return current
            response = self._assume(
                RoleArn=self.role_arn,
                RoleSessionName=f"{self._prefix}-{tenant}"[:64],
                DurationSeconds=self._duration,
                Tags=[{"Key": TENANT_TAG, "Value": tenant}],
            )
            self.assumed += 1
            creds = response["Credentials"]
            expiration = creds["Expiration"]
            expires_at = expiration.timestamp() if hasattr(expiration, "timestamp") else float(expiration)
            fresh = Lease(tenant, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], expires_at)
            self._leases[tenant] = fresh
            return fresh

    def _fresh(self, lease: Lease) -> bool:
        return self._clock() < lease.expires_at - self._margin


@cache
def tenant_credentials() -> TenantCredentials | None:
    """The process's lease cache, or None when tenant-scoped credentials are off."""
    from expediente.settings import settings

    role_arn = settings().tenant_role_arn
    if not role_arn:
        return None
    return TenantCredentials(role_arn, unscoped_client("sts").assume_role)


_scoped: dict[tuple[str, str], tuple[str, Any]] = {}
_scoped_lock = threading.Lock()


def scoped_client(service: str, tenant: str) -> Any:
    """A client for ``service`` signed with ``tenant``'s lease (rebuilt when the lease is renewed).

    Raises RuntimeError when tenant-scoped credentials are off.
    """
    leases = tenant_credentials()
    if leases is None:
        raise RuntimeError("tenant-scoped credentials are not configured (TENANT_ROLE_ARN)")
    lease = leases.lease(tenant)
    cached = _scoped.get((service, tenant))
    if cached is not None and cached[0] == lease.access_key:
        return cached[1]
    built = session().client(  # type: ignore[call-overload]
        service, config=_config(service), aws_access_key_id=lease.access_key,
        aws_secret_access_key=lease.secret_key, aws_session_token=lease.token,
    )
    with _scoped_lock:
        _scoped[(service, tenant)] = (lease.access_key, built)
    return built


def forget_credentials() -> None:
    """Drop every lease and scoped client (tests; a new moto world)."""
    tenant_credentials.cache_clear()
    with _scoped_lock:
        _scoped.clear()


class TenantRoutedClient:
    """Looks like a boto3 client; each attribute is taken from the client for the current scope.

    Objects that keep a client for the life of the process (the envelope encryptor, the idempotency
    store) hold this router, so every call they make is signed for the tenant of the moment.
    """

    def __init__(self, service: str) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(current_client(self._service), name)

    def __repr__(self) -> str:
        return f"TenantRoutedClient({self._service!r})"


def current_client(service: str) -> Any:
    """The client a call to ``service`` made now would use (see the module docstring)."""
    from expediente.context import bound_tenant

    tenant = bound_tenant()
    if tenant is None or _global.get() or tenant_credentials() is None:
        return unscoped_client(service)
    return scoped_client(service, tenant)


# Inside ``global_access()`` calls use the execution role even while a tenant is bound.
_global: contextvars.ContextVar[bool] = contextvars.ContextVar("expediente_global_access", default=False)


@contextmanager
def global_access() -> Iterator[None]:
    """Run the block with the execution role's credentials: for global items only.

    The execution role's policy reaches the tenant registry, receta tokens and unassigned ingest
    objects, nothing of any tenant; use this exactly where such an item is read while a tenant is
    bound (a receta lookup, the escalation schedule listing tenants).
    """
    token = _global.set(True)
    try:
        yield
    finally:
        _global.reset(token)


# ------------------------------------------------------------------ item helpers ---


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Python values → DynamoDB attribute values (``None`` values are dropped)."""
    return {k: _SERIALIZER.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values → Python values."""
    return {k: _DESERIALIZER.deserialize(v) for k, v in item.items()}


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ``ClientError`` ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# Codes AWS documents as throttling or transient (botocore's standard retry mode retries the same ones):
# when they outlast the SDK's own retries the request fails with 503 + Retry-After, never 500.
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "RequestThrottled",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "LimitExceededException", "BandwidthLimitExceeded", "SlowDown", "PriorRequestNotComplete",
    "TransactionInProgressException", "TransactionConflictException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "InternalServerError", "InternalFailure", "InternalErrorException", "ServiceUnavailable",
    "ServiceUnavailableException", "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException",
})


def is_transient(exc: Exception) -> bool:
    """True when retrying the same request later may succeed: a throttling or server-side (5xx) AWS error,
    or a connection failure or timeout (decision 0026). False for anything that would fail the same way again."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if error_code(exc) in TRANSIENT_CODES:
        return True
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(response, dict) else 0
    return isinstance(status, int) and status >= 500
