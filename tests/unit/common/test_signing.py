"""The signature core: canonical form, detached JWS, KMS keys, certificates, and interop with JOSE."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.x509.oid import NameOID
from moto import mock_aws
from moto.kms.responses import KmsResponse

from expediente.errors import Invalid, ServiceUnavailable, Unprocessable
from expediente.signing import (
    Certificate,
    KmsKey,
    KmsSigner,
    Verification,
    canonical,
    detached_jws,
    digest,
    encode_header,
    format_signing_time,
    load_certificate,
    parse_detached_jws,
    parse_signing_time,
    protected_header,
    public_key_thumbprint,
    sign_with_private_key,
    signing_input,
    verify,
)

NOW = datetime(2025, 3, 14, 16, 30, tzinfo=UTC)
SIGNED_AT = format_signing_time(NOW)
NOTE = {
    "resourceType": "Composition",
    "status": "final",
    "title": "Nota de evolución",
    "date": "2025-03-14T16:29:00Z",
    "section": [{"text": {"div": "<div>Paciente estable, sin fiebre.</div>"}}],
    "extension": [{"url": "urn:example:weight", "valueDecimal": 70.0}],
}
PAYLOAD = canonical(NOTE)


# --- helpers ----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def spki_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_certificate(
    private_key,
    *,
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=3 * 365),
    key_usage: x509.KeyUsage | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A self-signed certificate shaped like a SAT e.firma (subject with the RFC in x500UniqueIdentifier)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "MARÍA PÉREZ LÓPEZ"),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, "PELM800101AB1"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(0x3330303031303030303030353030303033343136)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(private_key, hashes.SHA256())


def usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_certificate(rsa_key) -> x509.Certificate:
    return make_certificate(rsa_key, key_usage=usage(digital_signature=True, content_commitment=True))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # moto 5 ignores MessageType=DIGEST and hashes the digest again, where real KMS signs the
    # digest as given. Sign digests as KMS does so the signatures are the ones KMS would return.
    moto_sign = KmsResponse.sign

    def sign(self: KmsResponse) -> str:
        answer = moto_sign(self)  # moto's own checks: key exists, is enabled, fits the algorithm
        if self._get_param("MessageType") != "DIGEST":
            return answer
        key = self.kms_backend.describe_key(self._get_param("KeyId"))
        algorithm = self._get_param("SigningAlgorithm")
        assert algorithm == "ECDSA_SHA_256"
        signature = key.private_key.private_key.sign(self._get_param("Message"), ec.ECDSA(Prehashed(hashes.SHA256())))
        return json.dumps(
            {"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": algorithm}
        )

    monkeypatch.setattr(KmsResponse, "sign", sign)
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


def kms_signed(kms, document=NOTE):
    signer = KmsSigner(kms)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    header = protected_header(alg="ES256", kid=key.kid, signing_time=SIGNED_AT)
    return key, signer.sign_jws(key, header, canonical(document))


# --- canonical form ---------------------------------------------------------------------------


def test_canonical_sorts_keys_normalises_numbers_and_keeps_unicode():
    assert canonical({"b": 1.0, "a": "José ñ €", "c": [1e21, 0.000001, -0.0, 10.50]}) == (
        '{"a":"José ñ €","b":1,"c":[1e+21,0.000001,0,10.5]}'.encode()
    )


def test_canonical_orders_keys_by_utf16_code_units():
    # RFC 8785 3.2.3's own example: the emoji (surrogate pair D83D…) sorts before U+FB33.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = json.loads(canonical(dict.fromkeys(keys, 0)))
    assert list(out) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_digest_is_hex_sha256_of_canonical_and_ignores_key_order():
    reordered = dict(reversed(list(NOTE.items())))
    assert digest(reordered) == digest(NOTE) == hashlib.sha256(PAYLOAD).hexdigest()
    assert digest({**NOTE, "status": "amended"}) != digest(NOTE)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**60, {1: "x"}])
def test_canonical_rejects_values_json_cannot_hold_exactly(value):
    with pytest.raises(Invalid, match="RFC 8785"):
        canonical({"value": value})


# --- header and serialization -----------------------------------------------------------------


def test_protected_header_has_the_agreed_fields_and_encodes_deterministically():
    header = protected_header(alg="RS256", kid="k1", signing_time=SIGNED_AT, cert_sha256="A" * 43)
    assert header == {"alg": "RS256", "kid": "k1", "typ": "JOSE", "sigT": "2025-03-14T16:30:00Z", "x5t#S256": "A" * 43}
    shuffled = dict(reversed(list(header.items())))
    assert encode_header(shuffled) == encode_header(header)
    assert unb64url(encode_header(header)) == (
        b'{"alg":"RS256","kid":"k1","sigT":"2025-03-14T16:30:00Z","typ":"JOSE","x5t#S256":"' + b"A" * 43 + b'"}'
    )
    assert signing_input(header, b"{}") == f"{encode_header(header)}.e30".encode()
    assert detached_jws(header, b"\xff\xfe") == f"{encode_header(header)}..__4"
    assert "x5t#S256" not in protected_header(alg="ES256", kid="k1", signing_time=SIGNED_AT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alg": "none"}, "not supported"),
        ({"alg": "HS256"}, "not supported"),
        ({"kid": ""}, "kid"),
        ({"signing_time": "2025-03-14 16:30:00"}, "ISO-8601"),
        ({"signing_time": "2025-03-14T16:30:00+00:00"}, "ISO-8601"),
        ({"signing_time": "2025-02-30T16:30:00Z"}, "not a real date"),
        ({"cert_sha256": "abc"}, "x5t#S256"),
    ],
)
def test_protected_header_rejects_bad_values(kwargs, message):
    arguments = {"alg": "ES256", "kid": "k1", "signing_time": SIGNED_AT, **kwargs}
    with pytest.raises(Invalid, match=message):
        protected_header(**arguments)


def test_signing_time_round_trips_in_utc():
    mexico_city = timezone(timedelta(hours=-6))
    moment = datetime(2025, 3, 14, 10, 30, tzinfo=mexico_city)
    assert format_signing_time(moment) == "2025-03-14T16:30:00Z"
    assert parse_signing_time("2025-03-14T16:30:00Z") == NOW
    with pytest.raises(ValueError, match="timezone-aware"):
        format_signing_time(datetime(2025, 3, 14, 16, 30))


def test_parse_detached_jws_returns_header_and_signature(ec_key):
    header = protected_header(alg="ES256", kid="k1", signing_time=SIGNED_AT)
    parsed_header, signature = parse_detached_jws(sign_with_private_key(ec_key, header, PAYLOAD))
    assert parsed_header == header
    assert len(signature) == 64


def test_parse_detached_jws_rejects_a_jws_with_its_payload_attached(ec_key):
    header = protected_header(alg="ES256", kid="k1", signing_time=SIGNED_AT)
    head, _, signature = sign_with_private_key(ec_key, header, PAYLOAD).split(".")
    with pytest.raises(Invalid, match="detached"):
        parse_detached_jws(f"{head}.{b64url(PAYLOAD)}.{signature}")


DUPLICATE_ALG = b64url(b'{"alg":"ES256","alg":"none"}')


def _segment(header: dict) -> str:
    return b64url(json.dumps(header).encode())


@pytest.mark.parametrize(
    ("jws", "message"),
    [
        ("", "three"),
        ("garbage", "three"),
        ("a.b.c.d", "three"),
        ("..", "header is empty"),
        ("@@@..AAAA", "header is not base64url"),
        ("eyJ=..AAAA", "header is not base64url"),
        (f"{_segment({'alg': 'ES256'})}..", "signature is empty"),
        (f"{_segment({'alg': 'ES256'})}..A", "signature is not base64url"),
        (f"{b64url(b'not json')}..AAAA", "not valid JSON"),
        (f"{b64url(b'[1, 2]')}..AAAA", "not a JSON object"),
        (f"{DUPLICATE_ALG}..AAAA", "duplicate"),
        (f"{_segment({'alg': 'none'})}..AAAA", "alg 'none' is not supported"),
        (f"{_segment({'alg': 'HS256'})}..AAAA", "not supported"),
        (f"{_segment({'kid': 'k1'})}..AAAA", "alg None is not supported"),
        (f"{_segment({'alg': 'ES256', 'b64': False})}..AAAA", "b64=false"),
        (f"{_segment({'alg': 'ES256', 'crit': ['sigT'], 'sigT': SIGNED_AT})}..AAAA", "crit"),
        ("A" * 20_000, "longer"),
    ],
)
def test_parse_detached_jws_rejects_malformed_input_naming_the_problem(jws, message):
    with pytest.raises(Invalid, match=message):
        parse_detached_jws(jws)


# --- KMS keys ---------------------------------------------------------------------------------


def test_kms_key_is_p256_sign_verify_tagged_without_personal_data(aws):
    key = KmsSigner(aws).create_key(tenant="t-a", practitioner_id="prac-1")
    metadata = aws.describe_key(KeyId=key.key_id)["KeyMetadata"]
    assert key.key_id == metadata["Arn"]
    assert (metadata["KeySpec"], metadata["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert metadata["Description"] == "Expediente practitioner signing key"
    tags = {t["TagKey"]: t["TagValue"] for t in aws.list_resource_tags(KeyId=key.key_id)["Tags"]}
    assert tags == {"tenant": "t-a", "practitioner": "prac-1", "purpose": "practitioner-signing"}
    public_key = serialization.load_pem_public_key(key.public_key_pem.encode())
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)


def test_kid_is_base64url_sha256_of_the_subject_public_key_info(aws):
    key = KmsSigner(aws).create_key(tenant="t-a", practitioner_id="prac-1")
    spki = aws.get_public_key(KeyId=key.key_id)["PublicKey"]
    assert key.kid == b64url(hashlib.sha256(spki).digest()) == public_key_thumbprint(key.public_key_pem)
    assert len(key.kid) == 43
    assert KmsSigner(aws).create_key(tenant="t-a", practitioner_id="prac-1").kid != key.kid


def test_kms_key_create_sign_verify_is_valid(aws):
    key, jws = kms_signed(aws)
    result = verify(jws, PAYLOAD, public_key_pem=key.public_key_pem)
    assert result == Verification(True, "signature valid")
    assert parse_detached_jws(jws)[0]["kid"] == key.kid


def test_kms_es256_signature_is_raw_64_bytes(aws):
    signer = KmsSigner(aws)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    public_key = serialization.load_pem_public_key(key.public_key_pem.encode())
    for n in range(5):
        data = b"signing input %d" % n
        signature = signer.sign(key.key_id, data)
        assert len(signature) == 64  # r || s, not the DER KMS returns (70-72 bytes)
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))


def test_kms_sign_sends_only_the_sha256_digest_and_left_pads_r_and_s():
    calls = []
    der = encode_dss_signature(1, 2**255 + 7)  # r shorter than 32 bytes must be left-padded

    class FakeKms:
        def sign(self, **kwargs):
            calls.append(kwargs)
            return {"Signature": der}

    data = b"x" * 10_000  # larger than KMS's 4 KB RAW message limit
    raw = KmsSigner(FakeKms()).sign("arn:key", data)
    assert calls == [
        {
            "KeyId": "arn:key",
            "Message": hashlib.sha256(data).digest(),
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        }
    ]
    assert raw == (1).to_bytes(32, "big") + (2**255 + 7).to_bytes(32, "big")


def test_changing_one_payload_byte_makes_the_signature_invalid(aws):
    key, jws = kms_signed(aws)
    tampered = bytearray(PAYLOAD)
    tampered[PAYLOAD.index(b"estable")] ^= 0x01
    result = verify(jws, bytes(tampered), public_key_pem=key.public_key_pem)
    assert not result.valid
    assert "does not match the document" in result.reason


def test_a_changed_document_is_caught_through_its_canonical_form(aws):
    key, jws = kms_signed(aws)
    assert verify(jws, canonical(dict(reversed(list(NOTE.items())))), public_key_pem=key.public_key_pem).valid
    assert not verify(jws, canonical({**NOTE, "status": "amended"}), public_key_pem=key.public_key_pem).valid


def test_signature_from_another_key_is_invalid(aws, ec_key):
    _, jws = kms_signed(aws)
    result = verify(jws, PAYLOAD, public_key_pem=spki_pem(ec_key))
    assert result.valid is False
    assert "another key" in result.reason


def test_changing_the_header_invalidates_the_signature(aws):
    key, jws = kms_signed(aws)
    header, signature = parse_detached_jws(jws)
    forged = detached_jws({**header, "sigT": "2020-01-01T00:00:00Z"}, signature)
    assert not verify(forged, PAYLOAD, public_key_pem=key.public_key_pem).valid


def test_es256_signature_of_the_wrong_length_is_invalid_not_an_error(ec_key):
    header = protected_header(alg="ES256", kid="k1", signing_time=SIGNED_AT)
    _, signature = parse_detached_jws(sign_with_private_key(ec_key, header, PAYLOAD))
    der = ec_key.sign(signing_input(header, PAYLOAD), ec.ECDSA(hashes.SHA256()))
    for wrong in (signature[:63], der):
        result = verify(detached_jws(header, wrong), PAYLOAD, public_key_pem=spki_pem(ec_key))
        assert result.valid is False
        assert "64 bytes" in result.reason


def test_header_alg_that_does_not_fit_the_key_is_invalid(ec_key, rsa_key):
    es256 = sign_with_private_key(ec_key, protected_header(alg="ES256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    result = verify(es256, PAYLOAD, public_key_pem=spki_pem(rsa_key))
    assert (result.valid, result.reason) == (False, "alg ES256 needs an EC P-256 key, but the key is RSA 2048-bit")
    rs256 = sign_with_private_key(rsa_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    result = verify(rs256, PAYLOAD, public_key_pem=spki_pem(ec_key))
    assert not result.valid
    assert "RS256 needs an RSA key" in result.reason
    p384 = ec.generate_private_key(ec.SECP384R1())
    result = verify(es256, PAYLOAD, public_key_pem=spki_pem(p384))
    assert not result.valid
    assert "secp384r1" in result.reason


def test_rs256_signature_relabelled_ps256_is_invalid(rsa_key):
    header = protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT)
    _, signature = parse_detached_jws(sign_with_private_key(rsa_key, header, PAYLOAD))
    relabelled = detached_jws({**header, "alg": "PS256"}, signature)
    assert not verify(relabelled, PAYLOAD, public_key_pem=spki_pem(rsa_key)).valid


def test_sign_with_private_key_refuses_an_alg_that_does_not_fit_the_key(ec_key, rsa_key):
    with pytest.raises(Invalid, match="RSA key"):
        sign_with_private_key(ec_key, protected_header(alg="PS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    with pytest.raises(Invalid, match="P-256"):
        sign_with_private_key(rsa_key, protected_header(alg="ES256", kid="k", signing_time=SIGNED_AT), PAYLOAD)


def test_kms_signer_signs_only_es256_headers(aws):
    signer = KmsSigner(aws)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    with pytest.raises(Invalid, match="ES256"):
        signer.sign_jws(key, protected_header(alg="RS256", kid=key.kid, signing_time=SIGNED_AT), PAYLOAD)


def test_kms_signature_that_does_not_verify_is_never_returned(aws, ec_key):
    signer = KmsSigner(aws)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    wrong = KmsKey(key_id=key.key_id, kid=key.kid, public_key_pem=spki_pem(ec_key))  # e.g. a stale record
    with pytest.raises(ServiceUnavailable, match="does not verify"):
        signer.sign_jws(wrong, protected_header(alg="ES256", kid=key.kid, signing_time=SIGNED_AT), PAYLOAD)


def test_signing_with_an_unknown_kms_key_is_service_unavailable(aws):
    with pytest.raises(ServiceUnavailable, match="nothing was signed"):
        KmsSigner(aws).sign("arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000", b"x")


def test_unreachable_kms_is_service_unavailable(aws, monkeypatch):
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com")

    signer = KmsSigner(aws)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    monkeypatch.setattr(aws, "sign", unreachable)
    monkeypatch.setattr(aws, "create_key", unreachable)
    with pytest.raises(ServiceUnavailable, match="nothing was signed") as caught:
        signer.sign(key.key_id, b"x")
    assert caught.value.status == 503
    with pytest.raises(ServiceUnavailable, match="no key was created"):
        signer.create_key(tenant="t-a", practitioner_id="prac-1")


def test_key_whose_public_key_cannot_be_read_is_scheduled_for_deletion(aws, monkeypatch):
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com")

    monkeypatch.setattr(aws, "get_public_key", unreachable)
    with pytest.raises(ServiceUnavailable):
        KmsSigner(aws).create_key(tenant="t-a", practitioner_id="prac-1")
    [listed] = aws.list_keys()["Keys"]
    assert aws.describe_key(KeyId=listed["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_schedule_deletion_of_an_unrecorded_key_is_idempotent(aws):
    signer = KmsSigner(aws)
    key = signer.create_key(tenant="t-a", practitioner_id="prac-1")
    signer.schedule_deletion(key.key_id)
    signer.schedule_deletion(key.key_id)  # a retried clean-up
    signer.schedule_deletion("arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000")
    metadata = aws.describe_key(KeyId=key.key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"


@pytest.mark.parametrize(
    ("code", "swallowed"),
    [("NotFoundException", True), ("KMSInvalidStateException", True), ("AccessDeniedException", False)],
)
def test_schedule_deletion_ignores_only_keys_already_gone(code, swallowed):
    calls = []

    class FakeKms:
        def schedule_key_deletion(self, **kwargs):
            calls.append(kwargs)
            raise ClientError({"Error": {"Code": code, "Message": "..."}}, "ScheduleKeyDeletion")

    signer = KmsSigner(FakeKms())
    if swallowed:
        signer.schedule_deletion("arn:aws:kms:us-east-1:123456789012:key/abc")
    else:
        with pytest.raises(ServiceUnavailable, match="deletion not scheduled"):
            signer.schedule_deletion("arn:aws:kms:us-east-1:123456789012:key/abc")
    assert calls == [{"KeyId": "abc", "PendingWindowInDays": 7}]


# --- certificates -----------------------------------------------------------------------------


def test_load_certificate_reads_pem_der_and_base64_der(rsa_certificate):
    der = rsa_certificate.public_bytes(serialization.Encoding.DER)
    loaded = [load_certificate(form, now=NOW) for form in (pem(rsa_certificate), der, base64.b64encode(der).decode())]
    assert loaded[0] == loaded[1] == loaded[2]
    certificate = loaded[0]
    assert isinstance(certificate, Certificate)
    assert certificate.der == der
    assert certificate.sha256 == b64url(hashlib.sha256(der).digest())
    assert certificate.serial_number == "3330303031303030303030353030303033343136"
    assert "CN=MARÍA PÉREZ LÓPEZ" in certificate.subject
    assert "C=MX" in certificate.subject
    assert certificate.alg_options == ("RS256", "PS256")
    assert certificate.not_before == NOW - timedelta(days=365)
    assert certificate.not_after.tzinfo is not None
    assert x509.load_pem_x509_certificate(certificate.pem.encode()) == rsa_certificate
    assert "BEGIN PUBLIC KEY" in certificate.public_key_pem


def test_p256_certificate_offers_es256(ec_key):
    certificate = load_certificate(pem(make_certificate(ec_key)), now=NOW)
    assert certificate.alg_options == ("ES256",)


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_certificate_signatures_are_valid(rsa_key, rsa_certificate, alg):
    certificate = load_certificate(pem(rsa_certificate), now=NOW)
    header = protected_header(alg=alg, kid="cert-1", signing_time=SIGNED_AT, cert_sha256=certificate.sha256)
    jws = sign_with_private_key(rsa_key, header, PAYLOAD)
    assert verify(jws, PAYLOAD, certificate_pem=certificate.pem, at=NOW) == Verification(True, "signature valid")
    assert verify(jws, PAYLOAD, public_key_pem=certificate.public_key_pem).valid
    assert not verify(jws, PAYLOAD + b" ", certificate_pem=certificate.pem, at=NOW).valid


def test_rsa_signatures_are_randomised_or_deterministic_as_the_algorithm_says(rsa_key):
    header = protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT)
    assert sign_with_private_key(rsa_key, header, PAYLOAD) == sign_with_private_key(rsa_key, header, PAYLOAD)
    header = {**header, "alg": "PS256"}
    assert sign_with_private_key(rsa_key, header, PAYLOAD) != sign_with_private_key(rsa_key, header, PAYLOAD)


def test_expired_certificate_at_signing_time_is_invalid_and_refused_on_load(rsa_key):
    expired = make_certificate(rsa_key, not_before=NOW - timedelta(days=1500), not_after=NOW - timedelta(days=1))
    jws = sign_with_private_key(rsa_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    assert verify(jws, PAYLOAD, certificate_pem=pem(expired), at=NOW) == Verification(
        False, "certificate expired at signing time"
    )
    assert verify(jws, PAYLOAD, certificate_pem=pem(expired), at=NOW - timedelta(days=30)).valid
    with pytest.raises(Unprocessable, match="certificate expired on"):
        load_certificate(pem(expired), now=NOW)


def test_certificate_not_yet_valid_is_invalid_and_refused_on_load(rsa_key):
    future = make_certificate(rsa_key, not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=900))
    jws = sign_with_private_key(rsa_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    result = verify(jws, PAYLOAD, certificate_pem=pem(future), at=NOW)
    assert (result.valid, result.reason) == (False, "certificate not yet valid at signing time")
    with pytest.raises(Unprocessable, match="not valid until"):
        load_certificate(pem(future), now=NOW)


def test_rsa_1024_certificate_is_refused():
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = make_certificate(weak_key)
    with pytest.raises(Unprocessable, match="RSA 1024-bit") as caught:
        load_certificate(pem(weak), now=NOW)
    assert caught.value.status == 422
    jws = sign_with_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT),
        PAYLOAD,
    )
    result = verify(jws, PAYLOAD, certificate_pem=pem(weak))
    assert not result.valid
    assert "at least 2048 bits" in result.reason
    with pytest.raises(Invalid, match="at least 2048"):
        sign_with_private_key(weak_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP256K1()])
def test_ec_certificate_on_another_curve_is_refused(curve):
    with pytest.raises(Unprocessable, match=curve.name):
        load_certificate(pem(make_certificate(ec.generate_private_key(curve))), now=NOW)


def test_certificate_for_key_cert_sign_only_is_refused(rsa_key):
    issuer_only = make_certificate(rsa_key, key_usage=usage(key_cert_sign=True))
    with pytest.raises(Unprocessable, match="keyUsage does not allow signing"):
        load_certificate(pem(issuer_only), now=NOW)
    jws = sign_with_private_key(rsa_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    result = verify(jws, PAYLOAD, certificate_pem=pem(issuer_only), at=NOW)
    assert not result.valid
    assert "keyUsage" in result.reason


def test_certificate_with_non_repudiation_only_is_accepted(rsa_key):
    certificate = make_certificate(rsa_key, key_usage=usage(content_commitment=True))
    assert load_certificate(pem(certificate), now=NOW).alg_options == ("RS256", "PS256")


def test_ca_certificate_is_refused(rsa_key):
    with pytest.raises(Unprocessable, match="CA certificate"):
        load_certificate(pem(make_certificate(rsa_key, ca=True)), now=NOW)


@pytest.mark.parametrize(
    "data", ["", "no es un certificado", b"\x30\x03\x02\x01\x01", "-----BEGIN CERTIFICATE-----\nAAAA"]
)
def test_load_certificate_refuses_what_is_not_a_certificate(data):
    with pytest.raises(Unprocessable, match=r"not an X\.509 certificate"):
        load_certificate(data, now=NOW)


def test_certificate_must_match_the_header_thumbprint(rsa_key, rsa_certificate):
    other = make_certificate(rsa_key, key_usage=usage(digital_signature=True))  # same key, another certificate
    header = protected_header(
        alg="RS256", kid="k", signing_time=SIGNED_AT, cert_sha256=load_certificate(pem(other), now=NOW).sha256
    )
    jws = sign_with_private_key(rsa_key, header, PAYLOAD)
    assert verify(jws, PAYLOAD, certificate_pem=pem(other), at=NOW).valid
    result = verify(jws, PAYLOAD, certificate_pem=pem(rsa_certificate), at=NOW)
    assert (result.valid, result.reason) == (False, "certificate does not match the header's x5t#S256")


def test_verify_needs_exactly_one_key_and_readable_inputs(ec_key, rsa_certificate):
    jws = sign_with_private_key(ec_key, protected_header(alg="ES256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    with pytest.raises(ValueError, match="exactly one"):
        verify(jws, PAYLOAD)
    with pytest.raises(ValueError, match="exactly one"):
        verify(jws, PAYLOAD, public_key_pem=spki_pem(ec_key), certificate_pem=pem(rsa_certificate))
    with pytest.raises(Invalid, match="public key"):
        verify(jws, PAYLOAD, public_key_pem="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(Invalid, match="certificate"):
        verify(jws, PAYLOAD, certificate_pem="not a certificate")
    with pytest.raises(Invalid, match="detached"):
        verify(jws.replace("..", ".e30."), PAYLOAD, public_key_pem=spki_pem(ec_key))


# --- interoperability: the same JWS checked without this module ---------------------------------


def verify_by_hand(jws: str, payload: bytes, public_key) -> None:
    """RFC 7515 appendix F + RFC 7518 3.3/3.4, written out with plain ``cryptography``; raises if invalid."""
    head, middle, signature_b64 = jws.split(".")
    assert middle == ""
    alg = json.loads(unb64url(head))["alg"]
    message = head.encode() + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    signature = unb64url(signature_b64)
    if alg == "ES256":
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    elif alg == "RS256":
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise AssertionError(alg)


def test_kms_es256_jws_verifies_by_hand_with_plain_cryptography(aws):
    key, jws = kms_signed(aws)
    public_key = serialization.load_pem_public_key(key.public_key_pem.encode())
    verify_by_hand(jws, PAYLOAD, public_key)
    with pytest.raises(InvalidSignature):
        verify_by_hand(jws, PAYLOAD[:-1], public_key)


def test_certificate_rs256_jws_verifies_by_hand_with_plain_cryptography(rsa_key, rsa_certificate):
    header = protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT)
    jws = sign_with_private_key(rsa_key, header, PAYLOAD)
    verify_by_hand(jws, PAYLOAD, rsa_certificate.public_key())
    with pytest.raises(InvalidSignature):
        verify_by_hand(jws, PAYLOAD + b"\n", rsa_certificate.public_key())


def test_detached_jws_verifies_with_joserfc(aws, rsa_key):
    joserfc_jws = pytest.importorskip("joserfc.jws")
    from joserfc.errors import BadSignatureError
    from joserfc.jwk import ECKey, RSAKey
    from joserfc.registry import HeaderParameter

    def registry(alg: str):
        # joserfc refuses header names it does not know unless told about them (RFC 7515 would ignore them).
        return joserfc_jws.JWSRegistry(
            header_registry={"sigT": HeaderParameter("JAdES signing time", "str")}, algorithms=[alg]
        )

    key, es256 = kms_signed(aws)
    ec_public = ECKey.import_key(key.public_key_pem)
    assert (
        joserfc_jws.deserialize_compact(es256, ec_public, registry=registry("ES256"), payload=PAYLOAD).payload
        == PAYLOAD
    )
    with pytest.raises(BadSignatureError):
        joserfc_jws.deserialize_compact(es256, ec_public, registry=registry("ES256"), payload=PAYLOAD + b" ")
    rsa_public = RSAKey.import_key(spki_pem(rsa_key))
    for alg in ("RS256", "PS256"):
        jws = sign_with_private_key(rsa_key, protected_header(alg=alg, kid="k", signing_time=SIGNED_AT), PAYLOAD)
        verified = joserfc_jws.deserialize_compact(jws, rsa_public, registry=registry(alg), payload=PAYLOAD)
        assert verified.payload == PAYLOAD


def test_detached_jws_made_by_joserfc_verifies_here(ec_key, rsa_key):
    joserfc_jws = pytest.importorskip("joserfc.jws")
    from joserfc.jwk import ECKey, RSAKey

    for private, alg, imported in (
        (ec_key, "ES256", ECKey.import_key(ec_key)),
        (
            rsa_key,
            "PS256",
            RSAKey.import_key(
                rsa_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            ),
        ),
    ):
        attached = joserfc_jws.serialize_compact({"alg": alg, "kid": "their-kid"}, PAYLOAD, imported, algorithms=[alg])
        head, _, signature = attached.split(".")
        detached = f"{head}..{signature}"
        assert verify(detached, PAYLOAD, public_key_pem=spki_pem(private)).valid
        assert not verify(detached, PAYLOAD[1:], public_key_pem=spki_pem(private)).valid


def test_detached_jws_verifies_with_pyjwt_once_the_payload_is_put_back(aws, rsa_key):
    jwt = pytest.importorskip("jwt")
    key, es256 = kms_signed(aws)
    rs256 = sign_with_private_key(rsa_key, protected_header(alg="RS256", kid="k", signing_time=SIGNED_AT), PAYLOAD)
    for jws, public_pem, alg in ((es256, key.public_key_pem, "ES256"), (rs256, spki_pem(rsa_key), "RS256")):
        attached = jws.replace("..", f".{b64url(PAYLOAD)}.")
        assert jwt.api_jws.PyJWS().decode(attached, public_pem, algorithms=[alg]) == PAYLOAD
