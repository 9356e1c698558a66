"""Tamper evidence for the audit trail: the signed hourly digests and the ``$verify`` walk.

**Digests.** Every hour (``ScheduleDef`` ``audit_digest``) :func:`digest_all` writes, per tenant, a
digest of the audit records recorded in ``[start, end)``: ``start`` is the previous digest's end, and
``end`` is the last whole hour at least :data:`SETTLE` ago (so writes still in flight are not cut).
It lists each hash chain's first and last seq, last hash and count, and the hash of the previous
digest, so digests form a chain of their own. The canonical JSON's SHA-256 is signed with the
dedicated KMS key (ECDSA P-256) and the object is put under ``<tenant>/audit-digests/<end>.json`` in
the Object Lock bucket (COMPLIANCE, ten years: ASTM E2147). A pointer item in the audit table
(``<tenant>#AUDIT-DIGEST``) names the latest digest; ``$verify`` never trusts it, only S3.
A run that finds the object already there (a retry after the pointer write failed) reuses it.

**Verify.** :func:`verify` lists the digests overlapping the requested period, checks each one's
signature against the configured key and the link to its predecessor, widens the period to the
digests' bounds, reads every record and patient-index copy there, and hands them to
:func:`expediente.audit_chain.walk`. Decision: docs/decisions/0022-tamper-evident-audit.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import audit, audit_chain, aws, tenants
from expediente.audit_chain import ChainHead, DigestPeriod, Finding, Walk
from expediente.context import TenantId
from expediente.errors import ServiceUnavailable, Unprocessable
from expediente.settings import settings

DIGEST_TYPE = "expediente.audit-digest"
PREFIX = "audit-digests"
PERIOD = timedelta(hours=1)
# Longer than any function's timeout (120 s at most): a record stamped before ``end`` has been written by then.
SETTLE = timedelta(minutes=5)
RETENTION = timedelta(days=10 * 365 + 3)  # ASTM E2147: at least ten years
ALGORITHM = "ECDSA_SHA_256"
# A walk reads at most this many records (one request, one Lambda): a longer period is asked in parts.
MAX_RECORDS = 50_000


class TooCostly(Unprocessable):
    """422 ``too-costly``: the period holds more records than one walk reads."""

    code = "too-costly"


def instant(moment: datetime) -> str:
    """An audit timestamp: UTC, milliseconds, ``Z`` (as ``audit.audit_items`` writes ``recorded``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def digest_key(tenant: str, end: str) -> str:
    """The S3 key of the digest ending at ``end``."""
    return f"{tenant}/{PREFIX}/{end}.json"


def digest_hash(body: dict[str, Any]) -> str:
    """Hex SHA-256 of the RFC 8785 canonical JSON of a digest body (what is signed)."""
    import rfc8785

    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def _pointer_partition(tenant: str) -> str:
    return f"{tenant}#AUDIT-DIGEST"


def _s3() -> Any:
    # Digest objects are tenant keys (<tenant>/audit-digests/...): the bucket is granted to the tenant data
    # role under the tenant's prefix (buckets_write, decision 0023), so calls go out with the tenant's
    # credentials; the digest signing key stays on the function's own role (infra/stacks/stateless.py).
    return aws.client("s3")


def _kms() -> Any:
    return aws.unscoped_client("kms")


def _query_all(**args: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Query, page after page (plain values)."""
    client = aws.client("dynamodb")
    while True:
        try:
            response = client.query(**args)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable("The audit trail is unavailable") from exc
        for item in response.get("Items", []):
            yield aws.from_item(item)
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        args["ExclusiveStartKey"] = last


def _records(tenant: str, partition: str, start: str, end: str) -> Iterator[dict[str, Any]]:
    """Items of ``partition`` recorded in ``[start, end)``: sort keys are ``<recorded>#<id>``, so
    ``BETWEEN start AND end`` never includes a key recorded exactly at ``end``."""
    return _query_all(TableName=settings().table_audit, KeyConditionExpression="pk = :pk AND sk BETWEEN :s AND :e",
                      ExpressionAttributeValues=aws.to_item({":pk": partition, ":s": start, ":e": end}))


# ------------------------------------------------------------------ digests (scheduled) ---


@dataclass(frozen=True)
class Written:
    """A digest the job wrote (or found already written)."""

    tenant: str
    key: str
    hash: str
    records: int
    chains: int


def _floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def latest_pointer(tenant: str) -> dict[str, Any] | None:
    """The pointer item of the tenant's latest digest, or None."""
    response = aws.client("dynamodb").query(
        TableName=settings().table_audit, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=aws.to_item({":pk": _pointer_partition(tenant)}), ScanIndexForward=False, Limit=1)
    items = response.get("Items", [])
    return aws.from_item(items[0]) if items else None


def summarize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Per-chain heads of a period's records (sorted by chain) and how many records had no chain."""
    heads: dict[str, dict[str, Any]] = {}
    unchained = 0
    for record in records:
        if record.get("chain") is None or record.get("seq") is None:
            unchained += 1
            continue
        seq = int(record["seq"])
        head = heads.setdefault(str(record["chain"]), {"chain": str(record["chain"]), "first_seq": seq,
                                                       "last_seq": seq, "last_hash": record.get("hash"), "count": 0})
        head["count"] += 1
        head["first_seq"] = min(head["first_seq"], seq)
        if seq >= head["last_seq"]:
            head["last_seq"], head["last_hash"] = seq, record.get("hash")
    return [heads[c] for c in sorted(heads)], unchained


def write_digest(tenant: str, *, now: datetime | None = None, end: str | None = None) -> Written | None:
    """Digest the tenant's records since its last digest; None when there is nothing new to digest.

    ``end`` overrides the period's end (the last whole hour at least :data:`SETTLE` before ``now``),
    for tests and for an operator closing a period by hand; it must not be in the future.
    Raises :class:`ServiceUnavailable` when DynamoDB, KMS or S3 fails (the next run retries).
    """
    moment = now or datetime.now(UTC)
    end = end or instant(_floor(moment - SETTLE))
    pointer = latest_pointer(tenant)
    start = str(pointer["end"]) if pointer else _first_recorded(tenant)
    if start is None or end <= start:
        return None
    records = list(_records(tenant, audit.audit_partition(TenantId(tenant)), start, end))
    if not records:
        return None  # the next digest starts at the same point: coverage stays contiguous
    chains, unchained = summarize(records)
    key = digest_key(tenant, end)
    cfg = settings()
    try:
        existing = _existing(cfg.bucket_audit_digests, key)
        if existing is None:
            key_id = _kms().get_public_key(KeyId=cfg.key_audit_digest_arn)["KeyId"]
            body = {"type": DIGEST_TYPE, "version": 1, "tenant": tenant, "start": start, "end": end,
                    "created": instant(moment), "records": len(records), "unchained": unchained, "chains": chains,
                    "previous": {"key": pointer["key"], "hash": pointer["hash"]} if pointer else None,
                    "key_id": key_id}
            hashed = digest_hash(body)
            signature = _kms().sign(KeyId=key_id, Message=bytes.fromhex(hashed), MessageType="DIGEST",
                                    SigningAlgorithm=ALGORITHM)["Signature"]
            document = {"digest": body, "hash": hashed, "algorithm": ALGORITHM,
                        "signature": base64.b64encode(signature).decode()}
            _s3().put_object(Bucket=cfg.bucket_audit_digests, Key=key, Body=json.dumps(document).encode(),
                             ContentType="application/json", ChecksumAlgorithm="SHA256",
                             ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=moment + RETENTION)
        else:
            hashed = str(existing["hash"])
        aws.client("dynamodb").put_item(
            TableName=cfg.table_audit, ConditionExpression="attribute_not_exists(pk)",
            Item=aws.to_item({"pk": _pointer_partition(tenant), "sk": end, "key": key, "hash": hashed,
                              "start": start, "end": end, "records": len(records), "chains": len(chains)}))
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The audit digest could not be written") from exc
    return Written(tenant, key, hashed, len(records), len(chains))


def _first_recorded(tenant: str) -> str | None:
    """When the tenant's first audit record was recorded (the first digest starts there), or None."""
    response = aws.client("dynamodb").query(
        TableName=settings().table_audit, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=aws.to_item({":pk": audit.audit_partition(TenantId(tenant))}), Limit=1)
    items = [aws.from_item(i) for i in response.get("Items", [])]
    return str(items[0]["recorded"]) if items else None


def _existing(bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if aws.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def digest_all(*, now: datetime | None = None,
               log: Callable[[str, dict[str, Any]], None] | None = None) -> list[Written]:
    """:func:`write_digest` for every registered tenant; one tenant's failure does not stop the others."""
    from expediente.context import tenant_scope

    written: list[Written] = []
    for tenant in tenants.registered_tenants():
        with tenant_scope(tenant):
            try:
                result = write_digest(tenant, now=now)
            except ServiceUnavailable:
                if log:
                    log("audit digest failed", {"tenant": tenant})
                continue
        if result is not None:
            written.append(result)
    return written


# ------------------------------------------------------------------ $verify ---


@dataclass
class Verification:
    """What :func:`verify` found: the walk, the digests and the window it covered."""

    walk: Walk
    start: str
    end: str
    digests: int = 0
    digested_through: str | None = None
    digest_findings: list[Finding] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [*self.digest_findings, *self.walk.findings]

    def count(self, kind: str) -> int:
        return sum(f.count for f in self.findings if f.kind == kind)


def _public_key(key_id: str) -> tuple[str, Any]:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    response = _kms().get_public_key(KeyId=key_id)
    return str(response["KeyId"]), load_der_public_key(response["PublicKey"])


def check_signature(document: dict[str, Any], *, key_arn: str, public_key: Any) -> str | None:
    """Why a digest object is not a genuine digest signed by ``key_arn``, or None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    body = document.get("digest")
    if not isinstance(body, dict) or body.get("type") != DIGEST_TYPE:
        return "it is not an audit digest"
    hashed = digest_hash(body)
    if document.get("hash") != hashed:
        return "its content does not match its hash"
    if body.get("key_id") != key_arn:
        return "it names a key other than the audit digest key"
    try:
        signature = base64.b64decode(str(document.get("signature")), validate=True)
        public_key.verify(signature, bytes.fromhex(hashed), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return "its signature does not verify"
    return None


def _digest_objects(tenant: str, start: str, end: str) -> Iterator[str]:
    """Keys of the digests whose period may overlap ``[start, end)``, in order (names sort by end)."""
    prefix = f"{tenant}/{PREFIX}/"
    args: dict[str, Any] = {"Bucket": settings().bucket_audit_digests, "Prefix": prefix,
                            "StartAfter": f"{prefix}{start}.json"}
    while True:
        response = _s3().list_objects_v2(**args)
        for entry in response.get("Contents", []):
            key = str(entry["Key"])
            yield key
            if key.removeprefix(prefix).removesuffix(".json") >= end:
                return
        if not response.get("IsTruncated"):
            return
        args["ContinuationToken"] = response["NextContinuationToken"]


def _load(key: str) -> dict[str, Any] | None:
    try:
        return _existing(settings().bucket_audit_digests, key)
    except ValueError:
        return {}


def verify_digests(tenant: str, start: str, end: str) -> tuple[list[DigestPeriod], list[Finding], str | None]:
    """The verified digests overlapping ``[start, end)``, findings about the others, and where coverage ends."""
    key_arn, public_key = _public_key(settings().key_audit_digest_arn)
    findings: list[Finding] = []
    periods: list[DigestPeriod] = []
    previous: tuple[str, str] | None = None  # (key, hash) of the last genuine digest seen
    for key in _digest_objects(tenant, start, end):
        document = _load(key) or {}
        problem = check_signature(document, key_arn=key_arn, public_key=public_key)
        body = document.get("digest") or {}
        if problem is None and (body.get("tenant") != tenant or digest_key(tenant, str(body.get("end"))) != key):
            problem = "its tenant or period does not match where it is stored"
        if problem is not None:
            findings.append(Finding(audit_chain.ALTERED, f"digest {key}: {problem}"))
            continue
        link = body.get("previous")
        if previous is None and link:
            before = _load(str(link.get("key"))) if str(link.get("key", "")).startswith(f"{tenant}/") else None
            if not before:
                findings.append(Finding(audit_chain.DELETED, f"digest {key}: the digest before it "
                                                             f"({link.get('key')}) is missing"))
            elif (check_signature(before, key_arn=key_arn, public_key=public_key)
                  or before.get("hash") != link.get("hash")):
                findings.append(Finding(audit_chain.ALTERED, f"digest {key}: the digest before it does not match "
                                                             "the hash it holds"))
        elif previous is not None and (not link or (link.get("key"), link.get("hash")) != previous):
            findings.append(Finding(audit_chain.ALTERED, f"digest {key}: it does not follow the digest before it "
                                                         f"({previous[0]})"))
        previous = (key, str(document["hash"]))
        periods.append(DigestPeriod(str(body["start"]), str(body["end"]), tuple(
            ChainHead(str(c["chain"]), int(c["first_seq"]), int(c["last_seq"]), str(c["last_hash"]), int(c["count"]))
            for c in body.get("chains") or []), first=not link))
    through = periods[-1].end if periods else None
    return periods, findings, through


def verify(tenant: str, start: str, end: str) -> Verification:
    """Re-walk the tenant's audit trail over ``[start, end)`` (widened to whole digests).

    Raises :class:`TooCostly` (422) when the period holds more than :data:`MAX_RECORDS` records, and
    :class:`ServiceUnavailable` when DynamoDB, S3 or KMS fails.
    """
    try:
        periods, digest_findings, through = verify_digests(tenant, start, end)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The audit digests are unavailable") from exc
    overlapping = [p for p in periods if p.start < end and p.end > start]
    low = min([start, *(p.start for p in overlapping)])
    high = max([end, *(p.end for p in overlapping)])
    records = []
    for record in _records(tenant, audit.audit_partition(TenantId(tenant)), low, high):
        records.append(record)
        if len(records) > MAX_RECORDS:
            raise TooCostly(f"The period holds more than {MAX_RECORDS} audit records; verify it in shorter parts",
                            expression="start")
    copies = list(_records(tenant, f"{tenant}{audit_chain.COPY_SUFFIX}", low, high))

    def predecessor(chain: str, seq: int) -> dict[str, Any] | None:
        found = list(_query_all(
            TableName=settings().table_audit, IndexName=audit_chain.CHAIN_INDEX,
            KeyConditionExpression="gsi3pk = :pk AND gsi3sk = :sk",
            ExpressionAttributeValues=aws.to_item({":pk": audit_chain.chain_partition(tenant, chain),
                                                   ":sk": audit_chain.seq_key(seq)})))
        return found[0] if found else None

    walk = audit_chain.walk(records, copies=copies, predecessor=predecessor, digests=overlapping,
                            chain_key=_chain_keys(tenant, records, predecessor),
                            agent=lambda t, user: audit.agent_partition(TenantId(t), user),
                            patient=lambda t, patient: audit.patient_partition(TenantId(t), patient))
    return Verification(walk, low, high, len(periods), through, digest_findings)


def _chain_keys(tenant: str, records: list[dict[str, Any]],
                predecessor: Callable[[str, int], dict[str, Any] | None]) -> audit_chain.KeyReader:
    """Each chain's key, unwrapped once with KMS from the chain's first record (in the period, else read by the
    ``by_chain`` index). The encryption context names the tenant and the chain, so only a key KMS made for this
    very chain unwraps: a first record forged or copied from another chain gives no key (its records are then
    reported altered). Raises :class:`ServiceUnavailable` when KMS cannot be reached."""
    firsts: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("seq") == 1 and record.get("chain"):
            firsts.setdefault(str(record["chain"]), []).append(record)
    keys: dict[str, bytes | None] = {}
    kms = aws.client("kms")

    def unwrap(chain: str, first: dict[str, Any]) -> bytes | None:
        wrapped = audit_chain.wrapped_key(first)
        if wrapped is None:
            return None
        try:
            response = kms.decrypt(CiphertextBlob=wrapped, KeyId=settings().key_app_arn,
                                   EncryptionContext=audit_chain.key_context(tenant, chain))
        except ClientError as exc:
            if aws.error_code(exc) in ("InvalidCiphertextException", "IncorrectKeyException"):
                return None
            raise ServiceUnavailable("The audit trail's keys are unavailable") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable("The audit trail's keys are unavailable") from exc
        return bytes(response["Plaintext"])

    def chain_key(chain: str) -> bytes | None:
        if chain not in keys:
            candidates = firsts.get(chain) or [r for r in (predecessor(chain, 1),) if r is not None]
            keys[chain] = next((k for k in (unwrap(chain, c) for c in candidates) if k is not None), None)
        return keys[chain]

    return chain_key


def as_parameters(result: Verification, *, requested: tuple[str, str]) -> dict[str, Any]:
    """The ``$verify`` answer as a FHIR ``Parameters`` resource."""
    walk = result.walk
    parts: list[dict[str, Any]] = [
        {"name": "result", "valueBoolean": not result.findings},
        {"name": "start", "valueInstant": requested[0]},
        {"name": "end", "valueInstant": requested[1]},
        {"name": "windowStart", "valueInstant": result.start},
        {"name": "windowEnd", "valueInstant": result.end},
        {"name": "recordsVerified", "valueInteger": walk.records},
        {"name": "chainsVerified", "valueInteger": walk.chains},
        {"name": "copiesVerified", "valueInteger": walk.copies},
        {"name": "digestsVerified", "valueInteger": result.digests},
        {"name": "altered", "valueInteger": result.count(audit_chain.ALTERED)},
        {"name": "inserted", "valueInteger": result.count(audit_chain.INSERTED)},
        {"name": "deleted", "valueInteger": result.count(audit_chain.DELETED)},
    ]
    if result.digested_through:
        parts.append({"name": "digestedThrough", "valueInstant": result.digested_through})
    for finding in result.findings:
        part: list[dict[str, Any]] = [{"name": "kind", "valueCode": finding.kind},
                                      {"name": "detail", "valueString": finding.detail},
                                      {"name": "count", "valueInteger": finding.count}]
        if finding.chain:
            part.append({"name": "chain", "valueString": finding.chain})
        if finding.seq is not None:
            part.append({"name": "seq", "valueInteger": int(finding.seq)})
        if finding.record_id:
            part.append({"name": "record", "valueReference": {"reference": f"AuditEvent/{finding.record_id}"}})
        if finding.recorded:
            part.append({"name": "recorded", "valueInstant": finding.recorded})
        parts.append({"name": "finding", "part": part})
    return {"resourceType": "Parameters", "parameter": parts}
