"""AWS clients, created on first use and cached for the life of the process.

boto3 honours ``AWS_ENDPOINT_URL``, which is how the local stack points every
client at the embedded AWS. Nothing here runs at import time.
"""

from __future__ import annotations

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


@cache
def session() -> boto3.session.Session:
    """One session per process, so botocore loads each service model once."""
    return boto3.session.Session()


@cache
def client(service: str) -> Any:
    """A shared client for ``service`` (dynamodb, kms, events, s3, cognito-idp, sqs)."""
    config = _S3_CONFIG if service == "s3" else _CONFIG
    return session().client(service, config=config)  # type: ignore[call-overload]


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
