"""Tenant-scoped credentials at run time (decision 0023), judged call by call.

Each test turns the tenant data role on (moto's STS issues the tagged sessions), records every call
the handlers make with the access key that signed it (``calls.CallRecorder``) and judges each
DynamoDB, S3 and KMS touch against the policy model the CDK construct renders (``calls.judge``):
a call signed for tenant A may only touch A's keys, objects and encryption context; a call signed
by the execution role only the global items of ``infra.tenancy``. moto does not enforce IAM, so
this judge is the enforcement, and the last tests show it refusing what the roles would refuse.
The whole integration suite can be run the same way with
``-p tests.integration.security.scoped_suite``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import World, invoke
from tests.integration.patients.conftest import PatientApi, patient_body
from tests.integration.security.calls import EXECUTION, Call, CallRecorder, judge, touches
from tests.integration.security.scoped_suite import enable_scoped_credentials
from tests.support.aws import LambdaContext, User, api_event
from tests.support.curp import make_curp

NORTE, SUR = "t-norte", "t-sur"


@pytest.fixture
def recorder(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[CallRecorder]:
    world.tenant(NORTE)
    world.tenant(SUR)
    enable_scoped_credentials(monkeypatch)
    from expediente import aws
    from expediente.context import tenant_scope

    recorder = CallRecorder(aws.session()).install()
    try:
        with tenant_scope(None):
            yield recorder
    finally:
        recorder.uninstall()


def _by(calls: list[Call], principal: str) -> list[Call]:
    return [c for c in calls if c.principal == principal]


def test_patient_flows_of_two_tenants_touch_only_their_own_keys(recorder: CallRecorder) -> None:
    norte = PatientApi(User(tenant=NORTE, role="reception"))
    sur = PatientApi(User(tenant=SUR, role="reception"))
    created = norte.create(patient_body(make_curp()), headers={"Idempotency-Key": "alta-1"})
    assert created.status == 201, created.body
    pid = created.body["id"]
    assert norte.create(patient_body(make_curp()), headers={"Idempotency-Key": "alta-1"}).status == 201
    assert norte.read(pid).status == 200
    assert norte.search(family="PÉREZ").status == 200
    assert sur.read(pid).status == 404  # another tenant's id: not found, and never read with its keys
    assert sur.create(patient_body(make_curp())).status == 201

    calls = recorder.data_calls()
    assert judge(calls) == []
    norte_calls, sur_calls = _by(calls, NORTE), _by(calls, SUR)
    assert norte_calls and sur_calls
    # Every data call of the flow was signed for a tenant: the execution role touched no data at all.
    assert _by(calls, EXECUTION) == []
    for tenant, own in ((NORTE, norte_calls), (SUR, sur_calls)):
        keys = [t.key for c in own for t in touches(c)]
        assert keys and all(k == tenant or str(k).startswith((f"{tenant}#", f"TENANT#{tenant}")) for k in keys)
    # One AssumeRole per tenant for the whole flow (leases are cached).
    assert sorted(recorder.assumed) == [NORTE, SUR]


def test_audit_events_are_read_with_the_auditors_tenant_credentials(recorder: CallRecorder) -> None:
    from functions.admin.handler import lambda_handler

    PatientApi(User(tenant=NORTE, role="reception")).create(patient_body(make_curp()))
    reply = invoke(lambda_handler, api_event("GET", "/fhir/AuditEvent", user=User(tenant=NORTE, role="auditor")))
    assert reply.status == 200, reply.body
    admin_calls = [c for c in recorder.data_calls() if c.function == "admin"]
    assert admin_calls and {c.principal for c in admin_calls} == {NORTE}
    assert judge(recorder.data_calls()) == []


def test_the_escalation_schedule_lists_tenants_with_the_execution_role_and_works_on_each_as_that_tenant(
        recorder: CallRecorder) -> None:
    from functions.results.handler import lambda_handler

    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    # A warm container: the previous invocation left a tenant bound; the registry is still read globally.
    from expediente.context import bind_tenant

    bind_tenant(SUR)
    assert "escalated" in lambda_handler(event, LambdaContext())
    calls = [c for c in recorder.data_calls() if c.function == "results"]
    assert judge(calls) == []
    registry = [c for c in calls if any(t.key == "TENANT#REGISTRY" for t in touches(c))]
    assert registry and {c.principal for c in registry} == {EXECUTION}
    assert {NORTE, SUR} <= {c.principal for c in calls}


def test_a_request_after_another_tenants_request_is_signed_for_its_own_tenant(recorder: CallRecorder) -> None:
    norte = PatientApi(User(tenant=NORTE, role="reception"))
    sur = PatientApi(User(tenant=SUR, role="reception"))
    assert norte.create(patient_body(make_curp())).status == 201
    recorder.calls.clear()
    assert sur.search(family="PÉREZ").status == 200
    principals = {c.principal for c in recorder.data_calls()}
    assert principals == {SUR}


def test_a_handler_bug_reading_another_tenants_key_is_refused(recorder: CallRecorder) -> None:
    """The second line of defence: code bound to one tenant that builds another tenant's key."""
    norte = PatientApi(User(tenant=NORTE, role="reception"))
    pid = norte.create(patient_body(make_curp())).body["id"]
    recorder.calls.clear()

    from expediente import records
    from expediente.context import TenantId, tenant_scope

    def buggy_handler_reads(tenant: str, other: str, resource_id: str) -> Any:
        # As a handler would: bound to its caller's tenant, but passing the wrong tenant to the store.
        with tenant_scope(tenant):
            return records.find(TenantId(other), "Patient", resource_id)

    _attributed(buggy_handler_reads)(SUR, NORTE, pid)
    refused = judge(recorder.data_calls())
    assert refused and all(line.startswith(f"patients as {SUR}:") for line in refused)
    assert any(f"key='{NORTE}#Patient#{pid}'" in line for line in refused)


