"""Clinical notes: NOM-004 types and sections, drafts, signing, immutability, addenda, access."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.notes.conftest import (
    Chain,
    Staff,
    Visit,
    condition_body,
    encounter_body,
    note_body,
    open_visit,
    section,
)

SIGN = {"If-Match": 'W/"1"'}


def _create(staff: Staff, body: dict[str, Any]) -> dict[str, Any]:
    reply = staff.notes("POST", "/fhir/Composition", body)
    assert reply.status == 201, reply.body
    return dict(reply.body)


def _sign(staff: Staff, note: dict[str, Any]) -> Any:
    return staff.notes("POST", f"/fhir/Composition/{note['id']}/$sign",
                       headers={"If-Match": f'W/"{note["meta"]["versionId"]}"'})


def test_a_note_carries_author_clinic_date_and_the_patients_name_age_and_sex(physician: Staff, visit: Visit,
                                                                            chain: Chain) -> None:
    note = _create(physician, visit.historia_clinica())
    assert note["status"] == "preliminary"
    assert note["author"] == [{"reference": f"Practitioner/{physician.practitioner_id}"}]
    assert note["custodian"]["reference"] == f"Organization/{chain.clinic_id}"
    assert note["type"]["coding"][0]["code"] == "34117-2"
    assert note["title"] == "Historia clínica"
    snapshot = {e["url"]: e for e in note["extension"][0]["extension"]}
    assert snapshot["nombre"]["valueString"] == "JUAN PÉREZ GÓMEZ"
    assert snapshot["edad"]["valueAge"]["value"] >= 46
    assert snapshot["sexo"]["valueCode"] == "male"
    diagnoses = next(s for s in note["section"] if s["code"]["coding"][0]["code"] == "diagnosticos")
    assert diagnoses["entry"][0]["extension"][0]["valuePositiveInt"] == 1  # primary


def test_a_note_missing_a_required_section_cannot_be_signed_and_the_error_names_it(physician: Staff,
                                                                                   visit: Visit) -> None:
    body = visit.historia_clinica()
    body["section"] = [s for s in body["section"] if s["code"]["coding"][0]["code"] != "pronostico"]
    note = _create(physician, body)
    reply = _sign(physician, note)
    assert reply.status == 422
    assert "pronostico" in reply.issue
    assert physician.notes("GET", f"/fhir/Composition/{note['id']}").body["status"] == "preliminary"


def test_historia_clinica_needs_weight_and_height(physician: Staff, visit: Visit) -> None:
    body = visit.historia_clinica()
    for s in body["section"]:
        if s["code"]["coding"][0]["code"] == "signos-vitales":
            s["entry"] = [{"reference": visit.vitals["8867-4"]}]
    reply = _sign(physician, _create(physician, body))
    assert reply.status == 422
    assert "29463-7" in reply.issue and "8302-2" in reply.issue


def test_diagnoses_section_needs_a_coded_condition(physician: Staff, visit: Visit) -> None:
    body = visit.historia_clinica()
    for s in body["section"]:
        if s["code"]["coding"][0]["code"] == "diagnosticos":
            del s["entry"]
    reply = _sign(physician, _create(physician, body))
    assert reply.status == 422
    assert "diagnosticos (at least one coded Condition)" in reply.issue


def test_a_draft_is_edited_in_versions_with_if_match(physician: Staff, visit: Visit) -> None:
    note = _create(physician, visit.historia_clinica())
    edited = {**note, "section": [*note["section"]]}
    edited["section"][0] = section("antecedentes-heredofamiliares", "Padre hipertenso.")
    saved = physician.notes("PUT", f"/fhir/Composition/{note['id']}", edited, headers={"If-Match": 'W/"1"'})
    assert saved.status == 200, saved.body
    assert saved.headers["ETag"] == 'W/"2"'
    stale = physician.notes("PUT", f"/fhir/Composition/{note['id']}", edited, headers={"If-Match": 'W/"1"'})
    assert stale.status == 412
    history = physician.notes("GET", f"/fhir/Composition/{note['id']}/_history")
    assert [e["resource"]["meta"]["versionId"] for e in history.body["entry"]] == ["2", "1"]


def test_a_signed_note_never_changes(physician: Staff, visit: Visit) -> None:
    note = _create(physician, visit.historia_clinica())
    signed = _sign(physician, note)
    assert signed.status == 200, signed.body
    assert signed.body["status"] == "final"
    assert signed.body["attester"][0]["mode"] == "legal"
    assert signed.headers["X-Provenance"].startswith("Provenance/")
    body = {**signed.body, "title": "Otra cosa"}
    body.pop("attester")
    put = physician.notes("PUT", f"/fhir/Composition/{note['id']}", {**body, "status": "preliminary"},
                          headers={"If-Match": 'W/"2"'})
    assert put.status == 409
    assert "addendum" in put.issue
    assert physician.notes("PATCH", f"/fhir/Composition/{note['id']}", []).status == 409
    assert physician.notes("DELETE", f"/fhir/Composition/{note['id']}").status == 409
    assert _sign(physician, signed.body).status == 409
    assert physician.notes("GET", f"/fhir/Composition/{note['id']}").body["title"] == "Historia clínica"


def test_signing_pins_each_entry_to_the_version_the_author_saw(physician: Staff, visit: Visit) -> None:
    note = _create(physician, visit.historia_clinica())
    signed = _sign(physician, note).body
    diagnoses = next(s for s in signed["section"] if s["code"]["coding"][0]["code"] == "diagnosticos")
    assert diagnoses["entry"][0]["reference"] == f"Condition/{visit.condition_id}/_history/1"
    condition = physician.notes("GET", f"/fhir/Condition/{visit.condition_id}").body
    resolved = {**condition, "clinicalStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}}
    assert physician.notes("PUT", f"/fhir/Condition/{visit.condition_id}", resolved,
                           headers={"If-Match": 'W/"1"'}).status == 200
    verified = physician.notes("GET", f"/fhir/Composition/{note['id']}/$verify-signature")
    assert verified.body["parameter"][0]["valueBoolean"] is True, verified.body


def test_only_the_author_signs(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _create(physician, visit.historia_clinica())
    colleague = chain.staff("physician")
    reply = _sign(colleague, note)
    assert reply.status == 403
    assert "author" in reply.issue


def test_nurse_writes_and_signs_nursing_notes_but_not_medical_ones(chain: Chain, visit: Visit,
                                                                    physician: Staff) -> None:
    nurse = chain.staff("nurse")
    medical = nurse.notes("POST", "/fhir/Composition", visit.historia_clinica())
    assert medical.status == 403
    nursing = _create(nurse, note_body(visit.patient_id, visit.encounter_id, "28623-7", [
        section("signos-vitales", None, [visit.vitals["8867-4"]]),
        section("observaciones-enfermeria", "Paciente tranquilo.")]))
    assert _sign(nurse, nursing).status == 200
    medical_by_physician = _create(physician, visit.historia_clinica())
    assert _sign(nurse, medical_by_physician).status == 403


def test_entries_must_belong_to_the_same_patient(physician: Staff, visit: Visit, chain: Chain,
                                                 reception: Staff) -> None:
    other = chain.register_patient(reception)
    foreign = physician.notes("POST", "/fhir/Condition", condition_body(other)).body
    body = visit.historia_clinica()
    for s in body["section"]:
        if s["code"]["coding"][0]["code"] == "diagnosticos":
            s["entry"] = [{"reference": f"Condition/{foreign['id']}"}]
    reply = physician.notes("POST", "/fhir/Composition", body)
    assert reply.status == 422
    assert "belongs to another patient" in reply.issue


def test_entries_must_exist_in_the_tenant(physician: Staff, visit: Visit, other_chain: Chain) -> None:
    stranger = other_chain.staff("physician")
    stranger_patient = other_chain.register_patient(other_chain.staff("reception", practitioner=False))
    theirs = stranger.notes("POST", "/fhir/Condition", condition_body(stranger_patient)).body
    body = visit.historia_clinica()
    for s in body["section"]:
        if s["code"]["coding"][0]["code"] == "diagnosticos":
            s["entry"] = [{"reference": f"Condition/{theirs['id']}"}]
    reply = physician.notes("POST", "/fhir/Composition", body)
    assert reply.status == 422
    assert "does not exist" in reply.issue


def test_the_treatment_section_references_the_patients_prescriptions(physician: Staff, visit: Visit) -> None:
    from tests.integration.prescriptions.conftest import prescription, rx

    def with_treatment(reference: str) -> dict[str, Any]:
        body = visit.historia_clinica()
        for s in body["section"]:
            if s["code"]["coding"][0]["code"] == "tratamiento":
                s["entry"] = [{"reference": reference}]
        return body

    missing = physician.notes("POST", "/fhir/Composition", with_treatment("MedicationRequest/abc"))
    assert missing.status == 422
    assert "MedicationRequest/abc" in missing.issue
    drafted = rx(physician, "POST", "/fhir/MedicationRequest", prescription(visit.patient_id))
    assert drafted.status == 201, drafted.body
    note = physician.notes("POST", "/fhir/Composition", with_treatment(f"MedicationRequest/{drafted.body['id']}"))
    assert note.status == 201, note.body


def test_reception_sees_a_note_without_its_narrative(physician: Staff, visit: Visit, reception: Staff) -> None:
    note = _create(physician, visit.historia_clinica())
    seen = reception.notes("GET", f"/fhir/Composition/{note['id']}")
    assert seen.status == 200
    assert all("text" not in s for s in seen.body["section"])
    assert {"code": "REDACTED"}.items() <= seen.body["meta"]["security"][-1].items()
    full = physician.notes("GET", f"/fhir/Composition/{note['id']}")
    assert "Madre con diabetes" in str(full.body)
    assert "Madre con diabetes" not in str(seen.body)
    listed = reception.notes("GET", "/fhir/Composition", query={"patient": visit.patient_id})
    assert "Madre con diabetes" not in str(listed.body)


def test_lab_cannot_read_narrative_either(chain: Chain, physician: Staff, visit: Visit) -> None:
    lab = chain.staff("lab")
    note = _create(physician, visit.historia_clinica())
    assert "Madre con diabetes" not in str(lab.notes("GET", f"/fhir/Composition/{note['id']}").body)


def test_addendum_appends_to_a_signed_note_which_stays_readable(physician: Staff, visit: Visit) -> None:
    original = _sign(physician, _create(physician, visit.historia_clinica())).body
    addendum = _create(physician, note_body(visit.patient_id, visit.encounter_id, "34117-2", [
        section("motivo-addendum", "Se agrega antecedente omitido."),
        section("antecedentes-personales-patologicos", "Apendicectomía en 2001.")],
        relatesTo=[{"code": "appends", "targetReference": {"reference": f"Composition/{original['id']}"}}]))
    assert _sign(physician, addendum).status == 200
    again = physician.notes("GET", f"/fhir/Composition/{original['id']}")
    assert again.body["status"] == "final"
    assert any(t["code"] == "appended" and addendum["id"] in t["display"] for t in again.body["meta"]["tag"])
    related = physician.notes("GET", "/fhir/Composition", query={"related-ref": f"Composition/{original['id']}"})
    assert [e["resource"]["id"] for e in related.body["entry"]] == [addendum["id"]]
    verified = physician.notes("GET", f"/fhir/Composition/{original['id']}/$verify-signature")
    assert verified.body["parameter"][0]["valueBoolean"] is True


def test_a_retraction_is_a_signed_addendum_with_a_reason(physician: Staff, visit: Visit) -> None:
    original = _sign(physician, _create(physician, visit.historia_clinica())).body
    retraction = _create(physician, note_body(
        visit.patient_id, visit.encounter_id, "34117-2", [section("motivo-addendum", "Nota en paciente equivocado.")],
        relatesTo=[{"code": "replaces", "targetReference": {"reference": f"Composition/{original['id']}"}}],
        extension=[{"url": "https://expediente.mx/fhir/StructureDefinition/retractacion",
                    "valueString": "Registrada en el expediente equivocado"}]))
    assert _sign(physician, retraction).status == 200
    tags = physician.notes("GET", f"/fhir/Composition/{original['id']}").body["meta"]["tag"]
    assert [t["code"] for t in tags] == ["retracted"]


def test_an_addendum_to_a_draft_is_refused(physician: Staff, visit: Visit) -> None:
    draft = _create(physician, visit.historia_clinica())
    reply = physician.notes("POST", "/fhir/Composition", note_body(
        visit.patient_id, visit.encounter_id, "34117-2", [section("motivo-addendum", "x")],
        relatesTo=[{"code": "appends", "targetReference": {"reference": f"Composition/{draft['id']}"}}]))
    assert reply.status == 422
    assert "not signed" in reply.issue


def test_interconsulta_reply_answers_a_signed_request(physician: Staff, visit: Visit, chain: Chain) -> None:
    request = _create(physician, note_body(visit.patient_id, visit.encounter_id, "11488-4", [
        section("motivo-interconsulta", "Valoración por cardiología."),
        section("diagnosticos", None, [f"Condition/{visit.condition_id}"])]))
    reply_body = note_body(visit.patient_id, visit.encounter_id, "11488-4", [
        section("criterios-diagnosticos", "Hipertensión grado 1."),
        section("plan-estudio", "Ecocardiograma."),
        section("sugerencias", "Iniciar IECA."),
        section("diagnosticos", None, [f"Condition/{visit.condition_id}"])],
        extension=[{"url": "https://expediente.mx/fhir/StructureDefinition/respuesta-a",
                    "valueReference": {"reference": f"Composition/{request['id']}"}}])
    cardiologist = chain.staff("physician")
    early = cardiologist.notes("POST", "/fhir/Composition", reply_body)
    assert early.status == 422
    assert _sign(physician, request).status == 200
    answer = _create(cardiologist, reply_body)
    assert answer["category"][0]["coding"][0]["code"] == "interconsulta-respuesta"
    assert _sign(cardiologist, answer).status == 200


def test_egreso_belongs_to_an_inpatient_stay(physician: Staff, patient_id: str) -> None:
    encounter = physician.notes("POST", "/fhir/Encounter", encounter_body(patient_id)).body
    reply = physician.notes("POST", "/fhir/Composition", note_body(patient_id, encounter["id"], "18842-5", []))
    assert reply.status == 422
    assert "inpatient" in reply.issue


def test_notes_are_searched_by_patient_type_author_status_and_date(physician: Staff, visit: Visit) -> None:
    first = _sign(physician, _create(physician, visit.historia_clinica())).body
    progress = _create(physician, note_body(visit.patient_id, visit.encounter_id, "11506-3", [
        section("evolucion", "Mejoría.")]))
    by_patient = physician.notes("GET", "/fhir/Composition", query={"patient": visit.patient_id})
    assert [e["resource"]["id"] for e in by_patient.body["entry"]] == [progress["id"], first["id"]]
    finals = physician.notes("GET", "/fhir/Composition", query={"patient": visit.patient_id, "status": "final"})
    assert [e["resource"]["id"] for e in finals.body["entry"]] == [first["id"]]
    by_type = physician.notes("GET", "/fhir/Composition", query={"encounter": visit.encounter_id, "type": "11506-3"})
    assert [e["resource"]["id"] for e in by_type.body["entry"]] == [progress["id"]]
    by_author = physician.notes("GET", "/fhir/Composition", query={"author": physician.practitioner_id,
                                                                   "date": "ge2020-01-01"})
    assert len(by_author.body["entry"]) == 2
    future = physician.notes("GET", "/fhir/Composition", query={"patient": visit.patient_id, "date": "gt2099"})
    assert future.body.get("entry", []) == []


def test_timeline_includes_encounter_author_and_signature(physician: Staff, visit: Visit) -> None:
    signed = _sign(physician, _create(physician, visit.historia_clinica())).body
    timeline = physician.notes("GET", "/fhir/Composition", query={
        "patient": visit.patient_id, "_count": "10", "_include": "Composition:encounter,Composition:author",
        "_revinclude": "Provenance:target"})
    assert timeline.status == 200, timeline.body
    kinds = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in timeline.body["entry"])
    assert kinds == [("Composition", "match"), ("Encounter", "include"), ("Practitioner", "include"),
                     ("Provenance", "include")]
    provenance = next(e["resource"] for e in timeline.body["entry"] if e["resource"]["resourceType"] == "Provenance")
    assert provenance["target"][0]["reference"] == f"Composition/{signed['id']}/_history/2"


def test_patient_reads_own_notes_only(chain: Chain, physician: Staff, visit: Visit, reception: Staff) -> None:
    note = _sign(physician, _create(physician, visit.historia_clinica())).body
    me = chain.patient_user(visit.patient_id)
    own = me.notes("GET", f"/fhir/Composition/{note['id']}")
    assert own.status == 200
    assert "Madre con diabetes" in str(own.body)
    other_patient = chain.register_patient(reception)
    other_visit = open_visit(physician, other_patient)
    other_note = _create(physician, other_visit.historia_clinica())
    assert me.notes("GET", f"/fhir/Composition/{other_note['id']}").status == 404
    theirs = me.notes("GET", "/fhir/Composition", query={"patient": other_patient})
    assert theirs.body.get("entry", []) == []
    mine = me.notes("GET", "/fhir/Composition", query={})
    assert [e["resource"]["id"] for e in mine.body["entry"]] == [note["id"]]
    assert me.notes("POST", "/fhir/Composition", visit.historia_clinica()).status == 403
    assert me.notes("GET", f"/fhir/Composition/{note['id']}/$verify-signature").body["parameter"][0][
        "valueBoolean"] is True


def test_reads_signatures_and_addenda_are_audited(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _create(physician, visit.historia_clinica())
    _sign(physician, note)
    physician.notes("GET", f"/fhir/Composition/{note['id']}")
    auditor = chain.staff("auditor", practitioner=False)
    events = auditor.admin("GET", "/fhir/AuditEvent", query={"patient": visit.patient_id, "_count": "100"})
    assert events.status == 200, events.body
    actions = [(e["resource"]["subtype"][0]["code"],
                next((x["what"]["reference"] for x in e["resource"].get("entity", []) if "Composition" in
                      x.get("what", {}).get("reference", "")), None)) for e in events.body["entry"]]
    ref = f"Composition/{note['id']}"
    assert ("create", ref) in actions
    assert ("read", ref) in actions
    assert ("$sign", ref) in actions  # operations name themselves in AuditEvent.subtype


def test_only_the_author_edits_a_draft(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _create(physician, visit.historia_clinica())
    colleague = chain.staff("physician")
    reply = colleague.notes("PUT", f"/fhir/Composition/{note['id']}", note, headers={"If-Match": 'W/"1"'})
    assert reply.status == 403
    assert "author" in reply.issue


def test_sections_are_coded_once_each_and_text_only_sections_hold_no_entries(physician: Staff,
                                                                             visit: Visit) -> None:
    body = visit.historia_clinica()
    duplicate = {**body, "section": [*body["section"], section("pronostico", "Otra vez.")]}
    reply = physician.notes("POST", "/fhir/Composition", duplicate)
    assert reply.status == 400 and "pronostico appears twice" in reply.issue
    unknown = {**body, "section": [*body["section"], section("inventada", "x")]}
    assert physician.notes("POST", "/fhir/Composition", unknown).status == 400
    text_only = {**body, "section": [s for s in body["section"] if s["code"]["coding"][0]["code"] != "pronostico"]
                 + [section("pronostico", "Bueno.", [f"Condition/{visit.condition_id}"])]}
    reply = physician.notes("POST", "/fhir/Composition", text_only)
    assert reply.status == 400 and "holds text only" in reply.issue


def test_a_diagnosis_section_has_exactly_one_primary(physician: Staff, visit: Visit) -> None:
    second = physician.notes("POST", "/fhir/Condition", condition_body(visit.patient_id, "E11.9")).body
    rank = "https://expediente.mx/fhir/StructureDefinition/rango-diagnostico"
    body = visit.historia_clinica()
    for s in body["section"]:
        if s["code"]["coding"][0]["code"] == "diagnosticos":
            s["entry"] = [{"reference": f"Condition/{visit.condition_id}", "extension": [
                              {"url": rank, "valuePositiveInt": 2}]},
                          {"reference": f"Condition/{second['id']}", "extension": [
                              {"url": rank, "valuePositiveInt": 2}]}]
    reply = physician.notes("POST", "/fhir/Composition", body)
    assert reply.status == 400 and "exactly one primary" in reply.issue
    body["section"][8]["entry"][1]["extension"][0]["valuePositiveInt"] = 1
    note = _create(physician, body)
    diagnoses = next(s for s in note["section"] if s["code"]["coding"][0]["code"] == "diagnosticos")
    assert [e["extension"][0]["valuePositiveInt"] for e in diagnoses["entry"]] == [2, 1]


def test_a_note_needs_an_open_encounter_of_its_patient(physician: Staff, visit: Visit) -> None:
    encounter = physician.notes("GET", f"/fhir/Encounter/{visit.encounter_id}").body
    cancelled = physician.notes("POST", "/fhir/Encounter", encounter_body(visit.patient_id, status="arrived")).body
    assert physician.notes("PUT", f"/fhir/Encounter/{cancelled['id']}", {**cancelled, "status": "cancelled"},
                           headers={"If-Match": 'W/"1"'}).status == 200
    body = visit.historia_clinica()
    body["encounter"] = {"reference": f"Encounter/{cancelled['id']}"}
    reply = physician.notes("POST", "/fhir/Composition", body)
    assert reply.status == 422 and "cancelled" in reply.issue
    assert encounter["status"] == "in-progress"


def test_the_note_type_and_its_category_must_agree(physician: Staff, visit: Visit) -> None:
    body = {**visit.historia_clinica(), "category": [{"coding": [{
        "system": "https://expediente.mx/fhir/CodeSystem/tipo-nota", "code": "evolucion"}]}]}
    reply = physician.notes("POST", "/fhir/Composition", body)
    assert reply.status == 400 and "does not match" in reply.issue
    unknown = {**visit.historia_clinica(), "type": {"coding": [{"system": "http://loinc.org", "code": "11111-1"}]}}
    assert physician.notes("POST", "/fhir/Composition", unknown).status == 400


def test_a_retraction_needs_the_note_it_retracts_and_hides_its_reason_from_reception(
        physician: Staff, visit: Visit, reception: Staff) -> None:
    retraction_ext = [{"url": "https://expediente.mx/fhir/StructureDefinition/retractacion",
                       "valueString": "Paciente equivocado"}]
    loose = physician.notes("POST", "/fhir/Composition", note_body(
        visit.patient_id, visit.encounter_id, "34117-2", [section("motivo-addendum", "x")], extension=retraction_ext))
    assert loose.status == 400 and "relatesTo" in loose.issue
    original = _sign(physician, _create(physician, visit.historia_clinica())).body
    retraction = _create(physician, note_body(
        visit.patient_id, visit.encounter_id, "34117-2", [section("motivo-addendum", "Error de registro.")],
        relatesTo=[{"code": "replaces", "targetReference": {"reference": f"Composition/{original['id']}"}}],
        extension=retraction_ext))
    seen = reception.notes("GET", f"/fhir/Composition/{retraction['id']}").body
    assert "Paciente equivocado" not in json.dumps(seen)
    assert "Error de registro" not in json.dumps(seen)


def test_an_addendum_to_another_patients_note_is_refused(physician: Staff, visit: Visit, chain: Chain,
                                                         reception: Staff) -> None:
    original = _sign(physician, _create(physician, visit.historia_clinica())).body
    other = open_visit(physician, chain.register_patient(reception))
    reply = physician.notes("POST", "/fhir/Composition", note_body(
        other.patient_id, other.encounter_id, "34117-2", [section("motivo-addendum", "x")],
        relatesTo=[{"code": "appends", "targetReference": {"reference": f"Composition/{original['id']}"}}]))
    assert reply.status == 422 and "not a note of this patient" in reply.issue


def test_an_inactive_practitioner_cannot_write_notes(physician: Staff, visit: Visit, chain: Chain) -> None:
    practitioner = chain.tenant.admin.get(f"/fhir/Practitioner/{physician.practitioner_id}").body
    deactivated = chain.tenant.admin.call("PUT", f"/fhir/Practitioner/{physician.practitioner_id}",
                                          {**practitioner, "active": False}, headers={"If-Match": 'W/"1"'})
    assert deactivated.status == 200, deactivated.body
    reply = physician.notes("POST", "/fhir/Composition", visit.historia_clinica())
    assert reply.status == 403 and "not an active practitioner" in reply.issue
