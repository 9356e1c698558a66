"""Admin use cases with in-memory collaborators: permissions, versions, users, the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from expediente.audit import AuditEntry
from expediente.context import RequestContext, TenantId
from expediente.errors import DomainError, Forbidden, Invalid, NotFound, PreconditionFailed, Unprocessable
from expediente.permissions import Role
from expediente.store import Stored
from functions.admin import logic, rules
from functions.admin.repository import Page, ResourceWrite, UserRecord
from functions.admin.rules import ORGANIZATION, PRACTITIONER, AuditQuery, UserSpec

TENANT = TenantId("t-abcdefghij")
CLUES = "urn:oid:2.16.840.1.113883.4.631"


def ctx(*roles: Role, username: str = "someone", patient_id: str | None = None) -> RequestContext:
    return RequestContext(tenant=TENANT, user_id=f"sub-{username}", username=username, roles=frozenset(roles),
                          clinic_ids=(), clinic=None, practitioner_id=None, patient_id=patient_id,
                          request_id="r-1", source_ip="203.0.113.1", user_agent="test")


def clock() -> datetime:
    return datetime(2025, 11, 25, 17, 0, tzinfo=UTC)


@dataclass
class FakeRepo:
    """Enough of AdminRepository, in memory; records what was written and asked."""

    resources: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    guards: dict[tuple[str, str], str] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=dict)
    entries: list[AuditEntry] = field(default_factory=list)
    audit_queries: list[AuditQuery] = field(default_factory=list)

    def tenant(self, tenant):
        return {"status": "active", "organization_id": "chain-1"}

    def _stored(self, resource):
        return Stored(resource, int(resource["meta"]["versionId"]), resource["meta"]["lastUpdated"])

    def get(self, tenant, resource_type, resource_id):
        versions = self.resources.get((resource_type, resource_id))
        return self._stored(versions[-1]) if versions else None

    def get_version(self, tenant, resource_type, resource_id, version):
        versions = self.resources.get((resource_type, resource_id), [])
        return self._stored(versions[version - 1]) if 0 < version <= len(versions) else None

    def history(self, tenant, resource_type, resource_id, *, limit, page):
        versions = self.resources.get((resource_type, resource_id), [])
        return Page([self._stored(v) for v in reversed(versions)][:limit], None)

    def find_unique(self, tenant, resource_type, value):
        return self.guards.get((resource_type, value))

    def get_many(self, tenant, resource_type, ids: Sequence[str]):
        return [s for s in (self.get(tenant, resource_type, i) for i in ids) if s]

    def search(self, tenant, resource_type, **kwargs):
        return Page([self.get(tenant, t, i) for (t, i) in self.resources if t == resource_type], None)

    def save(self, ctx, write: ResourceWrite, *, now, entry, extra=()):
        key = (write.resource["resourceType"], write.resource["id"])
        self.resources.setdefault(key, []).append(write.resource)
        if write.indexed.unique:
            self.guards[(key[0], write.indexed.unique.value)] = key[1]
        self.entries.append(entry)

    def get_user(self, tenant, username):
        return self.users.get(username)

    def list_users(self, tenant, *, limit, page, fingerprint):
        return Page(list(self.users.values())[:limit], None)

    def save_user(self, ctx, user, *, entry):
        self.users[user.username] = user
        self.entries.append(entry)

    def audit_events(self, tenant, q, *, limit, page, fingerprint):
        self.audit_queries.append(q)
        return Page([], None)


@dataclass
class FakeDirectory:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    updates: list[tuple[UserSpec, UserSpec]] = field(default_factory=list)

    def create(self, *, username, email, tenant, spec, password=None):
        self.created.append(username)
        return f"sub-{username}"

    def get(self, username):
        return type("Account", (), {"tenant": TENANT, "email": f"{username}@example.com", "status": "CONFIRMED"})()

    def update(self, username, *, before, after):
        self.updates.append((before, after))

    def delete(self, username):
        self.deleted.append(username)


def never(*_: Any, **__: Any) -> Any:
    raise AssertionError("the repository must not be touched before the permission check")


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        return never


def clinic_body(clues: str = "HGIMB000151") -> dict[str, Any]:
    return {"resourceType": "Organization", "name": "Clínica", "identifier": [{"system": CLUES, "value": clues}]}


@pytest.mark.parametrize(
    ("role", "kind", "call"),
    [
        (Role.RECEPTION, ORGANIZATION, "create"),
        (Role.PHYSICIAN, ORGANIZATION, "create"),
        (Role.AUDITOR, PRACTITIONER, "create"),
        (Role.PATIENT, PRACTITIONER, "read"),
        (Role.RECEPTION, ORGANIZATION, "history"),
    ],
)
def test_permissions_are_checked_before_anything_is_read(role, kind, call):
    calls = {
        "create": lambda: logic.create(ctx(role), kind, clinic_body(), repo=Untouchable()),
        "read": lambda: logic.read(ctx(role), kind, "x", repo=Untouchable(), record=never),
        "history": lambda: logic.history(ctx(role), kind, "x", {}, repo=Untouchable(), record=never),
    }
    with pytest.raises(Forbidden):
        calls[call]()


@pytest.mark.parametrize("role", [Role.PHYSICIAN, Role.ADMIN, Role.RECEPTION])
def test_only_auditor_and_patient_read_the_audit_trail(role):
    with pytest.raises(Forbidden):
        logic.search_audit_events(ctx(role), {}, repo=Untouchable(), record=never)


@pytest.mark.parametrize("role", [Role.PHYSICIAN, Role.AUDITOR, Role.PATIENT])
def test_only_admins_manage_users(role):
    with pytest.raises(Forbidden):
        logic.create_user(ctx(role), {}, repo=Untouchable(), directory=Untouchable())
    with pytest.raises(Forbidden):
        logic.list_users(ctx(role), {}, repo=Untouchable(), record=never)


def test_create_stamps_version_one_and_audits_in_the_same_write():
    repo = FakeRepo()
    saved = logic.create(ctx(Role.ADMIN), ORGANIZATION, clinic_body(), repo=repo, clock=clock, new_id=lambda: "o1")
    assert saved.version == 1
    assert saved.resource["meta"] == {"versionId": "1", "lastUpdated": "2025-11-25T17:00:00.000Z"}
    assert list(saved.resource)[:3] == ["resourceType", "id", "meta"]
    assert [(e.resource_type, e.action.value, e.resource_id, e.status) for e in repo.entries] == [
        ("Organization", "create", "o1", 201)]


def test_update_rules():
    repo = FakeRepo()
    admin = ctx(Role.ADMIN)
    created = logic.create(admin, ORGANIZATION, clinic_body(), repo=repo, clock=clock, new_id=lambda: "o1").resource
    with pytest.raises(PreconditionFailed):
        logic.update(admin, ORGANIZATION, "o1", {**created, "name": "B"}, if_match=2, repo=repo)
    with pytest.raises(Invalid) as exc:
        logic.update(admin, ORGANIZATION, "o1", {**created, "id": "o2"}, if_match=1, repo=repo)
    assert exc.value.expression == "Organization.id"
    with pytest.raises(NotFound):
        logic.update(admin, ORGANIZATION, "nope", {**created, "id": "nope"}, if_match=1, repo=repo)
    saved = logic.update(admin, ORGANIZATION, "o1", {**created, "name": "Norte"}, if_match=1, repo=repo, clock=clock)
    assert saved.version == 2
    assert saved.resource["meta"]["versionId"] == "2"


def test_reads_are_audited_before_they_return():
    repo = FakeRepo()
    logic.create(ctx(Role.ADMIN), ORGANIZATION, clinic_body(), repo=repo, new_id=lambda: "o1")
    recorded: list[AuditEntry] = []
    logic.read(ctx(Role.PHYSICIAN), ORGANIZATION, "o1", repo=repo, record=lambda c, e: recorded.append(e))
    assert [(e.action.value, e.resource_id) for e in recorded] == [("read", "o1")]

    def failing(*_: Any) -> None:
        raise DomainError("audit down")

    with pytest.raises(DomainError):
        logic.read(ctx(Role.PHYSICIAN), ORGANIZATION, "o1", repo=repo, record=failing)


def test_a_user_can_only_be_given_active_clinics_of_the_chain():
    repo = FakeRepo()
    admin = ctx(Role.ADMIN)
    logic.create(admin, ORGANIZATION, clinic_body(), repo=repo, new_id=lambda: "o1")
    directory = FakeDirectory()
    body = {"username": "recep1", "email": "r@example.com", "role": "reception", "clinic_ids": ["HGIMB000163"]}
    with pytest.raises(Unprocessable) as exc:
        logic.create_user(admin, body, repo=repo, directory=directory)
    assert exc.value.expression == "clinic_ids[0]"
    assert directory.created == []
    view = logic.create_user(admin, {**body, "clinic_ids": ["HGIMB000151"]}, repo=repo, directory=directory)
    assert view["clinic_ids"] == ["HGIMB000151"]
    assert "email" not in view


def test_a_failed_directory_write_removes_the_new_account():
    class Broken(FakeRepo):
        def save_user(self, ctx, user, *, entry):
            raise DomainError("store down")

    directory = FakeDirectory()
    with pytest.raises(DomainError):
        logic.create_user(ctx(Role.ADMIN), {"username": "aud1", "email": "a@example.com", "role": "auditor"},
                          repo=Broken(), directory=directory)
    assert directory.created == directory.deleted == ["aud1"]


def test_an_admin_cannot_demote_or_disable_themselves():
    repo = FakeRepo()
    repo.users["boss"] = UserRecord("boss", "sub-boss", "admin", (), None, None, True, "t", "t")
    for change in ({"role": "auditor"}, {"enabled": False}):
        with pytest.raises(Unprocessable):
            logic.update_user(ctx(Role.ADMIN, username="boss"), "boss", change, if_match=None, repo=repo,
                              directory=FakeDirectory())


def test_a_patient_reads_only_their_own_trail():
    repo = FakeRepo()
    recorded: list[AuditEntry] = []
    me = ctx(Role.PATIENT, patient_id="p-mine")
    logic.search_audit_events(me, {}, repo=repo, record=lambda c, e: recorded.append(e))
    assert repo.audit_queries[-1].patient == "p-mine"
    page = logic.search_audit_events(me, {"patient": "p-other"}, repo=repo, record=lambda c, e: recorded.append(e))
    assert page.items == []
    assert len(repo.audit_queries) == 1
    assert [e.patient_ids for e in recorded] == [("p-mine",), ("p-mine",)]
    with pytest.raises(Forbidden):
        logic.search_audit_events(ctx(Role.PATIENT), {}, repo=repo, record=lambda c, e: None)


def test_the_auditor_reads_the_whole_tenant():
    repo = FakeRepo()
    logic.search_audit_events(ctx(Role.AUDITOR), {"agent": "sub-x"}, repo=repo, record=lambda c, e: None)
    assert repo.audit_queries[-1] == AuditQuery(agent="sub-x")


def test_new_tenant_ids_fit_the_token_rule():
    from expediente.context import TENANT_ID
    from ops.tenants import new_tenant_id

    ids = {new_tenant_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(TENANT_ID.match(t) and len(t) == 12 and t.startswith("t-") for t in ids)


def test_the_first_user_of_a_tenant_is_an_admin():
    request = rules.new_user({"username": "ana.admin", "email": "a@example.com", "role": "auditor"})
    with pytest.raises(Invalid):
        logic.create_tenant(ctx(), name="Cadena", admin=request, admin_password=None, tenant_item=never,
                            repo=Untouchable(), directory=Untouchable())


@dataclass
class FakeKeys:
    created: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def create(self, tenant, practitioner_id, *, now):
        from expediente.signing_keys import KeyRecord

        self.created.append(practitioner_id)
        return KeyRecord(practitioner_id=practitioner_id, kid=f"kid-{practitioner_id}", kind="kms",
                         public_key_pem="PEM", algorithms=("ES256",), created=now, key_id=f"arn:key/{practitioner_id}")

    def abandon(self, record):
        self.abandoned.append(record.key_id)


def practitioner_body(cedula: str = "1234567") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": "López", "given": ["Ana"]}],
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.215.12.18", "value": cedula}]}


def test_a_registered_practitioner_gets_a_signing_key_recorded_with_it():
    repo, keys = FakeRepo(), FakeKeys()
    written: list[Any] = []
    original = repo.save

    def save(ctx, write, *, now, entry, extra=()):
        written.extend(extra)
        original(ctx, write, now=now, entry=entry, extra=extra)

    repo.save = save  # type: ignore[method-assign]
    logic.create(ctx(Role.ADMIN), PRACTITIONER, practitioner_body(), repo=repo, clock=clock, new_id=lambda: "p1",
                 keys=keys)
    assert keys.created == ["p1"]
    assert [op["Put"]["Item"]["sk"]["S"] for op in written] == ["SIGNKEY#kid-p1", "SIGNKEY"]
    assert repo.entries[-1].detail == {"signing-key": "kid-p1"}
    assert keys.abandoned == []


def test_a_key_whose_practitioner_was_not_stored_is_abandoned():
    repo, keys = FakeRepo(), FakeKeys()
    repo.guards[("Practitioner", "1234567")] = "someone-else"

    def refuse(ctx, write, *, now, entry, extra=()):
        raise logic.Conflict("cédula taken")

    repo.save = refuse  # type: ignore[method-assign]
    with pytest.raises(DomainError):
        logic.create(ctx(Role.ADMIN), PRACTITIONER, practitioner_body(), repo=repo, clock=clock,
                     new_id=lambda: "p2", keys=keys)
    assert keys.abandoned == ["arn:key/p2"]
