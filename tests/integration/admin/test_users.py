"""User accounts: Cognito plus the tenant's user directory, through /admin/users."""

from __future__ import annotations

import logging

import boto3
import pytest

from tests.integration.admin.conftest import PASSWORD, REGION

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def clinic_and_doctor(admin_world, chain_a):
    clinic = admin_world.clinic(chain_a, "HGIMB000151")
    doctor = admin_world.practitioner(chain_a)
    return clinic, doctor


def _attributes(admin_world, username):
    cognito = boto3.client("cognito-idp", region_name=REGION)
    user = cognito.admin_get_user(UserPoolId=admin_world.stack.user_pool_id, Username=username)
    groups = cognito.admin_list_groups_for_user(UserPoolId=admin_world.stack.user_pool_id, Username=username)
    return {a["Name"]: a["Value"] for a in user["UserAttributes"]}, [g["GroupName"] for g in groups["Groups"]], user


def test_a_physician_account_needs_a_practitioner(admin_world, chain_a, clinic_and_doctor):
    body = {"username": "lucia.hernandez", "email": "lucia@example.com", "role": "physician",
            "clinic_ids": ["HGIMB000151"]}
    reply = chain_a.admin.post("/admin/users", body, headers=JSON)
    assert reply.status == 400
    assert reply.body["issue"][0]["expression"] == ["practitioner_id"]
    reply = chain_a.admin.post("/admin/users", {**body, "practitioner_id": clinic_and_doctor[1]["id"]}, headers=JSON)
    assert reply.status == 201, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body["role"] == "physician"
    assert reply.body["clinic_ids"] == ["HGIMB000151"]
    attributes, groups, _ = _attributes(admin_world, "lucia.hernandez")
    assert groups == ["physician"]
    assert attributes["custom:tenant_id"] == chain_a.id
    assert attributes["custom:clinic_ids"] == "HGIMB000151"
    assert attributes["custom:practitioner_id"] == clinic_and_doctor[1]["id"]


def test_the_tenant_comes_from_the_caller_never_the_body(admin_world, chain_a, chain_b, clinic_and_doctor):
    body = {"username": "intruso", "email": "i@example.com", "role": "auditor", "tenant_id": chain_b.id}
    refused = chain_a.admin.post("/admin/users", body, headers=JSON)
    assert refused.status == 400
    assert refused.body["issue"][0]["expression"] == ["tenant_id"]
    del body["tenant_id"]
    assert chain_a.admin.post("/admin/users", body, headers=JSON).status == 201
    assert _attributes(admin_world, "intruso")[0]["custom:tenant_id"] == chain_a.id


def test_clinics_and_practitioner_must_belong_to_the_tenant(admin_world, chain_a, chain_b, clinic_and_doctor):
    other_clinic = admin_world.clinic(chain_b, "HGIMB000163")
    other_doctor = admin_world.practitioner(chain_b)
    body = {"username": "nurse.one", "email": "n@example.com", "role": "nurse", "clinic_ids": ["HGIMB000151"],
            "practitioner_id": clinic_and_doctor[1]["id"]}
    foreign_clues = other_clinic["identifier"][0]["value"]
    foreign_clinic = chain_a.admin.post("/admin/users", {**body, "clinic_ids": [foreign_clues]}, headers=JSON)
    assert foreign_clinic.status == 422
    assert foreign_clinic.body["issue"][0]["expression"] == ["clinic_ids[0]"]
    foreign_doctor = chain_a.admin.post("/admin/users", {**body, "practitioner_id": other_doctor["id"]}, headers=JSON)
    assert foreign_doctor.status == 422
    assert foreign_doctor.body["issue"][0]["expression"] == ["practitioner_id"]
    bad_clues = chain_a.admin.post("/admin/users", {**body, "clinic_ids": ["HGIMB000151", "nope"]}, headers=JSON)
    assert bad_clues.status == 400
    assert bad_clues.body["issue"][0]["expression"] == ["clinic_ids[1]"]
    cognito = boto3.client("cognito-idp", region_name=REGION)
    with pytest.raises(cognito.exceptions.UserNotFoundException):
        cognito.admin_get_user(UserPoolId=admin_world.stack.user_pool_id, Username="nurse.one")


