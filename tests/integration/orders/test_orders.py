"""Lab and imaging orders: LOINC-coded or by modality, numbered, one status machine, worklists."""

from __future__ import annotations

from typing import Any

from tests.integration.notes.conftest import CLUES, Chain, Staff, Visit, note_body, section
from tests.integration.orders.conftest import imaging_order, lab_order

STATUS = "https://expediente.mx/fhir/StructureDefinition/estado-orden"


def _status(order: dict[str, Any]) -> str:
    return next(e["valueCode"] for e in order["extension"] if e["url"] == STATUS)


def _move(staff: Staff, order: dict[str, Any], status: str, reason: str | None = None) -> Any:
    parameters = [{"name": "status", "valueCode": status}]
    if reason:
        parameters.append({"name": "reason", "valueString": reason})
    return staff.orders("POST", f"/fhir/ServiceRequest/{order['id']}/$status",
                        {"resourceType": "Parameters", "parameter": parameters},
                        headers={"If-Match": f'W/"{order["meta"]["versionId"]}"'})


def test_a_lab_order_is_coded_in_loinc_numbered_and_requested(physician: Staff, visit: Visit, chain: Chain) -> None:
    reply = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id))
    assert reply.status == 201, reply.body
    order = reply.body
    assert _status(order) == "requested" and order["status"] == "active"
    assert order["code"]["coding"][0]["code"] == "2823-3"
    assert order["identifier"][0]["system"] == "urn:expediente:placer"
    assert order["identifier"][0]["value"].startswith("L") and len(order["identifier"][0]["value"]) == 16
    assert order["requester"] == {"reference": f"Practitioner/{physician.practitioner_id}"}
    assert order["reasonCode"][0]["coding"][0]["code"] == "I10"
    events = [e for e in chain.world.world.published() if e["detail-type"] == "OrderStatusChanged"]
    assert events[-1]["detail"]["order_id"] == order["id"] and events[-1]["detail"]["status"] == "requested"


def test_a_lab_code_outside_the_catalogue_is_refused_naming_it(physician: Staff, visit: Visit) -> None:
    reply = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id,
                                                                       code="99999-9"))
    assert reply.status == 400 and "99999-9" in reply.issue


def test_an_imaging_order_gets_a_tenant_unique_accession_number(physician: Staff, visit: Visit) -> None:
    first = physician.orders("POST", "/fhir/ServiceRequest", imaging_order(visit.patient_id, visit.encounter_id))
    second = physician.orders("POST", "/fhir/ServiceRequest", imaging_order(visit.patient_id, visit.encounter_id))
    assert first.status == second.status == 201, first.body
    numbers = [r.body["identifier"][0] for r in (first, second)]
    assert all(n["system"] == "urn:expediente:accession" and n["value"].startswith("A") for n in numbers)
    assert len(numbers[0]["value"]) <= 16 and numbers[0]["value"] != numbers[1]["value"]
    found = physician.orders("GET", "/fhir/ServiceRequest", query={"identifier": numbers[0]["value"]})
    assert [e["resource"]["id"] for e in found.body["entry"]] == [first.body["id"]]


def test_an_imaging_order_names_modality_and_body_site(physician: Staff, visit: Visit) -> None:
    body = imaging_order(visit.patient_id, visit.encounter_id)
    del body["orderDetail"]
    assert physician.orders("POST", "/fhir/ServiceRequest", body).status == 400
    body = imaging_order(visit.patient_id, visit.encounter_id, bodySite=[])
    reply = physician.orders("POST", "/fhir/ServiceRequest", body)
    assert reply.status == 400 and "bodySite" in reply.issue


def test_the_clinical_reason_is_an_icd10_code(physician: Staff, visit: Visit) -> None:
    body = lab_order(visit.patient_id, visit.encounter_id, reasonCode=[])
    assert physician.orders("POST", "/fhir/ServiceRequest", body).status == 400
    body = lab_order(visit.patient_id, visit.encounter_id, reasonCode=[{"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q99.99"}]}])
    reply = physician.orders("POST", "/fhir/ServiceRequest", body)
    assert reply.status == 400 and "Q99.99" in reply.issue


def test_an_order_belongs_to_an_open_encounter_of_the_patient(physician: Staff, visit: Visit, chain: Chain,
                                                              reception: Staff) -> None:
    other = chain.register_patient(reception)
    reply = physician.orders("POST", "/fhir/ServiceRequest", lab_order(other, visit.encounter_id))
    assert reply.status == 422 and "not an encounter of this patient" in reply.issue


def test_status_moves_requested_in_process_completed_by_the_lab(physician: Staff, visit: Visit,
                                                                chain: Chain) -> None:
    lab = chain.staff("lab")
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    skipped = _move(lab, order, "completed")
    assert skipped.status == 409 and "can go to: cancelled, in-process" in skipped.issue
    assert _move(physician, order, "in-process").status == 403
    started = _move(lab, order, "in-process")
    assert started.status == 200, started.body
    assert _status(started.body) == "in-process" and started.headers["ETag"] == 'W/"2"'
    done = _move(lab, started.body, "completed")
    assert done.status == 200 and done.body["status"] == "completed"
    closed = _move(lab, done.body, "cancelled", "x")
    assert closed.status == 409 and "none (the order is closed)" in closed.issue
    history = physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}/_history")
    assert [_status(e["resource"]) for e in history.body["entry"]] == ["completed", "in-process", "requested"]
    moves = [(e["detail"]["previous_status"], e["detail"]["status"]) for e in chain.world.world.published()
             if e["detail-type"] == "OrderStatusChanged" and e["detail"]["order_id"] == order["id"]]
    assert moves == [(None, "requested"), ("requested", "in-process"), ("in-process", "completed")]


