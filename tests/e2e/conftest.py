"""The local stack, started once per test session, and clients to call it as a user would.

Fixtures:

- ``local_stack`` — a ``LocalStack`` on free ports (embedded AWS + front door), seeded with the
  demo tenants when the seed's prerequisites exist (``ops/tenants.py`` and
  ``functions/admin/handler.py``), its stack file in a temporary folder;
- ``local_aws`` — its ``LocalAws`` (endpoint, names, ``client(service)``);
- ``api`` — an ``Api``: ``api.url``, ``api.anonymous()``, ``api.as_user(role, tenant_index=0)``
  (a ``requests.Session`` with the demo user's bearer token whose relative URLs go to the API),
  ``api.tenant(index)`` (the seeded tenant: ids, clinics, users);
- ``cognito_user`` — makes a user directly in the pool (any role, tenant, clinics) and returns
  its ID token, for front-door tests that must not depend on the admin function;
- ``forge_token`` — signs arbitrary claims with the embedded Cognito's own key (moto's static
  key), for expired, foreign-audience and other tokens Cognito would never issue.

Tests that need demo users call ``api.as_user`` (or ``api.tenant``): they are skipped while the
seed's prerequisites are missing and fail if the seed itself failed. Each e2e module sets
``pytestmark = pytest.mark.e2e`` so ``-m "not e2e"`` leaves the stack unstarted.

moto keeps one state per process: do not mix these tests with ``mock_aws`` tests in one
process run in parallel threads. In a normal run e2e tests come first and the stack is reset
when it starts.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from botocore.exceptions import ClientError
from moto.utilities.utils import load_resource

from local.auth import password_login
from local.aws import LocalAws
from local.seed import SeededTenant, SeedError
from local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_PREREQUISITES = (
    REPO_ROOT / "ops" / "tenants.py",
    REPO_ROOT / "functions" / "admin" / "handler.py",
)
FHIR_JSON = "application/fhir+json"


class ApiSession(requests.Session):
    """A ``requests.Session`` whose relative URLs (``/fhir/Patient``) go to the local API."""

    def __init__(self, base_url: str, id_token: str | None = None) -> None:
        super().__init__()
        self.base_url = base_url
        self.headers["Accept"] = FHIR_JSON
        if id_token is not None:
            self.headers["Authorization"] = f"Bearer {id_token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if isinstance(url, str) and url.startswith("/"):
            url = f"{self.base_url}{url}"
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


@dataclass
class Api:
    """Clients of the running local stack, logged in as its demo users on demand."""

    stack: LocalStack
    seed_skip_reason: str | None = None
    seed_error: str | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.api_url

    def anonymous(self) -> ApiSession:
        """A session without a token."""
        return ApiSession(self.url)

    def tenants(self) -> list[SeededTenant]:
        """The seeded tenants (skips the test if the seed cannot run yet, fails if it failed)."""
        if self.seed_skip_reason is not None:
            pytest.skip(self.seed_skip_reason)
        if self.seed_error is not None:
            pytest.fail(f"seeding the local stack failed: {self.seed_error}")
        return self.stack.tenants

    def tenant(self, index: int = 0) -> SeededTenant:
        return self.tenants()[index]

    def token(self, username: str, password: str) -> str:
        """An ID token for ``username`` (cached for the session; tokens last an hour)."""
        if username not in self._tokens:
            assert self.stack.aws is not None
            self._tokens[username] = password_login(
                endpoint=self.stack.aws.endpoint,
                region=self.stack.aws.region,
                client_id=self.stack.aws.user_pool_client_id,
                username=username,
                password=password,
                session=self.stack.aws.session(),
            ).id_token
        return self._tokens[username]

    def as_user(self, role: str, tenant_index: int = 0) -> ApiSession:
        """A session with the bearer token of the demo user with ``role`` in that tenant."""
        user = self.tenant(tenant_index).user(role)
        return ApiSession(self.url, self.token(user.username, user.password))


@pytest.fixture(scope="session")
def _stack_and_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    stack_file = tmp_path_factory.mktemp("local-stack") / "stack.json"
    stack = LocalStack(aws_port=0, api_port=0, seed=False, stack_file=stack_file)
    stack.start()
    missing = [str(path.relative_to(REPO_ROOT)) for path in SEED_PREREQUISITES if not path.exists()]
    api = Api(stack)
    if missing:
        api.seed_skip_reason = f"the demo seed needs {', '.join(missing)}, not written yet"
    else:
        try:
            stack.seed_demo_data()
        except (SeedError, ClientError) as error:
            api.seed_error = f"{type(error).__name__}: {error}"
    try:
        yield api
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def local_stack(_stack_and_seed: Api) -> LocalStack:
    """The running local stack (seeded when the seed can run; see ``api.tenants()``)."""
    return _stack_and_seed.stack


@pytest.fixture(scope="session")
def local_aws(local_stack: LocalStack) -> LocalAws:
    assert local_stack.aws is not None
    return local_stack.aws


@pytest.fixture(scope="session")
def api(_stack_and_seed: Api) -> Api:
    return _stack_and_seed


@pytest.fixture(autouse=True)
def _embedded_aws_still_provisioned(request: pytest.FixtureRequest) -> None:
    """Fail clearly if something in this process reset moto (a ``mock_aws`` test, say).

    moto keeps one state per process, shared by ``mock_aws`` and the embedded server; a reset
    would otherwise show up as puzzling 401s and missing tables.
    """
    if "local_aws" not in request.fixturenames and "api" not in request.fixturenames:
        return
    local_aws: LocalAws = request.getfixturevalue("local_aws")
    pools = local_aws.client("cognito-idp").list_user_pools(MaxResults=10)["UserPools"]
    if all(pool["Id"] != local_aws.user_pool_id for pool in pools):
        pytest.fail("the embedded AWS lost its resources: moto was reset in this process (a mock_aws test?); "
                    "run e2e tests in their own process (pytest -m e2e)")


@pytest.fixture(scope="session")
def cognito_user(local_aws: LocalAws) -> Callable[..., str]:
    """``cognito_user(role, tenant_id="e2e-tenant", clinic_ids=(...))`` → a real ID token.

    The user is created straight in the pool (as an operator would), not through the API.
    """
    cognito = local_aws.client("cognito-idp")
    password = "E2e-Password-2026!"

    def make(role: str, *, tenant_id: str = "e2e-tenant", clinic_ids: tuple[str, ...] = ("HGIMB000151",)) -> str:
        username = f"e2e-{role}-{uuid.uuid4().hex[:8]}"
        cognito.admin_create_user(
            UserPoolId=local_aws.user_pool_id,
            Username=username,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": f"{username}@example.com"},
                {"Name": "custom:tenant_id", "Value": tenant_id},
                {"Name": "custom:clinic_ids", "Value": ",".join(clinic_ids)},
            ],
        )
        cognito.admin_add_user_to_group(UserPoolId=local_aws.user_pool_id, Username=username, GroupName=role)
        cognito.admin_set_user_password(
            UserPoolId=local_aws.user_pool_id, Username=username, Password=password, Permanent=True
        )
        return password_login(
            endpoint=local_aws.endpoint,
            region=local_aws.region,
            client_id=local_aws.user_pool_client_id,
            username=username,
            password=password,
            session=local_aws.session(),
        ).id_token

    return make


@pytest.fixture(scope="session")
def forge_token(local_aws: LocalAws) -> Callable[..., str]:
    """``forge_token(**claim_overrides, key=None, headers=None)`` → an RS256 token.

    Starts from valid ID-token claims of the local pool and client; a claim set to None is
    removed. Signed with the embedded Cognito's private key unless ``key`` is given.
    """
    # moto signs every pool's tokens with this one static key (kid "dummy").
    private_jwk = load_resource("cognitoidp/resources/jwks-private.json")
    cognito_key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(private_jwk))

    def forge(*, key: Any = None, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": local_aws.issuer,
            "sub": str(uuid.uuid4()),
            "aud": local_aws.user_pool_client_id,
            "token_use": "id",
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "cognito:username": "forged",
            "cognito:groups": ["physician"],
            "custom:tenant_id": "e2e-tenant",
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, key or cognito_key, algorithm="RS256", headers={"kid": "dummy", **(headers or {})})

    return forge
