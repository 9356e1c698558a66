"""The HL7 v2 codec under malformed messages: every one is read or refused with an Hl7Error, never a crash.

Messages are mutations of valid ORU^R01 and ADT^A04 messages at the level HL7 senders get wrong:
a segment dropped, repeated or moved, a field emptied or filled with delimiters and escapes, the
encoding characters changed, line endings mixed, a batch envelope miscounted, text cut short or
edited. Whatever the codec raises must become an ACK (``AE``/``AR``) whose ERR segment carries the
reason; that ACK must itself be well-formed ER7.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from expediente import hl7v2 as codec
from tests.unit.fuzz.strategies import fuzz_settings, mutated_text

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ORU = "\r".join([
    r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|HGIMB000151|20261125143000-0600||ORU^R01^ORU_R01|LAB000001|P|2.5.1",
    "PID|1||p1^^^EXPEDIENTE^MR~PEGJ800101HDFRMN09^^^RENAPO^NI||PÉREZ GÓMEZ^JUAN||19800101|M",
    "ORC|RE|L20261125AAAA|F-1||CM",
    "OBR|1|L20261125AAAA|F-1|24323-8^CMP^LN|||20261125080000-0600||||||||||||||||||F",
    "NTE|1||Muestra hemolizada \\.br\\leve",
    "OBX|1|NM|2823-3^Potassium^LN||4.4|mmol/L^^UCUM|3.5-5.1|N|||F|||20261125080000-0600",
    "OBX|2|SN|2951-2^Sodium^LN||<^135|mmol/L^^UCUM|136-145|L|||C|||20261125080000-0600",
    "OBX|3|ST|5778-6^Color of Urine^LN||AMARILLO~CLARO||||||P",
    "OBX|4|CWE|5802-4^Nitrite^LN||NEG^Negative^HL70078||||||F",
    "NTE|1||Valor verificado",
]) + "\r"
ADT = "\r".join([
    r"MSH|^~\&|ADMISION|HGIMB000151|EXPEDIENTE|HGIMB000151|20261125090000-0600||ADT^A04^ADT_A01|ADM0001|P|2.5.1",
    "EVN|A04|20261125090000-0600",
    "PID|1||PEGJ800101HDFRMN09^^^RENAPO^NI||PÉREZ GÓMEZ^JUAN CARLOS||19800101|M|||CALLE 1^^CIUDAD^09^03100^MEX"
    "||^^^^52^55^55550101",
    "PV1|1|O",
]) + "\r"
SEEDS = [ORU, ADT]
# Characters that carry meaning in ER7: delimiters, escapes, line breaks, and text that looks like a segment id.
ER7_ALPHABET = "|^~\\&\r\n\x0bMSHPIDOBXNTE0123456789.-+<>=\"' XEFRST\u00e9\u0000\x1c"
FIELD_VALUES = st.one_of(
    st.sampled_from(["", '""', "^", "~", "\\", "&", "|", "\\X0D\\", "\\E\\", "\\.br\\", "\\Zx\\", "\\", "^^^^^",
                     "99999999999999999999", "-0", "1e5", "NaN", "20261301", "2026112525", "ZZ", "2.1", "3.0",
                     "ORU^R01", "ADT^A08", "ACK^A01", "X", "D", "W", "I", "C", "TX", "ED", "\r", "\n\n",
                     "MSH|^~\\&|", "BHS|^~\\&", "A" * 300]),
    st.text(alphabet=ER7_ALPHABET, max_size=30),
    st.text(max_size=20),
)


@st.composite
def mutated_message(draw: st.DrawFn, seed: str) -> str:
    """``seed`` with one to four structural edits on its segments and fields, sometimes then text edits."""
    segments = [line.split("|") for line in seed.strip("\r").split("\r")]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["drop-seg", "dup-seg", "move-seg", "set-field", "drop-field",
                                       "add-field", "encoding", "segment-id"]))
        index = draw(st.integers(min_value=0, max_value=max(0, len(segments) - 1)))
        if not segments:
            break
        segment = segments[index]
        if action == "drop-seg":
            del segments[index]
        elif action == "dup-seg":
            segments.insert(draw(st.integers(min_value=0, max_value=len(segments))), list(segment))
        elif action == "move-seg":
            segments.insert(draw(st.integers(min_value=0, max_value=len(segments))), segments.pop(index))
        elif action == "set-field" and len(segment) > 1:
            segment[draw(st.integers(min_value=1, max_value=len(segment) - 1))] = draw(FIELD_VALUES)
        elif action == "drop-field" and len(segment) > 1:
            del segment[draw(st.integers(min_value=1, max_value=len(segment) - 1)):]
        elif action == "add-field":
            segment.extend(draw(st.lists(FIELD_VALUES, min_size=1, max_size=30)))
        elif action == "encoding" and segments[0][0] == "MSH" and len(segments[0]) > 1:
            segments[0][1] = draw(st.sampled_from(["", "^~\\", "^~\\&#", "^^\\&", "~^\\&", "^~&\\", "abcd", "^~\\&&"]))
        elif action == "segment-id":
            segment[0] = draw(st.sampled_from(["", "msh", "MS", "MSHX", "ZZ1", "OBX", "PID", "MSH", "BHS", "BTS",
                                               "FHS", "1AB", "ÑXX"]))
    ending = draw(st.sampled_from(["\r", "\n", "\r\n", "\n\r", ""]))
    text = ending.join("|".join(segment) for segment in segments) + ending
    if draw(st.booleans()):
        text = draw(mutated_text(text, alphabet=ER7_ALPHABET))
    return text


@st.composite
def batches(draw: st.DrawFn) -> str:
    """A BHS/BTS (sometimes FHS/FTS) envelope around mutated messages, its count right or wrong."""
    messages = draw(st.lists(st.sampled_from(SEEDS).flatmap(mutated_message), min_size=0, max_size=3))
    count = draw(st.sampled_from([str(len(messages)), str(len(messages) + 1), "", "x", "-1"]))
    body = "BHS|^~\\&|LABSYS|LAB CENTRAL\r" + "".join(m if m.endswith("\r") else m + "\r" for m in messages)
    body += f"BTS|{count}\r"
    if draw(st.booleans()):
        body = "FHS|^~\\&\r" + body + draw(st.sampled_from(["FTS|1\r", "FTS|2\r", ""]))
    return body


messages = st.one_of(
    st.sampled_from(SEEDS).flatmap(mutated_message),
    st.sampled_from(SEEDS).flatmap(lambda seed: mutated_text(seed, alphabet=ER7_ALPHABET)),
    st.text(alphabet=ER7_ALPHABET, max_size=200),
    st.text(max_size=100),
)


def read_message(text: str) -> codec.OruMessage | codec.AdtMessage:
    """What the handler does with one message's text: parse the MSH, then read by message type."""
    return codec.read(codec.parse(text))


