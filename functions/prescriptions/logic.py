"""Prescription rules: complete prescriptions, alerts as DetectedIssues, lifecycle, signing, dispensing.

Lifecycle (docs/decisions/0019-prescriptions.md): a prescription is created as ``draft`` and
may be revised while it is one; ``$sign`` (the prescriber only) makes it ``active`` and from then
on its clinical content never changes; ``$status`` completes, stops or cancels it (with a
reason); the pharmacy's last allowed dispensation completes it. Every create, revision and
signature re-runs the checks against the patient's current prescriptions and allergies, stores
the alerts as ``DetectedIssue`` resources linked from ``MedicationRequest.detectedIssue``, and
answers them with the prescription. A contraindicated or major alert blocks signing until the
prescriber records why it is overridden; the override is kept in the alert and audited.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from expediente import audit, records
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, SearchSpec, Write, check_version, now_instant, stamp
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Conflict, Forbidden, Invalid, Unprocessable
from expediente.index import Entry
from expediente.permissions import Role
from expediente.store import Stored

from . import checks, controlled, dosing
from .checks import Alert, Allergy, Medicine
from .formulary import ATC_SYSTEM, CNIS_SYSTEM, EXT, Formulary, Item, atc_by_inn, catalogue, normalize
from .knowledge_base import knowledge_base
from .units import UCUM, Quantity, format_number

MR = "MedicationRequest"
ISSUE = "DetectedIssue"
ALLERGY = "AllergyIntolerance"
DISPENSE = "MedicationDispense"
EXT_BRAND = f"{EXT}/nombre-comercial"
EXT_CLUES = f"{EXT}/clues-emision"
EXT_SEVERITY = f"{EXT}/severidad-alerta"
EXT_RULE = f"{EXT}/regla-alerta"
EXT_CITATION = f"{EXT}/fuente-alerta"
EXT_MANAGEMENT = f"{EXT}/manejo-alerta"
EXT_DISPENSATIONS = f"{EXT}/surtidos-permitidos"
INN_SYSTEM = "https://expediente.mx/fhir/CodeSystem/dci"
ALERT_ACTION_SYSTEM = "https://expediente.mx/fhir/CodeSystem/accion-alerta"
STATUS_REASON_SYSTEM = "https://expediente.mx/fhir/CodeSystem/motivo-estado-receta"
CURRENT = frozenset({"draft", "active"})
# What the checks compare against: drafts written in the last day (an abandoned draft stops alerting), and
# signed prescriptions, active or already dispensed (completed), while their treatment lasts (with a day of
# grace). Stopped and cancelled ones are not taken.
CHECKED = frozenset({"draft", "active", "completed"})
DRAFT_WINDOW = timedelta(days=1)
TREATMENT_GRACE = timedelta(days=1)
# A transaction holds at most 100 elements: the prescription, its Provenance and audit leave room for this
# many alerts (each a version, its index item and sometimes the removal of a stale one).
MAX_STORED_ALERTS = 20

SEARCH = SearchSpec(
    resource_type=MR,
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter", "requester": "requester"},
    filters={"status": "status", "code": "code"},
    date="authoredon",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter", "requester": "Practitioner"},
)
ISSUE_SEARCH = SearchSpec(resource_type=ISSUE, facets={"implicated": "prescription", "patient": "patient"},
                          filters={"severity": "severity", "code": "code"}, date="identified",
                          references={"implicated": MR, "patient": "Patient"})
ALLERGY_SEARCH = SearchSpec(resource_type=ALLERGY, facets={"patient": "patient"},
                            filters={"clinical-status": "clinical", "criticality": "criticality"},
                            date="date", references={"patient": "Patient"})
DISPENSE_SEARCH = SearchSpec(resource_type=DISPENSE, facets={"prescription": "prescription", "patient": "patient"},
                             filters={"status": "status"}, date="whenhandedover",
                             references={"prescription": MR, "patient": "Patient"})


# ---------------------------------------------------------------- reading a prescription ---


def _ref_id(value: Any, kind: str) -> str:
    reference = str((value or {}).get("reference") or "") if isinstance(value, dict) else ""
    return reference.removeprefix(f"{kind}/") if reference.startswith(f"{kind}/") else ""


def item_of(resource: Mapping[str, Any], formulary: Formulary, *, include_hidden: bool = False) -> Item:
    """The formulary item a prescription names (``medicationReference`` or a Cuadro Básico coding)."""
    where = f"{MR}.medication[x]"
    item_id = _ref_id(resource.get("medicationReference"), "Medication")
    if not item_id:
        codings = (resource.get("medicationCodeableConcept") or {}).get("coding") or []
        item_id = next((str(c.get("code") or "") for c in codings if c.get("system") == CNIS_SYSTEM), "")
    if not item_id:
        raise Invalid(f"{where} is required: medicationReference Medication/<id> or medicationCodeableConcept with "
                      f"a {CNIS_SYSTEM} code (search /fhir/Medication)", expression=where)
    item = formulary.get(item_id, include_hidden=include_hidden) if valid_resource_id(item_id) else None
    if item is None:
        raise Unprocessable(f"Medication {item_id} is not in this clinic's formulary", expression=where)
    return item


def _text(item: Item, dosage: dosing.Dosage, resource: Mapping[str, Any]) -> str:
    from .formulary import routes

    route = routes().get(dosage.route)
    text = (f"{format_number(dosage.dose.value)} {_unit_word(dosage.dose.unit)} "
            f"{(route.display if route else dosage.route).lower()} {dosage.frequency_text} durante "
            f"{dosage.duration_text}")
    if dosage.as_needed:
        text += " (si es necesario)"
    return text


def _unit_word(unit: str) -> str:
    words = {"{tablet}": "tableta(s)", "{capsule}": "cápsula(s)", "{ampule}": "ampolleta(s)",
             "{vial}": "frasco(s) ámpula", "{patch}": "parche(s)", "{suppository}": "supositorio(s)",
             "{ovule}": "óvulo(s)", "{sachet}": "sobre(s)",
             "{drop}": "gota(s)", "{puff}": "disparo(s)", "{package}": "envase(s)"}
    return words.get(unit, unit)


def quantity_text(quantity: Quantity, item: Item) -> str:
    if quantity.unit == dosing.PACKAGE:
        content = f" con {format_number(item.package.value)} {_unit_word(item.package.unit)}" if item.package else ""
        return f"{format_number(quantity.value)} {_unit_word(quantity.unit)}{content}"
    return f"{format_number(quantity.value)} {_unit_word(quantity.unit)}"


def _medicine(ref: str | None, item: Item, dosage: dosing.Dosage) -> Medicine:
    return Medicine(ref, item, dosage.daily, f"{item.generic_name} ({item.form} {item.strength_text})")


def medicine_of(stored: Stored, formulary: Formulary, *, at: datetime | None = None) -> Medicine | None:
    """A stored prescription as a participant in checks, or None: its item is no longer in the formulary, or
    (with ``at``) it is not current then: a draft older than a day, a treatment that has ended."""
    try:
        item = item_of(stored.resource, formulary, include_hidden=True)
        dosage = dosing.parse(stored.resource, item)
    except (Invalid, Unprocessable):
        return None
    if at is not None and not _current_at(stored.resource, dosage, at):
        return None
    return _medicine(f"{MR}/{stored.resource['id']}", item, dosage)


def _current_at(resource: Mapping[str, Any], dosage: dosing.Dosage, at: datetime) -> bool:
    status = resource.get("status")
    authored = datetime.fromisoformat(str(resource.get("authoredOn")).replace("Z", "+00:00"))
    if status == "draft":
        return at - authored <= DRAFT_WINDOW
    if status in ("active", "completed"):
        return at <= authored + timedelta(days=dosage.duration_days) + TREATMENT_GRACE
    return False


def index_entry(resource: Mapping[str, Any]) -> Entry:
    status = str(resource.get("status") or "")
    patient = records.subject_of(dict(resource)) or ""
    return Entry(
        sort=str(resource.get("authoredOn") or ""),
        facets={"patient": (patient,), "encounter": (_ref_id(resource.get("encounter"), "Encounter"),),
                "requester": (_ref_id(resource.get("requester"), "Practitioner"),),
                "current": (patient,) if status in CHECKED else ()},
        attrs={"status": status, "patient": patient,
               "code": _ref_id(resource.get("medicationReference"), "Medication")},
    )


# ---------------------------------------------------------------- what the checks read ---


def _all(repo: ClinicalRepository, ctx: RequestContext, resource_type: str, facet: str, value: str, *,
         low: str | None = None) -> list[Stored]:
    """Every page of one index partition (from ``low`` on, when given)."""
    found: list[Stored] = []
    token: str | None = None
    while True:
        page, meta = repo.search(ctx, resource_type, facet, value, limit=100, token=token, fingerprint=value, low=low)
        found += page
        token = meta.next_token
        if token is None:
            return found


def current_prescriptions(ctx: RequestContext, repo: ClinicalRepository, patient: str, *,
                          at: datetime) -> list[Stored]:
    """The patient's prescriptions that may be current at ``at``: drafts, active and completed ones written
    within the longest treatment allowed (one bounded index range, current versions)."""
    since = now_instant(lambda: at - timedelta(days=dosing.MAX_DURATION_DAYS) - TREATMENT_GRACE)
    return [s for s in _all(repo, ctx, MR, "current", patient, low=since) if s.resource.get("status") in CHECKED]


def allergy_of(stored: Stored, formulary: Formulary) -> Allergy | None:
    """An active allergy as the checks use it (substances by INN, classes by ATC prefix)."""
    resource = stored.resource
    clinical = _code(resource.get("clinicalStatus") or {})
    verification = _code(resource.get("verificationStatus") or {})
    if clinical not in ("active", "") or verification in ("refuted", "entered-in-error"):
        return None
    inns: set[str] = set()
    classes: list[str] = []
    for coding in (resource.get("code") or {}).get("coding") or []:
        system, code = coding.get("system"), str(coding.get("code") or "")
        if system == INN_SYSTEM:
            inns.add(code.lower())
        elif system == ATC_SYSTEM:
            classes.append(code.upper())
        elif system == CNIS_SYSTEM:
            item = formulary.get(code, include_hidden=True)
            if item is not None:
                inns |= set(item.inns)
    if not inns and not classes:
        return None
    label = str((resource.get("code") or {}).get("text") or ", ".join(sorted(inns) + classes))
    return Allergy(f"{ALLERGY}/{resource['id']}", label, frozenset(inns), tuple(classes),
                   str(resource.get("criticality") or "unable-to-assess"))


def _code(concept: Mapping[str, Any]) -> str:
    return next((str(c.get("code") or "") for c in concept.get("coding") or []), "")


def patient_allergies(ctx: RequestContext, repo: ClinicalRepository, patient: str,
                      formulary: Formulary) -> list[Allergy]:
    found = (allergy_of(s, formulary) for s in _all(repo, ctx, ALLERGY, "patient", patient))
    return [a for a in found if a is not None]


def run_checks(ctx: RequestContext, repo: ClinicalRepository, formulary: Formulary, patient: str,
               proposed: Medicine, *, exclude: str | None = None,
               others: Sequence[Medicine] = ()) -> list[Alert]:
    """The alerts for ``proposed`` against the patient's current prescriptions (but ``exclude``),
    ``others`` proposed with it, and the patient's allergies."""
    at = datetime.now(UTC)
    current = [m for s in current_prescriptions(ctx, repo, patient, at=at) if s.resource["id"] != exclude
               for m in [medicine_of(s, formulary, at=at)] if m is not None]
    return checks.check(proposed, [*current, *others], patient_allergies(ctx, repo, patient, formulary),
                        kb=knowledge_base(), atc_of=atc_by_inn())


