"""HL7 v2 messages into the record: ORU^R01 through the results rules, ADT^A04/A08 through the patients rules.

The interface applies the same domain rules as the FHIR API (``functions.results`` and
``functions.patients``, shipped in this function's asset): an HL7 result is a laboratory
Observation with the same checks, interpretation and critical-value alert; an HL7 registration
is a Patient with the same CURP validation and duplicate guard.

A message is stored whole or not at all, and once:

- every segment is mapped and checked before anything is written; any problem rejects the message
  (an :class:`~expediente.hl7v2.Hl7Error` naming the segment and field, answered ``AE``/``AR``);
- the message's key (sending application and facility, MSH-10) is claimed by a guard item written
  in the same transaction as the data (the last one when a large result message needs several):
  the same message sent again finds its guard and is acknowledged without being stored twice;
- the resources a message creates get ids derived from that key, and each version it writes is
  marked with it, so a message interrupted between two transactions is completed, not duplicated,
  when the sender retries it.

ORU^R01 profile: the order is found by its placer number (OBR-2, the number we sent in ORC-2/OBR-2
of the ORM^O01), and the patient of PID-3 (our record id with assigning authority ``EXPEDIENTE``, or
the CURP with type ``NI``/authority ``RENAPO``) must be that order's patient. OBX-3 is a LOINC code
(coding system ``LN``) of the catalogue, OBX-6 a UCUM unit; OBX-11 ``F``/``C``/``P``/``R``
(``I`` pending results are skipped; ``X`` is a result that could not be obtained; ``D``/``W`` are
refused: correct a result with ``C``). Each order group becomes or updates one DiagnosticReport
(OBR-25 its status). Timestamps without an offset are read as central Mexico time (UTC-06:00, no
daylight saving since 2022).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from expediente import aws, records
from expediente import hl7v2 as codec
from expediente.arco import RecordBlocked
from expediente.audit import Action, AuditEntry, audit_puts
from expediente.clinical import ClinicalRepository, Saved, Write
from expediente.context import RequestContext
from expediente.errors import Conflict, DomainError, Duplicate, Forbidden, PreconditionFailed, Transient
from expediente.identifiers import CURP_SYSTEM, FATHERS_FAMILY, MOTHERS_FAMILY
from expediente.index import ResourceIndex
from expediente.permissions import Interaction
from expediente.store import Stored, TransactionConflict, get_item, transact
from functions.results import diagnostic_reports, laboratory, observations
from functions.results.vital_signs import LOINC, UCUM

if TYPE_CHECKING:
    from expediente import events

OUR_AUTHORITY = codec.RECORD_AUTHORITY
DEFAULT_OFFSET = "-06:00"  # central Mexico, no daylight saving since 2022
TRANSACTION_LIMIT = 100  # elements in one TransactWriteItems
MAX_OPS = 90  # per transaction of results, leaving room for the guard, the audit record and filler numbers
MESSAGE = "MessageHeader"  # the audit record's resource type for a message
_OBX_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary", "X": "final"}
_OBR_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "partial", "I": "registered",
               "S": "registered", "A": "partial", "O": "registered"}
_FLAGS = frozenset(laboratory.INTERPRETATIONS) - {"POS", "NEG", "IND"}


@dataclass(frozen=True)
class Outcome:
    """What a message did: the ACK code, the references it wrote, the events to publish, and whether
    it was a duplicate of one already stored."""

    code: str
    written: tuple[str, ...] = ()
    events: tuple[Any, ...] = ()
    duplicate: bool = False


def message_key(header: codec.Header) -> str:
    """The message's identity: sending application, sending facility and MSH-10 control id."""
    return f"{header.sending_application}|{header.sending_facility}|{header.control_id}"


def guard_key(ctx: RequestContext, key: str) -> dict[str, str]:
    return {"pk": f"{ctx.tenant}#HL7#{key}", "sk": "GUARD"}


def _guard_put(table: str, ctx: RequestContext, key: str, written: Sequence[str]) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": aws.to_item({**guard_key(ctx, key), "written": " ".join(written)}),
                    "ConditionExpression": "attribute_not_exists(pk)"}}


