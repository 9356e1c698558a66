"""Every cell of the permission table, proven against the running handlers.

For every operation of the OpenAPI description (its cell: resource type × interaction, walker.classify)
and every role, a user of that role in a chain with data in every domain calls the real route. A role
the table grants must get past the permission check (never 401, never the table's 403); a role it does
not grant must get 403 with an OperationOutcome (``forbidden``), before anything is read or written.
Administrative operations (users, organization and practitioner writes, ``$merge``, quarantine release,
the critical-results policy) are among them, so clinical roles are proven refused there.

Some grants are refined by domain rules that answer 403 for a reason other than the table (only the
author signs a note, only the prescriber signs a prescription, a practitioner registers only their own
certificate, a role records only the observation categories it owns...). Those cells are listed in
``REFINED`` with the rule; the test fails if a refinement appears or disappears unnoticed.

Also here: note narrative and sensitive diagnoses, per role, read through every read path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from expediente.permissions import NARRATIVE_READERS, PERMISSIONS, SENSITIVE_DIAGNOSIS_READERS, Role
from tests.conftest import Reply
from tests.integration.admin.conftest import AdminWorld
from tests.integration.notes.conftest import admin_world  # noqa: F401  (the fixture, requested by name)
from tests.integration.security import walker
from tests.integration.security.walker import Operation, Tenant

# (operation, role) granted by the table but refused by a domain rule, and the rule.
REFINED: dict[tuple[str, str], str] = {
    ("POST /fhir/Composition", "nurse"): "a nurse writes nursing notes only (functions/notes/note_types.py); "
                                         "the walk's note is a historia clínica",
    ("POST /fhir/Observation", "lab"): "the laboratory records laboratory results, not vital signs "
                                       "(functions/results/observations.py); the walk's body is a vital sign",
}


def _table_refusal(reply: Reply, cell: walker.Cell) -> bool:
    """Whether ``reply`` is the permission table's own 403 (not a domain rule's)."""
    return reply.status == 403 and f"may not {cell.interaction} {cell.resource_type}" in reply.issue


def _forbidden(reply: Reply) -> bool:
    body = reply.body
    return (reply.status == 403 and isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
            and body["issue"][0]["code"] in ("forbidden", "security"))


def _hl7_refused(reply: Reply) -> bool:
    """An ORU^R01 refused for the sender's role: ACK with ERR-3 207 (application internal error: not allowed)."""
    return reply.status == 200 and "may not send results" in str(reply.body)


def _ordered(ops: list[Operation]) -> list[Operation]:
    # Reads first; writes that change what later calls see (merge, cancellation, release) last.
    return sorted(ops, key=lambda op: (op.method != "GET", "$merge" in op.path, "$status" in op.path,
                                       "$release" in op.path))


