"""Tenant isolation, walked over the whole route table.

Tenant A fills every domain through the product (walker.build_tenant); tenant B, with data of its own,
then calls every operation of the published OpenAPI description naming A's data: A's ids in paths,
A's patients, encounters, orders and prescriptions in references and search parameters, A's CURP,
names, accession and placer numbers, DICOM UIDs, usernames, `_include`/`_revinclude`, and A's
continuation tokens. Every request is made twice: with A's value and with a fresh value of the same
shape that names nothing (the control). The oracle:

- nothing of A (any id, identifier, CURP, name, S3 key, UID or token A produced) appears in any
  status line, header or body B receives, nor in any event published or object written while B
  walks; nothing B does writes a DynamoDB item or S3 object outside B's own tenant prefix;
- A's value answers exactly as the control does (same status, same body once the two values are
  masked): another tenant's id is indistinguishable from a missing one;
- the walk covers every operation of the OpenAPI description, so a new route fails this test until
  the walker knows how it could reach another tenant's data.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.conftest import Reply
from tests.integration.admin.conftest import AdminWorld
from tests.integration.notes.conftest import admin_world  # noqa: F401  (the fixture, requested by name)
from tests.integration.security import walker
from tests.integration.security.walker import Probe, Substitution, Tenant

# Routes whose answer does not depend on the caller's tenant.
PUBLIC_WITHOUT_TENANT = {"GET /fhir/metadata", "GET /openapi.json", "GET /docs"}
# The public receta check is reached by its 128-bit token alone (decision 0019): B holding A's token is
# the pharmacy the patient handed the paper to. The walk proves a guessed token names nothing.
CAPABILITY_URLS = {"GET /receta/{token}"}


class Log:
    """Everything tenant B received, and what the walk found wrong."""

    def __init__(self, a: Tenant) -> None:
        self.a = a
        self.replies: list[tuple[str, Reply]] = []
        self.problems: list[str] = []
        self.routes: set[str] = set()
        self.kinds: Counter[str] = Counter()
        self.sent: set[str] = set()  # A's values B itself put in a request (a name, an id it guessed)

    def received(self, label: str, reply: Reply, sent: Any = None) -> Reply:
        """Check one reply: A's values other than those B itself sent (``sent``, echoed in a 404) are leaks."""
        self.replies.append((label, reply))
        echoed = set(self.a.secrets.leaks(sent)) if sent is not None else set()
        leaked = [v for v in self.a.secrets.leaks({"status": reply.status, "headers": reply.headers,
                                                   "body": reply.body}) if v not in echoed]
        if leaked:
            self.problems.append(f"{label}: {reply.status} carries tenant A's {', '.join(leaked[:5])}")
        if reply.status >= 500:
            self.problems.append(f"{label}: {reply.status} {str(reply.body)[:200]}")
        return reply


def _probe(log: Log, probe: Probe, b: Tenant, swap: Substitution) -> None:
    caller = walker.caller_for(probe.cell, b)
    label = f"{probe.op} as B's {caller.caller.claims and caller.caller.claims.get('cognito:groups')}"
    log.routes.add(str(probe.op))
    log.kinds[probe.kind] += 1
    sent = [probe.path, probe.query, probe.body, probe.headers]
    log.sent.update(log.a.secrets.leaks(sent))
    named = log.received(f"{label} naming A", walker.send(caller, probe), sent)
    fresh = Substitution(probe.fresh)
    swapped = [fresh.apply(swap.apply(part)) if part is not None else None for part in sent]
    control = log.received(f"{label} naming nothing", walker.send(
        caller, probe, path=swapped[0], query=swapped[1], body=swapped[2], headers=swapped[3]), swapped)
    if probe.kind == "public" and str(probe.op) in CAPABILITY_URLS:
        assert control.status == 404, (label, control.status)
        return
    if probe.kind == "public":
        return
    got = swap.mask(walker.outcome_shape(named), control=False)
    expected = swap.mask(walker.outcome_shape(control), control=True)
    if got != expected:
        log.problems.append(f"{label}: A's value answers {json.dumps(got)[:300]}, "
                            f"a missing one {json.dumps(expected)[:300]}")


Token = tuple[str, str, dict[str, str], str, str]  # function, path, A's query, role, A's `next` token


