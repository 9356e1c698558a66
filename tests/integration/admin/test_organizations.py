"""Clinics (child Organizations of the chain) end to end through the handler under moto."""

from __future__ import annotations

import boto3
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.organization import Organization

from expediente import aws, tenants
from tests.integration.admin.conftest import REGION, organization
from tests.support.aws import table_name

CLUES_SYSTEM = "urn:oid:2.16.840.1.113883.4.631"


def test_operator_created_tenant_has_its_chain_organization_and_admin(admin_world, chain_a):
    record = tenants.get_tenant(chain_a.id)
    assert record is not None
    assert record["status"] == "active"
    assert record["organization_id"] == chain_a.chain_id
    reply = chain_a.admin.get(f"/fhir/Organization/{chain_a.chain_id}")
    assert reply.status == 200, reply.body
    chain = Organization.model_validate(reply.body)
    assert chain.name == "Red Clínica A"
    assert chain.partOf is None
    assert {"system": "urn:expediente:tenant", "value": chain_a.id} in reply.body["identifier"]
    cognito = boto3.client("cognito-idp", region_name=REGION)
    groups = cognito.admin_list_groups_for_user(UserPoolId=admin_world.stack.user_pool_id,
                                                Username=chain_a.admin.username)["Groups"]
    assert [g["GroupName"] for g in groups] == ["admin"]
    assert chain_a.admin.claims["custom:tenant_id"] == chain_a.id


def test_admin_creates_a_clinic_of_the_chain(chain_a):
    body = organization("hgimb000151", "Clínica Actopan Centro")  # no partOf: the chain is implied
    reply = chain_a.admin.post("/fhir/Organization", body)
    assert reply.status == 201, reply.body
    clinic = Organization.model_validate(reply.body)
    assert clinic.partOf.reference == f"Organization/{chain_a.chain_id}"
    assert reply.body["identifier"] == [{"system": CLUES_SYSTEM, "value": "HGIMB000151"}]  # canonical upper case
    assert reply.body["active"] is True
    assert reply.headers["ETag"] == 'W/"1"'
    assert reply.headers["Location"].endswith(f"/fhir/Organization/{clinic.id}/_history/1")
    assert reply.headers["Last-Modified"].endswith("GMT")


def test_a_second_clinic_with_the_same_clues_is_refused_with_409(admin_world, chain_a):
    admin_world.clinic(chain_a, "HGIMB000151")
    reply = chain_a.admin.post("/fhir/Organization", organization("HGIMB000151", "Otra clínica"))
    assert reply.status == 409
    assert reply.body["issue"][0]["code"] == "duplicate"
    assert "CLUES HGIMB000151" in reply.issue
    assert reply.body["issue"][0]["expression"] == ["Organization.identifier[0].value"]
    found = chain_a.admin.get("/fhir/Organization", identifier=f"{CLUES_SYSTEM}|HGIMB000151")
    assert found.body["total"] == 1


def test_the_same_clues_may_exist_in_another_chain(admin_world, chain_a, chain_b):
    admin_world.clinic(chain_a, "HGIMB000151")
    reply = chain_b.admin.post("/fhir/Organization", organization("HGIMB000151", "Clínica de la cadena B"))
    assert reply.status == 201


def test_a_user_of_another_tenant_gets_404_for_a_clinic(admin_world, chain_a, chain_b):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    path = f"/fhir/Organization/{clinic['id']}"
    assert chain_b.admin.get(path).status == 404
    assert chain_b.admin.get(f"{path}/_history").status == 404
    assert chain_b.admin.get(f"{path}/_history/1").status == 404
    update = chain_b.admin.call("PUT", path, {**clinic, "name": "Robada"}, headers={"If-Match": 'W/"1"'})
    assert update.status == 404
    missing = chain_b.admin.get("/fhir/Organization/no-such-id")
    assert missing.status == 404
    assert missing.body["issue"][0]["code"] == "not-found"
    searched = chain_b.admin.get("/fhir/Organization", identifier="HGIMB000151")
    assert searched.body["total"] == 0
    assert chain_a.admin.get(path).body["name"] == "Clínica Centro"


