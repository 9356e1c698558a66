"""The printable laboratory report: HTML, PDF and the trend sparkline, from plain FHIR dicts."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from functions.results.report import Point, ReportInput, format_date, render_html, render_pdf, trend_svg

LOINC = "http://loinc.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
ROOT = Path(__file__).resolve().parents[3]


def _obs(oid: str, code: str, name: str, value: float, unit: str, low: float, high: float, flag: str | None,
         status: str = "final") -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": name}], "text": name},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-06-14T08:30:00-06:00",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        "referenceRange": [{"low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                            "high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}],
    }
    if flag:
        observation["interpretation"] = [{"coding": [{"system": V3, "code": flag}]}]
    return observation


def _input(**changes: Any) -> ReportInput:
    observations = [
        _obs("o-na", "2951-2", "Sodio", 140, "mmol/L", 136, 145, "N"),
        _obs("o-k", "2823-3", "Potasio", 6.8, "mmol/L", 3.5, 5.1, "HH"),
        _obs("o-glu", "2345-7", "Glucosa", 182, "mg/dL", 70, 99, "H"),
        _obs("o-cr", "2160-0", "Creatinina", 1.1, "mg/dL", 0.6, 1.2, "N", status="corrected"),
        _obs("o-cl", "2075-0", "Cloro", 131, "mmol/L", 98, 107, "HH", status="entered-in-error"),
        _obs("o-ca", "17861-6", "Calcio", 7.9, "mg/dL", 8.6, 10.3, "L", status="preliminary"),
    ]
    report = {
        "resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": {"coding": [{"system": LOINC, "code": "51990-0", "display": "Basic metabolic panel"}],
                 "text": "Química sanguínea básica"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-06-14T08:30:00-06:00",
        "issued": "2026-06-14T11:05:00-06:00",
        "performer": [{"reference": "Organization/lab", "display": "Laboratorio Central Oaxaca"}],
        "resultsInterpreter": [{"reference": "Practitioner/q1", "display": "Q.F.B. Ana Ruiz Peña"}],
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "conclusion": "Hiperpotasemia crítica; avisado al médico tratante.",
        "conclusionCode": [{"text": "Hiperpotasemia"}],
    }
    patient = {
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"use": "official", "system": "urn:oid:2.16.840.1.113883.4.629", "value": "PEGJ800615HOCRRN09"},
                       {"use": "usual", "system": "urn:expediente:folio", "value": "F-000123"}],
        "name": [{"use": "official", "family": "PÉREZ GARCÍA", "given": ["JUAN", "ÑUÑO"]}],
        "gender": "male", "birthDate": "1980-06-15",
    }
    history = {
        "2345-7": [Point("2026-01-10T08:00:00-06:00", 130), Point("2026-03-12T08:00:00-06:00", 151.5),
                   Point("2026-05-02T08:00:00-06:00", 164)],
        "2823-3": [Point("2026-05-02T08:00:00-06:00", 5.6)],
        "2951-2": [Point("2026-05-02T08:00:00-06:00", 139)],  # normal: no chart even with history
        "2075-0": [Point("2026-05-02T08:00:00-06:00", 104)],  # annulled: no chart
    }
    values: dict[str, Any] = {"report": report, "observations": observations, "patient": patient,
                              "clinic_name": "Clínica Santa Lucía", "history": history,
                              "issued_at": "2026-06-14T12:40:00-06:00"}
    values.update(changes)
    return ReportInput(**values)


def _row(page: str, name: str) -> str:
    rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", page, re.S) if f"<td>{name}" in r]
    assert len(rows) == 1, name
    return rows[0]


def _unescape_pdf_string(raw: bytes) -> bytes:
    simple = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"(": b"(", b")": b")",
              b"\\": b"\\"}

    def one(match: re.Match[bytes]) -> bytes:
        escaped = match.group(1)
        return bytes([int(escaped, 8) & 0xFF]) if escaped[:1].isdigit() else simple.get(escaped, escaped)

    return re.sub(rb"\\([0-7]{1,3}|.)", one, raw, flags=re.S)


def _pdf_text(pdf: bytes) -> str:
    """The text shown by the PDF's (Flate) content streams, one text object per line; not using fpdf."""
    lines = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            continue
        for block in re.findall(rb"\bBT\b(.*?)\bET\b", content, re.S):
            shown = re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", block, re.S)
            if shown:
                lines.append(b"".join(_unescape_pdf_string(s) for s in shown).decode("latin-1"))
    return "\n".join(lines)


def _page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


# ------------------------------------------------------------------- HTML ---


