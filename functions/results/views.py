"""What apps draw from results: the latest value of each test, one test over time, the printable report,
and how fast a clinic acknowledges critical results.

Every view reads through the index (one Query per test, never the patient's whole history) and
through the repository (tenant-scoped, patient users see only their own record). Entered-in-error
results are left out of the views (they stay readable by id and in ``_history``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from expediente import records
from expediente.clinical import ClinicalRepository, date_bounds, now_instant
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Invalid, NotFound
from expediente.fhir import page_size
from expediente.store import Stored

from . import critical, diagnostic_reports, laboratory, observations
from .repository import patient_codes

OBSERVATION = "Observation"
LASTN_MAX = 10
TREND_MAX = 200
PRINT_HISTORY = 10
TTA_MAX = 2000


def _patient(ctx: RequestContext, params: Mapping[str, str]) -> str:
    value = (params.get("patient") or params.get("subject") or "").removeprefix("Patient/")
    if not value:
        raise Invalid("patient is required", expression="patient")
    if not valid_resource_id(value):
        raise Invalid(f"patient {value!r} is not a valid id", expression="patient")
    ctx.require_own_patient(value)
    return value


def _not_in_error(attrs: Mapping[str, Any]) -> bool:
    return attrs.get("status") != "entered-in-error"


def _series(ctx: RequestContext, repo: ClinicalRepository, patient: str, code: str, *, limit: int,
            low: str | None = None, high: str | None = None) -> list[Stored]:
    """The newest ``limit`` results of one test of one patient (newest first)."""
    found, _ = repo.search(ctx, OBSERVATION, "patient-code", f"{patient}|{code}", limit=limit, token=None,
                           fingerprint=f"{patient}|{code}", low=low, high=high, keep=_not_in_error)
    return found


def lastn(ctx: RequestContext, repo: ClinicalRepository, params: Mapping[str, str]) -> list[Stored]:
    """FHIR ``Observation/$lastn``: per code, the ``max`` (default 1, at most 10) latest results of a patient.

    ``category`` limits the codes (``laboratory``, ``vital-signs``); ``code`` names them.
    """
    patient = _patient(ctx, params)
    raw_max = params.get("max") or "1"
    if not raw_max.isdigit() or not 1 <= int(raw_max) <= LASTN_MAX:
        raise Invalid(f"max must be a whole number from 1 to {LASTN_MAX}", expression="max")
    category = params.get("category") or None
    codes = [c for c in (params.get("code") or "").split(",") if c] or \
        patient_codes(ctx.tenant, patient, category=category)
    found: list[Stored] = []
    for code in dict.fromkeys(codes):
        series = _series(ctx, repo, patient, code, limit=int(raw_max))
        if category:
            series = [s for s in series if any(c.get("code") == category for cat in s.resource.get("category") or []
                                               for c in cat.get("coding") or [])]
        found += series
    return found


@dataclass(frozen=True)
class Trend:
    found: list[Stored]
    parameters: dict[str, Any]


def _point(resource: dict[str, Any]) -> dict[str, Any]:
    """One point of a trend: when, value, unit, range, flag, status and the Observation it comes from."""
    parts: list[dict[str, Any]] = [
        {"name": "observation", "valueReference": {"reference": f"Observation/{resource['id']}"}},
        {"name": "effective", "valueDateTime": resource["effectiveDateTime"]},
        {"name": "status", "valueCode": resource["status"]},
    ]
    if "valueQuantity" in resource:
        parts.append({"name": "value", "valueQuantity": resource["valueQuantity"]})
    elif "valueString" in resource:
        parts.append({"name": "value", "valueString": resource["valueString"]})
    band = (resource.get("referenceRange") or [{}])[0]
    for bound in ("low", "high"):
        if bound in band:
            parts.append({"name": bound, "valueQuantity": band[bound]})
    flag = laboratory.interpretation_code(resource)
    if flag:
        parts.append({"name": "interpretation", "valueCode": flag})
    return {"name": "point", "part": parts}


def trend(ctx: RequestContext, repo: ClinicalRepository, params: Mapping[str, str]) -> Trend:
    """``Observation/$trend?patient=&code=[&date=ge..&date=le..][&_count=]``: a ``Parameters`` with the
    test's name and its points oldest first (at most ``_count``, newest kept)."""
    patient = _patient(ctx, params)
    code = params.get("code") or ""
    if not code or "," in code:
        raise Invalid("code is required: one LOINC code", expression="code")
    low = high = None
    if params.get("date"):
        for value in params["date"].split(","):
            lo, hi = date_bounds("date", value)
            low, high = lo or low, hi or high
    limit = min(page_size(params) if params.get("_count") else TREND_MAX, TREND_MAX)
    found = _series(ctx, repo, patient, code, limit=limit, low=low, high=high)
    ordered = list(reversed(found))
    name = ordered[-1].resource["code"].get("text", code) if ordered else code
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}},
        {"name": "code", "valueCoding": {"system": "http://loinc.org", "code": code, "display": name}},
        *[_point(s.resource) for s in ordered],
    ]}
    return Trend(found, parameters)


