"""Results figures: HL7 v2 ORU^R01 ingest rate against parse-only, and what critical-value detection costs.

1. ORU^R01 ingest: ``POST /hl7v2`` handled in this process (one core), one message per request, each
   the results of one laboratory order (a basic panel of three tests: potassium, sodium, glucose), all
   the way — parse, check, map to FHIR through the results rules, store (results, report, message
   guard, audit record in one transaction), publish. DynamoDB is a dynalite engine (moto's ``Query``
   walks the whole table, see ``search_scale``); KMS, S3 and EventBridge are moto. Reported:
   messages per second, and the ratio to the time the same messages take to split, parse and read
   (python-hl7 and our profile checks) without storing anything.
2. Critical-value detection: ``POST /fhir/Observation`` of a laboratory result (in range), p50 with
   the detection as shipped (tenant policy, limit check, interpretation) against the same request
   with detection switched off, alternating; then the p50 of storing a critical result (which
   also writes its alert in the same transaction) for reference.

Patients are registered through the patients function; encounters and orders are written with their
repositories' own items (what the notes and orders functions write), so the measured path starts at
the interface.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from typing import Any

from benchmarks.harness import TENANT, world
from tests.support.aws import LambdaContext, User, api_event

CLUES = "HGIMB000151"
ER7 = "x-application/hl7-v2+er7"


def _patient(reception: User, n: int) -> str:
    from functions.patients.handler import lambda_handler
    from tests.integration.patients.conftest import patient_body
    from tests.support.curp import make_curp

    consonants = "BCDFGHKLMN"
    curp = make_curp(consonants=consonants[n % 10] + consonants[n // 10 % 10] + consonants[n // 100 % 10])
    response = lambda_handler(api_event("POST", "/fhir/Patient", user=reception, body=patient_body(curp)),
                              LambdaContext())
    assert response["statusCode"] == 201, response["body"]
    return str(json.loads(response["body"])["id"])


def _visit_and_orders(ctx: Any, patient: str, count: int, start: int) -> list[tuple[str, str]]:
    """An open encounter and ``count`` lab orders for the patient; returns (order id, placer number)."""
    from expediente.clinical import Write, stamp
    from functions.notes import encounters
    from functions.notes.repository import repository as notes_repository
    from functions.orders import logic
    from functions.orders.repository import number_guard
    from functions.orders.repository import repository as orders_repository

    now = "2026-11-25T07:00:00.000Z"
    encounter = stamp({"resourceType": "Encounter", "status": "in-progress",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                       "subject": {"reference": f"Patient/{patient}"},
                       "serviceProvider": {"identifier": {"system": "urn:oid:2.16.484.101.10.1", "value": CLUES}},
                       "period": {"start": now}}, f"benchenc{start:06d}", 1, now)
    notes = notes_repository()
    notes.save(ctx, [Write("Encounter", encounter, 1, encounters.index_entry(encounter))], now=now,
               entry=_entry("Encounter", encounter["id"], patient))
    orders = orders_repository()
    placed = []
    for n in range(start, start + count):
        number = f"L2026{n:011d}"
        order = stamp(logic._with_status({
            "resourceType": "ServiceRequest", "intent": "order", "priority": "routine", "authoredOn": now,
            "category": [{"coding": [{"system": logic.SNOMED, "code": logic.LABORATORY}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
            "subject": {"reference": f"Patient/{patient}"}, "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "requester": {"reference": "Practitioner/benchdoctor"},
            "identifier": [{"system": logic.PLACER_SYSTEM, "value": number}],
            "extension": [{"url": f"{logic.EXT}/clues", "valueString": CLUES}],
        }, "requested"), f"benchorder{n:08d}", 1, now)
        orders.save(ctx, [Write("ServiceRequest", order, 1, logic.index_entry(order))], now=now,
                    extra=[number_guard(orders.table, ctx.tenant, number, order["id"])],
                    entry=_entry("ServiceRequest", order["id"], patient))
        placed.append((order["id"], number))
    return placed


def _entry(resource_type: str, resource_id: str, patient: str) -> Any:
    from expediente.audit import Action, AuditEntry

    return AuditEntry(resource_type, Action.CREATE, resource_id, (patient,), 201)


def _oru(patient: str, placer: str, n: int, potassium: str = "4.2") -> str:
    lines = [
        r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|" + CLUES + f"|20261125143000-0600||ORU^R01^ORU_R01|BENCH{n:08d}|P|"
        "2.5.1",
        f"PID|1||{patient}^^^EXPEDIENTE^MR||PÉREZ GÓMEZ^JUAN||19800101|M",
        f"ORC|RE|{placer}|F{n:08d}||CM",
        f"OBR|1|{placer}|F{n:08d}|24323-8^Comprehensive metabolic panel^LN|||20261125080000-0600||||||||||||||||||F",
        f"OBX|1|NM|2823-3^Potassium^LN||{potassium}|mmol/L^^UCUM|3.5-5.1||||F|||20261125080000-0600",
        "OBX|2|NM|2951-2^Sodium^LN||139|mmol/L^^UCUM|136-145||||F|||20261125080000-0600",
        "OBX|3|NM|2345-7^Glucose^LN||182|mg/dL^^UCUM|70-99|H|||F|||20261125080000-0600",
    ]
    return "\r".join(lines) + "\r"


@contextmanager
def _aws_time() -> Any:
    """Time spent inside botocore API calls (moto answers them in this process), and how many."""
    from botocore.client import BaseClient

    spent: dict[str, float] = {"seconds": 0.0, "calls": 0}
    original = BaseClient._make_api_call

    def timed(self: Any, operation: str, params: Any) -> Any:
        begun = time.perf_counter()
        try:
            return original(self, operation, params)
        finally:
            spent["seconds"] += time.perf_counter() - begun
            spent["calls"] += 1

    BaseClient._make_api_call = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


@contextmanager
def _embedded() -> Any:
    with world():
        yield


def _setup(messages: int) -> tuple[User, list[tuple[str, str, str]]]:
    """Patients, encounters and orders; returns the lab user and (patient, order id, placer) per message."""
    from expediente.context import context_from_event

    reception = User(tenant=TENANT, role="reception", clinic_ids=(CLUES,))
    lab = User(tenant=TENANT, role="lab", clinic_ids=(CLUES,), practitioner_id="benchchemist")
    ctx = context_from_event(api_event("POST", "/fhir/ServiceRequest", user=User(
        tenant=TENANT, role="physician", clinic_ids=(CLUES,), practitioner_id="benchdoctor")))
    per_patient = 20
    targets: list[tuple[str, str, str]] = []
    for p in range((messages + per_patient - 1) // per_patient):
        patient = _patient(reception, p)
        for order_id, placer in _visit_and_orders(ctx, patient, per_patient, p * per_patient):
            targets.append((patient, order_id, placer))
    return lab, targets[:messages]


def hl7_ingest(*, messages: int) -> str:
    from expediente import hl7v2
    from functions.hl7v2.handler import lambda_handler

    with _embedded():
        lab, targets = _setup(messages + 10)
        texts = [_oru(patient, placer, n) for n, (patient, _, placer) in enumerate(targets)]

        def post(text: str) -> None:
            response = lambda_handler(api_event("POST", "/hl7v2", user=lab, body=text,
                                                headers={"Content-Type": ER7}), LambdaContext())
            assert response["statusCode"] == 200 and "MSA|AA" in response["body"], response["body"]

        for text in texts[:10]:  # warm: first imports, data keys, policy cache
            post(text)
        measured = texts[10:]
        with _aws_time() as aws_time:
            started = time.perf_counter()
            for text in measured:
                post(text)
            ingest = time.perf_counter() - started

        def parse_only() -> float:
            begun = time.perf_counter()
            for text in measured:
                for one in hl7v2.split(text):
                    hl7v2.read(hl7v2.parse(one))
            return time.perf_counter() - begun

        parse = statistics.median(parse_only() for _ in range(5))
        again = lambda_handler(api_event("POST", "/hl7v2", user=lab, body=measured[0],
                                         headers={"Content-Type": ER7}), LambdaContext())
        assert "MSA|AA" in again["body"]
    rate = len(measured) / ingest
    ours = ingest - aws_time["seconds"]
    per_message_calls = aws_time["calls"] / len(measured)
    return "\n".join([
        f"### HL7 v2 ORU^R01 ingest ({len(measured)} messages, one order of three results each, one request "
        "per message, in process)",
        "",
        "| step | total | per message | messages/s |",
        "|---|---|---|---|",
        f"| split + parse + read (python-hl7 and the profile checks) | {parse * 1000:.0f} ms | "
        f"{parse / len(measured) * 1000:.2f} ms | {len(measured) / parse:,.0f} |",
        f"| `POST /hl7v2`: parse, check, map, store, ACK, publish | {ingest * 1000:.0f} ms | "
        f"{ingest / len(measured) * 1000:.2f} ms | {rate:,.0f} |",
        f"| of which outside the AWS calls (our code) | {ours * 1000:.0f} ms | {ours / len(measured) * 1000:.2f} ms | "
        f"{len(measured) / ours:,.0f} |",
        f"| of which inside the {per_message_calls:.1f} AWS calls per message (moto, in process) | "
        f"{aws_time['seconds'] * 1000:.0f} ms | {aws_time['seconds'] / len(measured) * 1000:.2f} ms | |",
        "",
        f"Ratio to parse-only: **{ingest / parse:.1f}**. Target (orders and results issue): at least 200 messages/s: "
        f"{'met' if rate >= 200 else 'not met'} ({rate:.0f}/s end to end; {len(measured) / ours:.0f}/s counting only "
        "the time outside the AWS calls). Per message the interface reads the guard of its MSH-10 and the order's "
        "placer number, then the order and the patient together (one `BatchGetItem`), the order's results and "
        "report (two index `Query`s), and writes one `TransactWriteItems` (three results, their index items, the "
        "report, the guard, the audit record) and one `PutEvents`: seven calls, which moto answers in this same "
        "process at a few milliseconds each (`TransactWriteItems` and `PutEvents` cost the most), so the embedded "
        "AWS, not the interface, sets the ""end-to-end rate.",
    ])


def critical_overhead(*, results: int) -> str:
    from functions.results import critical
    from functions.results.handler import lambda_handler

    with _embedded():
        lab, targets = _setup(20)
        patient = targets[0][0]

        def body(value: float) -> dict[str, Any]:
            return {"resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                              "code": "laboratory"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
                    "subject": {"reference": f"Patient/{patient}"},
                    "effectiveDateTime": "2026-11-25T08:00:00-06:00",
                    "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                      "code": "mmol/L"},
                    "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                                "code": "mmol/L"},
                                        "high": {"value": 5.1, "unit": "mmol/L",
                                                 "system": "http://unitsofmeasure.org", "code": "mmol/L"}}]}

        def store(value: float) -> float:
            event = api_event("POST", "/fhir/Observation", user=lab, body=body(value))
            started = time.perf_counter()
            response = lambda_handler(event, LambdaContext())
            elapsed = time.perf_counter() - started
            assert response["statusCode"] == 201, response["body"]
            return elapsed

        original = critical.judge
        timings: dict[str, list[float]] = {"with": [], "without": [], "critical": []}
        for _ in range(10):
            store(4.2)
        for _ in range(results):
            timings["with"].append(store(4.2))
            critical.judge = lambda resource, policy: None  # type: ignore[assignment]
            try:
                timings["without"].append(store(4.2))
            finally:
                critical.judge = original  # type: ignore[assignment]
        for _ in range(max(10, results // 5)):
            timings["critical"].append(store(7.0))
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    overhead = p50["with"] / p50["without"] - 1
    return "\n".join([
        f"### Critical-value detection on storing a result ({results} results each way, alternating)",
        "",
        "| `POST /fhir/Observation` (laboratory, potassium) | p50 |",
        "|---|---|",
        f"| detection off (no policy, no limit check) | {p50['without'] * 1000:.2f} ms |",
        f"| detection on, value in range (as shipped) | {p50['with'] * 1000:.2f} ms |",
        f"| detection on, critical value (alert written in the same transaction) | {p50['critical'] * 1000:.2f} ms |",
        "",
        f"Detection adds **{overhead * 100:+.1f}%** to the p50 of storing a result (target ≤ 10%: "
        f"{'met' if overhead <= 0.10 else 'not met'}). The tenant's policy is read once a minute per process "
        "(one `GetItem`), then judging a value is a dictionary lookup and two comparisons; a critical result "
        "also writes its alert (`Communication` and its index items) in the result's own transaction and "
        "publishes `CriticalResultDetected`.",
    ])
