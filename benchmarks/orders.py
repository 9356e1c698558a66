"""A clinic's worklist (``ServiceRequest?clinic=&status=requested&_count=20``) with 100 and with 20,000
orders in the tenant: items read per request and p50, on two dynalite engines (see ``search_scale``:
moto's ``Query`` walks the whole table). Orders are spread over 5 clinics and the 4 statuses and
written with the repository's own items, exactly what placing and moving them writes."""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.harness import TENANT, AwsCalls, BatchLoader, two_engines, use_engine
from tests.support.aws import LambdaContext, User, api_event

CLINICS = ("HGIMB000151", "HGIMB000163", "HGCRO000032", "HGIMB000175", "HGIMB000180")
STATUSES = ("requested", "in-process", "completed", "cancelled")


def _load(count: int, user: User) -> None:
    from expediente.clinical import Write, stamp
    from expediente.context import context_from_event
    from functions.orders import logic
    from functions.orders.repository import number_guard, repository

    ctx = context_from_event(api_event("POST", "/fhir/ServiceRequest", user=user))
    repo = repository()
    loader = BatchLoader(repo.table)
    for n in range(count):
        day = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n % 59:02d}.000Z"
        number = f"L2026{n:011d}"
        # A quarter of the orders are the measured worklist (first clinic, requested), so its page is
        # full at both sizes; the rest spread over every other clinic and status.
        clinic, status = (CLINICS[0], "requested") if n % 4 == 0 else (
            CLINICS[n % len(CLINICS)], STATUSES[1 + n // len(CLINICS) % (len(STATUSES) - 1)])
        order = stamp(logic._with_status({
            "resourceType": "ServiceRequest", "intent": "order", "priority": "routine", "authoredOn": day,
            "category": [{"coding": [{"system": logic.SNOMED, "code": logic.LABORATORY}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": f"Patient/benchpatient{n % 500:05d}"},
            "encounter": {"reference": f"Encounter/bench{n:08d}"},
            "requester": {"reference": "Practitioner/benchdoctor"},
            "identifier": [{"system": logic.PLACER_SYSTEM, "value": number}],
            "extension": [{"url": f"{logic.EXT}/clues", "valueString": clinic}],
        }, status), f"order{n:08d}", 1, day)
        ops = repo.write_ops(ctx, Write("ServiceRequest", order, 1, logic.index_entry(order)), now=day)
        ops.append(number_guard(repo.table, ctx.tenant, number, order["id"]))
        loader.add(ops)
    loader.flush()


def run(*, small: int, large: int, requests: int) -> str:
    from functions.orders.handler import lambda_handler

    user = User(tenant=TENANT, role="lab", clinic_ids=CLINICS)
    with two_engines("worklist") as engines:
        for name, count in (("small", small), ("large", large)):
            with use_engine(engines[name]):
                _load(count, user)
        calls = AwsCalls()
        calls.attach(*engines.values())
        results: dict[str, list[tuple[float, int, int]]] = {"small": [], "large": []}

        def once(name: str) -> tuple[float, int, int]:
            event = api_event("GET", "/fhir/ServiceRequest", user=user,
                              query={"clinic": CLINICS[0], "status": "requested", "_count": "20"})
            with use_engine(engines[name]):
                calls.reset()
                started = time.perf_counter()
                response = lambda_handler(event, LambdaContext())
                elapsed = time.perf_counter() - started
            assert response["statusCode"] == 200, response["body"]
            return elapsed, calls.items_read, len(json.loads(response["body"]).get("entry", []))

        for name in ("small", "large"):
            once(name)
        for _ in range(requests):
            for name in ("small", "large"):
                results[name].append(once(name))
    rows = {name: (statistics.median(r[0] for r in rows), statistics.mean(r[1] for r in rows),
                   statistics.mean(r[2] for r in rows)) for name, rows in results.items()}
    (s_p50, s_items, s_entries), (l_p50, l_items, l_entries) = rows["small"], rows["large"]
    within = abs(l_items / s_items - 1) <= 0.2 and abs(l_p50 / s_p50 - 1) <= 0.2

    def pct(a: float, b: float) -> str:
        return f"{(b / a - 1) * 100:+.0f}%"

    return "\n".join([
        f"### A clinic's worklist against the tenant's orders ({requests} requests per size, alternating, "
        "`clinic=&status=requested&_count=20`)",
        "",
        "| orders in the tenant | entries returned | items read / request | p50 end to end |",
        "|---|---|---|---|",
        f"| {small:,} | {s_entries:.0f} | {s_items:.1f} | {s_p50 * 1000:.1f} ms |",
        f"| {large:,} | {l_entries:.0f} | {l_items:.1f} | {l_p50 * 1000:.1f} ms |",
        f"| change | | {pct(s_items, l_items)} | {pct(s_p50, l_p50)} |",
        "",
        f"Target (orders issue): items read and p50 within 20%: {'met' if within else 'not met'}. The worklist "
        "is one facet partition per clinic and status: one `Query` of `_count` index items and one `BatchGetItem`, "
        "whatever the number of orders in the tenant. A quarter of the orders are the measured clinic's requested "
        "ones, so both pages are full.",
    ])