# ---------------------------------------------------------------- alerts as DetectedIssue ---


def issue_id(prescription_id: str, alert: Alert) -> str:
    """A stable id per prescription and alert, so a re-check finds the alert it raised before."""
    return hashlib.sha256(f"{prescription_id}|{alert.key}".encode()).hexdigest()[:32]


def issue_resource(alert: Alert, *, patient: str, prescription: str | None, identified: str) -> dict[str, Any]:
    code, display = alert.code
    implicated = ([{"reference": f"{MR}/{prescription}"}] if prescription else []) + [
        {"reference": ref} for ref in alert.implicated]
    resource: dict[str, Any] = {
        "resourceType": ISSUE,
        "status": "preliminary",
        "code": {"coding": [{"system": checks.ACT_CODE, "code": code, "display": display}]},
        "severity": checks.FHIR_SEVERITY[alert.severity],
        "patient": {"reference": f"Patient/{patient}"},
        "identifiedDateTime": identified,
        "detail": alert.detail,
        "extension": [{"url": EXT_SEVERITY, "valueCode": alert.severity},
                      {"url": EXT_RULE, "valueString": alert.rule},
                      {"url": EXT_CITATION, "valueString": alert.citation},
                      *([{"url": EXT_MANAGEMENT, "valueString": alert.management}] if alert.management else [])],
    }
    if implicated:
        resource["implicated"] = implicated
    return resource


