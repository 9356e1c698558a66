"""Record every AWS call the code makes, with the credentials that signed it, and judge it by IAM.

:class:`CallRecorder` hooks the botocore events of ``expediente.aws.session()`` (the one session
every application client comes from): ``before-parameter-build`` keeps the API parameters,
``before-sign`` records the call with the access key that signs it (presigned URLs included), and
``after-call.sts.AssumeRole`` learns which access key belongs to which tenant session. The function
making a call is the outermost ``functions.<id>.handler`` frame on the stack; calls made by test
setup have none.

:func:`touches` turns a DynamoDB, S3 or KMS call into what IAM authorizes (action, table or bucket,
partition key or object key, encryption context), and :func:`judge` evaluates each touch against
the policy model of ``infra/tenancy.py`` and ``infra/definitions.py`` (the same model the CDK
construct renders into the roles): moto does not enforce IAM, so this is the enforcement.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from infra import definitions, tenancy

EXECUTION = "execution"


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: dict[str, Any]
    principal: str  # EXECUTION or the tenant of the session tag
    function: str | None  # the function whose handler made the call (None: test setup)
    presigned: bool = False
    # The environment the call was made in (table and bucket names, the app key), to name resources.
    env: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Touch:
    """One authorization IAM makes for a call."""

    kind: str  # table, bucket, key
    resource: str  # table or bucket id, or "app" / "signing" / "storage"
    action: str
    key: str | None  # partition key, object key or encryption-context tenant


@dataclass
class CallRecorder:
    """Records calls while installed on a boto3 session (see the module docstring)."""

    session: Any
    calls: list[Call] = field(default_factory=list)
    tenants_by_key: dict[str, str] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)

    def install(self) -> CallRecorder:
        events = self.session.events
        events.register("before-parameter-build", self._params, unique_id="tenant-scope-params")
        events.register("before-sign", self._signed, unique_id="tenant-scope-sign")
        events.register("after-call.sts.AssumeRole", self._assumed, unique_id="tenant-scope-assumed")
        return self

    def uninstall(self) -> None:
        events = self.session.events
        events.unregister("before-parameter-build", unique_id="tenant-scope-params")
        events.unregister("before-sign", unique_id="tenant-scope-sign")
        events.unregister("after-call.sts.AssumeRole", unique_id="tenant-scope-assumed")

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["_recorded_params"] = dict(params)

    def _signed(self, request: Any, request_signer: Any, operation_name: str, **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        credentials = getattr(request_signer, "_credentials", None)
        access_key = credentials.get_frozen_credentials().access_key if credentials is not None else ""
        service = request_signer._service_id.hyphenize()
        self.calls.append(Call(
            service=service, operation=operation_name, params=context.get("_recorded_params", {}),
            principal=self.tenants_by_key.get(access_key, EXECUTION), function=_calling_function(),
            presigned=bool(context.get("is_presign_request")), env=_environment(),
        ))

    def _assumed(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        tags = {t["Key"]: t["Value"] for t in context.get("_recorded_params", {}).get("Tags", [])}
        access_key = parsed.get("Credentials", {}).get("AccessKeyId")
        if access_key and tenancy.TENANT_TAG in tags:
            self.tenants_by_key[access_key] = tags[tenancy.TENANT_TAG]
            self.assumed.append(tags[tenancy.TENANT_TAG])

    def data_calls(self) -> list[Call]:
        """Calls of handlers to DynamoDB, S3 and KMS (test setup left out)."""
        return [c for c in self.calls if c.function and c.service in ("dynamodb", "s3", "kms")]


# Only calls made inside a Lambda entry module count: a test calling a domain module directly is setup.
_HANDLER = re.compile(r"^functions\.(\w+)\.handler$")


def _calling_function() -> str | None:
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        match = _HANDLER.match(frame.f_globals.get("__name__", ""))
        if match:
            found = match.group(1)  # keep the outermost: hl7v2 runs the patients and results rules
        frame = frame.f_back
    return found


# ------------------------------------------------------------------ what IAM authorizes ---


def _environment() -> dict[str, str]:
    wanted = [i.env for i in (*definitions.TABLES, *definitions.BUCKETS)] + ["KEY_APP_ARN"]
    return {name: os.environ[name] for name in wanted if os.environ.get(name)}


def _names(kind: str, env: dict[str, str]) -> dict[str, str]:
    """Physical name (from the call's environment) → table or bucket id."""
    from tests.support.aws import bucket_name, table_name

    if kind == "table":
        names = {table_name(t.id): t.id for t in definitions.TABLES}
        names.update({env[t.env]: t.id for t in definitions.TABLES if env.get(t.env)})
    else:
        names = {bucket_name(b.id): b.id for b in definitions.BUCKETS}
        names.update({env[b.env]: b.id for b in definitions.BUCKETS if env.get(b.env)})
    return names


def _scalar(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value.values())))
    return str(value)


