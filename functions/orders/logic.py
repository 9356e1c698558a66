"""Order rules (``ServiceRequest``): lab orders in LOINC, imaging orders by modality, one status machine.

NOM-024 asks for a visible order status: ``requested → in-process → completed``, or ``cancelled``
(with a reason) from the first two. FHIR's ``ServiceRequest.status`` has no such values, so the
order status is the extension ``estado-orden`` and ``status`` follows it (requested and
in-process are ``active``, completed is ``completed``, cancelled is ``revoked``). Every change is a
new version, audited in its transaction and published as ``OrderStatusChanged``. Imaging orders get
a tenant-unique accession number (DICOM AccessionNumber, at most 16 characters), lab orders a
placer number (HL7 ORC-2), claimed by guard items in the order's own transaction.

Pure domain code: collaborators come in as arguments.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from expediente import icd10, records
from expediente.audit import Action
from expediente.clinical import ClinicalRepository, SearchSpec, check_version, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Conflict, Forbidden, Invalid, Unprocessable
from expediente.fhir import validate
from expediente.identifiers import ACCESSION_SYSTEM as ACCESSION_SYSTEM
from expediente.identifiers import IDENTIFIER_TYPE_SYSTEM as IDENTIFIER_TYPE
from expediente.index import Entry
from expediente.permissions import Role
from expediente.store import Stored, TransactionConflict

EXT = "https://expediente.mx/fhir/StructureDefinition"
ORDER_STATUS = f"{EXT}/estado-orden"
CANCEL_REASON = f"{EXT}/motivo-cancelacion"
SNOMED = "http://snomed.info/sct"
LABORATORY, IMAGING = "108252007", "363679005"  # SNOMED CT: Laboratory procedure, Imaging (FHIR example set)
CATEGORIES = {LABORATORY: "Laboratory procedure", IMAGING: "Imaging"}
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
# DICOM modalities (PS3.16 CID 29) an imaging order may name.
MODALITIES = {"CR": "Computed Radiography", "DX": "Digital Radiography", "CT": "Computed Tomography",
              "MR": "Magnetic Resonance", "US": "Ultrasound", "MG": "Mammography", "NM": "Nuclear Medicine",
              "PT": "Positron emission tomography", "XA": "X-Ray Angiography", "RF": "Radio Fluoroscopy"}
PLACER_SYSTEM = "urn:expediente:placer"
PRIORITIES = frozenset({"routine", "urgent", "asap", "stat"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"in-process", "cancelled"}),
    "in-process": frozenset({"completed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}
FHIR_STATUS = {"requested": "active", "in-process": "active", "completed": "completed", "cancelled": "revoked"}
# Who makes each change: the performing department starts and completes its orders; a physician or
# the performing department cancels (with a reason).
_PERFORMER = {LABORATORY: Role.LAB, IMAGING: Role.RADIOLOGY}

SEARCH = SearchSpec(
    resource_type="ServiceRequest",
    facets={"worklist": "worklist", "patient": "patient", "subject": "patient", "encounter": "encounter",
            "clinic": "clinic"},
    filters={"status": "status", "category": "category", "code": "code"},
    date="authored",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter"},
)


@dataclass(frozen=True)
class Saved:
    resource: dict[str, Any]
    version: int
    previous_status: str | None = None


def order_status(resource: dict[str, Any]) -> str:
    return str(next(e["valueCode"] for e in resource["extension"] if e["url"] == ORDER_STATUS))


def category_of(resource: dict[str, Any]) -> str:
    return str(resource["category"][0]["coding"][0]["code"])


def clinic_of(resource: dict[str, Any]) -> str:
    return str(next((e["valueString"] for e in resource.get("extension") or [] if e["url"] == f"{EXT}/clues"), ""))


def index_entry(resource: dict[str, Any]) -> Entry:
    status, clinic = order_status(resource), clinic_of(resource)
    encounter = str((resource.get("encounter") or {}).get("reference", "")).removeprefix("Encounter/")
    return Entry(
        sort=resource["authoredOn"],
        facets={"patient": (records.subject_of(resource) or "",), "encounter": (encounter,), "clinic": (clinic,),
                "worklist": (f"{clinic}|{status}",)},
        attrs={"status": status, "category": category_of(resource),
               "code": next((c["code"] for c in resource["code"].get("coding") or []), ""),
               "patient": records.subject_of(resource), "encounter": encounter, "clinic": clinic},
    )


def new_number(prefix: str, clock: Callable[[], datetime] | None = None) -> str:
    """``A``/``L`` + date + 7 random characters: 16 characters (DICOM SH), unguessable, sortable by day."""
    day = (clock() if clock else datetime.now(UTC)).strftime("%Y%m%d")
    return prefix + day + "".join(secrets.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(7))


def _coding(concept: Any, system: str) -> dict[str, Any] | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == system:
            return dict(coding)
    return None


def _normalize(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The client's order checked and completed; returns it and its category."""
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text", "identifier", "requester",
                                                          "authoredOn")}
    resource["resourceType"] = "ServiceRequest"
    resource.setdefault("status", "active")
    resource.setdefault("intent", "order")
    validate("ServiceRequest", resource)
    if resource["intent"] != "order":
        raise Invalid("ServiceRequest.intent must be order", expression="ServiceRequest.intent")
    if resource["status"] != "active":
        raise Invalid("A new order is active (requested); its status then changes with $status",
                      expression="ServiceRequest.status")
    category = _coding((resource.get("category") or [None])[0], SNOMED)
    if category is None or category.get("code") not in CATEGORIES:
        raise Invalid(f"ServiceRequest.category must be {SNOMED} {LABORATORY} (laboratory) or {IMAGING} (imaging)",
                      expression="ServiceRequest.category[0]")
    kind = str(category["code"])
    resource["category"] = [{"coding": [{"system": SNOMED, "code": kind, "display": CATEGORIES[kind]}]}]
    records.parse((resource.get("subject") or {}).get("reference"), where="ServiceRequest.subject",
                  types=("Patient",))
    records.parse((resource.get("encounter") or {}).get("reference"), where="ServiceRequest.encounter",
                  types=("Encounter",))
    priority = resource.setdefault("priority", "routine")
    if priority not in PRIORITIES:
        raise Invalid("ServiceRequest.priority must be routine, urgent, asap or stat",
                      expression="ServiceRequest.priority")
    if kind == LABORATORY:
        _lab(resource)
    else:
        _imaging(resource)
    reasons = []
    for r, reason in enumerate(resource.get("reasonCode") or []):
        coding = _coding(reason, icd10.SYSTEM)
        if coding is None:
            raise Invalid(f"ServiceRequest.reasonCode[{r}] needs an ICD-10 coding ({icd10.SYSTEM})",
                          expression=f"ServiceRequest.reasonCode[{r}]")
        diagnosis = icd10.diagnosis(str(coding.get("code") or ""), where=f"ServiceRequest.reasonCode[{r}]")
        reasons.append({"coding": [diagnosis.coding()], **({"text": reason["text"]} if reason.get("text") else {})})
    resource["reasonCode"] = reasons
    if not reasons and not resource.get("reasonReference"):
        raise Invalid("ServiceRequest.reasonCode (the clinical reason, ICD-10) is required",
                      expression="ServiceRequest.reasonCode")
    for s, info in enumerate(resource.get("supportingInfo") or []):
        records.parse(info.get("reference"), where=f"ServiceRequest.supportingInfo[{s}]", types=("Composition",))
    return resource, kind