def test_html_is_a_standalone_printable_document():
    page = render_html(_input())
    assert page.startswith("<!doctype html>")
    assert '<meta charset="utf-8">' in page and '<html lang="es-MX">' in page
    assert "@page { size: A4; margin:" in page and 'counter(page) " de " counter(pages)' in page
    assert "<script" not in page.lower() and "javascript:" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page
    assert page.rstrip().endswith("</html>")


def test_html_shows_patient_study_and_labels_in_spanish():
    page = render_html(_input())
    for label in ("Informe de laboratorio", "Paciente", "Fecha de nacimiento", "Sexo", "Estudio", "Resultado",
                  "Unidades", "Intervalo de referencia", "Bandera", "Tendencia", "Conclusión", "Validado por",
                  "Emitido"):
        assert label in page, label
    assert "JUAN ÑUÑO PÉREZ GARCÍA" in page and "Clínica Santa Lucía" in page
    assert "<dt>CURP</dt><dd>PEGJ800615HOCRRN09</dd>" in page and "<dt>Folio</dt><dd>F-000123</dd>" in page
    assert '<time datetime="1980-06-15">15/06/1980</time>' in page
    assert "<dt>Sexo</dt><dd>Masculino</dd>" in page
    assert "<h2>Química sanguínea básica</h2>" in page
    assert '<time datetime="2026-06-14T08:30:00-06:00">14/06/2026 08:30</time>' in page  # own offset kept
    assert "Emitido: <time datetime=\"2026-06-14T12:40:00-06:00\">14/06/2026 12:40</time>" in page
    assert "Validado por: Q.F.B. Ana Ruiz Peña" in page and "Laboratorio Central Oaxaca" in page
    assert "Hiperpotasemia crítica; avisado al médico tratante." in page and "<p>Hiperpotasemia</p>" in page


def test_html_rows_carry_value_unit_range_and_flag():
    page = render_html(_input())
    assert _row(page, "Potasio") == (
        '<tr class="critico anormal"><td>Potasio</td><td>6.8</td><td>mmol/L</td><td>3.5 – 5.1 mmol/L</td>'
        '<td class="bandera">CRÍTICO ALTO</td></tr>')
    assert _row(page, "Sodio") == ('<tr><td>Sodio</td><td>140</td><td>mmol/L</td><td>136 – 145 mmol/L</td>'
                                   '<td class="bandera">Normal</td></tr>')
    glucose = _row(page, "Glucosa")
    assert 'class="anormal"' in glucose and "<td>182</td><td>mg/dL</td><td>70 – 99 mg/dL</td>" in glucose
    assert '<td class="bandera">ALTO</td>' in glucose
    assert '<td class="bandera">BAJO</td>' in _row(page, "Calcio")
    assert "tr.critico td.bandera { background: #c00000" in page
    names = [n.strip() for n in re.findall(r"<tr[^>]*><td>([^<]+)", page)]
    assert names == ["Sodio", "Potasio", "Glucosa", "Creatinina", "Cloro", "Calcio"]  # report order


def test_html_status_marks_and_annulled_row_struck_through():
    page = render_html(_input())
    assert '<span class="marca">Corregido</span>' in _row(page, "Creatinina")
    assert '<span class="marca">Preliminar</span>' in _row(page, "Calcio")
    annulled = _row(page, "Cloro")
    assert annulled.startswith('<tr class="anulado">')  # not highlighted as critical
    assert '<span class="marca">Anulado</span>' in annulled and "<td>131</td>" in annulled
    assert "tr.anulado td { text-decoration: line-through;" in page
    assert "Anulado" not in _row(page, "Sodio") and 'class="marca"' not in _row(page, "Potasio")


def test_html_draws_a_trend_for_each_abnormal_test_with_history_only():
    page = render_html(_input())
    charts = re.findall(r'<div class="tendencia-item"><span class="nombre">([^<]*)</span>(<svg.*?</svg>)', page)
    assert [name for name, _ in charts] == ["Potasio (mmol/L)", "Glucosa (mg/dL)"]
    assert page.count("<svg") == 2
    glucose_svg = charts[1][1]
    assert len(re.search(r'<polyline points="([^"]+)"', glucose_svg).group(1).split()) == 4
    assert ("130 (10/01/2026 08:00) · 151.5 (12/03/2026 08:00) · 164 (02/05/2026 08:00) · "
            "182 (14/06/2026 08:30)") in page


