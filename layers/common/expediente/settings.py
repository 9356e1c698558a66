"""Settings read lazily from the environment and cached.

Nothing reads ``os.environ`` at import time; call :func:`settings` when needed.
Deployed values come from the CDK function construct, local ones from the local stack.
"""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    # Build the validator on first use, not at import: cold starts pay only for what they use.
    model_config = ConfigDict(defer_build=True)

    region: str = "us-east-1"
    table_patients: str = ""
    table_admin: str = ""
    table_audit: str = ""
    table_idempotency: str = ""
    key_app_arn: str = ""
    event_bus_name: str = ""
    user_pool_id: str = ""
    user_pool_client_id: str = ""
    bucket_documents: str = ""
    # FHIR paging: default and hard cap of ``_count``.
    page_default: int = Field(default=20, ge=1)
    page_max: int = Field(default=100, ge=1)
    # Envelope encryption: how long and for how many messages one data key is used.
    data_key_max_age_s: int = 300
    data_key_max_messages: int = 10_000
    idempotency_ttl_s: int = 24 * 3600


_ENV = {
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "table_patients": ("TABLE_PATIENTS",),
    "table_admin": ("TABLE_ADMIN",),
    "table_audit": ("TABLE_AUDIT",),
    "table_idempotency": ("TABLE_IDEMPOTENCY",),
    "key_app_arn": ("KEY_APP_ARN",),
    "event_bus_name": ("EVENT_BUS_NAME",),
    "user_pool_id": ("USER_POOL_ID",),
    "user_pool_client_id": ("USER_POOL_CLIENT_ID",),
    "bucket_documents": ("BUCKET_DOCUMENTS",),
    "page_default": ("FHIR_PAGE_DEFAULT",),
    "page_max": ("FHIR_PAGE_MAX",),
}


@cache
def settings() -> Settings:
    """The process's settings (cached; tests call ``settings.cache_clear()``)."""
    values: dict[str, str] = {}
    for field, names in _ENV.items():
        for name in names:
            if os.environ.get(name):
                values[field] = os.environ[name]
                break
    return Settings.model_validate(values)
