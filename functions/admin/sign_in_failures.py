"""Failed sign-ins in the audit trail, from Cognito's sign-in event log (decision 0029).

Cognito has no Lambda trigger for a failed sign-in. With the Plus feature plan and threat
protection on, the user pool exports every sign-in event (``userAuthEvents``, log level ``INFO``)
to a CloudWatch Logs group; a subscription filter on that group invokes this function with the
``awslogs`` event CloudWatch Logs sends (base64 of gzip of JSON). Each log event is one Cognito
sign-in event: its ``message`` carries the fields of Cognito's ``AuthEventType`` (``eventId``,
``eventType``, ``eventResponse``, ``eventRisk``, ``challenges``, ``eventContextData``) and the
user (``userName``, ``userSub``).

A ``SignIn`` whose response is ``Fail`` becomes one ``login-failed`` audit record (status 401)
under the user's tenant, read from the user's account (``custom:tenant_id``): which challenge
failed (``Password``, ``Mfa``), the risk decision and level, whether the credentials were found
compromised, and the source address. Successes are already recorded by the ``PostAuthentication``
trigger (functions/sign_in), so they are skipped here. An event of a user the pool does not know,
or of a user without a tenant, names no tenant whose trail could hold it: it is counted
(``SignInFailuresUnattributed``), never logged with its username.

A log event this module cannot read is counted as ``SignInEventsUnreadable`` (an alarm watches
it: a change in Cognito's log format must not silently stop the failed-login audit) and logged
with its field *names* only. If a record cannot be written, the other events are still recorded
and the invocation then fails, so Lambda retries it (CloudWatch Logs invokes asynchronously);
a retried event may be recorded twice, with the same Cognito ``event`` id in its detail.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from expediente import audit, metrics
from expediente.api import logger
from expediente.audit import Action, AuditEntry
from expediente.context import TENANT_ID, identity_context, tenant_scope
from expediente.errors import AuditUnavailable

from .directory import Account

# The failure's status in the audit record (FHIR AuditEvent outcome 4, minor failure).
FAILED_STATUS = 401
_DETAIL_MAX = 64


@dataclass(frozen=True)
class SignInEvent:
    """One Cognito sign-in event, as far as the audit needs it."""

    event_id: str
    event_type: str
    response: str
    username: str
    sub: str
    failed_challenges: tuple[str, ...]
    risk_decision: str
    risk_level: str
    compromised: bool | None
    source_ip: str


def is_log_subscription(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is what a CloudWatch Logs subscription filter sends to Lambda."""
    return isinstance(event.get("awslogs"), Mapping) and "data" in event["awslogs"]


