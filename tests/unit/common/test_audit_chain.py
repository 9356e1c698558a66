"""The audit hash chain: sealing at write time and the walk that finds altered, inserted and deleted records."""

from __future__ import annotations

import hashlib
import threading
from decimal import Decimal
from typing import Any

import pytest

from expediente import audit, audit_chain, aws
from expediente.audit import Action, AuditEntry
from expediente.audit_chain import GENESIS, ChainHead, DigestPeriod, content_hash
from expediente.context import RequestContext, TenantId
from expediente.permissions import Role

TENANT = "red-a"


def chain_key(chain: str) -> bytes:
    """The test's stand-in for a chain's KMS data key: derived from the chain id."""
    return hashlib.sha256(f"test chain key {chain}".encode()).digest()


def new_key(tenant: str, chain: str) -> tuple[bytes, bytes]:
    """The test's stand-in for KMS GenerateDataKey: the key, and a "wrapped" copy that names it."""
    return chain_key(chain), f"wrapped:{tenant}:{chain}".encode()


def mac(record: dict[str, Any]) -> str:
    """The hash a writer holding the chain's key computes (an attacker with KMS access, for the structure tests)."""
    return content_hash(record, chain_key(str(record["chain"])))


@pytest.fixture(autouse=True)
def fresh_chains() -> None:
    audit_chain.reset()


def _ctx(tenant: str = TENANT, user: str = "u-1") -> RequestContext:
    return RequestContext(tenant=TenantId(tenant), user_id=user, username=f"user-{user}",
                          roles=frozenset({Role.AUDITOR}), clinic_ids=("HGIMB000151",), clinic="HGIMB000151",
                          practitioner_id=None, patient_id=None, request_id="req-1", source_ip="10.0.0.1",
                          user_agent="pytest")


def _write(n: int, *, patients: tuple[str, ...] = ("p-1",), tenant: str = TENANT) -> list[dict[str, Any]]:
    """``n`` sealed and confirmed records, as plain values (what a Query returns)."""
    out = []
    for _ in range(n):
        items = audit.audit_items(_ctx(tenant), AuditEntry("Patient", Action.READ, "p-1", patients, 200))
        audit_chain.seal_items(items, new_key=new_key).confirm()
        out += [aws.from_item(i) for i in items]
    return out


def _walk(records: list[dict[str, Any]], *, copies: list[dict[str, Any]] = (),  # type: ignore[assignment]
          before: dict[tuple[str, int], dict[str, Any]] | None = None,
          digests: tuple[DigestPeriod, ...] = (),
          keys: audit_chain.KeyReader = chain_key) -> audit_chain.Walk:
    return audit_chain.walk(records, copies=copies, predecessor=lambda c, s: (before or {}).get((c, s)),
                            digests=digests, chain_key=keys,
                            agent=lambda t, u: audit.agent_partition(TenantId(t), u),
                            patient=lambda t, p: audit.patient_partition(TenantId(t), p))


def test_records_of_one_writer_form_a_chain_from_genesis():
    records = _write(3)
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert len({r["chain"] for r in records}) == 1
    assert records[0]["prev"] == GENESIS
    assert records[1]["prev"] == records[0]["hash"] and records[2]["prev"] == records[1]["hash"]
    assert all(r["hash"] == mac(r) and r["alg"] == "HS256" for r in records)
    assert records[0]["chain_key"] and all("chain_key" not in r for r in records[1:])  # the wrapped key, once
    assert records[2]["gsi3pk"] == f"{TENANT}#CHAIN#{records[0]['chain']}" and records[2]["gsi3sk"] == "000000000003"


def test_hash_survives_the_dynamodb_round_trip_of_numbers():
    record = _write(1)[0]
    as_decimal = {**record, "seq": Decimal(record["seq"]), "status": Decimal(200)}
    assert mac(as_decimal) == record["hash"]


def test_hash_covers_every_content_field_but_not_the_keys():
    record = _write(1)[0]
    assert mac({**record, "sk": "moved"}) == record["hash"]
    for name in ("user_id", "action", "status", "patient_ids", "prev", "seq", "recorded", "alg", "chain_key"):
        assert mac({**record, name: "x"}) != record["hash"], name
    assert content_hash(record, b"another key") != record["hash"]