def test_every_cell_of_the_permission_table_holds_on_the_running_handlers(
        admin_world: AdminWorld, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    a = walker.build_tenant(admin_world, "a")
    wrong: list[str] = []
    refined: dict[tuple[str, str], str] = {}
    counts: Counter[str] = Counter()
    cells: set[tuple[str, str, str]] = set()
    for op in _ordered(walker.operations()):
        cell = walker.classify(op)
        if cell.public:
            continue
        granted = set(map(str, walker.roles_allowed(cell)))
        for role in Role:
            caller = a.staff[str(role)]
            probe = walker.requests_for(op, a, caller)[0]
            if op.path == "/hl7v2":  # a new message each time: a resent one is answered from the first
                probe.body = probe.body.replace(a.extra["control"], f"MTX{role}{len(cells)}"[:20])
            reply = walker.send(caller, probe)
            cells.add((str(cell.resource_type), str(cell.interaction), str(role)))
            label = f"{op} as {role}"
            if reply.status in (401, 500, 502, 503):
                wrong.append(f"{label}: {reply.status} {reply.issue}")
                continue
            if op.path == "/hl7v2":
                allowed = role in granted and "DiagnosticReport" in PERMISSIONS and str(role) in set(
                    map(str, walker.roles_allowed(walker.Cell("hl7v2", "DiagnosticReport", cell.interaction))))
                if allowed == _hl7_refused(reply):
                    wrong.append(f"{label}: ACK {str(reply.body)[:200]}")
                counts["allowed" if allowed else "denied"] += 1
                continue
            if str(role) in granted:
                counts["allowed"] += 1
                if _table_refusal(reply, cell):
                    wrong.append(f"{label}: the table grants it, the handler answers {reply.issue}")
                elif reply.status == 403:
                    refined[(str(op), str(role))] = reply.issue
            else:
                counts["denied"] += 1
                # An interaction no role holds (delete; editing an order or an alert) is refused to everyone by
                # the route itself: 405, or 409 for a signed note (NOM-004 5.11), never a success.
                nobody = not granted and reply.status in (405, 409)
                if not (_forbidden(reply) or nobody):
                    wrong.append(f"{label}: not granted, answered {reply.status} {str(reply.body)[:160]}")
    assert not wrong, f"{len(wrong)} cells the handlers do not honour:\n" + "\n".join(wrong)
    unexpected = {k: v for k, v in refined.items() if k not in REFINED}
    assert not unexpected, "granted cells refused by a domain rule (add them to REFINED with the rule):\n" + \
        "\n".join(f"{k}: {v}" for k, v in sorted(unexpected.items()))
    assert set(REFINED) <= set(refined), f"refinements no longer seen: {sorted(set(REFINED) - set(refined))}"
    with capsys.disabled():
        print(f"\nrole matrix: {len(cells)} role × operation cells over {len({c[:2] for c in cells})} "
              f"(type, interaction) pairs: {counts['allowed']} allowed calls, {counts['denied']} denied (403), "
              f"{len(refined)} refined by domain rules")


# --------------------------------------------------------------------------- narrative and sensitive diagnoses ---


def _reads(t: Tenant, staff: walker.Staff, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
    """Every way ``staff`` can read one resource: read, vread, history, search by patient, and _include."""
    pid = t.first("Patient")
    got: list[dict[str, Any]] = []
    for path in (f"/fhir/{resource_type}/{resource_id}", f"/fhir/{resource_type}/{resource_id}/_history/1"):
        reply = walker.fn_call(staff, "notes", "GET", path)
        if reply.status == 200:
            got.append(reply.body)
    history = walker.fn_call(staff, "notes", "GET", f"/fhir/{resource_type}/{resource_id}/_history")
    if history.status == 200:
        got += [e["resource"] for e in history.body.get("entry", [])]
    search = walker.fn_call(staff, "notes", "GET", f"/fhir/{resource_type}", query={"patient": pid})
    if search.status == 200:
        got += [e["resource"] for e in search.body.get("entry", []) if e["resource"]["id"] == resource_id]
    return got


def test_note_narrative_is_shown_only_to_the_roles_that_read_it(admin_world: AdminWorld) -> None:  # noqa: F811
    a = walker.build_tenant(admin_world, "a")
    note = a.first("Composition")
    for role in Role:
        seen = _reads(a, a.staff[str(role)], "Composition", note)
        may_read = "read" in map(str, PERMISSIONS["Composition"].get(role, frozenset()))
        assert bool(seen) == may_read, role
        for resource in seen:
            text = str(resource)
            if role in NARRATIVE_READERS:
                assert "Madre con diabetes tipo 2" in text, role
            else:
                assert "Madre con diabetes" not in text and "div" not in text, role
                assert any(s.get("code") == "REDACTED" for s in resource["meta"]["security"]), role


def test_sensitive_diagnoses_are_masked_for_roles_that_do_not_need_them(admin_world: AdminWorld) -> None:  # noqa: F811
    """A psychiatric diagnosis (F32.9, labelled PSY): whole for the treating team and the patient; for other
    readers of Conditions present, with its code, display and specific label masked, on every read path."""
    a = walker.build_tenant(admin_world, "a")
    sensitive, plain = a.extra["sensitive_condition"], a.ids["Condition"][0]
    checked = 0
    for role in Role:
        staff = a.staff[str(role)]
        may_read = "read" in map(str, PERMISSIONS["Condition"].get(role, frozenset()))
        seen = _reads(a, staff, "Condition", sensitive)
        assert bool(seen) == may_read, role
        for resource in seen:
            checked += 1
            if role in SENSITIVE_DIAGNOSIS_READERS:
                assert resource["code"]["coding"][0]["code"] == walker.SENSITIVE_CODE, role
                assert {"PSY"} <= {s["code"] for s in resource["meta"]["security"]}, role
            else:
                text = str(resource)
                assert walker.SENSITIVE_CODE not in text and "PSY" not in text and "depresiv" not in text.lower()
                assert resource["code"] == {"extension": [{
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}]}
                assert {s["code"] for s in resource["meta"]["security"]} == {"R", "REDACTED"}
                assert resource["subject"] == {"reference": f"Patient/{a.first('Patient')}"}
                from expediente.fhir import validate

                validate("Condition", resource)
        plain_seen = _reads(a, staff, "Condition", plain)
        assert all(r["code"]["coding"][0]["code"] == "I10" for r in plain_seen), role  # not sensitive: whole
    included = walker.fn_call(a.staff["lab"], "notes", "GET", "/fhir/Condition",
                              query={"patient": a.first("Patient"), "_count": "100"})
    assert walker.SENSITIVE_CODE not in str(included.body)
    assert checked >= 4 * len([r for r in Role if "read" in map(str, PERMISSIONS["Condition"].get(r, ()))])
