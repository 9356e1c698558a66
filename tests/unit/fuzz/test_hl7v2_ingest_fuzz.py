"""HL7 v2 over the handler, against moto: a refused message gets a NAK and leaves nothing behind.

Mutations of a valid ORU^R01 (for a real order of a real patient, sent by the laboratory's user) and
of a valid ADT^A04 (sent by reception) go through ``functions.hl7v2.handler.lambda_handler``. Every
answer must be HTTP 200 with an ACK; when the ACK is ``AE`` or ``AR`` it carries an ERR segment and
no table changed except the audit table, which gains only the record of the refused message, and no
event was published. Far fewer examples than the codec fuzz: each one runs the whole ingest on moto
and scans every table twice.
"""

from __future__ import annotations

import itertools
from typing import Any

import boto3
import hl7
from hypothesis import given
from hypothesis import strategies as st

from infra import definitions
from tests.integration.hl7v2.test_hl7v2 import Interface, adt, oru, placer_of, potassium, send
from tests.integration.notes.conftest import Chain, Staff
from tests.support.aws import REGION, table_name
from tests.support.curp import make_curp
from tests.unit.fuzz.strategies import fuzz_settings
from tests.unit.fuzz.test_hl7v2_fuzz import mutated_message

_CONTROL = itertools.count(1)


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every item of every table (test code: a Scan is fine on moto)."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in definitions.TABLES:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table_name(table.id)}
        while True:
            page = dynamodb.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        tables[table.id] = sorted(items, key=repr)
    return tables


def ack_code(body: str) -> str:
    return str(hl7.parse(body.replace("\r\n", "\r").split("BHS")[0] or body).segment("MSA")[1])


def assert_refused_leaves_no_trace(chain: Chain, sender: Staff, message: str) -> str:
    before = snapshot()
    chain.world.world.published()
    reply = send(sender, message)
    assert reply.status == 200, reply.body
    text = str(reply.body)
    code = "AR" if text.startswith("BHS") and "MSA|AR" in text else ack_code(text)
    if code == "AA":
        chain.world.world.published()
        return code
    assert code in ("AE", "AR") and "\rERR|" in text, text
    after = snapshot()
    for table_id, items in after.items():
        if table_id == "audit":
            new = [item for item in items if item not in before[table_id]]
            assert all("MessageHeader" in repr(item) for item in new), new
        else:
            assert items == before[table_id], f"{table_id} changed after a refused message: {text}"
    assert chain.world.world.published() == []
    return code


@fuzz_settings(10)
@given(data=st.data())
def test_a_mutated_result_message_is_stored_whole_or_refused_without_a_trace(
        chain: Chain, physician: Staff, reception: Staff, data: st.DataObject) -> None:
    interface = _interfaces.setdefault(id(chain), Interface(chain, physician, reception))
    order = _orders.setdefault(id(chain), interface.order())
    valid = oru(patient=interface.patient, placer=placer_of(order), control=f"FZ{next(_CONTROL):06d}",
                obx=[potassium("4.4"), "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|136-145||||F|||"
                                       "20261125080000-0600"], service="24323-8^CMP^LN")
    assert_refused_leaves_no_trace(chain, interface.lab, data.draw(mutated_message(valid)))


@fuzz_settings(8)
@given(data=st.data())
def test_a_mutated_registration_is_stored_or_refused_without_a_trace(
        chain: Chain, reception: Staff, data: st.DataObject) -> None:
    valid = adt("A04", make_curp(consonants="FZZ"), control=f"FZA{next(_CONTROL):06d}")
    assert_refused_leaves_no_trace(chain, reception, data.draw(mutated_message(valid)))


_interfaces: dict[int, Interface] = {}
_orders: dict[int, dict[str, Any]] = {}
