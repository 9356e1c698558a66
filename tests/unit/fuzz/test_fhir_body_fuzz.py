"""The FHIR body parser and resource validation under malformed input: a 400/413/415 outcome, never a 500.

``expediente.api.json_body`` reads every JSON body of the API and ``expediente.fhir.validate`` checks
every resource a handler stores. Both are driven here with mutations of valid resources (an element
removed, retyped, wrapped or added; the JSON text cut or edited), raw text and bytes, wrong media
types, oversized and deeply nested bodies, through a resolver built by ``create_app`` so the
answer is the HTTP response a client would get.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response
from hypothesis import given
from hypothesis import strategies as st

from expediente.api import MAX_BODY_BYTES, MAX_JSON_DEPTH, create_app, fhir_response, json_body
from expediente.errors import Invalid
from expediente.fhir import validate
from tests.support.aws import LambdaContext, api_event
from tests.unit.fuzz.strategies import fuzz_settings, mutated_json, mutated_text

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": "PEGJ800101HDFRMN09"}],
    "name": [{"family": "Pérez", "given": ["Juan"], "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family", "valueString": "Gómez"}]}],
    "gender": "male",
    "birthDate": "1980-01-01",
    "telecom": [{"system": "phone", "value": "+52 55 5555 0101"}],
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2026-11-25T08:00:00-06:00",
    "valueQuantity": {"value": 4.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
}
CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                   "code": "active"}]},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
    "subject": {"reference": "Patient/p1"},
    "encounter": {"reference": "Encounter/e1"},
}
MEDICATION_REQUEST: dict[str, Any] = {
    "resourceType": "MedicationRequest",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {"coding": [{"system": "http://example.org/cuadro-basico",
                                              "code": "010.000.0104.00"}]},
    "subject": {"reference": "Patient/p1"},
    "dosageInstruction": [{"text": "1 tableta cada 8 horas", "timing": {"repeat": {"frequency": 1, "period": 8,
                                                                                     "periodUnit": "h"}},
                           "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tableta"}}]}],
}
SEEDS = [PATIENT, OBSERVATION, CONDITION, MEDICATION_REQUEST]
JSON_TYPES = ["application/fhir+json", "application/json", "application/fhir+json; charset=utf-8", ""]
OTHER_TYPES = ["text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data",
               "x-application/hl7-v2+er7", "application/octet-stream"]

app = create_app()


@app.post("/echo")
def _echo() -> Response[str]:
    return fhir_response(json_body(app))


@app.post("/fhir/Patient")
def _patient() -> Response[str]:
    return fhir_response(json_body(app, resource_type="Patient"))


def post(body: str | None, *, content_type: str = "application/fhir+json", path: str = "/echo",
         base64_encoded: bool = False) -> tuple[int, Any]:
    event = api_event("POST", path, user=None, body=body, headers={"Content-Type": content_type})
    if not content_type:
        del event["headers"]["Content-Type"]
    event["isBase64Encoded"] = base64_encoded
    response = app.resolve(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def assert_outcome(status: int, body: Any, allowed: set[int]) -> None:
    assert status in allowed, (status, body)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] == "error" and body["issue"][0]["diagnostics"]


def nested(depth: int) -> str:
    """A JSON object whose innermost value sits ``depth`` levels down (objects and arrays alternating)."""
    inner = "1"
    for level in range(depth - 1):
        inner = f'{{"a":{inner}}}' if level % 2 else f"[{inner}]"
    return f'{{"resourceType":"Basic","x":{inner}}}' if depth > 1 else "{}"


# ------------------------------------------------------------------------------------------ fuzzed


bodies = st.one_of(
    st.sampled_from(SEEDS).flatmap(lambda seed: mutated_json(seed)).map(json.dumps),
    st.sampled_from(SEEDS).flatmap(lambda seed: mutated_text(json.dumps(seed, ensure_ascii=False))),
    st.sampled_from(SEEDS).flatmap(lambda seed: mutated_text(json.dumps(seed), alphabet='{}[]",:\\0123456789eE.-+ '
                                                            "ntrufalsNaIiy\u0000\ud800")),
    st.text(max_size=200),
)


@fuzz_settings(400)
@given(body=bodies, content_type=st.sampled_from(JSON_TYPES))
def test_a_mutated_json_body_is_read_as_an_object_or_refused_with_a_400_outcome(body: str, content_type: str) -> None:
    status, answer = post(body, content_type=content_type)
    if status == 200:
        assert answer == json.loads(body) and isinstance(answer, dict)
    else:
        assert_outcome(status, answer, {400})


@fuzz_settings(200)
@given(data=st.one_of(st.binary(max_size=300),
                      st.sampled_from(SEEDS).map(lambda seed: json.dumps(seed, ensure_ascii=False).encode("latin-1",
                                                                                                          "replace"))))
def test_a_base64_body_of_any_bytes_is_read_or_refused_with_a_400_outcome(data: bytes) -> None:
    status, answer = post(base64.b64encode(data).decode(), base64_encoded=True)
    if status != 200:
        assert_outcome(status, answer, {400})


@fuzz_settings(150)
@given(body=st.sampled_from(SEEDS).flatmap(lambda seed: mutated_json(seed)).map(json.dumps),
       content_type=st.sampled_from(OTHER_TYPES))
def test_any_body_with_another_media_type_is_refused_with_415(body: str, content_type: str) -> None:
    assert_outcome(*post(body, content_type=content_type), {415})


@fuzz_settings(200)
@given(body=st.sampled_from(SEEDS).flatmap(lambda seed: mutated_json(seed, rounds=2)))
def test_a_body_naming_another_resource_type_is_refused_with_400_naming_resource_type(body: Any) -> None:
    status, answer = post(json.dumps(body), path="/fhir/Patient")
    if isinstance(body, dict) and body.get("resourceType") == "Patient":
        assert status == 200
    else:
        assert_outcome(status, answer, {400})


@pytest.mark.parametrize("resource", SEEDS, ids=lambda r: r["resourceType"])
def test_the_seed_resources_are_valid_so_the_mutations_start_from_valid_input(resource: dict[str, Any]) -> None:
    assert validate(resource["resourceType"], resource) is not None


@fuzz_settings(300)
@given(data=st.data())
def test_resource_validation_of_a_mutated_resource_passes_or_raises_invalid_naming_the_element(
        data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    mutated = data.draw(mutated_json(seed))
    if not isinstance(mutated, dict):
        return
    diagnostics = None
    try:
        validate(seed["resourceType"], mutated)
    except Invalid as error:
        diagnostics = error.outcome()["issue"][0]["diagnostics"]
    assert diagnostics is None or diagnostics.startswith(seed["resourceType"])


# ------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 200, 990, 5_000, 100_000])
def test_json_nested_deeper_than_the_limit_is_refused_with_400_not_a_crash(depth: int) -> None:
    status, answer = post(nested(depth))
    assert_outcome(status, answer, {400})
    assert f"deeper than {MAX_JSON_DEPTH}" in answer["issue"][0]["diagnostics"]


def test_json_nested_exactly_to_the_limit_is_accepted() -> None:
    status, answer = post(nested(MAX_JSON_DEPTH))
    assert status == 200 and answer["resourceType"] == "Basic"


@pytest.mark.parametrize("base64_encoded", [False, True])
def test_a_body_one_byte_over_the_limit_is_refused_with_413(base64_encoded: bool) -> None:
    padding = MAX_BODY_BYTES + 1 - len('{"resourceType":"Basic","text":""}')
    raw = '{"resourceType":"Basic","text":"' + "x" * padding + '"}'
    assert len(raw.encode()) == MAX_BODY_BYTES + 1
    body = base64.b64encode(raw.encode()).decode() if base64_encoded else raw
    assert_outcome(*post(body, base64_encoded=base64_encoded), {413})


def test_a_body_of_exactly_the_limit_is_read() -> None:
    padding = MAX_BODY_BYTES - len('{"resourceType":"Basic","text":""}')
    raw = '{"resourceType":"Basic","text":"' + "é" * (padding // 2) + "x" * (padding % 2) + '"}'
    assert len(raw.encode()) == MAX_BODY_BYTES
    assert post(raw)[0] == 200


@pytest.mark.parametrize("body", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": ' + "9" * 5000 + "}",
                                  '{"a": "\ud800"}', '{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": 1e999}',
                                  '{"a": [-1E400]}', "\ufeff{}", "", "null", "[]", '"text"', "1e999999"])
def test_json_python_reads_but_fhir_cannot_carry_is_refused_with_400(body: str) -> None:
    assert_outcome(*post(body), {400})


def test_invalid_base64_is_refused_with_400() -> None:
    assert_outcome(*post("not base64!!", base64_encoded=True), {400})
