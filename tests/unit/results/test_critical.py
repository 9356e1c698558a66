"""Critical-value rules without AWS: judging a value, who is called in which order, the summary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from expediente import critical_policy
from expediente.context import service_context
from expediente.errors import Invalid
from functions.results import critical, laboratory


def result(code: str, value: float, unit: str, flag: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": "obs1", "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                            "subject": {"reference": "Patient/p1"},
                            "valueQuantity": {"value": value, "unit": unit, "system": laboratory.UCUM, "code": unit}}
    if flag:
        body["interpretation"] = laboratory.interpretation(flag)
    return body


@pytest.mark.parametrize(("code", "value", "unit", "expected"), [
    ("2823-3", 6.3, "mmol/L", "HH"), ("2823-3", 6.2, "mmol/L", None), ("2823-3", 2.7, "meq/L", "LL"),
    ("2951-2", 119, "mmol/L", "LL"), ("2345-7", 451, "mg/dL", "HH"), ("2345-7", 30, "mmol/L", None),
    ("777-3", 19, "10*9/L", "LL"), ("777-3", 19, "10*3/uL", "LL"), ("718-7", 6.9, "g/dL", "LL"),
    ("6301-6", 5.1, "{INR}", "HH"), ("2744-1", 7.19, "[pH]", "LL"), ("2524-7", 4.1, "mmol/L", "HH"),
    ("10839-9", 50, "ng/mL", None),
])
def test_default_limits_of_domain_md(code: str, value: float, unit: str, expected: str | None) -> None:
    assert critical.judge(result(code, value, unit), critical_policy.Policy()) == expected


def test_the_laboratorys_own_critical_flag_counts_and_a_tenant_limit_overrides_the_default() -> None:
    assert critical.judge(result("10839-9", 2.5, "ng/mL", "HH"), critical_policy.Policy()) == "HH"
    assert critical.judge(result("2823-3", 5.0, "mmol/L", "H"), critical_policy.Policy()) is None
    policy = critical_policy.parse({"limits": [{"code": "2823-3", "units": ["mmol/L"], "high": 4.9}]},
                                   is_clinic=lambda c: True, is_practitioner=lambda p: True)
    assert critical.judge(result("2823-3", 5.0, "mmol/L"), policy) == "HH"
    assert policy.limits["2951-2"] == critical_policy.DEFAULT_LIMITS["2951-2"]


@pytest.mark.parametrize(("body", "where"), [
    ({"limits": [{"code": "2823-3", "units": ["mmol/L"]}]}, "limits[0]"),
    ({"limits": [{"code": "2823-3", "units": ["mmol/L"], "low": 5, "high": 3}]}, "limits[0].low"),
    ({"limits": [{"code": "2823-3", "units": [], "high": 3}]}, "limits[0].units"),
    ({"acknowledgeWithinMinutes": 1}, "acknowledgeWithinMinutes"),
    ({"onCall": {"XXXXX000000": []}}, "onCall.XXXXX000000"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_policy_is_refused_naming_the_field(body: dict[str, Any], where: str) -> None:
    with pytest.raises(Invalid) as refused:
        critical_policy.parse(body, is_clinic=lambda c: c == "HGIMB000151", is_practitioner=lambda p: True)
    assert refused.value.expression == where


def test_the_ordering_physician_is_called_first_then_the_on_call_list_cycling() -> None:
    policy = critical_policy.Policy(on_call={"HGIMB000151": ("oc1", "oc2")})
    chain = critical.contacts(policy, "HGIMB000151", "doc")
    assert chain == ("doc", "oc1", "oc2")
    assert [critical._contact(chain, level, True) for level in range(7)] == \
        ["doc", "oc1", "oc2", "oc1", "oc2", "oc1", "oc2"]
    assert critical._contact(("oc1",), 5, False) == "oc1"
    assert critical._contact((), 0, False) is None


def test_an_alert_with_nobody_to_call_is_still_a_valid_alert() -> None:
    ctx = service_context("t-chain-a", "test")
    opened = critical.open_alert(ctx, result("2823-3", 7.0, "mmol/L"), "HH", policy=critical_policy.Policy(),
                                 clinic="", ordering=None, alert_id="a1", now="2026-11-25T10:00:00.000Z")
    alert = opened.write.resource
    assert alert["recipient"] == [] and alert["status"] == "in-progress"
    assert critical.deadline_of(alert) == "2026-11-25T10:30:00.000Z"
    assert opened.event.practitioner_id is None and opened.event.interpretation == "HH"


def test_time_to_acknowledge_summarises_open_overdue_escalated_and_waits() -> None:
    alerts = [{"status": "completed", "waited": 60, "level": 0}, {"status": "completed", "waited": 600, "level": 1},
              {"status": "completed", "waited": 120, "level": 0},
              {"status": "in-progress", "deadline": "2026-11-25T09:00:00Z", "level": 2},
              {"status": "in-progress", "deadline": "2026-11-25T11:00:00Z", "level": 0}]
    summary = critical.time_to_acknowledge(alerts, now="2026-11-25T10:00:00Z")
    assert summary == {"alerts": 5, "acknowledged": 3, "open": 2, "openOverdue": 1, "escalated": 2,
                       "medianSeconds": 120, "p90Seconds": 600, "maxSeconds": 600}
    assert critical_policy.Policy().judge("2823-3", Decimal("9"), "mmol/L") == "HH"