def continuation_tokens(a: Tenant) -> list[Token]:
    """Tenant A's `next` links of searches that have more than one page."""
    pid = a.first("Patient")
    searches = [("results", "/fhir/Observation", {"patient": pid}, "physician"),
                ("notes", "/fhir/Condition", {"patient": pid}, "physician"),
                ("prescriptions", "/fhir/MedicationRequest", {"patient": pid}, "physician"),
                ("prescriptions", "/fhir/DetectedIssue", {"patient": pid}, "physician"),
                ("orders", "/fhir/ServiceRequest", {"patient": pid}, "physician"),
                ("patients", "/fhir/Patient", {"family": a.person.family}, "reception"),
                ("admin", "/fhir/AuditEvent", {"patient": f"Patient/{pid}"}, "auditor"),
                ("admin", "/fhir/Practitioner", {}, "admin")]
    tokens = []
    for function, path, query, role in searches:
        first = walker.fn_call(a.staff[role], function, "GET", path, query={**query, "_count": "1"})
        assert first.status == 200, (path, first.body)
        nxt = next((link["url"] for link in first.body.get("link", []) if link["relation"] == "next"), None)
        assert nxt, f"tenant A's {path}?{query} has a single page: the walk needs two"
        token = nxt.split("_page=")[1].split("&")[0]
        a.secrets.add(token, "continuation token")
        tokens.append((function, path, query, role, token))
    return tokens


def follow(log: Log, a: Tenant, b: Tenant, tokens: list[Token]) -> int:
    """B follows A's `next` links, as they are and with B's own parameters: an error, never A's data."""
    pid = a.first("Patient")
    mine = {pid: b.first("Patient"), f"Patient/{pid}": f"Patient/{b.first('Patient')}",
            a.person.family: b.person.family}
    followed = 0
    for function, path, query, role, token in tokens:
        own = {k: mine.get(v, v) for k, v in query.items()}
        for params in ({**query, "_count": "1", "_page": token}, {**own, "_count": "1", "_page": token}):
            log.sent.update(a.secrets.leaks(params))
            reply = log.received(f"GET {path} as B with A's continuation token",
                                 walker.fn_call(b.staff[role], function, "GET", path, query=params), params)
            followed += 1
            entries = reply.body.get("entry", []) if isinstance(reply.body, dict) else []
            if reply.status != 400 or entries:
                log.problems.append(f"GET {path} with A's token answered {reply.status} with {len(entries)} entries")
    return followed


def test_the_walk_knows_every_operation_of_the_openapi_description() -> None:
    """Every published operation has a function, a permission cell and a way to name another tenant's data."""
    ops = walker.operations()
    assert len(ops) > 100
    unknown = []
    placeholder = walker.placeholder_tenant()
    for op in ops:
        try:
            cell = walker.classify(op)
            if not cell.public and "{" not in op.path:
                walker.requests_for(op, placeholder)
        except LookupError as error:
            unknown.append(str(error))
    assert not unknown, "routes the tenant walk does not cover:\n" + "\n".join(unknown)


