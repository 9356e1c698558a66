"""Printable prescription (*receta médica*) of one signed MedicationRequest set, as PDF.

Contract:

- Input is a :class:`Receta` the caller has already built from the signed prescription: every value is
  printed as given (nothing here reads storage, calls AWS or reads the clock), so the same input always gives
  the same bytes. The PDF's creation date is ``issued`` and its producer is fixed.
- Page size is half-letter portrait (*media carta*, 139.7 × 215.9 mm): the customary size of a Mexican
  prescription pad, two to a letter sheet, and the sheet the pharmacy retains for group II–III medicines.
- Legal content (Reglamento de Insumos para la Salud arts. 28–32; LGS arts. 225–226; NOM-024): institution,
  clinic, address and CLUES; the prescriber's printed name, title and "Céd. Prof."; date and time issued, in
  ``timezone`` with Spanish month names (no locale); the patient's name, age, sex and record number; one
  numbered entry per :class:`RecetaLine` with the GENERIC NAME first (brand in parentheses), presentation,
  dose, route, frequency, duration, quantity, instructions and Cuadro Básico key; a marker on controlled
  groups I–III; the group I special pad number, validity and dispensations when given; the electronic
  signature (signer, time, algorithm, SHA-256 digest in monospace) and a QR code of ``verify_url`` (segno,
  error correction M, drawn as filled vector rectangles, 4-module quiet zone, at least 32 mm wide) with the
  URL printed under it. There is no handwritten signature.
- Pages after the first repeat the header in short (institution and clinic, prescriber and cédula, the group
  I pad number) with a continuation line (patient, folio); every page's footer has the folio and, when there
  is more than one page, "Página X de Y". Entries and the signature block are kept whole on one page when
  they fit on one. Text wraps (overlong words are broken) and is never cut off; only the continuation headers
  and the footer shorten an absurdly long value with "…", since page 1 prints it whole.
- The font is the PDF core font Helvetica (Courier for the digest), as in :mod:`functions.results.report`:
  no font file ships with the function. Its encoding is Windows-1252, which holds every Spanish letter
  (á é í ó ú ü ñ ¿ ¡) and the dashes and quotes; other characters print as an ASCII fallback or "?".
- fpdf2 and segno are imported on first use, so Lambda cold starts that never print do not load them.

:func:`render_receta` raises :class:`ValueError` when ``issued`` or ``signed_at`` is naive or ``timezone`` is
not a known IANA zone: printing a wrong legal date is worse than not printing.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from fpdf import FPDF

TITLE = "Receta médica"
PRODUCER = "Expediente"


@dataclass(frozen=True)
class RecetaLine:
    """One prescribed medicine, in the words printed on the receta."""

    generic_name: str  # "Paracetamol"
    presentation: str  # "Tableta 500 mg" (form + strength)
    dose: str  # "500 mg (1 tableta)"
    route: str  # "Vía oral"
    frequency: str  # "cada 8 horas"
    duration: str  # "5 días"
    quantity: str  # "1 envase con 20 tabletas"
    brand: str | None = None
    instructions: str | None = None
    key: str | None = None  # Cuadro Básico key 010.000.0104.00
    sale_group: str | None = None  # "I".."VI"


@dataclass(frozen=True)
class Receta:
    """Everything one printed receta shows; the caller reads and signs it first."""

    folio: str  # the prescription id
    issued: datetime  # aware, UTC; printed in ``timezone``
    timezone: str  # IANA, e.g. "America/Mexico_City"
    prescriber_name: str
    cedula: str  # cédula profesional
    prescriber_title: str | None  # e.g. "Médico cirujano", specialty
    institution: str  # tenant / clinic chain name
    clinic_name: str
    clinic_address: str
    clinic_clues: str | None
    patient_name: str
    patient_birth_date: str | None  # ISO date; the age in years is printed too
    patient_sex: str | None
    patient_record: str | None  # expediente number
    lines: tuple[RecetaLine, ...]
    signature_digest: str  # hex SHA-256 of the signed document
    signature_algorithm: str  # e.g. "ES256"
    signed_at: datetime
    verify_url: str  # goes into the QR code and is printed under it
    special_pad_barcode: str | None = None  # group I: government prescription pad number
    valid_until: date | None = None
    dispensations_allowed: int | None = None  # e.g. 3 for group III
    notes: str | None = None


# ------------------------------------------------------------------ wording ---

_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre")
_SEXES = {"male": "Masculino", "female": "Femenino", "other": "Otro", "unknown": "No especificado"}
_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI"}
# LGS art. 226: the sale groups whose receta the pharmacy controls (I special pad, II retained, III up to 3 fills)
_GROUP_MARKS = {
    "I": "Grupo I — estupefaciente: receta especial con código de barras",
    "II": "Grupo II — psicotrópico: receta retenida por la farmacia",
    "III": "Grupo III — psicotrópico: hasta 3 surtidos, sellar y registrar",
}


def spanish_date(value: date) -> str:
    """``value`` as "13 de junio de 2026" (Spanish month names without depending on the process locale)."""
    return f"{value.day} de {_MONTHS[value.month - 1]} de {value.year}"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"Receta.timezone {name!r} is not a known IANA time zone") from error


def _local(value: datetime, zone: ZoneInfo, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Receta.{field} must be timezone-aware (UTC)")
    return value.astimezone(zone)


def _offset(moment: datetime) -> str:
    raw = moment.strftime("%z")  # "-0600"
    return f"UTC{raw[:3]}:{raw[3:]}" if len(raw) == 5 else "UTC"


def _moment(moment: datetime) -> str:
    """ "13 de junio de 2026, 21:00 h"."""
    return f"{spanish_date(moment.date())}, {moment:%H:%M} h"


def _age(birth: date, on: date) -> str:
    """Completed years; months (or days) under one year, since infant doses go by it."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return f"{years} año" if years == 1 else f"{years} años"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months} mes" if months == 1 else f"{months} meses"
    days = max((on - birth).days, 0)
    return f"{days} día" if days == 1 else f"{days} días"


