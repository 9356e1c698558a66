"""Observation rules shared by every category; what a category checks lives in its own module.

An Observation belongs to one patient of the tenant (and optionally to one of that patient's
encounters), was measured at ``effectiveDateTime`` and is attributed by the server to the
practitioner of the user who records it. It is versioned: a correction is a new version whose
status says so (``amended`` or ``corrected``), the earlier versions stay readable (NOM-004 5.11:
no erasures), and a mistaken record is marked ``entered-in-error``, never deleted. Notes
reference the unversioned id (``Observation/<id>``) and pin the version when they are signed.

What the code, the value and the unit may be is decided per category (:data:`CATEGORIES`):
vital signs now (:mod:`.vital_signs`); laboratory results are another entry with their own rules.

Pure domain code: collaborators (the repository, the reader of other domains' records, the
clock, the id generator) come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from expediente import records
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry

from . import vital_signs

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True)
class Category:
    """The rules of one observation category (``Observation.category``, observation-category system)."""

    code: str
    display: str
    codes: frozenset[str]  # the LOINC codes it records (to infer the category when the client omits it)
    normalize: Callable[[dict[str, Any]], dict[str, Any]]  # checks code and value; 400 naming the element


CATEGORIES: dict[str, Category] = {
    vital_signs.CATEGORY: Category(vital_signs.CATEGORY, vital_signs.CATEGORY_DISPLAY, vital_signs.CODES,
                                   vital_signs.normalize),
}
DEFAULT_CATEGORY = vital_signs.CATEGORY

# FHIR R4 ObservationStatus as used here: a new Observation is preliminary or final; a final one
# changes only by amendment or correction (the earlier version stays readable) or is marked
# entered-in-error, after which it no longer changes. registered/cancelled/unknown are not used.
STATUSES = frozenset({"preliminary", "final", "amended", "corrected", "entered-in-error"})
INITIAL = frozenset({"preliminary", "final"})
_CHANGED = frozenset({"amended", "corrected", "entered-in-error"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "preliminary": frozenset({"preliminary", "final", "entered-in-error"}),
    "final": _CHANGED,
    "amended": _CHANGED,
    "corrected": _CHANGED,
    "entered-in-error": frozenset(),
}
CLOSED_ENCOUNTERS = frozenset({"cancelled", "entered-in-error"})
CLOCK_SKEW = timedelta(minutes=5)  # a device clock slightly ahead is not a measurement in the future

SEARCH = SearchSpec(
    resource_type="Observation",
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter"},
    filters={"category": "category", "code": "code", "status": "status"},
    date="date",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter"},
)
# token search parameters whose values may carry this system (``system|code``): the index holds codes.
TOKEN_SYSTEMS = {"code": vital_signs.LOINC, "category": CATEGORY_SYSTEM}

# Reads another domain's resource (Patient, Encounter) in the caller's tenant; None when missing.
Load = Callable[[RequestContext, records.Ref], dict[str, Any] | None]


def search_params(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with ``system|code`` tokens of the known systems reduced to the code the index holds.

    A token of another system is left as given, so it matches nothing (as FHIR token search requires).
    """
    out = dict(params)
    for param, system in TOKEN_SYSTEMS.items():
        if out.get(param):
            out[param] = ",".join(v.strip().removeprefix(f"{system}|") for v in out[param].split(","))
    return out


def code_of(resource: dict[str, Any]) -> str:
    """The LOINC code of a stored Observation (its first coding, as :func:`create` writes it)."""
    return str(resource["code"]["coding"][0]["code"])


def category_of(resource: dict[str, Any]) -> str:
    """The category code of a stored Observation (its first category, as :func:`create` writes it)."""
    return str(resource["category"][0]["coding"][0]["code"])


