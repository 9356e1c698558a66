"""A fault at every AWS call of a write route: full success or a clean 503 that leaves no trace.

For each route the request is first run clean and its AWS calls counted (N). Then it is run again
N × (faults per call) times, each time with one call answered by an AWS error (throttling, a 5xx,
a cancelled transaction, a PutEvents failure) as if the SDK's retries were exhausted. After each run:

- the fault landed on the planned call: the calls before it, and the call itself, are those of the
  clean run (process caches are reset before every run, so a cached data key or signer never moves
  the sequence; if it moves anyway the run is reported, never silently re-attributed);
- the answer is the full success, or a 503 ``OperationOutcome`` (code ``transient``) with ``Retry-After``;
- after a 503 nothing changed: every table, every object version of every bucket, the KMS keys and the
  Cognito users are as before (an audit record of the failed attempt, outcome error, is allowed), and
  no event reached the bus;
- after a success the change is whole; the only fault a success may swallow without its events is a
  failed ``PutEvents`` after the commit (decision 0026; the outbox relay publishes them later).

Cost: the snapshots read moto's in-memory backends (:func:`injector.snapshot`), not the APIs. After a
clean 503 the same request is sent again for the next fault, as a client retrying after
``Retry-After`` would (nothing changed, so it is still valid: same ``If-Match``, same draft to sign);
after a success or anything else a fresh request is prepared. Each test file builds its world once
(``shared_clinic``; every route is compared with its own reference run and snapshots), and the routes
are split over a few files (:data:`GROUPS`) so that pytest-xdist's ``--dist loadfile`` spreads them.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.conftest import Reply
from tests.integration.faults.injector import Fault, Injector, Snapshot, faults_for, snapshot, trace
from tests.integration.faults.scenarios import Clinic, Scenario
from tests.support import aws as support

# The write routes swept, by test file (test_write_faults_<group>.py); together, every scenario.
GROUPS: dict[str, tuple[str, ...]] = {
    "records": (
        "POST /fhir/Patient", "PUT /fhir/Patient/{id}", "POST /fhir/Encounter", "PUT /fhir/Encounter/{id}",
        "POST /fhir/Condition", "POST /fhir/Composition", "POST /fhir/Composition/{id}/$sign",
        "POST /fhir/Practitioner", "POST /admin/users",
    ),
    "orders_results": (
        "POST /fhir/ServiceRequest", "POST /fhir/ServiceRequest/{id}/$status", "POST /fhir/Observation (vital sign)",
        "POST /fhir/Observation (critical laboratory result)", "POST /hl7v2 (ORU^R01)",
    ),
    "prescriptions": (
        "POST /fhir/MedicationRequest", "POST /fhir/MedicationRequest/{id}/$sign", "POST /fhir/MedicationDispense",
    ),
}


@dataclass
class Tally:
    route: str
    calls: list[str] = field(default_factory=list)
    injected: int = 0
    succeeded: int = 0
    unavailable: int = 0
    error_audit: int = 0
    prepared: int = 0  # requests prepared (the rest of the faulted runs retried the request of a clean 503)
    lost_events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        figures = {k: v for k, v in asdict(self).items() if k not in {"calls", "lost_events", "problems"}}
        return {**figures, "calls": len(self.calls), "lost_events": len(self.lost_events), "sequence": self.calls}


def _event_types(events: list[dict[str, object]]) -> collections.Counter[str]:
    return collections.Counter(str(e["detail-type"]) for e in events)


def reset_process_state() -> None:
    """What a cold Lambda container starts without: cached settings, clients, data keys, signers, policies,
    audit chains and the outbox items remembered by this context. Done before every run, clean or faulted,
    so each one makes the same calls in the same order."""
    from expediente import outbox

    support.reset_caches()
    outbox.forget()


@dataclass
class Run:
    reply: Reply | None
    crash: str
    calls: list[str]
    injected: list[tuple[int, str, str]]


def _run(injector: Injector, request: Callable[[], Reply], plan: dict[int, Fault]) -> Run:
    reset_process_state()
    with injector.record(plan) as recorded:
        try:
            reply: Reply | None = request()
            crash = ""
        except Exception as exc:  # an exception out of the handler is what we report
            reply, crash = None, f"{type(exc).__name__}: {exc}"
    return Run(reply, crash, list(recorded.calls), list(recorded.injected))


def exercise(injector: Injector, clinic: Clinic, scenario: Scenario) -> Tally:
    published = clinic.chain.world.world.published
    tally = Tally(scenario.route)

    def prepared() -> Callable[[], Reply]:
        """A new request; its own writes (a draft to sign, a read for If-Match) come first, from a cold process
        too, so what it writes is sealed with a data key of its own, as before every run."""
        reset_process_state()
        request = scenario.prepare()
        published()
        tally.prepared += 1
        return request

    # Run twice clean, counting the second: the items the route rewrites then carry a data key of their own,
    # as before every later run (the number of kms.Decrypt of a run is the number of data keys it meets).
    for _ in range(2):
        clean = _run(injector, prepared(), {})
        reply, tally.calls = clean.reply, clean.calls
        assert reply is not None and reply.status == scenario.ok and scenario.accepted(reply), (clean.crash, reply)
        expected_events = _event_types(published())
    pending: Callable[[], Reply] | None = None  # a request still valid to send (after a clean 503)
    before: Snapshot | None = None
    for index, call in enumerate(tally.calls, start=1):
        for fault in faults_for(call):
            if pending is None:
                pending = prepared()
                before = snapshot()
            assert before is not None
            run = _run(injector, pending, {index: fault})
            after, events = snapshot(), published()
            tally.injected += 1
            retry, pending = pending, None
            where = f"call {index} {call} {fault.name}"
            if run.calls[:index] != tally.calls[:index] or run.injected != [(index, call, fault.name)]:
                tally.problems.append(f"{where}: the call sequence moved (injected {run.injected}; calls "
                                      f"{run.calls[:index]} instead of {tally.calls[:index]})")
                continue
            reply = run.reply
            if reply is None:
                tally.problems.append(f"{where}: the handler raised {run.crash}")
                continue
            if reply.status == scenario.ok and not scenario.accepted(reply):
                tally.problems.append(f"{where}: answered {reply.status} but refused: {str(reply.body)[:300]}")
                continue
            if reply.status == scenario.ok:
                tally.succeeded += 1
                missing = expected_events - _event_types(events)
                if missing:
                    tally.lost_events.append(f"{where}: {sorted(missing)}")
                    if call != "eventbridge.PutEvents":
                        tally.problems.append(f"{where}: success without the events {sorted(missing)}")
                continue
            if reply.status != 503:
                tally.problems.append(f"{where}: answered {reply.status} {json.dumps(reply.body)[:200]}")
                continue
            tally.unavailable += 1
            issue = reply.body["issue"][0] if isinstance(reply.body, dict) else {}
            if not reply.headers.get("Retry-After", "").isdigit() or issue.get("code") != "transient":
                tally.problems.append(f"{where}: 503 without Retry-After or code transient: {reply.headers}")
            left = trace(before, after)
            tally.error_audit += left.error_audit
            if not left.clean:
                tally.problems.append(f"{where}: a failed request left {left.describe()}")
            if events:
                tally.problems.append(f"{where}: a failed request published {sorted(_event_types(events))}")
            if left.clean and not events:
                pending, before = retry, after  # nothing changed: the client may send it again
    return tally


def check(injector: Injector, clinic: Clinic, scenario: Scenario) -> dict[str, Any]:
    """Sweep one route; its figures (printed as a ``FAULTS`` line) once every run passed."""
    tally = exercise(injector, clinic, scenario)
    figures = tally.figures()
    print("\nFAULTS " + json.dumps(figures))
    assert tally.calls, "the clean run made no AWS call"
    assert tally.injected == sum(len(faults_for(call)) for call in tally.calls) >= len(tally.calls)
    assert not tally.problems, "\n".join(tally.problems)
    assert tally.succeeded + tally.unavailable == tally.injected
    return figures
