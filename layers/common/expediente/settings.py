"""Settings read lazily from the environment and cached.

Nothing reads ``os.environ`` at import time; call :func:`settings` when needed. Deployed values
come from the CDK function construct, local ones from the local stack.

A frozen dataclass rather than a pydantic model (docs/decisions/0009-cold-start.md): importing
pydantic costs about 250 ms of cold start, and a read request needs nothing else from it; the
few typed fields are converted and checked here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import cache


class ConfigurationError(RuntimeError):
    """The function's environment is wrong: a deployment fault, not a client error."""


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    table_patients: str = ""
    table_notes: str = ""
    table_results: str = ""
    table_orders: str = ""
    table_prescriptions: str = ""
    table_admin: str = ""
    table_audit: str = ""
    table_idempotency: str = ""
    table_outbox: str = ""
    key_app_arn: str = ""
    event_bus_name: str = ""
    user_pool_id: str = ""
    user_pool_client_id: str = ""
    bucket_documents: str = ""
    bucket_ingest: str = ""
    bucket_imaging: str = ""
    bucket_quarantine: str = ""
    # Audit digests (decision 0022): the Object Lock bucket and the ECDSA key that signs them (by alias locally).
    bucket_audit_digests: str = ""
    key_audit_digest_arn: str = "alias/expediente/audit-digest"
    # The role data calls assume with the session tag tenant=<tenant> (decision 0023); empty: off.
    tenant_role_arn: str = ""
    # FHIR paging: default and hard cap of ``_count``.
    page_default: int = 20
    page_max: int = 100
    # Envelope encryption: how long and for how many messages one data key is used.
    data_key_max_age_s: int = 300
    data_key_max_messages: int = 10_000
    idempotency_ttl_s: int = 24 * 3600

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and value < 1:
                raise ConfigurationError(f"setting {field.name} must be at least 1, got {value}")


_ENV = {
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "table_patients": ("TABLE_PATIENTS",),
    "table_notes": ("TABLE_NOTES",),
    "table_results": ("TABLE_RESULTS",),
    "table_orders": ("TABLE_ORDERS",),
    "table_prescriptions": ("TABLE_PRESCRIPTIONS",),
    "table_admin": ("TABLE_ADMIN",),
    "table_audit": ("TABLE_AUDIT",),
    "table_idempotency": ("TABLE_IDEMPOTENCY",),
    "table_outbox": ("TABLE_OUTBOX",),
    "key_app_arn": ("KEY_APP_ARN",),
    "event_bus_name": ("EVENT_BUS_NAME",),
    "user_pool_id": ("USER_POOL_ID",),
    "user_pool_client_id": ("USER_POOL_CLIENT_ID",),
    "bucket_documents": ("BUCKET_DOCUMENTS",),
    "bucket_ingest": ("BUCKET_INGEST",),
    "bucket_imaging": ("BUCKET_IMAGING",),
    "bucket_quarantine": ("BUCKET_QUARANTINE",),
    "bucket_audit_digests": ("BUCKET_AUDIT_DIGESTS",),
    "key_audit_digest_arn": ("KEY_AUDIT_DIGEST_ARN",),
    "tenant_role_arn": ("TENANT_ROLE_ARN",),
    "page_default": ("FHIR_PAGE_DEFAULT",),
    "page_max": ("FHIR_PAGE_MAX",),
}


@cache
def settings() -> Settings:
    """The process's settings (cached; tests call ``settings.cache_clear()``).

    Raises :class:`ConfigurationError` when a numeric setting is not a positive integer.
    """
    types = {field.name: field.type for field in fields(Settings)}
    values: dict[str, str | int] = {}
    for name, variables in _ENV.items():
        raw = next((os.environ[v] for v in variables if os.environ.get(v)), None)
        if raw is None:
            continue
        if types[name] == "int":
            if not raw.strip().isdigit():
                raise ConfigurationError(f"{variables[0]} must be a positive integer, got {raw!r}")
            values[name] = int(raw)
        else:
            values[name] = raw
    return Settings(**values)  # type: ignore[arg-type]