def test_html_draws_no_trend_without_abnormal_results_or_history():
    assert "<svg" not in render_html(_input(history={}))
    data = _input()
    for observation in data.observations:
        observation["interpretation"] = [{"coding": [{"system": V3, "code": "N"}]}]
    assert "<svg" not in render_html(data)
    assert "Tendencia" not in render_html(_input(history={})).split("</style>")[1]


def test_html_escapes_every_input_value():
    data = _input()
    data.patient["name"][0]["family"] = "<script>alert('x')</script>"
    data.report["conclusion"] = "Ver <img src=x onerror=alert(1)> & \"citar\""
    data.observations[0]["code"]["text"] = "<b>Sodio</b>"
    data.observations[0]["valueQuantity"]["unit"] = "mmol/L<script>"
    data.patient["identifier"][1]["value"] = '"><svg onload=alert(1)>'
    hostile = replace_clinic(data, "Clínica <i>x</i>")
    page = render_html(hostile)
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page and "<b>Sodio" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Ver &lt;img src=x onerror=alert(1)&gt; &amp; &quot;citar&quot;" in page
    assert "&lt;b&gt;Sodio&lt;/b&gt;" in page and "Clínica &lt;i&gt;x&lt;/i&gt;" in page
    assert "&quot;&gt;&lt;svg onload=alert(1)&gt;" in page


def replace_clinic(data: ReportInput, clinic: str) -> ReportInput:
    return ReportInput(report=data.report, observations=data.observations, patient=data.patient, clinic_name=clinic,
                       history=data.history, issued_at=data.issued_at)


