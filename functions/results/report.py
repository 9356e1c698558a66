"""Printable laboratory report (*informe de laboratorio*) of one DiagnosticReport, as HTML and as PDF.

Contract:

- Input is a :class:`ReportInput` of FHIR R4 JSON dicts the caller has already read (the DiagnosticReport,
  its Observations in ``report.result`` order, the Patient), the clinic name, earlier values per LOINC code
  (oldest first) and ``issued_at``, the instant printed as *Emitido*. Nothing here reads storage, calls AWS or
  reads the clock, so the same input always gives the same output (the PDF's creation date is ``issued_at``).
- Missing or malformed elements are left blank, never an error: the report shows what the records hold.
- Labels are Spanish (es-MX). Dates print as DD/MM/AAAA, with HH:MM when the value has a time, in the value's
  own offset (never converted to another zone); a value that is not a FHIR date prints as written.
- One table row per Observation (a panel's ``component`` entries follow as indented rows): name, result,
  unit, reference range (``referenceRange[0]``), flag from ``interpretation`` (HH/LL "CRÍTICO ALTO"/"CRÍTICO
  BAJO" and AA "CRÍTICO", highlighted; H/L/A "ALTO"/"BAJO"/"ANORMAL"; N "Normal"; other interpretations
  by their text and counted as abnormal). Status marks: preliminary "Preliminar", amended/corrected
  "Corregido", entered-in-error "Anulado" with the row struck through (an annulled row gets no trend).
- A trend (*Tendencia*) is drawn for every abnormal, non-annulled numeric result whose LOINC code has
  history: the history plus the current value, over the shaded reference range (:func:`trend_svg`; the PDF
  draws the same geometry with fpdf2 lines, rectangle and circle).
- :func:`render_html` returns a standalone HTML5 document: UTF-8, A4 print stylesheet, no scripts and no
  external resources (a Content-Security-Policy says so too); every input value goes through
  :func:`html.escape`.
- :func:`render_pdf` returns A4 PDF bytes made with fpdf2 (imported on first use: Lambda cold starts that
  never print do not load it) in the core font Helvetica, whose encoding is latin-1: characters outside
  latin-1 print as an ASCII (or latin-1) fallback ("≥" as ">=", "μ" as "µ", "⁹" as "^9") or "?".
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from expediente import identifiers as ids

if TYPE_CHECKING:
    from fpdf import FPDF

LOINC_SYSTEM = "http://loinc.org"
TITLE = "Informe de laboratorio"


@dataclass(frozen=True)
class Point:
    """One past value of a test, for the trend."""

    when: str  # FHIR dateTime
    value: float


@dataclass(frozen=True)
class ReportInput:
    """Everything one report shows; the caller reads it (and chooses ``issued_at``)."""

    report: dict[str, Any]  # FHIR DiagnosticReport
    observations: list[dict[str, Any]]  # the Observations of report.result, in report order
    patient: dict[str, Any]  # FHIR Patient
    clinic_name: str
    history: dict[str, list[Point]]  # LOINC code -> earlier values, oldest first
    issued_at: str  # FHIR instant the document is rendered


# ----------------------------------------------------------------- view model ---

# interpretation code -> (label, severity); severities rank normal < abnormal < critical
_FLAGS: dict[str, tuple[str, str]] = {
    "N": ("Normal", "normal"),
    "H": ("ALTO", "abnormal"),
    "L": ("BAJO", "abnormal"),
    "A": ("ANORMAL", "abnormal"),
    "HH": ("CRÍTICO ALTO", "critical"),
    "LL": ("CRÍTICO BAJO", "critical"),
    "AA": ("CRÍTICO", "critical"),
}
_RANK = {"": 0, "normal": 1, "abnormal": 2, "critical": 3}
_OBSERVATION_MARKS = {
    "registered": "Pendiente",
    "preliminary": "Preliminar",
    "amended": "Corregido",
    "corrected": "Corregido",
    "cancelled": "Cancelado",
    "entered-in-error": "Anulado",
}
_REPORT_STATUSES = {
    "registered": "Registrado",
    "partial": "Parcial",
    "preliminary": "Preliminar",
    "final": "Final",
    "amended": "Corregido",
    "corrected": "Corregido",
    "appended": "Con adenda",
    "cancelled": "Cancelado",
    "entered-in-error": "Anulado",
    "unknown": "Desconocido",
}
_REPORT_BANNERS = {
    "registered": "INFORME PENDIENTE: sin resultados validados",
    "partial": "INFORME PARCIAL: resultados incompletos",
    "preliminary": "INFORME PRELIMINAR: resultados no validados",
    "cancelled": "INFORME CANCELADO",
    "entered-in-error": "INFORME ANULADO: registrado por error, no usar",
}
_GENDERS = {"male": "Masculino", "female": "Femenino", "other": "Otro", "unknown": "Desconocido"}
_ABSENT = {
    "unknown": "Desconocido",
    "asked-unknown": "Desconocido",
    "temp-unknown": "Pendiente",
    "not-asked": "No solicitado",
    "masked": "Oculto",
    "not-applicable": "No aplica",
    "unsupported": "No disponible",
    "as-text": "Ver nota",
    "error": "Error",
    "not-a-number": "No numérico",
    "negative-infinity": "Fuera de rango (bajo)",
    "positive-infinity": "Fuera de rango (alto)",
    "not-performed": "No realizado",
    "not-permitted": "No permitido",
}
_ID_LABELS = {ids.CURP_SYSTEM: "CURP", ids.FOLIO_SYSTEM: "Folio"}


@dataclass(frozen=True)
class _Row:
    name: str
    value: str
    unit: str
    range: str
    flag: str  # Spanish label, "" without interpretation
    severity: str  # "", "normal", "abnormal", "critical"
    mark: str  # "", "Preliminar", "Corregido", "Anulado", ...
    annulled: bool
    component: bool  # a panel's component, printed under its Observation
    code: str  # LOINC code ("" when none)
    number: float | None  # the numeric value, for the trend
    low: float | None
    high: float | None
    when: str  # FHIR dateTime of the value

    @property
    def abnormal(self) -> bool:
        return self.severity in ("abnormal", "critical")


@dataclass(frozen=True)
class _Trend:
    row: _Row
    points: tuple[Point, ...]  # history, then the current value


@dataclass(frozen=True)
class _View:
    clinic: str
    patient_name: str
    birth_date: str
    sex: str
    identifiers: tuple[tuple[str, str], ...]  # (label, value)
    title: str
    status: str
    banner: str
    effective: str  # raw FHIR values; formatted where printed
    issued: str
    rows: tuple[_Row, ...]
    trends: tuple[_Trend, ...]
    conclusion: str
    conclusion_codes: tuple[str, ...]
    performers: tuple[str, ...]
    interpreters: tuple[str, ...]
    issued_at: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _trend_text(value: float) -> str:
    """A trend value: whole numbers without ".0" (the current value comes in as a float)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else _number_text(value)