def _filler_key(ctx: RequestContext, sending_facility: str, filler: str) -> dict[str, str]:
    return {"pk": f"{ctx.tenant}#HL7FILLER#{sending_facility}|{filler}", "sk": "ORDER"}


def filler_order(table: str, ctx: RequestContext, sending_facility: str, filler: str) -> str | None:
    """The order a laboratory's filler number (OBR-3) was first reported for, by that laboratory; or None.

    Remembered with the first result message that carries both numbers, so later messages (a
    correction) may name the order by the laboratory's own number alone.
    """
    item = get_item(table, _filler_key(ctx, sending_facility, filler.strip()))
    return None if item is None else str(item["rid"])


def already_stored(table: str, ctx: RequestContext, key: str) -> tuple[str, ...] | None:
    """The references a message with this key wrote, when it was stored before; None otherwise."""
    item = get_item(table, guard_key(ctx, key))
    return None if item is None else tuple(str(item.get("written", "")).split())


def derived_id(key: str, *parts: str) -> str:
    """A resource id derived from the message key: the same message always makes the same ids."""
    digest = hashlib.sha256("|".join((key, *parts)).encode()).digest()
    return "h" + base64.b32encode(digest).decode().lower().rstrip("=")[:31]


def _instant(value: str | None, *, segment: str, field: int, sequence: int | None = None) -> str | None:
    """An HL7 timestamp (already ISO) as a FHIR dateTime with time and offset (default -06:00)."""
    if not value:
        return None
    if "T" not in value:
        raise codec.Hl7Error.at("102", segment, field, f"{segment}-{field} needs the time of the result, not only "
                                f"the date ({value})", sequence=sequence or 1)
    if value.endswith("Z") or "+" in value[10:] or "-" in value[10:]:
        return value
    return value + DEFAULT_OFFSET


# ------------------------------------------------------------------ ORU^R01 ---


@dataclass(frozen=True)
class ResultsPorts:
    """What the ORU path needs from the rest of the system (injected so the rules stay testable)."""

    repo: ClinicalRepository
    load: observations.Load
    policy: observations.PolicyOf
    find_order: Callable[[RequestContext, str], str | None]  # placer number -> order id
    find_patient_by_curp: Callable[[RequestContext, str], str | None]
    # Several records at once (one BatchGetItem across tables), keyed by "Type/id"; missing ones absent.
    load_many: Callable[[RequestContext, list[records.Ref]], dict[str, dict[str, Any]]]


def _index_items(repo: ClinicalRepository, ctx: RequestContext, resource_type: str, order_id: str
                 ) -> list[dict[str, Any]]:
    index: ResourceIndex = repo.indexes[resource_type]
    items, _ = index.items(ctx.tenant, "order", order_id, limit=200, token=None, fingerprint=order_id)
    return items


def _patient_of(ctx: RequestContext, message: codec.OruMessage, ports: ResultsPorts) -> str:
    """The patient PID-3 names: our record id (authority EXPEDIENTE) first, else the CURP."""
    for identifier in message.patient.identifiers:
        if identifier.assigning_authority == OUR_AUTHORITY and identifier.type_code in ("MR", "PI", ""):
            return identifier.value
    for identifier in message.patient.identifiers:
        if identifier.type_code == "NI" or identifier.assigning_authority == "RENAPO":
            found = ports.find_patient_by_curp(ctx, identifier.value.strip().upper())
            if found:
                return found
    raise codec.Hl7Error.at("204", "PID", 3, "PID-3 names no patient of this record: send our record id "
                            f"(assigning authority {OUR_AUTHORITY}, type MR) or the CURP (type NI)")


