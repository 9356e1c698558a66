"""Create a tenant (a clinic chain): the operator's side of multi-tenancy.

:func:`create_tenant` writes, through the admin function's own logic and repository,
the tenant record (with its KMS-wrapped blind-index key), the chain ``Organization``, the
first admin's directory entry and their audit records in one transaction, and creates
that admin in Cognito (group ``admin``, ``custom:tenant_id``). Every AWS call uses the
session given (or one made for the stack), never the process's default clients, so the
same code serves a deployed stack and the local one.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit_chain, aws, tenants
from expediente.context import RequestContext, identity_context
from expediente.crypto import Envelope
from expediente.store import TransactionConflict
from functions.admin import logic, rules
from functions.admin.directory import CognitoDirectory
from functions.admin.repository import AdminRepository, AdminTables, Transact
from infra.definitions import TABLES

DEFAULT_STACK_NAME = "Expediente-Stateful"
DEFAULT_STACK_JSON = Path(".local/stack.json")
_TENANT_ALPHABET = string.ascii_lowercase + string.digits
# Credentials for the local stack's embedded AWS: real credentials are never sent to a local endpoint.
_LOCAL_ACCESS_KEY = _LOCAL_SECRET_KEY = "testing"


class StackInfoError(ValueError):
    """The stack description is missing something ``create_tenant`` needs; the message says what."""


def _pascal(identifier: str) -> str:
    # Same rule as infra.naming.pascal (not imported: it pulls in aws_cdk).
    return "".join(part[:1].upper() + part[1:] for part in identifier.replace("-", "_").split("_"))


@dataclass(frozen=True)
class StackInfo:
    """Where a stack's resources are. Table fields are named after ``TableDef.env`` (``TABLE_ADMIN`` →
    ``table_admin``); ``endpoint_url`` is set for the local stack's embedded AWS only."""

    region: str
    user_pool_id: str
    key_app_arn: str
    table_admin: str
    table_audit: str
    table_patients: str = ""
    table_notes: str = ""
    table_results: str = ""
    table_orders: str = ""
    table_prescriptions: str = ""
    table_idempotency: str = ""
    table_outbox: str = ""
    user_pool_client_id: str = ""
    event_bus_name: str = ""
    endpoint_url: str | None = None

    @staticmethod
    def table_field(table_id: str) -> str:
        return next(t.env.lower() for t in TABLES if t.id == table_id)

    @classmethod
    def _build(cls, values: dict[str, Any], tables: dict[str, str], source: str) -> StackInfo:
        names = {f.name for f in fields(cls)}
        for table in TABLES:
            if table.id in tables and table.env.lower() in names:
                values[table.env.lower()] = tables[table.id]
        missing = [n for n in ("region", "user_pool_id", "key_app_arn", "table_admin", "table_audit")
                   if not values.get(n)]
        if missing:
            raise StackInfoError(f"{source} lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_stack_json(cls, path: str | Path = DEFAULT_STACK_JSON) -> StackInfo:
        """Read the local stack's ``stack.json`` (keys ``aws_endpoint``, ``region``, ``user_pool_id``,
        ``user_pool_client_id``, ``tables`` {id: name}, ``key_app_arn``, ``event_bus_name``)."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StackInfoError(f"{path} does not exist; start the local stack (python -m local) first") from exc
        values = {
            "region": document.get("region"),
            "user_pool_id": document.get("user_pool_id"),
            "user_pool_client_id": document.get("user_pool_client_id", ""),
            "key_app_arn": document.get("key_app_arn"),
            "event_bus_name": document.get("event_bus_name", ""),
            "endpoint_url": document.get("aws_endpoint") or None,
        }
        return cls._build(values, dict(document.get("tables") or {}), str(path))

    @classmethod
    def from_cloudformation(cls, stack_name: str = DEFAULT_STACK_NAME, region: str | None = None, *,
                            session: boto3.Session | None = None) -> StackInfo:
        """Read a deployed stateful stack's outputs: ``Table<Id>Name`` per table (``TableAdminName``,
        ``TableAuditName``, ...), ``UserPoolId``, ``UserPoolClientId``, ``KeyAppArn`` (``AppKeyArn`` is
        accepted too) and ``EventBusName``."""
        session = session or boto3.Session(region_name=region)
        region = region or session.region_name
        if not region:
            raise StackInfoError("No region: pass --region or configure one")
        try:
            stacks = session.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)
        except (ClientError, BotoCoreError) as exc:
            raise StackInfoError(f"Cannot read stack {stack_name} in {region}: {exc}") from exc
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks["Stacks"][0].get("Outputs", [])}
        values = {
            "region": region,
            "user_pool_id": outputs.get("UserPoolId"),
            "user_pool_client_id": outputs.get("UserPoolClientId", ""),
            "key_app_arn": outputs.get("KeyAppArn") or outputs.get("AppKeyArn"),
            "event_bus_name": outputs.get("EventBusName", ""),
        }
        tables = {t.id: outputs[f"Table{_pascal(t.id)}Name"] for t in TABLES if f"Table{_pascal(t.id)}Name" in outputs}
        return cls._build(values, tables, f"stack {stack_name} outputs")

    def session(self) -> boto3.Session:
        """A session for this stack: the default credential chain, or fake credentials for a local endpoint."""
        if self.endpoint_url:
            return boto3.Session(region_name=self.region, aws_access_key_id=_LOCAL_ACCESS_KEY,
                                 aws_secret_access_key=_LOCAL_SECRET_KEY)
        return boto3.Session(region_name=self.region)

    def client(self, session: boto3.Session, service: str) -> Any:
        return session.client(service, region_name=self.region, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]


@dataclass(frozen=True)
class CreatedTenant:
    tenant_id: str
    organization_id: str
    admin_username: str
    admin_user_id: str = ""


def new_tenant_id() -> str:
    """``t-`` and 10 random lowercase letters or digits (fits ``expediente.context.TENANT_ID``)."""
    return "t-" + "".join(secrets.choice(_TENANT_ALPHABET) for _ in range(10))


def _transact_with(dynamodb: Any, new_key: audit_chain.KeyMaker) -> Transact:
    """``TransactWriteItems`` on this session's client; a failed condition is a TransactionConflict."""

    def run(items: list[dict[str, Any]]) -> None:
        # The audit records are hash-chained like every other (decisions 0022, 0029): sealed here under a chain key
        # from the operator's KMS access, confirmed on success.
        with audit_chain.seal_transaction(items, new_key=new_key):
            try:
                dynamodb.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if aws.error_code(exc) == "TransactionCanceledException":
                    raise TransactionConflict(
                        [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]) from exc
                raise

    return run


