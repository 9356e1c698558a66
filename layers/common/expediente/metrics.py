"""Operational metrics in CloudWatch Embedded Metric Format (Powertools Metrics), namespace ``Expediente``.

Two kinds, both with low-cardinality dimensions only (``service`` = the function; ``action`` = a
route template or a domain action; never a tenant, patient or resource id: tenants are in every log
line's context for CloudWatch Logs Insights instead):

- every API request: ``Requests``, ``ServerErrors`` (5xx), ``ClientErrors`` (4xx) and ``Latency``
  (milliseconds) per route (:func:`request`, from the middleware of :func:`expediente.api.create_app`);
- domain events the alarms and the dashboard watch (:func:`count`): ``DicomQuarantined``,
  ``CriticalResultsEscalated`` (critical results still unacknowledged at their deadline),
  ``PrescriptionAlertsOverridden``, ``PrescriptionsSigned``, ``MedicationsDispensed``…

The metrics are printed as EMF JSON to the function's log, which CloudWatch turns into metrics; the
import of Powertools Metrics happens on the first metric, not at cold start.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

NAMESPACE = "Expediente"


@cache
def _metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE)


def _flush(action: str, values: list[tuple[str, str, float]]) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = _metrics()
    metrics.add_dimension(name="action", value=action[:250] or "unknown")
    for name, unit, value in values:
        metrics.add_metric(name=name, unit=getattr(MetricUnit, unit), value=value)
    metrics.flush_metrics()


def request(action: str, status: int, latency_ms: float) -> None:
    """One API request's metrics (``action`` is the route template, e.g. ``POST /fhir/MedicationRequest``)."""
    _flush(action, [("Requests", "Count", 1), ("ServerErrors", "Count", 1 if status >= 500 else 0),
                    ("ClientErrors", "Count", 1 if 400 <= status < 500 else 0),
                    ("Latency", "Milliseconds", latency_ms)])


def count(name: str, value: float = 1, *, action: str | None = None) -> None:
    """A domain event counter (``action`` defaults to the metric's name)."""
    _flush(action or name, [(name, "Count", value)])