def test_html_values_other_than_quantities_and_panels():
    data = _input(history={})
    data.observations[:] = [
        {"resourceType": "Observation", "status": "final", "code": {"coding": [{"display": "Aspecto"}]},
         "valueString": "Turbio", "referenceRange": [{"text": "Claro"}],
         "interpretation": [{"coding": [{"system": V3, "code": "A"}]}]},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Nitritos"},
         "valueCodeableConcept": {"coding": [{"display": "Negativo"}], "text": "Negativo"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Presión arterial"},
         "component": [
             {"code": {"text": "Sistólica"}, "valueQuantity": {"value": 182, "unit": "mm[Hg]"},
              "referenceRange": [{"high": {"value": 120, "unit": "mm[Hg]"}}],
              "interpretation": [{"coding": [{"code": "HH"}]}]},
             {"code": {"text": "Diastólica"}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"},
              "referenceRange": [{"low": {"value": 60, "unit": "mm[Hg]"}}]}]},
        {"resourceType": "Observation", "status": "final", "code": {"text": "PCR"},
         "valueQuantity": {"value": 0.5, "comparator": "<", "unit": "mg/L"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Hemólisis"},
         "dataAbsentReason": {"coding": [{"code": "not-performed"}]}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Anticuerpos"},
         "valueString": "Indeterminado", "interpretation": [{"text": "Indeterminado; repetir"}]},
    ]
    page = render_html(data)
    assert "<td>Turbio</td><td></td><td>Claro</td>" in page and ">ANORMAL</td>" in page
    assert "<td>Nitritos</td><td>Negativo</td>" in page
    assert '<tr class="componente critico anormal"><td>Sistólica</td><td>182</td><td>mm[Hg]</td>' in page
    assert "<td>≤ 120 mm[Hg]</td>" in page and "<td>≥ 60 mm[Hg]</td>" in page
    assert '<tr class="componente"><td>Diastólica</td>' in page
    assert "<td>PCR</td><td>&lt;0.5</td><td>mg/L</td>" in page
    assert "<td>Hemólisis</td><td>No realizado</td>" in page
    assert ">Indeterminado; repetir</td>" in page


def test_html_tolerates_missing_and_malformed_elements():
    data = ReportInput(report={"status": "preliminary", "code": "nope", "result": None}, observations=[{}],
                       patient={"name": "x", "identifier": [None, {"value": 5}]}, clinic_name="C",
                       history={}, issued_at="mañana")
    page = render_html(data)
    assert "INFORME PRELIMINAR" in page and "Emitido: mañana" in page
    assert page.count("<tr") == 2  # the header row and one empty row


def test_html_banner_for_an_annulled_report():
    data = _input()
    data.report["status"] = "entered-in-error"
    assert '<p class="aviso">INFORME ANULADO' in render_html(data)
    assert 'class="aviso"' not in render_html(_input())


# -------------------------------------------------------------------- PDF ---


def test_pdf_holds_the_report():
    pdf = render_pdf(_input())
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = _pdf_text(pdf)
    assert "JUAN ÑUÑO PÉREZ GARCÍA" in text and "Clínica Santa Lucía" in text
    assert b"CR\xcdTICO ALTO" in b"".join(zlib.decompress(s) for s in re.findall(
        rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S))  # latin-1 in the stream
    for expected in ("Informe de laboratorio", "Química sanguínea básica", "15/06/1980", "Masculino",
                     "PEGJ800615HOCRRN09", "F-000123", "Fecha de toma:", "14/06/2026 08:30", "Estudio",
                     "Intervalo de referencia", "Bandera", "CRÍTICO ALTO", "ALTO", "BAJO", "3.5 - 5.1 mmol/L",
                     "6.8", "mmol/L", "Creatinina [Corregido]", "Calcio [Preliminar]", "Cloro [Anulado]",
                     "Tendencia", "Glucosa (mg/dL)", "Potasio (mmol/L)", "Conclusión",
                     "Hiperpotasemia crítica; avisado al médico tratante.", "Validado por:",
                     "Q.F.B. Ana Ruiz Peña", "Emitido: 14/06/2026 12:40", "Página 1 de 1"):
        assert expected in text, expected
    assert "Sodio (mmol/L)" not in text  # normal: no trend


def test_pdf_draws_the_sparklines_with_primitives():
    with_trends = b"".join(zlib.decompress(s) for s in re.findall(rb"stream\r?\n(.*?)\r?\nendstream",
                                                                  render_pdf(_input()), re.S))
    without = b"".join(zlib.decompress(s) for s in re.findall(rb"stream\r?\n(.*?)\r?\nendstream",
                                                             render_pdf(_input(history={})), re.S))
    assert b"<svg" not in with_trends
    band = re.compile(rb"0\.86\d* 0\.93\d* 0\.86\d* rg")  # the reference-range fill colour
    assert len(band.findall(with_trends)) == 2 and not band.search(without)
    segments = len(re.findall(rb" l S", with_trends)) - len(re.findall(rb" l S", without))
    assert segments == 1 + 3  # potassium: 1 history point + now; glucose: 3 + now
    assert with_trends.count(b" c ") > without.count(b" c ")  # Bézier curves of the dots


def test_pdf_is_deterministic_and_dated_by_issued_at():
    first, second = render_pdf(_input()), render_pdf(_input())
    assert first == second
    assert b"/CreationDate (D:20260614124000-06'00')" in first


def test_pdf_replaces_characters_outside_latin1():
    data = _input()
    data.report["conclusion"] = "Glucosa ≥ 126 mg/dL × 2 — leucocitos 11×10⁹/L, µ y μmol 🙂 “ok” {nb}"
    data.observations[0]["code"]["text"] = "Sodio ≤ – ő"
    data.patient["name"][0]["family"] = "PÉREZ\u200b\x07GARCÍA"
    text = _pdf_text(render_pdf(data))
    assert 'Glucosa >= 126 mg/dL × 2 - leucocitos 11×10^9/L, µ y µmol ? "ok" {nb}' in text
    assert "Sodio <= - o" in text and "JUAN ÑUÑO PÉREZGARCÍA" in text


def test_pdf_numbers_every_page():
    data = _input(history={})
    many = [copy.deepcopy(data.observations[0]) for _ in range(120)]
    data.observations[:] = many
    pdf = render_pdf(data)
    pages = _page_count(pdf)
    text = _pdf_text(pdf)
    assert pages >= 3
    assert [int(n) for n in re.findall(rf"Página (\d+) de {pages}", text)] == list(range(1, pages + 1))
    assert text.count("Informe de laboratorio") == pages  # the header repeats
    assert text.count("Estudio\n") >= pages  # so do the table headings


def test_pdf_marks_a_preliminary_report_and_survives_empty_input():
    data = _input()
    data.report["status"] = "preliminary"
    assert "INFORME PRELIMINAR: resultados no validados" in _pdf_text(render_pdf(data))
    empty = ReportInput(report={}, observations=[], patient={}, clinic_name="", history={}, issued_at="")
    pdf = render_pdf(empty)
    assert pdf.startswith(b"%PDF-") and "Página 1 de 1" in _pdf_text(pdf)


def test_importing_the_module_does_not_load_fpdf():
    code = "import sys, functions.results.report; print('fpdf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"})
    assert result.stdout.strip() == "False"


# -------------------------------------------------------------- sparkline ---


def _coordinates(svg: str) -> list[tuple[float, float]]:
    points = re.search(r'<polyline points="([^"]+)"', svg).group(1)
    return [(float(x), float(y)) for x, y in (p.split(",") for p in points.split())]