def sort_instant(value: str) -> str:
    """A FHIR dateTime with time and offset as a UTC instant, so the index orders across offsets."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def index_entry(resource: dict[str, Any]) -> Entry:
    encounter = str((resource.get("encounter") or {}).get("reference", ""))
    encounter_id = encounter.split("/")[1] if encounter.startswith("Encounter/") else ""
    patient = records.subject_of(resource) or ""
    return Entry(
        sort=sort_instant(resource["effectiveDateTime"]),
        facets={"patient": (patient,), "encounter": (encounter_id,)},
        attrs={"category": category_of(resource), "code": code_of(resource), "status": resource["status"],
               "patient": patient, "encounter": encounter_id},
    )


def _category(resource: dict[str, Any]) -> tuple[Category, list[dict[str, Any]]]:
    """The one supported category of the Observation and its ``category`` list, canonical first.

    When the client names no observation-category, the category is the one whose catalogue holds
    the code (vital signs when none does, so the vital-signs rules report the unknown code).
    """
    concepts = list(resource.get("category") or [])
    named = [(i, str(c.get("code"))) for i, concept in enumerate(concepts)
             for c in concept.get("coding") or [] if c.get("system") == CATEGORY_SYSTEM]
    supported = [(i, code) for i, code in named if code in CATEGORIES]
    if len(supported) > 1:
        raise Invalid("Observation.category names one of: " + ", ".join(sorted(CATEGORIES)),
                      expression=f"Observation.category[{supported[1][0]}]")
    if supported:
        index, code = supported[0]
        del concepts[index]
    elif named:
        index, code = named[0]
        raise Invalid(f"Observation.category {code!r} is not recorded here; supported: "
                      f"{', '.join(sorted(CATEGORIES))}", expression=f"Observation.category[{index}]")
    else:
        loinc = {str(c.get("code")) for c in (resource.get("code") or {}).get("coding") or []
                 if c.get("system") == vital_signs.LOINC}
        code = next((c.code for c in CATEGORIES.values() if loinc & c.codes), DEFAULT_CATEGORY)
    category = CATEGORIES[code]
    canonical = {"coding": [{"system": CATEGORY_SYSTEM, "code": category.code, "display": category.display}],
                 "text": category.display}
    return category, [canonical, *concepts]


def _effective(resource: dict[str, Any], *, default: str, now: str) -> str:
    """The measurement time: a dateTime with time and offset, not in the future (400 otherwise)."""
    others = sorted(e for e in resource if e.startswith("effective") and e != "effectiveDateTime")
    if others:
        raise Invalid(f"Observation.{others[0]} is not accepted: give the time of measurement as "
                      "effectiveDateTime", expression=f"Observation.{others[0]}")
    value = str(resource.get("effectiveDateTime") or default)
    if "T" not in value:
        raise Invalid("Observation.effectiveDateTime needs the time of measurement with its offset "
                      "(e.g. 2026-05-12T10:30:00-06:00)", expression="Observation.effectiveDateTime")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid(f"Observation.effectiveDateTime {value!r} is not a valid date and time",
                      expression="Observation.effectiveDateTime") from exc
    if moment.tzinfo is None:
        raise Invalid("Observation.effectiveDateTime needs its UTC offset (e.g. -06:00 or Z)",
                      expression="Observation.effectiveDateTime")
    if moment > datetime.fromisoformat(now.replace("Z", "+00:00")) + CLOCK_SKEW:
        raise Invalid("Observation.effectiveDateTime is in the future", expression="Observation.effectiveDateTime")
    return value


def _normalize(body: dict[str, Any], *, effective: str, now: str) -> tuple[dict[str, Any], Category]:
    """The client's Observation checked and completed with what the server decides."""
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text", "issued", "performer")}
    resource["resourceType"] = "Observation"
    validate("Observation", resource)
    if resource["status"] not in STATUSES:
        raise Invalid(f"Observation.status must be one of {', '.join(sorted(STATUSES))}",
                      expression="Observation.status")
    records.parse((resource.get("subject") or {}).get("reference"), where="Observation.subject", types=("Patient",))
    if resource.get("encounter"):
        records.parse(resource["encounter"].get("reference"), where="Observation.encounter", types=("Encounter",))
    category, concepts = _category(resource)
    resource["category"] = concepts
    resource = category.normalize(resource)
    resource["effectiveDateTime"] = _effective(resource, default=effective, now=now)
    resource["issued"] = now
    return resource, category


