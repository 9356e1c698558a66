"""Condition rules: ICD-10 coded diagnoses and the patient's problem list.

A diagnosis is coded with a WHO ICD-10 code (Mexican ``I10X``/``E119`` spellings accepted and
stored in the one canonical WHO form), checked to exist and to be a billable code rather than a
category header. Codes of sensitive categories (HIV, mental and behavioural disorders, sexually
transmitted infections, sexual and reproductive health) carry a ``meta.security`` label so access
rules can restrict them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from expediente import icd10, records
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CLINICAL_STATUSES = frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"})
VERIFICATION_STATUSES = frozenset({"unconfirmed", "provisional", "differential", "confirmed", "refuted",
                                   "entered-in-error"})
CATEGORIES = {"problem-list-item": "Problem List Item", "encounter-diagnosis": "Encounter Diagnosis"}

SEARCH = SearchSpec(
    resource_type="Condition",
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter"},
    filters={"clinical-status": "clinical", "verification-status": "verification", "category": "category"},
    date="recorded-date",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter"},
)


def _code(concept: dict[str, Any] | None, where: str) -> str | None:
    codings = (concept or {}).get("coding") or []
    return codings[0].get("code") if codings else None


def index_entry(resource: dict[str, Any]) -> Entry:
    encounter = str((resource.get("encounter") or {}).get("reference", "")).removeprefix("Encounter/")
    return Entry(
        sort=resource["recordedDate"],
        facets={"patient": (records.subject_of(resource) or "",), "encounter": (encounter,)},
        attrs={"clinical": _code(resource.get("clinicalStatus"), "") or "",
               "verification": _code(resource.get("verificationStatus"), "") or "",
               "category": _code((resource.get("category") or [{}])[0], "") or "",
               "patient": records.subject_of(resource), "encounter": encounter,
               "sensitive": bool(resource["meta"].get("security"))},
    )


def _icd10(body: dict[str, Any]) -> icd10.Diagnosis:
    codings = [(i, c) for i, c in enumerate((body.get("code") or {}).get("coding") or [])
               if c.get("system") == icd10.SYSTEM]
    if not codings:
        raise Invalid(f"Condition.code needs an ICD-10 coding (system {icd10.SYSTEM})", expression="Condition.code")
    if len(codings) > 1:
        raise Invalid("Condition.code has one ICD-10 coding", expression=f"Condition.code.coding[{codings[1][0]}]")
    index, coding = codings[0]
    return icd10.diagnosis(str(coding.get("code") or ""), where=f"Condition.code.coding[{index}].code")


def _status(body: dict[str, Any], element: str, system: str, allowed: frozenset[str], default: str | None
            ) -> dict[str, Any] | None:
    concept = body.get(element)
    code = _code(concept, element) if concept else default
    if code is None:
        return None
    if code not in allowed:
        raise Invalid(f"Condition.{element} must be one of {', '.join(sorted(allowed))}",
                      expression=f"Condition.{element}")
    return {"coding": [{"system": system, "code": code}]}


def _normalize(ctx: RequestContext, body: dict[str, Any], *, now: str) -> dict[str, Any]:
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text")}
    resource["resourceType"] = "Condition"
    validate("Condition", resource)
    records.parse((resource.get("subject") or {}).get("reference"), where="Condition.subject", types=("Patient",))
    diagnosis = _icd10(resource)
    others = [c for c in resource["code"].get("coding") or [] if c.get("system") != icd10.SYSTEM]
    resource["code"] = {**resource["code"], "coding": [diagnosis.coding(), *others]}
    verification = _status(resource, "verificationStatus", VERIFICATION, VERIFICATION_STATUSES, "confirmed")
    resource["verificationStatus"] = verification
    entered_in_error = _code(verification, "") == "entered-in-error"
    clinical = _status(resource, "clinicalStatus", CLINICAL, CLINICAL_STATUSES,
                       None if entered_in_error else "active")
    if entered_in_error and clinical is not None:
        raise Invalid("A Condition entered in error has no clinicalStatus", expression="Condition.clinicalStatus")
    if clinical is None:
        resource.pop("clinicalStatus", None)
    else:
        resource["clinicalStatus"] = clinical
    category = _code((resource.get("category") or [None])[0], "category")
    if category is None:
        category = "encounter-diagnosis" if resource.get("encounter") else "problem-list-item"
    if category not in CATEGORIES:
        raise Invalid("Condition.category must be problem-list-item or encounter-diagnosis",
                      expression="Condition.category")
    resource["category"] = [{"coding": [{"system": CATEGORY, "code": category, "display": CATEGORIES[category]}]}]
    if resource.get("encounter"):
        records.parse(resource["encounter"].get("reference"), where="Condition.encounter", types=("Encounter",))
    if ctx.practitioner_id:
        resource["recorder"] = {"reference": f"Practitioner/{ctx.practitioner_id}"}
    resource["meta"] = {"security": [{"system": icd10.SENSITIVITY_SYSTEM, "code": code}
                                     for code in diagnosis.sensitivity]} if diagnosis.sensitivity else {}
    return resource


def _check_links(ctx: RequestContext, resource: dict[str, Any], repo: ClinicalRepository,
                 patient_exists: Callable[[RequestContext, str], bool]) -> str:
    patient = records.subject_of(resource) or ""
    if not patient_exists(ctx, patient):
        raise Unprocessable(f"Condition.subject: Patient/{patient} does not exist", expression="Condition.subject")
    if resource.get("encounter"):
        encounter_id = resource["encounter"]["reference"].split("/")[1]
        encounter = repo.get(ctx, "Encounter", encounter_id)
        if encounter is None or records.subject_of(encounter.resource) != patient:
            raise Unprocessable(f"Condition.encounter: Encounter/{encounter_id} is not an encounter of this patient",
                                expression="Condition.encounter")
    return patient


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository,
           patient_exists: Callable[[RequestContext, str], bool], new_id: Callable[[], str],
           clock: Callable[[], Any] | None = None) -> Saved:
    """Record a diagnosis for an existing patient (and encounter of that patient)."""
    now = now_instant(clock)
    resource = _normalize(ctx, body, now=now)
    resource["recordedDate"] = now
    _check_links(ctx, resource, repo, patient_exists)
    resource = stamp(resource, new_id(), 1, now)
    validate("Condition", resource)
    return repo.put(ctx, resource, index=index_entry, now=now)


def update(ctx: RequestContext, condition_id: str, body: dict[str, Any], *, if_match: int,
           repo: ClinicalRepository, patient_exists: Callable[[RequestContext, str], bool],
           clock: Callable[[], Any] | None = None) -> Saved:
    """A new version (status changes, resolution, a corrected code); notes pin the version they signed."""
    current = repo.for_update(ctx, "Condition", condition_id, body, if_match=if_match)
    now = now_instant(clock)
    resource = _normalize(ctx, body, now=now)
    if records.subject_of(resource) != records.subject_of(current.resource):
        raise Unprocessable("Condition.subject cannot change", expression="Condition.subject")
    resource["recordedDate"] = current.resource["recordedDate"]
    _check_links(ctx, resource, repo, patient_exists)
    version = current.version + 1
    resource = stamp(resource, condition_id, version, now)
    validate("Condition", resource)
    return repo.put(ctx, resource, index=index_entry, now=now, previous=current)


# Elements a reader outside SENSITIVE_DIAGNOSIS_READERS still sees of a sensitive diagnosis: that it exists,
# its status, dates and links; never its code, its specific sensitivity labels, notes or evidence.
_MASKED_KEEPS = ("resourceType", "id", "clinicalStatus", "verificationStatus", "category", "subject", "encounter",
                 "recordedDate", "recorder", "asserter")
MASKED = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}]}
RESTRICTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R",
              "display": "restricted"}
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
            "display": "redacted"}


def is_sensitive(resource: dict[str, Any]) -> bool:
    """Whether the diagnosis carries a sensitivity label (set from its ICD-10 code when it was recorded)."""
    return any(label.get("system") == icd10.SENSITIVITY_SYSTEM for label in (resource.get("meta") or {}).get(
        "security") or [])


def present(resource: dict[str, Any], *, sensitive_reader: bool) -> dict[str, Any]:
    """A Condition as a reader sees it: whole, or, for a sensitive one and a reader whose role does not read
    sensitive diagnoses, with its code masked (FHIR data-absent-reason ``masked``) and labelled restricted.

    The specific labels (HIV, PSY, ...) are removed too: they would tell what the code hides.
    """
    if sensitive_reader or not is_sensitive(resource):
        return resource
    masked = {key: resource[key] for key in _MASKED_KEEPS if key in resource}
    meta = {key: value for key, value in (resource.get("meta") or {}).items() if key != "security"}
    masked["meta"] = {**meta, "security": [RESTRICTED, REDACTED]}
    masked["code"] = MASKED
    return masked
