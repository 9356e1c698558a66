"""Encounter rules: ambulatory, emergency and inpatient visits of one patient at one clinic.

Pure domain code: collaborators (the repository, the clock, the id generator, lookups of the
patient and the clinic) come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from expediente import identifiers as ids
from expediente import records
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Conflict, Forbidden, Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry
from expediente.store import Stored

CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLASSES = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# status -> statuses it may move to (FHIR R4 EncounterStatus); any open status may also be
# marked entered-in-error.
TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"arrived", "triaged", "in-progress", "cancelled"}),
    "arrived": frozenset({"triaged", "in-progress", "cancelled"}),
    "triaged": frozenset({"in-progress", "cancelled"}),
    "in-progress": frozenset({"onleave", "finished"}),
    "onleave": frozenset({"in-progress", "finished"}),
    "finished": frozenset(),
    "cancelled": frozenset(),
    "entered-in-error": frozenset(),
}
OPEN = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave"})
INITIAL = frozenset({"planned", "arrived", "triaged", "in-progress"})

SEARCH = SearchSpec(
    resource_type="Encounter",
    facets={"patient": "patient", "subject": "patient", "service-provider": "clinic", "practitioner": "practitioner"},
    filters={"status": "status", "class": "class"},
    date="date",
    references={"patient": "Patient", "subject": "Patient", "practitioner": "Practitioner"},
)

Lookup = Callable[[RequestContext, str], str | None]


def index_entry(resource: dict[str, Any]) -> Entry:
    clinic = ((resource.get("serviceProvider") or {}).get("identifier") or {}).get("value", "")
    practitioners = tuple(
        p["individual"]["reference"].split("/")[1] for p in resource.get("participant") or []
        if str((p.get("individual") or {}).get("reference", "")).startswith("Practitioner/"))
    return Entry(
        sort=resource["period"]["start"],
        facets={"patient": (records.subject_of(resource) or "",), "clinic": (clinic,),
                "practitioner": practitioners},
        attrs={"status": resource["status"], "class": resource["class"]["code"],
               "patient": records.subject_of(resource), "clinic": clinic, "practitioner": list(practitioners)},
    )


def _class(body: dict[str, Any]) -> dict[str, str]:
    coding = body.get("class") or {}
    code = coding.get("code")
    if coding.get("system", CLASS_SYSTEM) != CLASS_SYSTEM or code not in CLASSES:
        raise Invalid(f"Encounter.class must be {CLASS_SYSTEM} AMB (ambulatory), EMER (emergency) or IMP "
                      "(inpatient)", expression="Encounter.class")
    return {"system": CLASS_SYSTEM, "code": code, "display": CLASSES[code]}


def _check_period(resource: dict[str, Any]) -> None:
    period = resource.get("period") or {}
    start, end = period.get("start"), period.get("end")
    if not start:
        raise Invalid("Encounter.period.start (date and time of arrival or admission) is required",
                      expression="Encounter.period.start")
    if end and end < start:
        raise Invalid("Encounter.period.end is before period.start", expression="Encounter.period.end")
    if resource["status"] == "finished" and not end and resource["class"]["code"] == "IMP":
        raise Invalid("A finished inpatient encounter needs period.end (the discharge date and time)",
                      expression="Encounter.period.end")


def _normalize(ctx: RequestContext, body: dict[str, Any], *, clinic_org: Lookup, now: str) -> dict[str, Any]:
    """The client's Encounter checked and completed with what the server decides."""
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text")}
    resource["resourceType"] = "Encounter"
    validate("Encounter", resource)
    resource["class"] = _class(resource)
    status = resource.get("status")
    if status not in TRANSITIONS:
        raise Invalid("Encounter.status is required", expression="Encounter.status")
    records.parse((resource.get("subject") or {}).get("reference"), where="Encounter.subject",
                  types=("Patient",))
    provider = resource.get("serviceProvider") or {}
    clues = (provider.get("identifier") or {}).get("value") or ctx.clinic
    if not clues:
        raise Invalid("Encounter.serviceProvider.identifier (the clinic's CLUES) is required: the user has no "
                      "clinic", expression="Encounter.serviceProvider")
    clues = ids.validate_clues(clues, where="Encounter.serviceProvider.identifier.value")
    if clues not in ctx.clinic_ids:
        raise Forbidden(f"CLUES {clues} is not one of the user's clinics")
    organization = clinic_org(ctx, clues)
    if organization is None:
        raise Unprocessable(f"CLUES {clues} is not a clinic of this chain", expression="Encounter.serviceProvider")
    resource["serviceProvider"] = {"reference": f"Organization/{organization}",
                                   "identifier": {"system": ids.CLUES_SYSTEM, "value": clues}}
    period = dict(resource.get("period") or {})
    period.setdefault("start", now)
    if resource["status"] == "finished" and resource["class"]["code"] != "IMP":
        period.setdefault("end", now)
    resource["period"] = period
    if ctx.practitioner_id and not resource.get("participant"):
        resource["participant"] = [{
            "type": [{"coding": [{"system": PARTICIPATION, "code": "ATND", "display": "attender"}]}],
            "individual": {"reference": f"Practitioner/{ctx.practitioner_id}"}}]
    _check_period(resource)
    return resource


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, clinic_org: Lookup,
           patient_exists: Callable[[RequestContext, str], bool], new_id: Callable[[], str],
           clock: Callable[[], Any] | None = None) -> Saved:
    """Open an encounter for an existing patient of the tenant at one of the user's clinics."""
    now = now_instant(clock)
    resource = _normalize(ctx, body, clinic_org=clinic_org, now=now)
    if resource["status"] not in INITIAL:
        raise Unprocessable(f"A new encounter starts as {', '.join(sorted(INITIAL))}, not {resource['status']}",
                            expression="Encounter.status")
    patient = records.subject_of(resource) or ""
    if not patient_exists(ctx, patient):
        raise Unprocessable(f"Encounter.subject: Patient/{patient} does not exist", expression="Encounter.subject")
    resource = stamp(resource, new_id(), 1, now)
    validate("Encounter", resource)
    return repo.put(ctx, resource, index=index_entry, now=now)


