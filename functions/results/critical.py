"""Critical results: detection, the alert, acknowledgement with read-back, escalation, time to acknowledge.

Closed-loop communication of critical laboratory values (domain.md): a result beyond the tenant's
critical limit (:mod:`expediente.critical_policy`), or flagged critical by the laboratory itself,
gets interpretation ``HH``/``LL`` and opens an alert in the same transaction that stores it, so
a stored critical result always has its alert. The alert is a FHIR ``Communication``
(category ``alert``, priority ``stat``) about the Observation:

- ``status`` ``in-progress`` until a physician acknowledges it, then ``completed`` with
  ``received`` (when), the extension ``acknowledged-by`` (who) and ``payload`` (the read-back: what
  the physician repeated back, as the closed-loop practice asks);
- ``recipient`` lists everyone notified so far: the ordering physician first, then the clinic's
  on-call physicians in the tenant's order, one more at every escalation;
- extensions ``acknowledge-by`` (the deadline) and ``escalation-level``.

Every change is a new version (``_history`` shows each escalation). Events carry ids only.
An alert not acknowledged by its deadline escalates (:func:`escalate_due`, run every minute by a
schedule) to the next contact with a new deadline, repeatedly, cycling through the on-call list,
until acknowledged. Pure domain code: repositories, clock and policy come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from statistics import median
from typing import TYPE_CHECKING, Any

from expediente import records
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, Write, now_instant, stamp
from expediente.context import RequestContext
from expediente.critical_policy import Policy
from expediente.errors import Conflict, Forbidden, Invalid
from expediente.fhir import validate
from expediente.index import Entry

if TYPE_CHECKING:
    from expediente import events

from . import laboratory

COMMUNICATION = "Communication"
EXT = "https://expediente.mx/fhir/StructureDefinition"
DEADLINE = f"{EXT}/acknowledge-by"
LEVEL = f"{EXT}/escalation-level"
ACKNOWLEDGED_BY = f"{EXT}/acknowledged-by"
CLUES = f"{EXT}/clues"
CONTACTS = f"{EXT}/contactos"  # practitioner ids in calling order (space-separated)
ORDERING = f"{EXT}/medico-solicitante"  # present when the first contact is the ordering physician
CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "alert",
                        "display": "Alert"}], "text": "Resultado crítico"}
READ_BACK_MAX = 500

SEARCH = SearchSpec(
    resource_type=COMMUNICATION,
    facets={"patient": "patient", "subject": "patient", "clinic": "clinic", "about": "observation"},
    filters={"status": "status"},
    date="sent",
    references={"patient": "Patient", "subject": "Patient", "about": "Observation"},
)


def _ext(resource: Mapping[str, Any], url: str) -> dict[str, Any]:
    return next((e for e in resource.get("extension") or [] if e.get("url") == url), {})


def deadline_of(alert: Mapping[str, Any]) -> str:
    return str(_ext(alert, DEADLINE).get("valueDateTime", ""))


def level_of(alert: Mapping[str, Any]) -> int:
    return int(_ext(alert, LEVEL).get("valueInteger", 0))


def clinic_of(alert: Mapping[str, Any]) -> str:
    return str(_ext(alert, CLUES).get("valueString", ""))


def observation_of(alert: Mapping[str, Any]) -> str:
    return str(alert["about"][0]["reference"]).split("/")[1]


def seconds_to_acknowledge(alert: Mapping[str, Any]) -> int | None:
    if alert.get("status") != "completed" or not alert.get("received"):
        return None
    return int((_instant(alert["received"]) - _instant(alert["sent"])).total_seconds())


def index_entry(alert: dict[str, Any]) -> Entry:
    """Listed by patient, clinic and observation (by detection time); open ones also under ``open``."""
    is_open = alert["status"] == "in-progress"
    facets: dict[str, tuple[str, ...]] = {"patient": (records.subject_of(alert) or "",),
                                          "clinic": (clinic_of(alert),), "observation": (observation_of(alert),)}
    if is_open:
        facets["open"] = ("1",)
    waited = seconds_to_acknowledge(alert)
    return Entry(sort=alert["sent"], facets=facets,
                 attrs={"status": alert["status"], "deadline": deadline_of(alert), "level": level_of(alert),
                        "patient": records.subject_of(alert), "clinic": clinic_of(alert),
                        **({"waited": waited} if waited is not None else {})})


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ detection ---


def judge(resource: dict[str, Any], policy: Policy) -> str | None:
    """``HH``/``LL``/``AA`` when the result is critical: beyond the tenant's limit, or so flagged by the lab.

    The tenant's limit decides when the value can be compared (numeric, same unit); a
    laboratory's own critical flag counts too (troponin's cut-off is the assay's).
    """
    value = laboratory.value_of(resource)
    if value is not None:
        verdict = policy.judge(laboratory.code_of(resource), value[0], value[1])
        if verdict is not None:
            return verdict
    sent = laboratory.interpretation_code(resource)
    return sent if sent in laboratory.CRITICAL else None


def contacts(policy: Policy, clinic: str, ordering: str | None) -> tuple[str, ...]:
    """Who is called, in order: the ordering physician, then the clinic's on-call physicians."""
    chain = [ordering] if ordering else []
    chain += [p for p in policy.on_call.get(clinic, ()) if p not in chain]
    return tuple(chain)


