"""Where moto differs from AWS in a way Expediente depends on, made to behave like AWS.

KMS ``Sign`` with ``MessageType=DIGEST``: real KMS signs the given SHA-256 digest as is; moto
5 hashes it again, so its signatures would not verify against the public key (and the signing
service refuses to store them). The embedded stack and the tests sign digests as KMS does.
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


def apply() -> None:
    """Every patch above (the embedded stack, the tests and the benchmarks use the same moto)."""
    sign_digests_like_kms()
    transact_writes_without_table_copies()
