"""Hash chains over the audit trail: sealing records as they are written, and walking them back.

Every writer (a Lambda container, or one thread of the local stack) keeps, per tenant, one open
*chain*: a random ``chain`` id, the ``seq`` of its last written record, that record's ``hash`` and
the chain's *key*. A record is sealed just before it is sent: it gets ``chain``, ``seq`` = last + 1,
``prev`` = the last record's hash (:data:`GENESIS` for ``seq`` 1), ``alg`` = :data:`ALG` and ``hash`` =
HMAC-SHA256, under the chain's key, of the RFC 8785 canonical JSON of everything the record holds except
its keys and index keys (:func:`content_hash`). The key is a fresh 256-bit KMS data key made when the
chain opens (``KeyMaker``; the app key, encryption context ``tenant``, ``purpose=audit-chain`` and the
chain id); its KMS-wrapped copy travels in the chain's first record (``chain_key``), so a verifier with
KMS access to the tenant recomputes every hash, and someone who can write the table but not use the key
cannot append, alter or insert a record that verifies (decision 0029 closes the window decision 0022
left open until the next digest; trimming a chain's tail still waits for the digest). The
head advances only once the write is known to have succeeded (:meth:`Seal.confirm`); a failed or
unknown write abandons the chain (:meth:`Seal.abandon`) and the next record opens a new one, so a
sequence number is never written twice with different content (no forks). There is no shared head
and no extra read or write: sealing is in-memory, and the records travel in the same request as
before.

Patient-index copies (one per patient of a multi-patient request) carry the main record's chain
fields and hash; they are not chain members themselves (no ``by_chain`` index key).

:func:`walk` re-checks a period: recomputes every hash, follows each chain by ``seq``, and reports
what was altered, inserted or deleted. It is pure; the caller fetches records, predecessors and
signed digests (``functions/admin/audit_integrity.py``). Decision: docs/decisions/0022-tamper-evident-audit.md.

Chain state lives in :class:`threading.local` and is created on the first write, never at import
time: a SnapStart snapshot therefore holds no open chain that restored copies would share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any, Final

GENESIS: Final = "0" * 64
# The MAC every record is sealed with (HMAC-SHA256 under its chain's key).
ALG: Final = "HS256"
# Attributes the hash does not cover: the hash itself, and the keys (checked against the content instead).
KEY_ATTRIBUTES: Final = frozenset({"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk"})
CHAIN_ATTRIBUTES: Final = ("chain", "seq", "prev", "alg", "hash", "chain_key")
# The KMS encryption context purpose of chain keys.
KEY_PURPOSE: Final = "audit-chain"

AUDIT_SUFFIX: Final = "#AUDIT"
COPY_SUFFIX: Final = "#AUDIT#PATIENT-INDEX"
CHAIN_INDEX: Final = "by_chain"
SEQ_DIGITS: Final = 12

# (tenant, chain id) -> (the chain's key, its KMS-wrapped copy to store in the first record).
KeyMaker = Callable[[str, str], tuple[bytes, bytes]]
# chain id -> the chain's key, or None when it cannot be read (its first record missing or altered).
KeyReader = Callable[[str], bytes | None]


def key_context(tenant: str, chain: str) -> dict[str, str]:
    """The KMS encryption context of a chain's key."""
    return {"tenant": tenant, "purpose": KEY_PURPOSE, "chain": chain}


def kms_key_maker(kms: Any, key_id: str) -> KeyMaker:
    """A :data:`KeyMaker` over a KMS client: one ``GenerateDataKey`` (AES-256) per chain opened."""

    def make(tenant: str, chain: str) -> tuple[bytes, bytes]:
        response = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=key_context(tenant, chain))
        return bytes(response["Plaintext"]), bytes(response["CiphertextBlob"])

    return make


def wrapped_key(first: Mapping[str, Any]) -> bytes | None:
    """The wrapped chain key a chain's first record carries (plain values), or None."""
    value = first.get("chain_key")
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def chain_partition(tenant: str, chain: str) -> str:
    """The ``by_chain`` index partition of one chain (``gsi3pk``)."""
    return f"{tenant}#CHAIN#{chain}"


