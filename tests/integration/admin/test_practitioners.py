"""Practitioners end to end: cédula profesional, name, title-issuing institution."""

from __future__ import annotations

from fhir.resources.R4B.practitioner import Practitioner

from tests.integration.admin.conftest import practitioner

CEDULA_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.18"


def test_admin_registers_a_practitioner_with_qualification(chain_a):
    body = practitioner(" 1234567 ", qualification=[{
        "code": {"text": "Médico Cirujano"},
        "issuer": {"display": "Universidad Nacional Autónoma de México"},
        "identifier": [{"system": CEDULA_SYSTEM, "value": "7654321"}],
    }])
    reply = chain_a.admin.post("/fhir/Practitioner", body)
    assert reply.status == 201, reply.body
    created = Practitioner.model_validate(reply.body)
    assert created.identifier[0].value == "1234567"
    assert created.qualification[0].issuer.display == "Universidad Nacional Autónoma de México"
    read = chain_a.admin.get(f"/fhir/Practitioner/{created.id}")
    assert read.status == 200
    assert read.body["name"][0]["family"] == "Hernández Ortega"


def test_a_bad_cedula_is_400_naming_the_field(chain_a):
    reply = chain_a.admin.post("/fhir/Practitioner", practitioner("12AB"))
    assert reply.status == 400
    assert reply.body["resourceType"] == "OperationOutcome"
    assert reply.body["issue"][0]["expression"] == ["Practitioner.identifier[0].value"]
    assert "Cédula profesional" in reply.issue


def test_name_and_issuer_are_required(chain_a):
    no_given = practitioner("1234567")
    no_given["name"] = [{"family": "Pérez"}]
    reply = chain_a.admin.post("/fhir/Practitioner", no_given)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["Practitioner.name[0].given"]
    no_issuer = practitioner("1234567", qualification=[{"code": {"text": "Médico"}}])
    reply = chain_a.admin.post("/fhir/Practitioner", no_issuer)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["Practitioner.qualification[0].issuer.display"]
    no_cedula = practitioner("1234567")
    del no_cedula["identifier"]
    reply = chain_a.admin.post("/fhir/Practitioner", no_cedula)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["Practitioner.identifier"]


def test_a_cedula_is_unique_in_the_chain(chain_a, chain_b):
    assert chain_a.admin.post("/fhir/Practitioner", practitioner("1234567")).status == 201
    again = chain_a.admin.post("/fhir/Practitioner", practitioner("1234567", "Otro", "Nombre"))
    assert again.status == 409
    assert "cédula profesional 1234567" in again.issue
    assert chain_b.admin.post("/fhir/Practitioner", practitioner("1234567")).status == 201


def test_search_by_family_given_name_and_identifier(chain_a):
    ids = {}
    for cedula, family, given in (("1111111", "García López", "Ana María"), ("2222222", "Gómez Ruiz", "Andrés"),
                                  ("3333333", "Zúñiga", "Gabriel")):
        ids[cedula] = chain_a.admin.post("/fhir/Practitioner", practitioner(cedula, family, given)).body["id"]

    def names(**query: str) -> list[str]:
        reply = chain_a.admin.get("/fhir/Practitioner", **query)
        assert reply.status == 200, reply.body
        return [e["resource"]["name"][0]["family"] for e in reply.body["entry"]]

    assert names(family="g") == ["García López", "Gómez Ruiz"]
    assert names(given="andres") == ["Gómez Ruiz"]
    assert names(name="ga") == ["Zúñiga", "García López"]  # in term order: given GABRIEL, family GARCÍA
    assert names(family="g", given="ana") == ["García López"]
    assert names(identifier=f"{CEDULA_SYSTEM}|3333333") == ["Zúñiga"]
    assert names(identifier="urn:other|3333333") == []
    assert names() == ["García López", "Gómez Ruiz", "Zúñiga"]


def test_physician_may_look_up_practitioners_but_not_edit_them(admin_world, chain_a):
    admin_world.clinic(chain_a, "HGIMB000151")
    doctor = admin_world.practitioner(chain_a)
    physician = admin_world.user(chain_a, "physician", clinic_ids=["HGIMB000151"], practitioner_id=doctor["id"])
    assert physician.get(f"/fhir/Practitioner/{doctor['id']}").status == 200
    assert physician.get("/fhir/Practitioner", family="her").body["total"] == 1
    change = physician.call("PUT", f"/fhir/Practitioner/{doctor['id']}", {**doctor, "active": False},
                            headers={"If-Match": 'W/"1"'})
    assert change.status == 403


def test_practitioner_update_and_history(admin_world, chain_a):
    doctor = admin_world.practitioner(chain_a)
    path = f"/fhir/Practitioner/{doctor['id']}"
    renamed = {**doctor, "name": [{"use": "official", "family": "Hernández", "given": ["Lucía"]}]}
    assert chain_a.admin.call("PUT", path, renamed, headers={"If-Match": 'W/"1"'}).status == 200
    wrong_id = chain_a.admin.call("PUT", path, {**renamed, "id": "other"}, headers={"If-Match": 'W/"2"'})
    assert wrong_id.status == 400
    assert wrong_id.body["issue"][0]["expression"] == ["Practitioner.id"]
    history = chain_a.admin.get(f"{path}/_history")
    assert [e["response"]["etag"] for e in history.body["entry"]] == ['W/"2"', 'W/"1"']
    assert chain_a.admin.get("/fhir/Practitioner", family="hernandez o").body["total"] == 0
    assert chain_a.admin.call("DELETE", path).status == 405