def _point_text(point: Point) -> str:
    return f"{_trend_text(point.value)} ({format_date(point.when)})" if point.when else _trend_text(point.value)


def _number_text(value: Any) -> str:
    """A FHIR decimal as written (``140.0`` keeps its precision), never in exponent notation."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    decimal = value if isinstance(value, Decimal) else Decimal(repr(value))
    return "" if not decimal.is_finite() else format(decimal, "f")


def _concept(value: Any) -> str:
    """What a CodeableConcept says: its text, else its first display, else its first code."""
    concept = _dict(value)
    if text := _str(concept.get("text")):
        return text
    codings = [_dict(c) for c in _list(concept.get("coding"))]
    for key in ("display", "code"):
        for coding in codings:
            if found := _str(coding.get(key)):
                return found
    return ""


def _loinc(concept: Any) -> str:
    codings = [_dict(c) for c in _list(_dict(concept).get("coding"))]
    for coding in codings:
        if coding.get("system") == LOINC_SYSTEM and (code := _str(coding.get("code"))):
            return code
    return next((code for c in codings if not c.get("system") and (code := _str(c.get("code")))), "")


def _displays(references: Any) -> tuple[str, ...]:
    return tuple(d for r in _list(references) if (d := _str(_dict(r).get("display"))))


def _quantity(quantity: Any) -> tuple[str, str]:
    """(value, unit) of a Quantity; the comparator goes before the value."""
    q = _dict(quantity)
    number = _number_text(q.get("value"))
    value = f"{_str(q.get('comparator'))}{number}" if number else ""
    return value, _str(q.get("unit")) or _str(q.get("code"))


def _value(element: dict[str, Any]) -> tuple[str, str, float | None]:
    """(value, unit, number) of an Observation or component ``value[x]``."""
    if "valueQuantity" in element:
        value, unit = _quantity(element["valueQuantity"])
        quantity = _dict(element["valueQuantity"])
        number = None if quantity.get("comparator") else _number(quantity.get("value"))
        return value, unit, number
    if "valueString" in element:
        return _str(element["valueString"]), "", None
    if "valueCodeableConcept" in element:
        return _concept(element["valueCodeableConcept"]), "", None
    if "valueInteger" in element:
        return _number_text(element["valueInteger"]), "", _number(element["valueInteger"])
    if "valueBoolean" in element and isinstance(element["valueBoolean"], bool):
        return ("Sí" if element["valueBoolean"] else "No"), "", None
    if "valueDateTime" in element:
        return format_date(_str(element["valueDateTime"])), "", None
    if "valueRange" in element:
        low, low_unit = _quantity(_dict(element["valueRange"]).get("low"))
        high, high_unit = _quantity(_dict(element["valueRange"]).get("high"))
        return " – ".join(v for v in (low, high) if v), high_unit or low_unit, None
    if "valueRatio" in element:
        numerator, numerator_unit = _quantity(_dict(element["valueRatio"]).get("numerator"))
        denominator, denominator_unit = _quantity(_dict(element["valueRatio"]).get("denominator"))
        return f"{numerator} {numerator_unit}".strip() + "/" + f"{denominator} {denominator_unit}".strip(), "", None
    if "dataAbsentReason" in element:
        reason = _dict(element["dataAbsentReason"])
        code = next((_str(_dict(c).get("code")) for c in _list(reason.get("coding"))), "")
        return _str(reason.get("text")) or _ABSENT.get(code, "Sin resultado"), "", None
    return "", "", None


def _reference_range(element: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(text, low, high) of ``referenceRange[0]``: "3.5 – 5.1 mmol/L", "≥ 60 mL/min", or its text."""
    ranges = _list(element.get("referenceRange"))
    first = _dict(ranges[0]) if ranges else {}
    low_q, high_q = _dict(first.get("low")), _dict(first.get("high"))
    low, high = _number_text(low_q.get("value")), _number_text(high_q.get("value"))
    unit = _str(high_q.get("unit")) or _str(low_q.get("unit"))
    if low and high:
        text = f"{low} – {high}"
    elif low:
        text = f"≥ {low}"
    elif high:
        text = f"≤ {high}"
    else:
        return _str(first.get("text")), None, None
    return f"{text} {unit}".strip(), _number(low_q.get("value")), _number(high_q.get("value"))