def test_a_failed_write_abandons_the_chain_and_the_next_record_opens_a_new_one():
    first = _write(2)
    items = audit.audit_items(_ctx(), AuditEntry("Patient", Action.UPDATE, "p-1", ("p-1",), 200))
    seal = audit_chain.seal_items(items, new_key=new_key)
    assert aws.from_item(items[0])["seq"] == 3
    seal.abandon()  # the transaction failed, or its outcome is unknown
    after = _write(1)
    assert after[0]["chain"] != first[0]["chain"] and after[0]["seq"] == 1 and after[0]["prev"] == GENESIS


def test_an_unconfirmed_seal_never_reuses_a_sequence_number_after_abandon():
    _write(1)
    items = audit.audit_items(_ctx(), AuditEntry("Patient", Action.READ, "p-1", ("p-1",), 200))
    audit_chain.seal_items(items, new_key=new_key).abandon()
    again = audit.audit_items(_ctx(), AuditEntry("Patient", Action.READ, "p-1", ("p-1",), 200))
    audit_chain.seal_items(again, new_key=new_key).confirm()
    lost, kept = aws.from_item(items[0]), aws.from_item(again[0])
    assert (lost["chain"], lost["seq"]) != (kept["chain"], kept["seq"])


def test_two_records_in_one_transaction_are_consecutive():
    ctx = _ctx()
    puts = [*audit.audit_puts(ctx, AuditEntry("Organization", Action.CREATE, "o-1", status=201), table="t"),
            {"Put": {"TableName": "other", "Item": aws.to_item({"pk": "x", "sk": "y"})}},
            *audit.audit_puts(ctx, AuditEntry("User", Action.CREATE, "admin", status=201), table="t")]
    audit_chain.seal_transaction(puts, new_key=new_key).confirm()
    sealed = [aws.from_item(p["Put"]["Item"]) for p in puts]
    assert [r.get("seq") for r in sealed] == [1, None, 2]
    assert sealed[2]["prev"] == sealed[0]["hash"]
    assert audit_chain.heads()[TENANT].seq == 2


def test_each_tenant_has_its_own_chain():
    a = _write(1, tenant="red-a")
    b = _write(1, tenant="red-b")
    assert a[0]["chain"] != b[0]["chain"] and a[0]["seq"] == b[0]["seq"] == 1


def test_patient_index_copies_carry_the_record_hash_and_are_not_chain_members():
    written = _write(1, patients=("p-1", "p-2"))
    record, copies = written[0], written[1:]
    assert len(copies) == 2
    assert all(c["hash"] == record["hash"] == mac(c) for c in copies)
    assert all("gsi3pk" not in c for c in copies)


def test_threads_keep_separate_chains():
    results: dict[str, list[dict[str, Any]]] = {}

    def run(name: str) -> None:
        results[name] = _write(20)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"][0]["chain"] != results["b"][0]["chain"]
    walk = _walk(results["a"] + results["b"])
    assert walk.findings == [] and walk.chains == 2 and walk.records == 40


# ------------------------------------------------------------------ the walk ---


def test_a_clean_period_has_no_findings():
    records = _write(5)
    walk = _walk(records)
    assert walk.findings == [] and walk.records == 5 and walk.chains == 1


def test_an_altered_record_is_reported_as_altered():
    records = _write(4)
    records[1] = {**records[1], "user_id": "someone-else"}
    walk = _walk(records)
    assert [(f.kind, f.seq) for f in walk.findings] == [("altered", 2)]


def test_a_record_rehashed_after_alteration_breaks_the_next_link():
    records = _write(4)
    forged = {**records[1], "action": "search-type"}
    forged["hash"] = mac(forged)
    records[1] = forged
    walk = _walk(records)
    assert [(f.kind, f.seq) for f in walk.findings] == [("altered", 2)]
    assert "replaced" in walk.findings[0].detail


def test_a_record_moved_to_another_patient_index_is_altered():
    records = _write(2)
    records[0] = {**records[0], "gsi1pk": audit.patient_partition(TenantId(TENANT), "p-9")}
    walk = _walk(records)
    assert [(f.kind, f.seq) for f in walk.findings] == [("altered", 1)]
    assert "gsi1pk" in walk.findings[0].detail


def test_a_deleted_record_is_a_gap():
    records = _write(5)
    del records[2]
    walk = _walk(records)
    assert [(f.kind, f.seq, f.count) for f in walk.findings] == [("deleted", 3, 1)]