def _lab(resource: dict[str, Any]) -> None:
    from expediente import loinc

    coding = _coding(resource.get("code"), loinc.SYSTEM)
    if coding is None:
        raise Invalid(f"A laboratory order's code is a LOINC test or panel ({loinc.SYSTEM})",
                      expression="ServiceRequest.code")
    test = loinc.lab_test(str(coding.get("code") or ""), where="ServiceRequest.code.coding[0].code")
    resource["code"] = {"coding": [test.coding()], "text": test.name_es or test.name}
    if resource.get("orderDetail") or resource.get("bodySite"):
        raise Invalid("A laboratory order has no modality or body site", expression="ServiceRequest.orderDetail")


def _imaging(resource: dict[str, Any]) -> None:
    modality = None
    for detail in resource.get("orderDetail") or []:
        modality = modality or _coding(detail, DICOM)
    if modality is None or modality.get("code") not in MODALITIES:
        raise Invalid(f"An imaging order names its modality in orderDetail ({DICOM}: "
                      f"{', '.join(MODALITIES)})", expression="ServiceRequest.orderDetail")
    code = str(modality["code"])
    resource["orderDetail"] = [{"coding": [{"system": DICOM, "code": code, "display": MODALITIES[code]}]}]
    if not resource.get("bodySite") or not any(s.get("text") or s.get("coding") for s in resource["bodySite"]):
        raise Invalid("An imaging order needs bodySite (text or a code)", expression="ServiceRequest.bodySite")
    text = (resource.get("code") or {}).get("text")
    if not text:
        raise Invalid("An imaging order describes the study in code.text (e.g. 'Radiografía de tórax PA')",
                      expression="ServiceRequest.code.text")