def _flag(element: dict[str, Any]) -> tuple[str, str]:
    """(label, severity) of ``interpretation``: the most severe known code, else its text (abnormal)."""
    best: tuple[str, str] = ("", "")
    other = ""
    for interpretation in _list(element.get("interpretation")):
        for coding in _list(_dict(interpretation).get("coding")):
            code = _str(_dict(coding).get("code")).upper()
            if code in _FLAGS and _RANK[_FLAGS[code][1]] > _RANK[best[1]]:
                best = _FLAGS[code]
        other = other or _concept(interpretation)
    if best[1]:
        return best
    return (other, "abnormal") if other else ("", "")


def _rows(observation: dict[str, Any], report_when: str) -> list[_Row]:
    status = _str(observation.get("status"))
    mark = _OBSERVATION_MARKS.get(status, "")
    annulled = status == "entered-in-error"
    when = _str(observation.get("effectiveDateTime")) or _str(
        _dict(observation.get("effectivePeriod")).get("start")) or report_when

    def row(element: dict[str, Any], *, component: bool) -> _Row:
        value, unit, number = _value(element)
        range_text, low, high = _reference_range(element)
        flag, severity = _flag(element)
        return _Row(name=_concept(element.get("code")), value=value, unit=unit, range=range_text, flag=flag,
                    severity=severity, mark="" if component else mark, annulled=annulled, component=component,
                    code=_loinc(element.get("code")), number=number, low=low, high=high, when=when)

    components = [_dict(c) for c in _list(observation.get("component"))]
    return [row(observation, component=False), *(row(c, component=True) for c in components)]