def _domain_error(exc: DomainError, *, segment: str, sequence: int) -> codec.Hl7Error:
    """A domain rule's refusal, placed at the HL7 field it came from."""
    expression = (exc.expression or "")
    places = (("Observation.code", 3, "103"), ("Observation.valueQuantity.code", 6, "103"),
              ("Observation.valueQuantity.system", 6, "103"), ("Observation.value", 5, "102"),
              ("Observation.referenceRange", 7, "102"), ("Observation.effective", 14, "102"),
              ("Observation.status", 11, "103"), ("Observation.interpretation", 8, "103"),
              ("Observation.dataAbsentReason", 5, "102"), ("Observation.subject", 3, "204"),
              ("Observation.basedOn", 2, "204"), ("DiagnosticReport.code", 4, "103"),
              ("DiagnosticReport.result", 25, "207"), ("DiagnosticReport.status", 25, "103"),
              ("DiagnosticReport.basedOn", 2, "204"))
    for prefix, number, code in places:
        if expression.startswith(prefix):
            seg = "PID" if prefix == "Observation.subject" else \
                ("OBR" if prefix.startswith(("DiagnosticReport", "Observation.basedOn")) else segment)
            return codec.Hl7Error.at(code, seg, number, exc.message, sequence=sequence if seg == segment else 1)
    return codec.Hl7Error.at("207", segment, 1, exc.message, sequence=sequence)


