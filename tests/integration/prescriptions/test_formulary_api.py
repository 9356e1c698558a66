"""The formulary over FHIR: search, read, the clinic's local items and versions of catalogue items, hiding."""

from __future__ import annotations

from typing import Any

from tests.integration.notes.conftest import Chain, Staff

from .conftest import CNIS, PARACETAMOL, UCUM, created, prescription, rx

EXT = "https://expediente.mx/fhir/StructureDefinition"
FORM = "https://expediente.mx/fhir/CodeSystem/forma-farmaceutica"


def local_medication(name: str = "Jarabe magistral de la casa", *, key: str | None = None,
                     group: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Medication",
        "code": {"coding": [{"system": CNIS, "code": key}] if key else [], "text": name},
        "form": {"coding": [{"system": FORM, "code": "TAB"}]},
        "ingredient": [{
            "itemCodeableConcept": {"text": name, "extension": [{"url": f"{EXT}/dci", "valueString": "paracetamol"}]},
            "strength": {"numerator": {"value": 250, "system": UCUM, "code": "mg"},
                         "denominator": {"value": 1, "system": UCUM, "code": "{tablet}"}}}],
        "extension": [{"url": f"{EXT}/fuente", "valueString": "Registro sanitario del producto (prueba)"},
                      {"url": f"{EXT}/envase", "valueQuantity": {"value": 30, "system": UCUM, "code": "{tablet}"}}],
        **extra,
    }
    if group:
        body["extension"].append({"url": f"{EXT}/grupo-venta", "valueCode": group})
    return body


def test_search_by_accent_insensitive_prefix_key_and_atc_is_paged(physician: Staff) -> None:
    reply = rx(physician, "GET", "/fhir/Medication", query={"name": "acido acetil", "_count": "2"})
    assert reply.status == 200, reply.body
    assert reply.body["total"] >= 3
    assert len(reply.body["entry"]) == 2
    assert all(e["resource"]["code"]["text"] == "Ácido acetilsalicílico" for e in reply.body["entry"])
    following = next(link["url"] for link in reply.body["link"] if link["relation"] == "next")
    page = following.split("_page=")[1]
    second = rx(physician, "GET", "/fhir/Medication", query={"name": "acido acetil", "_count": "2", "_page": page})
    assert {e["resource"]["id"] for e in second.body["entry"]}.isdisjoint(
        {e["resource"]["id"] for e in reply.body["entry"]})
    by_key = rx(physician, "GET", "/fhir/Medication", query={"code": f"{CNIS}|{PARACETAMOL}"})
    assert [e["resource"]["id"] for e in by_key.body["entry"]] == [PARACETAMOL]
    statins = rx(physician, "GET", "/fhir/Medication", query={"atc": "C10AA", "_count": "100"})
    assert statins.body["total"] >= 2
    assert all(any(c["code"].startswith("C10AA") for c in e["resource"]["code"]["coding"])
               for e in statins.body["entry"])
    assert rx(physician, "GET", "/fhir/Medication").status == 400


def test_a_catalogue_item_reads_as_fhir_with_its_sources(physician: Staff) -> None:
    body = rx(physician, "GET", f"/fhir/Medication/{PARACETAMOL}").body
    assert body["code"]["coding"][0] == {"system": CNIS, "code": PARACETAMOL, "display": body["code"]["coding"][0]
                                         ["display"]}
    urls = [e["url"] for e in body["extension"]]
    assert f"{EXT}/fuente" in urls and f"{EXT}/dosis-maxima-diaria" in urls
    assert rx(physician, "GET", "/fhir/Medication/999.999.9999.99").status == 404


def test_the_pharmacy_adds_a_local_item_and_prescribers_use_it(chain: Chain, physician: Staff,
                                                                patient_id: str) -> None:
    pharmacist = chain.staff("pharmacist")
    made = rx(pharmacist, "POST", "/fhir/Medication", local_medication())
    assert made.status == 201, made.body
    found = rx(physician, "GET", "/fhir/Medication", query={"name": "jarabe magistral"})
    assert [e["resource"]["id"] for e in found.body["entry"]] == [made.body["id"]]
    body = prescription(patient_id)
    body.pop("medicationCodeableConcept")
    body["medicationReference"] = {"reference": f"Medication/{made.body['id']}"}
    assert created(physician, body)["medicationReference"]["reference"] == f"Medication/{made.body['id']}"
    missing = local_medication()
    missing["extension"] = []
    refused = rx(pharmacist, "POST", "/fhir/Medication", missing)
    assert refused.status == 400 and "fuente" in refused.issue
    assert rx(physician, "POST", "/fhir/Medication", local_medication()).status == 403


def test_a_hidden_item_is_not_offered_nor_prescribed_and_can_be_shown_again(
        chain: Chain, physician: Staff, patient_id: str) -> None:
    admin = chain.staff("admin", practitioner=False)
    hide = rx(admin, "POST", f"/fhir/Medication/{PARACETAMOL}/$hide",
              {"resourceType": "Parameters", "parameter": [{"name": "hidden", "valueBoolean": True}]})
    assert hide.status == 200, hide.body
    assert hide.body["status"] == "inactive"
    found = rx(physician, "GET", "/fhir/Medication", query={"code": PARACETAMOL})
    assert found.body["total"] == 0
    refused = rx(physician, "POST", "/fhir/MedicationRequest", prescription(patient_id))
    assert refused.status == 422
    rx(admin, "POST", f"/fhir/Medication/{PARACETAMOL}/$hide",
       {"resourceType": "Parameters", "parameter": [{"name": "hidden", "valueBoolean": False}]})
    assert rx(physician, "POST", "/fhir/MedicationRequest", prescription(patient_id)).status == 201


def test_hiding_in_one_tenant_does_not_hide_in_another(chain: Chain, other_chain: Chain) -> None:
    admin = chain.staff("admin", practitioner=False)
    rx(admin, "POST", f"/fhir/Medication/{PARACETAMOL}/$hide", {"resourceType": "Parameters", "parameter": []})
    other = other_chain.staff("physician")
    assert rx(other, "GET", "/fhir/Medication", query={"code": PARACETAMOL}).body["total"] == 1


def test_a_local_item_of_one_tenant_is_invisible_to_another(chain: Chain, other_chain: Chain) -> None:
    made = rx(chain.staff("pharmacist"), "POST", "/fhir/Medication", local_medication("Fórmula exclusiva"))
    other = other_chain.staff("physician")
    assert rx(other, "GET", f"/fhir/Medication/{made.body['id']}").status == 404
    assert rx(other, "GET", "/fhir/Medication", query={"name": "formula exclusiva"}).body["total"] == 0
