"""A pytest plugin: run integration tests with tenant-scoped credentials on, and judge every call.

    .venv/bin/pytest -p tests.integration.security.scoped_suite tests/integration/patients

``make test`` loads it for the whole non-e2e run, so every integration test is such a check.

Every test that uses the ``world`` fixture runs with ``TENANT_ROLE_ARN`` set (moto's STS issues the
tagged sessions) and a :class:`~tests.integration.security.calls.CallRecorder` installed. At the
end the plugin prints the measured inventory (which function touched which table, bucket or key,
with which credentials, at which key shape) and fails the session if any call is one the tenant
data role or the execution role would refuse. ``TENANT_SCOPE_INVENTORY=<file>`` also writes the
inventory as JSON. This is how docs/decisions/0023 measured its inventory.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.security.calls import EXECUTION, Call, CallRecorder, judge, touches

ROLE_NAME = "expediente-tenant-data"
_calls: list[Call] = []


def enable_scoped_credentials(monkeypatch: pytest.MonkeyPatch) -> str:
    """Inside a moto world: create the tenant data role, point the settings at it, forget clients."""
    import boto3

    from tests.support.aws import REGION, reset_caches

    iam = boto3.client("iam", region_name=REGION)
    try:
        arn = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                           "Action": ["sts:AssumeRole", "sts:TagSession"]}]}))["Role"]["Arn"]
    monkeypatch.setenv("TENANT_ROLE_ARN", arn)
    reset_caches()
    return arn


@pytest.fixture(autouse=True)
def _scoped_world(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Tests that record and judge their own calls (test_tenant_scoped_credentials.py) or need exact call
    # counts (the fault sweep builds its own worlds) keep their own set-up.
    if "world" not in request.fixturenames or "recorder" in request.fixturenames:
        yield
        return
    request.getfixturevalue("world")
    enable_scoped_credentials(monkeypatch)
    from expediente import aws
    from expediente.context import tenant_scope

    recorder = CallRecorder(aws.session()).install()
    try:
        with tenant_scope(None):
            yield
    finally:
        recorder.uninstall()
    calls = recorder.data_calls()
    _calls.extend(calls)
    # Judged per test, so a refused call fails the test that made it (also under pytest-xdist, whose
    # workers' session status does not reach the controller).
    refused = sorted(set(judge(calls)))
    if refused:
        pytest.fail("calls the tenant data role or the execution role would refuse:\n" + "\n".join(refused[:20]),
                    pytrace=False)


def _shape(value: str | None, tenant: str | None, separator: str) -> str:
    if value is None:
        return "-"
    parts = value.split(separator)
    out = []
    for i, part in enumerate(parts):
        if tenant and part == tenant:
            out.append("<tenant>")
        elif re.fullmatch(r"[A-Z][A-Z_-]*|[A-Z][a-zA-Z]+|[a-z_]+", part) and i < 3:
            out.append(part)
        elif re.fullmatch(r"[a-z0-9][a-z0-9-]{2,62}", part) and i == 0:
            out.append("<other-or-unknown-tenant>")
        else:
            out.append("*")
    return separator.join(out)


def inventory(calls: list[Call]) -> list[dict[str, Any]]:
    """Touches grouped by function, credentials, resource, action and key shape, with counts."""
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    for call in calls:
        for touch in touches(call):
            tenant = None if call.principal == EXECUTION else call.principal
            if touch.kind == "key":
                shape = "<tenant>" if touch.key and touch.key == tenant else str(touch.key and "<other>")
            else:
                shape = _shape(touch.key, tenant, "#" if touch.kind == "table" else "/")
            principal = "execution" if call.principal == EXECUTION else "tenant"
            counts[(call.function or "-", principal, f"{touch.kind}:{touch.resource}", touch.action, shape)] += 1
    return [{"function": f, "credentials": p, "resource": r, "action": a, "key": k, "calls": n}
            for (f, p, r, a, k), n in sorted(counts.items())]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _calls:
        return
    rows = inventory(_calls)
    refused = judge(_calls)
    raw = os.environ.get("TENANT_SCOPE_CALLS")
    if raw:
        import pickle

        with open(raw, "wb") as handle:
            pickle.dump(_calls, handle)
    out = os.environ.get("TENANT_SCOPE_INVENTORY")
    if out:
        with open(out, "w") as handle:
            json.dump({"inventory": rows, "refused": sorted(set(refused)), "calls": len(_calls)}, handle, indent=1)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"tenant scope: {len(_calls)} data calls recorded, {len(refused)} refused")
        for line in sorted(set(refused))[:40]:
            reporter.write_line(f"  REFUSED {line}")
    if refused and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
