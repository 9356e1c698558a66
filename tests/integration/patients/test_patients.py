"""Patients end to end through the handler, under moto, with real API Gateway event shapes."""

from __future__ import annotations

import logging
import threading

import boto3
import pytest

from expediente.permissions import PERMISSIONS, Interaction, Role
from tests.integration.patients.conftest import make_curp, patient_body
from tests.support.aws import REGION, table_name

CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"


# -- registration ---------------------------------------------------------------------------------


def test_names_are_upper_cased_and_tabla1_defaults_are_filled(reception):
    reply = reception.create(patient_body(make_curp(), given=("María José",)))
    assert reply.status == 201
    patient = reply.body
    assert patient["name"][0]["given"] == ["MARÍA JOSÉ"]
    birth_place = next(e for e in patient["extension"] if e["url"].endswith("patient-birthPlace"))
    assert birth_place["valueAddress"]["state"] == "09"  # derived from the CURP's DF
    nationality = next(e for e in patient["extension"] if e["url"].endswith("patient-nationality"))
    assert nationality["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "NND"
    assert patient["address"][0]["state"] == "00" and patient["address"][0]["district"] == "000"
    assert any(i["system"] == "urn:expediente:folio" for i in patient["identifier"])
    assert reply.headers["Location"].endswith(f"/fhir/Patient/{patient['id']}/_history/1")


def test_patient_without_curp_is_registered_and_flagged(reception):
    reply = reception.create(patient_body(None))
    assert reply.status == 201
    assert reply.body["meta"]["tag"][0]["code"] == "pending-identification"
    assert all(i["system"] != CURP_SYSTEM for i in reply.body["identifier"])


@pytest.mark.parametrize(
    ("curp", "message"),
    [
        ("PEGJ800101HDFRRN", "18 characters"),
        ("PEGJ80010!HDFRRN01", "format"),
        ("XXXX999999XXXXXX99", "generic CURP"),
        (make_curp(birth="801301"), "not a real date"),
        (make_curp(state="ZZ"), "state code"),
        (make_curp()[:-1] + str((int(make_curp()[-1]) + 1) % 10), "check digit"),
    ],
)
def test_invalid_curp_is_rejected_with_what_is_wrong(reception, curp, message):
    reply = reception.create(patient_body(curp))
    assert reply.status == 400
    assert message in reply.issue
    assert reply.body["resourceType"] == "OperationOutcome"


def test_curp_with_sex_x_is_accepted(reception):
    reply = reception.create(patient_body(make_curp(sex="X"), gender="other"))
    assert reply.status == 201, reply.body


def test_curp_contradicting_birth_date_is_rejected(reception):
    reply = reception.create(patient_body(make_curp(), birth="1980-01-02"))
    assert reply.status == 400 and "birth date" in reply.issue


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"address": [{"state": "99x"}]}, "Patient.address[0].state"),
        ({"address": [{"state": "13", "district": "950"}]}, "Patient.address[0].district"),
        ({"birthDate": None}, "Patient.birthDate"),
        ({"name": []}, "Patient.name"),
    ],
)
def test_bad_tabla1_fields_are_named(reception, change, field):
    body = {**patient_body(None), **change}
    body = {k: v for k, v in body.items() if v is not None}
    reply = reception.create(body)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == [field]


def test_second_patient_with_same_curp_gets_409_pointing_at_the_first(reception):
    curp = make_curp()
    first = reception.create(patient_body(curp)).body["id"]
    reply = reception.create(patient_body(curp))
    assert reply.status == 409
    assert f"Patient/{first}" in reply.issue


def test_conditional_create_returns_the_existing_patient(reception):
    curp = make_curp()
    first = reception.create(patient_body(curp)).body["id"]
    reply = reception.create(patient_body(curp), headers={"If-None-Exist": f"identifier={CURP_SYSTEM}|{curp}"})
    assert reply.status == 200
    assert reply.body["id"] == first
    encoded = reception.create(patient_body(curp), headers={"If-None-Exist": f"identifier={CURP_SYSTEM}%7C{curp}"})
    assert encoded.status == 200
    assert encoded.body["id"] == first


