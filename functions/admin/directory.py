"""Cognito accounts: the only code of this domain that calls the user pool.

Roles are Cognito groups; tenant, clinics and record links are ``custom:`` attributes
that the ID token carries (architecture decision 4). Emails are passed to Cognito
and never logged or echoed in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import aws
from expediente.errors import DomainError, Duplicate, Invalid, NotFound, ServiceUnavailable
from expediente.permissions import Role

from .rules import UserSpec

_ROLE_GROUPS = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class Account:
    """What Cognito holds about a user."""

    username: str
    user_id: str
    email: str | None
    tenant: str | None
    enabled: bool
    status: str


def _attributes(tenant: str, spec: UserSpec) -> list[dict[str, str]]:
    values = {
        "custom:tenant_id": tenant,
        "custom:clinic_ids": ",".join(spec.clinic_ids),
        "custom:practitioner_id": spec.practitioner_id,
        "custom:patient_id": spec.patient_id,
    }
    return [{"Name": name, "Value": value} for name, value in values.items() if value]


def _mapped(exc: ClientError | BotoCoreError, username: str) -> DomainError:
    code = aws.error_code(exc)
    if code == "UsernameExistsException":
        return Duplicate(f"username: {username} is not available", expression="username")
    if code == "UserNotFoundException":
        return NotFound(f"User {username} not found")
    if code == "InvalidPasswordException":
        return Invalid("The password does not meet the user pool's password policy", expression="password")
    if code in ("InvalidParameterException", "AliasExistsException"):
        return Invalid("The user pool refused the account's attributes (check email and username)")
    return ServiceUnavailable("The user directory is unavailable; nothing was changed")


class CognitoDirectory:
    """Accounts of one user pool; ``client`` is a boto3 ``cognito-idp`` client."""

    def __init__(self, client: Any, user_pool_id: str) -> None:
        self._client = client
        self._pool = user_pool_id

    def _call(self, operation: str, username: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self._client, operation)(
                UserPoolId=self._pool, Username=username, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _mapped(exc, username) from exc
        return response

    def create(self, *, username: str, email: str, tenant: str, spec: UserSpec, password: str | None = None) -> str:
        """Create the account in the role's group; returns its id (``sub``).

        Without ``password`` Cognito emails a temporary one; with it (local and demo
        stacks) the password is set permanent and no email is sent. The account is
        removed again if any later step fails. Raises Duplicate (409) for a taken username.
        """
        request: dict[str, Any] = {
            "UserAttributes": [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"},
                               *_attributes(tenant, spec)],
        }
        if password is None:
            request["DesiredDeliveryMediums"] = ["EMAIL"]
        else:
            request["MessageAction"] = "SUPPRESS"
        created = self._call("admin_create_user", username, **request)["User"]
        try:
            self._call("admin_add_user_to_group", username, GroupName=spec.role)
            if password is not None:
                self._call("admin_set_user_password", username, Password=password, Permanent=True)
        except DomainError:
            self.delete(username)
            raise
        return str(next(a["Value"] for a in created.get("Attributes", []) if a["Name"] == "sub"))

    def get(self, username: str) -> Account | None:
        """The account, or None if the pool has no such user."""
        try:
            user = self._call("admin_get_user", username)
        except NotFound:
            return None
        attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
        return Account(username=str(user["Username"]), user_id=attributes.get("sub", ""),
                       email=attributes.get("email"), tenant=attributes.get("custom:tenant_id"),
                       enabled=bool(user.get("Enabled", True)), status=str(user.get("UserStatus", "")))

    def update(self, username: str, *, before: UserSpec, after: UserSpec) -> None:
        """Bring the account from ``before`` to ``after``.

        Disabling happens first and enabling last, so a failure half way never leaves
        more access than either state grants. When access changes, the user's refresh
        tokens are revoked so the next token carries the new role and clinics.
        """
        if before.enabled and not after.enabled:
            self._call("admin_disable_user", username)
        changed = {
            "custom:clinic_ids": (",".join(before.clinic_ids), ",".join(after.clinic_ids)),
            "custom:practitioner_id": (before.practitioner_id or "", after.practitioner_id or ""),
            "custom:patient_id": (before.patient_id or "", after.patient_id or ""),
        }
        set_values = [{"Name": n, "Value": new} for n, (old, new) in changed.items() if old != new and new]
        cleared = [n for n, (old, new) in changed.items() if old != new and not new]
        if set_values:
            self._call("admin_update_user_attributes", username, UserAttributes=set_values)
        if cleared:
            self._call("admin_delete_user_attributes", username, UserAttributeNames=cleared)
        if before.role != after.role:
            self._call("admin_add_user_to_group", username, GroupName=after.role)
            groups = self._call("admin_list_groups_for_user", username).get("Groups", [])
            for group in groups:
                if group["GroupName"] in _ROLE_GROUPS and group["GroupName"] != after.role:
                    self._call("admin_remove_user_from_group", username, GroupName=group["GroupName"])
        if not before.enabled and after.enabled:
            self._call("admin_enable_user", username)
        if before.role != after.role or set_values or cleared or (before.enabled and not after.enabled):
            self._call("admin_user_global_sign_out", username)

    def delete(self, username: str) -> None:
        """Remove an account this request created (compensation only; accounts are never deleted otherwise)."""
        try:
            self._client.admin_delete_user(UserPoolId=self._pool, Username=username)
        except (ClientError, BotoCoreError) as exc:
            if aws.error_code(exc) != "UserNotFoundException":
                raise ServiceUnavailable("The user directory is unavailable") from exc
