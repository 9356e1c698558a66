import pytest

from expediente.context import context_from_event, split_claim
from expediente.errors import Forbidden, Unauthenticated
from expediente.permissions import PERMISSIONS, Interaction, Role, allowed


def _event(**claims):
    base = {"sub": "u-1", "custom:tenant_id": "t-chain-a", "cognito:groups": "physician",
            "custom:clinic_ids": "HGIMB000151,HGIMB000163"}
    base.update(claims)
    return {"requestContext": {"authorizer": {"claims": {k: v for k, v in base.items() if v is not None}},
                               "requestId": "r", "identity": {"sourceIp": "198.51.100.1"}},
            "headers": {}}


@pytest.mark.parametrize("value", ["admin,physician", "[admin physician]", ["admin", "physician"]])
def test_group_claims_in_every_api_gateway_shape(value):
    assert split_claim(value) == ("admin", "physician")


def test_context_comes_from_verified_claims_only():
    event = _event()
    event["headers"] = {"X-Tenant": "t-other"}
    ctx = context_from_event(event)
    assert ctx.tenant == "t-chain-a" and ctx.roles == {Role.PHYSICIAN} and ctx.clinic == "HGIMB000151"


@pytest.mark.parametrize("claims", [{"sub": None}, {"custom:tenant_id": None}, {"custom:tenant_id": "../x"},
                                    {"cognito:groups": "superuser"}, {"token_use": "access"}])
def test_missing_or_malformed_claims_are_401(claims):
    with pytest.raises(Unauthenticated):
        context_from_event(_event(**claims))


def test_no_authorizer_is_401():
    with pytest.raises(Unauthenticated):
        context_from_event({"requestContext": {}})


def test_clinic_header_must_be_one_of_the_users_clinics():
    event = _event()
    event["headers"] = {"x-clinic": "HGIMB000163"}
    assert context_from_event(event).clinic == "HGIMB000163"
    event["headers"] = {"x-clinic": "HGSSA000001"}
    with pytest.raises(Forbidden):
        context_from_event(event)


def test_nobody_may_delete_anything():
    for grants in PERMISSIONS.values():
        for interactions in grants.values():
            assert Interaction.DELETE not in interactions


def test_permission_table_is_the_only_rule():
    assert allowed(frozenset({Role.RECEPTION}), "Patient", Interaction.CREATE)
    assert not allowed(frozenset({Role.LAB}), "Patient", Interaction.UPDATE)
    assert not allowed(frozenset({Role.PHYSICIAN}), "Unknown", Interaction.READ)


def test_settings_refuse_a_non_numeric_page_size(monkeypatch):
    from expediente.settings import ConfigurationError, settings

    settings.cache_clear()
    monkeypatch.setenv("FHIR_PAGE_MAX", "many")
    with pytest.raises(ConfigurationError, match="FHIR_PAGE_MAX"):
        settings()
    monkeypatch.setenv("FHIR_PAGE_MAX", "0")
    settings.cache_clear()
    with pytest.raises(ConfigurationError, match="at least 1"):
        settings()
    settings.cache_clear()