def _contact(chain: tuple[str, ...], level: int, ordering: bool) -> str | None:
    """The contact for an escalation level; past the end, the on-call list again (never nobody if any)."""
    if not chain:
        return None
    if level < len(chain):
        return chain[level]
    cycle = chain[1:] if ordering and len(chain) > 1 else chain
    return cycle[(level - len(chain)) % len(cycle)]


@dataclass(frozen=True)
class Opened:
    """The alert opened for a critical result (stored with it) and the event to publish after commit."""

    write: Write
    event: events.CriticalResultDetected


def open_alert(ctx: RequestContext, observation: dict[str, Any], verdict: str, *, policy: Policy, clinic: str,
               ordering: str | None, alert_id: str, now: str) -> Opened:
    """The ``Communication`` (version 1) alerting the first contact; the caller stores it with the result."""
    chain = contacts(policy, clinic, ordering)
    first = _contact(chain, 0, ordering is not None)
    deadline = _iso(_instant(now) + timedelta(minutes=policy.deadline_minutes))
    patient = records.subject_of(observation) or ""
    alert: dict[str, Any] = {
        "resourceType": COMMUNICATION,
        "status": "in-progress",
        "category": [CATEGORY],
        "priority": "stat",
        "subject": {"reference": f"Patient/{patient}"},
        "about": [{"reference": f"Observation/{observation['id']}"},
                  *[{"reference": ref["reference"]} for ref in observation.get("basedOn") or []]],
        "sent": now,
        "recipient": [{"reference": f"Practitioner/{first}"}] if first else [],
        "extension": [{"url": DEADLINE, "valueDateTime": deadline}, {"url": LEVEL, "valueInteger": 0},
                      *([{"url": CLUES, "valueString": clinic}] if clinic else []),
                      *([{"url": CONTACTS, "valueString": " ".join(chain)}] if chain else []),
                      *([{"url": ORDERING, "valueReference": {"reference": f"Practitioner/{ordering}"}}]
                        if ordering else [])],
    }
    alert = stamp(alert, alert_id, 1, now)
    validate(COMMUNICATION, alert)
    from expediente import events

    event = events.CriticalResultDetected(
        tenant_id=ctx.tenant, request_id=ctx.request_id, alert_id=alert_id, observation_id=observation["id"],
        patient_id=patient, clinic=clinic, code=laboratory.code_of(observation), interpretation=verdict,
        practitioner_id=first, acknowledge_by=deadline)
    return Opened(Write(COMMUNICATION, alert, 1, index_entry(alert)), event)


def _chain(alert: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(_ext(alert, CONTACTS).get("valueString", "")).split())


# ------------------------------------------------------------------ acknowledgement ---