def test_cancelling_needs_a_reason_and_a_physician_or_the_department(physician: Staff, visit: Visit,
                                                                     chain: Chain) -> None:
    order = physician.orders("POST", "/fhir/ServiceRequest", imaging_order(visit.patient_id, visit.encounter_id)).body
    assert _move(physician, order, "cancelled").status == 400
    assert _move(chain.staff("lab"), order, "cancelled", "Sin equipo").status == 403
    cancelled = _move(physician, order, "cancelled", "Paciente se retiró")
    assert cancelled.status == 200 and cancelled.body["status"] == "revoked"
    assert any(e.get("valueString") == "Paciente se retiró" for e in cancelled.body["extension"])


def test_a_stale_status_change_is_refused(physician: Staff, visit: Visit, chain: Chain) -> None:
    lab = chain.staff("lab")
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    assert _move(lab, order, "in-process").status == 200
    assert _move(lab, order, "completed").status == 412


def test_each_clinic_has_a_worklist_per_status(physician: Staff, visit: Visit, chain: Chain) -> None:
    lab = chain.staff("lab")
    first = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    second = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id,
                                                                        code="2951-2")).body
    _move(lab, first, "in-process")
    requested = lab.orders("GET", "/fhir/ServiceRequest", query={"clinic": CLUES, "status": "requested"})
    in_process = lab.orders("GET", "/fhir/ServiceRequest", query={"clinic": CLUES, "status": "in-process"})
    assert [e["resource"]["id"] for e in requested.body["entry"]] == [second["id"]]
    assert [e["resource"]["id"] for e in in_process.body["entry"]] == [first["id"]]
    by_code = lab.orders("GET", "/fhir/ServiceRequest", query={"patient": visit.patient_id,
                                                                "code": "http://loinc.org|2951-2"})
    assert [e["resource"]["id"] for e in by_code.body["entry"]] == [second["id"]]
    labs = lab.orders("GET", "/fhir/ServiceRequest", query={"encounter": visit.encounter_id,
                                                             "category": "108252007"})
    assert len(labs.body["entry"]) == 2


def test_orders_are_never_edited_or_deleted(physician: Staff, visit: Visit) -> None:
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    assert physician.orders("PUT", f"/fhir/ServiceRequest/{order['id']}", order).status == 405
    assert physician.orders("DELETE", f"/fhir/ServiceRequest/{order['id']}").status == 405


def test_another_chain_never_sees_an_order(physician: Staff, visit: Visit, other_chain: Chain) -> None:
    order = physician.orders("POST", "/fhir/ServiceRequest", imaging_order(visit.patient_id, visit.encounter_id)).body
    stranger = other_chain.staff("radiology")
    assert stranger.orders("GET", f"/fhir/ServiceRequest/{order['id']}").status == 404
    number = order["identifier"][0]["value"]
    assert stranger.orders("GET", "/fhir/ServiceRequest", query={"identifier": number}).body.get("entry", []) == []


def test_a_note_lists_the_orders_it_placed(physician: Staff, visit: Visit) -> None:
    order = physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)).body
    note = physician.notes("POST", "/fhir/Composition", note_body(visit.patient_id, visit.encounter_id, "11506-3", [
        section("evolucion", "Se solicita potasio."), section("ordenes", None, [f"ServiceRequest/{order['id']}"])]))
    assert note.status == 201, note.body
    missing = physician.notes("POST", "/fhir/Composition", note_body(visit.patient_id, visit.encounter_id, "11506-3", [
        section("ordenes", None, ["ServiceRequest/nonexistent"])]))
    assert missing.status == 422 and "does not exist" in missing.issue


def test_reception_and_nurses_cannot_order(chain: Chain, visit: Visit, reception: Staff) -> None:
    assert reception.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)
                            ).status == 403
    assert chain.staff("nurse").orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)
                                       ).status == 403


def test_a_worklist_pages_with_the_parameters_the_client_sent(physician: Staff, visit: Visit, chain: Chain) -> None:
    lab = chain.staff("lab")
    ids = {physician.orders("POST", "/fhir/ServiceRequest", lab_order(visit.patient_id, visit.encounter_id)
                            ).body["id"] for _ in range(3)}
    first = lab.orders("GET", "/fhir/ServiceRequest", query={"clinic": CLUES, "status": "requested", "_count": "2"})
    next_url = next(link["url"] for link in first.body["link"] if link["relation"] == "next")
    assert "clinic=" in next_url and "worklist" not in next_url
    token = next_url.split("_page=")[1].split("&")[0]
    rest = lab.orders("GET", "/fhir/ServiceRequest", query={"clinic": CLUES, "status": "requested", "_count": "2",
                                                             "_page": token})
    seen = {e["resource"]["id"] for e in first.body["entry"]} | {e["resource"]["id"] for e in rest.body["entry"]}
    assert seen == ids
