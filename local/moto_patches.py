"""Where moto differs from AWS in a way Expediente depends on, made to behave like AWS.

KMS ``Sign`` with ``MessageType=DIGEST``: real KMS signs the given SHA-256 digest as is; moto
5 hashes it again, so its signatures would not verify against the public key (and the signing
service refuses to store them). The embedded stack and the tests sign digests as KMS does.

EventBridge → SNS: moto 5.2 delivers rule targets to SQS, logs, archives and buses only; an SNS
target raises ``NotImplementedError`` inside ``PutEvents``, which then fails for the caller. Rules
here publish to SNS topics as EventBridge does, and a rule that only has a schedule matches no
event (moto matched every event to it, and then failed on its Lambda target).

DynamoDB ``Query`` on a table: moto sorts the whole table for every query; here it reads the
queried partition only, as DynamoDB does. EventBridge: moto parses its delivery template's JSONPaths
again for every delivery; here once.
"""

from __future__ import annotations

import base64
import json
from typing import Any

_PATCHED = False


def sign_digests_like_kms() -> None:
    """Patch moto's KMS ``Sign`` (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.kms.responses import KmsResponse

    moto_sign = KmsResponse.sign

    def sign(self: Any) -> str:
        answer: str = moto_sign(self)  # moto's own checks: the key exists, is enabled, fits the algorithm
        if self._get_param("MessageType") != "DIGEST" or self._get_param("SigningAlgorithm") != "ECDSA_SHA_256":
            return answer
        key = self.kms_backend.describe_key(self._get_param("KeyId"))
        message = self._get_param("Message")
        digest = base64.b64decode(message) if isinstance(message, str) else message
        signature = key.private_key.private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(),
                           "SigningAlgorithm": "ECDSA_SHA_256"})

    KmsResponse.sign = sign  # type: ignore[method-assign]
    _PATCHED = True


_FAST_TRANSACTIONS = False


def transact_writes_without_table_copies() -> None:
    """Make moto's ``TransactWriteItems`` cost what the transaction touches, not the table size.

    moto 5 deep-copies every table a transaction names, once per element, so that it can roll back
    on failure: a transaction's cost grows with everything ever written (tens of milliseconds once a
    table holds a few thousand items, against DynamoDB's flat cost). This keeps moto's own checks and
    writes and only changes how it rolls back: the items the transaction names are snapshotted
    before it runs and put back if it fails. Idempotent.
    """
    global _FAST_TRANSACTIONS
    if _FAST_TRANSACTIONS:
        return
    import copy
    import types

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    def deepcopy(value: Any, memo: Any = None) -> Any:
        # A table "copy" is the table itself: rollback is done item by item below.
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[attr-defined]
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshots: list[tuple[Any, Any, Any, Any]] = []
        for element in transact_items:
            if len(element) != 1:
                continue  # moto refuses it before writing anything
            op = next(iter(element.values()))
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = (op.get("Key") or op.get("Item")) if table is not None else None
            if not key or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
            if table.range_key_attr is not None and range_value is None:
                continue
            current = (table.items.get(hash_value, {}).get(range_value) if range_value is not None
                       else table.items.get(hash_value))
            snapshots.append((table, hash_value, range_value, copy.deepcopy(current)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, before in reversed(snapshots):
                if range_value is not None:
                    bucket = table.items.get(hash_value)
                    if before is None:
                        if bucket is not None:
                            bucket.pop(range_value, None)
                            if not bucket:
                                table.items.pop(hash_value, None)
                    else:
                        table.items[hash_value][range_value] = before
                elif before is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = before
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _FAST_TRANSACTIONS = True


_EVENTS_TO_SNS = False


def deliver_events_to_sns_topics() -> None:
    """Make EventBridge rules publish matching events to their SNS targets; idempotent.

    The message is the event as EventBridge writes it to a topic (the same JSON an SQS target
    receives, after the target's input transformer if any); SNS then delivers it to the topic's
    subscriptions (an SQS subscription with raw delivery receives the event itself). Targets of
    other kinds still go through moto's own delivery. A rule with a schedule and no event pattern
    matches no event, as in EventBridge: moto would otherwise send every event on the default
    bus to the scheduled rule's target.
    """
    global _EVENTS_TO_SNS
    if _EVENTS_TO_SNS:
        return
    import contextlib
    import copy
    import json

    from moto.core.utils import iso_8601_datetime_without_milliseconds, utcfromtimestamp
    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser
    from moto.sns.models import sns_backends
    from moto.utilities.arns import parse_arn

    moto_send = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if self.scheduled_expression and not self.event_pattern.get_pattern():
            return
        topics = [target for target in self.targets if parse_arn(target["Arn"]).service == "sns"]
        if not topics:
            moto_send(self, original_event, transform_input)
            return
        # moto's own delivery rewrites the event's time in place: keep a copy for the topics.
        pristine = copy.deepcopy(original_event)
        others = copy.copy(self)
        others.targets = [target for target in self.targets if target not in topics]
        moto_send(others, original_event, transform_input)
        if not self.event_pattern.matches_event(pristine):
            return
        for target in topics:
            event = copy.deepcopy(pristine)
            if transform_input:
                transformer = target.get("InputTransformer", {})
                event = EventTemplateParser.parse(
                    input_template=transformer.get("InputTemplate"),
                    input_paths_map=transformer.get("InputPathsMap", {}),
                    event=event,
                )
            with contextlib.suppress(KeyError, TypeError, ValueError):  # already ISO 8601, or absent
                event["time"] = iso_8601_datetime_without_milliseconds(utcfromtimestamp(float(event["time"])))
            arn = parse_arn(target["Arn"])
            sns_backends[arn.account][arn.region].publish(message=json.dumps(event), arn=target["Arn"])

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]
    _EVENTS_TO_SNS = True


_PARTITION_QUERIES = False


def query_one_partition() -> None:
    """Make moto's ``Query`` on a table (not an index) read only the partition it names; idempotent.

    moto 5 gathers and sorts every item of the table before it keeps those with the queried
    partition key, so a ``Query`` costs what the table holds (tens of milliseconds once a table has
    a few thousand items), where DynamoDB reads only the partition. Here the table's item listing
    is narrowed to that partition for the length of the query; moto's own key conditions, filters,
    paging and sorting still run. Index (GSI) queries are left as moto does them. A lock keeps two
    threads of the moto server from narrowing the same table at once.
    """
    global _PARTITION_QUERIES
    if _PARTITION_QUERIES:
        return
    import inspect
    import threading

    from moto.dynamodb.models.table import Table

    moto_query = Table.query
    lock = threading.RLock()
    signature = inspect.signature(moto_query)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = signature.bind(self, hash_key, *args, **kwargs).arguments.get("index_name")
        if index_name or hash_key is None or not self.range_key_attr:
            return moto_query(self, hash_key, *args, **kwargs)
        partition = list(self.items.get(hash_key, {}).values())
        with lock:
            self.all_items = lambda: sorted(partition, key=lambda item: item.range_key)
            try:
                return moto_query(self, hash_key, *args, **kwargs)
            finally:
                del self.all_items

    Table.query = query  # type: ignore[method-assign]
    _PARTITION_QUERIES = True


_CACHED_PATHS = False


def parse_event_paths_once() -> None:
    """Make moto's EventBridge parse each JSONPath of its input templates once, not per delivery; idempotent.

    moto renders every event it delivers through a template of eight JSONPaths and parses all eight
    again for every target of every event (about 1 ms each), so a ``PutEvents`` on a bus with a
    few rules costs more than the write it announces. The parsed paths are immutable; they are
    remembered by their text.
    """
    global _CACHED_PATHS
    if _CACHED_PATHS:
        return
    import functools

    import jsonpath_ng.ext

    jsonpath_ng.ext.parse = functools.lru_cache(maxsize=256)(jsonpath_ng.ext.parse)
    _CACHED_PATHS = True


def apply() -> None:
    """Every patch above (the embedded stack, the tests and the benchmarks use the same moto)."""
    sign_digests_like_kms()
    transact_writes_without_table_copies()
    deliver_events_to_sns_topics()
    query_one_partition()
    parse_event_paths_once()
