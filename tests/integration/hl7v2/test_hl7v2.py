"""HL7 v2 over HTTPS end to end: ORU^R01 results matched to orders, ADT^A04/A08 through the patient rules,
ACKs with ERR segments, one storage per MSH-10, batches, and nothing stored for a refused message."""

from __future__ import annotations

import itertools
from typing import Any

import hl7
import pytest

from tests.conftest import Reply, invoke
from tests.integration.admin.conftest import api_event
from tests.integration.notes.conftest import CLUES, Chain, Staff
from tests.integration.orders.conftest import lab_order
from tests.integration.results.test_laboratory import deliver_to_orders
from tests.support.curp import make_curp

ER7 = "x-application/hl7-v2+er7"
_CONTROL = itertools.count(1)


def send(staff: Staff, text: str, *, content_type: str = ER7) -> Reply:
    from functions.hl7v2.handler import lambda_handler

    return invoke(lambda_handler, api_event("POST", "/hl7v2", claims=staff.caller.claims, body=text,
                                            headers={**staff.caller.headers, "Content-Type": content_type}))


def segments(ack: str) -> dict[str, list[Any]]:
    message = hl7.parse(ack.replace("\r\n", "\r"))
    out: dict[str, list[Any]] = {}
    for segment in message:
        out.setdefault(str(segment[0]), []).append(segment)
    return out


def msa(ack: str) -> tuple[str, str]:
    row = segments(ack)["MSA"][0]
    return str(row[1]), str(row[2]) if len(row) > 2 else ""


def err(ack: str) -> tuple[str, str]:
    """ERR-2 (location) and ERR-3 code of the first error."""
    row = segments(ack)["ERR"][0]
    return str(row[2]), str(row[3][0][0])


def oru(*, patient: str, placer: str, obx: list[str], control: str | None = None, obr_status: str = "F",
        service: str = "2823-3^Potassium^LN") -> str:
    control = control or f"LAB{next(_CONTROL):06d}"
    lines = [r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|" + CLUES + "|20261125143000-0600||ORU^R01^ORU_R01|"
             + control + "|P|2.5.1",
             f"PID|1||{patient}^^^EXPEDIENTE^MR||PÉREZ GÓMEZ^JUAN||19800101|M",
             f"ORC|RE|{placer}|F-{control}||CM",
             f"OBR|1|{placer}|F-{control}|{service}|||20261125080000-0600||||||||||||||||||{obr_status}",
             *obx]
    return "\r".join(lines) + "\r"


def potassium(value: str, *, status: str = "F", set_id: int = 1, flags: str = "") -> str:
    return (f"OBX|{set_id}|NM|2823-3^Potassium^LN||{value}|mmol/L^^UCUM|3.5-5.1|{flags}|||{status}|||"
            "20261125080000-0600")


def placer_of(order: dict[str, Any]) -> str:
    return str(order["identifier"][0]["value"])