def _birth_and_age(value: str | None, on: date) -> str:
    text = (value or "").strip()
    if not text:
        return ""
    try:
        birth = date.fromisoformat(text[:10])
    except ValueError:
        return text  # printed as written: the record holds what it holds
    if birth > on:
        return f"{birth:%d/%m/%Y}"
    return f"{_age(birth, on)} (nac. {birth:%d/%m/%Y})"


def _sex(value: str | None) -> str:
    text = (value or "").strip()
    return _SEXES.get(text.lower(), text)


def _group(value: str | None) -> str:
    text = (value or "").strip().upper().removeprefix("GRUPO").strip()
    return _ROMAN.get(text, text)


def _digest_lines(digest: str) -> str:
    """The digest in blocks of 8, four blocks a line, so it can be read aloud and compared."""
    compact = re.sub(r"\s+", "", digest)
    blocks = [compact[i:i + 8] for i in range(0, len(compact), 8)]
    return "\n".join(" ".join(blocks[i:i + 4]) for i in range(0, len(blocks), 4))


def _join(*parts: str | None, sep: str = " · ") -> str:
    return sep.join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------------- PDF ---

_FALLBACKS = {
    "≥": ">=", "≤": "<=", "≠": "!=", "≈": "~", "−": "-", "‐": "-", "‑": "-", "→": "->", "←": "<-",
    "μ": "µ", "Ω": "Ohm", "\u2009": " ", "\u202f": " ", "\u2007": " ", "\u200b": "", "\ufeff": "",
    "⁰": "^0", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7", "⁸": "^8", "⁹": "^9", "⁻": "^-", "⁺": "^+",
    "\t": " ",
}
_NB = "\x1fnb\x1f"  # total-pages alias: its control characters cannot come from input text (see _text)
_ENCODING = "windows-1252"  # the core fonts' /WinAnsiEncoding


def _printable(char: str) -> bool:
    try:
        char.encode(_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _text(value: str | None) -> str:
    """``value`` in what Helvetica (Windows-1252) prints: fallbacks for the rest, control characters removed."""
    out = []
    for char in (value or "").replace("\r\n", "\n"):
        if char == "\n":
            out.append(char)
        elif char in _FALLBACKS:
            out.append(_FALLBACKS[char])
        elif unicodedata.category(char).startswith("C"):
            continue
        elif _printable(char):
            out.append(char)
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(_printable(c) for c in base) else "?")
    return "".join(out)