def issue_entry(resource: Mapping[str, Any]) -> Entry:
    prescription = next((str(r.get("reference", "")).removeprefix(f"{MR}/") for r in resource.get("implicated") or []
                         if str(r.get("reference", "")).startswith(f"{MR}/")), "")
    return Entry(sort=str(resource.get("identifiedDateTime") or ""),
                 facets={"prescription": (prescription,), "patient": (records.subject_of(dict(resource)) or "",)},
                 attrs={"severity": resource.get("severity"), "status": resource.get("status"),
                        "code": _code(resource.get("code") or {}), "patient": records.subject_of(dict(resource))})


def severity_of(issue: Mapping[str, Any]) -> str:
    return next((str(e.get("valueCode")) for e in issue.get("extension") or [] if e.get("url") == EXT_SEVERITY), "")


def overridden(issue: Mapping[str, Any]) -> bool:
    return any(_code(m.get("action") or {}) == "override" for m in issue.get("mitigation") or [])


@dataclass(frozen=True)
class Reconciled:
    writes: list[Write]
    issues: list[dict[str, Any]]       # the current alerts (stored form), most severe first
    references: list[dict[str, Any]]   # for MedicationRequest.detectedIssue


def reconcile(ctx: RequestContext, repo: ClinicalRepository, prescription_id: str, patient: str,
              alerts: Sequence[Alert], previous: Sequence[str], *, now: str) -> Reconciled:
    """The DetectedIssue versions to write so the stored alerts are exactly ``alerts``: new ones created,
    unchanged ones kept (with their overrides), alerts that no longer apply cancelled."""
    kept = list(alerts[:MAX_STORED_ALERTS])
    wanted = {issue_id(prescription_id, a): a for a in kept}
    existing = {s.resource["id"]: s for s in repo.get_many(ctx, ISSUE, [*wanted, *previous])}
    writes: list[Write] = []
    issues: list[dict[str, Any]] = []
    for rid, alert in wanted.items():
        fresh = issue_resource(alert, patient=patient, prescription=prescription_id, identified=now)
        stored = existing.get(rid)
        if stored is not None and stored.resource.get("status") != "cancelled" and \
                stored.resource.get("detail") == fresh["detail"] and severity_of(stored.resource) == alert.severity:
            issues.append(stored.resource)
            continue
        version = 1 if stored is None else stored.version + 1
        resource = stamp(fresh, rid, version, now)
        writes.append(Write(ISSUE, resource, version, issue_entry(resource),
                            previous=None if stored is None else issue_entry(stored.resource)))
        issues.append(resource)
    for rid in previous:
        stored = existing.get(rid)
        if rid in wanted or stored is None or stored.resource.get("status") == "cancelled":
            continue
        resource = stamp({**stored.resource, "status": "cancelled"}, rid, stored.version + 1, now)
        writes.append(Write(ISSUE, resource, stored.version + 1, issue_entry(resource),
                            previous=issue_entry(stored.resource)))
    references = [{"reference": f"{ISSUE}/{i['id']}", "display": f"{severity_of(i)}: {i['detail']}"[:250]}
                  for i in issues]
    return Reconciled(writes, issues, references)


