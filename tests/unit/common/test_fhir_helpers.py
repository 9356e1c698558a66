import pytest

from expediente.api import http_date
from expediente.errors import Invalid
from expediente.fhir import validate


def test_validation_error_names_the_element_with_indexes():
    with pytest.raises(Invalid) as caught:
        validate("Patient", {"resourceType": "Patient", "identifier": [{"value": 5, "period": {"start": "soon"}}]})
    assert caught.value.expression == "Patient.identifier[0].period.start"


def test_last_modified_is_an_http_date():
    assert http_date("2026-11-25T17:45:49.634Z") == "Wed, 25 Nov 2026 17:45:49 GMT"
