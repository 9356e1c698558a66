"""The printable receta: legal content, QR code, pagination, controlled-group marks, determinism."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import segno
from pypdf import PdfReader

from functions.prescriptions.receta import Receta, RecetaLine, render_receta

ROOT = Path(__file__).resolve().parents[3]
URL = "https://expediente.example.mx/verificar/rx/01JXYZABCDEF0123456789ABCD?t=9f8e7d6c"
DIGEST = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea"
MM = 72 / 25.4  # PDF points per millimetre


def _line(**changes: Any) -> RecetaLine:
    values: dict[str, Any] = {
        "generic_name": "Paracetamol", "presentation": "Tableta 500 mg", "dose": "500 mg (1 tableta)",
        "route": "Vía oral", "frequency": "cada 8 horas", "duration": "5 días",
        "quantity": "1 envase con 20 tabletas", "brand": "Tempra",
        "instructions": "Tomar después de los alimentos; suspender si aparece reacción alérgica.",
        "key": "010.000.0104.00", "sale_group": "IV",
    }
    values.update(changes)
    return RecetaLine(**values)


def _receta(**changes: Any) -> Receta:
    values: dict[str, Any] = {
        "folio": "01JXYZABCDEF0123456789ABCD",
        "issued": datetime(2026, 6, 14, 3, 0, tzinfo=UTC),  # 13 de junio, 21:00 in Mexico City (UTC-6)
        "timezone": "America/Mexico_City",
        "prescriber_name": "Dra. María José Núñez Peña",
        "cedula": "12345678",
        "prescriber_title": "Médico cirujano · Pediatría",
        "institution": "Red de Clínicas Santa Lucía, S.C.",
        "clinic_name": "Clínica Santa Lucía Oaxaca",
        "clinic_address": "Av. Juárez 123, Col. Centro, 68000 Oaxaca de Juárez, Oax.",
        "clinic_clues": "OCSSA001234",
        "patient_name": "Juan Ñuño Pérez García",
        "patient_birth_date": "1980-06-15",
        "patient_sex": "male",
        "patient_record": "F-000123",
        "lines": (_line(),),
        "signature_digest": DIGEST,
        "signature_algorithm": "ES256",
        "signed_at": datetime(2026, 6, 14, 3, 1, tzinfo=UTC),
        "verify_url": URL,
    }
    values.update(changes)
    return Receta(**values)


def _pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def _text(pdf: bytes) -> str:
    return "\n".join(_pages(pdf))


def _words(text: str) -> str:
    """The text with every run of white space (a wrapped line included) as one space."""
    return " ".join(text.split())


def _flat(text: str) -> str:
    """The text with line breaks (where a wrapped line continues) removed."""
    return text.replace("\n", "")


def _text_origins(pdf: bytes) -> list[tuple[int, float, float, str]]:
    """(page index, x, y, text) of every text run, in PDF points from the page's lower left corner."""
    out: list[tuple[int, float, float, str]] = []
    for index, page in enumerate(PdfReader(io.BytesIO(pdf)).pages):
        def visit(text: str, cm: Any, tm: Any, font: Any, size: Any, index: int = index) -> None:
            if text.strip():
                out.append((index, cm[4] + tm[4], cm[5] + tm[5], text))

        page.extract_text(visitor_text=visit)
    return out


_RECT = re.compile(rb"(-?\d+(?:\.\d+)?) (-?\d+(?:\.\d+)?) (-?\d+(?:\.\d+)?) (-?\d+(?:\.\d+)?) re f(?![*\w])")


def _filled_rects(pdf: bytes) -> list[tuple[int, list[tuple[float, float, float, float]]]]:
    """Per page, every filled rectangle (x, y, w, h) of its decompressed content stream."""
    out = []
    for index, page in enumerate(PdfReader(io.BytesIO(pdf)).pages):
        content = page.get_contents()
        data = content.get_data() if content is not None else b""
        rects = [tuple(float(v) for v in m.groups()) for m in _RECT.finditer(data)]
        out.append((index, rects))  # type: ignore[arg-type]
    return out