# ---------------------------------------------------------------- create and revise ---


@dataclass(frozen=True)
class Outcome:
    resource: dict[str, Any]
    version: int
    alerts: list[dict[str, Any]] = field(default_factory=list)


def _prepared(ctx: RequestContext, body: Mapping[str, Any], formulary: Formulary, *,
              include_hidden: bool = False) -> tuple[Item, dosing.Dosage, str]:
    if body.get("resourceType") != MR:
        raise Invalid(f"resourceType must be {MR}", expression="resourceType")
    if body.get("status", "draft") != "draft":
        raise Invalid("A prescription is created and revised as draft; it becomes active only by $sign",
                      expression=f"{MR}.status")
    if body.get("intent", "order") != "order":
        raise Invalid("intent must be order", expression=f"{MR}.intent")
    patient = _ref_id(body.get("subject"), "Patient")
    if not patient or not valid_resource_id(patient):
        raise Invalid(f"{MR}.subject must reference the Patient", expression=f"{MR}.subject")
    if records.find(ctx.tenant, "Patient", patient) is None:
        raise Unprocessable(f"Patient/{patient} not found", expression=f"{MR}.subject")
    encounter = _ref_id(body.get("encounter"), "Encounter")
    if body.get("encounter") is not None:
        found = records.find(ctx.tenant, "Encounter", encounter) if encounter else None
        if found is None or records.subject_of(found) != patient:
            raise Unprocessable(f"{MR}.encounter must be an encounter of Patient/{patient}",
                                expression=f"{MR}.encounter")
    item = item_of(body, formulary, include_hidden=include_hidden)
    dosage = dosing.parse(body, item)
    controlled.check(body, item, dosage)
    return item, dosage, patient


def _document(ctx: RequestContext, body: Mapping[str, Any], item: Item, dosage: dosing.Dosage, *,
              authored: str) -> dict[str, Any]:
    """The stored prescription: what the prescriber wrote plus what the server sets."""
    kept = {k: v for k, v in body.items() if k in (
        "identifier", "subject", "encounter", "reasonCode", "reasonReference", "note", "courseOfTherapyType",
        "substitution", "dosageInstruction", "dispenseRequest", "category", "priority")}
    instruction = dict(kept["dosageInstruction"][0])
    instruction["text"] = _text(item, dosage, body)
    extensions = [e for e in body.get("extension") or [] if isinstance(e, dict) and e.get("url") == EXT_BRAND]
    if ctx.clinic:
        extensions.append({"url": EXT_CLUES, "valueString": ctx.clinic})
    resource: dict[str, Any] = {
        "resourceType": MR, **kept, "status": "draft", "intent": "order",
        "medicationReference": {"reference": f"Medication/{item.id}", "display": item.label},
        "requester": {"reference": f"Practitioner/{ctx.practitioner_id}"},
        "authoredOn": authored,
        "dosageInstruction": [instruction],
    }
    if extensions:
        resource["extension"] = extensions
    return resource


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    from expediente.fhir import validate

    validate(MR, resource)
    return resource