def test_tenant_b_never_receives_tenant_a_data_on_any_route(admin_world: AdminWorld,  # noqa: F811
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    a = walker.build_tenant(admin_world, "a")
    b = walker.build_tenant(admin_world, "b")
    swap = Substitution.of(a)
    tokens = continuation_tokens(a)
    world = admin_world.world
    world.published()  # the events of building the two tenants
    before_items = walker.dynamo_items()
    before_keys = set(walker.all_keys())
    log = Log(a)
    ops = walker.operations()
    # Writes that change what later probes see (a merge, a cancellation) go last.
    ordered = sorted(ops, key=lambda op: (op.method != "GET", "$merge" in op.path, "$status" in op.path))
    for op in ordered:
        for probe in walker.requests_for(op, a, walker.caller_for(walker.classify(op), b)):
            _probe(log, probe, b, swap)
    followed = follow(log, a, b, tokens)

    events = world.published()
    for event in events:
        leaked = [v for v in a.secrets.leaks(event) if v not in log.sent]
        if leaked:
            log.problems.append(f"event {event['detail-type']} during B's walk carries A's {leaked[:3]}")
        if event["detail"].get("tenant_id") not in (None, b.id):
            log.problems.append(f"event {event['detail-type']} during B's walk is for tenant {event['detail']}")
    after_items = walker.dynamo_items()
    written = [(table, key) for (table, key), item in after_items.items() if before_items.get((table, key)) != item]
    for table, key in written:
        receta_check = after_items[(table, key)].get("user_id") == {"S": "service:receta-verify"}
        if b.id not in key and not receta_check:  # the public receta check audits in the receta's own trail
            log.problems.append(f"B's walk wrote {table} item {key} outside tenant B: "
                                f"{ {k: v for k, v in after_items[(table, key)].items() if k not in ('pk', 'sk')} }")
        leaked = [v for v in a.secrets.leaks(after_items[(table, key)]) if v not in log.sent]
        if leaked:
            log.problems.append(f"B's walk wrote {table} item {key} holding A's {leaked[:3]}")
    new_keys = set(walker.all_keys()) - before_keys
    for key in sorted(new_keys):
        if not key.startswith(f"{b.id}/") or a.secrets.leaks(key):
            log.problems.append(f"B's walk wrote S3 object {key} outside tenant B's prefix")

    covered = {str(op) for op in ops}
    assert covered <= log.routes, f"operations not walked: {sorted(covered - log.routes)}"
    assert not log.problems, f"{len(log.problems)} isolation problems:\n" + "\n".join(log.problems[:60])
    with capsys.disabled():
        print(f"\ntenant walk: {len(log.routes)} operations, {len(log.replies)} requests by tenant B "
              f"({dict(log.kinds)} probes, each with its control; {followed} continuation tokens), "
              f"{len(a.secrets)} tenant-A values checked in every reply, {len(events)} events, "
              f"{len(written)} DynamoDB items and {len(new_keys)} S3 objects written by B")


def test_ids_of_another_tenant_are_refused_in_references_as_if_missing(admin_world: AdminWorld) -> None:  # noqa: F811
    """B's writes that point at A's patient, encounter, order or prescription fail as a made-up id does."""
    a = walker.build_tenant(admin_world, "a")
    b = walker.build_tenant(admin_world, "b", full=False)
    swap = Substitution.of(a)
    creates = [op for op in walker.operations() if op.method == "POST" and op.path.count("/") == 2
               and op.path.startswith("/fhir/") and "$" not in op.path]
    refused = 0
    for op in creates:
        for probe in walker.requests_for(op, a):
            text = json.dumps(probe.body)
            if not any(f"{kind}/{i}" in text for kind in ("Patient", "Encounter", "ServiceRequest",
                                                           "MedicationRequest", "Organization", "Observation")
                       for i in walker.flatten(a.ids.values())):
                continue
            caller = walker.caller_for(probe.cell, b)
            named = walker.send(caller, probe)
            control = walker.send(caller, probe, body=swap.apply(probe.body), headers=swap.apply(probe.headers))
            assert named.status == control.status and named.status in (400, 404, 409, 422), (str(op), named.body)
            assert swap.mask(named.body, control=False) == swap.mask(control.body, control=True), str(op)
            assert set(a.secrets.leaks(named.body)) <= set(a.secrets.leaks(probe.body))  # only what B sent
            refused += 1
    assert refused >= 10


def test_a_guessed_receta_token_or_dicom_uid_names_nothing(admin_world: AdminWorld) -> None:  # noqa: F811
    a = walker.build_tenant(admin_world, "a")
    b = walker.build_tenant(admin_world, "b", full=False)
    guessed = a.extra["receta_token"][:-2] + ("AA" if not a.extra["receta_token"].endswith("AA") else "BB")
    reply = walker.fn_call(b.staff["pharmacist"], "prescriptions", "GET", f"/receta/{guessed}")
    assert reply.status == 404 and not a.secrets.leaks(reply.body)
    study = a.extra["study_uid"]
    for uid in (study, study[:-1] + ("1" if study[-1] != "1" else "2")):
        found = walker.fn_call(b.staff["radiology"], "results", "GET", "/dicomweb/studies",
                               query={"StudyInstanceUID": uid})
        assert found.status in (200, 204) and not a.secrets.leaks(found.body)
        assert walker.fn_call(b.staff["radiology"], "results", "GET", f"/dicomweb/studies/{uid}/metadata").status == 404
