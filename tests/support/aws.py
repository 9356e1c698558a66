"""Shared test scaffolding: moto resources built from infra/definitions, claims, API Gateway events."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3

from infra import definitions

REGION = "us-east-1"


def table_name(table_id: str) -> str:
    return f"test-{table_id}"


def create_tables(dynamodb: Any) -> None:
    """Every table of definitions.TABLES, with its keys, GSIs and TTL."""
    for table in definitions.TABLES:
        attrs = {table.pk, *(a for idx in table.indexes for a in (idx.pk, idx.sk))}
        key_schema = [{"AttributeName": table.pk, "KeyType": "HASH"}]
        if table.sk:
            attrs.add(table.sk)
            key_schema.append({"AttributeName": table.sk, "KeyType": "RANGE"})
        args: dict[str, Any] = {
            "TableName": table_name(table.id),
            "KeySchema": key_schema,
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attrs)],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if table.indexes:
            args["GlobalSecondaryIndexes"] = [
                {"IndexName": idx.name,
                 "KeySchema": [{"AttributeName": idx.pk, "KeyType": "HASH"},
                               {"AttributeName": idx.sk, "KeyType": "RANGE"}],
                 "Projection": {"ProjectionType": "ALL"}}
                for idx in table.indexes
            ]
        dynamodb.create_table(**args)


def bucket_name(bucket_id: str) -> str:
    return f"test-{bucket_id.replace('_', '-')}"


def environment(key_arn: str, bus: str = "expediente") -> dict[str, str]:
    env = {t.env: table_name(t.id) for t in definitions.TABLES}
    env.update({b.env: bucket_name(b.id) for b in definitions.BUCKETS})
    env.update({
        "KEY_APP_ARN": key_arn,
        "EVENT_BUS_NAME": bus,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "expediente-test",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    })
    return env


def reset_caches() -> None:
    """Forget cached settings, clients and keys so each test sees its own moto world."""
    from expediente import api, audit_chain, aws, critical_policy, records, settings, tenants

    audit_chain.reset()  # a new moto world: no chain continues one written in another

    aws.forget_credentials()
    for fn in (settings.settings, aws.client, aws.unscoped_client, tenants.envelope, tenants.blind_index,
               api._idempotency_store, records.store):
        fn.cache_clear()
    critical_policy.forget()
    import importlib

    for module in ("functions.patients.repository", "functions.notes.repository", "functions.results.repository",
                   "functions.orders.repository", "functions.dicom_ingest.ingest",
                   "functions.prescriptions.repository"):
        try:
            importlib.import_module(module).repository.cache_clear()
        except (ImportError, AttributeError):
            continue
    try:
        from functions.notes import handler as notes_handler
    except ImportError:
        return
    notes_handler._kms_signer.cache_clear()


def create_tenant_record(tenant: str, key_arn: str) -> None:
    """A tenant record as the operator command writes it (name and org id are placeholders of the test)."""
    from expediente import aws, tenants
    from expediente.settings import settings

    item = tenants.new_tenant_item(tenant=tenant, name=f"Chain {tenant}", organization_id=f"org-{tenant}",
                                   kms=aws.client("kms"), key_id=key_arn)
    aws.client("dynamodb").put_item(TableName=settings().table_admin, Item=item)
    aws.client("dynamodb").put_item(TableName=settings().table_admin, Item=tenants.registry_item(tenant))


@dataclass
class User:
    tenant: str
    role: str
    username: str = ""
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))
    clinic_ids: tuple[str, ...] = ("HGIMB000151",)
    practitioner_id: str | None = None
    patient_id: str | None = None

    def claims(self) -> dict[str, str]:
        """Claims as API Gateway's Cognito authorizer passes them: every value a string."""
        claims = {
            "sub": self.sub,
            "cognito:username": self.username or f"{self.role}-{self.sub[:8]}",
            "cognito:groups": self.role,
            "custom:tenant_id": self.tenant,
            "custom:clinic_ids": ",".join(self.clinic_ids),
            "token_use": "id",
            "aud": "test-client",
            "iss": f"https://cognito-idp.{REGION}.amazonaws.com/{REGION}_test",
            "exp": "Wed Nov 25 18:00:00 UTC 2026",
            "iat": "Wed Nov 25 17:00:00 UTC 2026",
        }
        if self.practitioner_id:
            claims["custom:practitioner_id"] = self.practitioner_id
        if self.patient_id:
            claims["custom:patient_id"] = self.patient_id
        return claims


def api_event(method: str, path: str, *, user: User | None, body: Any = None,
              query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A real API Gateway REST proxy event (payload 1.0) as the deployed API delivers it."""
    all_headers = {"Host": "api.example.test", "X-Forwarded-Proto": "https", "User-Agent": "pytest",
                   "Content-Type": "application/fhir+json", **(headers or {})}
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": request_id,
            "domainName": "api.example.test",
            "identity": {"sourceIp": "203.0.113.10", "userAgent": "pytest"},
            "requestTimeEpoch": 1764090000000,
            **({"authorizer": {"claims": user.claims()}} if user else {}),
        },
        "body": None if body is None else (body if isinstance(body, str) else json.dumps(body)),
        "isBase64Encoded": False,
    }


class LambdaContext:
    function_name = "expediente-test"
    memory_limit_in_mb = 1024
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:expediente-test"
    aws_request_id = "test-request"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def make_key() -> str:
    return boto3.client("kms", region_name=REGION).create_key(Description="app")["KeyMetadata"]["Arn"]


def provision() -> tuple[str, str]:
    """Inside an active ``mock_aws``: every table and bucket, the app KMS key, the event bus and a queue that
    receives every Expediente event. Returns (key ARN, queue URL)."""
    create_tables(boto3.client("dynamodb", region_name=REGION))
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in definitions.BUCKETS:
        s3.create_bucket(Bucket=bucket_name(bucket.id), ObjectLockEnabledForBucket=bucket.object_lock_years > 0)
        # Versioned as deployed: a "move" leaves the old version behind a delete marker.
        s3.put_bucket_versioning(Bucket=bucket_name(bucket.id), VersioningConfiguration={"Status": "Enabled"})
    key_arn = make_key()
    # The audit digest signing key (decision 0022), found by the alias the local stack gives it too.
    kms = boto3.client("kms", region_name=REGION)
    digest_key = kms.create_key(Description="audit digests", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    kms.create_alias(AliasName="alias/expediente/audit-digest", TargetKeyId=digest_key["KeyMetadata"]["KeyId"])
    events = boto3.client("events", region_name=REGION)
    events.create_event_bus(Name="expediente")
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="all-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all", EventBusName="expediente", EventPattern=json.dumps({"source": ["expediente"]}))
    events.put_targets(Rule="all", EventBusName="expediente", Targets=[{"Id": "q", "Arn": queue_arn}])
    return key_arn, queue_url