def _require_prescriber(ctx: RequestContext) -> str:
    if not ctx.practitioner_id:
        raise Unprocessable("Your user is not linked to a Practitioner, so it cannot prescribe")
    return ctx.practitioner_id


def prescribe(ctx: RequestContext, body: Mapping[str, Any], *, repo: ClinicalRepository, formulary: Formulary,
              new_id: Callable[[], str], clock: Callable[[], datetime] | None = None) -> Outcome:
    """Create a draft prescription and its alerts (one transaction with the audit record)."""
    _require_prescriber(ctx)
    item, dosage, patient = _prepared(ctx, body, formulary)
    now = now_instant(clock)
    resource_id = new_id()
    alerts = run_checks(ctx, repo, formulary, patient, _medicine(None, item, dosage))
    reconciled = reconcile(ctx, repo, resource_id, patient, alerts, (), now=now)
    resource = _document(ctx, body, item, dosage, authored=now)
    if reconciled.references:
        resource["detectedIssue"] = reconciled.references
    resource = _validated(stamp(resource, resource_id, 1, now))
    repo.save(ctx, [Write(MR, resource, 1, index_entry(resource)), *reconciled.writes], now=now,
              entry=AuditEntry(MR, Action.CREATE, resource_id, (patient,), 201,
                               detail={"alerts": str(len(reconciled.issues))}))
    return Outcome(resource, 1, reconciled.issues)


def _issue_ids(resource: Mapping[str, Any]) -> list[str]:
    return [str(r.get("reference", "")).removeprefix(f"{ISSUE}/") for r in resource.get("detectedIssue") or []]


def refuse_if_signed(current: Stored) -> None:
    status = current.resource.get("status")
    if status != "draft":
        raise Conflict(f"{MR}/{current.resource['id']} is {status}: a signed prescription never changes (stop or "
                       "cancel it with $status and write a new one)")


def revise(ctx: RequestContext, prescription_id: str, body: Mapping[str, Any], *, if_match: int,
           repo: ClinicalRepository, formulary: Formulary, clock: Callable[[], datetime] | None = None) -> Outcome:
    """Replace a draft (the prescriber only) and re-check it."""
    current = repo.for_update(ctx, MR, prescription_id, body, if_match=if_match)
    refuse_if_signed(current)
    _only_prescriber(ctx, current.resource, "revises")
    item, dosage, patient = _prepared(ctx, body, formulary)
    if patient != records.subject_of(current.resource):
        raise Invalid(f"{MR}.subject cannot change; cancel this draft and write one for the other patient",
                      expression=f"{MR}.subject")
    now = now_instant(clock)
    alerts = run_checks(ctx, repo, formulary, patient, _medicine(None, item, dosage), exclude=prescription_id)
    reconciled = reconcile(ctx, repo, prescription_id, patient, alerts, _issue_ids(current.resource), now=now)
    resource = _document(ctx, body, item, dosage, authored=str(current.resource["authoredOn"]))
    if reconciled.references:
        resource["detectedIssue"] = reconciled.references
    version = current.version + 1
    resource = _validated(stamp(resource, prescription_id, version, now))
    repo.save(ctx, [Write(MR, resource, version, index_entry(resource), previous=index_entry(current.resource)),
                    *reconciled.writes], now=now,
              entry=AuditEntry(MR, Action.UPDATE, prescription_id, (patient,), 200,
                               detail={"alerts": str(len(reconciled.issues))}))
    return Outcome(resource, version, reconciled.issues)


def _only_prescriber(ctx: RequestContext, resource: Mapping[str, Any], act: str) -> None:
    requester = str((resource.get("requester") or {}).get("reference") or "")
    if requester != f"Practitioner/{ctx.practitioner_id}":
        raise Forbidden(f"Only the prescriber ({requester}) {act} this prescription")


# ---------------------------------------------------------------- $check ---


def check_proposals(ctx: RequestContext, body: Mapping[str, Any], *, repo: ClinicalRepository,
                    formulary: Formulary, clock: Callable[[], datetime] | None = None
                    ) -> tuple[dict[str, Any], str]:
    """``$check``: the alerts for one proposed prescription (or a Bundle of them, checked against each
    other too), without saving anything. Returns a ``collection`` Bundle of unsaved DetectedIssues."""
    proposals: list[Mapping[str, Any]]
    if body.get("resourceType") == "Bundle":
        proposals = [e.get("resource") or {} for e in body.get("entry") or [] if isinstance(e, dict)]
        if not proposals:
            raise Invalid("The Bundle has no MedicationRequest entries", expression="Bundle.entry")
    else:
        proposals = [body]
    prepared = [_prepared(ctx, {**p, "status": "draft"}, formulary) for p in proposals]
    patients = {patient for _, _, patient in prepared}
    if len(patients) != 1:
        raise Invalid("Every proposed prescription must be for the same patient", expression="Bundle.entry")
    patient = patients.pop()
    medicines = [_medicine(f"urn:propuesta:{n}", item, dosage) for n, (item, dosage, _) in enumerate(prepared)]
    now = now_instant(clock)
    found: list[dict[str, Any]] = []
    for n, medicine in enumerate(medicines):
        proposed = _medicine(None, medicine.item, dosing.parse(proposals[n], medicine.item))
        alerts = run_checks(ctx, repo, formulary, patient, proposed, others=medicines[n + 1:])
        found += [issue_resource(a, patient=patient, prescription=None, identified=now) for a in alerts]
    bundle = {"resourceType": "Bundle", "type": "collection", "total": len(found),
              "entry": [{"resource": r} for r in found]}
    return bundle, patient