def test_an_execution_role_call_on_tenant_data_is_refused(recorder: CallRecorder) -> None:
    """A data call made with no tenant bound is signed by the execution role, which reaches no tenant's items."""
    norte = PatientApi(User(tenant=NORTE, role="reception"))
    pid = norte.create(patient_body(make_curp())).body["id"]
    recorder.calls.clear()

    from expediente import records
    from expediente.context import TenantId, tenant_scope

    def unbound_read(tenant: str, resource_id: str) -> Any:
        with tenant_scope(None):
            return records.find(TenantId(tenant), "Patient", resource_id)

    _attributed(unbound_read)(NORTE, pid)
    refused = judge(recorder.data_calls())
    assert refused and all(line.startswith("patients as execution:") for line in refused)


def test_scoped_credentials_cost_one_assume_role_per_tenant_and_little_latency(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cold path against moto: AssumeRole plus a client built from the shared session."""
    enable_scoped_credentials(monkeypatch)
    from expediente import aws
    from expediente.context import tenant_scope

    aws.unscoped_client("dynamodb")  # the execution client exists in a warm container either way
    aws.unscoped_client("sts")
    started = time.perf_counter()
    with tenant_scope(NORTE):
        aws.current_client("dynamodb")
    cold_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    with tenant_scope(NORTE):
        for _ in range(100):
            aws.current_client("dynamodb")
    warm_us = (time.perf_counter() - started) * 1e6 / 100
    leases = aws.tenant_credentials()
    assert leases is not None and leases.assumed == 1
    print(f"tenant-scoped client: cold {cold_ms:.1f} ms (AssumeRole + client), warm {warm_us:.1f} us per lookup")
    assert cold_ms < 2_000 and warm_us < 1_000


def _attributed(fn: Any) -> Any:
    """``fn`` as if defined in ``functions.patients.handler`` (the recorder attributes calls by module)."""
    import types

    module_globals = dict(fn.__globals__)
    module_globals["__name__"] = "functions.patients.handler"
    return types.FunctionType(fn.__code__, module_globals, fn.__name__, fn.__defaults__, fn.__closure__)