def test_concurrent_creates_with_one_curp_store_exactly_one_record(reception, monkeypatch):
    # DynamoDB applies each transaction atomically; in-process moto does not guard its tables against
    # threads, so each moto request is serialized here while the handlers themselves race freely.
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    original = DynamoDBBackend.transact_write_items

    def atomic(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", atomic)
    curp = make_curp(prefix="COCU")
    results = []
    start = threading.Barrier(6)

    def register():
        start.wait()
        results.append(reception.create(patient_body(curp)).status)

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert sorted(results) == [201, 409, 409, 409, 409, 409]
    found = reception.search(identifier=f"{CURP_SYSTEM}|{curp}")
    assert len(found.body["entry"]) == 1


def test_retried_post_with_same_idempotency_key_creates_one_record(reception):
    body = patient_body(make_curp(prefix="IEDM"))
    first = reception.create(body, headers={"Idempotency-Key": "k-123"})
    again = reception.create(body, headers={"Idempotency-Key": "k-123"})
    assert first.status == again.status == 201
    assert first.body["id"] == again.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = reception.create({**body, "gender": "female"}, headers={"Idempotency-Key": "k-123"})
    assert other.status == 422


# -- read, versions, update ------------------------------------------------------------------------


def test_update_keeps_every_version_and_stale_if_match_gets_412(reception):
    curp = make_curp()
    created = reception.create(patient_body(curp)).body
    pid = created["id"]
    body = {**created, "telecom": [{"system": "phone", "value": "5555555555"}]}
    updated = reception.update(pid, body, 1)
    assert updated.status == 200 and updated.body["meta"]["versionId"] == "2"
    stale = reception.update(pid, body, 1)
    assert stale.status == 412
    missing = reception.update(pid, body, None)
    assert missing.status == 428
    v1 = reception.call("GET", f"/fhir/Patient/{pid}/_history/1")
    assert v1.status == 200 and "telecom" not in v1.body
    history = reception.call("GET", f"/fhir/Patient/{pid}/_history")
    assert [e["resource"]["meta"]["versionId"] for e in history.body["entry"]] == ["2", "1"]
    assert history.body["total"] == 2


def test_delete_is_refused_and_deactivation_is_an_update(reception):
    created = reception.create(patient_body(make_curp())).body
    refused = reception.call("DELETE", f"/fhir/Patient/{created['id']}")
    assert refused.status == 405
    assert "never deleted" in refused.issue
    assert reception.read(created["id"]).status == 200
    inactive = reception.update(created["id"], {**created, "active": False}, 1)
    assert inactive.status == 200 and inactive.body["active"] is False


def test_curp_can_be_corrected_and_the_old_one_is_released(reception):
    wrong, right = make_curp(consonants="RRN"), make_curp(consonants="RRL")
    created = reception.create(patient_body(wrong)).body
    body = {**created, "identifier": [{"system": CURP_SYSTEM, "value": right}]}
    assert reception.update(created["id"], body, 1).status == 200
    assert reception.search(identifier=f"{CURP_SYSTEM}|{right}").body["entry"][0]["resource"]["id"] == created["id"]
    assert reception.search(identifier=f"{CURP_SYSTEM}|{wrong}").body["entry"] == []
    assert reception.create(patient_body(wrong)).status == 201


# -- search ----------------------------------------------------------------------------------------


@pytest.fixture
def registry(reception):
    people = [
        patient_body(make_curp(prefix="GALM", birth="850310", sex="M"), family="García", second="López",
                     given=("María",), birth="1985-03-10", gender="female"),
        patient_body(make_curp(prefix="GAHJ", birth="900615"), family="Gárcia", second="Hernández",
                     given=("José", "Luis"), birth="1990-06-15"),
        patient_body(make_curp(prefix="NUPA", birth="700102"), family="Núñez", second="Pérez",
                     given=("Ángel",), birth="1970-01-02"),
    ]
    return [reception.create(p).body["id"] for p in people]


def _ids(reply):
    return {e["resource"]["id"] for e in reply.body["entry"]}


def test_name_search_is_case_and_accent_insensitive_prefix(reception, registry):
    maria, jose, angel = registry
    assert _ids(reception.search(family="garc")) == {maria, jose}
    assert _ids(reception.search(family="GARCIA", given="jos")) == {jose}
    assert _ids(reception.search(given="angel")) == {angel}
    assert _ids(reception.search(name="lui")) == {jose}
    assert _ids(reception.search(name="nunez")) == {angel}


def test_search_by_birthdate_gender_and_identifier(reception, registry):
    maria, jose, angel = registry
    assert _ids(reception.search(birthdate="1985")) == {maria}
    assert _ids(reception.search(birthdate="ge1985-01-01")) == {maria, jose}
    assert _ids(reception.search(gender="female")) == {maria}
    assert _ids(reception.search(family="garcia", gender="male")) == {jose}
    curp = reception.read(angel).body["identifier"][0]["value"]
    assert _ids(reception.search(identifier=f"{CURP_SYSTEM}|{curp}")) == {angel}
    assert _ids(reception.search(identifier=curp.lower())) == {angel}


def test_search_pages_with_count_and_next_link(reception, registry):
    first = reception.search(_count="2")
    assert len(first.body["entry"]) == 2
    assert "total" not in first.body
    nxt = next(link["url"] for link in first.body["link"] if link["relation"] == "next")
    token = nxt.split("_page=")[1].split("&")[0]
    second = reception.search(_count="2", _page=token)
    assert _ids(first) | _ids(second) == set(registry)
    assert reception.search(_count="2", _page="garbage").status == 400


def test_unknown_search_parameter_is_an_error(reception):
    reply = reception.search(colour="blue")
    assert reply.status == 400 and "colour" in reply.issue


# -- tenancy and permissions --------------------------------------------------------------------


def test_other_tenant_gets_404_and_never_sees_a_patient(reception, tenant_b, as_role):
    curp = make_curp(prefix="TENA")
    pid = reception.create(patient_body(curp)).body["id"]
    intruder = as_role("physician", tenant_b)
    assert intruder.read(pid).status == 404
    assert intruder.call("GET", f"/fhir/Patient/{pid}/_history").status == 404
    assert intruder.call("GET", f"/fhir/Patient/{pid}/_history/1").status == 404
    assert intruder.update(pid, patient_body(curp), 1).status == 404
    assert intruder.search(identifier=curp).body["entry"] == []
    assert intruder.search(family="perez").body["entry"] == []
    assert intruder.search(_id=pid).body["entry"] == []
    # Same CURP in another chain is another record (NOM-004 5.14: one record per tenant).
    assert intruder.create(patient_body(curp)).status == 201


def test_missing_claims_are_401(world, tenant_a):
    from functions.patients.handler import lambda_handler
    from tests.conftest import invoke
    from tests.support.aws import api_event

    assert invoke(lambda_handler, api_event("GET", "/fhir/Patient", user=None)).status == 401


_ROUTES = {
    Interaction.CREATE: lambda api, pid: api.create(patient_body(make_curp(prefix="ROLE"))),
    Interaction.READ: lambda api, pid: api.read(pid),
    Interaction.VREAD: lambda api, pid: api.call("GET", f"/fhir/Patient/{pid}/_history/1"),
    Interaction.HISTORY: lambda api, pid: api.call("GET", f"/fhir/Patient/{pid}/_history"),
    Interaction.SEARCH: lambda api, pid: api.search(family="perez"),
    Interaction.UPDATE: lambda api, pid: api.update(pid, {**api.read_as_admin(pid), "active": True}, 1),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("interaction", list(_ROUTES))
def test_every_role_and_interaction_follows_the_permission_table(reception, as_role, role, interaction):
    created = reception.create(patient_body(make_curp(prefix="PERM"))).body
    api = as_role(role.value, patient_id=created["id"] if role is Role.PATIENT else None)
    api.read_as_admin = lambda pid: created
    reply = _ROUTES[interaction](api, created["id"])
    expected = interaction in PERMISSIONS["Patient"].get(role, frozenset())
    if expected:
        assert reply.status in (200, 201), (role, interaction, reply.body)
    else:
        assert reply.status == 403, (role, interaction, reply.status)


def test_patient_role_sees_only_own_record(reception, as_role):
    mine = reception.create(patient_body(make_curp(prefix="MINE"))).body["id"]
    other = reception.create(patient_body(make_curp(prefix="OEAR"))).body["id"]
    me = as_role("patient", patient_id=mine)
    assert me.read(mine).status == 200
    assert me.read(other).status == 404


# -- merge -----------------------------------------------------------------------------------------


def test_merge_links_both_records_and_keeps_histories(reception, as_role, world):
    survivor = reception.create(patient_body(make_curp(prefix="SURV"))).body["id"]
    duplicate = reception.create(patient_body(None)).body["id"]
    admin = as_role("admin")
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{duplicate}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{survivor}"}}]}
    reply = admin.call("POST", "/fhir/Patient/$merge", params)
    assert reply.status == 200, reply.body
    source = reception.read(duplicate).body
    target = reception.read(survivor).body
    assert source["active"] is False
    assert source["link"] == [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}]
    assert target["link"] == [{"other": {"reference": f"Patient/{duplicate}"}, "type": "replaces"}]
    assert len(reception.call("GET", f"/fhir/Patient/{duplicate}/_history").body["entry"]) == 2
    assert admin.call("POST", "/fhir/Patient/$merge", params).status == 409
    assert reception.call("POST", "/fhir/Patient/$merge", params).status == 403
    types = [e["detail-type"] for e in world.published()]
    assert "PatientMerged" in types and "PatientRegistered" in types


def test_records_with_different_curps_are_not_merged(reception, as_role):
    a = reception.create(patient_body(make_curp(prefix="DIFA"))).body["id"]
    b = reception.create(patient_body(make_curp(prefix="DIFB"))).body["id"]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{a}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{b}"}}]}
    assert as_role("admin").call("POST", "/fhir/Patient/$merge", params).status == 422


# -- audit, encryption, logs -----------------------------------------------------------------------


def _audit_items():
    table = boto3.resource("dynamodb", region_name=REGION).Table(table_name("audit"))
    return table.scan()["Items"]  # test-only inspection of the moto table


def test_every_access_writes_one_audit_record(reception):
    pid = reception.create(patient_body(make_curp(prefix="AUDT"))).body["id"]
    reception.read(pid)
    reception.search(family="perez")
    actions = sorted(item["action"] for item in _audit_items())
    assert actions == ["create", "read", "search-type"]
    read = next(i for i in _audit_items() if i["action"] == "read")
    assert read["patient_ids"] == [pid] and read["source_ip"] == "203.0.113.10" and read["roles"] == "reception"


def test_audit_failure_returns_503_and_no_patient_data(reception, monkeypatch):
    curp = make_curp(prefix="FAIL")
    pid = reception.create(patient_body(curp)).body["id"]
    monkeypatch.setenv("TABLE_AUDIT", "missing-audit-table")
    from tests.support.aws import reset_caches

    reset_caches()
    for reply in (reception.read(pid), reception.search(identifier=curp),
                  reception.create(patient_body(make_curp(prefix="FALL")))):
        assert reply.status == 503
        assert curp not in str(reply.body) and "PÉREZ" not in str(reply.body)
        assert reply.body["resourceType"] == "OperationOutcome"


def test_no_raw_curp_or_name_is_stored_in_keys_or_plain_items(reception):
    curp = make_curp(prefix="SECR")
    reception.create(patient_body(curp, given=("Secretina",)))
    items = boto3.resource("dynamodb", region_name=REGION).Table(table_name("patients")).scan()["Items"]
    dump = str(items)
    assert curp not in dump
    bodies = [i["body"] for i in items if "body" in i]
    assert bodies and all(b.startswith("enc1.") and "SECRETINA" not in b for b in bodies)


def test_logs_never_contain_curp_or_names(reception, caplog, capsys):
    caplog.set_level(logging.INFO)  # the deployed log level (POWERTOOLS_LOG_LEVEL=INFO)
    curp = make_curp(prefix="LOGS")
    pid = reception.create(patient_body(curp, given=("Logdora",))).body["id"]
    reception.read(pid)
    reception.search(family="perez", given="logd")
    reception.create(patient_body(curp))  # 409
    reception.create(patient_body(curp[:-1] + "Z"))  # 400
    captured = caplog.text + capsys.readouterr().out
    assert curp not in captured and "LOGDORA" not in captured.upper()


def test_reads_make_no_kms_call_once_warm(reception, world):
    from expediente import aws

    pid = reception.create(patient_body(make_curp(prefix="WARM"))).body["id"]
    reception.read(pid)
    calls = []
    kms = aws.client("kms")
    kms.meta.events.register("before-call.kms.*", lambda **kw: calls.append(kw["model"].name))
    reception.read(pid)
    reception.create(patient_body(make_curp(prefix="WARN")))
    assert calls == []


def test_a_search_shows_in_each_found_patients_own_audit_trail(reception, as_role):
    from functions.admin.handler import lambda_handler as admin_handler
    from tests.conftest import invoke
    from tests.support.aws import User, api_event

    first = reception.create(patient_body(make_curp(prefix="TAZA"), family="Trazabilidad")).body["id"]
    second = reception.create(patient_body(make_curp(prefix="TEZB"), family="Trazabilidad")).body["id"]
    assert len(reception.search(family="trazab").body["entry"]) == 2
    for pid in (first, second):
        me = User(tenant="t-chain-a", role="patient", patient_id=pid)
        reply = invoke(admin_handler, api_event("GET", "/fhir/AuditEvent", user=me, query={"patient": pid}))
        assert reply.status == 200, reply.body
        actions = [e["resource"]["subtype"][0]["code"] for e in reply.body["entry"]]
        assert actions.count("search-type") == 1
        assert actions.count("create") == 1
    auditor = User(tenant="t-chain-a", role="auditor")
    everything = invoke(admin_handler, api_event("GET", "/fhir/AuditEvent", user=auditor)).body["entry"]
    searches = [e for e in everything
                if any(str(x.get("description", "")).startswith("Patient search") for x in e["resource"]["entity"])]
    assert len(searches) == 1  # the tenant-wide listing shows the request once
