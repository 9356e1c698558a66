"""An AWS error no domain code handles: 503 ``transient`` with Retry-After when retrying may help, else a 500
``exception`` that names nothing of the failure (before decision 0026 both escaped the resolver: a 502)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from expediente import api, aws
from tests.integration.faults.injector import Fault, Injector
from tests.integration.faults.scenarios import Clinic
from tests.integration.orders.conftest import lab_order


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize(("error", "status"), [
    (_client_error("ThrottlingException", 400), 503),
    (_client_error("ProvisionedThroughputExceededException", 400), 503),
    (_client_error("SlowDown", 503), 503),
    (_client_error("SomethingNew", 502), 503),
    (EndpointConnectionError(endpoint_url="https://dynamodb.example"), 503),
    (_client_error("AccessDenied", 403), 500),
    (_client_error("ValidationException", 400), 500),
    (ParamValidationError(report="bad"), 500),
])
def test_aws_errors_map_to_503_with_retry_after_only_when_worth_retrying(error: Exception, status: int) -> None:
    mapped = api.aws_failure(error)  # type: ignore[arg-type]
    assert int(mapped.status) == status
    assert aws.is_transient(error) is (status == 503)
    assert ("Retry-After" in mapped.headers) is (status == 503)
    assert mapped.outcome()["issue"][0]["code"] == ("transient" if status == 503 else "exception")


def test_an_unhandled_refusal_answers_500_without_details_and_a_throttle_503_with_retry_after(
        injector: Injector, clinic: Clinic) -> None:
    body = lab_order(clinic.patient, clinic.visit.encounter_id)
    with injector.record(mentioning=("hl7/outbox", Fault("AccessDenied", 403))) as recorded:
        refused = clinic.physician.orders("POST", "/fhir/ServiceRequest", body)
    assert [call for _, call, _ in recorded.injected] == ["s3.PutObject"]
    assert refused.status == 500 and refused.body["issue"][0]["code"] == "exception"
    assert "AccessDenied" not in refused.body["issue"][0]["diagnostics"] and "Retry-After" not in refused.headers
    with injector.record(mentioning=("hl7/outbox", Fault("SlowDown", 503))):
        busy = clinic.physician.orders("POST", "/fhir/ServiceRequest", body)
    assert busy.status == 503 and busy.headers["Retry-After"] == "2"
    assert busy.body["issue"][0]["code"] == "transient"