def _qr_from_rects(rects: list[tuple[float, float, float, float]]) -> tuple[set[tuple[int, int]], float, float,
                                                                           float]:
    """The dark modules (row, column) that the rectangles draw, the module size and the symbol's top left.

    Every rectangle is one module high and a whole number of modules wide; the top left module of a QR code is
    always dark (finder pattern), so the leftmost x and the topmost edge give the origin.
    """
    left = min(x for x, _, _, _ in rects)
    top = max(y for _, y, _, _ in rects)  # fpdf2 draws from the top edge with a negative height
    # the first run of the top row is the finder pattern's 7 modules: the module size with 1/7 of the rounding
    corner = [(x, w, h) for x, y, w, h in rects if abs(x - left) < 0.01 and abs(y - top) < 0.01]
    assert len(corner) == 1
    module = corner[0][1] / 7
    assert abs(abs(corner[0][2]) - module) < 0.02
    dark: set[tuple[int, int]] = set()
    for x, y, w, h in rects:
        assert abs(abs(h) - module) < 0.02, "every rectangle is one module high"
        row = (top - y) / module
        col = (x - left) / module
        run = w / module
        for value in (row, col, run):
            assert abs(value - round(value)) < 0.05, "rectangles sit on the module grid"
        for c in range(round(col), round(col) + round(run)):
            assert (round(row), c) not in dark, "no module is drawn twice"
            dark.add((round(row), c))
    return dark, module, left, top


# ------------------------------------------------------------------ content ---


def test_every_legal_element_is_printed_with_accents_intact():
    receta = _receta(valid_until=date(2026, 7, 13), dispensations_allowed=2, notes="Control en una semana.")
    text = _words(_text(render_receta(receta)))
    for expected in (
        "Red de Clínicas Santa Lucía, S.C.", "Clínica Santa Lucía Oaxaca",
        "Av. Juárez 123, Col. Centro, 68000 Oaxaca de Juárez, Oax.", "CLUES: OCSSA001234",
        "RECETA MÉDICA", "Folio: 01JXYZABCDEF0123456789ABCD",
        "Dra. María José Núñez Peña", "Médico cirujano · Pediatría · Céd. Prof. 12345678",
        "Fecha de emisión: 13 de junio de 2026, 21:00 h (America/Mexico_City, UTC-06:00)",
        "Paciente: Juan Ñuño Pérez García", "Edad: 45 años (nac. 15/06/1980)", "Sexo: Masculino",
        "Expediente: F-000123",
        "1. PARACETAMOL (Tempra)", "Presentación: Tableta 500 mg", "Surtir: 1 envase con 20 tabletas",
        "Dosis: 500 mg (1 tableta) · Vía oral · cada 8 horas · Duración: 5 días",
        "Indicaciones: Tomar después de los alimentos; suspender si aparece reacción alérgica.",
        "Clave CB: 010.000.0104.00 · Grupo IV",
        "Válida hasta el 13 de julio de 2026", "Surtidos permitidos: 2", "Control en una semana.",
        "Firmado electrónicamente por Dra. María José Núñez Peña el 13 de junio de 2026, 21:01 h",
        "Algoritmo: ES256", "Verifique la autenticidad y el surtido en:",
    ):
        assert expected in text, expected
    assert DIGEST in re.sub(r"\s+", "", text)
    assert "firma autógrafa" in text  # it says there is none: the signature is the electronic one


def test_generic_name_comes_first_in_capitals_and_brand_is_optional():
    text = _text(render_receta(_receta(lines=(_line(), _line(generic_name="Ibuprofeno", brand=None)))))
    assert "1. PARACETAMOL (Tempra)" in text
    assert re.search(r"^2\. IBUPROFENO$", text, re.M)


def test_digest_is_printed_in_monospace():
    pdf = render_receta(_receta())
    courier = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        def visit(text: str, cm: Any, tm: Any, font: Any, size: Any) -> None:
            if font and "Courier" in str(font.get("/BaseFont", "")):
                courier.append(text)

        page.extract_text(visitor_text=visit)
    assert DIGEST in re.sub(r"\s+", "", "".join(courier))