def _with_status(resource: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
    extensions = [e for e in resource.get("extension") or [] if e.get("url") not in (ORDER_STATUS, CANCEL_REASON)]
    extensions.append({"url": ORDER_STATUS, "valueCode": status})
    if reason:
        extensions.append({"url": CANCEL_REASON, "valueString": reason})
    return {**resource, "extension": extensions, "status": FHIR_STATUS[status]}


PatientCheck = Callable[[RequestContext, str], bool]


def status_changed(ctx: RequestContext, order: dict[str, Any], previous_status: str | None) -> Any:
    """The ``OrderStatusChanged`` of a stored order version: committed with it to the outbox (decision 0028)."""
    from expediente import events  # the event models load on the first write only

    return events.OrderStatusChanged(tenant_id=ctx.tenant, order_id=order["id"],
                                     patient_id=records.subject_of(order) or "", status=order_status(order),
                                     previous_status=previous_status, request_id=ctx.request_id)


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, patient_exists: PatientCheck,
           new_id: Callable[[], str], clock: Callable[[], datetime] | None = None,
           number: Callable[[str], str] = new_number,
           before_commit: Callable[[dict[str, Any]], Callable[[], None] | None] | None = None,
           announce: Callable[[dict[str, Any]], Sequence[Any]] | None = None) -> Saved:
    """Place an order for a patient's open encounter; it starts ``requested`` with its number.

    ``before_commit`` receives the final order just before it is stored (the HL7 outbox writes
    the lab's ORM^O01 there, so a committed lab order always has its message); it may return an
    undo, called when that attempt is not committed (a failed or conflicting transaction), so a
    failed request leaves no message behind. ``announce`` (called after it) returns more events
    to commit with the order, besides its ``OrderStatusChanged`` (decision 0028).
    """
    if not ctx.practitioner_id:
        raise Forbidden("Your user is not linked to a Practitioner; orders name who requested them")
    resource, kind = _normalize(body)
    patient = records.subject_of(resource) or ""
    if not patient_exists(ctx, patient):
        raise Unprocessable(f"ServiceRequest.subject: Patient/{patient} does not exist",
                            expression="ServiceRequest.subject")
    encounter_id = resource["encounter"]["reference"].split("/")[1]
    encounter = records.load(ctx.tenant, records.Ref("Encounter", encounter_id))
    if encounter is None or records.subject_of(encounter.resource) != patient:
        raise Unprocessable(f"ServiceRequest.encounter: Encounter/{encounter_id} is not an encounter of this patient",
                            expression="ServiceRequest.encounter")
    if encounter.resource["status"] in ("cancelled", "entered-in-error", "finished"):
        raise Unprocessable(f"Encounter/{encounter_id} is {encounter.resource['status']}; orders belong to an open "
                            "encounter", expression="ServiceRequest.encounter")
    for s, info in enumerate(resource.get("supportingInfo") or []):
        note = records.load(ctx.tenant, records.parse(info["reference"], where="supportingInfo",
                                                      types=("Composition",)))
        if note is None or records.subject_of(note.resource) != patient:
            raise Unprocessable(f"ServiceRequest.supportingInfo[{s}]: {info['reference']} is not a note of this "
                                "patient", expression=f"ServiceRequest.supportingInfo[{s}]")
    clinic = str(encounter.resource["serviceProvider"]["identifier"]["value"])
    now = now_instant(clock)
    order_id = new_id()
    prefix, system, code = ("L", PLACER_SYSTEM, "PLAC") if kind == LABORATORY else ("A", ACCESSION_SYSTEM, "ACSN")
    for _ in range(3):
        value = number(prefix)
        resource = {**resource, "identifier": [{"type": {"coding": [{"system": IDENTIFIER_TYPE, "code": code}]},
                                                "system": system, "value": value}],
                    "requester": {"reference": f"Practitioner/{ctx.practitioner_id}"}, "authoredOn": now,
                    "extension": [e for e in resource.get("extension") or [] if e.get("url") != f"{EXT}/clues"]
                    + [{"url": f"{EXT}/clues", "valueString": clinic}]}
        resource = stamp(_with_status(resource, "requested"), order_id, 1, now)
        validate("ServiceRequest", resource)
        from .repository import number_guard

        undo = before_commit(resource) if before_commit is not None else None
        committed = False
        try:
            announced = (status_changed(ctx, resource, None), *(announce(resource) if announce is not None else ()))
            repo.put(ctx, resource, index=index_entry, now=now,
                     extra=[number_guard(repo.table, ctx.tenant, value, order_id)],
                     detail={"category": "laboratory" if kind == LABORATORY else "imaging"}, events=announced)
            committed = True
        except Conflict as exc:
            if isinstance(exc.__cause__, TransactionConflict):
                continue  # the number was taken at the same moment: draw another
            raise
        finally:
            if not committed and undo is not None:
                undo()
        return Saved(resource, 1)
    raise Conflict("Could not assign an order number; try again")