def log_events(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The log events of a subscription delivery (``awslogs.data``: base64 of gzip of JSON).

    Raises ``ValueError`` when the payload is not such a document. A ``CONTROL_MESSAGE`` (CloudWatch
    Logs checking that the destination is reachable) has no events.
    """
    try:
        document = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"], validate=True)))
    except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:
        raise ValueError("not a CloudWatch Logs subscription payload") from exc
    if not isinstance(document, dict) or document.get("messageType") == "CONTROL_MESSAGE":
        return []
    events = document.get("logEvents")
    return [e for e in events if isinstance(e, Mapping)] if isinstance(events, list) else []


def _lower(value: Any) -> dict[str, Any]:
    """A mapping's keys lower-cased (the log's camelCase and the API's PascalCase read alike)."""
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return str(value)[:_DETAIL_MAX] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def parse(message: str) -> SignInEvent | None:
    """The sign-in event in one log event's ``message``, or None when it is not one.

    The message is the JSON Cognito writes: either the event itself or an envelope whose
    ``message`` holds it (as a JSON object or a JSON string).
    """
    try:
        document = json.loads(message)
    except ValueError:
        return None
    body = _lower(document)
    inner = body.get("message")
    if isinstance(inner, str):
        try:
            inner = json.loads(inner)
        except ValueError:
            inner = None
    if isinstance(inner, Mapping):
        body = {**body, **_lower(inner)}
    event_type, response = _text(body.get("eventtype")), _text(body.get("eventresponse"))
    # Our usernames have at most 64 characters (functions/admin/rules.py), as much as _text keeps.
    username = _text(body.get("username"))
    sub = _text(body.get("usersub") or body.get("sub"))
    if not event_type or not response or not (username or sub):
        return None
    risk = _lower(body.get("eventrisk"))
    context = _lower(body.get("eventcontextdata"))
    challenges = body.get("challenges") or body.get("challengeresponses") or []
    failed = tuple(
        _text(c.get("challengename")) for c in (_lower(x) for x in challenges if isinstance(x, Mapping))
        if str(c.get("challengeresponse", "")).lower() == "failure" and _text(c.get("challengename"))
    ) if isinstance(challenges, list) else ()
    compromised = risk.get("compromisedcredentialsdetected")
    return SignInEvent(
        event_id=_text(body.get("eventid")), event_type=event_type, response=response, username=username, sub=sub,
        failed_challenges=failed, risk_decision=_text(risk.get("riskdecision")),
        risk_level=_text(risk.get("risklevel")),
        compromised=compromised if isinstance(compromised, bool) else None,
        source_ip=_text(context.get("ipaddress") or body.get("ipaddress") or body.get("sourceip")),
    )


def is_failed_sign_in(event: SignInEvent) -> bool:
    """A sign-in Cognito refused (wrong password, wrong MFA code, blocked by threat protection)."""
    return event.event_type.lower() == "signin" and event.response.lower() == "fail"


def _readable(events: list[Mapping[str, Any]]) -> Iterator[SignInEvent | None]:
    for log_event in events:
        message = log_event.get("message")
        yield parse(message) if isinstance(message, str) else None


def handle(event: Mapping[str, Any], *, account_of: Callable[[str], Account | None]) -> dict[str, int]:
    """Record every failed sign-in of one subscription delivery; returns the counts.

    ``account_of`` finds a user's account by username (or ``sub``). Raises ``ValueError`` for a
    payload that is not a subscription delivery, and :class:`AuditUnavailable` after the whole
    delivery was processed when at least one record could not be written.
    """
    counts = {"failed": 0, "other": 0, "unattributed": 0, "unreadable": 0}
    unwritten = 0
    for sign_in in _readable(log_events(event)):
        if sign_in is None:
            counts["unreadable"] += 1
            continue
        if not is_failed_sign_in(sign_in):
            counts["other"] += 1
            continue
        account = account_of(sign_in.username or sign_in.sub)
        if account is None or not TENANT_ID.match(account.tenant or ""):
            counts["unattributed"] += 1
            continue
        try:
            _record(sign_in, account)
        except AuditUnavailable:
            unwritten += 1
            continue
        counts["failed"] += 1
    if counts["failed"]:
        metrics.count("SignInsFailed", counts["failed"])
    if counts["unattributed"]:
        metrics.count("SignInFailuresUnattributed", counts["unattributed"])
    if counts["unreadable"]:
        metrics.count("SignInEventsUnreadable", counts["unreadable"])  # alarmed: the log format may have changed
        logger.warning("sign-in log events not understood", extra={"unreadable": counts["unreadable"]})
    logger.info("sign-in events read", extra=counts)
    if unwritten:
        raise AuditUnavailable(f"{unwritten} failed sign-ins could not be audited")
    return counts


def _record(sign_in: SignInEvent, account: Account) -> None:
    tenant = str(account.tenant)
    ctx = identity_context(tenant, account.user_id or sign_in.sub or account.username, account.username,
                           source_ip=sign_in.source_ip, user_agent="cognito")
    detail = {"source": "cognito-user-auth-events"}
    if sign_in.event_id:
        detail["event"] = sign_in.event_id
    if sign_in.failed_challenges:
        detail["failed"] = ",".join(sign_in.failed_challenges)
    if sign_in.risk_decision:
        detail["risk_decision"] = sign_in.risk_decision
    if sign_in.risk_level:
        detail["risk_level"] = sign_in.risk_level
    if sign_in.compromised is not None:
        detail["compromised_credentials"] = str(sign_in.compromised).lower()
    with tenant_scope(tenant):
        audit.record(ctx, AuditEntry("User", Action.LOGIN_FAILED, account.username, (), FAILED_STATUS, detail=detail))