def test_sex_and_age_are_spanish_and_infants_get_months():
    text = _text(render_receta(_receta(patient_birth_date="2025-12-01", patient_sex="female")))
    assert "Edad: 6 meses (nac. 01/12/2025)" in text and "Sexo: Femenino" in text
    text = _text(render_receta(_receta(patient_birth_date="no registrada", patient_sex="Mujer",
                                       patient_record=None)))
    assert "Edad: no registrada" in text and "Sexo: Mujer" in text and "Expediente" not in text


def test_characters_outside_the_font_fall_back_instead_of_failing():
    line = _line(instructions="Si glucosa ≥ 250 mg/dL aplicar 2 μg ✓")
    text = _text(render_receta(_receta(lines=(line,))))
    assert "Indicaciones: Si glucosa >= 250 mg/dL aplicar 2 µg ?" in text


# ----------------------------------------------------------------------- QR ---


def test_qr_code_encodes_the_verify_url_module_by_module():
    pdf = render_receta(_receta())
    drawn = [(index, rects) for index, rects in _filled_rects(pdf) if rects]
    assert len(drawn) == 1, "only the QR code is drawn with filled rectangles, on one page"
    _, rects = drawn[0]
    dark, module, _, _ = _qr_from_rects(rects)

    expected = segno.make_qr(URL, error="m", boost_error=False)
    assert expected.error == "M"
    matrix = expected.matrix
    want = {(r, c) for r, row in enumerate(matrix) for c, cell in enumerate(row) if cell & 1}
    assert dark == want
    assert (len(matrix) + 8) * module >= 25 * MM  # at least 25 mm wide with its quiet zone


def test_qr_code_has_a_clear_quiet_zone_and_the_url_printed_under_it():
    pdf = render_receta(_receta())
    index, rects = next((i, r) for i, r in _filled_rects(pdf) if r)
    _, module, left, top = _qr_from_rects(rects)
    size = len(segno.make_qr(URL, error="m", boost_error=False).matrix)
    quiet = 4 * module
    x0, x1 = left - quiet, left + size * module + quiet
    y1, y0 = top + quiet, top - size * module - quiet
    page_width = float(PdfReader(io.BytesIO(pdf)).pages[index].mediabox.width)
    assert x0 >= 0 and x1 <= page_width
    origins = [(x, y, t) for i, x, y, t in _text_origins(pdf) if i == index]
    for x, y, t in origins:
        assert not (x0 - 1 <= x <= x1 and y0 <= y <= y1), f"text {t!r} inside the QR code or its quiet zone"
    below = [(y, t) for x, y, t in origins if y < y0]
    assert any(URL in t for _, t in below), "the URL is printed under the code"
    assert any("Verifique la autenticidad y el surtido en" in t for _, t in below)
    assert f"Verifique la autenticidad y el surtido en:\n{URL}" in _text(pdf)


def test_long_verify_url_is_encoded_exactly_and_wraps_under_the_code():
    url = "https://expediente.example.mx/verificar/" + "x" * 300
    pdf = render_receta(_receta(verify_url=url))
    _, rects = next((i, r) for i, r in _filled_rects(pdf) if r)
    dark, _, _, _ = _qr_from_rects(rects)
    matrix = segno.make_qr(url, error="m", boost_error=False).matrix
    assert dark == {(r, c) for r, row in enumerate(matrix) for c, cell in enumerate(row) if cell & 1}
    assert url in _flat(_text(pdf))
    assert url not in _text(pdf)  # it had to wrap: one line cannot hold it


# -------------------------------------------------------------- pagination ---