def _check_links(ctx: RequestContext, resource: dict[str, Any], load: Load) -> str:
    """The patient exists in the tenant (not merged away); the encounter is an open one of that patient."""
    patient_id = records.subject_of(resource) or ""
    patient = load(ctx, records.Ref("Patient", patient_id))
    if patient is None:
        raise Unprocessable(f"Observation.subject: Patient/{patient_id} does not exist",
                            expression="Observation.subject")
    merged = [link for link in patient.get("link") or [] if link.get("type") == "replaced-by"]
    if merged:
        target = (merged[0].get("other") or {}).get("reference", "another record")
        raise Unprocessable(f"Observation.subject: Patient/{patient_id} was merged into {target}; record there",
                            expression="Observation.subject")
    if resource.get("encounter"):
        ref = records.parse(resource["encounter"]["reference"], where="Observation.encounter", types=("Encounter",))
        encounter = load(ctx, ref)
        if encounter is None or records.subject_of(encounter) != patient_id:
            raise Unprocessable(f"Observation.encounter: {ref} is not an encounter of this patient",
                                expression="Observation.encounter")
        if encounter.get("status") in CLOSED_ENCOUNTERS:
            raise Unprocessable(f"Observation.encounter: {ref} is {encounter['status']}",
                                expression="Observation.encounter")
    return patient_id


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, load: Load,
           new_id: Callable[[], str], clock: Callable[[], datetime] | None = None) -> Saved:
    """Record an Observation (status ``final`` unless ``preliminary`` is given) for a patient of the tenant.

    Raises 400 for a body the category's rules reject, 422 when the patient does not exist or
    the encounter is not one of the patient's.
    """
    now = now_instant(clock)
    resource, _ = _normalize({"status": "final", **body}, effective=now, now=now)
    if resource["status"] not in INITIAL:
        raise Unprocessable(f"A new Observation is preliminary or final, not {resource['status']}",
                            expression="Observation.status")
    if ctx.practitioner_id:
        resource["performer"] = [{"reference": f"Practitioner/{ctx.practitioner_id}"}]
    _check_links(ctx, resource, load)
    resource = stamp(resource, new_id(), 1, now)
    validate("Observation", resource)
    return repo.put(ctx, resource, index=index_entry, now=now)


def update(ctx: RequestContext, observation_id: str, body: dict[str, Any], *, if_match: int,
           repo: ClinicalRepository, load: Load, clock: Callable[[], datetime] | None = None) -> Saved:
    """A new version; the previous ones stay readable (vread, ``_history``).

    The patient and the code never change (422: enter it in error and record a new one); a
    final Observation changes only as ``amended``, ``corrected`` or ``entered-in-error`` (422
    naming the allowed statuses); 412 when ``if_match`` is not the current version. The
    performer stays the one who measured; who corrected is in the audit trail.
    """
    current = repo.for_update(ctx, "Observation", observation_id, body, if_match=if_match)
    before = current.resource
    now = now_instant(clock)
    resource, category = _normalize(body, effective=before["effectiveDateTime"], now=now)
    if records.subject_of(resource) != records.subject_of(before):
        raise Unprocessable("Observation.subject cannot change; mark this one entered-in-error and record it for "
                            "the right patient", expression="Observation.subject")
    if code_of(resource) != code_of(before) or category.code != category_of(before):
        raise Unprocessable(f"Observation.code cannot change (it is {code_of(before)}); mark this one "
                            "entered-in-error and record a new one", expression="Observation.code")
    old, new = before["status"], resource["status"]
    if new not in TRANSITIONS[old]:
        options = ", ".join(sorted(TRANSITIONS[old])) or "none (it was entered in error)"
        raise Unprocessable(f"An Observation that is {old} can be saved as: {options}; not {new}",
                            expression="Observation.status")
    if before.get("performer"):
        resource["performer"] = before["performer"]
    _check_links(ctx, resource, load)
    version = current.version + 1
    resource = stamp(resource, observation_id, version, now)
    validate("Observation", resource)
    return repo.put(ctx, resource, index=index_entry, now=now, previous=current,
                    detail={"status": f"{old}->{new}"} if old != new else None)
