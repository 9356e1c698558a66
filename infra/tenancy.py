"""What each function reaches as a tenant, and the little it reaches before any tenant (decision 0023).

Plain Python, shared by the CDK construct (``infra/constructs/function.py`` renders it into IAM
policies), the template test (``tests/infra/test_infra_tenant_scope.py``) and the evaluator that
checks every DynamoDB, S3 and KMS call the integration flows make
(``tests/integration/security/calls.py``).

Every DynamoDB partition key and S3 object key of tenant data starts with the tenant
(architecture decision 3): ``<tenant>#...`` in the tables (``TENANT#<tenant>`` for the tenant
record), ``<tenant>/...`` in the buckets. A function's *tenant data role* may touch only those,
for the tenant named by its session tag; its *execution role* keeps only the global items listed in
:data:`GLOBAL_ACCESS`. Tenant ids are ``[a-z0-9][a-z0-9-]{2,62}`` and IAM session tag values cannot
hold ``*``, ``?`` or ``#``, so ``<tenant>#*`` never matches another tenant's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

TENANT_TAG = "tenant"
PRINCIPAL_TENANT = "${aws:PrincipalTag/tenant}"

# IAM patterns (StringLike), ``{tenant}`` standing for the principal's tenant tag.
TENANT_LEADING_KEYS: tuple[str, ...] = ("{tenant}#*", "TENANT#{tenant}")
TENANT_OBJECT_KEYS: tuple[str, ...] = ("{tenant}/*",)

# What the tenant role may do, by kind of grant (explicit lists: no Scan, no DescribeTable, no
# stream reads, none of which carries dynamodb:LeadingKeys).
TABLE_READ_ACTIONS: tuple[str, ...] = (
    "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:Query",
)
TABLE_WRITE_ACTIONS: tuple[str, ...] = (
    "dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
)
OBJECT_READ_ACTIONS: tuple[str, ...] = ("s3:GetObject", "s3:GetObjectVersion")
# PutObjectRetention: a put that sets its own Object Lock retention (the audit digests, decision 0022).
OBJECT_PUT_ACTIONS: tuple[str, ...] = ("s3:PutObject", "s3:PutObjectRetention", "s3:AbortMultipartUpload")
# Listing a readable bucket, only under the tenant's prefix (condition s3:prefix).
BUCKET_LIST_ACTIONS: tuple[str, ...] = ("s3:ListBucket",)
OBJECT_DELETE_ACTIONS: tuple[str, ...] = ("s3:DeleteObject",)
# Envelope encryption and blind indexes under the app key: the encryption context names the tenant
# (expediente/crypto.py: {"tenant": <tenant>, "purpose": ...}).
APP_KEY_ACTIONS: tuple[str, ...] = ("kms:Decrypt", "kms:GenerateDataKey")
APP_KEY_CONTEXT = "kms:EncryptionContext:tenant"


def tenant_patterns(patterns: tuple[str, ...], tenant: str) -> tuple[str, ...]:
    """The patterns for one tenant (``{tenant}`` replaced)."""
    return tuple(p.replace("{tenant}", tenant) for p in patterns)


@dataclass(frozen=True)
class GlobalAccess:
    """Data a function's execution role keeps because it is reached before any tenant is known.

    ``kind`` is ``table`` (``keys``: partition keys, IAM StringLike) or ``bucket`` (``keys``: object
    keys). ``actions`` are IAM actions. ``reason`` says why no tenant can be bound yet.
    """

    function: str
    kind: str
    resource: str
    actions: tuple[str, ...]
    keys: tuple[str, ...]
    reason: str
    # "execution" (the function's own role) or "tenant" (a grant of the tenant data role beyond the plain
    # table and bucket grants: ``{tenant}`` in ``keys`` stands for the session's tenant tag).
    credentials: str = "execution"


GLOBAL_ACCESS: tuple[GlobalAccess, ...] = (
    GlobalAccess(
        function="results", kind="table", resource="admin", actions=("dynamodb:Query",), keys=("TENANT#REGISTRY",),
        reason="the critical-result escalation schedule lists the registered tenants before it works on each",
    ),
    GlobalAccess(
        function="audit_digest", kind="table", resource="admin", actions=("dynamodb:Query",),
        keys=("TENANT#REGISTRY",),
        reason="the audit digest schedule lists the registered tenants before it digests each one's chain",
    ),
    GlobalAccess(
        function="orders", kind="table", resource="admin", actions=("dynamodb:Query",), keys=("TENANT#REGISTRY",),
        reason="the outbox relay schedule lists the registered tenants before it relays each one's events",
    ),
    GlobalAccess(
        function="prescriptions", kind="table", resource="prescriptions", actions=("dynamodb:GetItem",),
        keys=("RECETA#*",),
        reason="a pharmacy's GET /receta/{token} has no token: the receta token item names the tenant",
    ),
    GlobalAccess(
        function="prescriptions", kind="table", resource="prescriptions", actions=("dynamodb:PutItem",),
        keys=("RECETA#*",), credentials="tenant",
        reason="signing a prescription writes its receta token item in the same transaction as the prescription; "
               "the public lookup trusts the token item only if the tenant's own prescription carries that token",
    ),
    GlobalAccess(
        function="orders", kind="bucket", resource="documents", actions=("s3:DeleteObjectVersion",),
        keys=("{tenant}/hl7/outbox/*",), credentials="tenant",
        reason="an ORM^O01 is written before its order's transaction; when the transaction fails, that exact "
               "version is erased so the laboratory never receives an order that does not exist (not a clinical "
               "record: the order was never stored). The only version erase any function may make",
    ),
    GlobalAccess(
        function="dicom_ingest", kind="bucket", resource="ingest", actions=OBJECT_READ_ACTIONS + OBJECT_DELETE_ACTIONS,
        keys=("*",),
        reason="an uploaded object whose key names no registered tenant is read and moved to quarantine under "
               "unassigned/ without a tenant to bind",
    ),
    GlobalAccess(
        function="dicom_ingest", kind="bucket", resource="quarantine", actions=OBJECT_PUT_ACTIONS,
        keys=("unassigned/*",),
        reason="objects of no registered tenant are quarantined under unassigned/",
    ),
)


def global_access(function_id: str, credentials: str = "execution") -> tuple[GlobalAccess, ...]:
    """The global grants of one function's execution role (or, ``credentials="tenant"``, its tenant role)."""
    return tuple(g for g in GLOBAL_ACCESS if g.function == function_id and g.credentials == credentials)
