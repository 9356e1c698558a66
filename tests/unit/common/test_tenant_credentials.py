"""The tenant credential cache and client routing of ``expediente.aws`` (decision 0023)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from expediente import aws
from expediente.context import bind_tenant, bound_tenant, tenant_scope

HOUR = 3600


class FakeSts:
    """AssumeRole that issues numbered credentials valid for the requested duration."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.calls: list[dict[str, Any]] = []

    def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        n = len(self.calls)
        return {"Credentials": {"AccessKeyId": f"ASIA{n}", "SecretAccessKey": f"secret{n}", "SessionToken": f"t{n}",
                                "Expiration": self.clock[0] + kwargs["DurationSeconds"]}}


def _cache(clock: list[float], **kwargs: Any) -> tuple[aws.TenantCredentials, FakeSts]:
    sts = FakeSts(clock)
    return aws.TenantCredentials("arn:aws:iam::123456789012:role/tenant-data", sts.assume_role,
                                 clock=lambda: clock[0], **kwargs), sts


def test_a_tenant_lease_is_assumed_once_with_the_tenant_session_tag() -> None:
    clock = [1_000.0]
    cache, sts = _cache(clock)
    first = cache.lease("clinica-norte")
    again = cache.lease("clinica-norte")
    assert first is again
    assert len(sts.calls) == 1
    call = sts.calls[0]
    assert call["Tags"] == [{"Key": "tenant", "Value": "clinica-norte"}]
    assert call["RoleArn"] == "arn:aws:iam::123456789012:role/tenant-data"
    assert call["DurationSeconds"] == HOUR
    assert call["RoleSessionName"] == "expediente-clinica-norte"


def test_each_tenant_gets_its_own_lease() -> None:
    clock = [0.0]
    cache, sts = _cache(clock)
    north, south = cache.lease("clinica-norte"), cache.lease("clinica-sur")
    assert north.access_key != south.access_key
    assert [c["Tags"][0]["Value"] for c in sts.calls] == ["clinica-norte", "clinica-sur"]


def test_a_lease_is_renewed_once_less_than_the_margin_is_left() -> None:
    clock = [0.0]
    cache, sts = _cache(clock, margin_s=20 * 60)
    first = cache.lease("clinica-norte")
    clock[0] = HOUR - 20 * 60 - 1  # one second before the margin: still used
    assert cache.lease("clinica-norte") is first
    clock[0] = HOUR - 20 * 60  # the margin reached: renewed
    renewed = cache.lease("clinica-norte")
    assert renewed.access_key != first.access_key
    assert len(sts.calls) == 2
    assert renewed.expires_at == clock[0] + HOUR


def test_the_default_margin_outlives_the_longest_presigned_url() -> None:
    from functions.orders.uploads import URL_SECONDS
    from functions.results.imaging import RETRIEVE_URL_SECONDS

    assert max(URL_SECONDS, RETRIEVE_URL_SECONDS) < aws.REFRESH_MARGIN_SECONDS
    assert aws.REFRESH_MARGIN_SECONDS < aws.SESSION_SECONDS


def test_a_margin_as_long_as_the_session_is_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        _cache([0.0], duration_s=900, margin_s=900)


def test_concurrent_first_requests_for_one_tenant_assume_the_role_once() -> None:
    clock = [0.0]
    cache, sts = _cache(clock)
    start = threading.Barrier(8)
    leases: list[aws.Lease] = []

    def ask() -> None:
        start.wait()
        leases.append(cache.lease("clinica-norte"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sts.calls) == 1
    assert len({lease.access_key for lease in leases}) == 1


def test_a_failed_assume_role_is_raised_and_leaves_no_lease() -> None:
    calls = []

    def refuse(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        raise RuntimeError("AccessDenied")

    cache = aws.TenantCredentials("arn:aws:iam::1:role/r", refuse, clock=lambda: 0.0)
    with pytest.raises(RuntimeError):
        cache.lease("clinica-norte")
    with pytest.raises(RuntimeError):
        cache.lease("clinica-norte")
    assert len(calls) == 2


def test_tenant_scope_binds_for_the_block_and_restores_what_was_bound() -> None:
    bind_tenant(None)
    with tenant_scope("clinica-norte"):
        assert bound_tenant() == "clinica-norte"
        with tenant_scope(None):
            assert bound_tenant() is None
        assert bound_tenant() == "clinica-norte"
    assert bound_tenant() is None


def test_a_malformed_tenant_cannot_be_bound() -> None:
    for bad in ("Clinica*", "a", "x/y", "acme#other"):
        with pytest.raises(ValueError, match="not a tenant id"):
            bind_tenant(bad)
        with pytest.raises(ValueError, match="not a tenant id"), tenant_scope(bad):
            pass


def test_without_a_tenant_role_every_call_uses_the_plain_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from expediente.settings import settings

    monkeypatch.delenv("TENANT_ROLE_ARN", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.cache_clear()
    aws.forget_credentials()
    aws.unscoped_client.cache_clear()
    try:
        with tenant_scope("clinica-norte"):
            assert aws.current_client("dynamodb") is aws.unscoped_client("dynamodb")
    finally:
        settings.cache_clear()
        aws.unscoped_client.cache_clear()


def test_with_a_tenant_role_data_calls_use_the_tenants_lease_and_global_access_the_execution_role(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from expediente.settings import settings

    clock = [0.0]
    cache, _ = _cache(clock)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws.forget_credentials()
    monkeypatch.setattr(aws, "tenant_credentials", lambda: cache)
    settings.cache_clear()
    aws.unscoped_client.cache_clear()
    try:
        with tenant_scope("clinica-norte"):
            scoped = aws.current_client("dynamodb")
            assert scoped is not aws.unscoped_client("dynamodb")
            assert scoped._request_signer._credentials.access_key == "ASIA1"
            assert aws.current_client("dynamodb") is scoped  # cached with its lease
            with aws.global_access():
                assert aws.current_client("dynamodb") is aws.unscoped_client("dynamodb")
            clock[0] = HOUR  # the lease expired: a new one, and a client signed with it
            renewed = aws.current_client("dynamodb")
            assert renewed._request_signer._credentials.access_key == "ASIA2"
        assert aws.current_client("dynamodb") is aws.unscoped_client("dynamodb")  # no tenant bound
        assert repr(aws.client("kms")) == "TenantRoutedClient('kms')"
        assert aws.client("sqs") is aws.unscoped_client("sqs")
    finally:
        aws._scoped.clear()
        aws.unscoped_client.cache_clear()
        settings.cache_clear()
