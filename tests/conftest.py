"""Fixtures every tier shares: a moto world built from infra/definitions, users, events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.aws import (
    REGION,
    LambdaContext,
    User,
    api_event,
    create_tenant_record,
    environment,
    provision,
    reset_caches,
)

# Every phase's captured output and log records are scanned for patient data (issue 7, item 7).
from tests.support.logscan import (  # noqa: F401  (pytest hooks, found by name)
    pytest_configure,
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)


@dataclass
class World:
    key_arn: str
    events_queue_url: str

    def tenant(self, tenant: str) -> str:
        create_tenant_record(tenant, self.key_arn)
        return tenant

    def published(self) -> list[dict[str, Any]]:
        """Events delivered to the test queue subscribed to the bus."""
        sqs = boto3.client("sqs", region_name=REGION)
        out = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.events_queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.events_queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A fresh embedded AWS: tables, KMS key, event bus with a catch-all rule to an SQS queue."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    from local import moto_patches

    moto_patches.apply()
    with mock_aws():
        key_arn, queue_url = provision()
        for name, value in environment(key_arn).items():
            monkeypatch.setenv(name, value)
        reset_caches()
        yield World(key_arn=key_arn, events_queue_url=queue_url)
        reset_caches()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def issue(self) -> str:
        return str(self.body["issue"][0].get("diagnostics", "")) if isinstance(self.body, dict) else ""


def invoke(handler: Callable[[dict[str, Any], Any], dict[str, Any]], event: dict[str, Any]) -> Reply:
    response = handler(event, LambdaContext())
    headers = {k: v for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(k, values[-1])
    body = response.get("body")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body
    return Reply(response["statusCode"], headers, parsed)


@pytest.fixture
def user_factory() -> Callable[..., User]:
    def make(tenant: str, role: str, **kwargs: Any) -> User:
        return User(tenant=tenant, role=role, **kwargs)

    return make


__all__ = ["Reply", "World", "api_event", "invoke"]
