"""Operational metrics: EMF lines with low-cardinality dimensions only."""

from __future__ import annotations

import json

import pytest

from expediente import metrics


def _emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_a_request_is_counted_with_its_route_and_latency(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "expediente-prescriptions")
    metrics._metrics.cache_clear()
    metrics.request("POST /fhir/MedicationRequest/<resource_id>/\\$sign", 409, 12.5)
    [line] = _emf(capsys.readouterr().out)
    definition = line["_aws"]["CloudWatchMetrics"][0]
    assert definition["Namespace"] == "Expediente"
    assert sorted(definition["Dimensions"][0]) == ["action", "service"]
    assert line["service"] == "expediente-prescriptions"
    assert line["action"] == "POST /fhir/MedicationRequest/<resource_id>/\\$sign"
    assert (line["Requests"], line["ClientErrors"], line["ServerErrors"], line["Latency"]) == (
        [1.0], [1.0], [0.0], [12.5])
    metrics._metrics.cache_clear()


def test_a_domain_counter_names_its_action(capsys: pytest.CaptureFixture[str]) -> None:
    metrics._metrics.cache_clear()
    metrics.count("DicomQuarantined", 3)
    metrics.count("DicomIngested", 0)
    lines = _emf(capsys.readouterr().out)
    assert [(line["action"], line.get("DicomQuarantined"), line.get("DicomIngested")) for line in lines] == [
        ("DicomQuarantined", [3.0], None), ("DicomIngested", None, [0.0])]
    metrics._metrics.cache_clear()