def change_status(ctx: RequestContext, order_id: str, status: str, *, reason: str | None, if_match: int,
                  repo: ClinicalRepository, clock: Callable[[], datetime] | None = None) -> Saved:
    """Move an order along ``requested → in-process → completed``, or cancel it with a reason.

    Any other change answers 409 naming the allowed ones; who may make it depends on the order's
    category (the lab or radiology starts and completes; a physician or that department cancels).
    """
    current = repo.require(ctx, "ServiceRequest", order_id)
    check_version(current, if_match)
    before = order_status(current.resource)
    if status not in TRANSITIONS:
        raise Invalid(f"status must be one of {', '.join(TRANSITIONS)}", expression="Parameters.status")
    allowed = TRANSITIONS[before]
    if status not in allowed:
        options = ", ".join(sorted(allowed)) or "none (the order is closed)"
        raise Conflict(f"ServiceRequest/{order_id} is {before}; it can go to: {options}",
                       expression="Parameters.status")
    performer = _PERFORMER[category_of(current.resource)]
    may = {performer} | ({Role.PHYSICIAN} if status == "cancelled" else set())
    if not ctx.roles & may:
        raise Forbidden(f"Role {ctx.role_names} may not set a {CATEGORIES[category_of(current.resource)].lower()} "
                        f"order to {status}")
    if status == "cancelled" and not (reason or "").strip():
        raise Invalid("Cancelling an order needs a reason", expression="Parameters.reason")
    now = now_instant(clock)
    version = current.version + 1
    resource = stamp(_with_status(current.resource, status, reason if status == "cancelled" else None),
                     order_id, version, now)
    repo.put(ctx, resource, index=index_entry, now=now, previous=current, action=Action.OPERATION,
             detail={"operation": "$status", "status": f"{before}->{status}"},
             events=(status_changed(ctx, resource, before),))
    return Saved(resource, version, previous_status=before)