def _line(value: str | None) -> str:
    """One-line ``value`` (a name in a header)."""
    return " ".join(_text(value).split())


_PAGE_W, _PAGE_H = 139.7, 215.9  # half-letter portrait, mm
_MARGIN = 10.0
_BOTTOM = 14.0  # auto page break; the footer sits under it
_RED = (176, 0, 0)
_GREY = (90, 90, 90)
_QR_MIN, _QR_MAX, _QR_MODULE = 32.0, 50.0, 0.5  # mm: QR side with quiet zone; smallest module
_QUIET = 4  # modules, ISO/IEC 18004
_RIGHT_W = 44.0  # mm: header column with the title and the group I pad number


@dataclass(frozen=True)
class _Para:
    """One wrapped paragraph: font, size, line height, colour, text, left indent (mm)."""

    text: str
    size: float = 8.5
    style: str = ""
    family: str = "Helvetica"
    height: float = 3.9
    color: tuple[int, int, int] = (0, 0, 0)
    indent: float = 0.0


def _dry_run(pdf: FPDF, width: float, line_height: float, text: str, output: str) -> object:
    """fpdf2's dry run of a multi_cell, with automatic page breaks off: a dry run that broke the page would
    draw the header, and a header that measures text would never end."""
    auto, margin = pdf.auto_page_break, pdf.b_margin
    pdf.set_auto_page_break(False, margin)
    try:
        return pdf.multi_cell(width, line_height, text, align="L", dry_run=True, output=output)
    finally:
        pdf.set_auto_page_break(auto, margin)


def _height(pdf: FPDF, width: float, line_height: float, text: str) -> float:
    height = _dry_run(pdf, width, line_height, text, "HEIGHT")
    assert isinstance(height, int | float)
    return float(height)


def _wrap(pdf: FPDF, width: float, line_height: float, text: str) -> list[str]:
    lines = _dry_run(pdf, width, line_height, text, "LINES")
    assert isinstance(lines, list)
    return [str(line) for line in lines]