def seq_key(seq: int) -> str:
    """The ``by_chain`` index sort key of a sequence number (``gsi3sk``: zero-padded, sorts as a number)."""
    return f"{seq:0{SEQ_DIGITS}d}"


def plain(value: Any) -> Any:
    """DynamoDB-deserialized values as JSON values (``Decimal`` → ``int``; sets → sorted lists)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    return value


def content_hash(record: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256, under the chain's ``key``, of the canonical JSON of ``record`` (plain values) without
    ``hash`` and key attributes.

    The chain fields ``chain``, ``seq``, ``prev``, ``alg`` and ``chain_key`` are covered, so a record cannot
    be moved within or between chains. ``None`` values are left out, as DynamoDB stores them (not at all).
    """
    import rfc8785  # loaded on the first audit write, not at handler import (tests/unit/common/test_cold_path.py)

    content = {k: plain(v) for k, v in record.items()
               if k != "hash" and k not in KEY_ATTRIBUTES and v is not None}
    return hmac.new(key, rfc8785.dumps(content), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ sealing (write side) ---


@dataclass(frozen=True)
class Head:
    """The last confirmed record of a chain, and the chain's key."""

    chain: str
    seq: int
    hash: str
    key: bytes = field(repr=False, default=b"")


class _State(threading.local):
    def __init__(self) -> None:
        self.heads: dict[str, Head] = {}
        self.opened = 0  # chains opened by this thread (for tests and metrics)


_state = _State()


def reset() -> None:
    """Forget this thread's chains (tests; a new moto world must not continue an old chain)."""
    _state.heads.clear()


def heads() -> dict[str, Head]:
    """This thread's open chains by tenant (a copy)."""
    return dict(_state.heads)


def chains_opened() -> int:
    """How many chains this thread has opened."""
    return _state.opened


@dataclass
class Seal:
    """Chain heads a write will leave behind if it succeeds. ``confirm`` after success; ``abandon`` otherwise.

    Used as a context manager around the write, it does exactly that: confirms when the block ends
    normally, abandons when anything is raised (and lets it propagate).
    """

    pending: dict[str, Head] = field(default_factory=dict)

    def __enter__(self) -> Seal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.confirm()
        else:
            self.abandon()

    def confirm(self) -> None:
        """The write succeeded: its last record of each tenant becomes that chain's head."""
        _state.heads.update(self.pending)

    def abandon(self) -> None:
        """The write failed or its outcome is unknown: close the chains it used (new ones open next time)."""
        for tenant in self.pending:
            _state.heads.pop(tenant, None)


def _serializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def _kind(item: Mapping[str, Any]) -> str | None:
    pk = item.get("pk")
    text = pk.get("S") if isinstance(pk, dict) else None
    if not isinstance(text, str):
        return None
    if text.endswith(COPY_SUFFIX):
        return "copy"
    if text.endswith(AUDIT_SUFFIX):
        return "record"
    return None


def seal_items(items: Sequence[dict[str, Any]], *, new_key: KeyMaker) -> Seal:
    """Stamp chain fields on the audit items among ``items`` (DynamoDB-typed, changed in place).

    Records (partition ``<tenant>#AUDIT``) are chained in order; patient-index copies get their
    record's chain fields (matched by ``id``). Other items are left alone. ``new_key`` makes the key of
    a chain this writer opens (whatever it raises propagates; no item has been changed then). Returns the
    :class:`Seal` to confirm or abandon once the write's outcome is known.
    """
    serializer, deserializer = _serializer()
    seal = Seal()
    sealed: dict[str, dict[str, Any]] = {}
    copies: list[dict[str, Any]] = []
    for item in items:
        kind = _kind(item)
        if kind == "copy":
            copies.append(item)
            continue
        if kind != "record":
            continue
        values = {k: deserializer.deserialize(v) for k, v in item.items() if k not in CHAIN_ATTRIBUTES}
        tenant = str(values.get("tenant") or str(values["pk"]).removesuffix(AUDIT_SUFFIX))
        head = seal.pending.get(tenant) or _state.heads.get(tenant)
        fields: dict[str, Any] = {}
        if head is None:
            chain = str(uuid.uuid4())
            key, wrapped = new_key(tenant, chain)
            head = Head(chain, 0, GENESIS, key)
            fields["chain_key"] = base64.b64encode(wrapped).decode()
            _state.opened += 1
        fields.update({"chain": head.chain, "seq": head.seq + 1, "prev": head.hash, "alg": ALG})
        digest = content_hash({**values, **fields}, head.key)
        fields["hash"] = digest
        seal.pending[tenant] = Head(head.chain, head.seq + 1, digest, head.key)
        stamped = {**fields, "gsi3pk": chain_partition(tenant, head.chain), "gsi3sk": seq_key(head.seq + 1)}
        item.update({k: serializer.serialize(v) for k, v in stamped.items()})
        sealed[str(values["id"])] = fields
    for item in copies:
        own = sealed.get(str(item.get("id", {}).get("S")))
        if own is not None:
            item.update({k: serializer.serialize(v) for k, v in own.items()})
    return seal


def seal_transaction(elements: Sequence[dict[str, Any]], *, new_key: KeyMaker) -> Seal:
    """:func:`seal_items` over the ``Put`` items of ``TransactWriteItems`` elements."""
    return seal_items([e["Put"]["Item"] for e in elements if isinstance(e.get("Put"), dict) and "Item" in e["Put"]],
                      new_key=new_key)


# ------------------------------------------------------------------ walking (verify side) ---


ALTERED: Final = "altered"
INSERTED: Final = "inserted"
DELETED: Final = "deleted"


@dataclass(frozen=True)
class Finding:
    """One problem found: ``kind`` is altered, inserted or deleted."""

    kind: str
    detail: str
    chain: str | None = None
    seq: int | None = None
    record_id: str | None = None
    recorded: str | None = None
    count: int = 1  # records concerned (a gap of three deleted records is one finding of count 3)


@dataclass(frozen=True)
class ChainHead:
    """What a signed digest says about one chain within its period."""

    chain: str
    first_seq: int
    last_seq: int
    last_hash: str
    count: int


@dataclass(frozen=True)
class DigestPeriod:
    """A verified digest's period ``[start, end)`` and its chain heads."""

    start: str
    end: str
    chains: tuple[ChainHead, ...]
    # The tenant's first digest (no previous one) starts at its first record: nothing may be older.
    first: bool = False


@dataclass
class Walk:
    """The outcome of :func:`walk`."""

    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    copies: int = 0
    chains: int = 0

    def count(self, kind: str) -> int:
        return sum(f.count for f in self.findings if f.kind == kind)


Predecessor = Callable[[str, int], Mapping[str, Any] | None]


def expected_keys(record: Mapping[str, Any], *, agent: Callable[[str, str], str],
                  patient: Callable[[str, str], str]) -> dict[str, str | None]:
    """The keys a record's content implies (``None``: the attribute must be absent)."""
    tenant, sort_key = str(record.get("tenant")), f"{record.get('recorded')}#{record.get('id')}"
    patients = list(record.get("patient_ids") or [])
    chained = record.get("chain") is not None
    return {
        "pk": f"{tenant}{AUDIT_SUFFIX}", "sk": sort_key,
        "gsi2pk": agent(tenant, str(record.get("user_id"))), "gsi2sk": sort_key,
        "gsi1pk": patient(tenant, str(patients[0])) if len(patients) == 1 else None,
        "gsi1sk": sort_key if len(patients) == 1 else None,
        "gsi3pk": chain_partition(tenant, str(record.get("chain"))) if chained else None,
        "gsi3sk": seq_key(int(record["seq"])) if chained and record.get("seq") is not None else None,
    }


def _sealed(record: Mapping[str, Any], chain_key: KeyReader) -> str | None:
    """Why ``record``'s hash is not its chain's MAC of its content, or None."""
    if record.get("alg") != ALG:
        return "it is not sealed with its chain's key"
    key = chain_key(str(record.get("chain")))
    if key is None:
        return "its chain's key cannot be read (the chain's first record is missing or altered)"
    if record.get("hash") != content_hash(record, key):
        return "its content does not match its hash"
    return None


def _valid(record: Mapping[str, Any], keys: Mapping[str, str | None], chain_key: KeyReader) -> str | None:
    """Why ``record`` (plain values) is not what was sealed, or None."""
    problem = _sealed(record, chain_key)
    if problem:
        return problem
    wrong = sorted(k for k, v in keys.items() if record.get(k) != v)
    if wrong:
        return f"its keys do not match its content ({', '.join(wrong)})"
    return None


def walk(records: Iterable[Mapping[str, Any]], *, copies: Iterable[Mapping[str, Any]] = (),
         predecessor: Predecessor, chain_key: KeyReader, digests: Sequence[DigestPeriod] = (),
         agent: Callable[[str, str], str], patient: Callable[[str, str], str]) -> Walk:
    """Check every record of a period (plain values, the tenant's partition), its chains and its digests.

    ``predecessor(chain, seq)`` returns the stored record of that chain and seq (outside the period),
    or None. ``chain_key(chain)`` returns the chain's key (unwrapped from its first record), or None.
    ``digests`` are signed digests already verified by the caller, whose periods the records fully
    cover. Reports altered records (hash or keys do not match the content, or the next
    record of the chain holds another hash), inserted ones (no chain, a repeated seq, a chain or seq
    a digest does not list) and deleted ones (seq gaps, a missing predecessor, fewer records than a
    digest counts, a missing patient-index copy).
    """
    result = Walk()
    by_chain: dict[str, list[Mapping[str, Any]]] = {}
    by_id: dict[str, Mapping[str, Any]] = {}
    broken: set[int] = set()
    for record in records:
        result.records += 1
        record_id = str(record.get("id"))
        by_id[record_id] = record
        if record.get("chain") is None or record.get("seq") is None:
            result.findings.append(Finding(INSERTED, "the record belongs to no chain", record_id=record_id,
                                           recorded=record.get("recorded")))
            continue
        problem = _valid(record, expected_keys(record, agent=agent, patient=patient), chain_key)
        if problem:
            broken.add(id(record))
            result.findings.append(Finding(ALTERED, problem, str(record["chain"]), int(record["seq"]), record_id,
                                           record.get("recorded")))
        by_chain.setdefault(str(record["chain"]), []).append(record)
    result.chains = len(by_chain)
    members: dict[str, dict[int, Mapping[str, Any]]] = {}
    for chain, chained in by_chain.items():
        members[chain] = _walk_chain(chain, chained, predecessor, chain_key, broken, result.findings)
    for digest in digests:
        _check_digest(digest, members, result.findings)
    origin = next((d.start for d in digests if d.first), None)
    if origin is not None:
        for record_id, record in by_id.items():
            if str(record.get("recorded")) < origin and record.get("chain") is not None:  # unchained: reported
                result.findings.append(Finding(INSERTED, f"recorded before the trail's first record ({origin})",
                                               record.get("chain"), record.get("seq"), record_id,
                                               record.get("recorded")))
    _check_copies(copies, by_id, result, patient, chain_key)
    return result


def _walk_chain(chain: str, chained: list[Mapping[str, Any]], predecessor: Predecessor, chain_key: KeyReader,
                broken: set[int], findings: list[Finding]) -> dict[int, Mapping[str, Any]]:
    """Walk one chain by seq; returns the record kept for each seq (duplicates dropped)."""
    kept: dict[int, Mapping[str, Any]] = {}
    for record in sorted(chained, key=lambda r: (int(r["seq"]), id(r) in broken)):
        seq = int(record["seq"])
        if seq in kept:
            findings.append(Finding(INSERTED, f"seq {seq} of this chain is already taken by record "
                                              f"{kept[seq].get('id')}", chain, seq, str(record.get("id")),
                                    record.get("recorded")))
            continue
        kept[seq] = record
    ordered = sorted(kept.items())
    first_seq, first = ordered[0]
    if first_seq == 1:
        if first.get("prev") != GENESIS:
            findings.append(Finding(ALTERED, "the first record of the chain does not start from the genesis value",
                                    chain, 1, str(first.get("id")), first.get("recorded")))
    else:
        before = predecessor(chain, first_seq - 1)
        if before is None:
            findings.append(Finding(DELETED, f"seq {first_seq - 1}, before the period, is missing", chain,
                                    first_seq - 1, count=1))
        elif _sealed(before, chain_key) or first.get("prev") != before.get("hash"):
            findings.append(Finding(ALTERED, f"the link from seq {first_seq - 1} (before the period) is broken",
                                    chain, first_seq - 1, str(before.get("id")), before.get("recorded")))
    for (seq_a, a), (seq_b, b) in pairwise(ordered):
        if seq_b != seq_a + 1:
            missing = seq_b - seq_a - 1
            findings.append(Finding(DELETED, f"seq {seq_a + 1}..{seq_b - 1} of this chain are missing", chain,
                                    seq_a + 1, count=missing))
        elif b.get("prev") != a.get("hash") and id(a) not in broken and id(b) not in broken:
            findings.append(Finding(ALTERED, f"the next record (seq {seq_b}) holds another hash for this one: "
                                             "it was replaced", chain, seq_a, str(a.get("id")), a.get("recorded")))
    return kept


def _check_digest(digest: DigestPeriod, members: Mapping[str, Mapping[int, Mapping[str, Any]]],
                  findings: list[Finding]) -> None:
    listed = {head.chain: head for head in digest.chains}
    for chain, kept in members.items():
        inside = {seq: r for seq, r in kept.items() if digest.start <= str(r.get("recorded")) < digest.end}
        head = listed.get(chain)
        if head is None:
            for seq, record in sorted(inside.items()):
                findings.append(Finding(INSERTED, f"chain not in the signed digest ending {digest.end}", chain, seq,
                                        str(record.get("id")), record.get("recorded")))
            continue
        for seq, record in sorted(inside.items()):
            if not head.first_seq <= seq <= head.last_seq:
                findings.append(Finding(INSERTED, f"seq outside {head.first_seq}..{head.last_seq}, what the signed "
                                                  f"digest ending {digest.end} lists", chain, seq,
                                        str(record.get("id")), record.get("recorded")))
        last = kept.get(head.last_seq)
        if last is None:
            findings.append(Finding(DELETED, f"the last record the signed digest ending {digest.end} lists is "
                                             "missing", chain, head.last_seq))
        elif last.get("hash") != head.last_hash:
            findings.append(Finding(ALTERED, f"the hash differs from the signed digest ending {digest.end}", chain,
                                    head.last_seq, str(last.get("id")), last.get("recorded")))
    for chain, head in listed.items():
        if chain not in members:
            findings.append(Finding(DELETED, f"every record of this chain in the signed digest ending {digest.end} is "
                                             "missing", chain, head.first_seq, count=head.count))


def _check_copies(copies: Iterable[Mapping[str, Any]], by_id: Mapping[str, Mapping[str, Any]], result: Walk,
                  patient: Callable[[str, str], str], chain_key: KeyReader) -> None:
    seen: set[tuple[str, str]] = set()
    for copy in copies:
        result.copies += 1
        record_id = str(copy.get("id"))
        main = by_id.get(record_id)
        target = str(copy.get("sk", "")).rsplit("#", 1)[-1]
        seen.add((record_id, target))
        if main is None:
            result.findings.append(Finding(INSERTED, "a patient-index copy of a record that is not in the trail",
                                           record_id=record_id, recorded=copy.get("recorded")))
            continue
        wrong = (_sealed(copy, chain_key) is not None or copy.get("hash") != main.get("hash")
                 or target not in (main.get("patient_ids") or [])
                 or copy.get("gsi1pk") != patient(str(main.get("tenant")), target))
        if wrong:
            result.findings.append(Finding(ALTERED, f"the patient-index copy for Patient/{target} differs from its "
                                                    "record", copy.get("chain"), copy.get("seq"), record_id,
                                           copy.get("recorded")))
    for record_id, main in by_id.items():
        patients = list(main.get("patient_ids") or [])
        if len(patients) < 2 or main.get("chain") is None:
            continue
        for patient_id in dict.fromkeys(patients):
            if (record_id, str(patient_id)) not in seen:
                result.findings.append(Finding(DELETED, f"the patient-index copy for Patient/{patient_id} is missing",
                                               main.get("chain"), main.get("seq"), record_id, main.get("recorded")))