def assert_nak(error: codec.Hl7Error, text: str) -> None:
    """The error becomes a well-formed ACK: MSA-1 AE/AR, an ERR with a 0357 code and a non-empty reason."""
    assert error.ack_code in ("AE", "AR") and error.code in codec.ERROR_TEXTS and error.text
    reply = codec.ack(None, error.ack_code, control_id="ACK1", errors=[error], now=NOW, raw_msh=text[:2000])
    parsed = hl7.parse(reply)
    assert str(parsed.segment("MSA")[1]) == error.ack_code
    err = parsed.segment("ERR")
    assert str(err[3][0][0]) == error.code and str(err[8])


@pytest.mark.parametrize("seed", SEEDS, ids=["ORU^R01", "ADT^A04"])
def test_the_seed_messages_are_valid_so_the_mutations_start_from_valid_input(seed: str) -> None:
    assert read_message(seed) is not None


@fuzz_settings(1500)
@given(text=messages)
def test_a_malformed_message_is_read_or_refused_with_an_hl7_error_that_makes_a_nak(text: str) -> None:
    try:
        read_message(text)
    except codec.Hl7Error as error:
        assert_nak(error, text)


@fuzz_settings(300)
@given(body=st.one_of(batches(), messages))
def test_splitting_any_body_into_messages_gives_messages_or_an_hl7_error(body: str) -> None:
    try:
        parts = codec.split(body)
    except codec.Hl7Error as error:
        assert_nak(error, body)
        return
    assert isinstance(parts, list)
    for text in parts:
        try:
            read_message(text)
        except codec.Hl7Error as error:
            assert_nak(error, text)


@fuzz_settings(300)
@given(text=messages, code=st.sampled_from(["AA", "AE", "AR"]))
def test_an_ack_can_be_built_for_any_received_text_and_parses_as_er7(text: str, code: str) -> None:
    header = None
    with contextlib.suppress(codec.Hl7Error):
        header = codec.parse(text).header
    reply = codec.ack(header, code, control_id="ACK2", now=NOW, raw_msh=text)
    assert str(hl7.parse(reply).segment("MSA")[1]) == code
