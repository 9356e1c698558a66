"""schemathesis against the running local stack: zero 5xx, zero responses that break their own schema.

The test loads the OpenAPI description the stack serves (``GET /openapi.json``, generated from the
code by ``tools.openapi``), and for every operation generates bounded, derandomized cases from it,
positive (what the description allows) and negative (what it forbids: wrong types, missing
required parts, bodies that are not resources). Each case is sent through the front door as
several demo users of the seeded tenant (physician, administrator, receptionist, laboratory,
pharmacist), so that the routes' authorized paths run, not only their 401/403; the path
parameters named after a patient are sometimes the seeded patient's real id. Each response is
checked by schemathesis:

- ``not_a_server_error``: no 5xx;
- ``response_schema_conformance``: the body matches the schema documented for its status and media
  type (errors are OperationOutcome, resources carry their ``resourceType``);
- ``content_type_conformance``: the media type is one the operation documents;
- ``status_code_conformance``: the status is documented.

Failures are collected over the whole run and reported together with the figures (operations,
cases, requests), which are also written to ``$EXPEDIENTE_FUZZ_REPORT`` when set.
Powertools answers a method a path does not have with 404 (not 405); that is documented by the
``default`` response, and methods the description does not list are not sent.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

ROLES = ("physician", "admin", "reception", "lab", "pharmacist")
EXAMPLES = int(os.environ.get("EXPEDIENTE_SCHEMATHESIS_EXAMPLES", "4"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]
ER7 = "x-application/hl7-v2+er7"
# HL7 v2 ER7 is text: send the generated string as it is (schemathesis knows text/plain, not ER7).
schemathesis.serializer.alias(ER7, "text/plain")


def test_every_operation_answers_without_5xx_and_within_its_documented_schema(api: Any) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=30)
    tenant = api.tenant(0)
    sessions = {role: requests.Session() for role in ROLES}
    tokens = {role: api.token(tenant.user(role).username, tenant.user(role).password) for role in ROLES}
    patient_id = tenant.patient_ids[0]
    failures: list[str] = []
    figures: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    started = time.monotonic()

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        figures["operations"] += 1
        fixed = {name: patient_id for name in ("patient_id",) if f"{{{name}}}" in operation.path}
        strategies = [operation.as_strategy(generation_mode=mode) for mode in (GenerationMode.POSITIVE,
                                                                                 GenerationMode.NEGATIVE)]
        if fixed:
            strategies.append(operation.as_strategy(path_parameters=fixed))

        @settings(max_examples=EXAMPLES * len(strategies), derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(case=st.one_of(strategies))
        def run(case: Any) -> None:
            figures["cases"] += 1
            for role in ROLES:
                figures["requests"] += 1
                headers = {"Authorization": f"Bearer {tokens[role]}"}
                try:
                    response = case.call(base_url=api.url, session=sessions[role], headers=headers, timeout=30)
                except requests.RequestException as error:
                    failures.append(f"{operation.label} as {role}: no response ({type(error).__name__})")  # noqa: B023
                    continue
                statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except (AssertionError, BaseExceptionGroup) as error:  # one failure, or schemathesis' group
                    first = str(error).strip().splitlines()
                    failures.append(f"{operation.label} as {role} -> {response.status_code}: "  # noqa: B023
                                    f"{' | '.join(line for line in first[:6] if line.strip())}"[:600])

        run()  # now, inside this iteration: the closure's ``operation`` is this one

    figures["seconds"] = int(time.monotonic() - started)
    report = {"figures": dict(figures), "statuses": dict(sorted(statuses.items())), "failures": failures}
    if os.environ.get("EXPEDIENTE_FUZZ_REPORT"):
        with open(os.environ["EXPEDIENTE_FUZZ_REPORT"], "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1)
    assert figures["operations"] >= 100 and figures["cases"] >= figures["operations"] * EXAMPLES
    assert not [s for s in statuses if s >= 500], report
    assert failures == [], "\n".join(failures[:40])


@pytest.mark.parametrize(("status", "body"), [
    (200, {"resourceType": "Observation", "id": "x"}),  # a read that answers another resource type
    (404, {"message": "not found"}),  # an error that is not an OperationOutcome
    (500, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}),
])
def test_the_checks_reject_a_response_that_breaks_its_schema_or_is_a_5xx(api: Any, status: int,
                                                                         body: dict[str, Any]) -> None:
    from datetime import timedelta

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=30)
    case = schema["/fhir/Patient/{patient_id}"]["GET"].Case(path_parameters={"patient_id": "p1"})
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/fhir+json"
    response.url = f"{api.url}/fhir/Patient/p1"
    response.request = requests.Request("GET", response.url).prepare()
    response.elapsed = timedelta(milliseconds=1)
    with pytest.raises((AssertionError, BaseExceptionGroup)):
        case.validate_response(response, checks=CHECKS)