class Interface:
    """A patient with an open visit and a lab order placed by a physician; the lab's interface user."""

    def __init__(self, chain: Chain, physician: Staff, reception: Staff):
        self.chain, self.physician = chain, physician
        self.lab = chain.staff("lab")  # the laboratory's interface user, linked to its responsible chemist
        self.patient = chain.register_patient(reception)
        encounter = physician.notes("POST", "/fhir/Encounter", {
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{self.patient}"}})
        self.encounter = encounter.body["id"]

    def order(self, code: str = "2823-3") -> dict[str, Any]:
        reply = self.physician.orders("POST", "/fhir/ServiceRequest", lab_order(self.patient, self.encounter, code))
        assert reply.status == 201, reply.body
        return dict(reply.body)

    def results(self, order_id: str) -> list[dict[str, Any]]:
        reply = self.physician.results("GET", "/fhir/Observation", query={"based-on": f"ServiceRequest/{order_id}"})
        return [e["resource"] for e in reply.body.get("entry", [])]

    def reports(self, order_id: str) -> list[dict[str, Any]]:
        reply = self.physician.results("GET", "/fhir/DiagnosticReport",
                                       query={"based-on": f"ServiceRequest/{order_id}"})
        return [e["resource"] for e in reply.body.get("entry", [])]


@pytest.fixture
def interface(chain: Chain, physician: Staff, reception: Staff) -> Interface:
    chain.world.world.published()
    return Interface(chain, physician, reception)


# ------------------------------------------------------------------ ORU^R01 ---


def test_an_oru_is_stored_linked_to_its_order_acknowledged_and_completes_the_order(interface: Interface) -> None:
    order = interface.order()
    message = oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.4")], control="LAB900001")
    reply = send(interface.lab, message)
    assert reply.status == 200 and reply.headers["Content-Type"] == ER7
    assert msa(reply.body) == ("AA", "LAB900001")
    header = segments(reply.body)["MSH"][0]
    assert str(header[3]) == "EXPEDIENTE" and str(header[5]) == "LABSYS"  # sender and receiver swapped
    [result] = interface.results(order["id"])
    assert result["valueQuantity"]["value"] == 4.4 and result["status"] == "final"
    assert result["interpretation"][0]["coding"][0]["code"] == "N"
    [report] = interface.reports(order["id"])
    assert report["status"] == "final" and report["result"] == [{"reference": f"Observation/{result['id']}"}]
    deliver_to_orders(interface.chain)
    status = interface.physician.orders("GET", f"/fhir/ServiceRequest/{order['id']}").body
    assert next(e["valueCode"] for e in status["extension"] if e["url"].endswith("/estado-orden")) == "completed"


def test_the_same_message_twice_is_acknowledged_twice_and_stored_once(interface: Interface) -> None:
    order = interface.order()
    message = oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.0")], control="LAB900002")
    assert msa(send(interface.lab, message).body)[0] == "AA"
    again = send(interface.lab, message)
    assert msa(again.body) == ("AA", "LAB900002")
    assert len(interface.results(order["id"])) == 1
    history = interface.physician.results("GET", f"/fhir/Observation/{interface.results(order['id'])[0]['id']}"
                                                 "/_history")
    assert history.body["total"] == 1


def test_a_preliminary_result_becomes_final_and_a_correction_keeps_both_versions(interface: Interface) -> None:
    order = interface.order()
    placer = placer_of(order)
    first = send(interface.lab, oru(patient=interface.patient, placer=placer, obx=[potassium("4.0", status="P")],
                                    obr_status="P"))
    assert msa(first.body)[0] == "AA"
    [preliminary] = interface.results(order["id"])
    assert preliminary["status"] == "preliminary"
    final = send(interface.lab, oru(patient=interface.patient, placer=placer, obx=[potassium("4.1")]))
    assert msa(final.body)[0] == "AA"
    repeated_final = send(interface.lab, oru(patient=interface.patient, placer=placer, obx=[potassium("4.3")]))
    assert msa(repeated_final.body)[0] == "AE" and err(repeated_final.body)[1] == "207"
    corrected = send(interface.lab, oru(patient=interface.patient, placer=placer,
                                        obx=[potassium("4.6", status="C")], obr_status="C"))
    assert msa(corrected.body)[0] == "AA", corrected.body
    [result] = interface.results(order["id"])
    assert (result["status"], result["valueQuantity"]["value"], result["meta"]["versionId"]) == ("corrected", 4.6,
                                                                                                   "3")
    v2 = interface.physician.results("GET", f"/fhir/Observation/{result['id']}/_history/2").body
    assert (v2["status"], v2["valueQuantity"]["value"]) == ("final", 4.1)
    [report] = interface.reports(order["id"])
    assert report["status"] == "corrected"


@pytest.mark.parametrize(("change", "location", "code"), [
    (lambda m: m.replace("|4.4|", "|4..4|"), "OBX^1^5", "102"),
    (lambda m: m.replace("2823-3^Potassium^LN", "2823-4^Potassium^LN"), "OBX^1^3", "103"),
    (lambda m: m.replace("2823-3^Potassium^LN", "K^Potassium^L"), "OBX^1^3", "103"),
    (lambda m: m.replace("mmol/L^^UCUM", ""), "OBX^1^6", "101"),
    (lambda m: m.replace("|F|||20261125080000-0600", "||||20261125080000-0600"), "OBX^1^11", "101"),
    (lambda m: m.replace("^^^EXPEDIENTE^MR", "^^^OTRO^MR"), "PID^1^3", "204"),
])
def test_a_refused_result_stores_nothing_and_the_err_segment_names_the_field(
        interface: Interface, change: Any, location: str, code: str) -> None:
    order = interface.order()
    message = change(oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.4")]))
    reply = send(interface.lab, message)
    assert reply.status == 200
    assert msa(reply.body)[0] == "AE", reply.body
    where, error_code = err(reply.body)
    assert where.startswith(location) and error_code == code, reply.body
    assert interface.results(order["id"]) == [] and interface.reports(order["id"]) == []


def test_a_result_for_another_patients_order_or_an_unknown_order_is_refused(
        interface: Interface, reception: Staff) -> None:
    order = interface.order()
    someone_else = interface.chain.register_patient(reception)
    wrong_patient = send(interface.lab, oru(patient=someone_else, placer=placer_of(order), obx=[potassium("4.4")]))
    assert msa(wrong_patient.body)[0] == "AE" and err(wrong_patient.body) == ("PID^1^3", "204")
    unknown = send(interface.lab, oru(patient=interface.patient, placer="L20261125XXXXXXX", obx=[potassium("4.4")]))
    assert msa(unknown.body)[0] == "AE" and err(unknown.body)[0].startswith("OBR^1^2")
    assert interface.results(order["id"]) == []


def test_one_bad_result_in_a_message_rejects_the_whole_message(interface: Interface) -> None:
    order = interface.order("24323-8")
    message = oru(patient=interface.patient, placer=placer_of(order), service="24323-8^CMP^LN", obx=[
        potassium("4.4"),
        "OBX|2|NM|2951-2^Sodium^LN||abc|mmol/L^^UCUM|136-145||||F|||20261125080000-0600"])
    reply = send(interface.lab, message)
    assert msa(reply.body)[0] == "AE" and err(reply.body) == ("OBX^2^5", "102")
    assert interface.results(order["id"]) == []


def test_a_critical_value_over_hl7_alerts_the_ordering_physician(interface: Interface) -> None:
    order = interface.order()
    reply = send(interface.lab, oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("7.1",
                                                                                                      flags="HH")]))
    assert msa(reply.body)[0] == "AA"
    [result] = interface.results(order["id"])
    assert result["interpretation"][0]["coding"][0]["code"] == "HH"
    detected = [e["detail"] for e in interface.chain.world.world.published()
                if e["detail-type"] == "CriticalResultDetected"]
    assert [(d["observation_id"], d["practitioner_id"]) for d in detected] == [
        (result["id"], interface.physician.practitioner_id)]


def test_a_large_panel_is_stored_whole_across_transactions(interface: Interface) -> None:
    codes = ["2823-3", "2951-2", "2345-7", "17861-6", "2524-7", "2075-0", "2028-9", "3094-0", "2160-0", "1742-6",
             "1920-8", "1975-2", "2885-2", "1751-7", "6768-6", "2093-3", "2571-8", "2085-9"]
    from expediente import loinc

    codes = [c for c in codes if loinc.lookup(c) is not None and not loinc.lookup(c).panel]  # type: ignore[union-attr]
    assert len(codes) >= 15
    order = interface.order("24323-8")
    obx = [f"OBX|{i}|NM|{code}^Test^LN||{10 + i}|{(loinc.lookup(code).units or ('1',))[0]}^^UCUM|||||F|||"  # type: ignore[union-attr]
           "20261125080000-0600" for i, code in enumerate(codes, start=1)]
    reply = send(interface.lab, oru(patient=interface.patient, placer=placer_of(order), service="24323-8^CMP^LN",
                                    obx=obx, control="LAB900099"))
    assert msa(reply.body)[0] == "AA", reply.body
    reply = interface.physician.results("GET", "/fhir/Observation", query={
        "based-on": f"ServiceRequest/{order['id']}", "_count": "100"})
    assert len(reply.body["entry"]) == len(codes)


def test_a_user_without_the_lab_role_cannot_send_results(interface: Interface) -> None:
    order = interface.order()
    reply = send(interface.chain.staff("reception", practitioner=False),
                 oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.4")]))
    assert msa(reply.body)[0] == "AR" and err(reply.body)[1] == "207"
    assert interface.results(order["id"]) == []


# ------------------------------------------------------------------ ADT ---


def adt(event: str, curp: str, *, control: str, family: str = "PÉREZ GÓMEZ", given: str = "JUAN",
        birth: str = "19800101", sex: str = "M", extra_id: str = "", address: str = "") -> str:
    lines = [r"MSH|^~\&|ADMISION|" + CLUES + "|EXPEDIENTE|" + CLUES + f"|20261125090000-0600||ADT^{event}^ADT_A01|"
             + control + "|P|2.5.1",
             f"EVN|{event}|20261125090000-0600",
             f"PID|1||{curp}^^^RENAPO^NI{extra_id}||{family}^{given}||{birth}|{sex}|||{address}",
             "PV1|1|O"]
    return "\r".join(lines) + "\r"


def test_adt_registers_a_patient_by_curp_once_and_updates_it(chain: Chain, reception: Staff) -> None:
    curp = make_curp(consonants="RZN")
    registered = send(reception, adt("A04", curp, control="ADM0001", address="CALLE 1^^CIUDAD^09^03100^MEX^H^^015"))
    assert msa(registered.body) == ("AA", "ADM0001"), registered.body
    found = reception.patients("GET", "/fhir/Patient", query={"identifier": f"urn:oid:2.16.840.1.113883.4.629|{curp}"})
    [patient] = [e["resource"] for e in found.body["entry"]]
    assert patient["name"][0]["family"] == "PÉREZ GÓMEZ" and patient["birthDate"] == "1980-01-01"
    assert patient["address"][0]["state"] == "09"
    again = send(reception, adt("A04", curp, control="ADM0001"))
    assert msa(again.body)[0] == "AA"  # same MSH-10: acknowledged, not stored twice
    duplicate = send(reception, adt("A04", curp, control="ADM0002"))
    assert msa(duplicate.body)[0] == "AE" and err(duplicate.body) == ("PID^1^3", "205")
    updated = send(reception, adt("A08", curp, control="ADM0003", given="JUAN CARLOS"))
    assert msa(updated.body)[0] == "AA", updated.body
    current = reception.patients("GET", f"/fhir/Patient/{patient['id']}").body
    assert current["name"][0]["given"] == ["JUAN", "CARLOS"] and current["meta"]["versionId"] == "2"
    events = [e["detail-type"] for e in chain.world.world.published()]
    assert events.count("PatientRegistered") == 1 and events.count("PatientUpdated") == 1


def test_adt_applies_the_curp_rules_and_names_the_field(reception: Staff) -> None:
    curp = make_curp(consonants="RZM")
    bad_check_digit = curp[:-1] + ("0" if curp[-1] != "0" else "1")
    reply = send(reception, adt("A04", bad_check_digit, control="ADM0101"))
    assert msa(reply.body)[0] == "AE" and err(reply.body)[0].startswith("PID^1^3")
    wrong_sex = send(reception, adt("A04", curp, control="ADM0102", sex="F"))
    assert msa(wrong_sex.body)[0] == "AE" and err(wrong_sex.body)[0].startswith("PID^1^8")
    unknown = send(reception, adt("A08", make_curp(consonants="RZP"), control="ADM0103"))
    assert msa(unknown.body)[0] == "AE" and err(unknown.body) == ("PID^1^3", "204")
    lab_user_adt = send(Staff(reception.caller, None), adt("A04", curp, control="ADM0104"))
    assert msa(lab_user_adt.body)[0] == "AA"  # reception may register


def test_a_batch_is_answered_with_one_ack_per_message(interface: Interface, reception: Staff) -> None:
    order = interface.order()
    good = oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.4")], control="LAB800001")
    bad = oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("x")], control="LAB800002")
    batch = r"BHS|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|" + CLUES + "|20261125150000-0600\r" + good + bad + "BTS|2\r"
    reply = send(interface.lab, batch)
    assert reply.status == 200
    parsed = hl7.parse_batch(reply.body)
    answers = [(str(m.segment("MSA")[1]), str(m.segment("MSA")[2])) for m in parsed]
    assert answers == [("AA", "LAB800001"), ("AE", "LAB800002")]
    assert len(interface.results(order["id"])) == 1
    wrong_count = send(interface.lab, batch.replace("BTS|2", "BTS|3"))
    assert msa(wrong_count.body)[0] == "AR"


