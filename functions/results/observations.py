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
from typing import TYPE_CHECKING, Any

from expediente import records
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, Write, now_instant, stamp
from expediente.context import RequestContext
from expediente.critical_policy import Policy
from expediente.errors import Forbidden, Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry
from expediente.permissions import Role

if TYPE_CHECKING:
    from expediente import events

from . import critical, laboratory, vital_signs
from .repository import code_marker

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True)
class Category:
    """The rules of one observation category (``Observation.category``, observation-category system)."""

    code: str
    display: str
    codes: Callable[[], frozenset[str]]  # the LOINC codes it records (to infer the category when none is named)
    normalize: Callable[[dict[str, Any]], dict[str, Any]]  # checks code and value; 400 naming the element
    recorders: frozenset[Role]  # who records (and corrects) this category


CATEGORIES: dict[str, Category] = {
    vital_signs.CATEGORY: Category(vital_signs.CATEGORY, vital_signs.CATEGORY_DISPLAY, lambda: vital_signs.CODES,
                                   vital_signs.normalize, frozenset({Role.PHYSICIAN, Role.NURSE})),
    # The laboratory reports; physicians and nurses record point-of-care tests (glucometer, ...).
    laboratory.CATEGORY: Category(laboratory.CATEGORY, laboratory.CATEGORY_DISPLAY, laboratory.codes,
                                  laboratory.normalize, frozenset({Role.LAB, Role.PHYSICIAN, Role.NURSE})),
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
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter", "based-on": "order"},
    filters={"category": "category", "code": "code", "status": "status"},
    date="date",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter", "based-on": "ServiceRequest"},
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


def order_ids(resource: dict[str, Any]) -> tuple[str, ...]:
    """The ServiceRequests a result answers (``basedOn``)."""
    return tuple(str(ref["reference"]).split("/")[1] for ref in resource.get("basedOn") or []
                 if str(ref.get("reference", "")).startswith("ServiceRequest/"))


def index_entry(resource: dict[str, Any]) -> Entry:
    """Listed by patient, encounter, order and patient+code (the trend of one test), newest measurement first."""
    encounter = str((resource.get("encounter") or {}).get("reference", ""))
    encounter_id = encounter.split("/")[1] if encounter.startswith("Encounter/") else ""
    patient = records.subject_of(resource) or ""
    return Entry(
        sort=sort_instant(resource["effectiveDateTime"]),
        facets={"patient": (patient,), "encounter": (encounter_id,), "order": order_ids(resource),
                "patient-code": (f"{patient}|{code_of(resource)}",)},
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
        code = next((c.code for c in CATEGORIES.values() if loinc & c.codes()), DEFAULT_CATEGORY)
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


def _may_record(ctx: RequestContext, category: Category) -> None:
    if not ctx.roles & category.recorders:
        raise Forbidden(f"Role {ctx.role_names} may not record {category.display.lower()} observations")


@dataclass(frozen=True)
class Links:
    """What a result is attached to: its patient, encounter and the orders it answers."""

    patient_id: str
    encounter: dict[str, Any] | None
    orders: tuple[dict[str, Any], ...]

    def clinic(self, fallback: str | None) -> str:
        """The clinic responsible for the result: the order's, else the encounter's, else the caller's."""
        for order in self.orders:
            clues = laboratory.order_clinic(order)
            if clues:
                return clues
        if self.encounter is not None:
            return str(((self.encounter.get("serviceProvider") or {}).get("identifier") or {}).get("value", ""))
        return fallback or ""

    def ordering_physician(self) -> str | None:
        for order in self.orders:
            requester = str((order.get("requester") or {}).get("reference", ""))
            if requester.startswith("Practitioner/"):
                return requester.split("/")[1]
        return None


def _check_links(ctx: RequestContext, resource: dict[str, Any], load: Load) -> Links:
    """The patient exists in the tenant (not merged away); the encounter is an open one of that patient;
    each order in ``basedOn`` is a laboratory order of that patient that was not cancelled."""
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
    encounter = None
    if resource.get("encounter"):
        ref = records.parse(resource["encounter"]["reference"], where="Observation.encounter", types=("Encounter",))
        encounter = load(ctx, ref)
        if encounter is None or records.subject_of(encounter) != patient_id:
            raise Unprocessable(f"Observation.encounter: {ref} is not an encounter of this patient",
                                expression="Observation.encounter")
        if encounter.get("status") in CLOSED_ENCOUNTERS:
            raise Unprocessable(f"Observation.encounter: {ref} is {encounter['status']}",
                                expression="Observation.encounter")
    orders = []
    for i, based_on in enumerate(resource.get("basedOn") or []):
        where = f"Observation.basedOn[{i}]"
        ref = records.parse(based_on.get("reference"), where=where, types=("ServiceRequest",))
        order = load(ctx, ref)
        if order is None or records.subject_of(order) != patient_id:
            raise Unprocessable(f"{where}: {ref} is not an order of this patient", expression=where)
        if not laboratory.is_lab_order(order):
            raise Unprocessable(f"{where}: {ref} is not a laboratory order", expression=where)
        if laboratory.order_status(order) == "cancelled":
            raise Unprocessable(f"{where}: {ref} was cancelled; a result cannot answer it", expression=where)
        orders.append(order)
    return Links(patient_id, encounter, tuple(orders))


@dataclass(frozen=True)
class Recorded:
    """A stored result and the events to publish once it is committed."""

    saved: Saved
    events: tuple[events.DomainEvent, ...] = ()
    alert: dict[str, Any] | None = None


@dataclass(frozen=True)
class Prepared:
    """One result version checked and ready to store: its writes (with its alert), extra transaction
    elements, the audit record and the events to publish after the commit."""

    writes: tuple[Write, ...]
    extra: tuple[dict[str, Any], ...]
    entry: AuditEntry
    events: tuple[events.DomainEvent, ...]
    alert: dict[str, Any] | None

    @property
    def resource(self) -> dict[str, Any]:
        return self.writes[0].resource

    @property
    def version(self) -> int:
        return self.writes[0].version


# The tenant's critical-result policy (cached by the caller).
PolicyOf = Callable[[RequestContext], Policy]


def _interpret(resource: dict[str, Any], policy: Policy) -> str | None:
    """Set the interpretation of a laboratory result; return the critical verdict, if any."""
    verdict = critical.judge(resource, policy)
    if verdict is not None:
        resource["interpretation"] = laboratory.interpretation(verdict)
        return verdict
    if laboratory.interpretation_code(resource) is None:
        flag = laboratory.range_flag(resource)
        if flag is not None:
            resource["interpretation"] = laboratory.interpretation(flag)
    return None


def _prepare(ctx: RequestContext, resource: dict[str, Any], links: Links, *, repo: ClinicalRepository,
             policy: PolicyOf, new_id: Callable[[], str], now: str, previous: Saved | None,
             detail: Mapping[str, str] | None) -> Prepared:
    """One version of a result and its alert when it is critical (to be stored in one transaction)."""
    lab = category_of(resource) == laboratory.CATEGORY
    verdict = _interpret(resource, policy(ctx)) if lab and resource["status"] != "entered-in-error" else None
    validate("Observation", resource)
    version = int(resource["meta"]["versionId"])
    writes = [Write("Observation", resource, version, index_entry(resource),
                    previous=index_entry(previous.resource) if previous is not None else None)]
    published: list[events.DomainEvent] = []
    alert = None
    if verdict is not None and not _has_open_alert(ctx, repo, resource["id"]):
        opened = critical.open_alert(ctx, resource, verdict, policy=policy(ctx), clinic=links.clinic(ctx.clinic),
                                     ordering=links.ordering_physician(), alert_id=new_id(), now=now)
        writes.append(opened.write)
        published.append(opened.event)
        alert = opened.write.resource
    patient = links.patient_id
    extra = (code_marker(repo.table, ctx.tenant, patient, category_of(resource), code_of(resource)),) \
        if previous is None else ()
    entry_detail = dict(detail or {})
    if alert is not None:
        entry_detail["critical"] = f"Communication/{alert['id']}"
    if lab and order_ids(resource):
        from expediente import events

        published.insert(0, events.ResultRecorded(
            tenant_id=ctx.tenant, request_id=ctx.request_id, resource_type="Observation",
            resource_id=resource["id"], version=version, patient_id=patient, status=resource["status"],
            order_ids=list(order_ids(resource))))
    entry = AuditEntry("Observation", Action.CREATE if previous is None else Action.UPDATE, resource["id"],
                       (patient,), 201 if previous is None else 200, detail=entry_detail)
    return Prepared(tuple(writes), extra, entry, tuple(published), alert)


def _commit(ctx: RequestContext, prepared: Prepared, *, repo: ClinicalRepository, now: str) -> Recorded:
    repo.save(ctx, list(prepared.writes), now=now, extra=prepared.extra, entry=prepared.entry,
              events=prepared.events)  # in the outbox with the result (decision 0028)
    return Recorded(Saved(prepared.resource, prepared.version), prepared.events, prepared.alert)


def _has_open_alert(ctx: RequestContext, repo: ClinicalRepository, observation_id: str) -> bool:
    found, _ = repo.search(ctx, critical.COMMUNICATION, "observation", observation_id, limit=20, token=None,
                           fingerprint=observation_id, keep=lambda attrs: attrs.get("status") == "in-progress")
    return bool(found)


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, load: Load,
           new_id: Callable[[], str], policy: PolicyOf, clock: Callable[[], datetime] | None = None) -> Recorded:
    """:func:`prepare_create`, stored in one transaction."""
    now = now_instant(clock)
    prepared = prepare_create(ctx, body, repo=repo, load=load, new_id=new_id, policy=policy, now=now)
    return _commit(ctx, prepared, repo=repo, now=now)


def prepare_create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, load: Load,
                   new_id: Callable[[], str], policy: PolicyOf, now: str) -> Prepared:
    """Record an Observation (status ``final`` unless ``preliminary`` is given) for a patient of the tenant.

    A laboratory result gets its interpretation (from the tenant's critical limits, the lab's
    flag or the reference range) and, when critical, an alert stored with it. Raises 400 for a
    body the category's rules reject, 422 when the patient does not exist or the encounter or
    an order in ``basedOn`` is not the patient's.
    """
    resource, category = _normalize({"status": "final", **body}, effective=now, now=now)
    _may_record(ctx, category)
    if resource["status"] not in INITIAL:
        raise Unprocessable(f"A new Observation is preliminary or final, not {resource['status']}",
                            expression="Observation.status")
    if resource.get("basedOn") and category.code != laboratory.CATEGORY:
        raise Invalid("Observation.basedOn names the laboratory order a result answers; a vital sign has none",
                      expression="Observation.basedOn")
    if ctx.practitioner_id:
        resource["performer"] = [{"reference": f"Practitioner/{ctx.practitioner_id}"}]
    links = _check_links(ctx, resource, load)
    resource = stamp(resource, new_id(), 1, now)
    return _prepare(ctx, resource, links, repo=repo, policy=policy, new_id=new_id, now=now, previous=None,
                    detail=None)


