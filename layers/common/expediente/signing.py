"""Practitioners' advanced electronic signatures over clinical documents: the cryptographic core.

What is signed: the RFC 8785 (JCS) canonical JSON of the final FHIR resource,
so any party holding the same resource rebuilds the same bytes.

How it is carried: a JWS in compact serialization with a *detached* payload
(RFC 7515 appendix F), ``BASE64URL(header) + ".." + BASE64URL(signature)``.
The signing input is the usual ``BASE64URL(header) + "." + BASE64URL(payload)``
with payload = the canonical bytes, so any standard JOSE library verifies it
once the payload is put back in the middle. The protected header holds ``alg``,
``kid`` (our key id), ``typ`` = ``"JOSE"``, ``sigT`` (claimed signing time,
ISO-8601 UTC as in JAdES) and, for certificate signatures, ``x5t#S256``. We
encode it with RFC 8785 too (sorted keys, no whitespace), so the server can
rebuild the exact signing input from the header's values. ``sigT`` is not
listed in ``crit``: doing so would make standard verifiers reject the JWS.

Algorithms: ES256 (ECDSA P-256 / SHA-256; the signature is the raw 64-byte
``r || s`` that JWS requires, not DER) for practitioner keys held in KMS and
for P-256 certificates; RS256 and PS256 (RSA ≥ 2048) for certificates such
as SAT's e.firma / FIEL, whose keys stay on the practitioner's device.

Key ids: ``kid`` = base64url (no padding) of SHA-256 of the public key's
SubjectPublicKeyInfo DER (:func:`public_key_thumbprint`). It is the same for
EC and RSA keys, derivable from the PEM we store, and independent of KMS ARNs.

This module proves integrity and possession of a key. It does not build a
certificate chain to SAT's root nor check revocation (OCSP/CRL), and it does
not look keys up: storage of key records and HTTP belong to the callers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import rfc8785
from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from expediente.errors import Invalid, ServiceUnavailable, Unprocessable

ES256: Final = "ES256"
RS256: Final = "RS256"
PS256: Final = "PS256"
ALGORITHMS: Final = (ES256, RS256, PS256)
MIN_RSA_BITS: Final = 2048
KEY_PURPOSE: Final = "practitioner-signing"

_MAX_JWS_CHARS = 16_384  # a header and an RSA-4096 signature fit many times over
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SIGNING_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_SIGNING_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NOT_A_CERTIFICATE = "not an X.509 certificate (expected PEM, DER or base64 of DER)"


# --- canonical form and digest ---------------------------------------------------------------


def canonical(document: Mapping[str, Any]) -> bytes:
    """The RFC 8785 canonical JSON of ``document``: the exact bytes a signature covers.

    Keys are sorted by UTF-16 code units, numbers use the ECMAScript form
    (``1.0`` → ``1``), strings are UTF-8 and not ``\\u``-escaped. Values must be
    JSON types (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``;
    convert DynamoDB ``Decimal`` first). Raises :class:`Invalid` for a value JSON
    cannot hold exactly (NaN, infinity, integers beyond ±2^53, non-string keys).
    """
    try:
        return rfc8785.dumps(dict(document))
    except rfc8785.CanonicalizationError as exc:
        raise Invalid(f"document cannot be canonicalized (RFC 8785): {exc}") from exc


def digest(document: Mapping[str, Any]) -> str:
    """Hex SHA-256 of :func:`canonical` ``(document)``; raises :class:`Invalid` like it."""
    return hashlib.sha256(canonical(document)).hexdigest()


# --- header, signing input, compact serialization ------------------------------------------


def format_signing_time(moment: datetime) -> str:
    """``moment`` (timezone-aware) as a ``sigT`` value: ``YYYY-MM-DDThh:mm:ssZ`` in UTC."""
    return _utc(moment, "moment").strftime(_SIGNING_TIME_FORMAT)


def parse_signing_time(text: str) -> datetime:
    """A ``sigT`` value back to an aware UTC datetime; raises :class:`Invalid` if malformed."""
    if not isinstance(text, str) or not _SIGNING_TIME.fullmatch(text):
        raise Invalid("signing time must be ISO-8601 UTC like 2025-01-31T14:05:00Z")
    try:
        return datetime.strptime(text, _SIGNING_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise Invalid(f"signing time {text} is not a real date and time") from exc


def protected_header(*, alg: str, kid: str, signing_time: str, cert_sha256: str | None = None) -> dict[str, str]:
    """The JWS protected header for one signature.

    ``signing_time`` is a ``sigT`` value (see :func:`format_signing_time`);
    ``cert_sha256`` is the certificate's ``x5t#S256`` (:attr:`Certificate.sha256`)
    when the signer signs with a registered certificate. Raises :class:`Invalid`
    for an unsupported ``alg``, an empty ``kid`` or a malformed value.
    """
    if alg not in ALGORITHMS:
        raise Invalid(f"alg {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    if not kid:
        raise Invalid("kid is required")
    parse_signing_time(signing_time)
    header = {"alg": alg, "kid": kid, "typ": "JOSE", "sigT": signing_time}
    if cert_sha256 is not None:
        if len(cert_sha256) != 43 or not _B64URL.fullmatch(cert_sha256):
            raise Invalid("x5t#S256 must be the base64url SHA-256 of the certificate (43 characters)")
        header["x5t#S256"] = cert_sha256
    return header


def encode_header(header: Mapping[str, str]) -> str:
    """BASE64URL of the header's RFC 8785 JSON: the same header always gives the same text."""
    try:
        return _b64(rfc8785.dumps(dict(header)))
    except rfc8785.CanonicalizationError as exc:
        raise Invalid(f"JWS header cannot be encoded: {exc}") from exc