def operator_context(tenant: str, principal: str) -> RequestContext:
    """The audit identity of an operator acting on ``tenant``: their AWS principal, no role in the tenant."""
    return identity_context(tenant, principal, principal, user_agent="expediente-ops create-tenant")


def create_tenant(*, stack: StackInfo, name: str, admin_username: str, admin_email: str,
                  admin_password: str | None = None, session: boto3.Session | None = None) -> CreatedTenant:
    """Create a clinic chain and its first admin; returns the new ids.

    With ``admin_password`` (local and demo stacks) the password is set permanent and no
    email is sent; without it Cognito emails the admin a temporary password. Raises
    :class:`expediente.errors.DomainError` subclasses for a bad name, username or email
    (``Invalid``) or a taken username (``Duplicate``), and botocore errors when AWS refuses.
    Nothing is left behind when it fails.
    """
    session = session or stack.session()
    kms = stack.client(session, "kms")
    principal = str(stack.client(session, "sts").get_caller_identity()["Arn"])
    tenant = new_tenant_id()
    ctx = operator_context(tenant, principal)
    repo = AdminRepository(
        tables=AdminTables(admin=stack.table_admin, audit=stack.table_audit),
        envelope=Envelope(kms, stack.key_app_arn),
        transact=_transact_with(stack.client(session, "dynamodb"), audit_chain.kms_key_maker(kms, stack.key_app_arn)),
    )
    admin = rules.new_user({"username": admin_username, "email": admin_email, "role": "admin", "clinic_ids": []})
    created = logic.create_tenant(
        ctx, name=name.strip(), admin=admin, admin_password=admin_password,
        tenant_item=lambda organization_id: tenants.new_tenant_item(
            tenant=tenant, name=name.strip(), organization_id=organization_id, kms=kms, key_id=stack.key_app_arn),
        repo=repo, directory=CognitoDirectory(stack.client(session, "cognito-idp"), stack.user_pool_id),
    )
    return CreatedTenant(created.tenant_id, created.organization_id, created.admin_username, created.admin_user_id)
