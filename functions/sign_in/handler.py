"""Sign-ins in the audit trail, from the user pool's Lambda triggers (decision 0029).

This function is attached to the user pool itself (the stateful stack, ``infra/stacks/stateful.py``),
as its ``PreAuthentication`` and ``PostAuthentication`` triggers. Cognito calls ``PreAuthentication``
when a user submits credentials, *before* it checks them, and ``PostAuthentication`` after a
successful sign-in. Each writes one audit record under the user's tenant: ``login-attempt`` and
``login`` (``User``/<username>, the Cognito ``sub`` as agent). Failed sign-ins come from Cognito's
own sign-in event log (``userAuthEvents``), read by ``functions/admin/sign_in_failures.py``: Cognito
has no trigger for a failure. Triggers carry no source IP; the record says ``cognito`` as its user
agent.

If the record cannot be written the handler raises and Cognito refuses the sign-in: no access
without its audit record (architecture decision 7). A user with no tenant attribute (none is
created that way) is not audited here and is let through to Cognito, which then issues a token the
API refuses (no tenant, 401).

It needs only the audit table (through the tenant data role, decision 0023), never the user pool:
the event carries the user's attributes, and a reference to the pool from its own trigger would be a
cycle in the template.
"""

from __future__ import annotations

from typing import Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from expediente import audit
from expediente.audit import Action, AuditEntry
from expediente.context import TENANT_ID, identity_context, tenant_scope

logger = Logger(service="expediente")

PRE = "PreAuthentication_"
POST = "PostAuthentication_"
TRIGGER_PREFIXES: Final = (PRE, POST)


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """Audit one Cognito authentication trigger event and return it unchanged (Cognito's contract).

    Raises :class:`expediente.errors.AuditUnavailable` when the record cannot be written (Cognito then
    refuses the sign-in) and ``ValueError`` for an event that is not one of the two triggers.
    """
    source = str(event.get("triggerSource", ""))
    if not source.startswith(TRIGGER_PREFIXES):
        raise ValueError(f"not a sign-in trigger: {source[:64]!r}")
    action = Action.LOGIN_ATTEMPT if source.startswith(PRE) else Action.LOGIN
    attributes = (event.get("request") or {}).get("userAttributes") or {}
    tenant = str(attributes.get("custom:tenant_id") or "")
    username = str(event.get("userName") or "")
    if not TENANT_ID.match(tenant) or not username:
        logger.warning("sign-in without a tenant not audited", extra={"trigger": source})
        return event
    client = str((event.get("callerContext") or {}).get("clientId") or "")
    ctx = identity_context(tenant, str(attributes.get("sub") or username), username, user_agent="cognito")
    detail = {"trigger": source}
    if client:
        detail["client"] = client
    if action is Action.LOGIN and "newDeviceUsed" in (event.get("request") or {}):
        detail["new_device"] = str(bool(event["request"]["newDeviceUsed"])).lower()
    with tenant_scope(tenant):
        audit.record(ctx, AuditEntry("User", action, username, (), 200, detail=detail))
    logger.info("sign-in audited", extra={"tenant": tenant, "action": action.value})
    return event


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event)