def _quantity(value: Decimal, unit: str, comparator: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(value) if value != value.to_integral() else int(value),
                           "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        out["comparator"] = comparator
    return out


def _observation_body(obx: codec.OruObservation, *, patient: str, order_id: str, effective: str | None,
                      sequence: int) -> dict[str, Any]:
    code = obx.code.code_in("LN")
    if not code:
        raise codec.Hl7Error.at("103", "OBX", 3, "OBX-3 needs a LOINC code (coding system LN)", sequence=sequence)
    unit = (obx.units.code_in("UCUM") or obx.units.code) if obx.units is not None else ""
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": _OBX_STATUS[obx.status],
        "category": [{"coding": [{"system": observations.CATEGORY_SYSTEM, "code": laboratory.CATEGORY}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "basedOn": [{"reference": f"ServiceRequest/{order_id}"}],
    }
    when = _instant(obx.observed_at, segment="OBX", field=14, sequence=sequence) or effective
    if when is None:
        raise codec.Hl7Error.at("101", "OBX", 14, "OBX-14 (or OBR-7) must give when the specimen was taken",
                                sequence=sequence)
    body["effectiveDateTime"] = when
    value = obx.value
    if obx.status == "X":
        body["dataAbsentReason"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
            "text": "; ".join(obx.notes) or "El laboratorio no pudo obtener el resultado"}
    elif isinstance(value, Decimal):
        if not unit:
            raise codec.Hl7Error.at("101", "OBX", 6, "OBX-6 (UCUM unit) is required for a numeric result",
                                    sequence=sequence)
        body["valueQuantity"] = _quantity(value, unit)
    elif isinstance(value, codec.StructuredNumeric):
        if value.separator or not unit or value.comparator not in ("", "<", ">", "<=", ">="):
            raise codec.Hl7Error.at("102", "OBX", 5, "OBX-5: only a number with an optional <, >, <= or >= and a "
                                    "unit in OBX-6 is recorded from SN", sequence=sequence)
        body["valueQuantity"] = _quantity(value.number, unit, value.comparator)
    elif isinstance(value, codec.CodedValue):
        body["valueCodeableConcept"] = {"coding": [{"code": value.code, "display": value.text}], "text": value.text}
    elif isinstance(value, str):
        body["valueString"] = value
    if obx.range_low is not None or obx.range_high is not None:
        band: dict[str, Any] = {}
        if obx.range_low is not None:
            band["low"] = _quantity(obx.range_low, unit)
        if obx.range_high is not None:
            band["high"] = _quantity(obx.range_high, unit)
        body["referenceRange"] = [band]
    elif obx.reference_range:
        body["referenceRange"] = [{"text": obx.reference_range}]
    flags = [f for f in obx.abnormal_flags if f in _FLAGS]
    if flags:
        body["interpretation"] = laboratory.interpretation(flags[0])
    if obx.notes:
        body["note"] = [{"text": note} for note in obx.notes]
    return body


@dataclass
class _Plan:
    """The writes of one message, gathered before anything is stored."""

    prepared: list[observations.Prepared]
    written: list[str]
    events: list[Any]
    fillers: dict[str, str] = field(default_factory=dict)  # the lab's filler number -> our order id


def _mark(prepared: observations.Prepared, key: str) -> observations.Prepared:
    """Every version this message writes carries its key (so an interrupted message can be completed)."""
    writes = tuple(Write(w.resource_type, w.resource, w.version, w.entry, w.previous, {**w.attrs, "hl7": key})
                   for w in prepared.writes)
    return observations.Prepared(writes, prepared.extra, prepared.entry, prepared.events, prepared.alert)


def _current(repo: ClinicalRepository, ctx: RequestContext, resource_type: str, resource_id: str) -> Stored | None:
    return repo.stores[resource_type].get(ctx.tenant, resource_id)


def check_results_sender(ctx: RequestContext) -> None:
    """Raise :class:`codec.Hl7Error` (207) unless the caller's role records results (Observation and
    DiagnosticReport create); checked before anything else, a resent message's duplicate answer included."""
    for needed in ("Observation", "DiagnosticReport"):
        if not _allowed(ctx, needed):
            raise codec.Hl7Error.at("207", "MSH", 9, f"Role {ctx.role_names} may not send results (ORU^R01)",
                                    framing=True)


def plan_oru(ctx: RequestContext, message: codec.OruMessage, key: str, ports: ResultsPorts, *, now: str) -> _Plan:
    """Map and check every order group of an ORU^R01; raise :class:`codec.Hl7Error` at the first problem."""
    check_results_sender(ctx)
    repo = ports.repo
    patient = _patient_of(ctx, message, ports)
    plan = _Plan([], [], [])
    order_ids: list[str] = []
    for group_number, group in enumerate(message.orders, start=1):
        order_id = ports.find_order(ctx, group.placer_number.strip().upper()) if group.placer_number else None
        if order_id is None and group.filler_number:
            order_id = filler_order(repo.table, ctx, message.header.sending_facility, group.filler_number)
        if order_id is None:
            raise codec.Hl7Error.at("204", "OBR", 2, f"OBR-2 placer number {group.placer_number or '(empty)'!r} is "
                                    "not an order of this chain, nor is OBR-3 filler number "
                                    f"{group.filler_number or '(empty)'!r} one this laboratory reported before",
                                    sequence=group_number)
        if group.filler_number:
            plan.fillers[group.filler_number] = order_id
        order_ids.append(order_id)
    # The patient and the orders, read together once; the results rules then find them here.
    try:
        known = ports.load_many(ctx, [records.Ref("Patient", patient),
                                      *[records.Ref("ServiceRequest", o) for o in dict.fromkeys(order_ids)]])
    except RecordBlocked as exc:  # ARCO cancellation: HL7 table 0357 code 206, application record locked
        raise codec.Hl7Error.at("206", "PID", 3, exc.message) from exc
    ports = replace(ports, load=_remembering(ports.load, known))
    obx_sequence = 0
    for group_number, (group, order_id) in enumerate(zip(message.orders, order_ids, strict=True), start=1):
        order = ports.load(ctx, records.Ref("ServiceRequest", order_id))
        if order is None or records.subject_of(order) != patient:
            raise codec.Hl7Error.at("204", "PID", 3, f"The patient in PID-3 is not the patient of order "
                                    f"{group.placer_number} (OBR-2)")
        effective = _instant(group.observed_at, segment="OBR", field=7, sequence=group_number)
        existing = {str(item["code"]): item for item in _index_items(repo, ctx, "Observation", order_id)
                    if item.get("status") != "entered-in-error"}
        group_results: list[str] = []
        in_message: dict[str, dict[str, Any]] = {}
        for obx in group.observations:
            obx_sequence += 1
            if obx.status == "I":
                continue  # pending: the result comes in a later message
            if obx.status in ("D", "W"):
                raise codec.Hl7Error.at("207", "OBX", 11, "OBX-11 D/W: results are never deleted; send the "
                                        "corrected result with OBX-11 C", sequence=obx_sequence)
            body = _observation_body(obx, patient=patient, order_id=order_id, effective=effective,
                                     sequence=obx_sequence)
            code = body["code"]["coding"][0]["code"]
            try:
                prepared = _prepare_result(ctx, body, key, ports, existing.get(code), now=now,
                                           new_id=_ids(key, str(group_number), obx.set_id or str(obx_sequence), code))
            except Transient:
                raise  # a store or KMS busy: HTTP 503 + Retry-After, the sender resends (not an AE/AR refusal)
            except DomainError as exc:
                raise _domain_error(exc, segment="OBX", sequence=obx_sequence) from exc
            if prepared is None:  # already written by an interrupted earlier delivery of this message
                group_results.append(str(existing[code]["rid"]))
                continue
            plan.prepared.append(prepared)
            plan.written += [f"{w.resource_type}/{w.id}" for w in prepared.writes]
            plan.events += prepared.events
            group_results.append(prepared.resource["id"])
            in_message[prepared.resource["id"]] = prepared.resource
        results = list(dict.fromkeys(group_results + [str(i["rid"]) for i in existing.values()]))
        report = _prepare_report(ctx, group, group_number, key, order_id, patient, results, in_message, ports,
                                 now=now)
        if report is not None:
            plan.prepared.append(report)
            plan.written.append(f"DiagnosticReport/{report.resource['id']}")
            # The report's ResultRecorded tells the orders function about the whole group at once.
            plan.events = [e for e in plan.events if not (type(e).__name__ == "ResultRecorded"
                                                          and order_id in getattr(e, "order_ids", ()))]
            plan.events += report.events
    return plan


def _remembering(load: observations.Load, known: Mapping[str, dict[str, Any]]) -> observations.Load:
    """``load`` that reads each reference once (for the length of one message), starting from ``known``."""
    seen: dict[str, dict[str, Any] | None] = dict(known)

    def remembered(ctx: RequestContext, ref: records.Ref) -> dict[str, Any] | None:
        key = str(ref)
        if key not in seen:
            seen[key] = load(ctx, ref)
        return seen[key]

    return remembered


def _result_id(key: str, code: str, order_id: str) -> str:
    return derived_id(key, "result", code, order_id)


def _allowed(ctx: RequestContext, resource_type: str) -> bool:
    try:
        ctx.require(resource_type, Interaction.CREATE)
    except Forbidden:
        return False
    return True


def _ids(key: str, *parts: str) -> Callable[[], str]:
    """Ids derived from the message: the result first, then its alert."""
    counter = iter(range(1000))
    return lambda: derived_id(key, *parts, str(next(counter)))


def _prepare_result(ctx: RequestContext, body: dict[str, Any], key: str, ports: ResultsPorts,
                    existing: Mapping[str, Any] | None, *, now: str,
                    new_id: Callable[[], str]) -> observations.Prepared | None:
    """A new result, or the next version of the order's result of the same code (``existing``: its index
    item); None when this very message already wrote it (an earlier delivery was interrupted)."""
    order_id = str(body["basedOn"][0]["reference"]).split("/")[1]
    result_id = _result_id(key, body["code"]["coding"][0]["code"], order_id)
    if existing is None:  # a result's index items are written with it: not listed means not written
        prepared = observations.prepare_create(ctx, body, repo=ports.repo, load=ports.load,
                                               new_id=_first(result_id, new_id), policy=ports.policy, now=now)
        return _mark(prepared, key)
    if str(existing["rid"]) == result_id:
        return None  # created by this message
    stored = _current(ports.repo, ctx, "Observation", str(existing["rid"]))
    if stored is None:
        raise Conflict("A result of this order changed at the same time; send the message again")
    if stored.attrs.get("hl7") == key:
        return None
    return _next_version(ctx, stored, body, key, ports, now, new_id)


def _next_version(ctx: RequestContext, stored: Stored, body: dict[str, Any], key: str, ports: ResultsPorts,
                  now: str, new_id: Callable[[], str]) -> observations.Prepared:
    if stored.resource["status"] in ("final", "amended", "corrected") and body["status"] == "final":
        raise codec.Hl7Error.at("207", "OBX", 11, f"{stored.resource['code']['coding'][0]['code']} already has a "
                                "final result for this order: send a correction with OBX-11 C")
    prepared = observations.prepare_update(ctx, Saved(stored.resource, stored.version),
                                           {**body, "id": stored.resource["id"]}, repo=ports.repo, load=ports.load,
                                           new_id=new_id, policy=ports.policy, now=now)
    return _mark(prepared, key)


def _first(first: str, then: Callable[[], str]) -> Callable[[], str]:
    used = [False]

    def next_id() -> str:
        if not used[0]:
            used[0] = True
            return first
        return then()

    return next_id


def _prepare_report(ctx: RequestContext, group: codec.OruOrder, group_number: int, key: str, order_id: str,
                    patient: str, results: list[str], in_message: dict[str, dict[str, Any]], ports: ResultsPorts,
                    *, now: str) -> observations.Prepared | None:
    """The order's DiagnosticReport, created or moved to the status OBR-25 gives."""
    statuses = {r.get("status") for r in in_message.values()}
    derived = "preliminary"
    if statuses and statuses <= {"final", "corrected"}:
        derived = "corrected" if "corrected" in statuses else "final"
    status = _OBR_STATUS.get(group.result_status) if group.result_status else derived
    if status is None:
        raise codec.Hl7Error.at("103", "OBR", 25, f"OBR-25 result status {group.result_status!r} is not one of "
                                f"{', '.join(sorted(_OBR_STATUS))}", sequence=group_number)
    code = group.service.code_in("LN")
    order = ports.load(ctx, records.Ref("ServiceRequest", order_id)) or {}
    code = code or laboratory.order_code(order)
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "basedOn": [{"reference": f"ServiceRequest/{order_id}"}],
        "result": [{"reference": f"Observation/{r}"} for r in results],
    }
    if group.filler_number:
        body["identifier"] = [{"system": f"urn:expediente:hl7:filler:{ctx.tenant}", "value": group.filler_number}]
    if group.notes:
        body["conclusion"] = "\n".join(group.notes)

    def load_results(c: RequestContext, ids: list[str]) -> dict[str, dict[str, Any]]:
        others = [i for i in ids if i not in in_message]
        stored = {s.resource["id"]: s.resource for s in ports.repo.get_many(c, "Observation", others)} \
            if others else {}
        return {**stored, **in_message}

    existing = _index_items(ports.repo, ctx, "DiagnosticReport", order_id)
    try:
        if not existing:
            prepared = diagnostic_reports.prepare_create(ctx, body, load=ports.load, load_results=load_results,
                                                         new_id=lambda: derived_id(key, "report", order_id),
                                                         now=now)
            return _mark(prepared, key)
        stored = _current(ports.repo, ctx, "DiagnosticReport", str(existing[0]["rid"]))
        if stored is None or stored.attrs.get("hl7") == key:
            return None
        if stored.resource["status"] in diagnostic_reports.FINAL and status == "final":
            body["status"] = "amended"  # a final report that changes after it was final is amended
        if stored.resource["status"] == body["status"] and \
                [r["reference"] for r in stored.resource.get("result") or []] == \
                [r["reference"] for r in body["result"]]:
            return None  # nothing new for the report
        prepared = diagnostic_reports.prepare_update(ctx, Saved(stored.resource, stored.version),
                                                     {**body, "id": stored.resource["id"]}, load=ports.load,
                                                     load_results=load_results, now=now)
        return _mark(prepared, key)
    except Transient:
        raise  # 503 + Retry-After: nothing was refused, the sender resends
    except DomainError as exc:
        raise _domain_error(exc, segment="OBR", sequence=group_number) from exc


def store_oru(ctx: RequestContext, plan: _Plan, key: str, *, repo: ClinicalRepository, now: str,
              patient: str | None) -> Outcome:
    """Write the plan: results in transactions of at most :data:`MAX_OPS` elements, the last one with the
    message guard and the audit record. Raises :class:`Duplicate` when the guard was claimed meanwhile."""
    groups: list[list[dict[str, Any]]] = []
    for prepared in plan.prepared:
        ops: list[dict[str, Any]] = []
        for write in prepared.writes:
            ops += repo.write_ops(ctx, write, now=now)
        ops += list(prepared.extra)
        groups.append(ops)
    chunks: list[list[dict[str, Any]]] = [[]]
    for ops in groups:
        if chunks[-1] and len(chunks[-1]) + len(ops) > MAX_OPS:
            chunks.append([])
        chunks[-1] += ops
    patients = tuple(sorted({records.subject_of(p.resource) or "" for p in plan.prepared} | ({patient} if patient
                                                                                               else set())))
    entry = AuditEntry(MESSAGE, Action.CREATE, key.split("|")[-1], tuple(p for p in patients if p), 201,
                       detail={"message": "ORU^R01", "written": " ".join(plan.written)})
    sender = key.split("|")[1]
    closing = [_guard_put(repo.table, ctx, key, plan.written), *audit_puts(ctx, entry),
               *[{"Put": {"TableName": repo.table, "Item": aws.to_item({**_filler_key(ctx, sender, filler),
                                                                        "rid": order_id})}}
                 for filler, order_id in plan.fillers.items()]]
    # The events go to the outbox with the message guard, in the last transaction (decision 0028): they are
    # announced exactly when the whole message is stored.
    if chunks[-1] and len(chunks[-1]) + len(closing) + len(plan.events) > TRANSACTION_LIMIT:
        chunks.append([])
    chunks[-1] += closing
    for index, chunk in enumerate(chunks):
        try:
            transact(chunk, events=tuple(plan.events) if index == len(chunks) - 1 else ())
        except TransactionConflict as exc:
            if index == len(chunks) - 1 and already_stored(repo.table, ctx, key) is not None:
                raise Duplicate("This message was stored by another delivery at the same moment") from exc
            raise Conflict("A result of this message changed at the same time; send the message again") from exc
    return Outcome("AA", tuple(plan.written), tuple(plan.events))


# ------------------------------------------------------------------ ADT^A04 / ADT^A08 ---


@dataclass(frozen=True)
class PatientsPorts:
    repo: Any  # functions.patients.repository.PatientRepository
    create: Callable[..., Any]  # functions.patients.logic.create
    update: Callable[..., Any]  # functions.patients.logic.update


def patient_body(adt: codec.AdtMessage, *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The FHIR Patient an ADT describes (on top of ``base``, the stored record, for an A08)."""
    person = adt.patient
    body: dict[str, Any] = dict(base or {"resourceType": "Patient"})
    family_ext = [{"url": FATHERS_FAMILY, "valueString": person.first_surname}]
    if person.second_surname:
        family_ext.append({"url": MOTHERS_FAMILY, "valueString": person.second_surname})
    body["name"] = [{"use": "official", "family": " ".join(person.family_names), "given": person.given,
                     "_family": {"extension": family_ext}}]
    body["birthDate"] = person.birth_date
    body["gender"] = person.sex
    identifiers = [i for i in body.get("identifier") or [] if i.get("system") != CURP_SYSTEM]
    curps = [i.value.strip().upper() for i in person.identifiers if i.type_code == "NI" or i.assigning_authority
             == "RENAPO"]
    if curps:
        identifiers.insert(0, {"system": CURP_SYSTEM, "value": curps[0]})
    elif base is not None:
        identifiers = list(body.get("identifier") or [])
    body["identifier"] = identifiers
    if person.address is not None:
        address = person.address
        fhir_address: dict[str, Any] = {"use": "home"}
        for element, value in (("city", address.city), ("state", address.state), ("district", address.district),
                               ("postalCode", address.postal_code), ("country", address.country)):
            if value:
                fhir_address[element] = value
        lines = [x for x in (address.street, address.other_designation) if x]
        if lines:
            fhir_address["line"] = lines
        body["address"] = [fhir_address]
    if person.phone:
        body["telecom"] = [{"system": "phone", "value": person.phone, "use": "home"}]
    return body


_PATIENT_PLACES = (("Patient.identifier", "identifier"), ("Patient.extension(birthPlace)", "identifier"),
                   ("Patient.name[0].given", "given"), ("Patient.name", "family"), ("Patient.birthDate", "birthDate"),
                   ("Patient.gender", "gender"), ("Patient.address[0].state", "address.state"),
                   ("Patient.address[0].district", "address.district"), ("Patient.address", "address"),
                   ("Patient.telecom", "telecom"))


def _patient_error(adt: codec.AdtMessage, exc: DomainError) -> codec.Hl7Error:
    expression = exc.expression or ""
    code = "205" if isinstance(exc, Duplicate) else "102"
    for prefix, place in _PATIENT_PLACES:
        if expression.startswith(prefix):
            return adt.error_at(place, code, exc.message)
    return codec.Hl7Error.at(code if code == "205" else "207", "PID", 3 if code == "205" else 1, exc.message)


def _find_patient(ctx: RequestContext, adt: codec.AdtMessage, ports: PatientsPorts) -> str | None:
    for identifier in adt.patient.identifiers:
        if identifier.assigning_authority == OUR_AUTHORITY:
            return identifier.value
    for identifier in adt.patient.identifiers:
        if identifier.type_code == "NI" or identifier.assigning_authority == "RENAPO":
            found = ports.repo.find_by_curp(ctx, identifier.value.strip().upper())
            if found:
                return str(found)
    return None


def ingest_adt(ctx: RequestContext, adt: codec.AdtMessage, key: str, ports: PatientsPorts) -> Outcome:
    """Register (A04) or update (A08) the patient through the patients rules, with the message guard."""
    from expediente import events

    table = ports.repo.table
    guard = [_guard_put(table, ctx, key, ())]
    try:
        if adt.event == "A04":
            ctx.require("Patient", Interaction.CREATE)
            saved = ports.create(ctx, patient_body(adt), repo=ports.repo, extra=guard)
            resource = saved.resource
            event: events.DomainEvent = events.PatientRegistered(
                tenant_id=ctx.tenant, patient_id=resource["id"], request_id=ctx.request_id,
                has_curp=any(i["system"] == CURP_SYSTEM for i in resource["identifier"]))
        else:
            ctx.require("Patient", Interaction.UPDATE)
            patient_id = _find_patient(ctx, adt, ports)
            current = ports.repo.get(ctx, patient_id) if patient_id else None
            if current is None:
                raise codec.Hl7Error.at("204", "PID", 3, "PID-3 names no patient of this record (A08 updates a "
                                        "registered patient; register with A04)")
            body = patient_body(adt, base=current.resource)
            saved = ports.update(ctx, current.resource["id"], body, if_match=current.version, repo=ports.repo,
                                 extra=guard)
            resource = saved.resource
            event = events.PatientUpdated(tenant_id=ctx.tenant, patient_id=resource["id"], version=saved.version,
                                          request_id=ctx.request_id)
    except Forbidden as exc:
        raise codec.Hl7Error.at("207", "MSH", 9, f"{exc.message} (ADT^{adt.event})", framing=True) from exc
    except (Duplicate, PreconditionFailed, Conflict) as exc:
        if already_stored(table, ctx, key) is not None:
            return Outcome("AA", duplicate=True)
        if isinstance(exc, Duplicate):
            raise _patient_error(adt, exc) from exc
        raise codec.Hl7Error.at("206", "PID", 3, "The patient record changed at the same time; send the "
                                "message again") from exc
    except Transient:
        raise  # 503 + Retry-After: nothing was refused, the sender resends
    except DomainError as exc:
        raise _patient_error(adt, exc) from exc
    return Outcome("AA", (f"Patient/{resource['id']}",), (event,))


def events_of(outcomes: Iterable[Outcome]) -> list[Any]:
    return [e for o in outcomes for e in o.events]
