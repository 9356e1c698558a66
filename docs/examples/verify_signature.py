"""Verify an Expediente signature offline, with nothing but the document, its Provenance and a key.

    python docs/examples/verify_signature.py note.json provenance.json signer.pem

``note.json`` is the signed version of a document as the API returns it: a ``Composition`` (read by a
role that sees its narrative) or a ``MedicationRequest`` (``…/_history/<n>`` of the version the
Provenance names). ``provenance.json`` is its ``Provenance`` (for a note
``GET /fhir/Provenance?target=Composition/<id>``, the entry's resource; for a prescription the
``provenance`` part of ``GET /fhir/MedicationRequest/<id>/$verify-signature``), ``signer.pem`` the
signer's public key or certificate (``GET /fhir/Practitioner/<id>/$public-key?_format=pem&kid=<kid>``).
Needs ``cryptography`` and ``rfc8785`` (pip). Prints ``valid`` and exits 0, or prints why not and exits 1.

What is signed: the RFC 8785 canonical JSON of the note without ``meta``, as the payload of a
detached JWS (RFC 7515 appendix F) whose compact form is ``signature.data`` (base64) of the
Provenance. Any JOSE library verifies it once the payload is put back between the two dots.
"""

from __future__ import annotations

import base64
import json
import sys

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(note: dict, provenance: dict, pem: bytes) -> str | None:
    """None when the signature is valid, else the reason."""
    target = provenance["target"][0]["reference"]
    version = note.get("meta", {}).get("versionId")
    if target != f"{note['resourceType']}/{note['id']}/_history/{version}":
        return f"the Provenance signs {target}, not this version of the document"
    jws = base64.b64decode(provenance["signature"][0]["data"]).decode()
    header_b64, payload_b64, signature_b64 = jws.split(".")
    if payload_b64:
        return "not a detached JWS"
    header = json.loads(_unb64url(header_b64))
    document = {key: value for key, value in note.items() if key != "meta"}
    signing_input = header_b64.encode() + b"." + _b64url(rfc8785.dumps(document))
    signature = _unb64url(signature_b64)
    key = (x509.load_pem_x509_certificate(pem).public_key() if b"CERTIFICATE" in pem
           else serialization.load_pem_public_key(pem))
    try:
        if header["alg"] == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        elif header["alg"] == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif header["alg"] == "PS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            return f"alg {header['alg']} does not fit the key"
    except InvalidSignature:
        return "the signature does not match the document (altered, or another key)"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as note, open(argv[2], encoding="utf-8") as provenance, \
            open(argv[3], "rb") as pem:
        reason = verify(json.load(note), json.load(provenance), pem.read())
    print("valid" if reason is None else f"invalid: {reason}")
    return 0 if reason is None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
