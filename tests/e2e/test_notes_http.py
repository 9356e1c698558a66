"""A physician writes and signs a note over HTTP against the local stack; anyone verifies it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "verify_signature.py"


def _offline_script(folder: Path, note: dict, provenance: dict, pem: bytes) -> None:
    (folder / "note.json").write_text(json.dumps(note), encoding="utf-8")
    (folder / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")
    (folder / "signer.pem").write_bytes(pem)
    run = subprocess.run([sys.executable, str(SCRIPT), *(str(folder / n) for n in
                                                           ("note.json", "provenance.json", "signer.pem"))],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "valid", run.stdout + run.stderr
SECTION = "https://expediente.mx/fhir/CodeSystem/seccion-nota"


def _section(code: str, text: str | None = "Sin alteraciones.", entries: list[str] | None = None) -> dict:
    out: dict = {"code": {"coding": [{"system": SECTION, "code": code}]}}
    if text:
        out["text"] = {"status": "additional", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'}
    if entries:
        out["entry"] = [{"reference": e} for e in entries]
    return out


def _vital(patient: str, encounter: str, code: str, value: float, unit: str) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{encounter}"},
            "effectiveDateTime": "2026-11-25T10:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def test_encounter_note_signature_and_offline_verification_over_http(api, tmp_path):
    tenant = api.tenant(0)
    patient = tenant.patient_ids[0]
    physician, nurse = api.as_user("physician"), api.as_user("nurse")

    encounter = physician.post("/fhir/Encounter", json={
        "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{patient}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}})
    assert encounter.status_code == 201, encounter.text
    eid = encounter.json()["id"]
    vitals = []
    for code, value, unit in (("29463-7", 64, "kg"), ("8302-2", 158, "cm")):
        reply = nurse.post("/fhir/Observation", json=_vital(patient, eid, code, value, unit))
        assert reply.status_code == 201, reply.text
        vitals.append(f"Observation/{reply.json()['id']}")
    condition = physician.post("/fhir/Condition", json={
        "resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E119"}]}})
    assert condition.status_code == 201, condition.text
    assert condition.json()["code"]["coding"][0]["code"] == "E11.9"

    note = physician.post("/fhir/Composition", headers={"Idempotency-Key": "e2e-note-1"}, json={
        "resourceType": "Composition", "status": "preliminary",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34117-2"}]},
        "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{eid}"},
        "section": [_section(c) for c in (
            "antecedentes-heredofamiliares", "antecedentes-personales-patologicos",
            "antecedentes-personales-no-patologicos", "padecimiento-actual", "interrogatorio-aparatos-sistemas",
            "exploracion-fisica", "resultados", "pronostico", "tratamiento")]
        + [_section("signos-vitales", None, vitals),
           _section("diagnosticos", "Diabetes tipo 2.", [f"Condition/{condition.json()['id']}"])]})
    assert note.status_code == 201, note.text
    nid = note.json()["id"]
    signed = physician.post(f"/fhir/Composition/{nid}/$sign", headers={"If-Match": 'W/"1"'})
    assert signed.status_code == 200, signed.text
    assert physician.put(f"/fhir/Composition/{nid}", json=signed.json(),
                         headers={"If-Match": 'W/"2"'}).status_code == 409

    verified = physician.get(f"/fhir/Composition/{nid}/$verify-signature").json()
    assert verified["parameter"][0] == {"name": "valid", "valueBoolean": True}

    # Offline: the signed note, its Provenance and the author's public key are all a verifier needs.
    provenance = physician.get("/fhir/Provenance", params={"target": f"Composition/{nid}"}).json()
    jws = base64.b64decode(provenance["entry"][0]["resource"]["signature"][0]["data"]).decode()
    header_b64, _, signature_b64 = jws.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    author = signed.json()["author"][0]["reference"]
    pem = physician.get(f"/fhir/{author}/$public-key", params={"_format": "pem", "kid": header["kid"]})
    assert pem.status_code == 200, pem.text
    key = serialization.load_pem_public_key(pem.content)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    document = {k: v for k, v in signed.json().items() if k != "meta"}
    payload = base64.urlsafe_b64encode(rfc8785.dumps(document)).rstrip(b"=")
    raw = base64.urlsafe_b64decode(signature_b64 + "==")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, header_b64.encode() + b"." + payload, ec.ECDSA(hashes.SHA256()))

    # The same check with the README's script, as a third party would run it.
    _offline_script(tmp_path, signed.json(), provenance["entry"][0]["resource"], pem.content)
    tampered = {**signed.json(), "title": "Otra nota"}
    with pytest.raises(AssertionError, match="invalid"):
        _offline_script(tmp_path, tampered, provenance["entry"][0]["resource"], pem.content)

    reception = api.as_user("reception")
    seen = reception.get(f"/fhir/Composition/{nid}").json()
    assert "Diabetes tipo 2" not in json.dumps(seen)
    assert api.as_user("physician", tenant_index=1).get(f"/fhir/Composition/{nid}").status_code == 404
