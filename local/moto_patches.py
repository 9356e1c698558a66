"""Where moto differs from AWS in a way Expediente depends on, made to behave like AWS.

KMS ``Sign`` with ``MessageType=DIGEST``: real KMS signs the given SHA-256 digest as is; moto
5 hashes it again, so its signatures would not verify against the public key (and the signing
service refuses to store them). The embedded stack and the tests sign digests as KMS does.
"""

from __future__ import annotations

import base64
import json
from typing import Any

_PATCHED = False


def sign_digests_like_kms() -> None:
    """Patch moto's KMS ``Sign`` (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.kms.responses import KmsResponse

    moto_sign = KmsResponse.sign

    def sign(self: Any) -> str:
        answer: str = moto_sign(self)  # moto's own checks: the key exists, is enabled, fits the algorithm
        if self._get_param("MessageType") != "DIGEST" or self._get_param("SigningAlgorithm") != "ECDSA_SHA_256":
            return answer
        key = self.kms_backend.describe_key(self._get_param("KeyId"))
        message = self._get_param("Message")
        digest = base64.b64decode(message) if isinstance(message, str) else message
        signature = key.private_key.private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return json.dumps({"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(),
                           "SigningAlgorithm": "ECDSA_SHA_256"})

    KmsResponse.sign = sign  # type: ignore[method-assign]
    _PATCHED = True