def acknowledge(ctx: RequestContext, observation_id: str, body: Mapping[str, Any], *, repo: ClinicalRepository,
                clock: Callable[[], datetime] | None = None) -> list[Saved]:
    """A physician acknowledges the open critical alerts of an Observation, with the read-back.

    ``body`` is a ``Parameters`` with ``readBack`` (valueString: the result as the physician
    repeated it). Only a physician linked to a Practitioner who was notified, is on call for the
    alert's clinic or works at it may acknowledge (403 otherwise); 404 when the Observation is not
    visible; 409 when it has no open alert (already acknowledged: say by whom).
    """
    if not ctx.practitioner_id:
        raise Forbidden("Your user is not linked to a Practitioner; an acknowledgement names who took the call")
    read_back = _read_back(body)
    repo.require(ctx, "Observation", observation_id)  # 404 unless the caller may see the result
    alerts, _ = repo.search(ctx, COMMUNICATION, "observation", observation_id, limit=50, token=None,
                            fingerprint=observation_id)
    pending = [a for a in alerts if a.resource["status"] == "in-progress"]
    if not pending:
        done = [a.resource for a in alerts if a.resource["status"] == "completed"]
        if done:
            who = _ext(done[0], ACKNOWLEDGED_BY).get("valueReference", {}).get("reference", "someone")
            raise Conflict(f"The critical result Observation/{observation_id} was already acknowledged by {who} "
                           f"at {done[0]['received']}")
        raise Conflict(f"Observation/{observation_id} has no critical-result alert to acknowledge")
    now = now_instant(clock)
    saved: list[Saved] = []
    for current in pending:
        alert = current.resource
        notified = {r["reference"].split("/")[1] for r in alert.get("recipient") or []}
        if not (ctx.practitioner_id in notified or ctx.practitioner_id in _chain(alert)
                or clinic_of(alert) in ctx.clinic_ids):
            raise Forbidden("Only a physician who was notified, is on call for the clinic or works at it may "
                            "acknowledge this critical result")
        version = current.version + 1
        recipients = list(alert.get("recipient") or [])
        me = {"reference": f"Practitioner/{ctx.practitioner_id}"}
        if me not in recipients:
            recipients.append(me)
        updated = {**alert, "status": "completed", "received": now, "recipient": recipients,
                   "payload": [{"contentString": read_back}],
                   "extension": [*(alert.get("extension") or []),
                                 {"url": ACKNOWLEDGED_BY, "valueReference": me}]}
        updated = stamp(updated, alert["id"], version, now)
        validate(COMMUNICATION, updated)
        repo.save(ctx, [Write(COMMUNICATION, updated, version, index_entry(updated),
                              previous=index_entry(alert))], now=now,
                  entry=AuditEntry(COMMUNICATION, Action.OPERATION, alert["id"],
                                   (records.subject_of(alert) or "",), 200,
                                   detail={"operation": "$acknowledge", "observation": observation_id}),
                  events=(acknowledged_event(ctx, updated),))  # the outbox (decision 0028)
        saved.append(Saved(updated, version))
    return saved


def acknowledged_event(ctx: RequestContext, alert: dict[str, Any]) -> events.CriticalResultAcknowledged:
    from expediente import events

    return events.CriticalResultAcknowledged(
        tenant_id=ctx.tenant, request_id=ctx.request_id, alert_id=alert["id"], observation_id=observation_of(alert),
        patient_id=records.subject_of(alert) or "", practitioner_id=ctx.practitioner_id or "",
        seconds_to_acknowledge=seconds_to_acknowledge(alert) or 0, level=level_of(alert))


def _read_back(body: Mapping[str, Any]) -> str:
    if body.get("resourceType") != "Parameters":
        raise Invalid("Send a Parameters resource with readBack (valueString)", expression="Parameters")
    values = [p.get("valueString") for p in body.get("parameter") or [] if p.get("name") == "readBack"]
    text = str(values[0]).strip() if values and values[0] is not None else ""
    if not text:
        raise Invalid("readBack is required: repeat the result back as you understood it (closed-loop "
                      "communication)", expression="Parameters.parameter[readBack]")
    if len(text) > READ_BACK_MAX:
        raise Invalid(f"readBack is at most {READ_BACK_MAX} characters", expression="Parameters.parameter[readBack]")
    return text


