import boto3
import pytest
from moto import mock_aws

from expediente.crypto import BlindIndex, DecryptionFailed, Envelope, new_wrapped_index_key
from expediente.errors import Invalid
from expediente.fhir import decode_page_token, encode_page_token, parse_if_match


@pytest.fixture
def kms():
    with mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        yield client, client.create_key()["KeyMetadata"]["Arn"]


def test_envelope_round_trip_and_binding(kms):
    client, key = kms
    env = Envelope(client, key)
    token = env.encrypt("t-a", b"nota clinica", "Patient/1/1")
    assert env.decrypt("t-a", token, "Patient/1/1") == b"nota clinica"
    with pytest.raises(DecryptionFailed):
        env.decrypt("t-a", token, "Patient/2/1")  # moved to another record
    with pytest.raises(DecryptionFailed):
        Envelope(client, key).decrypt("t-b", token, "Patient/1/1")  # another tenant


def test_data_key_is_reused_until_it_expires():
    calls = []

    class FakeKms:
        def generate_data_key(self, **kw):
            calls.append(kw)
            return {"Plaintext": b"k" * 32, "CiphertextBlob": f"w{len(calls)}".encode()}

    now = [0.0]
    env = Envelope(FakeKms(), "key", max_age_s=10, max_messages=3, clock=lambda: now[0])
    for _ in range(3):
        env.encrypt("t-a", b"x", "a")
    assert len(calls) == 1
    env.encrypt("t-a", b"x", "a")
    assert len(calls) == 2  # message budget spent
    now[0] = 100
    env.encrypt("t-a", b"x", "a")
    assert len(calls) == 3  # too old
    assert calls[0]["EncryptionContext"] == {"tenant": "t-a", "purpose": "envelope"}


def test_blind_index_is_per_tenant_and_stable(kms):
    client, key = kms
    wrapped = {t: new_wrapped_index_key(client, key, t) for t in ("t-a", "t-b")}
    index = BlindIndex(client, key, wrapped.__getitem__)
    a1 = index.token("t-a", "curp", "PEGJ800101HDFRRN04")
    assert a1 == index.token("t-a", "curp", "PEGJ800101HDFRRN04")
    assert a1 != index.token("t-b", "curp", "PEGJ800101HDFRRN04")
    assert "PEGJ" not in a1


def test_page_tokens_only_continue_their_own_query():
    token = encode_page_token({"pk": {"S": "t-a#PIDX"}, "sk": {"S": "A#x"}}, "f1")
    assert decode_page_token(token, partition="t-a#PIDX", fingerprint="f1")["sk"] == {"S": "A#x"}
    for partition, fingerprint in (("t-b#PIDX", "f1"), ("t-a#PIDX", "f2")):
        with pytest.raises(Invalid):
            decode_page_token(token, partition=partition, fingerprint=fingerprint)
    with pytest.raises(Invalid):
        decode_page_token("not-base64!", partition="t-a#PIDX", fingerprint="f1")


def test_if_match_forms():
    assert parse_if_match('W/"3"') == 3
    assert parse_if_match('"3"') == 3
    assert parse_if_match(None) is None
    with pytest.raises(Invalid):
        parse_if_match("W/abc")