def test_reception_reads_clinics_but_cannot_create_one(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    reception = admin_world.user(chain_a, "reception", clinic_ids=["HGIMB000151"])
    assert reception.get(f"/fhir/Organization/{clinic['id']}").status == 200
    reply = reception.post("/fhir/Organization", organization("HGIMB000163", "Nueva"))
    assert reply.status == 403
    assert reply.body["issue"][0]["code"] == "forbidden"
    assert reception.get(f"/fhir/Organization/{clinic['id']}/_history").status == 403


def test_invalid_clues_is_400_naming_the_field(chain_a):
    reply = chain_a.admin.post("/fhir/Organization", organization("ZZIMB000151", "Clínica"))
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["Organization.identifier[0].value"]
    assert "CLUES state ZZ" in reply.issue
    no_clues = chain_a.admin.post("/fhir/Organization", {"resourceType": "Organization", "name": "Sin CLUES"})
    assert no_clues.status == 400
    assert no_clues.body["issue"][0]["expression"] == ["Organization.identifier"]
    no_name = chain_a.admin.post("/fhir/Organization", organization("HGIMB000151", "  "))
    assert no_name.status == 400
    assert no_name.body["issue"][0]["expression"] == ["Organization.name"]
    unknown = chain_a.admin.post("/fhir/Organization", {**organization("HGIMB000151", "X"), "colour": "red"})
    assert unknown.status == 400
    assert "Organization.colour" in unknown.issue


def test_a_clinic_is_part_of_its_own_chain_only(chain_a, chain_b):
    reply = chain_a.admin.post("/fhir/Organization", organization("HGIMB000151", "Clínica", chain_b.chain_id))
    assert reply.status == 422
    assert reply.body["issue"][0]["expression"] == ["Organization.partOf"]


def test_update_needs_the_current_version(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    path = f"/fhir/Organization/{clinic['id']}"
    no_match = chain_a.admin.call("PUT", path, {**clinic, "name": "Sin versión"})
    assert no_match.status == 428
    first = chain_a.admin.call("PUT", path, {**clinic, "name": "Clínica Norte"}, headers={"If-Match": 'W/"1"'})
    assert first.status == 200, first.body
    assert first.body["meta"]["versionId"] == "2"
    assert first.headers["ETag"] == 'W/"2"'
    stale = chain_a.admin.call("PUT", path, {**clinic, "name": "Perdida"}, headers={"If-Match": 'W/"1"'})
    assert stale.status == 412
    history = chain_a.admin.get(f"{path}/_history")
    assert history.status == 200
    Bundle.model_validate(history.body)
    assert [e["resource"]["name"] for e in history.body["entry"]] == ["Clínica Norte", "Clínica Centro"]
    v1 = chain_a.admin.get(f"{path}/_history/1")
    assert v1.status == 200
    assert v1.body["name"] == "Clínica Centro"
    assert v1.headers["ETag"] == 'W/"1"'
    assert chain_a.admin.get(f"{path}/_history/9").status == 404
    by_new_name = chain_a.admin.get("/fhir/Organization", name="clinica nor")
    assert [e["resource"]["id"] for e in by_new_name.body["entry"]] == [clinic["id"]]
    assert chain_a.admin.get("/fhir/Organization", name="clinica centro").body["total"] == 0


def test_changing_a_clinics_clues_moves_its_uniqueness(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    other = admin_world.clinic(chain_a, "HGIMB000163", "Clínica Dos")
    path = f"/fhir/Organization/{clinic['id']}"
    taken = {**clinic, "identifier": [{"system": CLUES_SYSTEM, "value": "HGIMB000163"}]}
    assert chain_a.admin.call("PUT", path, taken, headers={"If-Match": 'W/"1"'}).status == 409
    moved = {**clinic, "identifier": [{"system": CLUES_SYSTEM, "value": "HGCRO000032"}]}
    assert chain_a.admin.call("PUT", path, moved, headers={"If-Match": 'W/"1"'}).status == 200
    # The old CLUES is free again; the other clinic still holds its own.
    assert admin_world.clinic(chain_a, "HGIMB000151", "Reabierta")["id"] != clinic["id"]
    assert chain_a.admin.get("/fhir/Organization", identifier="HGIMB000163").body["entry"][0]["resource"]["id"] \
        == other["id"]


def test_clinics_are_never_deleted_only_deactivated(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    path = f"/fhir/Organization/{clinic['id']}"
    reply = chain_a.admin.call("DELETE", path)
    assert reply.status == 405
    assert "active=false" in reply.issue
    assert reply.headers["Allow"] == "GET, PUT"
    off = chain_a.admin.call("PUT", path, {**clinic, "active": False}, headers={"If-Match": 'W/"1"'})
    assert off.status == 200
    assert off.body["active"] is False
    assert chain_a.admin.get("/fhir/Organization", active="true", partof=chain_a.chain_id).body["total"] == 0
    chain = chain_a.admin.get(f"/fhir/Organization/{chain_a.chain_id}").body
    refused = chain_a.admin.call("PUT", f"/fhir/Organization/{chain_a.chain_id}", {**chain, "active": False},
                                 headers={"If-Match": 'W/"1"'})
    assert refused.status == 422


def test_search_by_name_partof_and_pages(admin_world, chain_a):
    for clues, name in (("HGIMB000151", "Clínica Ñandú"), ("HGIMB000163", "Clínica Álamo"),
                        ("HGCRO000032", "Consultorio Sur")):
        admin_world.clinic(chain_a, clues, name)
    by_name = chain_a.admin.get("/fhir/Organization", name="CLINICA")
    assert [e["resource"]["name"] for e in by_name.body["entry"]] == ["Clínica Álamo", "Clínica Ñandú"]
    children = chain_a.admin.get("/fhir/Organization", partof=f"Organization/{chain_a.chain_id}", _count="2")
    Bundle.model_validate(children.body)
    assert len(children.body["entry"]) == 2
    assert "total" not in children.body
    next_url = next(link["url"] for link in children.body["link"] if link["relation"] == "next")
    token = next_url.split("_page=")[1]
    rest = chain_a.admin.get("/fhir/Organization", partof=f"Organization/{chain_a.chain_id}", _count="2",
                             _page=token)
    assert [e["resource"]["name"] for e in rest.body["entry"]] == ["Consultorio Sur"]
    assert not any(link["relation"] == "next" for link in rest.body["link"])
    forged = chain_a.admin.get("/fhir/Organization", name="x", _page=token)
    assert forged.status == 400
    unknown = chain_a.admin.get("/fhir/Organization", partOf=chain_a.chain_id)
    assert unknown.status == 400
    assert "partOf" in unknown.issue


def test_search_never_scans(admin_world, chain_a, monkeypatch):
    admin_world.clinic(chain_a, "HGIMB000151")
    client = aws.client("dynamodb")

    def refuse(**_):
        raise AssertionError("Scan in a request path")

    monkeypatch.setattr(client, "scan", refuse)
    assert chain_a.admin.get("/fhir/Organization", name="cl").status == 200


def test_writes_keep_guard_index_and_audit_in_the_table(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    audit_items = dynamodb.query(TableName=table_name("audit"), KeyConditionExpression="pk = :pk",
                                 ExpressionAttributeValues={":pk": {"S": f"{chain_a.id}#AUDIT"}})["Items"]
    created = [i for i in audit_items if i.get("resource_id", {}).get("S") == clinic["id"]]
    assert [c["action"]["S"] for c in created] == ["create"]
    assert created[0]["user_id"]["S"] == chain_a.admin.user_id
