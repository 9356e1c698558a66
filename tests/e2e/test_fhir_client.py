"""A published FHIR client library (fhirpy) works against the API: create, read, search with paging,
update with versions (If-Match), and errors as OperationOutcome."""

from __future__ import annotations

import secrets

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome

pytestmark = pytest.mark.e2e


def _client(api, role: str, **headers: str) -> SyncFHIRClient:
    session = api.as_user(role)
    return SyncFHIRClient(f"{api.url}/fhir", authorization=session.headers["Authorization"],
                          extra_headers=headers or None)


def test_a_standard_fhir_client_creates_reads_pages_and_updates_with_versions(api):
    reception = _client(api, "reception")
    family = "CLIENTE" + "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(6))
    created = []
    for given in ("ANA", "BEATRIZ", "CARMEN"):
        patient = reception.resource("Patient", name=[{"family": family, "given": [given]}], gender="female",
                                     birthDate="1991-02-03")
        patient.save()
        assert patient.id and patient["meta"]["versionId"] == "1"
        created.append(patient.id)

    read = reception.reference("Patient", created[0]).to_resource()
    assert read["name"][0]["given"] == ["ANA"]

    search = reception.resources("Patient").search(family=family).limit(2)
    first_page = search.fetch()
    assert len(first_page) == 2
    everyone = search.fetch_all()  # follows the Bundle's next links
    assert sorted(p.id for p in everyone) == sorted(created)

    read["telecom"] = [{"system": "phone", "value": "7711234567", "use": "mobile"}]
    versioned = _client(api, "reception", **{"If-Match": 'W/"1"'})
    updated = versioned.resource("Patient", **read.serialize())
    updated.save()
    assert updated["meta"]["versionId"] == "2"
    assert reception.reference("Patient", created[0]).to_resource()["telecom"][0]["value"] == "7711234567"

    stale = versioned.resource("Patient", **read.serialize())
    # fhirpy reports a 412 as MultipleResourcesFound (conditional updates use 412 that way)
    with pytest.raises(MultipleResourcesFound) as refused:
        stale.save()  # still If-Match 1: version 2 is current
    assert "is at version 2, not 1" in str(refused.value)
    with pytest.raises(OperationOutcome):
        reception.resource("Patient", **read.serialize()).save()  # no If-Match at all: 428