# ---------------------------------------------------------------- $status ---

_TRANSITIONS = {
    "draft": {"cancelled"},
    "active": {"completed", "stopped", "cancelled"},
}


@dataclass(frozen=True)
class StatusChange:
    resource: dict[str, Any]
    version: int
    previous: str


def change_status(ctx: RequestContext, prescription_id: str, status: str, *, reason: str | None, if_match: int,
                  repo: ClinicalRepository, clock: Callable[[], datetime] | None = None) -> StatusChange:
    """Complete, stop or cancel a prescription (stop and cancel need a reason); other content never changes."""
    current = repo.require(ctx, MR, prescription_id)
    check_version(current, if_match)
    previous = str(current.resource.get("status"))
    if status not in _TRANSITIONS.get(previous, set()):
        allowed = ", ".join(sorted(_TRANSITIONS.get(previous, set()))) or "none"
        raise Conflict(f"A {previous} prescription cannot become {status} (allowed: {allowed})")
    if status in ("stopped", "cancelled") and not (reason or "").strip():
        raise Invalid(f"A reason is required to mark the prescription {status}", expression="Parameters.reason")
    if status == "cancelled" and int(current.attrs.get("dispensed", 0)) > 0:
        raise Conflict("A prescription already (partly) dispensed is stopped, not cancelled")
    now = now_instant(clock)
    resource = dict(current.resource)
    resource["status"] = status
    if reason:
        resource["statusReason"] = {"text": reason.strip()[:500]}
    version = current.version + 1
    resource = stamp(resource, prescription_id, version, now)
    patient = records.subject_of(resource) or ""
    repo.save(ctx, [Write(MR, resource, version, index_entry(resource), previous=index_entry(current.resource),
                          attrs=current.attrs)], now=now,
              entry=AuditEntry(MR, Action.OPERATION, prescription_id, (patient,), 200,
                               detail={"operation": "$status", "status": status, "previous": previous}),
              events=(_event("PrescriptionStatusChanged", tenant_id=ctx.tenant, medication_request_id=prescription_id,
                             patient_id=patient, status=status, previous_status=previous,
                             request_id=ctx.request_id),))
    return StatusChange(resource, version, previous)


def _event(kind: str, **values: Any) -> Any:
    """A domain event committed with its change to the outbox (decision 0028); models load on first write."""
    from expediente import events

    model: Any = getattr(events, kind)
    return model(**values)


# ---------------------------------------------------------------- dispensing ---


