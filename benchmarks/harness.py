"""An in-process moto world built from infra/definitions, a seeded tenant, and call counters."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws

from tests.support.aws import (
    REGION,
    LambdaContext,
    User,
    api_event,
    create_tables,
    create_tenant_record,
    environment,
    provision,
    reset_caches,
)

TENANT = "t-bench"


@contextmanager
def world(*, dynamodb_endpoint: str | None = None) -> Iterator[str]:
    """Moto tables, KMS key, bus; environment set; yields the app key ARN.

    With ``dynamodb_endpoint``, DynamoDB calls go to that engine instead (dynalite), with the same
    tables; everything else stays in moto.
    """
    from local import moto_patches

    moto_patches.apply()
    saved = dict(os.environ)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ["AWS_DEFAULT_REGION"] = REGION
    try:
        with mock_aws():
            key, _ = provision()
            if dynamodb_endpoint:
                os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_endpoint
                create_tables(boto3.client("dynamodb", region_name=REGION, endpoint_url=dynamodb_endpoint))
            os.environ.update(environment(key))
            os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
            reset_caches()
            create_tenant_record(TENANT, key)
            yield key
    finally:
        reset_caches()
        os.environ.clear()
        os.environ.update(saved)


class AwsCalls:
    """Counts AWS operations and the time spent inside them, through botocore hooks."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.op_seconds: Counter[str] = Counter()
        self.items_read = 0
        self.seconds = 0.0
        self._started: dict[int, float] = {}

    def attach(self, *clients: Any) -> None:
        """Count the calls of ``clients`` (each event emitter once: a tenant-routed client and the plain client
        it resolves to share one)."""
        emitters = {id(c.meta.events): c.meta.events for c in clients}
        for events in emitters.values():
            events.register("before-call", self._before)
            events.register("after-call", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        self._started[id(model)] = time.perf_counter()

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        elapsed = time.perf_counter() - self._started.pop(id(model), time.perf_counter())
        self.seconds += elapsed
        self.ops[f"{model.service_model.service_name}:{model.name}"] += 1
        self.op_seconds[f"{model.service_model.service_name}:{model.name}"] += elapsed
        if model.name in ("Query", "Scan"):
            self.items_read += int(parsed.get("ScannedCount", 0))
        elif model.name == "GetItem":
            self.items_read += 1 if parsed.get("Item") else 0
        elif model.name == "BatchGetItem":
            self.items_read += sum(len(v) for v in parsed.get("Responses", {}).values())

    def reset(self) -> None:
        self.ops.clear()
        self.op_seconds.clear()
        self.items_read = 0
        self.seconds = 0.0


def counters() -> AwsCalls:
    from expediente import aws

    calls = AwsCalls()
    calls.attach(aws.client("dynamodb"), aws.client("kms"), aws.client("events"))
    return calls


def call(method: str, path: str, *, role: str = "reception", body: Any = None, query: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    from functions.patients.handler import lambda_handler

    event = api_event(method, path, user=User(tenant=TENANT, role=role), body=body, query=query, headers=headers)
    response = lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


@contextmanager
def use_engine(client: Any) -> Iterator[None]:
    """Send the product's DynamoDB calls to ``client`` for a while (everything else stays as it is)."""
    from expediente import aws

    original = aws.client

    def pick(service: str) -> Any:
        return client if service == "dynamodb" else original(service)

    aws.client = pick  # type: ignore[assignment]
    try:
        yield
    finally:
        aws.client = original


@contextmanager
def two_engines(benchmark: str) -> Iterator[dict[str, Any]]:
    """The moto world with DynamoDB on two dynalite engines, ``small`` and ``large``, each with every
    table and the bench tenant; yields their clients. A size comparison loads one engine per size and
    alternates requests between them, so the machine's drift touches both sides alike.

    moto is not used for DynamoDB here: its ``Query`` walks every item of the table, so its latency
    grows with the table for reasons that are moto's.
    """
    from benchmarks import dynalite
    from expediente import aws, tenants
    from expediente.settings import settings

    if not dynalite.available():
        raise SystemExit(f"the {benchmark} benchmark needs dynalite: run it through `make bench` (npm ci)")
    with dynalite.running() as small_endpoint, dynalite.running() as large_endpoint, \
            world(dynamodb_endpoint=small_endpoint):
        engines = {"small": aws.client("dynamodb"),
                   "large": aws.session().client("dynamodb", endpoint_url=large_endpoint, config=aws._CONFIG)}
        create_tables(engines["large"])
        tenant_item = engines["small"].get_item(TableName=settings().table_admin,
                                                Key=tenants.tenant_key(TENANT))["Item"]
        engines["large"].put_item(TableName=settings().table_admin, Item=tenant_item)
        yield engines


class BatchLoader:
    """Writes ``TransactWriteItems`` ``Put`` elements (what the product's repositories build) with
    ``BatchWriteItem``, 25 at a time: the same items as the API would write, far faster."""

    def __init__(self, table: str) -> None:
        from expediente import aws

        self._client = aws.client("dynamodb")
        self._table = table
        self._pending: list[dict[str, Any]] = []

    def add(self, ops: list[dict[str, Any]]) -> None:
        self._pending += [{"PutRequest": {"Item": op["Put"]["Item"]}} for op in ops]
        while len(self._pending) >= 25:
            self._client.batch_write_item(RequestItems={self._table: self._pending[:25]})
            self._pending = self._pending[25:]

    def flush(self) -> None:
        if self._pending:
            self._client.batch_write_item(RequestItems={self._table: self._pending})
            self._pending = []
