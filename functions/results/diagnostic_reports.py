"""Laboratory reports (``DiagnosticReport``): the results of an order, grouped, concluded and printable.

A report names its patient, the laboratory orders it answers (``basedOn``) and the laboratory
Observations it groups (``result``); each must be the patient's. Its code is a LOINC test or panel
of the catalogue (usually the order's). A ``final`` report only groups results that are final
(or corrected/amended): the laboratory declares the order's results complete, and the orders
function then completes the order. Like every clinical record it is versioned: a final report
changes only as ``amended``/``corrected``/``appended`` (or ``entered-in-error``), and the earlier
versions stay readable (NOM-004 5.11).

The server sets ``issued``, adds the printable form to ``presentedForm`` (a link to
``$print``, HTML or PDF, with a small trend chart per abnormal test) and keeps any form the
laboratory sent. Pure domain code: collaborators come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from expediente import loinc, records
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, Write, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry

from . import laboratory
from .observations import Load, Prepared, Recorded, order_ids, sort_instant
from .vital_signs import loinc_code

if TYPE_CHECKING:
    from expediente import events

REPORT = "DiagnosticReport"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
LAB = {"coding": [{"system": V2_0074, "code": "LAB", "display": "Laboratory"}], "text": "Laboratorio"}
INITIAL = frozenset({"registered", "partial", "preliminary", "final"})
_OPEN = frozenset({"registered", "partial", "preliminary", "final", "entered-in-error"})
_CHANGED = frozenset({"amended", "corrected", "appended", "entered-in-error"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": _OPEN,
    "partial": _OPEN,
    "preliminary": _OPEN,
    "final": _CHANGED,
    "amended": _CHANGED,
    "corrected": _CHANGED,
    "appended": _CHANGED,
    "entered-in-error": frozenset(),
}
FINAL = frozenset({"final", "amended", "corrected", "appended"})
RESULT_FINAL = frozenset({"final", "amended", "corrected"})

SEARCH = SearchSpec(
    resource_type=REPORT,
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter", "based-on": "order"},
    filters={"status": "status", "code": "code", "category": "category"},
    date="date",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter", "based-on": "ServiceRequest",
                "result": "Observation"},
)


def code_of(resource: dict[str, Any]) -> str:
    return str(resource["code"]["coding"][0]["code"])


def index_entry(resource: dict[str, Any]) -> Entry:
    encounter = str((resource.get("encounter") or {}).get("reference", "")).removeprefix("Encounter/")
    patient = records.subject_of(resource) or ""
    return Entry(sort=sort_instant(resource["effectiveDateTime"]),
                 facets={"patient": (patient,), "encounter": (encounter,), "order": order_ids(resource)},
                 attrs={"status": resource["status"], "code": code_of(resource), "category": "LAB",
                        "patient": patient, "encounter": encounter})


def result_ids(resource: dict[str, Any]) -> list[str]:
    return [str(r["reference"]).split("/")[1] for r in resource.get("result") or []]


def _normalize(body: dict[str, Any], *, now: str) -> dict[str, Any]:
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text", "issued")}
    resource["resourceType"] = REPORT
    validate(REPORT, resource)
    if resource["status"] not in TRANSITIONS:
        raise Invalid(f"DiagnosticReport.status must be one of {', '.join(TRANSITIONS)}",
                      expression="DiagnosticReport.status")
    records.parse((resource.get("subject") or {}).get("reference"), where="DiagnosticReport.subject",
                  types=("Patient",))
    code, index = loinc_code(resource.get("code"), "DiagnosticReport.code")
    test = loinc.lab_test(code, where=f"DiagnosticReport.code.coding[{index}].code")
    others = [c for c in resource["code"].get("coding") or [] if c.get("system") != loinc.SYSTEM]
    resource["code"] = {**resource["code"], "coding": [test.coding(), *others]}
    resource["code"].setdefault("text", test.display)
    resource["category"] = [LAB, *[c for c in resource.get("category") or []
                                   if not any(x.get("system") == V2_0074 for x in c.get("coding") or [])]]
    others_effective = sorted(e for e in resource if e.startswith("effective") and e != "effectiveDateTime")
    if others_effective:
        raise Invalid(f"DiagnosticReport.{others_effective[0]} is not accepted: give effectiveDateTime",
                      expression=f"DiagnosticReport.{others_effective[0]}")
    for i, ref in enumerate(resource.get("result") or []):
        records.parse(ref.get("reference"), where=f"DiagnosticReport.result[{i}]", types=("Observation",))
    for i, ref in enumerate(resource.get("basedOn") or []):
        records.parse(ref.get("reference"), where=f"DiagnosticReport.basedOn[{i}]", types=("ServiceRequest",))
    resource["issued"] = now
    return resource


def _check(ctx: RequestContext, resource: dict[str, Any], load: Load,
           load_results: Callable[[RequestContext, list[str]], dict[str, dict[str, Any]]]) -> str:
    """Patient, orders and results belong together; a final report groups final results only."""
    patient_id = records.subject_of(resource) or ""
    if load(ctx, records.Ref("Patient", patient_id)) is None:
        raise Unprocessable(f"DiagnosticReport.subject: Patient/{patient_id} does not exist",
                            expression="DiagnosticReport.subject")
    if resource.get("encounter"):
        ref = records.parse(resource["encounter"].get("reference"), where="DiagnosticReport.encounter",
                            types=("Encounter",))
        encounter = load(ctx, ref)
        if encounter is None or records.subject_of(encounter) != patient_id:
            raise Unprocessable(f"DiagnosticReport.encounter: {ref} is not an encounter of this patient",
                                expression="DiagnosticReport.encounter")
    for i, order_id in enumerate(order_ids(resource)):
        where = f"DiagnosticReport.basedOn[{i}]"
        order = load(ctx, records.Ref("ServiceRequest", order_id))
        if order is None or records.subject_of(order) != patient_id:
            raise Unprocessable(f"{where}: ServiceRequest/{order_id} is not an order of this patient",
                                expression=where)
        if not laboratory.is_lab_order(order):
            raise Unprocessable(f"{where}: ServiceRequest/{order_id} is not a laboratory order", expression=where)
        if laboratory.order_status(order) == "cancelled":
            raise Unprocessable(f"{where}: ServiceRequest/{order_id} was cancelled", expression=where)
    ids = result_ids(resource)
    found = load_results(ctx, ids)
    for i, observation_id in enumerate(ids):
        where = f"DiagnosticReport.result[{i}]"
        observation = found.get(observation_id)
        if observation is None or records.subject_of(observation) != patient_id:
            raise Unprocessable(f"{where}: Observation/{observation_id} is not a result of this patient",
                                expression=where)
        if not any(c.get("code") == laboratory.CATEGORY for cat in observation.get("category") or []
                   for c in cat.get("coding") or []):
            raise Unprocessable(f"{where}: Observation/{observation_id} is not a laboratory result",
                                expression=where)
        if resource["status"] in FINAL and observation["status"] not in RESULT_FINAL | {"entered-in-error"}:
            raise Unprocessable(f"{where}: Observation/{observation_id} is {observation['status']}; a "
                                f"{resource['status']} report groups final results only", expression=where)
    if resource["status"] in FINAL and not ids and not resource.get("presentedForm") \
            and not resource.get("conclusion"):
        raise Unprocessable("A final DiagnosticReport needs its results, a conclusion or a presented form",
                            expression="DiagnosticReport.result")
    if "effectiveDateTime" not in resource:
        times = [found[i]["effectiveDateTime"] for i in ids if i in found]
        resource["effectiveDateTime"] = max(times, key=sort_instant) if times else resource["issued"]
    return patient_id


def _with_print_form(resource: dict[str, Any]) -> dict[str, Any]:
    """The printable report linked in ``presentedForm`` (kept once; forms the lab sent stay)."""
    url = f"DiagnosticReport/{resource['id']}/$print"
    forms = [f for f in resource.get("presentedForm") or [] if not str(f.get("url", "")).startswith(url)]
    forms += [{"contentType": "application/pdf", "url": f"{url}?_format=pdf", "title": "Informe de laboratorio (PDF)"},
              {"contentType": "text/html", "url": f"{url}?_format=html", "title": "Informe de laboratorio (HTML)"}]
    return {**resource, "presentedForm": forms}


def _prepare(ctx: RequestContext, resource: dict[str, Any], patient_id: str, *, previous: Saved | None,
             detail: dict[str, str] | None) -> Prepared:
    resource = _with_print_form(resource)
    validate(REPORT, resource)
    version = int(resource["meta"]["versionId"])
    write = Write(REPORT, resource, version, index_entry(resource),
                  previous=index_entry(previous.resource) if previous is not None else None)
    entry = AuditEntry(REPORT, Action.CREATE if previous is None else Action.UPDATE, resource["id"], (patient_id,),
                       201 if previous is None else 200, detail=detail or {})
    published: tuple[events.DomainEvent, ...] = ()
    if order_ids(resource):
        from expediente import events

        published = (events.ResultRecorded(
            tenant_id=ctx.tenant, request_id=ctx.request_id, resource_type=REPORT, resource_id=resource["id"],
            version=version, patient_id=patient_id, status=resource["status"],
            order_ids=list(order_ids(resource))),)
    return Prepared((write,), (), entry, published, None)


def _commit(ctx: RequestContext, prepared: Prepared, *, repo: ClinicalRepository, now: str) -> Recorded:
    repo.save(ctx, list(prepared.writes), now=now, entry=prepared.entry,
              events=prepared.events)  # in the outbox with the report (decision 0028)
    return Recorded(Saved(prepared.resource, prepared.version), prepared.events)


LoadResults = Callable[[RequestContext, list[str]], dict[str, dict[str, Any]]]


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository, load: Load,
           load_results: LoadResults, new_id: Callable[[], str],
           clock: Callable[[], datetime] | None = None) -> Recorded:
    """Store a new report (registered, partial, preliminary or final). 400/422 name the element."""
    now = now_instant(clock)
    prepared = prepare_create(ctx, body, load=load, load_results=load_results, new_id=new_id, now=now)
    return _commit(ctx, prepared, repo=repo, now=now)


def prepare_create(ctx: RequestContext, body: dict[str, Any], *, load: Load, load_results: LoadResults,
                   new_id: Callable[[], str], now: str) -> Prepared:
    """A new report checked and ready to store."""
    resource = _normalize(body, now=now)
    if resource["status"] not in INITIAL:
        raise Unprocessable(f"A new DiagnosticReport is {', '.join(sorted(INITIAL))}; not {resource['status']}",
                            expression="DiagnosticReport.status")
    if ctx.practitioner_id and not resource.get("performer"):
        resource["performer"] = [{"reference": f"Practitioner/{ctx.practitioner_id}"}]
    patient_id = _check(ctx, resource, load, load_results)
    resource = stamp(resource, new_id(), 1, now)
    return _prepare(ctx, resource, patient_id, previous=None, detail=None)


def update(ctx: RequestContext, report_id: str, body: dict[str, Any], *, if_match: int, repo: ClinicalRepository,
           load: Load, load_results: LoadResults, clock: Callable[[], datetime] | None = None) -> Recorded:
    """:func:`prepare_update` of the current version (412 unless it is ``if_match``), stored."""
    current = repo.for_update(ctx, REPORT, report_id, body, if_match=if_match)
    now = now_instant(clock)
    prepared = prepare_update(ctx, Saved(current.resource, current.version), body, load=load,
                              load_results=load_results, now=now)
    return _commit(ctx, prepared, repo=repo, now=now)


def prepare_update(ctx: RequestContext, current: Saved, body: dict[str, Any], *, load: Load,
                   load_results: LoadResults, now: str) -> Prepared:
    """A new version. Patient, code and orders never change; a final report changes only as amended,
    corrected or appended (422 naming the allowed statuses)."""
    before, report_id = current.resource, current.resource["id"]
    resource = _normalize(body, now=now)
    if records.subject_of(resource) != records.subject_of(before):
        raise Unprocessable("DiagnosticReport.subject cannot change", expression="DiagnosticReport.subject")
    if code_of(resource) != code_of(before):
        raise Unprocessable(f"DiagnosticReport.code cannot change (it is {code_of(before)})",
                            expression="DiagnosticReport.code")
    if set(order_ids(resource)) != set(order_ids(before)):
        raise Unprocessable("DiagnosticReport.basedOn cannot change", expression="DiagnosticReport.basedOn")
    old, new = before["status"], resource["status"]
    if new not in TRANSITIONS[old]:
        options = ", ".join(sorted(TRANSITIONS[old])) or "none (it was entered in error)"
        raise Unprocessable(f"A DiagnosticReport that is {old} can be saved as: {options}; not {new}",
                            expression="DiagnosticReport.status")
    if before.get("performer") and not resource.get("performer"):
        resource["performer"] = before["performer"]
    patient_id = _check(ctx, resource, load, load_results)
    resource = stamp(resource, report_id, current.version + 1, now)
    return _prepare(ctx, resource, patient_id, previous=current,
                    detail={"status": f"{old}->{new}"} if old != new else None)