def _band(svg: str) -> tuple[float, float]:
    match = re.search(r'<rect class="intervalo" x="0" y="([\d.-]+)" width="\d+" height="([\d.-]+)"', svg)
    assert match, svg
    return float(match.group(1)), float(match.group(1)) + float(match.group(2))


def test_trend_svg_scales_values_and_draws_the_reference_band():
    points = [Point("2026-01-01", 100), Point("2026-02-01", 130), Point("2026-03-01", 90), Point("2026-04-01", 182)]
    svg = trend_svg(points, low=70, high=99)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.endswith("</svg>")
    assert 'width="160" height="40" viewBox="0 0 160 40"' in svg
    coordinates = _coordinates(svg)
    assert len(coordinates) == 4
    xs, ys = [x for x, _ in coordinates], [y for _, y in coordinates]
    assert xs == sorted(xs) and len(set(xs)) == 4
    assert ys[1] < ys[0] < ys[2] and ys[3] == min(ys)  # a higher value is higher on the chart
    assert all(0 < y < 40 for y in ys) and all(0 < x < 160 for x in xs)  # padded inside the box
    top, bottom = _band(svg)
    assert ys[3] < ys[1] < ys[0] < top  # 182, 130 and 100 above the high limit of 99
    assert top < ys[2] < bottom  # 90 inside 70-99
    assert bottom < 40
    cx, cy = (float(v) for v in re.search(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg).groups())
    assert (cx, cy) == coordinates[-1]
    assert 'fill="#c00000"' in svg  # the last value is outside the range
    assert "<title>Tendencia: 100 (01/01/2026), 130 (01/02/2026), 90 (01/03/2026), 182 (01/04/2026)</title>" in svg


def test_trend_svg_scale_follows_the_values():
    low_values = _coordinates(trend_svg([Point("a", 1), Point("b", 2)], low=None, high=None))
    assert low_values[1][1] < low_values[0][1]
    falling = _coordinates(trend_svg([Point("a", 2), Point("b", 1)], low=None, high=None, width=300, height=100))
    assert falling[0][1] < falling[1][1] and falling[1][0] > 200
    assert '<rect class="intervalo"' not in trend_svg([Point("a", 2), Point("b", 1)], low=None, high=None)
    inside = trend_svg([Point("a", 4.0), Point("b", 4.2)], low=3.5, high=5.1)
    assert 'fill="#333333"/></svg>' in inside  # last value within range: not red


def test_trend_svg_one_sided_ranges_reach_the_edge():
    top, bottom = _band(trend_svg([Point("a", 50), Point("b", 70)], low=60, high=None))
    assert top == 0.0 and 0 < bottom < 40
    top, bottom = _band(trend_svg([Point("a", 50), Point("b", 70)], low=None, high=60))
    assert top > 0 and bottom == 40.0


def test_trend_svg_without_history():
    empty = trend_svg([], low=3.5, high=5.1)
    assert "<title>sin historial</title>" in empty and "<circle" not in empty and "<polyline" not in empty
    single = trend_svg([Point("2026-06-14", 6.8)], low=3.5, high=5.1)
    assert "<title>sin historial</title>" in single and "<polyline" not in single
    assert single.count("<circle") == 1 and 'cx="80.00"' in single
    flat = trend_svg([Point("a", 5), Point("b", 5)], low=None, high=None)
    assert len({y for _, y in _coordinates(flat)}) == 1  # constant values: no division by zero
    nan = trend_svg([Point("a", float("nan")), Point("b", 5.0)], low=None, high=float("inf"))
    assert "<title>sin historial</title>" in nan and "nan" not in nan.lower() and "inf" not in nan


def test_trend_svg_escapes_and_rejects_bad_sizes():
    svg = trend_svg([Point("<x>", 1), Point("b", 2)], low=None, high=None)
    assert "<x>" not in svg and "&lt;x&gt;" in svg
    with pytest.raises(ValueError, match="positive"):
        trend_svg([Point("a", 1)], low=None, high=None, width=0)


@pytest.mark.parametrize(("value", "shown"), [
    ("1980-06-15", "15/06/1980"), ("2026-06", "06/2026"), ("2026", "2026"),
    ("2026-06-14T08:30:00-06:00", "14/06/2026 08:30"), ("2026-06-14T23:59:59.123Z", "14/06/2026 23:59"),
    ("2026-06-15T01:15:00+05:30", "15/06/2026 01:15"), ("ayer", "ayer"), ("", ""),
])
def test_dates_keep_their_own_offset(value, shown):
    assert format_date(value) == shown
