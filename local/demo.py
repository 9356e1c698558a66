"""``make demo`` (``python -m local.demo``): a clinic day against the running local stack, over HTTP.

Every step is what a real client does with a demo user's Cognito token, and each prints what
happened in plain words with the ids involved. The script stops with exit status 1 at the first step
that does not behave as described (and says which and why); 2 when the stack is not running.

The day, in the first demo tenant (``actopan``), for its demo patient (the one with a patient account):
reception registers a new patient by CURP and finds the existing one; the physician opens a visit,
records vital signs and a diagnosis, writes and signs the historia clínica, orders a chemistry panel
and a chest X-ray, prescribes two medicines, sees their interaction, overrides it with a reason and
signs; the laboratory's interface sends the results by HL7 v2 with a critical potassium; the alert
reaches the physician, who acknowledges it; the X-ray arrives as a DICOM file in S3 and appears on
the order; the pharmacy verifies the receta by its QR code and dispenses it; the auditor reviews who
accessed the patient; the patient reads their own record and who looked at it.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from local.auth import password_login
from local.aws import boto_session
from local.stack import configured_stack_file, read_stack_file

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
CNIS = "urn:oid:2.16.840.1.113883.3.215.12.8"
CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
SECTION = "https://expediente.mx/fhir/CodeSystem/seccion-nota"
ORDER_STATUS = "https://expediente.mx/fhir/StructureDefinition/estado-orden"
ER7 = "x-application/hl7-v2+er7"
WAIT_S = 30
SIMVASTATIN, CLARITHROMYCIN = "010.000.4124.00", "010.000.2132.00"


class DemoFailure(Exception):
    """A step did not behave as described."""


class Client:
    """One demo user's session against the API."""

    def __init__(self, api_url: str, token: str, who: str) -> None:
        self.api_url, self.who = api_url, who
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})

    def call(self, method: str, path: str, *, expect: int | tuple[int, ...] = 200, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in wanted:
            raise DemoFailure(f"{self.who}: {method} {path} answered {response.status_code}, expected "
                              f"{' or '.join(map(str, wanted))}: {response.text[:500]}")
        return response

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if body is not None:
            kwargs["json"] = body
        result: dict[str, Any] = self.call(method, path, **kwargs).json()
        return result


def say(text: str) -> None:
    sys.stdout.write(f"  ✓ {text}\n")
    sys.stdout.flush()


def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise DemoFailure(f"{what} did not happen within {WAIT_S} s")
        time.sleep(0.5)


def _new_patient() -> tuple[str, str]:
    """A fictitious woman born in Hidalgo in 1990, ZAMORA VILLEGAS DANIELA, on a random day, and her CURP
    (agreeing with the name, birth date, sex and state, with a valid check digit)."""
    from datetime import date, timedelta

    from stdnum.mx import curp

    born = date(1990, 1, 1) + timedelta(days=random.randrange(365))  # noqa: S311 (a demo, not a secret)
    body = f"ZAVD{born:%y%m%d}MHGMLN{random.randrange(10)}"  # noqa: S311
    return body + curp.calc_check_digit(body), born.isoformat()


def _section(code: str, text: str | None = "Sin hallazgos relevantes.", entries: list[str] | None = None,
             **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"code": {"coding": [{"system": SECTION, "code": code}]}, **extra}
    if text is not None:
        out["text"] = {"status": "additional", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}
    if entries:
        out["entry"] = [{"reference": ref} for ref in entries]
    return out


def _prescription(patient: str, key: str, *, every_hours: int, days: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": CNIS, "code": key}]},
        "dosageInstruction": [{
            "doseAndRate": [{"doseQuantity": {"value": 1, "system": UCUM, "code": "{tablet}"}}],
            "route": {"coding": [{"system": SNOMED, "code": "26643006"}]},
            "timing": {"repeat": {"frequency": 1, "period": every_hours, "periodUnit": "h",
                                  "boundsDuration": {"value": days, "system": UCUM, "code": "d"}}}}],
        "dispenseRequest": {"quantity": {"value": 1, "system": UCUM, "code": "{package}"}},
    }


def _oru(patient: str, placer: str, control: str, clues: str) -> str:
    lines = [
        r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|" + clues + "|20261125143000-0600||ORU^R01^ORU_R01|" + control
        + "|P|2.5.1",
        f"PID|1||{patient}^^^EXPEDIENTE^MR",
        f"ORC|RE|{placer}|F-{control}||CM",
        f"OBR|1|{placer}|F-{control}|24323-8^Comprehensive metabolic panel^LN|||20261125080000-0600||||||||||||||||||F",
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L^^UCUM|3.5-5.1|HH|||F|||20261125080000-0600",
        "OBX|2|NM|2951-2^Sodium^LN||139|mmol/L^^UCUM|136-145||||F|||20261125080000-0600",
        "OBX|3|NM|2345-7^Glucose^LN||182|mg/dL^^UCUM|70-99|H|||F|||20261125080000-0600",
    ]
    return "\r".join(lines) + "\r"


def _dicom(patient: str, accession: str) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    dataset.PatientID, dataset.AccessionNumber, dataset.Modality = patient, accession, "DX"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _status(order: dict[str, Any]) -> str:
    return next((e["valueCode"] for e in order.get("extension") or [] if e["url"] == ORDER_STATUS), "")


def clinic_day(users: dict[str, Client], patient: str, clues: str) -> None:
    """The scripted day; raises :class:`DemoFailure` at the first step that misbehaves."""
    reception, physician, lab = users["reception"], users["physician"], users["lab"]
    radiology, pharmacist, auditor = users["radiology"], users["pharmacist"], users["auditor"]

    print("1. Reception")
    curp, born = _new_patient()
    new = reception.json("POST", "/fhir/Patient", {
        "resourceType": "Patient", "identifier": [{"system": CURP_SYSTEM, "value": curp}],
        "name": [{"family": "ZAMORA VILLEGAS", "given": ["DANIELA"], "_family": {"extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family", "valueString": "ZAMORA"},
            {"url": "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family", "valueString": "VILLEGAS"}]}}],
        "gender": "female", "birthDate": born}, expect=201)
    say(f"registered a new patient by CURP: Patient/{new['id']}")
    existing = reception.json("GET", f"/fhir/Patient/{patient}")
    existing_curp = next(i["value"] for i in existing["identifier"] if i["system"] == CURP_SYSTEM)
    found = reception.json("GET", "/fhir/Patient", params={"identifier": f"{CURP_SYSTEM}|{existing_curp}"})
    if [e["resource"]["id"] for e in found.get("entry", [])] != [patient]:
        raise DemoFailure("searching the existing patient by CURP did not find exactly that patient")
    say(f"found the existing patient by CURP: Patient/{patient}")

    print("2. Physician: visit, vital signs, diagnosis, historia clínica")
    encounter = physician.json("POST", "/fhir/Encounter", {
        "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{patient}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}, expect=201)
    say(f"opened the visit Encounter/{encounter['id']}")
    vitals = []
    for code, value, unit in (("29463-7", 68.0, "kg"), ("8302-2", 162, "cm"), ("8867-4", 82, "/min"),
                              ("8310-5", 36.7, "Cel")):
        observation = physician.json("POST", "/fhir/Observation", {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "effectiveDateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}, expect=201)
        vitals.append(f"Observation/{observation['id']}")
    say(f"recorded {len(vitals)} vital signs (weight, height, heart rate, temperature)")
    condition = physician.json("POST", "/fhir/Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "code": {"coding": [{"system": ICD10, "code": "E78.0"}]}}, expect=201)
    say(f"diagnosed pure hypercholesterolaemia (ICD-10 E78.0): Condition/{condition['id']}")
    note = physician.json("POST", "/fhir/Composition", {
        "resourceType": "Composition", "status": "preliminary",
        "type": {"coding": [{"system": LOINC, "code": "34117-2"}]}, "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "section": [
            _section("antecedentes-heredofamiliares", "Padre con infarto a los 58 años."),
            _section("antecedentes-personales-patologicos", "Niega alergias."),
            _section("antecedentes-personales-no-patologicos", "No fuma."),
            _section("padecimiento-actual", "Control de colesterol; tos productiva de 5 días."),
            _section("interrogatorio-aparatos-sistemas", "Tos con expectoración."),
            _section("exploracion-fisica", "Estertores en base derecha."),
            _section("signos-vitales", None, vitals),
            _section("resultados", None, emptyReason={"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "notstarted"}]}),
            _section("diagnosticos", "Hipercolesterolemia pura.", [f"Condition/{condition['id']}"]),
            _section("pronostico", "Bueno para la vida."),
            _section("tratamiento", "Simvastatina; claritromicina por 7 días."),
        ]}, expect=201)
    say(f"wrote the historia clínica Composition/{note['id']} (draft)")

    print("3. Physician: orders")
    lab_order = physician.json("POST", "/fhir/ServiceRequest", {
        "resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "category": [{"coding": [{"system": SNOMED, "code": "108252007"}]}],
        "code": {"coding": [{"system": LOINC, "code": "24323-8"}]},
        "reasonCode": [{"coding": [{"system": ICD10, "code": "E78.0"}]}]}, expect=201)
    placer = lab_order["identifier"][0]["value"]
    say(f"ordered a comprehensive metabolic panel: ServiceRequest/{lab_order['id']} (placer number {placer})")
    xray = physician.json("POST", "/fhir/ServiceRequest", {
        "resourceType": "ServiceRequest", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter['id']}"},
        "category": [{"coding": [{"system": SNOMED, "code": "363679005"}]}],
        "code": {"text": "Radiografía de tórax PA"}, "bodySite": [{"text": "Tórax"}],
        "orderDetail": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}]}],
        "reasonCode": [{"coding": [{"system": ICD10, "code": "R05"}]}]}, expect=201)
    accession = next(i["value"] for i in xray["identifier"] if i["system"] == "urn:expediente:accession")
    say(f"ordered a chest X-ray: ServiceRequest/{xray['id']} (accession {accession})")

    print("4. Physician: prescriptions, the interaction alert, override and signatures")
    statin = physician.json("POST", "/fhir/MedicationRequest",
                            _prescription(patient, SIMVASTATIN, every_hours=24, days=30), expect=201)
    say(f"prescribed simvastatin 20 mg daily for 30 days: MedicationRequest/{statin['id']}")
    response = physician.call("POST", "/fhir/MedicationRequest",
                              json=_prescription(patient, CLARITHROMYCIN, every_hours=12, days=7), expect=201)
    antibiotic = response.json()
    alerts = [ref["display"] for ref in antibiotic.get("detectedIssue") or []]
    if not any(a.startswith(("contraindicated:", "major:")) for a in alerts):
        raise DemoFailure(f"clarithromycin with simvastatin raised no blocking interaction alert: {alerts}")
    say(f"prescribed clarithromycin 250 mg every 12 h: MedicationRequest/{antibiotic['id']}; "
        f"alerts ({response.headers.get('X-Alerts')}): {alerts[0][:110]}…")
    blocked = physician.call("POST", f"/fhir/MedicationRequest/{antibiotic['id']}/$sign",
                             json={"resourceType": "Parameters", "parameter": []},
                             headers={"If-Match": 'W/"1"'}, expect=409)
    say(f"signing without a reason is refused: {len(blocked.json()['issue'])} alert(s) need an override reason")
    signed_note = physician.json("POST", f"/fhir/Composition/{note['id']}/$sign", headers={"If-Match": 'W/"1"'})
    say(f"signed the historia clínica (status {signed_note['status']})")
    reason = "Neumonía adquirida en la comunidad: simvastatina suspendida mientras dure la claritromicina"
    override = {"resourceType": "Parameters", "parameter": [{"name": "overrideReason", "valueString": reason}]}
    physician.call("POST", f"/fhir/MedicationRequest/{statin['id']}/$sign", json=override,
                   headers={"If-Match": 'W/"1"'})
    signed = physician.call("POST", f"/fhir/MedicationRequest/{antibiotic['id']}/$sign", json=override,
                            headers={"If-Match": f'W/"{antibiotic["meta"]["versionId"]}"'})
    verify_url = signed.headers["X-Receta-Verify"]
    say(f"overrode the alert with a reason and signed both prescriptions; {signed.headers['X-Provenance']}")
    receta = physician.call("GET", f"/fhir/MedicationRequest/{antibiotic['id']}/$print",
                            headers={"Accept": "application/pdf"})
    if not receta.content.startswith(b"%PDF"):
        raise DemoFailure("the receta is not a PDF")
    say(f"printed the receta ({len(receta.content) // 1024} KiB PDF) with its QR code: {verify_url}")

    print("5. Laboratory: results by HL7 v2, with a critical potassium")
    control = f"DEMO{random.randrange(10**8):08d}"  # noqa: S311
    ack = lab.call("POST", "/hl7v2", data=_oru(patient, placer, control, clues).encode(),
                   headers={"Content-Type": ER7, "Accept": ER7})
    if f"MSA|AA|{control}" not in ack.text:
        raise DemoFailure(f"the ORU^R01 was not accepted: {ack.text!r}")
    say(f"the lab's interface sent ORU^R01 {control}; the answer is ACK AA")
    until("the lab order completing", lambda: _status(physician.json(
        "GET", f"/fhir/ServiceRequest/{lab_order['id']}")) == "completed")
    say("the lab order completed by itself")

    print("6. Physician: the critical result")
    results = physician.json("GET", "/fhir/Observation", params={"based-on": f"ServiceRequest/{lab_order['id']}"})
    potassium = next(e["resource"] for e in results["entry"]
                     if e["resource"]["code"]["coding"][0]["code"] == "2823-3")
    open_alerts = until("the critical-result alert", lambda: [
        e["resource"] for e in physician.json("GET", "/fhir/Communication", params={
            "clinic": clues, "status": "in-progress"}).get("entry", [])
        if any(a.get("reference") == f"Observation/{potassium['id']}" for a in e["resource"].get("about", []))])
    say(f"potassium 6.9 mmol/L is critical (HH): the physician sees alert Communication/{open_alerts[0]['id']}")
    acknowledged = physician.json("POST", f"/fhir/Observation/{potassium['id']}/$acknowledge", {
        "resourceType": "Parameters", "parameter": [{"name": "readBack", "valueString": "Potasio 6.9 mmol/L"}]})
    say(f"acknowledged it with a read-back (alert {acknowledged['status']})")

    print("7. Radiology: the X-ray arrives as DICOM")
    data = _dicom(patient, accession)
    issued = radiology.json("POST", f"/fhir/ServiceRequest/{xray['id']}/$dicom-upload", {
        "resourceType": "Parameters", "parameter": [{"name": "size", "valueInteger": len(data)}]})
    parts = {p["name"]: p for p in issued["parameter"][0]["part"]}
    put = requests.put(parts["url"]["valueUrl"], data=data, headers={"Content-Type": "application/dicom"}, timeout=30)
    if put.status_code != 200:
        raise DemoFailure(f"the DICOM upload to S3 answered {put.status_code}")
    say(f"the modality uploaded one DICOM instance ({len(data)} bytes) to the ingest bucket")
    studies = until("the study appearing on the order", lambda: physician.json(
        "GET", "/fhir/ImagingStudy", params={"basedon": f"ServiceRequest/{xray['id']}"}).get("entry"))
    order_now = physician.json("GET", f"/fhir/ServiceRequest/{xray['id']}")
    say(f"ImagingStudy/{studies[0]['resource']['id']} is on the order (order {_status(order_now)})")

    print("8. Pharmacy: verify the receta and dispense")
    checked = requests.get(verify_url, headers={"Accept": "application/json"}, timeout=30)
    answer = checked.json() if checked.status_code == 200 else {}
    if not (answer.get("authentic") and answer.get("dispensable")):
        raise DemoFailure(f"the receta did not verify as authentic and dispensable: {checked.text[:300]}")
    say(f"scanning the QR code (no account): authentic, {answer['dispensations']['remaining']} dispensation left, "
        f"patient {answer['patient']['initials']}")
    dispensed = pharmacist.call("POST", "/fhir/MedicationDispense", json={
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{antibiotic['id']}"}]}, expect=201)
    say(f"dispensed it: MedicationDispense/{dispensed.json()['id']} "
        f"({dispensed.headers.get('X-Dispensations-Remaining')} left)")

    print("9. Auditor: who accessed the patient")
    trail = auditor.json("GET", "/fhir/AuditEvent", params={"patient": patient, "_count": "100"})
    agents = {e["resource"]["agent"][0]["who"].get("display") or e["resource"]["agent"][0]["who"].get("identifier",
              {}).get("value") for e in trail.get("entry", [])}
    if not trail.get("entry"):
        raise DemoFailure("the patient's audit trail is empty")
    say(f"the latest {len(trail['entry'])} accesses to Patient/{patient}, by {len(agents)} users")

    print("10. The patient: their own record")
    me = users["patient"]
    own = me.json("GET", f"/fhir/Patient/{patient}")
    record: list[dict[str, Any]] = []
    page = me.json("GET", f"/fhir/Patient/{patient}/$everything", params={"_count": "50"})
    pages = 1
    while True:
        record.extend(e["resource"] for e in page.get("entry", []))
        following = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        if following is None:
            break
        page = me.session.get(following, timeout=30).json()
        pages += 1
    kinds = Counter(r["resourceType"] for r in record)
    expected = {"Patient", "Encounter", "Composition", "Condition", "Observation", "DiagnosticReport",
                "ServiceRequest", "ImagingStudy", "MedicationRequest", "MedicationDispense"}
    if missing := sorted(expected - set(kinds)):
        raise DemoFailure(f"the patient's record download (Patient/$everything) lacks {', '.join(missing)}")
    accesses = me.json("GET", "/fhir/AuditEvent", params={"patient": patient, "_count": "20"})
    operations = {c.get("code") for e in accesses.get("entry", []) for c in e["resource"].get("subtype", [])}
    if "$everything" not in operations:
        raise DemoFailure("the patient's own download is missing from their access trail")
    say(f"Patient/{own['id']} downloaded their whole record as one FHIR Bundle (Patient/$everything, "
        f"{pages} page(s)): {len(record)} resources, "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    say(f"and sees who accessed it: the {len(accesses.get('entry', []))} latest accesses, their download included")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--stack-file", type=Path, default=configured_stack_file())
    options = parser.parse_args(argv)
    try:
        stack = read_stack_file(options.stack_file)
    except FileNotFoundError:
        sys.stderr.write(f"no stack file at {options.stack_file}: start the stack with `make run` first\n")
        return 2
    tenant = stack["tenants"][0]
    roles = ("reception", "physician", "lab", "radiology", "pharmacist", "auditor", "patient")
    users: dict[str, Client] = {}
    for user in tenant["users"]:
        role = user["username"].split(".", 1)[1]
        if role in roles:
            tokens = password_login(endpoint=stack["aws_endpoint"], region=stack["region"],
                                    client_id=stack["user_pool_client_id"], username=user["username"],
                                    password=user["password"], session=boto_session(stack["region"]))
            users[role] = Client(stack["api_url"], tokens.id_token, user["username"])
    patient = tenant["patient_ids"][0]
    clues = tenant["clinics"][0]["clues"]
    print(f"A clinic day at {tenant['name']} ({clues}), API {stack['api_url']}")
    try:
        clinic_day(users, patient, clues)
    except DemoFailure as failure:
        sys.stderr.write(f"\n✗ {failure}\n")
        return 1
    print("The day ran as described.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
