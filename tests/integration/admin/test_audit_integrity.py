"""Tamper-evident audit end to end under moto: records tampered with directly in the table, signed digests in the
Object Lock bucket, and ``GET /fhir/AuditEvent/$verify`` finding each change (decision 0022)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from expediente import audit, audit_chain, aws
from expediente.audit import Action, AuditEntry
from expediente.context import TenantId, identity_context
from functions.admin import audit_integrity
from tests.integration.admin.conftest import AdminWorld, Caller, Tenant
from tests.support import aws as support

VERIFY = "/fhir/AuditEvent/$verify"
START = "2000-01-01"


def _ddb() -> Any:
    return boto3.client("dynamodb", region_name=support.REGION)


def _records(tenant: str) -> list[dict[str, Any]]:
    items = _ddb().query(TableName=support.table_name("audit"), KeyConditionExpression="pk = :pk",
                         ExpressionAttributeValues={":pk": {"S": f"{tenant}#AUDIT"}})["Items"]
    return [aws.from_item(i) for i in items]


def _params(reply_body: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None)
            for p in reply_body["parameter"] if p["name"] != "finding"}


def _findings(reply_body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in reply_body["parameter"]:
        if p["name"] == "finding":
            out.append({part["name"]: next(v for k, v in part.items() if k.startswith("value"))
                        for part in p["part"]})
    return out


def _verify(auditor: Caller, **query: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = auditor.get(VERIFY, start=query.get("start", START), end=query.get("end", later))
    assert reply.status == 200, reply.body
    assert reply.body["resourceType"] == "Parameters"
    return _params(reply.body), _findings(reply.body)


@pytest.fixture
def trail(admin_world: AdminWorld, chain_a: Tenant) -> tuple[Tenant, Caller]:
    """A tenant with some audited activity (clinics created and read) and its auditor."""
    for clues in ("HGIMB000151", "HGIMB000163"):
        clinic = admin_world.clinic(chain_a, clues)
        assert chain_a.admin.get(f"/fhir/Organization/{clinic['id']}").status == 200
    auditor = admin_world.user(chain_a, "auditor")
    return chain_a, auditor


def _digest_now(tenant: str) -> audit_integrity.Written:
    time.sleep(0.002)
    written = audit_integrity.write_digest(tenant, end=audit_integrity.instant(datetime.now(UTC)))
    time.sleep(0.002)
    assert written is not None
    return written


def test_a_clean_trail_verifies_with_zero_findings(trail):
    tenant, auditor = trail
    written = _digest_now(tenant.id)
    params, findings = _verify(auditor)
    assert findings == []
    assert params["result"] is True
    assert params["recordsVerified"] >= written.records >= 5
    assert params["chainsVerified"] >= 1 and params["digestsVerified"] == 1
    assert params["altered"] == params["inserted"] == params["deleted"] == 0


def test_a_record_altered_in_the_table_is_reported_altered(trail):
    tenant, auditor = trail
    _digest_now(tenant.id)
    victim = sorted(_records(tenant.id), key=lambda r: r["sk"])[2]
    _ddb().update_item(TableName=support.table_name("audit"),
                       Key={"pk": {"S": victim["pk"]}, "sk": {"S": victim["sk"]}},
                       UpdateExpression="SET user_id = :u", ExpressionAttributeValues={":u": {"S": "someone-else"}})
    params, findings = _verify(auditor)
    assert params["result"] is False and params["altered"] == 1
    assert [(f["kind"], f["record"]["reference"]) for f in findings] == [("altered", f"AuditEvent/{victim['id']}")]


def test_a_record_deleted_from_the_table_is_reported_deleted(trail):
    tenant, auditor = trail
    _digest_now(tenant.id)
    chained = sorted((r for r in _records(tenant.id) if r.get("seq")), key=lambda r: (r["chain"], r["seq"]))
    victim = next(r for r in chained if r["seq"] == 2)
    _ddb().delete_item(TableName=support.table_name("audit"),
                       Key={"pk": {"S": victim["pk"]}, "sk": {"S": victim["sk"]}})
    params, findings = _verify(auditor)
    assert params["deleted"] == 1 and params["altered"] == params["inserted"] == 0
    assert (findings[0]["kind"], findings[0]["chain"], findings[0]["seq"]) == ("deleted", victim["chain"], 2)


def test_the_last_digested_record_deleted_is_caught_by_the_digest(trail):
    tenant, auditor = trail
    _digest_now(tenant.id)
    chained = [r for r in _records(tenant.id) if r.get("seq")]
    # The newest record of the longest chain inside the digest: nothing after it in its chain.
    newest = max(chained, key=lambda r: r["sk"])
    last = max((r for r in chained if r["chain"] == newest["chain"]), key=lambda r: r["seq"])
    _ddb().delete_item(TableName=support.table_name("audit"), Key={"pk": {"S": last["pk"]}, "sk": {"S": last["sk"]}})
    params, findings = _verify(auditor, end=audit_integrity.instant(datetime.now(UTC) + timedelta(hours=1)))
    assert params["deleted"] >= 1
    assert any(f["kind"] == "deleted" and f["seq"] == last["seq"] for f in findings)


def test_a_record_inserted_in_the_table_is_reported_inserted(trail):
    tenant, auditor = trail
    _digest_now(tenant.id)
    ctx = identity_context(tenant.id, "ghost", "ghost", user_agent="", request_id="r")
    forged = audit.audit_items(ctx, AuditEntry("Patient", Action.READ, "p-1", ("p-1",)),
                               now=datetime.now(UTC) - timedelta(seconds=30))[0]
    _ddb().put_item(TableName=support.table_name("audit"), Item=forged)
    params, findings = _verify(auditor)
    assert params["inserted"] == 1 and params["altered"] == params["deleted"] == 0
    assert findings[0]["kind"] == "inserted"


def test_a_record_appended_to_a_chain_before_any_digest_is_reported_altered(trail):
    """Decision 0029: without the chain's key (KMS), write access to the table cannot extend a chain unnoticed, even
    where no digest covers it yet. The forger copies the chain's last record, links to it and rehashes with
    whatever it can compute."""
    tenant, auditor = trail
    chained = [r for r in _records(tenant.id) if r.get("seq")]
    newest = max(chained, key=lambda r: r["sk"])
    tail = max((r for r in chained if r["chain"] == newest["chain"]), key=lambda r: r["seq"])
    moment = datetime.fromisoformat(tail["recorded"].replace("Z", "+00:00")) + timedelta(milliseconds=1)
    recorded = audit_integrity.instant(moment)
    seq = int(tail["seq"]) + 1
    forged = {**tail, "id": "forged-append", "seq": seq, "prev": tail["hash"], "user_id": "intruder",
              "recorded": recorded, "sk": f"{recorded}#forged-append", "gsi3sk": audit_chain.seq_key(seq),
              "gsi2pk": audit.agent_partition(TenantId(tenant.id), "intruder"), "gsi2sk": f"{recorded}#forged-append"}
    forged["hash"] = audit_chain.content_hash(forged, b"\0" * 32)  # any key but the chain's
    _ddb().put_item(TableName=support.table_name("audit"), Item=aws.to_item(forged))
    params, findings = _verify(auditor)
    assert params["digestsVerified"] == 0  # nothing digested yet: the key alone catches it
    assert params["altered"] == 1 and params["inserted"] == params["deleted"] == 0
    assert [(f["kind"], f["record"]["reference"]) for f in findings] == [("altered", "AuditEvent/forged-append")]
    assert findings[0]["detail"] == "its content does not match its hash"


def test_a_period_that_starts_after_a_chains_first_record_reads_its_key_from_that_record(trail):
    """The key of a chain whose first record lies before the period is unwrapped from that record (by_chain index)."""
    tenant, auditor = trail
    chained = sorted((r for r in _records(tenant.id) if r.get("seq")), key=lambda r: r["sk"])
    later = next(r for r in chained if int(r["seq"]) >= 3)
    params, findings = _verify(auditor, start=later["recorded"])
    assert findings == [] and params["digestsVerified"] == 0
    assert 0 < params["recordsVerified"] < len(_records(tenant.id))
    first = next(r for r in chained if r["chain"] == later["chain"] and int(r["seq"]) == 1)
    _ddb().update_item(TableName=support.table_name("audit"),
                       Key={"pk": {"S": first["pk"]}, "sk": {"S": first["sk"]}},
                       UpdateExpression="REMOVE chain_key")  # the chain's key is gone: nothing of it verifies
    params, findings = _verify(auditor, start=later["recorded"])
    mine = [f for f in findings if f.get("chain") == later["chain"]]
    assert mine and {f["kind"] for f in mine} == {"altered"} and params["altered"] == len(findings)
    assert any("key cannot be read" in f["detail"] for f in mine)


def test_a_forged_chain_inside_a_digested_period_is_reported_inserted(trail):
    tenant, auditor = trail
    _digest_now(tenant.id)
    ctx = identity_context(tenant.id, "ghost", "ghost", user_agent="", request_id="r")
    inside = datetime.fromisoformat(max(r["recorded"] for r in _records(tenant.id)).replace("Z", "+00:00"))
    before = datetime.fromisoformat(min(r["recorded"] for r in _records(tenant.id)).replace("Z", "+00:00"))
    for moment in (inside - timedelta(milliseconds=1), before - timedelta(seconds=30)):
        audit_chain.reset()  # the forger computes a perfectly valid chain of its own
        items = audit.audit_items(ctx, AuditEntry("Patient", Action.READ, "p-1", ("p-1",)), now=moment)
        audit_chain.seal_items(items, new_key=audit.new_chain_key).confirm()
        _ddb().put_item(TableName=support.table_name("audit"), Item=items[0])
    audit_chain.reset()
    params, findings = _verify(auditor)
    assert params["inserted"] == 2 and params["altered"] == params["deleted"] == 0
    details = sorted(f["detail"] for f in findings)
    assert "not in the signed digest" in details[0] and "before the trail's first record" in details[1]


def test_a_tampered_digest_is_reported_and_its_locked_version_cannot_be_deleted(trail):
    tenant, auditor = trail
    written = _digest_now(tenant.id)
    s3 = boto3.client("s3", region_name=support.REGION)
    bucket = support.bucket_name("audit_digests")
    original = s3.get_object(Bucket=bucket, Key=written.key)
    assert original["ObjectLockMode"] == "COMPLIANCE"
    assert original["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=3650)
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=written.key, VersionId=original["VersionId"])
    document = json.loads(original["Body"].read())
    document["digest"]["records"] += 1  # rewrite it as a new version: the signature no longer matches
    s3.put_object(Bucket=bucket, Key=written.key, Body=json.dumps(document).encode())
    params, findings = _verify(auditor)
    assert params["digestsVerified"] == 0 and params["altered"] >= 1
    assert any(f["detail"].startswith(f"digest {written.key}") for f in findings)


def test_digests_chain_to_each_other_and_a_second_run_only_adds_new_records(trail, admin_world):
    tenant, auditor = trail
    first = _digest_now(tenant.id)
    admin_world.clinic(tenant, "HGCRO000032")
    second = _digest_now(tenant.id)
    s3 = boto3.client("s3", region_name=support.REGION)
    body = json.loads(s3.get_object(Bucket=support.bucket_name("audit_digests"), Key=second.key)["Body"].read())
    assert body["digest"]["previous"] == {"key": first.key, "hash": first.hash}
    assert body["digest"]["start"] == first.key.rsplit("/", 1)[1].removesuffix(".json")
    assert audit_integrity.write_digest(tenant.id, end=second.key.rsplit("/", 1)[1].removesuffix(".json")) is None
    params, findings = _verify(auditor)
    assert findings == [] and params["digestsVerified"] == 2


def test_the_hourly_schedule_digests_every_tenant(admin_world, chain_a, chain_b):
    from functions.audit_digest.handler import lambda_handler
    from tests.conftest import LambdaContext

    past = datetime.now(UTC) - timedelta(hours=3)
    for tenant in (chain_a, chain_b):
        ctx = identity_context(tenant.id, "u", "u", user_agent="", request_id="r")
        items = audit.audit_items(ctx, AuditEntry("Patient", Action.READ, "p-1", ("p-1",)), now=past)
        audit_chain.seal_items(items, new_key=audit.new_chain_key).confirm()
        _ddb().put_item(TableName=support.table_name("audit"), Item=items[0])
    result = lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, LambdaContext())
    assert result == {"digests": 2}
    keys = [o["Key"] for o in boto3.client("s3", region_name=support.REGION).list_objects_v2(
        Bucket=support.bucket_name("audit_digests"))["Contents"]]
    assert sorted(k.split("/")[0] for k in keys) == sorted([chain_a.id, chain_b.id])
    with pytest.raises(ValueError, match="schedule only"):
        lambda_handler({"httpMethod": "GET", "path": "/"}, LambdaContext())


def test_a_failed_transaction_leaves_no_fork_and_opens_a_new_chain(trail, admin_world):
    tenant, auditor = trail
    opened = audit_chain.chains_opened()
    admin_world.clinic(tenant, "HGCRO000032")
    reply = tenant.admin.post("/fhir/Organization", {"resourceType": "Organization", "name": "Otra", "active": True,
                                                     "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.631",
                                                                     "value": "HGCRO000032"}],
                                                     "partOf": {"reference": f"Organization/{tenant.chain_id}"}})
    assert reply.status == 409  # the CLUES guard fails the transaction with its audit record
    assert audit_chain.chains_opened() > opened
    admin_world.clinic(tenant, "HGIMB000175")
    records = [r for r in _records(tenant.id) if r.get("seq")]
    assert len({(r["chain"], r["seq"]) for r in records}) == len(records)  # no seq written twice
    _digest_now(tenant.id)
    _, findings = _verify(auditor)
    assert findings == []


def test_two_threads_writing_at_once_leave_valid_chains(trail):
    tenant, auditor = trail

    def reads(n: int) -> None:
        ctx = identity_context(tenant.id, f"u{n}", f"u{n}", user_agent="", request_id="r")
        for _ in range(15):
            audit.record(ctx, AuditEntry("Patient", Action.SEARCH, None, ("p-1", "p-2"), 200))

    threads = [threading.Thread(target=reads, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _digest_now(tenant.id)
    params, findings = _verify(auditor)
    assert findings == []
    assert params["copiesVerified"] >= 60 and params["chainsVerified"] >= 3


def test_only_the_auditor_may_verify(trail, admin_world):
    tenant, _ = trail
    receptionist = admin_world.user(tenant, "reception", clinic_ids=["HGIMB000151"])
    assert receptionist.get(VERIFY, start=START).status == 403
    assert tenant.admin.get(VERIFY, start=START).status == 403


@pytest.mark.parametrize(("query", "expression"), [
    ({"start": "yesterday"}, "start"), ({"start": "2026-01-02", "end": "2026-01-01"}, "start"),
    ({"since": "2026-01-01"}, "since"), ({"start": "ge2026-01-01"}, "start"),
])
def test_bad_verify_periods_are_400_naming_the_parameter(trail, query, expression):
    _, auditor = trail
    reply = auditor.call("GET", VERIFY, query=query)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == [expression]


# ------------------------------------------------------------------ reports, sign-ins, privilege changes ---


def test_the_trail_exports_as_csv_for_a_period_sorted_and_paged(trail):
    _, auditor = trail
    reply = auditor.call("GET", "/fhir/AuditEvent", query={"_format": "text/csv", "_sort": "date", "_count": "3",
                                                           "date": f"ge{START}"})
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/csv")
    lines = reply.body.splitlines()
    assert lines[0].startswith("recorded,id,action,outcome,status,resource_type")
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 3 and [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert 'rel="next"' in reply.headers["Link"] and "_page=" in reply.headers["Link"]
    newest = auditor.call("GET", "/fhir/AuditEvent", query={"_sort": "-date", "_count": "50"},
                          headers={"Accept": "text/csv"})
    dates = [line.split(",")[0] for line in newest.body.splitlines()[1:]]
    assert dates == sorted(dates, reverse=True) and len(dates) >= 6
    assert auditor.get("/fhir/AuditEvent", _format="application/xml").status == 400


def test_a_csv_cell_that_looks_like_a_formula_is_neutralized():
    from functions.admin.audit_report import to_csv

    text = to_csv([{"recorded": "2026-01-01T00:00:00.000Z", "id": "=HYPERLINK(\"x\")", "detail": {"a": "b"}}])
    assert "'=HYPERLINK" in text and "a=b" in text


def test_a_privilege_change_says_what_changed(trail, admin_world):
    tenant, _ = trail
    nurse = admin_world.user(tenant, "auditor")
    read = tenant.admin.get(f"/admin/users/{nurse.username}")
    reply = tenant.admin.call("PUT", f"/admin/users/{nurse.username}", {"role": "auditor", "enabled": False},
                              headers={"If-Match": read.headers["ETag"], "Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    promoted = tenant.admin.call("PUT", f"/admin/users/{nurse.username}", {"role": "admin", "enabled": False},
                                 headers={"If-Match": reply.headers["ETag"], "Content-Type": "application/json"})
    assert promoted.status == 200, promoted.body
    updates = sorted((r for r in _records(tenant.id) if r["action"] == "update" and r["resource_id"] == nurse.username),
                     key=lambda r: r["sk"])
    assert [u["detail"] for u in updates] == [{"changed": "enabled", "enabled": "true>false"},
                                              {"changed": "role", "role": "auditor>admin"}]
