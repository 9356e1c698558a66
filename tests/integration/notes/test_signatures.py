"""Electronic signature: KMS keys by default, a registered certificate as the alternative, and
verification that catches any later change of the note or of the entries it covered."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from expediente import signing
from expediente.store import partition, version_sk
from tests.integration.notes.conftest import Chain, Staff, Visit, condition_body
from tests.support.aws import REGION, table_name


def _signed_note(physician: Staff, visit: Visit) -> dict[str, Any]:
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica()).body
    signed = physician.notes("POST", f"/fhir/Composition/{note['id']}/$sign", headers={"If-Match": 'W/"1"'})
    assert signed.status == 200, signed.body
    return dict(signed.body)


def _verify(staff: Staff, note_id: str) -> dict[str, Any]:
    reply = staff.notes("GET", f"/fhir/Composition/{note_id}/$verify-signature")
    assert reply.status == 200, reply.body
    return {p["name"]: p.get("valueBoolean", p.get("valueString")) for p in reply.body["parameter"]
            if p["name"] in ("valid", "reason")}


def _rewrite(tenant: str, resource_type: str, resource_id: str, version: int, change: Any) -> None:
    """What an insider with table and key access would do: decrypt, alter, re-encrypt in place."""
    from expediente import tenants

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    key = {"pk": {"S": partition(tenant, resource_type, resource_id)}, "sk": {"S": version_sk(version)}}
    table = table_name("notes" if resource_type != "Observation" else "results")
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    aad = f"{resource_type}/{resource_id}/{version}"
    envelope = tenants.envelope()
    resource = json.loads(envelope.decrypt(tenant, item["body"]["S"], aad))
    change(resource)
    item["body"] = {"S": envelope.encrypt(tenant, json.dumps(resource).encode(), aad)}
    dynamodb.put_item(TableName=table, Item=item)


def test_a_fresh_signature_verifies(physician: Staff, visit: Visit) -> None:
    note = _signed_note(physician, visit)
    assert _verify(physician, note["id"]) == {
        "valid": True, "reason": "signature valid: the note and its entries are exactly as signed"}


def test_the_signed_note_and_its_provenance_are_valid_fhir_r4(physician: Staff, visit: Visit) -> None:
    from fhir.resources.R4B.composition import Composition
    from fhir.resources.R4B.provenance import Provenance

    note = _signed_note(physician, visit)
    Composition.model_validate(note)
    provenance = physician.notes("GET", "/fhir/Provenance", query={"target": f"Composition/{note['id']}"})
    Provenance.model_validate(provenance.body["entry"][0]["resource"])
    assert provenance.body["entry"][0]["resource"]["signature"][0]["sigFormat"] == "application/jose"


def test_a_tampered_stored_note_fails_verification(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _signed_note(physician, visit)

    def alter(resource: dict[str, Any]) -> None:
        resource["section"][3]["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml">Otra cosa.</div>'

    _rewrite(chain.tenant.id, "Composition", note["id"], 2, alter)
    report = _verify(physician, note["id"])
    assert report["valid"] is False
    assert "does not match" in report["reason"]


def test_a_damaged_ciphertext_is_reported_as_altered(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _signed_note(physician, visit)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    key = {"pk": {"S": partition(chain.tenant.id, "Composition", note["id"])}, "sk": {"S": version_sk(2)}}
    item = dynamodb.get_item(TableName=table_name("notes"), Key=key)["Item"]
    body = item["body"]["S"]
    item["body"] = {"S": body[:-6] + ("AAAAAA" if not body.endswith("AAAAAA") else "BBBBBB")}
    dynamodb.put_item(TableName=table_name("notes"), Item=item)
    report = _verify(physician, note["id"])
    assert report["valid"] is False
    assert "altered" in report["reason"]


def test_a_swapped_entry_fails_verification(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _signed_note(physician, visit)
    other = physician.notes("POST", "/fhir/Condition", condition_body(visit.patient_id, "E11.9")).body

    def swap(resource: dict[str, Any]) -> None:
        for section in resource["section"]:
            for entry in section.get("entry", []):
                if entry["reference"].startswith("Condition/"):
                    entry["reference"] = f"Condition/{other['id']}/_history/1"

    _rewrite(chain.tenant.id, "Composition", note["id"], 2, swap)
    report = _verify(physician, note["id"])
    assert report["valid"] is False


def test_an_altered_entry_version_fails_verification(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _signed_note(physician, visit)

    def recode(resource: dict[str, Any]) -> None:
        resource["code"]["coding"][0]["code"] = "E11.9"

    _rewrite(chain.tenant.id, "Condition", visit.condition_id, 1, recode)
    report = _verify(physician, note["id"])
    assert report["valid"] is False
    assert f"Condition/{visit.condition_id}/_history/1" in report["reason"]
    assert "differs from the version that was signed" in report["reason"]


def test_anyone_can_verify_offline_with_the_public_key(physician: Staff, visit: Visit, chain: Chain) -> None:
    """The README's offline check: the note, its Provenance and the author's public key suffice."""
    note = _signed_note(physician, visit)
    provenance = physician.notes("GET", "/fhir/Provenance", query={"target": f"Composition/{note['id']}"}
                                 ).body["entry"][0]["resource"]
    jws = base64.b64decode(provenance["signature"][0]["data"]).decode()
    header_b64, empty, signature_b64 = jws.split(".")
    assert empty == ""
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    pem = physician.admin("GET", f"/fhir/Practitioner/{physician.practitioner_id}/$public-key",
                          query={"_format": "pem", "kid": header["kid"]})
    assert pem.status == 200
    public_key = serialization.load_pem_public_key(str(pem.body).encode())
    document = {k: v for k, v in note.items() if k != "meta"}
    payload = base64.urlsafe_b64encode(rfc8785.dumps(document)).rstrip(b"=")
    raw = base64.urlsafe_b64decode(signature_b64 + "==")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, header_b64.encode() + b"." + payload, ec.ECDSA(hashes.SHA256()))  # raises if invalid
    assert header["alg"] == "ES256"


def test_every_practitioner_gets_a_kms_key_when_registered(physician: Staff, chain: Chain) -> None:
    key = physician.admin("GET", f"/fhir/Practitioner/{physician.practitioner_id}/$public-key")
    assert key.status == 200, key.body
    values = {p["name"]: p.get("valueString", p.get("valueCode")) for p in key.body["parameter"]}
    assert values["kind"] == "kms"
    assert values["algorithm"] == "ES256"
    assert values["public-key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "arn:" not in json.dumps(key.body)


# ------------------------------------------------------------------ certificate (e.firma style) ---


def _certificate(private_key: Any, *, days: int = 365) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MEDICO DE PRUEBA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(private_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _register(staff: Staff, private_key: Any, pem: str, *, alg: str = "RS256") -> Any:
    cert = signing.load_certificate(pem.encode(), now=datetime.now(UTC))
    proof_doc = {"purpose": "register-certificate", "practitioner": f"Practitioner/{staff.practitioner_id}",
                 "certificate": cert.sha256}
    header = {"alg": alg, "kid": "proof", "typ": "JOSE"}
    proof = signing.sign_with_private_key(private_key, header, signing.canonical(proof_doc))
    return staff.admin("POST", f"/fhir/Practitioner/{staff.practitioner_id}/$register-certificate", {
        "resourceType": "Parameters", "parameter": [{"name": "certificate", "valueString": pem},
                                                    {"name": "proof", "valueString": proof}]})


def test_a_practitioner_signs_on_their_device_with_a_registered_certificate(physician: Staff, visit: Visit) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    registered = _register(physician, private_key, _certificate(private_key))
    assert registered.status == 201, registered.body
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica()).body
    path = f"/fhir/Composition/{note['id']}/$sign"
    without = physician.notes("POST", path, headers={"If-Match": 'W/"1"'})
    assert without.status == 400
    assert "prepare" in without.issue
    prepared = physician.notes("POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "prepare", "valueBoolean": True}]}, headers={"If-Match": 'W/"1"'})
    assert prepared.status == 200, prepared.body
    values = {p["name"]: p for p in prepared.body["parameter"]}
    signing_input = values["signing-input"]["valueString"].encode()
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    jws = (signing_input.split(b".")[0] + b".." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    signed = physician.notes("POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "signature", "valueString": jws}]}, headers={"If-Match": 'W/"1"'})
    assert signed.status == 200, signed.body
    assert signed.body == {**values["document"]["resource"], "id": note["id"], "meta": signed.body["meta"]}
    assert _verify(physician, note["id"])["valid"] is True
    certificate = physician.admin("GET", f"/fhir/Practitioner/{physician.practitioner_id}/$public-key",
                                  query={"_format": "pem"})
    assert str(certificate.body).startswith("-----BEGIN CERTIFICATE-----")


def test_a_device_signature_by_another_key_is_refused(physician: Staff, visit: Visit) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _register(physician, private_key, _certificate(private_key)).status == 201
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica()).body
    path = f"/fhir/Composition/{note['id']}/$sign"
    prepared = physician.notes("POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "prepare", "valueBoolean": True}]}, headers={"If-Match": 'W/"1"'})
    signing_input = next(p for p in prepared.body["parameter"] if p["name"] == "signing-input")["valueString"]
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = impostor.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    jws = signing_input.split(".")[0] + ".." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    refused = physician.notes("POST", path, {"resourceType": "Parameters", "parameter": [
        {"name": "signature", "valueString": jws}]}, headers={"If-Match": 'W/"1"'})
    assert refused.status == 422
    assert physician.notes("GET", f"/fhir/Composition/{note['id']}").body["status"] == "preliminary"


def test_a_certificate_is_registered_only_by_its_holder(physician: Staff, chain: Chain) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _certificate(private_key)
    colleague = chain.staff("physician")
    stolen = colleague.admin("POST", f"/fhir/Practitioner/{physician.practitioner_id}/$register-certificate", {
        "resourceType": "Parameters", "parameter": [{"name": "certificate", "valueString": pem},
                                                    {"name": "proof", "valueString": "x..y"}]})
    assert stolen.status == 403
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unproven = _register(physician, other_key, pem)
    assert unproven.status == 422
    assert "proof of possession" in unproven.issue


def test_an_expired_certificate_is_refused(physician: Staff) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VENCIDO")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=30)).not_valid_after(now - timedelta(days=1))
            .sign(private_key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    reply = physician.admin("POST", f"/fhir/Practitioner/{physician.practitioner_id}/$register-certificate", {
        "resourceType": "Parameters", "parameter": [{"name": "certificate", "valueString": pem},
                                                    {"name": "proof", "valueString": "a..b"}]})
    assert reply.status == 422
    assert "expired" in reply.issue


def test_signing_needs_the_version_the_author_reviewed(physician: Staff, visit: Visit) -> None:
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica()).body
    path = f"/fhir/Composition/{note['id']}/$sign"
    assert physician.notes("POST", path).status == 428
    assert physician.notes("POST", path, headers={"If-Match": 'W/"9"'}).status == 412


def test_signing_is_published_as_an_event(physician: Staff, visit: Visit, chain: Chain) -> None:
    note = _signed_note(physician, visit)
    events = [e for e in chain.world.world.published() if e["detail-type"] == "NoteSigned"]
    assert events and events[-1]["detail"]["note_id"] == note["id"]
    assert events[-1]["detail"]["note_type"] == "historia-clinica"
    assert "JUAN" not in json.dumps(events)


def test_a_device_signature_made_long_ago_is_refused(physician: Staff, visit: Visit) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _register(physician, private_key, _certificate(private_key)).status == 201
    note = physician.notes("POST", "/fhir/Composition", visit.historia_clinica()).body
    key = physician.admin("GET", f"/fhir/Practitioner/{physician.practitioner_id}/$public-key").body
    kid = next(p["valueString"] for p in key["parameter"] if p["name"] == "kid")
    old = signing.format_signing_time(datetime.now(UTC) - timedelta(hours=2))
    header = {"alg": "RS256", "kid": kid, "typ": "JOSE", "sigT": old}
    jws = signing.sign_with_private_key(private_key, header, b"{}")
    reply = physician.notes("POST", f"/fhir/Composition/{note['id']}/$sign", {
        "resourceType": "Parameters", "parameter": [{"name": "signature", "valueString": jws}]},
        headers={"If-Match": 'W/"1"'})
    assert reply.status == 422 and "too old" in reply.issue


def test_provenance_search_needs_a_target(physician: Staff) -> None:
    reply = physician.notes("GET", "/fhir/Provenance", query={"patient": "x"})
    assert reply.status == 400