def expired(resource: Mapping[str, Any], moment: datetime) -> bool:
    end = ((resource.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end")
    if not end:
        return False
    text = str(end)
    limit = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text else \
        datetime.fromisoformat(text).replace(tzinfo=UTC) + timedelta(days=1)
    return moment > limit


def dispensations_allowed(current: Stored) -> int:
    return int(current.attrs.get("allowed", 1))


@dataclass(frozen=True)
class Dispensed:
    dispense: dict[str, Any]
    prescription: dict[str, Any]
    remaining: int
    completed: bool


def dispense(ctx: RequestContext, body: Mapping[str, Any], *, repo: ClinicalRepository, formulary: Formulary,
             new_id: Callable[[], str], clock: Callable[[], datetime] | None = None) -> Dispensed:
    """Record a pharmacy dispensation of a signed, current, not expired, not fully dispensed prescription."""
    if body.get("resourceType") != DISPENSE:
        raise Invalid(f"resourceType must be {DISPENSE}", expression="resourceType")
    authorizing = body.get("authorizingPrescription") or []
    prescription_id = _ref_id(authorizing[0] if authorizing else None, MR)
    if not prescription_id or not valid_resource_id(prescription_id):
        raise Invalid(f"{DISPENSE}.authorizingPrescription must reference the MedicationRequest",
                      expression=f"{DISPENSE}.authorizingPrescription")
    current = repo.get(ctx, MR, prescription_id)
    if current is None:
        raise Unprocessable(f"{MR}/{prescription_id} not found", expression=f"{DISPENSE}.authorizingPrescription")
    status = current.resource.get("status")
    if status == "draft":
        raise Conflict("The prescription is not signed: it cannot be dispensed")
    if status != "active":
        raise Conflict(f"The prescription is {status}: it cannot be dispensed")
    moment = clock() if clock else datetime.now(UTC)
    if expired(current.resource, moment):
        raise Conflict("The prescription has expired: it cannot be dispensed")
    done, allowed = int(current.attrs.get("dispensed", 0)), dispensations_allowed(current)
    if done >= allowed:
        raise Conflict(f"The prescription has been fully dispensed ({done} of {allowed})")
    item = item_of(current.resource, formulary, include_hidden=True)
    prescribed = dosing.parse(current.resource, item).quantity
    quantity = body.get("quantity")
    handed = dosing._ucum(quantity, f"{DISPENSE}.quantity") if quantity is not None else prescribed
    if handed.unit != prescribed.unit or handed.value > prescribed.value + 1e-9:
        raise Invalid(f"{DISPENSE}.quantity is at most what was prescribed ({prescribed})",
                      expression=f"{DISPENSE}.quantity")
    now = now_instant(lambda: moment)
    patient = records.subject_of(current.resource) or ""
    dispense_id = new_id()
    resource: dict[str, Any] = {
        "resourceType": DISPENSE, "status": "completed",
        "medicationReference": current.resource["medicationReference"],
        "subject": {"reference": f"Patient/{patient}"},
        "authorizingPrescription": [{"reference": f"{MR}/{prescription_id}"}],
        "quantity": {"value": handed.value, "unit": handed.unit, "system": UCUM, "code": handed.unit},
        "whenHandedOver": now,
        "dosageInstruction": current.resource.get("dosageInstruction"),
    }
    if ctx.practitioner_id:
        resource["performer"] = [{"actor": {"reference": f"Practitioner/{ctx.practitioner_id}"}}]
    if body.get("note"):
        resource["note"] = body["note"]
    resource = stamp(resource, dispense_id, 1, now)
    from expediente.fhir import validate

    validate(DISPENSE, resource)
    entry = Entry(sort=now, facets={"prescription": (prescription_id,), "patient": (patient,)},
                  attrs={"status": "completed", "patient": patient})
    completed = done + 1 >= allowed
    writes = [Write(DISPENSE, resource, 1, entry)]
    extra: list[dict[str, Any]] = []
    if completed:
        finished = stamp({**current.resource, "status": "completed"}, prescription_id, current.version + 1, now)
        writes.append(Write(MR, finished, current.version + 1, index_entry(finished),
                            previous=index_entry(current.resource), attrs={**current.attrs, "dispensed": done + 1}))
        prescription = finished
    else:
        extra.append(_count_dispensation(repo, ctx, prescription_id, done, current.version))
        prescription = current.resource
    repo.save(ctx, writes, now=now, extra=extra,
              entry=AuditEntry(DISPENSE, Action.CREATE, dispense_id, (patient,), 201,
                               detail={"prescription": prescription_id, "dispensation": str(done + 1),
                                       "of": str(allowed)}),
              events=(_event("MedicationDispensed", tenant_id=ctx.tenant, dispense_id=dispense_id,
                             medication_request_id=prescription_id, patient_id=records.subject_of(resource) or "",
                             remaining=allowed - done - 1, request_id=ctx.request_id),))
    return Dispensed(resource, prescription, allowed - done - 1, completed)


def _count_dispensation(repo: ClinicalRepository, ctx: RequestContext, prescription_id: str, done: int,
                        version: int) -> dict[str, Any]:
    """Count one more dispensation on the prescription, only if nobody counted one meanwhile."""
    from expediente import aws

    update = repo.update_attrs(ctx, MR, prescription_id, expression="SET dispensed = :next",
                               values={":next": done + 1})
    update["Update"]["ConditionExpression"] = ("attribute_exists(pk) AND version = :version AND "
                                               "(attribute_not_exists(dispensed) OR dispensed = :done)")
    update["Update"]["ExpressionAttributeValues"].update(aws.to_item({":done": done, ":version": version}))
    return update


# ---------------------------------------------------------------- allergies ---


def _allergy_resource(ctx: RequestContext, body: Mapping[str, Any], formulary: Formulary) -> tuple[dict[str, Any], str]:
    if body.get("resourceType") != ALLERGY:
        raise Invalid(f"resourceType must be {ALLERGY}", expression="resourceType")
    patient = _ref_id(body.get("patient"), "Patient")
    if not patient or not valid_resource_id(patient) or records.find(ctx.tenant, "Patient", patient) is None:
        raise Unprocessable(f"{ALLERGY}.patient must reference a Patient of this clinic",
                            expression=f"{ALLERGY}.patient")
    code = body.get("code") or {}
    codings = code.get("coding") or []
    categories = {str(c) for c in body.get("category") or []}
    medication = not categories or "medication" in categories
    known = False
    for n, coding in enumerate(codings):
        system, value = coding.get("system"), str(coding.get("code") or "")
        where = f"{ALLERGY}.code.coding[{n}]"
        if system == ATC_SYSTEM:
            from .formulary import ATC

            if not ATC.match(value.upper()):
                raise Invalid(f"{value!r} is not an ATC code or class (e.g. J01C, penicillins)", expression=where)
            known = True
        elif system == INN_SYSTEM:
            if value.lower() not in knowledge_base().ingredients() and value.lower() not in _formulary_inns():
                raise Invalid(f"{value!r} is not an ingredient the formulary or the knowledge base knows (use the "
                              "WHO INN in English, lower case, e.g. amoxicillin)", expression=where)
            known = True
        elif system == CNIS_SYSTEM:
            if formulary.get(value, include_hidden=True) is None:
                raise Invalid(f"Medication {value} is not in the formulary", expression=where)
            known = True
    if medication and not known:
        raise Invalid(f"A medication allergy needs {ALLERGY}.code with an ATC class ({ATC_SYSTEM}), an ingredient "
                      f"({INN_SYSTEM}) or a Cuadro Básico key, so prescriptions can be checked against it",
                      expression=f"{ALLERGY}.code")
    if not code.get("text") and not codings:
        raise Invalid(f"{ALLERGY}.code is required", expression=f"{ALLERGY}.code")
    if body.get("criticality") not in (None, "low", "high", "unable-to-assess"):
        raise Invalid("criticality is low, high or unable-to-assess", expression=f"{ALLERGY}.criticality")
    kept = {k: v for k, v in body.items() if k not in ("id", "meta", "recorder", "recordedDate")}
    resource = {**kept, "resourceType": ALLERGY}
    resource.setdefault("clinicalStatus", {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]})
    if ctx.practitioner_id:
        resource["recorder"] = {"reference": f"Practitioner/{ctx.practitioner_id}"}
    return resource, patient


def _formulary_inns() -> frozenset[str]:
    return frozenset(i for item in catalogue().values() for i in item.inns)


def allergy_entry(resource: Mapping[str, Any]) -> Entry:
    patient = records.subject_of(dict(resource)) or ""
    return Entry(sort=str(resource.get("recordedDate") or ""), facets={"patient": (patient,)},
                 attrs={"clinical": _code(resource.get("clinicalStatus") or {}),
                        "criticality": resource.get("criticality") or "", "patient": patient})


def record_allergy(ctx: RequestContext, body: Mapping[str, Any], *, repo: ClinicalRepository, formulary: Formulary,
                   new_id: Callable[[], str], clock: Callable[[], datetime] | None = None,
                   current: Stored | None = None) -> Outcome:
    """Create (or, with ``current``, revise) an allergy or intolerance."""
    resource, patient = _allergy_resource(ctx, body, formulary)
    if current is not None and records.subject_of(current.resource) != patient:
        raise Invalid(f"{ALLERGY}.patient cannot change", expression=f"{ALLERGY}.patient")
    now = now_instant(clock)
    resource["recordedDate"] = current.resource.get("recordedDate", now) if current else now
    version = 1 if current is None else current.version + 1
    resource_id = new_id() if current is None else current.resource["id"]
    resource = stamp(resource, resource_id, version, now)
    from expediente.fhir import validate

    validate(ALLERGY, resource)
    return_saved = repo.put(ctx, resource, index=allergy_entry, now=now, previous=current)
    return Outcome(return_saved.resource, return_saved.version)


# ---------------------------------------------------------------- local formulary items ---


def medication_entry(resource: Mapping[str, Any]) -> Entry:
    return Entry(sort=str((resource.get("meta") or {}).get("lastUpdated") or ""), facets={"formulary": ("local",)},
                 attrs={"name": normalize(str((resource.get("code") or {}).get("text") or ""))})


def audit_hide(ctx: RequestContext, item_id: str, hidden: bool) -> AuditEntry:
    return AuditEntry("Medication", Action.OPERATION, item_id, (), 200,
                      detail={"operation": "$hide", "hidden": str(hidden).lower()})


# ---------------------------------------------------------------- signing support ---


def new_token() -> str:
    """A receta verification token: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def signer_may_sign(ctx: RequestContext, item: Item) -> None:
    """Groups I-III are signed by physicians only (LGS art. 226 fr. I-III)."""
    if item.sale_group in controlled.CONTROLLED and Role.PHYSICIAN not in ctx.roles:
        raise Forbidden(f"Only physicians sign group {item.sale_group} prescriptions ({item.label})")


def record_read(ctx: RequestContext, resource_type: str, resource_id: str, patient: str, operation: str) -> None:
    audit.record(ctx, AuditEntry(resource_type, Action.OPERATION, resource_id, (patient,) if patient else (), 200,
                                 detail={"operation": operation}))