# ------------------------------------------------------------------ results close the loop ---

# Result statuses (FHIR R4 ObservationStatus / DiagnosticReportStatus) that count as final.
FINAL_RESULTS = frozenset({"final", "amended", "corrected", "appended"})


@dataclass(frozen=True)
class ResultSummary:
    """What the results domain holds for one order: index attributes of its reports and results."""

    reports: tuple[dict[str, Any], ...]
    observations: tuple[dict[str, Any], ...]


def results_complete(order: dict[str, Any], summary: ResultSummary) -> bool:
    """Whether every requested test has a final result.

    A final report based on the order declares its results complete (the laboratory groups what
    the order asked for); without one, a single-test order is complete when a final result of
    the ordered code exists. Entered-in-error results count for nothing.
    """
    if any(r.get("status") in FINAL_RESULTS for r in summary.reports):
        return True
    ordered = next((c.get("code") for c in order.get("code", {}).get("coding") or []), None)
    return any(o.get("status") in FINAL_RESULTS and o.get("code") == ordered for o in summary.observations)


def advance_with_results(ctx: RequestContext, order_id: str, *, repo: ClinicalRepository,
                         results: Callable[[RequestContext, str], ResultSummary],
                         clock: Callable[[], datetime] | None = None) -> list[Saved]:
    """Move an order along as its results arrive: ``in-process`` on the first result, ``completed``
    when :func:`results_complete`. Each move is a version, audited as done by the results service.

    Idempotent: a redelivered event finds the order already moved and changes nothing. A
    cancelled or completed order is left as it is (a late or corrected result does not reopen it).
    Raises :class:`~expediente.errors.PreconditionFailed`/``Conflict`` when the order changed at the
    same moment, so the caller retries the event.
    """
    current = repo.get(ctx, "ServiceRequest", order_id)
    if current is None or category_of(current.resource) != LABORATORY:
        return []
    status = order_status(current.resource)
    if status not in ("requested", "in-process"):
        return []
    summary = results(ctx, order_id)
    if not summary.reports and not summary.observations:
        return []
    moves = (["in-process"] if status == "requested" else []) + \
        (["completed"] if results_complete(current.resource, summary) else [])
    saved: list[Saved] = []
    for move in moves:
        before = order_status(current.resource)
        now = now_instant(clock)
        version = current.version + 1
        resource = stamp(_with_status(current.resource, move), order_id, version, now)
        repo.put(ctx, resource, index=index_entry, now=now, previous=current, action=Action.OPERATION,
                 detail={"operation": "results", "status": f"{before}->{move}"},
                 events=(status_changed(ctx, resource, before),))
        saved.append(Saved(resource, version, previous_status=before))
        current = Stored(resource, version, now)
    return saved


def start_with_images(ctx: RequestContext, order_id: str, *, repo: ClinicalRepository,
                      clock: Callable[[], datetime] | None = None) -> list[Saved]:
    """Move an imaging order to ``in-process`` when its first DICOM instance is archived.

    Idempotent like :func:`advance_with_results`: later instances, redeliveries and orders already
    in process, completed or cancelled change nothing. Completing an imaging order stays the
    radiology department's act (``$status``), once the study is read.
    """
    current = repo.get(ctx, "ServiceRequest", order_id)
    if current is None or category_of(current.resource) != IMAGING or order_status(current.resource) != "requested":
        return []
    now = now_instant(clock)
    version = current.version + 1
    resource = stamp(_with_status(current.resource, "in-process"), order_id, version, now)
    repo.put(ctx, resource, index=index_entry, now=now, previous=current, action=Action.OPERATION,
             detail={"operation": "images", "status": "requested->in-process"},
             events=(status_changed(ctx, resource, "requested"),))
    return [Saved(resource, version, previous_status="requested")]