def _paragraphs(pdf: FPDF, paras: list[_Para], *, measure: bool, width: float | None = None,
                align: str = "L") -> float:
    """Writes ``paras`` one under the other from the left margin, or from x in a column of ``width``; or,
    with ``measure``, only adds up their height."""
    total = 0.0
    full = width if width is not None else pdf.epw
    left = pdf.get_x() if width is not None else pdf.l_margin
    for para in paras:
        if not para.text:
            continue
        pdf.set_font(para.family, para.style, para.size)
        w = full - para.indent
        # fpdf2's line breaking is slow (it re-measures the line at every character): a paragraph that fits
        # on one line, as most do, is one cell
        single = "\n" not in para.text and pdf.get_string_width(para.text) <= w - 2 * pdf.c_margin
        if measure:
            if single:
                total += para.height
            else:
                total += _height(pdf, w, para.height, para.text)
            continue
        pdf.set_text_color(*para.color)
        pdf.set_x(left + para.indent)
        if single:
            pdf.cell(w, para.height, para.text, align=align, new_x="LEFT", new_y="NEXT")
        else:
            pdf.multi_cell(w, para.height, para.text, align=align, new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    return total


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """``text`` cut to one line of ``width``, ending in "…" when cut (only reminders on later pages are cut)."""
    if pdf.get_string_width(text) <= width - 2 * pdf.c_margin:
        return text
    text = text.removesuffix("…")
    while text and pdf.get_string_width(text + "…") > width - 2 * pdf.c_margin:
        text = text[:-1]
    return text + "…"


def _denormalized(line: str) -> str:
    """A line fpdf2 wrapped, back from its font encoding (Windows-1252 bytes read as latin-1) to text."""
    try:
        return line.encode("latin-1").decode(_ENCODING)
    except (UnicodeEncodeError, UnicodeDecodeError):
        return line  # already text


def _clamp(pdf: FPDF, para: _Para, width: float, lines: int) -> _Para:
    """``para`` shortened with "…" to at most ``lines`` lines of ``width``."""
    if not para.text:
        return para
    pdf.set_font(para.family, para.style, para.size)
    wrapped = _wrap(pdf, width - para.indent, para.height, para.text)
    if len(wrapped) <= lines:
        return para
    kept = [_denormalized(str(line)) for line in wrapped[:lines]]
    kept[-1] = _fit(pdf, kept[-1] + "…", width - para.indent)
    return dataclasses.replace(para, text="\n".join(kept))


def _entry(number: int, line: RecetaLine) -> list[_Para]:
    """The paragraphs of one prescribed medicine; generic name in capitals first (RIS art. 28)."""
    name = _line(line.generic_name).upper()
    if line.brand and line.brand.strip():
        name = f"{name} ({_line(line.brand)})"
    indent = 6.0
    paras = [_Para(f"{number}. {name}", size=9.5, style="B", height=4.6)]
    group = _group(line.sale_group)
    if group in _GROUP_MARKS:
        paras.append(_Para(_GROUP_MARKS[group], size=8, style="B", color=_RED, indent=indent))
    paras.append(_Para(_text(_join(f"Presentación: {line.presentation.strip()}",
                                   f"Surtir: {line.quantity.strip()}")), indent=indent))
    paras.append(_Para(_text(_join(f"Dosis: {line.dose.strip()}", line.route, line.frequency,
                                   f"Duración: {line.duration.strip()}")), indent=indent))
    if line.instructions and line.instructions.strip():
        paras.append(_Para(_text(f"Indicaciones: {line.instructions.strip()}"), indent=indent))
    key = f"Clave CB: {line.key.strip()}" if line.key and line.key.strip() else ""
    shown_group = f"Grupo {group}" if group and group not in _GROUP_MARKS else ""
    if key or shown_group:
        paras.append(_Para(_text(_join(key, shown_group)), size=7.5, color=_GREY, indent=indent))
    return paras


def _draw_qr(pdf: FPDF, matrix: tuple[bytearray, ...], x: float, y: float, module: float) -> None:
    """Dark modules as filled rectangles, one per horizontal run, inside a ``_QUIET``-module white margin."""
    origin_x, origin_y = x + _QUIET * module, y + _QUIET * module
    pdf.set_fill_color(0, 0, 0)
    for row, cells in enumerate(matrix):
        col, size = 0, len(cells)
        while col < size:
            if not cells[col] & 1:
                col += 1
                continue
            start = col
            while col < size and cells[col] & 1:
                col += 1
            pdf.rect(origin_x + start * module, origin_y + row * module, (col - start) * module, module, style="F")


def render_receta(receta: Receta) -> bytes:
    """The receta as half-letter PDF bytes (see the module docstring).

    Raises :class:`ValueError` when ``issued``/``signed_at`` is naive or ``timezone`` is unknown.
    """
    from fpdf import FPDF
    from segno import make_qr

    zone = _zone(receta.timezone)
    issued = _local(receta.issued, zone, "issued")
    signed = _local(receta.signed_at, zone, "signed_at")
    qr = make_qr(receta.verify_url, error="m", boost_error=False)
    matrix = qr.matrix
    modules = len(matrix) + 2 * _QUIET
    qr_side = min(max(_QR_MIN, modules * _QR_MODULE), _QR_MAX)

    folio = _line(receta.folio)
    pad = _line(receta.special_pad_barcode)
    header_left = [
        _Para(_line(receta.institution), size=10.5, style="B", height=4.8),
        _Para(_line(receta.clinic_name), size=8.5, style="B"),
        _Para(_text(receta.clinic_address.strip()), size=7.5, height=3.4),
        _Para(_text(f"CLUES: {receta.clinic_clues.strip()}") if receta.clinic_clues else "", size=7.5, height=3.4),
    ]
    header_right = [_Para(TITLE.upper(), size=10.5, style="B", height=4.8)]
    if pad:
        # LGS art. 241: narcotics (group I) go on the special pad whose barcode the Secretaría de Salud assigns
        header_right.append(_Para("Recetario especial (Grupo I):", size=7.5, style="B", height=3.4, color=_RED))
        header_right.append(_Para(pad, size=8, style="B", color=_RED))
    prescriber = [
        _Para(_line(receta.prescriber_name), size=9.5, style="B", height=4.4),
        _Para(_text(_join(receta.prescriber_title, f"Céd. Prof. {receta.cedula.strip()}")), size=8),
    ]
    compact = [
        _Para(_join(_line(receta.institution), _line(receta.clinic_name)), size=9, style="B", height=4.2),
        _Para(_line(receta.prescriber_name), size=8.5, style="B"),
        _Para(_text(_join(f"Céd. Prof. {receta.cedula.strip()}", receta.prescriber_title)), size=7.5, height=3.4),
    ]
    continuation = _text(_join(f"Continuación — Paciente: {_line(receta.patient_name)}", f"Folio {folio}"))
    footer_left = f"Receta {folio}"

    class Document(FPDF):
        finishing = False  # set before the last footer: a one-page receta prints no page number

        def header(self) -> None:
            if self.page_no() == 1:
                self._first_header()
            else:
                self._continuation_header()
            self.set_line_width(0.4)
            self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
            self.set_line_width(0.2)
            self.set_y(self.get_y() + 2.5)
            if self.page_no() > 1:
                _paragraphs(self, [_clamp(self, _Para(continuation, size=7.5, style="I", height=3.4, color=_GREY),
                                          self.epw, 2)], measure=False)
                self.set_y(self.get_y() + 1.5)

        def _first_header(self) -> None:
            """Every value whole: a value too long for the page flows on (the next page's header is bounded)."""
            top, page = self.get_y(), self.page
            self.set_xy(self.w - self.r_margin - _RIGHT_W, top)
            _paragraphs(self, header_right, measure=False, width=_RIGHT_W, align="R")
            right_end = self.get_y()
            self.set_xy(self.l_margin, top)
            _paragraphs(self, header_left, measure=False, width=self.epw - _RIGHT_W - 3)
            end = max(self.get_y(), right_end) if self.page == page else self.get_y()
            self.set_xy(self.l_margin, end + 1.2)
            _paragraphs(self, prescriber, measure=False)

        def _continuation_header(self) -> None:
            """The same facts in a few lines, each value shortened with "…" past two lines, so that the header
            always leaves room for the prescription (a header that filled the page would never end)."""
            top = self.get_y()
            left_w = self.epw - _RIGHT_W - 3
            self.set_xy(self.w - self.r_margin - _RIGHT_W, top)
            _paragraphs(self, [_clamp(self, p, _RIGHT_W, 2) for p in header_right], measure=False, width=_RIGHT_W,
                        align="R")
            right_end = self.get_y()
            self.set_xy(self.l_margin, top)
            _paragraphs(self, [_clamp(self, p, left_w, 2) for p in compact], measure=False, width=left_w)
            self.set_y(max(self.get_y(), right_end))

        def footer(self) -> None:
            self.set_y(-10)
            self.set_font("Helvetica", "", 7)
            self.set_text_color(*_GREY)
            self.cell(self.epw * 0.7, 4, _fit(self, footer_left, self.epw * 0.7))
            if self.page_no() > 1 or not self.finishing:
                self.cell(0, 4, f"Página {self.page_no()} de {_NB}", align="R")
            self.set_text_color(0, 0, 0)

    pdf = Document(orientation="portrait", unit="mm", format=(_PAGE_W, _PAGE_H))
    pdf.core_fonts_encoding = _ENCODING
    pdf.alias_nb_pages(_NB)
    pdf.set_margins(_MARGIN, 8, _MARGIN)
    pdf.set_auto_page_break(True, margin=_BOTTOM)
    pdf.set_title(_line(f"{TITLE} {folio} - {receta.patient_name}"))
    pdf.set_author(_line(receta.prescriber_name))
    pdf.set_creator(PRODUCER)
    pdf.set_producer(PRODUCER)
    pdf.set_lang("es-MX")
    pdf.set_creation_date(receta.issued.astimezone(UTC))
    pdf.add_page()

    # date, patient, validity
    facts = [
        _Para(_text(f"Folio: {folio}"), size=8, style="B"),
        _Para(_text(f"Fecha de emisión: {_moment(issued)} ({receta.timezone}, {_offset(issued)})"), size=8),
        _Para(_text(f"Paciente: {_line(receta.patient_name)}"), size=9.5, style="B", height=4.6),
        _Para(_text(_join(f"Edad: {a}" if (a := _birth_and_age(receta.patient_birth_date, issued.date())) else "",
                          f"Sexo: {s}" if (s := _sex(receta.patient_sex)) else "",
                          f"Expediente: {receta.patient_record.strip()}" if receta.patient_record else "")),
              size=8),
        _Para(_text(_join(
            f"Válida hasta el {spanish_date(receta.valid_until)}" if receta.valid_until else "",
            f"Surtidos permitidos: {receta.dispensations_allowed}" if receta.dispensations_allowed else "")),
            size=8, style="B"),
    ]
    _paragraphs(pdf, facts, measure=False)
    pdf.set_y(pdf.get_y() + 1.5)
    _paragraphs(pdf, [_Para("Rp.", size=11, style="BI", height=5.2)], measure=False)

    # one entry per medicine, each kept on one page when it fits on one
    usable = pdf.h - _BOTTOM - 40.0
    for number, line in enumerate(receta.lines, start=1):
        paras = _entry(number, line)
        height = _paragraphs(pdf, paras, measure=True)
        if height <= usable and pdf.will_page_break(height):
            pdf.add_page()
        _paragraphs(pdf, paras, measure=False)
        pdf.set_y(pdf.get_y() + 1.8)
    if not receta.lines:
        _paragraphs(pdf, [_Para("(sin medicamentos)", style="I")], measure=False)

    if receta.notes and receta.notes.strip():
        pdf.set_y(pdf.get_y() + 1)
        _paragraphs(pdf, [_Para("Observaciones", size=8.5, style="B"), _Para(_text(receta.notes.strip()))],
                    measure=False)

    # signature block: electronic signature on the left, QR code on the right, URL under both
    text_w = pdf.epw - qr_side - 3
    signature = [
        _Para("Firma electrónica", size=8.5, style="B"),
        _Para(_text(f"Firmado electrónicamente por {_line(receta.prescriber_name)} el {_moment(signed)}"), size=7.5,
              height=3.4),
        _Para(_text(f"Céd. Prof. {receta.cedula.strip()} · Algoritmo: {receta.signature_algorithm.strip()}"),
              size=7.5, height=3.4),
        _Para("Huella SHA-256 del documento firmado:", size=7.5, height=3.4),
        _Para(_text(_digest_lines(receta.signature_digest)), size=7, family="Courier", height=3.2),
        _Para("Sin firma autógrafa: la firma electrónica se comprueba con el código QR.", size=6.5,
              style="I", height=3.0, color=_GREY),
    ]
    verify = [
        _Para("Verifique la autenticidad y el surtido en:", size=7, height=3.2),
        _Para(_text(receta.verify_url), size=7, height=3.2),
    ]
    pdf.set_x(pdf.l_margin)
    left_h = _paragraphs(pdf, signature, measure=True, width=text_w)
    block_h = max(left_h, qr_side) + _paragraphs(pdf, verify, measure=True) + 4
    if pdf.will_page_break(block_h):
        pdf.add_page()
    pdf.set_draw_color(*_GREY)
    pdf.line(pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.r_margin, pdf.get_y() + 1)
    pdf.set_draw_color(0, 0, 0)
    top, page = pdf.get_y() + 2.5, pdf.page
    _draw_qr(pdf, matrix, pdf.w - pdf.r_margin - qr_side, top, qr_side / modules)  # first: on this page
    pdf.set_xy(pdf.l_margin, top + 1)
    _paragraphs(pdf, signature, measure=False, width=text_w)
    # a signature text too long for one page flows on, and the URL follows it
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + qr_side) if pdf.page == page else pdf.get_y())
    _paragraphs(pdf, verify, measure=False)

    pdf.finishing = True
    return bytes(pdf.output())