def test_long_lists_flow_onto_numbered_pages_and_nothing_is_lost():
    names = [f"Medicamento{n:02d}" for n in range(1, 41)]
    lines = tuple(_line(generic_name=name, brand=None, instructions=f"Nota del renglón {n}.")
                  for n, name in enumerate(names, start=1))
    pdf = render_receta(_receta(lines=lines))
    pages = _pages(pdf)
    total = len(pages)
    assert total > 2
    for number, page in enumerate(pages, start=1):
        assert f"Página {number} de {total}" in page
        assert "Red de Clínicas Santa Lucía, S.C." in page and "Céd. Prof. 12345678" in page  # header repeated
        if number > 1:
            assert "Continuación — Paciente: Juan Ñuño Pérez García" in page
    text = "\n".join(pages)
    for n, name in enumerate(names, start=1):
        assert len(re.findall(rf"^{n}\. {name.upper()}$", text, re.M)) == 1, name
        on = next(p for p in pages if re.search(rf"^{n}\. {name.upper()}$", p, re.M))
        assert f"Nota del renglón {n}." in on, "an entry is not split across pages"
    assert "Firmado electrónicamente" in pages[-1] and DIGEST[:8] in pages[-1]


def test_text_stays_inside_the_page():
    lines = tuple(_line(generic_name=f"Fármaco{n}") for n in range(25))
    pdf = render_receta(_receta(lines=lines, notes="Observación " * 80))
    reader = PdfReader(io.BytesIO(pdf))
    for index, x, y, text in _text_origins(pdf):
        box = reader.pages[index].mediabox
        assert 9 * MM <= x <= float(box.width) - 10 * MM, text
        assert 5 * MM <= y <= float(box.height) - 7 * MM, text


def test_one_page_receta_has_no_page_number():
    pages = _pages(render_receta(_receta()))
    assert len(pages) == 1
    assert "Página" not in pages[0]


def test_page_size_is_half_letter_portrait():
    box = PdfReader(io.BytesIO(render_receta(_receta()))).pages[0].mediabox
    assert (round(float(box.width) / MM, 1), round(float(box.height) / MM, 1)) == (139.7, 215.9)


# ------------------------------------------------------------ sale groups ---

_MARKS = {
    "I": "Grupo I — estupefaciente",
    "II": "Grupo II — psicotrópico: receta retenida",
    "III": "Grupo III — psicotrópico: hasta 3 surtidos",
}


@pytest.mark.parametrize("group", ["I", "II", "III"])
def test_controlled_groups_are_marked_only_on_their_line(group: str):
    lines = (_line(generic_name="Paracetamol", sale_group="VI"),
             _line(generic_name="Controlado", brand=None, sale_group=group))
    text = _text(render_receta(_receta(lines=lines)))
    for other, mark in _MARKS.items():
        assert (mark in text) is (other == group), mark
    assert text.index("2. CONTROLADO") < text.index(_MARKS[group])  # under its own line


def test_uncontrolled_receta_has_no_group_marks_pad_or_validity():
    lines = (_line(sale_group="IV"), _line(generic_name="Loratadina", sale_group=None), _line(sale_group="VI"))
    text = _text(render_receta(_receta(lines=lines)))
    for mark in (*_MARKS.values(), "receta retenida", "Recetario especial", "Válida hasta", "Surtidos permitidos"):
        assert mark not in text, mark


def test_group_one_pad_number_is_printed_when_given():
    lines = (_line(generic_name="Morfina", brand=None, sale_group="I"),)
    with_pad = _pages(render_receta(_receta(lines=lines, special_pad_barcode="MX-OAX-0001234567")))
    assert all("Recetario especial (Grupo I): MX-OAX-0001234567" in _words(page) for page in with_pad)
    without = _text(render_receta(_receta(lines=lines)))
    assert "Recetario especial" not in without and "MX-OAX" not in without
    assert _MARKS["I"] in without


def test_group_three_dispensations_and_validity_are_printed_when_given():
    lines = (_line(generic_name="Clonazepam", sale_group="3"),)  # an arabic group is read as roman
    text = _text(render_receta(_receta(lines=lines, valid_until=date(2026, 7, 13), dispensations_allowed=3)))
    assert _MARKS["III"] in text
    assert "Válida hasta el 13 de julio de 2026 · Surtidos permitidos: 3" in text


# ---------------------------------------------------------- determinism ---


