"""Fault injection at the AWS call boundary, and a snapshot of everything a request can leave behind.

:class:`Injector` hooks ``before-call`` on the botocore session that ``expediente.aws`` builds every
client from (``aws.session()``), so it sees each call the code under test makes, in order, and can
answer call *k* with an AWS error instead of sending it: the error a service returns once the SDK's
own retries are exhausted (botocore builds the same modelled exception from it as from a real
response). The test's own clients (``boto3.client``) use another session and are never counted.

:func:`snapshot` reads every table, every object version of every bucket, the KMS keys and the
Cognito users straight from moto's in-memory backends (milliseconds, where scanning through the APIs
took most of a sweep's time); :func:`trace` says what a failed request left behind compared with before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from infra import definitions
from tests.support.aws import REGION, bucket_name, table_name


@dataclass(frozen=True)
class Fault:
    """One way an AWS call can fail: an error code with its HTTP status, or a PutEvents partial failure."""

    code: str
    status: int
    partial: bool = False  # PutEvents answered 200 with FailedEntryCount > 0

    @property
    def name(self) -> str:
        return "FailedEntryCount" if self.partial else self.code

    def answer(self, operation: str, params: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
        body = _json_body(params)
        meta = {"HTTPStatusCode": self.status, "HTTPHeaders": {}, "RetryAttempts": 2}
        http = AWSResponse("https://fault.invalid/", self.status, HTTPHeaders(), _Raw())
        if self.partial:
            entries = body.get("Entries") or []
            return http, {"FailedEntryCount": len(entries), "ResponseMetadata": meta,
                          "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"} for _ in entries]}
        parsed: dict[str, Any] = {"Error": {"Code": self.code, "Message": f"injected {self.code}"},
                                  "ResponseMetadata": meta}
        if self.code == "TransactionCanceledException":
            items = body.get("TransactItems") or []
            reasons = [{"Code": "None"} for _ in items]
            if reasons:
                reasons[0] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            parsed["CancellationReasons"] = reasons
        return http, parsed


class _Raw:
    """The body stream of an injected response (botocore may read it for logging)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def _json_body(params: dict[str, Any]) -> dict[str, Any]:
    raw = params.get("body")
    if isinstance(raw, bytes | str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


THROTTLED = Fault("ThrottlingException", 400)
# Per service: the throttling and server errors each one documents (all worth a retry).
FAULTS: dict[str, tuple[Fault, ...]] = {
    "dynamodb": (Fault("ProvisionedThroughputExceededException", 400), THROTTLED,
                 Fault("InternalServerError", 500)),
    "kms": (Fault("KMSInternalException", 500), THROTTLED),
    "s3": (Fault("SlowDown", 503), Fault("InternalError", 500), Fault("ServiceUnavailable", 503)),
    "eventbridge": (Fault("InternalException", 500), Fault("InternalException", 200, partial=True)),
    "cognito-identity-provider": (Fault("TooManyRequestsException", 400), Fault("InternalErrorException", 500)),
    "sqs": (Fault("ThrottlingException", 400), Fault("InternalError", 500)),
}
TRANSACTION_CONFLICT = Fault("TransactionCanceledException", 400)


def faults_for(call: str) -> tuple[Fault, ...]:
    """The faults to try at one call (``service.Operation``); a transaction can also be cancelled by a conflict."""
    service, operation = call.split(".", 1)
    found = FAULTS.get(service, (THROTTLED, Fault("InternalError", 500)))
    if service == "eventbridge" and operation != "PutEvents":
        found = found[:1]
    if operation == "TransactWriteItems":
        found = (*found, TRANSACTION_CONFLICT)
    return found


@dataclass
class Injector:
    """Counts the AWS calls of the code under test and fails the ones planned."""

    recording: bool = False
    calls: list[str] = field(default_factory=list)
    plan: dict[int, Fault] = field(default_factory=dict)
    injected: list[tuple[int, str, str]] = field(default_factory=list)
    mentioning: tuple[str, Fault] | None = None  # fail every call whose request names this string
    on_call: Callable[[str], None] | None = None  # runs before each recorded call ("service.Operation")

    def before_call(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> Any:
        if not self.recording:
            return None
        _, service, operation = event_name.split(".", 2)
        if self.on_call is not None:
            self.on_call(f"{service}.{operation}")
        self.calls.append(f"{service}.{operation}")
        fault = self.plan.get(len(self.calls))
        if fault is not None and fault.partial and f"{service}.{operation}" != "eventbridge.PutEvents":
            fault = None  # the sequence moved: a PutEvents answer means nothing to another call (the sweep reports it)
        if fault is None and self.mentioning is not None:
            needle, chosen = self.mentioning
            applies = not chosen.partial or f"{service}.{operation}" == "eventbridge.PutEvents"
            request = json.dumps({k: params.get(k) for k in ("url_path", "query_string", "body")}, default=str)
            if applies and needle in request:
                fault = chosen
        if fault is None:
            return None
        self.injected.append((len(self.calls), f"{service}.{operation}", fault.name))
        return fault.answer(operation, params)

    @contextmanager
    def record(self, plan: dict[int, Fault] | None = None, *,
               mentioning: tuple[str, Fault] | None = None) -> Iterator[Injector]:
        """Count (and fail the planned) calls made inside the block: call numbers in ``plan``, and every
        call whose URL or body contains ``mentioning[0]``."""
        self.calls, self.plan, self.injected, self.mentioning = [], dict(plan or {}), [], mentioning
        self.recording = True
        try:
            yield self
        finally:
            self.recording, self.mentioning = False, None


_INSTALLED: list[Injector] = []


def install() -> Injector:
    """The process's injector, registered on ``aws.session()`` (before the clients it must see are made)."""
    if not _INSTALLED:
        from expediente import aws

        injector = Injector()
        aws.session().events.register("before-call", injector.before_call, unique_id="fault-injector")
        _INSTALLED.append(injector)
    return _INSTALLED[0]


# ------------------------------------------------------------------ what a request leaves behind ---


@dataclass(frozen=True)
class Snapshot:
    items: dict[tuple[str, str, str], str]  # (table id, pk, sk) → item JSON
    objects: frozenset[tuple[str, str, str, bool]]  # (bucket id, key, version id, delete marker)
    keys: dict[str, str]  # KMS key id → state
    users: frozenset[str]


def snapshot() -> Snapshot:
    """Read straight from the embedded AWS's memory (moto's backends): no request, no serialisation.

    Every table of ``definitions.TABLES``, every object version and delete marker of every bucket of
    ``definitions.BUCKETS``, every KMS key's state and every user of the pool in ``USER_POOL_ID``.
    """
    from moto.backends import get_backend
    from moto.core.models import DEFAULT_ACCOUNT_ID as ACCOUNT
    from moto.s3.models import FakeDeleteMarker

    tables = get_backend("dynamodb")[ACCOUNT][REGION].tables
    items: dict[tuple[str, str, str], str] = {}
    for table in definitions.TABLES:
        for item in tables[table_name(table.id)].all_items():
            sk = str(item.range_key.value) if table.sk and item.range_key is not None else ""
            items[(table.id, str(item.hash_key.value), sk)] = json.dumps(item.to_json()["Attributes"], sort_keys=True,
                                                                         default=str)
    buckets = get_backend("s3")[ACCOUNT]["global"].buckets
    objects: set[tuple[str, str, str, bool]] = set()
    for bucket in definitions.BUCKETS:
        for key, versions in buckets[bucket_name(bucket.id)].keys.iterlists():
            objects |= {(bucket.id, key, v.version_id, isinstance(v, FakeDeleteMarker)) for v in versions}
    keys = {key_id: key.key_state for key_id, key in get_backend("kms")[ACCOUNT][REGION].keys.items()}
    users: frozenset[str] = frozenset()
    pool = os.environ.get("USER_POOL_ID")
    if pool:
        users = frozenset(get_backend("cognito-idp")[ACCOUNT][REGION].user_pools[pool].users)
    return Snapshot(items, frozenset(objects), keys, users)


@dataclass
class Trace:
    """What changed between two snapshots, with the failed attempt's own audit records set apart."""

    items: list[str] = field(default_factory=list)
    error_audit: int = 0
    objects: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.items or self.objects or self.keys or self.users)

    def describe(self) -> str:
        return "; ".join(f"{name}: {values[:5]}" for name, values in
                         (("items", self.items), ("objects", self.objects), ("keys", self.keys),
                          ("users", self.users)) if values)


def trace(before: Snapshot, after: Snapshot) -> Trace:
    """Everything ``after`` has that ``before`` had not (or changed).

    Allowed, and counted apart: audit records of the failed attempt itself (outcome 4 or 8, never
    clinical data), and KMS keys created and already scheduled for deletion.
    """
    found = Trace()
    for key, item in after.items.items():
        if before.items.get(key) == item:
            continue
        table, pk, sk = key
        if table == "audit" and key not in before.items and json.loads(item).get("outcome", {}).get("S") in {"4", "8"}:
            found.error_audit += 1
            continue
        found.items.append(f"{table} {pk} {sk}" + (" (changed)" if key in before.items else ""))
    found.items += [f"{t} {pk} {sk} (removed)" for (t, pk, sk) in before.items.keys() - after.items.keys()]
    found.objects = sorted(f"{b}/{k}{' (delete marker)' if m else ''}" for b, k, _, m in after.objects - before.objects)
    found.objects += sorted(f"{b}/{k} (removed)" for b, k, _, _ in before.objects - after.objects)
    found.keys = sorted(f"{k} {s}" for k, s in after.keys.items()
                        if before.keys.get(k) != s and s != "PendingDeletion")
    found.users = sorted(after.users - before.users)
    return found