# ------------------------------------------------------------------ escalation ---


def escalate_due(ctx: RequestContext, *, repo: ClinicalRepository, policy: Policy,
                 clock: Callable[[], datetime] | None = None, limit: int = 100) -> list[events.CriticalResultEscalated]:
    """Escalate every open alert of the tenant whose deadline has passed; returns the events to publish.

    Each escalation notifies the next contact, sets a new deadline (the tenant's minutes from now)
    and is a new version of the alert. An alert acknowledged or escalated meanwhile by another
    run is skipped (the version check makes the two runs agree).
    """
    from expediente import events

    now = now_instant(clock)
    due: list[Any] = []
    token: str | None = None
    while True:  # open alerts are few; every page is read so the oldest (most overdue) are never skipped
        found, page = repo.search(ctx, COMMUNICATION, "open", "1", limit=limit, token=token, fingerprint="open",
                                  keep=lambda attrs: str(attrs.get("deadline", "")) <= now)
        due += found
        token = page.next_token
        if token is None:
            break
    published: list[events.CriticalResultEscalated] = []
    for current in due:
        alert = current.resource
        if alert["status"] != "in-progress" or deadline_of(alert) > now:
            continue
        chain = _chain(alert)
        level = level_of(alert) + 1
        contact = _contact(chain, level, bool(_ext(alert, ORDERING)))
        deadline = _iso(_instant(now) + timedelta(minutes=policy.deadline_minutes))
        recipients = list(alert.get("recipient") or [])
        if contact and {"reference": f"Practitioner/{contact}"} not in recipients:
            recipients.append({"reference": f"Practitioner/{contact}"})
        extensions = [e for e in alert.get("extension") or [] if e.get("url") not in (DEADLINE, LEVEL)]
        updated = {**alert, "recipient": recipients,
                   "extension": [{"url": DEADLINE, "valueDateTime": deadline}, {"url": LEVEL, "valueInteger": level},
                                 *extensions]}
        version = current.version + 1
        updated = stamp(updated, alert["id"], version, now)
        escalated = events.CriticalResultEscalated(
            tenant_id=ctx.tenant, request_id=ctx.request_id, alert_id=alert["id"],
            observation_id=observation_of(alert), patient_id=records.subject_of(alert) or "",
            clinic=clinic_of(alert), level=level, practitioner_id=contact, acknowledge_by=deadline)
        try:
            repo.save(ctx, [Write(COMMUNICATION, updated, version, index_entry(updated),
                                  previous=index_entry(alert))], now=now,
                      entry=AuditEntry(COMMUNICATION, Action.UPDATE, alert["id"], (records.subject_of(alert) or "",),
                                       200, detail={"operation": "escalate", "level": str(level)}),
                      events=(escalated,))  # in the outbox with the escalation (decision 0028)
        except Conflict:
            continue  # acknowledged or escalated at the same moment: nothing to do
        published.append(escalated)
    return published


# ------------------------------------------------------------------ time to acknowledge ---


def time_to_acknowledge(alerts: Iterable[Mapping[str, Any]], *, now: str) -> dict[str, Any]:
    """Summary of alerts (index attributes or resources): counts, escalations and seconds to acknowledge."""
    waited: list[int] = []
    total = open_count = escalated = overdue = 0
    for alert in alerts:
        total += 1
        status = alert.get("status")
        level = int(alert.get("level", 0))
        escalated += 1 if level > 0 else 0
        if status == "completed":
            waited.append(int(alert["waited"]))
        else:
            open_count += 1
            overdue += 1 if str(alert.get("deadline", "")) <= now else 0
    waited.sort()

    def pct(p: float) -> int | None:
        if not waited:
            return None
        return waited[min(len(waited) - 1, int(Decimal(p) * len(waited)))]

    return {"alerts": total, "acknowledged": len(waited), "open": open_count, "openOverdue": overdue,
            "escalated": escalated,
            "medianSeconds": int(median(waited)) if waited else None, "p90Seconds": pct(0.9),
            "maxSeconds": waited[-1] if waited else None}