def test_not_er7_and_no_token_are_refused(interface: Interface) -> None:
    assert send(interface.lab, '{"resourceType": "Bundle"}', content_type="application/json").status == 415
    junk = send(interface.lab, "hello")
    assert junk.status == 200 and msa(junk.body)[0] == "AR"
    from functions.hl7v2.handler import lambda_handler

    anonymous = invoke(lambda_handler, api_event("POST", "/hl7v2", claims=None, body="MSH|^~\\&|X",
                                                 headers={"Content-Type": ER7}))
    assert anonymous.status == 401


def test_a_message_interrupted_between_transactions_is_completed_not_duplicated_when_resent(
        interface: Interface, monkeypatch: pytest.MonkeyPatch) -> None:
    from expediente.store import TransactionConflict
    from functions.hl7v2 import ingest

    order = interface.order("24323-8")
    obx = [potassium("4.4"), "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|136-145||||F|||20261125080000-0600",
           "OBX|3|NM|2345-7^Glucose^LN||90|mg/dL^^UCUM|70-99||||F|||20261125080000-0600"]
    message = oru(patient=interface.patient, placer=placer_of(order), service="24323-8^CMP^LN", obx=obx,
                  control="LAB700001")
    monkeypatch.setattr(ingest, "MAX_OPS", 8)  # one result per transaction
    real = ingest.transact
    calls: list[int] = []

    def fail_on_the_third(items: list[dict[str, Any]], **kwargs: Any) -> None:
        calls.append(len(items))
        if len(calls) == 3:
            raise TransactionConflict(["ConditionalCheckFailed"])  # stands for a crash mid-message
        real(items, **kwargs)

    monkeypatch.setattr(ingest, "transact", fail_on_the_third)
    first = send(interface.lab, message)
    assert msa(first.body)[0] == "AE"  # told to send it again
    assert len(interface.results(order["id"])) == 2 and interface.reports(order["id"]) == []
    monkeypatch.setattr(ingest, "transact", real)
    again = send(interface.lab, message)
    assert msa(again.body) == ("AA", "LAB700001"), again.body
    results = interface.results(order["id"])
    assert sorted(r["code"]["coding"][0]["code"] for r in results) == ["2345-7", "2823-3", "2951-2"]
    assert all(r["meta"]["versionId"] == "1" for r in results)
    [report] = interface.reports(order["id"])
    assert len(report["result"]) == 3
    assert msa(send(interface.lab, message).body)[0] == "AA"  # and once complete, a duplicate
    assert len(interface.results(order["id"])) == 3


def test_a_later_message_may_name_the_order_by_the_laboratorys_filler_number(interface: Interface) -> None:
    order = interface.order()
    first = oru(patient=interface.patient, placer=placer_of(order), obx=[potassium("4.0", status="P")],
                obr_status="P", control="LAB600001")  # carries OBR-3 F-LAB600001 with the placer number
    assert msa(send(interface.lab, first).body)[0] == "AA"
    by_filler = oru(patient=interface.patient, placer="", obx=[potassium("4.2")], control="LAB600002")
    by_filler = by_filler.replace("F-LAB600002", "F-LAB600001")  # only the lab's own number, no placer
    reply = send(interface.lab, by_filler)
    assert msa(reply.body)[0] == "AA", reply.body
    [result] = interface.results(order["id"])
    assert (result["status"], result["valueQuantity"]["value"]) == ("final", 4.2)
    unknown = oru(patient=interface.patient, placer="", obx=[potassium("4.2")], control="LAB600003")
    assert err(send(interface.lab, unknown).body) == ("OBR^1^2", "204")