def _table(table_id: str) -> definitions.TableDef:
    try:
        return definitions.table(table_id)
    except KeyError:  # a table the environment does not name: judged as unknown, keyed by "pk"
        return definitions.TableDef(id=table_id, env="")


def _partition_value(table_id: str, key: dict[str, Any], index: str | None = None) -> str:
    table = _table(table_id)
    name = table.pk
    if index:
        name = next(i.pk for i in table.indexes if i.name == index)
    return _scalar(key.get(name, ""))


def _query_partition(table_id: str, params: dict[str, Any]) -> str:
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    table = _table(table_id)
    wanted = table.pk if not params.get("IndexName") else next(
        i.pk for i in table.indexes if i.name == params["IndexName"])
    for attr, placeholder in re.findall(r"(#?\w+)\s*=\s*(:\w+)", params.get("KeyConditionExpression", "")):
        if names.get(attr, attr) == wanted:
            return _scalar(values.get(placeholder, ""))
    return ""


def _written_key(request: dict[str, Any]) -> dict[str, Any]:
    return (request.get("PutRequest") or {}).get("Item") or (request.get("DeleteRequest") or {}).get("Key") or {}


_ITEM_ACTION = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}


def touches(call: Call) -> list[Touch]:
    """What IAM authorizes for ``call`` (one touch per item of a batch or transaction)."""
    p = call.params
    if call.service == "dynamodb":
        tables = _names("table", call.env)
        op = call.operation
        if op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
            tid = tables.get(p.get("TableName", ""), p.get("TableName", "?"))
            key = p.get("Key") or p.get("Item") or {}
            return [Touch("table", tid, f"dynamodb:{op}", _partition_value(tid, key))]
        if op == "Query":
            tid = tables.get(p.get("TableName", ""), p.get("TableName", "?"))
            return [Touch("table", tid, "dynamodb:Query", _query_partition(tid, p))]
        if op == "BatchGetItem":
            return [Touch("table", tables.get(name, name), "dynamodb:BatchGetItem",
                          _partition_value(tables.get(name, name), k))
                    for name, spec in p.get("RequestItems", {}).items() for k in spec.get("Keys", [])]
        if op == "BatchWriteItem":
            return [Touch("table", tables.get(name, name), "dynamodb:BatchWriteItem",
                          _partition_value(tables.get(name, name), _written_key(r)))
                    for name, requests in p.get("RequestItems", {}).items() for r in requests]
        if op in ("TransactWriteItems", "TransactGetItems"):
            out = []
            for element in p.get("TransactItems", []):
                (kind, spec), = element.items()
                tid = tables.get(spec.get("TableName", ""), spec.get("TableName", "?"))
                out.append(Touch("table", tid, _ITEM_ACTION[kind],
                                 _partition_value(tid, spec.get("Key") or spec.get("Item") or {})))
            return out
        tid = tables.get(p.get("TableName", ""), p.get("TableName", "?"))
        return [Touch("table", tid, f"dynamodb:{op}", None)]  # Scan, DescribeTable...: no leading key
    if call.service == "s3":
        buckets = _names("bucket", call.env)
        bid = buckets.get(p.get("Bucket", ""), p.get("Bucket", "?"))
        op = call.operation
        action = {"HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "PutObject": "s3:PutObject",
                  "CopyObject": "s3:PutObject", "DeleteObject": "s3:DeleteObject",
                  "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
                  "UploadPartCopy": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
                  "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListObjectsV2": "s3:ListBucket",
                  "ListObjects": "s3:ListBucket"}.get(op, f"s3:{op}")
        if p.get("VersionId") and action == "s3:GetObject":
            action = "s3:GetObjectVersion"
        if p.get("VersionId") and action == "s3:DeleteObject":
            action = "s3:DeleteObjectVersion"
        if op == "DeleteObjects":  # authorized object by object (each key gets its own AccessDenied)
            return [Touch("bucket", bid, "s3:DeleteObject", o.get("Key"))
                    for o in (p.get("Delete") or {}).get("Objects", [])]
        out = [Touch("bucket", bid, action, p.get("Key", p.get("Prefix", "")))]
        if p.get("ObjectLockMode") or p.get("ObjectLockRetainUntilDate"):
            out.append(Touch("bucket", bid, "s3:PutObjectRetention", p.get("Key")))
        source = p.get("CopySource")
        if source:
            if isinstance(source, dict):
                src_bucket, src_key, version = source["Bucket"], source["Key"], source.get("VersionId")
            else:
                src_bucket, _, src_key = str(source).lstrip("/").partition("/")
                src_key, _, version_part = src_key.partition("?versionId=")
                version = version_part or None
            out.append(Touch("bucket", buckets.get(src_bucket, src_bucket),
                             "s3:GetObjectVersion" if version else "s3:GetObject", src_key))
        return out
    if call.service == "kms":
        context = p.get("EncryptionContext") or {}
        key_id = str(p.get("KeyId", ""))
        resource = "app" if key_id and key_id == call.env.get("KEY_APP_ARN") else "other"
        if call.operation in ("Sign", "GetPublicKey", "CreateKey", "ScheduleKeyDeletion", "TagResource"):
            resource = "signing"
        return [Touch("key", resource, f"kms:{call.operation}", context.get("tenant"))]
    return []


