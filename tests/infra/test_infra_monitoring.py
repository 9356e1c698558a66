"""Alarms and the operations dashboard: every function, the API and the domain signals are watched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import definitions
from infra.constructs.monitoring import DOMAIN_ALARMS
from tests.infra.synth_support import Synth, of_type

pytestmark = pytest.mark.infra


def _props(synth: Synth, alarm_id: str) -> dict[str, Any]:
    alarm = synth.stateless.monitoring.alarms[alarm_id]
    resources = synth.stateless_template.to_json()["Resources"]
    return dict(resources[synth.stateless.get_logical_id(alarm.node.default_child)]["Properties"])


@pytest.mark.parametrize("function_id", [f.id for f in definitions.FUNCTIONS])
def test_every_function_alarms_on_throttles_and_on_duration_near_its_timeout(synth: Synth, function_id: str) -> None:
    name = "".join(part[:1].upper() + part[1:] for part in function_id.split("_"))
    throttles, duration = _props(synth, f"{name}Throttles"), _props(synth, f"{name}Duration")
    assert throttles["MetricName"] == "Throttles" and throttles["Threshold"] == 1 and throttles["AlarmActions"]
    timeout = next(f.timeout_s for f in definitions.FUNCTIONS if f.id == function_id)
    assert duration["MetricName"] == "Duration" and duration["ExtendedStatistic"] == "p99"
    assert duration["Threshold"] == timeout * 1000 * 0.8 and duration["AlarmActions"]


def test_the_api_alarms_on_server_errors_and_latency(synth: Synth) -> None:
    assert _props(synth, "Api5xx")["MetricName"] == "5XXError"
    latency = _props(synth, "ApiLatency")
    assert latency["MetricName"] == "Latency" and latency["ExtendedStatistic"] == "p99"


@pytest.mark.parametrize(("function_id", "metric"), [(a[0], a[1]) for a in DOMAIN_ALARMS])
def test_domain_alarms_read_the_functions_own_metrics(synth: Synth, function_id: str, metric: str) -> None:
    props = _props(synth, metric)
    assert props["Namespace"] == "Expediente" and props["MetricName"] == metric
    assert sorted((d["Name"], d["Value"]) for d in props["Dimensions"]) == [
        ("action", metric), ("service", f"expediente-{function_id}")]
    assert props["AlarmActions"]


def test_the_domain_metrics_are_emitted_by_the_code() -> None:
    """Each alarmed or charted domain metric is counted somewhere in the functions (by its name)."""
    from pathlib import Path

    code = "\n".join(p.read_text(encoding="utf-8") for p in Path("functions").rglob("*.py"))
    names = [metric for _, metric, *_ in DOMAIN_ALARMS] + [
        "PrescriptionsSigned", "PrescriptionAlertsOverridden", "MedicationsDispensed"]
    assert [n for n in names if f'metrics.count("{n}"' not in code] == []


def test_the_dashboard_shows_the_api_functions_queues_and_domain(stateless_resources: dict[str, Any]) -> None:
    [dashboard] = of_type(stateless_resources, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in ("API requests and errors", "Function throttles", "Dead-letter queue depth", "DicomQuarantined",
                   "CriticalResultsEscalated", "PrescriptionAlertsOverridden", "Alarms"):
        assert needle in body, needle
    # one depth line per dead-letter queue (each queue's label)
    assert body.count("ApproximateNumberOfMessagesVisible") == len(definitions.QUEUES)