def test_an_inactive_clinic_cannot_be_granted(admin_world, chain_a, clinic_and_doctor):
    clinic = clinic_and_doctor[0]
    chain_a.admin.call("PUT", f"/fhir/Organization/{clinic['id']}", {**clinic, "active": False},
                       headers={"If-Match": 'W/"1"'})
    reply = chain_a.admin.post("/admin/users", {"username": "recep", "email": "r@example.com", "role": "reception",
                                                "clinic_ids": ["HGIMB000151"]}, headers=JSON)
    assert reply.status == 422


def test_a_created_user_can_sign_in_and_act_with_the_granted_role(admin_world, chain_a, clinic_and_doctor):
    physician = admin_world.user(chain_a, "physician", clinic_ids=["HGIMB000151"],
                                 practitioner_id=clinic_and_doctor[1]["id"])
    assert physician.claims["cognito:groups"] == "physician"
    assert physician.claims["custom:tenant_id"] == chain_a.id
    assert physician.get("/fhir/Organization").status == 200
    assert physician.get("/admin/users").status == 403


def test_list_users_is_paged_from_the_tenant_directory(admin_world, chain_a, chain_b):
    for _ in range(4):
        admin_world.user(chain_a, "auditor")
    admin_world.user(chain_b, "auditor")
    first = chain_a.admin.get("/admin/users", _count="3")
    assert first.status == 200
    assert len(first.body["users"]) == 3
    assert first.body["next_page"]
    rest = chain_a.admin.get("/admin/users", _count="3", _page=first.body["next_page"])
    assert len(rest.body["users"]) == 2
    assert rest.body["next_page"] is None
    usernames = [u["username"] for u in first.body["users"] + rest.body["users"]]
    assert len(set(usernames)) == 5
    assert chain_a.admin.username in usernames
    assert all(chain_b.id not in name for name in usernames)
    assert all("email" not in u for u in first.body["users"])
    assert chain_b.admin.get("/admin/users", _count="3", _page=first.body["next_page"]).status == 400


def test_a_user_of_another_tenant_answers_404(admin_world, chain_a, chain_b):
    auditor = admin_world.user(chain_a, "auditor")
    assert chain_a.admin.get(f"/admin/users/{auditor.username}").status == 200
    assert chain_b.admin.get(f"/admin/users/{auditor.username}").status == 404
    change = chain_b.admin.call("PUT", f"/admin/users/{auditor.username}", {"enabled": False}, headers=JSON)
    assert change.status == 404
    assert _attributes(admin_world, auditor.username)[2]["Enabled"] is True


def test_read_user_shows_cognito_email_and_status(admin_world, chain_a):
    auditor = admin_world.user(chain_a, "auditor")
    reply = chain_a.admin.get(f"/admin/users/{auditor.username}")
    assert reply.body["email"] == f"{auditor.username}@example.com"
    assert reply.body["status"] == "CONFIRMED"
    assert reply.body["user_id"] == auditor.user_id
    assert reply.headers["ETag"] == 'W/"1"'


def test_update_user_changes_role_clinics_and_enabled(admin_world, chain_a, clinic_and_doctor):
    admin_world.clinic(chain_a, "HGIMB000163", "Clínica Dos")
    user = admin_world.user(chain_a, "reception", clinic_ids=["HGIMB000151"])
    path = f"/admin/users/{user.username}"
    to_physician = chain_a.admin.call("PUT", path, {"role": "physician"}, headers=JSON)
    assert to_physician.status == 400
    assert to_physician.body["issue"][0]["expression"] == ["practitioner_id"]
    changed = chain_a.admin.call("PUT", path, {"role": "physician", "practitioner_id": clinic_and_doctor[1]["id"],
                                               "clinic_ids": ["HGIMB000151", "HGIMB000163"]},
                                 headers={**JSON, "If-Match": 'W/"1"'})
    assert changed.status == 200, changed.body
    assert changed.body["version"] == 2
    assert changed.headers["ETag"] == 'W/"2"'
    attributes, groups, _ = _attributes(admin_world, user.username)
    assert groups == ["physician"]
    assert attributes["custom:clinic_ids"] == "HGIMB000151,HGIMB000163"
    stale = chain_a.admin.call("PUT", path, {"enabled": False}, headers={**JSON, "If-Match": 'W/"1"'})
    assert stale.status == 412
    disabled = chain_a.admin.call("PUT", path, {"enabled": False}, headers=JSON)
    assert disabled.status == 200
    assert disabled.body["enabled"] is False
    assert _attributes(admin_world, user.username)[2]["Enabled"] is False
    with pytest.raises(admin_world.cognito.exceptions.NotAuthorizedException):
        admin_world.login(user.username, PASSWORD)


