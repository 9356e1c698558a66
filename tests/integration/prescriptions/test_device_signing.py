"""A prescriber with a registered certificate (e.firma style) signs on their own device, as notes do."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integration.notes.conftest import Staff
from tests.integration.notes.test_signatures import _certificate, _register

from .conftest import CLARITHROMYCIN, SIMVASTATIN, created, prescription, rx


def _device_sign(signing_input: str, private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.split('.')[0]}..{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_prescriber_signs_on_their_device_with_a_registered_certificate(physician: Staff, patient_id: str) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _register(physician, private_key, _certificate(private_key)).status == 201
    created(physician, prescription(patient_id, SIMVASTATIN, every_hours=24, days=30))
    draft = created(physician, prescription(patient_id, CLARITHROMYCIN, every_hours=12, days=7))
    path, version = f"/fhir/MedicationRequest/{draft['id']}/$sign", {"If-Match": 'W/"1"'}
    reason = {"name": "overrideReason", "valueString": "Simvastatina suspendida durante el antibiótico"}
    without = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [reason]}, headers=version)
    assert without.status == 400 and "prepare" in without.issue
    blocked = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "prepare", "valueBoolean": True}]}, headers=version)
    assert blocked.status == 409  # the contraindicated alert needs its reason before anything is prepared
    prepared = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "prepare", "valueBoolean": True}, reason]}, headers=version)
    assert prepared.status == 200, prepared.body
    values = {p["name"]: p for p in prepared.body["parameter"]}
    jws = _device_sign(values["signing-input"]["valueString"], private_key)
    signed = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "signature", "valueString": jws}, reason]}, headers=version)
    assert signed.status == 200, signed.body
    assert signed.body == {**values["document"]["resource"], "id": draft["id"], "meta": signed.body["meta"]}
    verified = rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}/$verify-signature")
    assert verified.body["parameter"][0]["valueBoolean"] is True, verified.body


def test_a_device_signature_over_another_document_is_refused(physician: Staff, patient_id: str) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _register(physician, private_key, _certificate(private_key))
    draft = created(physician, prescription(patient_id))
    path, version = f"/fhir/MedicationRequest/{draft['id']}/$sign", {"If-Match": 'W/"1"'}
    prepared = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "prepare", "valueBoolean": True}]}, headers=version)
    signing_input = {p["name"]: p for p in prepared.body["parameter"]}["signing-input"]["valueString"]
    header, payload = signing_input.split(".")
    forged = _device_sign(f"{header}.{payload[:-4]}AAAA", private_key)
    refused = rx(physician, "POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "signature", "valueString": forged}]}, headers=version)
    assert refused.status == 422 and "does not verify" in refused.issue
    assert rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}").body["status"] == "draft"
