"""The tenant record (a clinic chain) and the per-tenant keys other functions need.

Layout in the ``admin`` table: ``pk = TENANT#<tenant>``, ``sk = TENANT``. It holds
the chain's ``Organization`` id, status and the tenant's blind-index key,
wrapped by the ``app`` KMS key with encryption context ``{tenant, purpose}``.
Only the admin function and the operator command write it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from expediente import aws, crypto
from expediente.errors import Unauthenticated
from expediente.settings import settings
from expediente.store import get_item


def tenant_key(tenant: str) -> dict[str, Any]:
    return aws.to_item({"pk": f"TENANT#{tenant}", "sk": "TENANT"})


def new_tenant_item(*, tenant: str, name: str, organization_id: str, kms: Any, key_id: str) -> dict[str, Any]:
    """The typed item of a new tenant, with a fresh wrapped blind-index key."""
    return {
        **tenant_key(tenant),
        **aws.to_item(
            {
                "tenant": tenant,
                "name": name,
                "organization_id": organization_id,
                "status": "active",
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "index_key": crypto.new_wrapped_index_key(kms, key_id, tenant),
            }
        ),
    }


# Every tenant is also listed under one registry partition, for the operator-level jobs that run
# per tenant (the critical-result escalation schedule). Tenant ids are lower case: no tenant's own
# ``TENANT#<tenant>`` key can be this one.
REGISTRY = "TENANT#REGISTRY"


def registry_item(tenant: str) -> dict[str, Any]:
    """The typed registry item of a tenant (written with the tenant record)."""
    return aws.to_item({"pk": REGISTRY, "sk": tenant, "tenant": tenant})


def registered_tenants() -> list[str]:
    """Every registered tenant id (one Query on the registry partition, paged).

    The registry belongs to no tenant: it is read with the execution role (decision 0023).
    """
    from expediente.store import query

    found: list[str] = []
    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {"TableName": settings().table_admin, "KeyConditionExpression": "pk = :pk",
                                "ExpressionAttributeValues": aws.to_item({":pk": REGISTRY})}
        if start:
            args["ExclusiveStartKey"] = start
        with aws.global_access():
            response = query(**args)
        found += [str(aws.from_item(item)["sk"]) for item in response.get("Items", [])]
        start = response.get("LastEvaluatedKey")
        if not start:
            return found


def get_tenant(tenant: str) -> dict[str, Any] | None:
    return get_item(settings().table_admin, {"pk": f"TENANT#{tenant}", "sk": "TENANT"})


def wrapped_index_key(tenant: str) -> bytes:
    """The tenant's wrapped blind-index key; a token naming an unknown tenant is refused (401)."""
    record = get_tenant(tenant)
    if record is None or record.get("status") != "active":
        raise Unauthenticated("The token's tenant is not an active tenant")
    return bytes(record["index_key"])


@cache
def envelope() -> crypto.Envelope:
    """The process's envelope encryptor under the ``app`` key."""
    cfg = settings()
    return crypto.Envelope(
        aws.client("kms"), cfg.key_app_arn, max_age_s=cfg.data_key_max_age_s, max_messages=cfg.data_key_max_messages
    )


@cache
def blind_index() -> crypto.BlindIndex:
    """The process's blind indexer; each tenant's key is unwrapped once."""
    return crypto.BlindIndex(aws.client("kms"), settings().key_app_arn, wrapped_index_key)