def test_an_admin_cannot_lock_themselves_out(chain_a):
    path = f"/admin/users/{chain_a.admin.username}"
    assert chain_a.admin.call("PUT", path, {"enabled": False}, headers=JSON).status == 422
    assert chain_a.admin.call("PUT", path, {"role": "auditor"}, headers=JSON).status == 422


def test_a_taken_username_is_409_and_nothing_is_written(admin_world, chain_a, chain_b):
    body = {"username": "compartido", "email": "c@example.com", "role": "auditor"}
    assert chain_a.admin.post("/admin/users", body, headers=JSON).status == 201
    reply = chain_b.admin.post("/admin/users", body, headers=JSON)
    assert reply.status == 409
    assert [u["username"] for u in chain_b.admin.get("/admin/users").body["users"]] == [chain_b.admin.username]


def test_patient_accounts_link_their_record(admin_world, chain_a):
    first, second = admin_world.patient(chain_a), admin_world.patient(chain_a)
    body = {"username": "paciente.uno", "email": "p@example.com", "role": "patient"}
    missing = chain_a.admin.post("/admin/users", body, headers=JSON)
    assert missing.status == 400
    assert missing.body["issue"][0]["expression"] == ["patient_id"]
    reply = chain_a.admin.post("/admin/users", {**body, "patient_id": first}, headers=JSON)
    assert reply.status == 201
    assert reply.body["patient_id"] == first
    assert _attributes(admin_world, "paciente.uno")[0]["custom:patient_id"] == first
    relinked = chain_a.admin.call("PUT", "/admin/users/paciente.uno", {"patient_id": second}, headers=JSON)
    assert relinked.status == 200
    assert _attributes(admin_world, "paciente.uno")[0]["custom:patient_id"] == second
    unlinked = chain_a.admin.call("PUT", "/admin/users/paciente.uno", {"patient_id": None}, headers=JSON)
    assert unlinked.status == 400


def test_a_patient_account_must_link_a_patient_of_the_chain(admin_world, chain_a, chain_b):
    theirs = admin_world.patient(chain_b)
    body = {"username": "paciente.dos", "email": "p2@example.com", "role": "patient"}
    answers = [chain_a.admin.post("/admin/users", {**body, "patient_id": pid}, headers=JSON)
               for pid in ("abcdefghijklmnop", theirs)]
    # Another chain's patient answers exactly like an id nobody has, and neither is echoed.
    assert [a.status for a in answers] == [422, 422]
    assert answers[0].body == answers[1].body
    assert answers[0].body["issue"][0]["expression"] == ["patient_id"] and theirs not in str(answers[1].body)
    assert chain_a.admin.get("/admin/users/paciente.dos").status == 404  # no account was made
    mine = admin_world.patient(chain_a)
    assert chain_a.admin.post("/admin/users", {**body, "patient_id": mine}, headers=JSON).status == 201
    moved = chain_a.admin.call("PUT", "/admin/users/paciente.dos", {"patient_id": theirs}, headers=JSON)
    assert moved.status == 422
    assert _attributes(admin_world, "paciente.dos")[0]["custom:patient_id"] == mine


def test_emails_are_never_logged(admin_world, chain_a, caplog, capsys):
    caplog.set_level(logging.INFO)
    admin_world.user(chain_a, "auditor")
    bad = chain_a.admin.post("/admin/users", {"username": "x1x", "email": "not-an-address", "role": "auditor"},
                             headers=JSON)
    assert bad.status == 400
    assert "not-an-address" not in bad.issue
    logged = caplog.text + capsys.readouterr().out
    assert "@example.com" not in logged
    assert "not-an-address" not in logged