# ------------------------------------------------------------------ printable report ---


@dataclass(frozen=True)
class Printable:
    patient_id: str
    html: str | None = None
    pdf: bytes | None = None


def printable(ctx: RequestContext, repo: ClinicalRepository, report_id: str, *,
              load: Callable[[RequestContext, records.Ref], dict[str, Any] | None], fmt: str) -> Printable:
    """The report rendered with its results, the patient and a short history of each abnormal test."""
    from . import report as render

    stored = repo.require(ctx, diagnostic_reports.REPORT, report_id)
    report = stored.resource
    patient_id = records.subject_of(report) or ""
    patient = load(ctx, records.Ref("Patient", patient_id))
    if patient is None:
        raise NotFound(f"Patient/{patient_id} not found")
    results = [s.resource for s in repo.get_many(ctx, OBSERVATION, diagnostic_reports.result_ids(report))]
    history: dict[str, list[render.Point]] = {}
    for result in results:
        flag = laboratory.interpretation_code(result)
        if flag in (None, "N") or "valueQuantity" not in result:
            continue
        code = laboratory.code_of(result)
        earlier = [s.resource for s in _series(ctx, repo, patient_id, code, limit=PRINT_HISTORY + 1)
                   if s.resource["id"] != result["id"] and "valueQuantity" in s.resource
                   and not s.resource["valueQuantity"].get("comparator")]
        history[code] = [render.Point(r["effectiveDateTime"], float(r["valueQuantity"]["value"]))
                         for r in reversed(earlier[:PRINT_HISTORY])]
    clinic = _clinic_name(ctx, report, load)
    data = render.ReportInput(report=report, observations=results, patient=patient, clinic_name=clinic,
                              history=history, issued_at=now_instant())
    if fmt == "html":
        return Printable(patient_id, html=render.render_html(data))
    return Printable(patient_id, pdf=render.render_pdf(data))


def _clinic_name(ctx: RequestContext, report: dict[str, Any],
                 load: Callable[[RequestContext, records.Ref], dict[str, Any] | None]) -> str:
    """The clinic of the report's order (its CLUES), for the printed header."""
    for order_id in observations.order_ids(report):
        order = load(ctx, records.Ref("ServiceRequest", order_id))
        clues = laboratory.order_clinic(order) if order is not None else None
        if clues:
            return f"Clínica CLUES {clues}"
    return "Laboratorio clínico"


# ------------------------------------------------------------------ time to acknowledge ---


def time_to_acknowledge(ctx: RequestContext, repo: ClinicalRepository, params: Mapping[str, str]) -> dict[str, Any]:
    """``Communication/$time-to-acknowledge?clinic=<CLUES>[&date=ge..&date=le..]``: a ``Parameters``."""
    clinic = params.get("clinic") or ""
    if not clinic:
        raise Invalid("clinic (its CLUES) is required", expression="clinic")
    low = high = None
    for value in (params.get("date") or "").split(","):
        if value:
            lo, hi = date_bounds("date", value)
            low, high = lo or low, hi or high
    index = repo.indexes[critical.COMMUNICATION]
    attrs: list[dict[str, Any]] = []
    token: str | None = None
    while len(attrs) < TTA_MAX:
        items, token = index.items(ctx.tenant, "clinic", clinic, limit=200, token=token, fingerprint=clinic,
                                   low=low, high=high)
        attrs += items
        if token is None:
            break
    summary = critical.time_to_acknowledge(attrs, now=now_instant())
    parameters: list[dict[str, Any]] = [{"name": "clinic", "valueString": clinic}]
    for name, value in summary.items():
        if value is not None:
            parameters.append({"name": name, "valueInteger": int(value)})
    if len(attrs) >= TTA_MAX:
        parameters.append({"name": "truncated", "valueBoolean": True})
    return {"resourceType": "Parameters", "parameter": parameters}
