"""Two clients send the same update with the same If-Match at the same time, over HTTP: one wins, one gets 412.

Real threads against the local stack (loopback). The local front door runs one handler at a time,
so the loser is caught by its If-Match check on read; the race inside one request (read, then the
conditional write) is interleaved deterministically in tests/integration/faults/test_concurrent_updates.py.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from tests.e2e.conftest import FHIR_JSON, Api

pytestmark = pytest.mark.e2e


def test_two_clients_updating_the_same_patient_version_at_once_one_wins_and_the_other_gets_412(api: Api) -> None:
    tenant = api.tenant(0)
    patient_id = tenant.patient_ids[0]
    first, second = api.as_user("reception"), api.as_user("reception")
    current = first.get(f"/fhir/Patient/{patient_id}")
    assert current.status_code == 200, current.text
    etag = current.headers["ETag"]
    body = current.json()
    barrier = threading.Barrier(2)
    replies: dict[str, requests.Response] = {}

    def update(name: str, session: requests.Session, phone: str) -> None:
        changed: dict[str, Any] = {**body, "telecom": [{"system": "phone", "value": phone}]}
        barrier.wait()
        replies[name] = session.put(f"/fhir/Patient/{patient_id}", json=changed,
                                    headers={"If-Match": etag, "Content-Type": FHIR_JSON})

    threads = [threading.Thread(target=update, args=("a", first, "5511110001")),
               threading.Thread(target=update, args=("b", second, "5511110002"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(r.status_code for r in replies.values())
    assert statuses == [200, 412], {k: (r.status_code, r.text[:200]) for k, r in replies.items()}
    winner = next(r for r in replies.values() if r.status_code == 200)
    loser = next(r for r in replies.values() if r.status_code == 412)
    assert loser.json()["resourceType"] == "OperationOutcome"
    after = first.get(f"/fhir/Patient/{patient_id}").json()
    assert int(after["meta"]["versionId"]) == int(body["meta"]["versionId"]) + 1
    assert after["telecom"] == winner.json()["telecom"]
