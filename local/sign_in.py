"""What Cognito does around a sign-in, for the local stack (decision 0029).

The deployed user pool calls the ``sign_in`` function as its ``PreAuthentication`` trigger (before it
checks the password) and ``PostAuthentication`` trigger (after a successful sign-in), and exports its
sign-in events (``userAuthEvents``) to a log group whose subscription invokes the admin function,
which audits the failures. moto's Cognito does none of it, so :func:`install` wraps moto's
``InitiateAuth`` and ``AdminInitiateAuth`` (password flows, the only ones the local tools use) to do
the same, in-process, through the :class:`~local.frontdoor.FunctionRunner`:

- a known user's sign-in first invokes ``sign_in`` with a ``PreAuthentication_Authentication``
  event; if the function fails, the sign-in is refused with ``UserLambdaValidationException``, as
  Cognito refuses it;
- a sign-in that succeeds with tokens then invokes ``PostAuthentication_Authentication`` (a failure
  there also refuses it);
- a sign-in refused with ``NotAuthorizedException`` (wrong password, disabled user) is delivered to
  the admin function as the CloudWatch Logs subscription delivers a ``userAuthEvents`` record: a
  ``SignIn`` event with response ``Fail`` and the ``Password`` challenge failed. As the log
  subscription invokes asynchronously, an error of the admin function is logged, not returned.

Local differences: SRP, custom and refresh flows are passed through untouched (the local tools sign
in with ``USER_PASSWORD_AUTH``); successes are not delivered to the admin function (it skips them:
``PostAuthentication`` records them); there is no threat protection, so no risk verdict.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from moto.cognitoidp import models as cognito_models
from moto.cognitoidp.exceptions import NotAuthorizedError, UserNotFoundError
from moto.core.exceptions import JsonRESTError

from infra.definitions import SIGN_IN, SIGN_IN_FAILURES_FUNCTION
from infra.naming import sign_in_log_group_name
from local.aws import LocalAws
from local.frontdoor import FunctionError, FunctionRunner

logger = logging.getLogger(__name__)

PASSWORD_FLOWS = frozenset({"USER_PASSWORD_AUTH", "ADMIN_USER_PASSWORD_AUTH", "ADMIN_NO_SRP_AUTH"})
LOCAL_SOURCE_IP = "127.0.0.1"


class UserLambdaValidationError(JsonRESTError):
    """Cognito's answer when a trigger fails: the sign-in is refused."""

    def __init__(self, message: str) -> None:
        super().__init__(error_type="UserLambdaValidationException", message=message)


def trigger_event(source: str, *, pool_id: str, client_id: str, user: Any, region: str) -> dict[str, Any]:
    """The event Cognito sends a ``PreAuthentication``/``PostAuthentication`` trigger."""
    attributes = {a["Name"]: a["Value"] for a in user.attributes}
    attributes.setdefault("sub", user.id)
    attributes["cognito:user_status"] = str(getattr(user.status, "value", user.status))
    request: dict[str, Any] = {"userAttributes": attributes}
    request.update({"newDeviceUsed": False} if source.startswith("Post") else {"validationData": {}})
    return {"version": "1", "triggerSource": source, "region": region, "userPoolId": pool_id,
            "userName": user.username, "callerContext": {"awsSdkVersion": "moto", "clientId": client_id},
            "request": request, "response": {}}