# ------------------------------------------------------------------ the policy model ---


def _table_actions(function_id: str, table_id: str) -> set[str]:
    fn = definitions.function(function_id)
    if table_id not in {t.id for t in definitions.TABLES}:
        return set()
    if table_id in fn.writes:
        return set(tenancy.TABLE_READ_ACTIONS + tenancy.TABLE_WRITE_ACTIONS)
    if table_id in fn.reads:
        return set(tenancy.TABLE_READ_ACTIONS)
    return set()


def _bucket_actions(function_id: str, bucket_id: str) -> set[str]:
    fn = definitions.function(function_id)
    actions: set[str] = set()
    if bucket_id in (*fn.buckets_write, *fn.buckets_read):
        actions |= set(tenancy.OBJECT_READ_ACTIONS + tenancy.BUCKET_LIST_ACTIONS)
    if bucket_id in (*fn.buckets_write, *fn.buckets_upload):
        actions |= set(tenancy.OBJECT_PUT_ACTIONS)
    if bucket_id in fn.buckets_delete:
        actions |= set(tenancy.OBJECT_DELETE_ACTIONS)
    return actions


def _like(value: str | None, patterns: tuple[str, ...]) -> bool:
    # IAM StringLike: * and ? are the only wildcards; fnmatch also reads [..], which no pattern here has.
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def allowed(function_id: str, principal: str, touch: Touch) -> bool:
    """Whether ``principal`` (EXECUTION or a tenant) of ``function_id`` may make ``touch``."""
    if touch.kind == "key":
        if touch.resource == "signing":  # practitioners' keys and the audit digest key (execution role only)
            if principal != EXECUTION:
                return False
            if definitions.function(function_id).signing_keys:
                return True
            if any(s.id == "audit_digest" and s.function == function_id for s in definitions.SCHEDULES):
                return touch.action in ("kms:Sign", "kms:GetPublicKey")
            return function_id == definitions.AUDIT_VERIFY_FUNCTION and touch.action == "kms:GetPublicKey"
        return (principal != EXECUTION and touch.resource == "app"
                and touch.action in tenancy.APP_KEY_ACTIONS and touch.key == principal)
    if principal == EXECUTION:
        return any(g.kind == touch.kind and g.resource == touch.resource and touch.action in g.actions
                   and _like(touch.key, g.keys) for g in tenancy.global_access(function_id))
    if any(g.kind == touch.kind and g.resource == touch.resource and touch.action in g.actions
           and _like(touch.key, tenancy.tenant_patterns(g.keys, principal))
           for g in tenancy.global_access(function_id, "tenant")):
        return True
    if touch.kind == "table":
        return (touch.action in _table_actions(function_id, touch.resource)
                and _like(touch.key, tenancy.tenant_patterns(tenancy.TENANT_LEADING_KEYS, principal)))
    if touch.kind == "bucket":
        return (touch.action in _bucket_actions(function_id, touch.resource)
                and _like(touch.key, tenancy.tenant_patterns(tenancy.TENANT_OBJECT_KEYS, principal)))
    return False


def judge(calls: list[Call]) -> list[str]:
    """Every touch the policy model refuses, described (an empty list: all allowed)."""
    refused = []
    for call in calls:
        if call.function is None:
            continue
        for touch in touches(call):
            if not allowed(call.function, call.principal, touch):
                refused.append(f"{call.function} as {call.principal}: {call.service}:{call.operation} "
                               f"{touch.action} {touch.kind}={touch.resource} key={touch.key!r}")
    return refused