def update(ctx: RequestContext, encounter_id: str, body: dict[str, Any], *, if_match: int,
           repo: ClinicalRepository, clinic_org: Lookup, clock: Callable[[], Any] | None = None) -> Saved:
    """A new version; the status may only move along :data:`TRANSITIONS` (409 naming the allowed ones)."""
    current = repo.for_update(ctx, "Encounter", encounter_id, body, if_match=if_match)
    now = now_instant(clock)
    resource = _normalize(ctx, body, clinic_org=clinic_org, now=now)
    before = current.resource
    if records.subject_of(resource) != records.subject_of(before):
        raise Unprocessable("Encounter.subject cannot change; enter the encounter in error and open a new one",
                            expression="Encounter.subject")
    if resource["class"]["code"] != before["class"]["code"] and before["status"] not in ("planned", "arrived"):
        raise Unprocessable("Encounter.class cannot change once the encounter is under way",
                            expression="Encounter.class")
    old, new = before["status"], resource["status"]
    if old != new:
        allowed = TRANSITIONS[old] | (frozenset({"entered-in-error"}) if old in OPEN else frozenset())
        if new not in allowed:
            options = ", ".join(sorted(allowed)) or "none (it is closed)"
            raise Conflict(f"Encounter status cannot go from {old} to {new}; allowed: {options}",
                           expression="Encounter.status")
    elif old not in OPEN:
        raise Conflict(f"Encounter/{encounter_id} is {old} and can no longer be changed",
                       expression="Encounter.status")
    version = current.version + 1
    resource = stamp(resource, encounter_id, version, now)
    validate("Encounter", resource)
    return repo.put(ctx, resource, index=index_entry, now=now, previous=current,
                    detail={"status": f"{old}->{new}"} if old != new else None)


def clinic_of(encounter: Stored) -> str:
    return str(encounter.resource["serviceProvider"]["identifier"]["value"])
