"""The ``Provenance`` that records an electronic signature (architecture decision 8).

Notes and prescriptions sign the same way: a detached JWS over the RFC 8785 canonical JSON of the
signed version (without ``meta``), kept in ``Provenance.signature.data``, with the SHA-256 of the
signed bytes and the key id as extensions so a verifier can re-check both.
"""

from __future__ import annotations

import base64
from typing import Any

SIGNATURE_TYPE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                  "display": "Author's Signature"}
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
EXT = "https://expediente.mx/fhir/StructureDefinition"
DIGEST_EXT = f"{EXT}/sha256-documento"
KID_EXT = f"{EXT}/kid"


def signature_provenance(*, target: str, author: dict[str, Any], when: str, jws: str, payload_digest: str,
                         kid: str, recorded: str) -> dict[str, Any]:
    """A legal-authentication ``Provenance`` of ``target`` (``Type/id/_history/n``) signed by ``author``.

    The caller stamps it (id, meta); it is built by the server only, and the domains' tests prove
    it valid R4.
    """
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": recorded,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DocumentCompletion",
                                 "code": "LA", "display": "legally authenticated"}]},
        "agent": [{"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author", "display": "Author"}]},
                   "who": author}],
        "signature": [{
            "type": [SIGNATURE_TYPE],
            "when": when,
            "who": author,
            "targetFormat": "application/fhir+json",
            "sigFormat": "application/jose",
            "data": base64.b64encode(jws.encode()).decode(),
        }],
        "extension": [{"url": DIGEST_EXT, "valueString": payload_digest},
                      {"url": KID_EXT, "valueString": kid}],
    }


def recorded_digest(provenance: dict[str, Any]) -> str | None:
    """The SHA-256 (hex) of the signed bytes a ``Provenance`` recorded, or None."""
    return next((e.get("valueString") for e in provenance.get("extension") or [] if e.get("url") == DIGEST_EXT),
                None)