def _patient_name(patient: dict[str, Any]) -> str:
    names = [_dict(n) for n in _list(patient.get("name"))]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = " ".join(g for g in (_str(x) for x in _list(name.get("given"))) if g)
    return " ".join(p for p in (given, _str(name.get("family"))) if p) or _str(name.get("text"))


def _patient_identifiers(patient: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for identifier in (_dict(i) for i in _list(patient.get("identifier"))):
        if value := _str(identifier.get("value")):
            label = _ID_LABELS.get(_str(identifier.get("system"))) or _concept(identifier.get("type"))
            out.append((label or "Identificador", value))
    return tuple(out)


def _view(data: ReportInput) -> _View:
    report = _dict(data.report)
    effective = _str(report.get("effectiveDateTime")) or _str(_dict(report.get("effectivePeriod")).get("start"))
    rows = tuple(r for o in data.observations for r in _rows(_dict(o), effective))
    history = data.history if isinstance(data.history, dict) else {}
    trends = tuple(
        _Trend(row, (*history[row.code], Point(row.when, row.number)))
        for row in rows
        if row.abnormal and not row.annulled and row.number is not None and row.code and history.get(row.code)
    )
    status = _str(report.get("status"))
    patient = _dict(data.patient)
    return _View(
        clinic=_str(data.clinic_name),
        patient_name=_patient_name(patient),
        birth_date=_str(patient.get("birthDate")),
        sex=_GENDERS.get(_str(patient.get("gender")), ""),
        identifiers=_patient_identifiers(patient),
        title=_concept(report.get("code")),
        status=_REPORT_STATUSES.get(status, status),
        banner=_REPORT_BANNERS.get(status, ""),
        effective=effective,
        issued=_str(report.get("issued")),
        rows=rows,
        trends=trends,
        conclusion=_str(report.get("conclusion")),
        conclusion_codes=tuple(c for c in (_concept(x) for x in _list(report.get("conclusionCode"))) if c),
        performers=_displays(report.get("performer")),
        interpreters=_displays(report.get("resultsInterpreter")),
        issued_at=_str(data.issued_at),
    )


_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?")


def format_date(value: str) -> str:
    """A FHIR date/dateTime/instant as DD/MM/AAAA [HH:MM], in its own offset; anything else as written."""
    match = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        return value if isinstance(value, str) else ""
    year, month, day, hour, minute = match.groups()
    text = "/".join(p for p in (day, month, year) if p)
    return f"{text} {hour}:{minute}" if hour else text


# ---------------------------------------------------------------- sparkline ---


@dataclass(frozen=True)
class _Spark:
    points: tuple[tuple[float, float], ...]  # (x, y) inside a width x height box, y downwards
    band: tuple[float, float] | None  # (top, bottom) of the reference range
    outside: bool  # the last value lies outside the reference range


def _spark(values: Sequence[float], low: float | None, high: float | None, width: float, height: float,
           inset: float) -> _Spark:
    """Where the values and the reference band go in a box: scaled to values and range, padded 10 %."""
    bounds = [*values, *(b for b in (low, high) if b is not None)]
    if not bounds:
        return _Spark((), None, False)
    bottom, top = min(bounds), max(bounds)
    if top == bottom:
        half = abs(top) * 0.1 or 1.0
        bottom, top = bottom - half, top + half
    pad = (top - bottom) * 0.1
    bottom, top = bottom - pad, top + pad

    def y(v: float) -> float:
        return inset + (top - v) / (top - bottom) * (height - 2 * inset)

    step = (width - 2 * inset) / (len(values) - 1) if len(values) > 1 else 0.0
    points = tuple(((inset + i * step) if len(values) > 1 else width / 2, y(v)) for i, v in enumerate(values))
    band = None
    if low is not None or high is not None:
        band = (y(high) if high is not None else 0.0, y(low) if low is not None else height)
    last = values[-1] if values else None
    outside = last is not None and ((low is not None and last < low) or (high is not None and last > high))
    return _Spark(points, band, outside)


def _finite(value: float | None) -> float | None:
    return _number(value) if value is not None else None


def _f(value: float) -> str:
    return f"{value:.2f}"


def trend_svg(points: Sequence[Point], *, low: float | None, high: float | None, width: int = 160,
              height: int = 40) -> str:
    """An inline SVG sparkline of ``points`` (oldest first; the last one is the current value).

    The shaded band is the reference range (``low``/``high``, either may be absent); the line joins the values,
    the last one is a dot (red when outside the range). Values and range set the scale, padded 10 %. With one
    point it is just the dot; with none the SVG is empty; both say "sin historial" in their ``<title>``.
    Non-finite values are left out.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    kept = [p for p in points if _number(p.value) is not None]
    values = [float(p.value) for p in kept]
    low, high = _finite(low), _finite(high)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="tendencia" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">')
    title = "Tendencia: " + ", ".join(_point_text(p) for p in kept) if len(kept) > 1 else "sin historial"
    parts = [head, f"<title>{html.escape(title)}</title>"]
    if not kept:
        return "".join([*parts, "</svg>"])
    radius = max(1.5, min(width, height) * 0.07)
    spark = _spark(values, low, high, width, height, radius + 1)
    if spark.band is not None:
        top, bottom = spark.band
        parts.append(f'<rect class="intervalo" x="0" y="{_f(top)}" width="{width}" height="{_f(bottom - top)}" '
                     'fill="#dcefdc"/>')
    if len(spark.points) > 1:
        coordinates = " ".join(f"{_f(x)},{_f(y)}" for x, y in spark.points)
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="#333333" stroke-width="1.5" '
                     'stroke-linejoin="round"/>')
    x, y = spark.points[-1]
    colour = "#c00000" if spark.outside else "#333333"
    parts.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(radius)}" fill="{colour}"/>')
    return "".join([*parts, "</svg>"])


# --------------------------------------------------------------------- HTML ---

_CSS = """
@page { size: A4; margin: 15mm 12mm 18mm 12mm;
  @bottom-right { content: "Página " counter(page) " de " counter(pages); font: 8pt Helvetica, Arial, sans-serif; }
}
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 10pt/1.35 Helvetica, Arial, sans-serif; color: #111; margin: 0 auto; max-width: 190mm; }
header { display: flex; justify-content: space-between; align-items: baseline;
  border-bottom: 1.5pt solid #333; padding-bottom: 2mm; margin-bottom: 3mm; }
header .clinica { font-size: 13pt; font-weight: bold; }
header h1 { font-size: 12pt; margin: 0; }
h2 { font-size: 11pt; margin: 4mm 0 2mm; }
.aviso { border: 1.5pt solid #c00000; color: #c00000; font-weight: bold; padding: 1.5mm 3mm; margin: 2mm 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.5mm 4mm; margin: 0 0 3mm; }
dt { font-weight: bold; }
dd { margin: 0; }
table.resultados { width: 100%; border-collapse: collapse; }
table.resultados th, table.resultados td { border-bottom: 0.5pt solid #999; padding: 1mm 1.5mm; text-align: left;
  vertical-align: top; }
table.resultados thead { display: table-header-group; }
table.resultados th { background: #e6e6e6; }
table.resultados tr { break-inside: avoid; }
tr.componente td:first-child { padding-left: 6mm; }
tr.anormal td.bandera { font-weight: bold; }
tr.critico td { background: #fde0e0; }
tr.critico td.bandera { background: #c00000; color: #fff; font-weight: bold; }
tr.anulado td { text-decoration: line-through; color: #777; background: none; }
tr.anulado td.bandera { background: none; color: #777; font-weight: normal; }
.marca { display: inline-block; text-decoration: none; font-size: 8pt; border: 0.5pt solid #777;
  border-radius: 2pt; padding: 0 1mm; margin-left: 1.5mm; color: #333; }
.tendencias { break-inside: avoid; }
.tendencia-item { display: flex; gap: 4mm; align-items: center; margin: 1.5mm 0; break-inside: avoid; }
.tendencia-item .nombre { width: 45mm; font-weight: bold; }
.tendencia-item .valores { font-size: 8pt; color: #444; }
.conclusion p { white-space: pre-line; margin: 0 0 2mm; }
footer { margin-top: 6mm; border-top: 0.5pt solid #999; padding-top: 2mm; font-size: 8pt; color: #444; }
""".strip()
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _time(value: str) -> str:
    if not value:
        return ""
    shown = format_date(value)
    return f'<time datetime="{_e(value)}">{_e(shown)}</time>' if shown != value else _e(value)


def _html_row(row: _Row) -> str:
    live = not row.annulled  # an annulled value is not flagged
    classes = [c for c, on in (("componente", row.component), ("anulado", row.annulled),
                               ("critico", live and row.severity == "critical"), ("anormal", live and row.abnormal))
               if on]
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    mark = f' <span class="marca">{_e(row.mark)}</span>' if row.mark else ""
    cells = (f"<td>{_e(row.name)}{mark}</td><td>{_e(row.value)}</td><td>{_e(row.unit)}</td>"
             f'<td>{_e(row.range)}</td><td class="bandera">{_e(row.flag)}</td>')
    return f"<tr{attribute}>{cells}</tr>"


def _html_trend(trend: _Trend) -> str:
    row = trend.row
    svg = trend_svg(trend.points, low=row.low, high=row.high)
    values = " · ".join(_point_text(p) for p in trend.points)
    name = f"{row.name} ({row.unit})" if row.unit else row.name
    return (f'<div class="tendencia-item"><span class="nombre">{_e(name)}</span>{svg}'
            f'<span class="valores">{_e(values)}</span></div>')


def render_html(data: ReportInput) -> str:
    """The report as a standalone, printable HTML5 document (see the module docstring)."""
    view = _view(data)
    patient = [("Paciente", _e(view.patient_name)), ("Fecha de nacimiento", _time(view.birth_date)),
               ("Sexo", _e(view.sex)), *((_e(label), _e(value)) for label, value in view.identifiers)]
    study = [("Fecha de toma", _time(view.effective)),
             ("Fecha de resultados", _time(view.issued)), ("Estado", _e(view.status))]
    if view.performers:
        study.append(("Realizado por", _e(", ".join(view.performers))))

    def definitions(pairs: list[tuple[str, str]]) -> str:
        return "<dl>" + "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in pairs if value) + "</dl>"

    parts = [
        "<!doctype html>",
        '<html lang="es-MX"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(TITLE)} – {_e(view.patient_name)}</title>",
        f"<style>\n{_CSS}\n</style></head><body>",
        f'<header><div class="clinica">{_e(view.clinic)}</div><h1>{_e(TITLE)}</h1></header>',
    ]
    if view.banner:
        parts.append(f'<p class="aviso">{_e(view.banner)}</p>')
    parts.append(f'<section class="paciente">{definitions(patient)}</section>')
    parts.append(f'<section class="estudio"><h2>{_e(view.title)}</h2>{definitions(study)}</section>')
    parts.append('<table class="resultados"><thead><tr><th>Estudio</th><th>Resultado</th><th>Unidades</th>'
                 "<th>Intervalo de referencia</th><th>Bandera</th></tr></thead><tbody>")
    parts.extend(_html_row(row) for row in view.rows)
    parts.append("</tbody></table>")
    if view.trends:
        parts.append('<section class="tendencias"><h2>Tendencia</h2>')
        parts.extend(_html_trend(trend) for trend in view.trends)
        parts.append("</section>")
    if view.conclusion or view.conclusion_codes:
        parts.append('<section class="conclusion"><h2>Conclusión</h2>')
        if view.conclusion:
            parts.append(f"<p>{_e(view.conclusion)}</p>")
        if view.conclusion_codes:
            parts.append(f"<p>{_e('; '.join(view.conclusion_codes))}</p>")
        parts.append("</section>")
    footer = []
    if view.interpreters:
        footer.append(f"<div>Validado por: {_e(', '.join(view.interpreters))}</div>")
    footer.append(f"<div>Emitido: {_time(view.issued_at)}</div>")
    parts.append(f"<footer>{''.join(footer)}</footer></body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------- PDF ---

_FALLBACKS = {
    "≥": ">=", "≤": "<=", "≠": "!=", "≈": "~", "−": "-", "–": "-", "—": "-", "‐": "-", "‑": "-",
    "‘": "'", "’": "'", "‚": ",", "“": '"', "”": '"', "„": '"', "…": "...", "•": "·", "→": "->", "←": "<-",
    "€": "EUR", "™": "TM", "μ": "µ", "Ω": "Ohm", "‰": "o/oo", "\u2009": " ", "\u202f": " ", "\u2007": " ",
    "\u200b": "", "\ufeff": "", "⁰": "^0", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7", "⁸": "^8", "⁹": "^9",
    "⁻": "^-", "⁺": "^+", "\t": " ",
}
_NB = "\x1fnb\x1f"  # total-pages alias: its control characters cannot come from input text (see _latin1)


def _latin1(text: str) -> str:
    """``text`` in what Helvetica (latin-1) can print: fallbacks for the rest, control characters removed."""
    out = []
    for char in text:
        if char == "\n" or (" " <= char <= "~") or ("\xa0" <= char <= "\xff"):
            out.append(char)
        elif char in _FALLBACKS:
            out.append(_FALLBACKS[char])
        elif unicodedata.category(char).startswith("C"):
            continue
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in base) else "?")
    return "".join(out)


def _pdf_date(value: str) -> datetime:
    """The PDF creation date: ``issued_at`` (no clock here); the epoch when it is not an instant."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_RED = (192, 0, 0)
_PINK = (253, 224, 224)
_GREY = (119, 119, 119)
_BAND = (220, 239, 220)


def _draw_spark(pdf: FPDF, trend: _Trend, x: float, y: float, width: float, height: float) -> None:
    """The :func:`trend_svg` sparkline with fpdf2 primitives, in the box at (x, y)."""
    row = trend.row
    values = [float(p.value) for p in trend.points if _number(p.value) is not None]
    radius = 0.8
    spark = _spark(values, row.low, row.high, width, height, radius + 0.4)
    pdf.set_draw_color(200, 200, 200)
    pdf.set_line_width(0.1)
    pdf.rect(x, y, width, height)
    if spark.band is not None:
        top, bottom = spark.band
        pdf.set_fill_color(*_BAND)
        pdf.rect(x, y + top, width, bottom - top, style="F")
    pdf.set_draw_color(51, 51, 51)
    pdf.set_line_width(0.35)
    for (x1, y1), (x2, y2) in zip(spark.points, spark.points[1:], strict=False):
        pdf.line(x + x1, y + y1, x + x2, y + y2)
    if spark.points:
        last_x, last_y = spark.points[-1]
        pdf.set_fill_color(*(_RED if spark.outside else (51, 51, 51)))
        pdf.circle(x + last_x, y + last_y, radius, style="F")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)


def render_pdf(data: ReportInput) -> bytes:
    """The report as an A4 PDF (see the module docstring)."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    view = _view(data)
    name = view.patient_name if len(view.patient_name) <= 60 else view.patient_name[:59] + "…"
    footer_left = _latin1(" · ".join(p for p in (name, f"Emitido: {format_date(view.issued_at)}") if p))

    class Document(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", "B", 13)
            self.cell(120, 7, _latin1(view.clinic.replace("\n", " ")))
            self.set_font("Helvetica", "B", 11)
            self.cell(0, 7, TITLE, align="R", new_x="LMARGIN", new_y="NEXT")
            self.set_line_width(0.4)
            self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
            self.set_line_width(0.2)
            self.ln(4)

        def footer(self) -> None:
            self.set_y(-13)
            self.set_font("Helvetica", "", 8)
            self.set_text_color(68, 68, 68)
            self.cell(140, 5, footer_left.replace("\n", " "))
            self.cell(0, 5, f"Página {self.page_no()} de {_NB}", align="R")
            self.set_text_color(0, 0, 0)

    pdf = Document(orientation="portrait", unit="mm", format="A4")
    pdf.alias_nb_pages(_NB)
    pdf.set_margins(15, 12, 15)
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title(_latin1(f"{TITLE} - {view.patient_name}"))
    pdf.set_creator("expediente")
    pdf.set_creation_date(_pdf_date(view.issued_at))
    pdf.add_page()

    def pairs(items: list[tuple[str, str]]) -> None:
        for label, value in items:
            if not value:
                continue
            pdf.set_font("Helvetica", "B", 9.5)
            pdf.cell(42, 5, _latin1(label + ":"))
            pdf.set_font("Helvetica", "", 9.5)
            pdf.multi_cell(0, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")

    def heading(text: str, size: float = 11) -> None:
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", size)
        pdf.multi_cell(0, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    if view.banner:
        pdf.set_font("Helvetica", "B", 10)
        pdf.set_text_color(*_RED)
        pdf.set_draw_color(*_RED)
        pdf.multi_cell(0, 7, _latin1(view.banner), border=1, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
        pdf.set_draw_color(0, 0, 0)
        pdf.ln(2)
    pairs([("Paciente", view.patient_name), ("Fecha de nacimiento", format_date(view.birth_date)),
           ("Sexo", view.sex), *view.identifiers])
    heading(view.title or TITLE, 12)
    pairs([("Fecha de toma", format_date(view.effective)), ("Fecha de resultados", format_date(view.issued)),
           ("Estado", view.status), ("Realizado por", ", ".join(view.performers))])
    pdf.ln(3)

    pdf.set_font("Helvetica", "", 9)
    with pdf.table(col_widths=(34, 16, 14, 22, 14), text_align="LEFT", line_height=4.6, padding=1,
                   headings_style=FontFace(emphasis="B", fill_color=(230, 230, 230)),
                   borders_layout="HORIZONTAL_LINES") as table:
        table.row([_latin1(h) for h in ("Estudio", "Resultado", "Unidades", "Intervalo de referencia", "Bandera")])
        for row in view.rows:
            name = f"· {row.name}" if row.component else row.name
            if row.mark:
                name = f"{name} [{row.mark}]"
            style, flag_style = None, None
            if row.annulled:
                style = flag_style = FontFace(emphasis="S", color=_GREY)
            elif row.severity == "critical":
                style = FontFace(fill_color=_PINK)
                flag_style = FontFace(emphasis="B", color=(255, 255, 255), fill_color=_RED)
            elif row.abnormal:
                flag_style = FontFace(emphasis="B")
            cells = table.row()
            for text in (name, row.value, row.unit, row.range):
                cells.cell(_latin1(text), style=style)
            cells.cell(_latin1(row.flag), style=flag_style)

    if view.trends:
        heading("Tendencia")
        spark_w, spark_h = 45.0, 12.0
        for trend in view.trends:
            if pdf.will_page_break(spark_h + 8):
                pdf.add_page()
            row = trend.row
            pdf.set_font("Helvetica", "B", 9)
            name = f"{row.name} ({row.unit})" if row.unit else row.name
            pdf.multi_cell(0, 5, _latin1(name), new_x="LMARGIN", new_y="NEXT")
            top = pdf.get_y()
            _draw_spark(pdf, trend, pdf.l_margin, top, spark_w, spark_h)
            pdf.set_xy(pdf.l_margin + spark_w + 4, top)
            pdf.set_font("Helvetica", "", 8)
            values = "; ".join(_point_text(p) for p in trend.points)
            pdf.multi_cell(0, 4, _latin1(values), new_x="LMARGIN", new_y="NEXT")
            pdf.set_y(max(pdf.get_y(), top + spark_h) + 2)

    if view.conclusion or view.conclusion_codes:
        heading("Conclusión")
        pdf.set_font("Helvetica", "", 9.5)
        for text in (view.conclusion, "; ".join(view.conclusion_codes)):
            if text:
                pdf.multi_cell(0, 5, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pairs([("Validado por", ", ".join(view.interpreters)), ("Emitido", format_date(view.issued_at))])
    return bytes(pdf.output())
