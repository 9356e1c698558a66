"""The local stack, started once per test session, and clients to call it as a user would.

The session's stack is ``python -m local`` itself, run as a child process on free ports with
its stack file in a temporary folder, exactly as a developer runs it. A child process keeps
its moto state and the functions' module-level caches (settings, boto3 clients) apart from
the rest of the test session: ``mock_aws`` resets moto's one per-process state, and ``make
test`` runs e2e files in the same pytest-xdist workers as the ``mock_aws`` integration tests.
Set ``EXPEDIENTE_E2E_IN_PROCESS=1`` to start it in this process instead (``LocalStack``), for
breakpoints in handlers; then run the e2e tests on their own (``pytest tests/e2e``).

Fixtures:

- ``local_stack`` — a ``RunningStack``: ``api_url``, ``aws`` (``LocalAws``), ``stack_file``,
  ``tenants``; seeded with the demo tenants when the seed's prerequisites exist
  (``ops/tenants.py`` and ``functions/admin/handler.py``);
- ``local_aws`` — its ``LocalAws`` (endpoint, names, ``client(service)``);
- ``api`` — an ``Api``: ``api.url``, ``api.anonymous()``, ``api.as_user(role, tenant_index=0)``
  (a ``requests.Session`` with the demo user's bearer token whose relative URLs go to the API),
  ``api.tenant(index)`` (the seeded tenant: ids, clinics, users, patient ids);
- ``cognito_user`` — makes a user directly in the pool (any role, tenant, clinics) and returns
  its ID token, for front-door tests that must not depend on the admin function;
- ``forge_token`` — signs arbitrary claims with the embedded Cognito's own key (moto's static
  key), for expired, foreign-audience and other tokens Cognito would never issue.

Tests that need demo users call ``api.as_user`` (or ``api.tenant``): they fail if the seed failed. Each e2e module sets
``pytestmark = pytest.mark.e2e`` so ``-m "not e2e"`` leaves the stack unstarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
from local.stack import LocalStack, read_stack_file, tenants_from_document
from tests.support import logscan

REPO_ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = os.environ.get("EXPEDIENTE_E2E_IN_PROCESS") == "1"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10
FHIR_JSON = "application/fhir+json"


@dataclass
class RunningStack:
    """What the tests know of the running stack, however it was started."""

    api_url: str
    aws: LocalAws
    stack_file: Path
    tenants: list[SeededTenant]


class ApiSession(requests.Session):
    """A ``requests.Session`` whose relative URLs (``/fhir/Patient``) go to the local API."""

    def __init__(self, base_url: str, id_token: str | None = None) -> None:
        super().__init__()
        self.base_url = base_url
        self.headers["Accept"] = FHIR_JSON
        if id_token is not None:
            self.headers["Authorization"] = f"Bearer {id_token}"

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if url.startswith("/"):
            url = f"{self.base_url}{url}"
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


@dataclass
class Api:
    """Clients of the running local stack, logged in as its demo users on demand."""

    stack: RunningStack
    seed_error: str | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.api_url

    def anonymous(self) -> ApiSession:
        """A session without a token."""
        return ApiSession(self.url)

    def tenants(self) -> list[SeededTenant]:
        """The seeded tenants (fails the test if seeding failed)."""
        if self.seed_error is not None:
            pytest.fail(f"seeding the local stack failed: {self.seed_error}")
        return self.stack.tenants

    def tenant(self, index: int = 0) -> SeededTenant:
        return self.tenants()[index]

    def token(self, username: str, password: str) -> str:
        """An ID token for ``username`` (cached for the session; tokens last an hour)."""
        if username not in self._tokens:
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


class _ChildStack:
    """``python -m local`` in a child process, its output in a log file."""

    def __init__(self, folder: Path, *, seed: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stack_file = folder / "stack.json"
        self.log_file = folder / "local.log"
        arguments = [sys.executable, "-m", "local", "--aws-port", "0", "--api-port", "0",
                     "--stack-file", str(self.stack_file)]
        with self.log_file.open("w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [*arguments, *([] if seed else ["--no-seed"])],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> bool:
        """True once the stack file is written; False if the process exited first."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.stack_file.exists():
            if self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"python -m local was not ready in {START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return True

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def running(self) -> RunningStack:
        document = read_stack_file(self.stack_file)
        return RunningStack(
            api_url=document["api_url"],
            aws=LocalAws.from_document(document),
            stack_file=self.stack_file,
            tenants=tenants_from_document(document),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _child_stack(folder: Path) -> Iterator[Api]:
    child = _ChildStack(folder / "seeded", seed=True)
    if not child.wait_ready():
        pytest.fail(f"python -m local exited with {child.process.returncode}:\n{child.log_tail()}")
    try:
        yield Api(child.running())
    finally:
        child.stop()
    # The stack's own process logged to this file: scanned like every captured line (tests/support/logscan.py).
    logscan.register_demo_patients()
    findings = logscan.check_file(child.log_file)
    if findings:
        pytest.fail("log scan: patient data in the local stack's log:\n" + "\n".join(f"  {f}" for f in findings[:20]))


def _in_process_stack(folder: Path) -> Iterator[Api]:
    stack = LocalStack(aws_port=0, api_port=0, seed=False, stack_file=folder / "stack.json")
    stack.start()
    assert stack.aws is not None and stack.stack_file is not None
    seed_error = None
    try:
        stack.seed_demo_data()
    except (SeedError, ClientError) as error:
        seed_error = f"{type(error).__name__}: {error}"
    running = RunningStack(stack.api_url, stack.aws, stack.stack_file, stack.tenants)
    try:
        yield Api(running, seed_error=seed_error)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def _stack_and_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("local-stack")
    yield from (_in_process_stack(folder) if IN_PROCESS else _child_stack(folder))


@pytest.fixture(scope="session")
def local_stack(_stack_and_seed: Api) -> RunningStack:
    """The running local stack (seeded when the seed can run; see ``api.tenants()``)."""
    return _stack_and_seed.stack


@pytest.fixture(scope="session")
def local_aws(local_stack: RunningStack) -> LocalAws:
    return local_stack.aws


@pytest.fixture(scope="session")
def api(_stack_and_seed: Api) -> Api:
    return _stack_and_seed


@pytest.fixture(autouse=True)
def _embedded_aws_still_provisioned(request: pytest.FixtureRequest) -> None:
    """Fail clearly if the embedded AWS lost its state (or its process) under the tests.

    In-process, moto's one per-process state is shared with ``mock_aws``, whose reset would
    otherwise show up as puzzling 401s and missing tables.
    """
    if "local_aws" not in request.fixturenames and "api" not in request.fixturenames:
        return
    local_aws: LocalAws = request.getfixturevalue("local_aws")
    pools = local_aws.client("cognito-idp").list_user_pools(MaxResults=10)["UserPools"]
    if all(pool["Id"] != local_aws.user_pool_id for pool in pools):
        pytest.fail("the embedded AWS lost its resources: moto was reset (a mock_aws test in this process?); "
                    "run the in-process e2e stack on its own (pytest tests/e2e)")


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
    cognito_key: Any = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(private_jwk))

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