def signing_input(header: Mapping[str, str], payload: bytes) -> bytes:
    """``BASE64URL(header) + "." + BASE64URL(payload)`` as ASCII bytes: what the key signs."""
    return f"{encode_header(header)}.{_b64(payload)}".encode("ascii")


def detached_jws(header: Mapping[str, str], signature: bytes) -> str:
    """The compact detached JWS ``BASE64URL(header) + ".." + BASE64URL(signature)``."""
    return f"{encode_header(header)}..{_b64(signature)}"


@dataclass(frozen=True)
class _Parsed:
    header_segment: str
    header: dict[str, Any]
    signature: bytes


def parse_detached_jws(jws: str) -> tuple[dict[str, Any], bytes]:
    """The protected header and the signature bytes of a compact detached JWS.

    Raises :class:`Invalid` naming what is wrong: not three parts, payload not
    empty (attached), bad base64url, header not a JSON object (or with duplicate
    names), ``alg`` unsupported, ``b64``/``crit`` extensions (not supported).
    """
    parsed = _parse(jws)
    return parsed.header, parsed.signature


def _parse(jws: str) -> _Parsed:
    if not isinstance(jws, str):
        raise Invalid("JWS must be a string")
    if len(jws) > _MAX_JWS_CHARS:
        raise Invalid(f"JWS is longer than {_MAX_JWS_CHARS} characters")
    parts = jws.split(".")
    if len(parts) != 3:
        raise Invalid(f"JWS must have three dot-separated parts (header..signature), found {len(parts)}")
    header_segment, payload_segment, signature_segment = parts
    if payload_segment:
        raise Invalid("JWS payload must be detached: the middle part must be empty (RFC 7515 appendix F)")
    header_bytes = _unb64(header_segment, "JWS header")
    signature = _unb64(signature_segment, "JWS signature")
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(f"JWS header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise Invalid("JWS header is not a JSON object")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise Invalid(f"JWS alg {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    if header.get("b64", True) is not True:
        raise Invalid("JWS with an unencoded payload (b64=false, RFC 7797) is not supported")
    if "crit" in header:
        # RFC 7515 4.1.11: extensions we do not understand make the JWS invalid.
        raise Invalid("JWS header lists critical extensions (crit), which are not supported")
    return _Parsed(header_segment, header, signature)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            # RFC 7515 4: parsers must reject duplicate header names or take the last; reject.
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`; ``reason`` is for people, ``valid`` for code."""

    valid: bool
    reason: str


def verify(
    jws: str,
    payload: bytes,
    *,
    public_key_pem: str | None = None,
    certificate_pem: str | None = None,
    at: datetime | None = None,
) -> Verification:
    """Check the detached ``jws`` over ``payload`` (the canonical bytes).

    Give exactly one of ``public_key_pem`` (SubjectPublicKeyInfo PEM) or
    ``certificate_pem`` (PEM; DER or base64 DER also accepted). The header's
    ``alg`` must fit the key: ES256 needs an EC P-256 key, RS256/PS256 an RSA key
    of at least 2048 bits. With a certificate, its key usage must allow signing,
    it must not be a CA certificate, a header ``x5t#S256`` must be its
    thumbprint, and when ``at`` (the trusted signing time) is given it must fall
    within notBefore..notAfter. ``kid`` is not checked here: the caller chose the
    key by it. The signature is checked over the header segment exactly as
    received, so a JWS from any JOSE library verifies.

    A signature that does not hold returns ``valid=False`` with a reason; it
    never raises for that. Raises :class:`Invalid` only for malformed input (the
    JWS, the key or the certificate cannot be read) and :class:`ValueError` if
    not exactly one key source is given or ``at`` is naive.
    """
    if (public_key_pem is None) == (certificate_pem is None):
        raise ValueError("give exactly one of public_key_pem or certificate_pem")
    parsed = _parse(jws)
    alg: str = parsed.header["alg"]
    if certificate_pem is not None:
        certificate = _read_certificate(certificate_pem)
        if certificate is None:
            raise Invalid(f"certificate is {_NOT_A_CERTIFICATE}")
        public_key = certificate.public_key()
        problem = _key_problem(alg, public_key) or _certificate_problem(certificate)
        if problem:
            return Verification(False, problem)
        claimed = parsed.header.get("x5t#S256")
        if claimed is not None and claimed != _b64(hashlib.sha256(_der(certificate)).digest()):
            return Verification(False, "certificate does not match the header's x5t#S256")
        if at is not None:
            moment = _utc(at, "at")
            if moment < certificate.not_valid_before_utc:
                return Verification(False, "certificate not yet valid at signing time")
            if moment > certificate.not_valid_after_utc:
                return Verification(False, "certificate expired at signing time")
    else:
        assert public_key_pem is not None  # narrowed by the exactly-one check above
        public_key = _load_public_key(public_key_pem)
        problem = _key_problem(alg, public_key)
        if problem:
            return Verification(False, problem)
    data = f"{parsed.header_segment}.{_b64(payload)}".encode("ascii")
    return _check_signature(alg, public_key, parsed.signature, data)


def _check_signature(alg: str, public_key: Any, signature: bytes, data: bytes) -> Verification:
    try:
        if alg == ES256:
            if len(signature) != 64:
                return Verification(False, f"ES256 signature must be 64 bytes (r||s), got {len(signature)}")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(signature, data, _rsa_padding(alg), hashes.SHA256())
    except InvalidSignature:
        return Verification(False, "signature does not match the document (or was made with another key)")
    return Verification(True, "signature valid")


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == PS256:
        # RFC 7518 3.5: MGF1 with SHA-256 and a salt as long as the hash.
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return padding.PKCS1v15()


def _key_problem(alg: str, public_key: Any) -> str | None:
    """Why ``public_key`` cannot carry ``alg`` (None if it can)."""
    if alg == ES256:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
            return None
        return f"alg ES256 needs an EC P-256 key, but the key is {_describe(public_key)}"
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= MIN_RSA_BITS:
        return None
    return f"alg {alg} needs an RSA key of at least {MIN_RSA_BITS} bits, but the key is {_describe(public_key)}"


def _describe(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}-bit"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    return type(public_key).__name__.removeprefix("_")


def _load_public_key(pem: str) -> Any:
    try:
        return serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError) as exc:
        raise Invalid("public key is not a PEM SubjectPublicKeyInfo") from exc


def public_key_thumbprint(public_key_pem: str) -> str:
    """The ``kid`` of a public key: base64url (no padding) of SHA-256 of its SubjectPublicKeyInfo DER.

    Raises :class:`Invalid` if ``public_key_pem`` is not a PEM public key.
    """
    return _b64(hashlib.sha256(_spki_der(_load_public_key(public_key_pem))).digest())


# --- KMS keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KmsKey:
    """A practitioner's KMS signing key.

    ``key_id`` is the KMS key ARN; ``kid`` is :func:`public_key_thumbprint` of
    ``public_key_pem`` (SubjectPublicKeyInfo PEM), for JWS headers.
    """

    key_id: str
    kid: str
    public_key_pem: str


class KmsSigner:
    """Per-practitioner KMS asymmetric keys (ECC_NIST_P256, SIGN_VERIFY).

    ``kms`` is a boto3 KMS client. The private key never leaves KMS; every
    KMS or network failure raises :class:`ServiceUnavailable` (503) and leaves
    nothing signed.
    """

    def __init__(self, kms: Any) -> None:
        self._kms = kms

    def create_key(self, *, tenant: str, practitioner_id: str) -> KmsKey:
        """Create a practitioner's signing key and read its public key.

        Tags carry the opaque ``tenant`` and ``practitioner_id`` and the
        purpose; the description holds no personal data. If the public key
        cannot be read the new key is scheduled for deletion. Raises
        :class:`ServiceUnavailable`. Record the key, or call
        :meth:`schedule_deletion` if recording fails.
        """
        try:
            created = self._kms.create_key(
                KeySpec="ECC_NIST_P256",
                KeyUsage="SIGN_VERIFY",
                Description="Expediente practitioner signing key",
                Tags=[
                    {"TagKey": "tenant", "TagValue": tenant},
                    {"TagKey": "practitioner", "TagValue": practitioner_id},
                    {"TagKey": "purpose", "TagValue": KEY_PURPOSE},
                ],
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable("Signing service unavailable; no key was created") from exc
        key_id: str = created["KeyMetadata"]["Arn"]
        try:
            response = self._kms.get_public_key(KeyId=key_id)
            public_key = serialization.load_der_public_key(response["PublicKey"])
        except (BotoCoreError, ClientError, ValueError) as exc:
            self._abandon(key_id)
            raise ServiceUnavailable("Signing service unavailable; no key was created") from exc
        if _key_problem(ES256, public_key):
            self._abandon(key_id)
            raise ServiceUnavailable(f"Signing service returned a {_describe(public_key)} key, not EC P-256")
        pem = _spki_pem(public_key)
        return KmsKey(key_id=key_id, kid=public_key_thumbprint(pem), public_key_pem=pem)

    def sign(self, key_id: str, data: bytes) -> bytes:
        """ES256 signature of ``data`` (the JWS signing input) as raw 64-byte ``r || s``.

        KMS receives only the SHA-256 digest (``MessageType="DIGEST"``), so
        documents larger than KMS's 4 KB message limit sign the same way.
        Raises :class:`ServiceUnavailable` if KMS fails (including an unknown or
        disabled key).
        """
        try:
            response = self._kms.sign(
                KeyId=key_id,
                Message=hashlib.sha256(data).digest(),
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            )
            return _raw_ecdsa(bytes(response["Signature"]))
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise ServiceUnavailable("Signing service unavailable; nothing was signed") from exc

    def sign_jws(self, key: KmsKey, header: Mapping[str, str], payload: bytes) -> str:
        """The detached JWS of ``payload`` under ``header`` (alg ES256) with ``key``.

        The signature is checked against ``key.public_key_pem`` before it is
        returned, so a signature that would not verify is never stored. Raises
        :class:`Invalid` for another alg and :class:`ServiceUnavailable` if KMS
        fails or returns a signature that does not verify.
        """
        if header.get("alg") != ES256:
            raise Invalid("KMS practitioner keys sign with alg ES256 only")
        jws = detached_jws(header, self.sign(key.key_id, signing_input(header, payload)))
        if not verify(jws, payload, public_key_pem=key.public_key_pem).valid:
            raise ServiceUnavailable("Signing service returned a signature that does not verify; nothing was signed")
        return jws

    def schedule_deletion(self, key_id: str) -> None:
        """Schedule deletion (7-day window) of a key created but never recorded.

        A key that does not exist or is already pending deletion is left as is.
        Raises :class:`ServiceUnavailable` for other failures.
        """
        # The bare key id: KMS takes it like the ARN, and the embedded AWS (moto) only takes it.
        bare_id = key_id.rsplit(":key/", 1)[-1]
        try:
            self._kms.schedule_key_deletion(KeyId=bare_id, PendingWindowInDays=7)
        except ClientError as exc:
            # KMSInvalidStateException: already pending deletion (a retried clean-up).
            if _error_code(exc) in {"NotFoundException", "KMSInvalidStateException"}:
                return
            raise ServiceUnavailable("Signing service unavailable; key deletion not scheduled") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable("Signing service unavailable; key deletion not scheduled") from exc

    def _abandon(self, key_id: str) -> None:
        # Best effort: the caller sees the original failure either way.
        with contextlib.suppress(ServiceUnavailable):
            self.schedule_deletion(key_id)


def _raw_ecdsa(der: bytes) -> bytes:
    """DER ``ECDSA-Sig-Value`` → JWS ``r || s``, each left-padded to 32 bytes (RFC 7518 3.4)."""
    r, s = decode_dss_signature(der)
    if r.bit_length() > 256 or s.bit_length() > 256:
        raise ValueError("not a P-256 signature")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """A practitioner's signing certificate (e.g. SAT e.firma / FIEL), checked by :func:`load_certificate`."""

    der: bytes
    pem: str
    sha256: str  # base64url SHA-256 of der: the header's x5t#S256
    subject: str  # RFC 4514
    serial_number: str  # lowercase hex
    not_before: datetime
    not_after: datetime
    alg_options: tuple[str, ...]  # ("RS256", "PS256") for RSA, ("ES256",) for P-256
    public_key_pem: str


def load_certificate(data: str | bytes, *, now: datetime) -> Certificate:
    """Read and check a certificate a practitioner registers for signing.

    ``data`` is PEM text, DER bytes (a SAT ``.cer`` file) or base64 of DER;
    ``now`` is timezone-aware. Raises :class:`Unprocessable` naming the problem:
    not a certificate; key not RSA ≥ 2048 or EC P-256; ``keyUsage`` present
    without ``digitalSignature`` or ``nonRepudiation``; a CA certificate; not
    valid at ``now`` (expired or not yet valid). The chain to the issuer and
    revocation are not checked here.
    """
    moment = _utc(now, "now")
    certificate = _read_certificate(data)
    if certificate is None:
        raise Unprocessable(f"certificate is {_NOT_A_CERTIFICATE}")
    public_key = certificate.public_key()
    alg_options = certificate_algorithms(public_key)
    if not alg_options:
        raise Unprocessable(
            f"certificate key ({_describe(public_key)}) is not supported; "
            f"signing certificates need RSA of at least {MIN_RSA_BITS} bits or EC P-256"
        )
    problem = _certificate_problem(certificate)
    if problem:
        raise Unprocessable(problem)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if moment > not_after:
        raise Unprocessable(f"certificate expired on {format_signing_time(not_after)}")
    if moment < not_before:
        raise Unprocessable(f"certificate is not valid until {format_signing_time(not_before)}")
    der = _der(certificate)
    return Certificate(
        der=der,
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        sha256=_b64(hashlib.sha256(der).digest()),
        subject=certificate.subject.rfc4514_string(),
        serial_number=format(certificate.serial_number, "x"),
        not_before=not_before,
        not_after=not_after,
        alg_options=alg_options,
        public_key_pem=_spki_pem(public_key),
    )


def certificate_algorithms(public_key: Any) -> tuple[str, ...]:
    """The JWS algs a certificate's public key may sign with; empty if the key is not supported."""
    if _key_problem(ES256, public_key) is None:
        return (ES256,)
    if _key_problem(RS256, public_key) is None:
        return (RS256, PS256)
    return ()


def _certificate_problem(certificate: x509.Certificate) -> str | None:
    """Why ``certificate`` may not sign documents (None if it may); its key type is checked apart."""
    try:
        extensions = {type(extension.value): extension.value for extension in certificate.extensions}
    except ValueError as exc:  # duplicate or malformed extensions
        return f"certificate extensions cannot be read: {exc}"
    usage = extensions.get(x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not (usage.digital_signature or usage.content_commitment):
        return "certificate keyUsage does not allow signing (needs digitalSignature or nonRepudiation)"
    constraints = extensions.get(x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        return "certificate is a CA certificate, not a signer's certificate"
    return None


def _read_certificate(data: str | bytes) -> x509.Certificate | None:
    """PEM, DER or base64-of-DER → certificate, or None if it is none of them."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    candidates: list[bytes] = []
    if b"-----BEGIN" in raw:
        with contextlib.suppress(ValueError):
            return x509.load_pem_x509_certificate(raw)
        return None
    if isinstance(data, bytes):
        candidates.append(raw)
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(b"".join(raw.split()), validate=True))
    for der in candidates:
        with contextlib.suppress(ValueError):
            return x509.load_der_x509_certificate(der)
    return None


# --- signing on the practitioner's side --------------------------------------------------------


def sign_with_private_key(private_key: Any, header: Mapping[str, str], payload: bytes) -> str:
    """What a practitioner's device does: sign ``payload`` under ``header`` and return the detached JWS.

    ``private_key`` is a ``cryptography`` EC P-256 key (alg ES256) or RSA key of
    at least 2048 bits (alg RS256 or PS256, as the header says). Raises
    :class:`Invalid` if the header's alg does not fit the key. For tests, the
    local demo and documentation; the server never holds these keys.
    """
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise Invalid(f"alg {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    public_key = private_key.public_key() if hasattr(private_key, "public_key") else None
    problem = _key_problem(alg, public_key)
    if problem:
        raise Invalid(problem)
    data = signing_input(header, payload)
    if alg == ES256:
        signature = _raw_ecdsa(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    else:
        signature = private_key.sign(data, _rsa_padding(alg), hashes.SHA256())
    return detached_jws(header, signature)


# --- encoding helpers -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    # RFC 7515 2: base64url without padding, no whitespace, no other characters.
    if not text:
        raise Invalid(f"{what} is empty")
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Invalid(f"{what} is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _spki_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _spki_pem(public_key: Any) -> str:
    pem: bytes = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")
