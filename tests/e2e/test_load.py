"""A bounded load on the local stack (loopback only): several threads and tenants, mixed reads and writes.

No error but throttling (429/503 with Retry-After), and no lost write: every 201 is read back by its
tenant afterwards, no id was answered twice, and a sample is invisible to the other tenant. The
driver is the benchmark's (benchmarks/load.py), here at a size for CI; ``make bench`` runs it bigger.
"""

from __future__ import annotations

import pytest

from benchmarks.load import TenantUsers, report, run_load
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e


def _users(api: Api) -> list[TenantUsers]:
    users = []
    for tenant in api.tenants():
        reception, nurse = tenant.user("reception"), tenant.user("nurse")
        users.append(TenantUsers(tenant.id, api.token(reception.username, reception.password),
                                 api.token(nurse.username, nurse.password)))
    return users


def test_mixed_load_from_several_tenants_loses_no_write_and_fails_only_by_throttling(api: Api) -> None:
    tenants = _users(api)
    assert len(tenants) >= 2, "the seed makes at least two demo tenants"
    result = run_load(api.url, tenants, threads=4, seconds=8, max_requests=160)
    print("\n" + report(result, threads=4, tenants=len(tenants)))
    assert result.requests >= 40
    assert sum(1 for _, kind, _ in result.created if kind == "Patient") >= 5
    assert not result.unexpected, result.unexpected[:10]
    assert not result.lost, result.lost[:10]
    assert result.duplicates == 0
    assert not result.leaked, result.leaked[:10]