def test_a_record_without_chain_is_inserted():
    records = _write(2)
    stranger = aws.from_item(audit.audit_items(_ctx(), AuditEntry("Patient", Action.READ, "p-1", ("p-1",)))[0])
    walk = _walk([*records, stranger])
    assert [(f.kind, f.record_id) for f in walk.findings] == [("inserted", stranger["id"])]


def test_a_duplicate_sequence_number_is_inserted():
    records = _write(3)
    dup = {**records[1], "id": "forged", "recorded": records[1]["recorded"]}
    dup["hash"] = mac(dup)
    walk = _walk([*records, dup])
    kinds = sorted((f.kind, f.seq) for f in walk.findings)
    assert ("inserted", 2) in kinds


def test_the_first_record_of_a_period_links_to_its_predecessor():
    records = _write(4)
    inside = records[2:]
    assert _walk(inside, before={(records[1]["chain"], 2): records[1]}).findings == []
    missing = _walk(inside, before={})
    assert [(f.kind, f.seq) for f in missing.findings] == [("deleted", 2)]


def test_a_digest_catches_a_deleted_tail_and_an_unlisted_chain():
    records = _write(3)
    chain = records[0]["chain"]
    period = DigestPeriod("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z",
                          (ChainHead(chain, 1, 3, records[2]["hash"], 3),))
    assert _walk(records, digests=(period,)).findings == []
    tail = _walk(records[:2], digests=(period,))
    assert [(f.kind, f.seq) for f in tail.findings] == [("deleted", 3)]
    audit_chain.reset()
    other = _write(1)
    extra = _walk([*records, *other], digests=(period,))
    assert [(f.kind, f.chain) for f in extra.findings] == [("inserted", other[0]["chain"])]


def test_a_digest_listing_a_chain_with_no_records_left_reports_them_deleted():
    records = _write(3)
    period = DigestPeriod("2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z",
                          (ChainHead(records[0]["chain"], 1, 3, records[2]["hash"], 3),))
    walk = _walk([], digests=(period,))
    assert walk.count("deleted") == 3


def test_altered_and_missing_patient_index_copies_are_reported():
    written = _write(1, patients=("p-1", "p-2"))
    record, copies = written[0], written[1:]
    assert _walk([record], copies=copies).findings == []
    altered = [{**copies[0], "user_id": "x"}, copies[1]]
    assert [f.kind for f in _walk([record], copies=altered).findings] == ["altered"]
    assert [f.kind for f in _walk([record], copies=copies[:1]).findings] == ["deleted"]


# ------------------------------------------------------------------ the chain's key (decision 0029) ---


def test_a_record_appended_without_the_chains_key_is_altered_before_any_digest():
    """Write access to the table is not enough: a record added at the tail with a recomputed hash does not verify."""
    records = _write(3)
    tail = records[-1]
    forged = {**tail, "id": "forged", "seq": 4, "prev": tail["hash"], "user_id": "intruder"}
    for guess in (hashlib.sha256(b"x").hexdigest(), content_hash(forged, b"\0" * 32)):
        walk = _walk([*records, {**forged, "hash": guess}])
        assert [(f.kind, f.seq) for f in walk.findings] == [("altered", 4)]


def test_a_record_stripped_of_its_mac_or_whose_key_is_unreadable_is_altered():
    records = _write(2)
    unsealed = {**records[1], "alg": None}
    assert [(f.kind, f.seq) for f in _walk([records[0], unsealed]).findings] == [("altered", 2)]
    walk = _walk(records, keys=lambda chain: None)  # the first record is gone or its key is not this chain's
    assert [(f.kind, f.seq) for f in walk.findings] == [("altered", 1), ("altered", 2)]
    assert all("key cannot be read" in f.detail for f in walk.findings)


def test_each_chain_has_its_own_key():
    made: list[tuple[str, str]] = []

    def recording(tenant: str, chain: str) -> tuple[bytes, bytes]:
        made.append((tenant, chain))
        return new_key(tenant, chain)

    items = audit.audit_items(_ctx(), AuditEntry("Patient", Action.READ, "p-1", ("p-1",), 200))
    audit_chain.seal_items(items, new_key=recording).confirm()
    again = audit.audit_items(_ctx(), AuditEntry("Patient", Action.READ, "p-1", ("p-1",), 200))
    audit_chain.seal_items(again, new_key=recording).confirm()
    assert made == [(TENANT, aws.from_item(items[0])["chain"])]  # one key per chain, not per record
    assert audit_chain.key_context(TENANT, "c-1") == {"tenant": TENANT, "purpose": "audit-chain", "chain": "c-1"}