def failed_sign_in_delivery(*, pool_id: str, username: str, sub: str, account_id: str,
                            now_ms: int | None = None) -> dict[str, Any]:
    """A CloudWatch Logs subscription delivery holding one failed ``SignIn`` of Cognito's sign-in event log."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    record = {
        "eventTimestamp": str(now_ms), "eventSource": "USER_AUTH_EVENTS", "logLevel": "INFO",
        "logSourceVersion": "1.0", "userPoolId": pool_id,
        "message": {
            "eventId": str(uuid.uuid4()), "eventType": "SignIn", "eventResponse": "Fail",
            "userName": username, "userSub": sub,
            "challenges": [{"challengeName": "Password", "challengeResponse": "Failure"}],
            "eventContextData": {"ipAddress": LOCAL_SOURCE_IP},
        },
    }
    document = {
        "messageType": "DATA_MESSAGE", "owner": account_id, "logGroup": sign_in_log_group_name(""),
        "logStream": pool_id, "subscriptionFilters": ["expediente-sign-in-failures"],
        "logEvents": [{"id": str(now_ms), "timestamp": now_ms, "message": json.dumps(record)}],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(document).encode())).decode()}}


class SignInHooks:
    """The trigger and log-delivery calls around one backend's password sign-ins."""

    def __init__(self, runner: FunctionRunner, local_aws: LocalAws) -> None:
        self._runner = runner
        self._aws = local_aws

    def around(self, backend: Any, pool: Any, client_id: str, username: str,
               sign_in: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``sign_in`` between the triggers; deliver a refusal to the failed-sign-in audit."""
        user = self._user(backend, pool, username)
        if user is not None:
            self._trigger("PreAuthentication_Authentication", pool, client_id, user)
        try:
            result = sign_in()
        except NotAuthorizedError:
            if user is not None:
                self._deliver_failure(pool, user)
            raise
        if user is not None and "AuthenticationResult" in result:
            self._trigger("PostAuthentication_Authentication", pool, client_id, user)
        return result

    @staticmethod
    def _user(backend: Any, pool: Any, username: str) -> Any:
        if pool is None or not username:
            return None
        try:
            return backend.admin_get_user(pool.id, username)
        except UserNotFoundError:
            return None

    def _trigger(self, source: str, pool: Any, client_id: str, user: Any) -> None:
        event = trigger_event(source, pool_id=pool.id, client_id=client_id, user=user, region=self._aws.region)
        try:
            self._runner.invoke(SIGN_IN.id, event)
        except FunctionError as error:
            kind = source.split("_", 1)[0]
            raise UserLambdaValidationError(f"{kind} failed with error {error}.") from error

    def _deliver_failure(self, pool: Any, user: Any) -> None:
        delivery = failed_sign_in_delivery(pool_id=pool.id, username=user.username, sub=user.id,
                                           account_id=self._aws.account_id)
        try:
            self._runner.invoke(SIGN_IN_FAILURES_FUNCTION, delivery)
        except FunctionError:  # asynchronous in AWS: Lambda retries, the caller never sees it
            logger.exception("the failed sign-in could not be delivered to %s", SIGN_IN_FAILURES_FUNCTION)


def install(runner: FunctionRunner, local_aws: LocalAws) -> Callable[[], None]:
    """Wrap moto's password sign-ins with the triggers and the failed-sign-in delivery; returns the undo."""
    hooks = SignInHooks(runner, local_aws)
    backend_class = cognito_models.CognitoIdpBackend
    initiate, admin_initiate = backend_class.initiate_auth, backend_class.admin_initiate_auth

    def initiate_auth(self: Any, client_id: str, auth_flow: str, auth_parameters: dict[str, str]) -> dict[str, Any]:
        if str(auth_flow) not in PASSWORD_FLOWS:
            return initiate(self, client_id, auth_flow, auth_parameters)
        pool = next((p for p in self.user_pools.values() if client_id in p.clients), None)
        return hooks.around(self, pool, client_id, auth_parameters.get("USERNAME", ""),
                            lambda: initiate(self, client_id, auth_flow, auth_parameters))

    def admin_initiate_auth(self: Any, user_pool_id: str, client_id: str, auth_flow: str,
                            auth_parameters: dict[str, str]) -> dict[str, Any]:
        if str(auth_flow) not in PASSWORD_FLOWS:
            return admin_initiate(self, user_pool_id, client_id, auth_flow, auth_parameters)
        pool = self.user_pools.get(user_pool_id)
        return hooks.around(self, pool, client_id, auth_parameters.get("USERNAME", ""),
                            lambda: admin_initiate(self, user_pool_id, client_id, auth_flow, auth_parameters))

    backend_class.initiate_auth = initiate_auth  # type: ignore[method-assign]
    backend_class.admin_initiate_auth = admin_initiate_auth  # type: ignore[method-assign]

    def uninstall() -> None:
        backend_class.initiate_auth = initiate  # type: ignore[method-assign]
        backend_class.admin_initiate_auth = admin_initiate  # type: ignore[method-assign]

    return uninstall