def update(ctx: RequestContext, observation_id: str, body: dict[str, Any], *, if_match: int,
           repo: ClinicalRepository, load: Load, policy: PolicyOf, new_id: Callable[[], str],
           clock: Callable[[], datetime] | None = None) -> Recorded:
    """:func:`prepare_update` of the current version (412 unless it is ``if_match``), stored."""
    current = repo.for_update(ctx, "Observation", observation_id, body, if_match=if_match)
    now = now_instant(clock)
    prepared = prepare_update(ctx, Saved(current.resource, current.version), body, repo=repo, load=load,
                              new_id=new_id, policy=policy, now=now)
    return _commit(ctx, prepared, repo=repo, now=now)


def prepare_update(ctx: RequestContext, current: Saved, body: dict[str, Any], *, repo: ClinicalRepository,
                   load: Load, policy: PolicyOf, new_id: Callable[[], str], now: str) -> Prepared:
    """A new version; the previous ones stay readable (vread, ``_history``).

    The patient, the code and the orders never change (422: enter it in error and record a new
    one); a final Observation changes only as ``amended``, ``corrected`` or ``entered-in-error``
    (422 naming the allowed statuses); 412 when ``if_match`` is not the current version. The
    performer stays the one who measured; who corrected is in the audit trail. A correction
    that is critical opens an alert unless one is still open for this result.
    """
    before, observation_id = current.resource, current.resource["id"]
    resource, category = _normalize(body, effective=before["effectiveDateTime"], now=now)
    _may_record(ctx, category)
    if records.subject_of(resource) != records.subject_of(before):
        raise Unprocessable("Observation.subject cannot change; mark this one entered-in-error and record it for "
                            "the right patient", expression="Observation.subject")
    if code_of(resource) != code_of(before) or category.code != category_of(before):
        raise Unprocessable(f"Observation.code cannot change (it is {code_of(before)}); mark this one "
                            "entered-in-error and record a new one", expression="Observation.code")
    if set(order_ids(resource)) != set(order_ids(before)):
        raise Unprocessable("Observation.basedOn cannot change: a result answers the orders it was reported for",
                            expression="Observation.basedOn")
    old, new = before["status"], resource["status"]
    if new not in TRANSITIONS[old]:
        options = ", ".join(sorted(TRANSITIONS[old])) or "none (it was entered in error)"
        raise Unprocessable(f"An Observation that is {old} can be saved as: {options}; not {new}",
                            expression="Observation.status")
    if before.get("performer"):
        resource["performer"] = before["performer"]
    links = _check_links(ctx, resource, load)
    resource = stamp(resource, observation_id, current.version + 1, now)
    return _prepare(ctx, resource, links, repo=repo, policy=policy, new_id=new_id, now=now, previous=current,
                    detail={"status": f"{old}->{new}"} if old != new else None)
