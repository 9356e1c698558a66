"""Every route that reads a body refuses oversized (413), deeply nested (400), non-UTF-8 (400) and
wrongly typed (415) bodies with an OperationOutcome, and none answers 5xx.

Table-driven over every POST, PUT and PATCH operation of the OpenAPI description the code
generates (``tools.openapi``), each sent to the function that owns it (``local.routes``) as an
API Gateway proxy event, once per role: a role the permission table refuses gets 403 before the
body is read, so the check is that some role reaches the body and gets the limit's status, and
that no role gets anything else. These are the handlers' own limits, for requests that reach
Lambda without the front door's or the WAF's ``Content-Length`` check (chunked bodies, which API
Gateway accepts up to 10 MB).
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from expediente.api import MAX_BODY_BYTES, MAX_JSON_DEPTH
from expediente.permissions import Role
from local.routes import RouteTable
from tests.conftest import World, invoke
from tests.support.aws import User, api_event
from tests.unit.fuzz.test_fhir_body_fuzz import nested
from tools import openapi

FHIR_JSON = "application/fhir+json"
ER7 = "x-application/hl7-v2+er7"
ROUTES = RouteTable.from_definitions()
OPERATIONS = sorted((method.upper(), path) for path, methods in openapi.document()["paths"].items()
                    for method in methods if method in ("post", "put", "patch"))
# Routes that never read a body: operations without input parameters (POST is allowed for them) and
# updates refused for any body (405). Routes that must find their target first (the order's clinic
# decides who may upload its images; a PATCH of a note is refused once the note is found). For a
# made-up id these answer 403, 404 or 405, and their body is never parsed, so it cannot hurt them.
IGNORES_BODY = {("POST", "/fhir/Composition/{resource_id}/$verify-signature"),
                ("POST", "/fhir/MedicationRequest/{resource_id}/$verify-signature"),
                ("PUT", "/fhir/ServiceRequest/{resource_id}"), ("PUT", "/fhir/DetectedIssue/{resource_id}")}
LOOKS_UP_FIRST = {("POST", "/fhir/ServiceRequest/{resource_id}/$dicom-upload"),
                  ("PATCH", "/fhir/Composition/{resource_id}")}


def _oversized() -> tuple[str, str, bool]:
    filler = "x" * (MAX_BODY_BYTES + 1 - len('{"resourceType":"Basic","text":""}'))
    return '{"resourceType":"Basic","text":"' + filler + '"}', FHIR_JSON, False


def _deep() -> tuple[str, str, bool]:
    return nested(50_000), FHIR_JSON, False


def _latin1() -> tuple[str, str, bool]:
    return base64.b64encode('{"resourceType":"Patient","name":[{"family":"Núñez"}]}'.encode("latin-1")).decode(), \
        FHIR_JSON, True


def _wrong_type() -> tuple[str, str, bool]:
    return '{"resourceType":"Parameters"}', "application/x-www-form-urlencoded", False


KINDS: dict[str, tuple[Callable[[], tuple[str, str, bool]], int]] = {
    "oversized-413": (_oversized, 413),
    "nested-too-deep-400": (_deep, 400),
    "not-utf8-400": (_latin1, 400),
    "wrong-media-type-415": (_wrong_type, 415),
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "fuzz0001", path)


def _handler(path: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    match = ROUTES.resolve(path)
    assert match is not None, path
    return importlib.import_module(f"functions.{match.route.function_id}.handler").lambda_handler  # type: ignore[no-any-return]


@pytest.fixture
def tenant(world: World) -> str:
    return world.tenant("t-limits")


def test_the_table_covers_every_body_reading_route() -> None:
    assert len(OPERATIONS) >= 40 and ("POST", "/hl7v2") in OPERATIONS


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_body_reading_route_refuses_the_bad_body_with_its_status_and_never_a_5xx(
        tenant: str, kind: str) -> None:
    make, expected = KINDS[kind]
    body, content_type, is_base64 = make()
    reached: dict[tuple[str, str], set[int]] = {}
    for method, path in OPERATIONS:
        handler = _handler(_concrete(path))
        statuses: set[int] = set()
        for role in Role:
            user = User(tenant=tenant, role=role.value, practitioner_id="prac-limits")
            event = api_event(method, _concrete(path), user=user, body=body,
                              headers={"Content-Type": ER7 if path == "/hl7v2" and kind != "wrong-media-type-415"
                                       else content_type, "If-Match": 'W/"1"'})
            event["isBase64Encoded"] = is_base64
            reply = invoke(handler, event)
            assert reply.status < 500, (method, path, role, reply.status, reply.body)
            if path == "/hl7v2" and reply.status == 200:
                assert "MSA|AR" in reply.body, reply.body  # a non-UTF-8 message: an HL7 rejection, not a 400
                statuses.add(400)
                continue
            assert isinstance(reply.body, dict) and reply.body.get("resourceType") == "OperationOutcome", reply.body
            statuses.add(reply.status)
        reached[(method, path)] = statuses
    missed = {op for op, statuses in reached.items() if expected not in statuses}
    assert missed <= IGNORES_BODY | LOOKS_UP_FIRST, {op: reached[op] for op in missed}
    for op, statuses in reached.items():
        allowed = {expected, 403} | ({404, 405} if op in IGNORES_BODY | LOOKS_UP_FIRST else set())
        assert statuses <= allowed, (op, statuses)
    assert len(reached) - len(missed) >= 35  # the routes that did read the bad body and refused it


def test_the_nested_body_is_deeper_than_the_limit_and_the_oversized_one_one_byte_over() -> None:
    assert MAX_JSON_DEPTH < 50_000
    assert len(_oversized()[0].encode()) == MAX_BODY_BYTES + 1


def test_the_handlers_the_front_door_and_the_waf_share_one_body_limit_and_one_413_answer() -> None:
    from infra.constructs import waf
    from local import frontdoor

    assert MAX_BODY_BYTES == frontdoor.MAX_BODY_BYTES == waf.MAX_BODY_BYTES == 1024 * 1024
    waf_body = waf._outcome("too-costly", f"Request body over {waf.MAX_BODY_BYTES} bytes")
    assert json.loads(frontdoor._TOO_LARGE_BODY) == json.loads(waf_body)


def test_a_non_utf8_parameters_body_to_sign_a_note_is_a_400_not_a_crash(tenant: str) -> None:
    """Regression: ``$sign`` read ``decoded_body`` itself and a Latin-1 body raised UnicodeDecodeError (500)."""
    body, _, _ = _latin1()
    user = User(tenant=tenant, role="physician", practitioner_id="prac-limits")
    event = api_event("POST", "/fhir/Composition/fuzz0001/$sign", user=user, body=body,
                      headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'})
    event["isBase64Encoded"] = True
    reply = invoke(_handler("/fhir/Composition/fuzz0001/$sign"), event)
    assert reply.status == 400 and "not UTF-8" in reply.issue


def test_a_non_utf8_hl7_body_is_answered_with_an_ar_nak_naming_the_character_set(tenant: str) -> None:
    """Regression: non-UTF-8 ER7 used to be decoded with replacement characters and stored garbled."""
    message = "MSH|^~\\&|LABSYS|LAB|EXPEDIENTE|HGIMB000151|20261125||ORU^R01|C1|P|2.5.1\rPID|1||x||NÚÑEZ^JOSÉ\r"
    event = api_event("POST", "/hl7v2", user=User(tenant=tenant, role="lab"),
                      body=base64.b64encode(message.encode("latin-1")).decode(), headers={"Content-Type": ER7})
    event["isBase64Encoded"] = True
    reply = invoke(_handler("/hl7v2"), event)
    assert reply.status == 200 and "MSA|AR" in reply.body
    assert "ERR||MSH^1^18|102" in reply.body and "UTF-8" in reply.body