def test_same_input_gives_the_same_bytes_even_in_another_process():
    receta = _receta(notes="Ñandú")
    first = render_receta(receta)
    assert render_receta(receta) == first
    assert render_receta(_receta(notes="Nandu")) != first
    script = (
        "import sys; from tests.unit.prescriptions.test_receta import _receta; "
        "from functions.prescriptions.receta import render_receta; "
        "sys.stdout.buffer.write(render_receta(_receta(notes='Ñandú')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), str(ROOT)])}
    other = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, check=True)
    assert other.stdout == first


def test_metadata_is_fixed_and_dated_at_issue():
    metadata = PdfReader(io.BytesIO(render_receta(_receta()))).metadata
    assert metadata is not None
    assert metadata.producer == "Expediente"
    assert metadata.creation_date == datetime(2026, 6, 14, 3, 0, tzinfo=UTC)


# ------------------------------------------------------------- time zone ---


def test_issue_time_prints_in_the_clinic_time_zone():
    text = _text(render_receta(_receta()))  # issued 2026-06-14T03:00Z
    assert "13 de junio de 2026, 21:00 h" in text
    assert "14 de junio" not in text
    text = _text(render_receta(_receta(timezone="America/Tijuana")))  # UTC-7 in June (daylight time)
    assert "13 de junio de 2026, 20:00 h (America/Tijuana, UTC-07:00)" in text


def test_age_is_counted_on_the_local_date():
    # 14 June in UTC, but still 13 June in Mexico City: the 18th birthday has not come yet
    text = _text(render_receta(_receta(patient_birth_date="2008-06-14")))
    assert "Edad: 17 años (nac. 14/06/2008)" in text


@pytest.mark.parametrize(("field", "value", "message"), [
    ("issued", datetime(2026, 6, 14, 3, 0), "Receta.issued must be timezone-aware"),
    ("signed_at", datetime(2026, 6, 14, 3, 1), "Receta.signed_at must be timezone-aware"),
    ("timezone", "America/Gotham", "not a known IANA time zone"),
])
def test_naive_times_and_unknown_zones_are_refused(field: str, value: Any, message: str):
    with pytest.raises(ValueError, match=message):
        render_receta(_receta(**{field: value}))


# ------------------------------------------------------------ wrapping ---


def test_overlong_words_wrap_without_raising():
    word = "Supercalifragilisticoespialidoso" * 12  # 384 characters, no break opportunity
    receta = _receta(
        institution=word, clinic_address=word, prescriber_name="Dr. " + word, patient_name=word,
        folio="F" * 120, notes=word,
        lines=(_line(generic_name=word, brand=word, instructions=word, quantity=word),),
    )
    pdf = render_receta(receta)
    flat = _flat(_text(pdf))
    assert flat.count(word) >= 6
    assert word.upper() in flat
    assert "F" * 120 in flat
    reader = PdfReader(io.BytesIO(pdf))
    for index, x, _, text in _text_origins(pdf):
        assert x <= float(reader.pages[index].mediabox.width) - 10 * MM, text


def test_a_header_longer_than_a_page_flows_on_and_later_headers_stay_short():
    institution = " ".join(["Clínica"] * 600)
    pdf = render_receta(_receta(institution=institution))
    pages = _pages(pdf)
    assert len(pages) > 2
    later = [_words(page) for page in pages[1:]]
    in_later_headers = sum(page.split("Continuación")[0].count("Clínica") for page in later)
    # 600 in the institution and 1 in the clinic's name, besides the shortened later headers
    assert "\n".join(pages).count("Clínica") - in_later_headers == 601, "page 1 prints the whole name"
    assert all("…" in page.split("Continuación")[0] for page in later), "later headers are shortened"
    assert all("Continuación — Paciente: Juan Ñuño Pérez García" in page for page in later)
    assert "Firmado electrónicamente" in pages[-1]


def test_receta_is_a_frozen_value():
    receta = _receta()
    with pytest.raises(dataclasses.FrozenInstanceError):
        receta.folio = "otro"  # type: ignore[misc]
