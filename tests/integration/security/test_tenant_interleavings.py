"""Tenant isolation under random interleavings of two tenants' writes and reads (hypothesis).

Both chains register patients with the same names and, at times, the same CURP (one record per
tenant is the rule), open encounters, record vital signs, update patients and search, in an order
hypothesis chooses. After every step the oracle of the walk holds: no reply to one tenant carries an
id the other produced. At the end each tenant's searches return exactly its own records: none of the
other's, none of its own lost.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Reply
from tests.integration.admin.conftest import AdminWorld
from tests.integration.notes.conftest import admin_world  # noqa: F401  (the fixture, requested by name)
from tests.integration.patients.conftest import patient_body
from tests.integration.security import walker
from tests.support.curp import make_curp

ACTIONS = ("register", "register_same_curp", "encounter", "vital", "update", "search_family", "search_vitals")
_CONSONANTS = ("".join(c) for c in itertools.product("BCDFGHKLMNPRST", repeat=3))


class Side:
    """One tenant in the interleaving: its staff, what it created, and every reply it received."""

    def __init__(self, tenant: walker.Tenant) -> None:
        self.t = tenant
        self.patients: dict[str, dict[str, Any]] = {}
        self.encounters: dict[str, str] = {}
        self.vitals: dict[str, set[str]] = {}
        self.ids = walker.Secrets()
        self.replies: list[tuple[str, Reply]] = []

    def call(self, role: str, function: str, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        reply = walker.fn_call(self.t.staff[role], function, method, path, body, **kw)
        self.replies.append((f"{method} {path}", reply))
        assert reply.status < 500, reply.body
        return reply


def _register(side: Side, curp: str) -> None:
    person = walker.PEOPLE["a"]
    body = patient_body(curp, family=person.family, second=person.second, given=(person.given,), birth="1975-03-14",
                        gender="female")
    reply = side.call("reception", "patients", "POST", "/fhir/Patient", body)
    if reply.status == 409:  # this tenant already holds that CURP: the answer names its own record
        assert reply.issue.split("Patient/")[1].split()[0].strip(".") in side.patients, reply.issue
        return
    assert reply.status == 201, reply.body
    side.patients[reply.body["id"]] = reply.body
    side.vitals[reply.body["id"]] = set()
    side.ids.add(reply.body["id"], "Patient")


def step(side: Side, other: Side, action: str, pick: int) -> None:
    if action in ("register", "register_same_curp") or not side.patients:
        theirs = [i["value"] for p in other.patients.values() for i in p.get("identifier") or []
                  if str(i.get("value", "")).startswith("ZAIE750314M")]
        same = action == "register_same_curp" and theirs
        curp = theirs[pick % len(theirs)] if same else make_curp(prefix="ZAIE", birth="750314", sex="M",
                                                                   consonants=next(_CONSONANTS))
        _register(side, curp)
        return
    pid = sorted(side.patients)[pick % len(side.patients)]
    if action == "encounter":
        reply = side.call("physician", "notes", "POST", "/fhir/Encounter", {
            "resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{pid}"},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}})
        assert reply.status == 201, reply.body
        side.encounters[reply.body["id"]] = pid
        side.ids.add(reply.body["id"], "Encounter")
    elif action == "vital":
        reply = side.call("nurse", "results", "POST", "/fhir/Observation", {
            "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": walker.LOINC, "code": "8867-4"}]},
            "effectiveDateTime": "2026-11-25T10:00:00Z",
            "valueQuantity": {"value": 60 + pick % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}})
        assert reply.status == 201, reply.body
        side.vitals[pid].add(reply.body["id"])
        side.ids.add(reply.body["id"], "Observation")
    elif action == "update":
        current = side.call("reception", "patients", "GET", f"/fhir/Patient/{pid}").body
        changed = {**current, "telecom": [{"system": "phone", "value": f"55{pick:08d}"}]}
        reply = side.call("reception", "patients", "PUT", f"/fhir/Patient/{pid}", changed,
                          headers={"If-Match": f'W/"{current["meta"]["versionId"]}"'})
        assert reply.status == 200, reply.body
        side.patients[pid] = reply.body
    elif action == "search_family":
        side.call("reception", "patients", "GET", "/fhir/Patient",
                  query={"family": walker.PEOPLE["a"].family, "_count": "100"})
    else:
        side.call("physician", "results", "GET", "/fhir/Observation", query={"patient": pid, "_count": "100"})


def _entries(reply: Reply) -> set[str]:
    return {e["resource"]["id"] for e in reply.body.get("entry", []) if e.get("search", {}).get("mode") != "include"}


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure names its steps already
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(ACTIONS), st.integers(0, 999)),
                      min_size=3, max_size=10))
def test_random_interleavings_of_two_tenants_never_cross(admin_world: AdminWorld,  # noqa: F811
                                                         steps: list[tuple[str, str, int]]) -> None:
    sides = _sides(admin_world)
    a, b = sides["a"], sides["b"]
    for who, action, pick in steps:
        side, other = (a, b) if who == "a" else (b, a)
        before = len(side.replies)
        step(side, other, action, pick)
        for label, reply in side.replies[before:]:
            leaked = other.ids.leaks({"headers": reply.headers, "body": reply.body})
            assert not leaked, f"{label} to tenant {who} carries the other tenant's {leaked}"
    for side, other in ((a, b), (b, a)):
        if not side.patients:
            continue
        found = side.call("reception", "patients", "GET", "/fhir/Patient",
                          query={"family": walker.PEOPLE["a"].family, "_count": "100"})
        family = {pid for pid, p in side.patients.items()
                  if walker.PEOPLE["a"].family.casefold() in str(p["name"]).casefold()}
        assert _entries(found) == family, "a search lost or gained patients"
        for pid, vitals in side.vitals.items():
            listed = side.call("physician", "results", "GET", "/fhir/Observation",
                               query={"patient": pid, "_count": "100"})
            assert _entries(listed) == vitals
        assert not other.ids.leaks([r.body for _, r in side.replies])


_WORLD: list[tuple[AdminWorld, dict[str, Side]]] = []  # the world the sides were built in, kept alive


def _sides(world: AdminWorld) -> dict[str, Side]:
    """Two chains with staff, built once per world; every example adds to the same records (so later examples
    interleave with everything earlier ones wrote, and the end-of-example searches check it all)."""
    if not _WORLD or _WORLD[0][0] is not world:
        sides = {label: Side(walker.build_tenant(world, label, full=False)) for label in "ab"}
        for side in sides.values():
            for pid in side.t.ids["Patient"]:
                side.patients[pid] = side.call("reception", "patients", "GET", f"/fhir/Patient/{pid}").body
                side.vitals[pid] = set()
                side.ids.add(pid, "Patient")
        _WORLD[:] = [(world, sides)]
    sides = _WORLD[0][1]
    for side in sides.values():
        side.replies = []
    return sides
