"""HL7 v2.5.1 ER7 codec: text to typed data and typed data to text, nothing stored.

Laboratory and registration systems send ER7 messages over HTTPS. This module splits a request
body into messages (:func:`split`), checks the message header (:func:`parse`), reads the two
inbound profiles we accept (:func:`read_oru` for ORU^R01 results, :func:`read_adt` for ADT^A04 /
ADT^A08 registrations; :func:`read` dispatches on MSH-9), builds the acknowledgement
(:func:`ack`, :func:`join_batch`) and the outbound lab order (:func:`orm_o01`). Mapping the data
into FHIR is domain code elsewhere.

Every problem with a message is raised as :class:`Hl7Error`, which carries what an ERR segment
needs: the HL7 table 0357 code, a human message naming the place (``OBX-5 value '7..2' is not a
number for value type NM (OBX #3)``), the segment, its 1-based occurrence in the message, the field
and component. :attr:`Hl7Error.ack_code` says whether the whole message is rejected (``AR``:
unsupported type, event, processing id or version, and framing problems such as a missing or
unreadable MSH or a batch whose count is wrong) or accepted with an application error (``AE``).
Builders raise ``ValueError`` for arguments the caller controls (an unknown sex or priority code),
because those are programming errors, not message errors.

Message profile (the rules this codec holds senders to, beyond HL7 v2.5.1 itself):

* MSH-1 is ``|``; MSH-2 holds 4 (or 5) distinct encoding characters; MSH-9 is ``TYPE^EVENT`` (3-character
  codes) with an optional structure; MSH-10 is required; MSH-11 is P, T or D; MSH-12 starts with ``2.`` and is at
  least 2.3. Every MSH problem rejects the message (``AR``) because nothing after it can be trusted.
  MSH-7 is kept raw and not checked.
* Segment ids are three upper-case letters or digits; a line that is not a segment (typically an
  unescaped line break inside a free-text field) rejects the message rather than losing the text.
* One patient per message: a second PID is a segment sequence error (100). A required segment that
  is absent is 101 (PID, OBR); a segment out of place is 100 (PID after the orders, OBX before OBR).
* ORU^R01: NTE right after OBR (before its first OBX) are order notes; NTE after an OBX belong to
  that OBX. ORC is optional and only supplies the placer/filler numbers when OBR-2/OBR-3 are empty.
  Patient-level NTE (before the first OBR) and other segments (SFT, PD1, PV2, TQ1, SPM, Z-segments
  ...) are skipped. OBX-2 is one of NM, ST, TX, CE, CWE, SN; OBX-11 one of F, P, C, X, R, I, D, W;
  OBX-5 may be empty only when OBX-11 is X, D or I. NM and SN values do not repeat. ST/TX
  repetitions are lines of one text.
* Names (PID-5, first repetition): XPN-1 holds the surnames as the patient writes them, father's then
  mother's (``PÉREZ GÓMEZ``). Exactly two words are split into first and second surname; one word is
  a single surname; three or more words stay together as the first surname with no second surname,
  because compound surnames (``DE LA CRUZ``) cannot be split safely. Known limitation: a two-word
  compound surname sent alone (``DEL RÍO``) is split as if it were two surnames.
  XPN-2 and XPN-3 hold given names, several words each allowed. PID-6 (mother's maiden name) is not
  the patient's surname and is not read.
* Timestamps keep the precision they were sent with; an offset on a value without a time is dropped
  because a calendar date has no offset. Text is UTF-8 (outbound MSH-18 says ``UNICODE UTF-8``);
  outbound values escape only the HL7 delimiters, line breaks (``\\.br\\``) and control characters.
  Inbound ``\\Xhh\\`` escapes are read one byte per character (Latin-1), as python-hl7 does; unknown
  escape sequences (character-set switches, application-defined ones) are dropped and a lone escape
  character is kept as text.

Only the standard library and ``hl7`` (python-hl7) are imported: no AWS, no clock, no randomness.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import hl7
import hl7.containers
import hl7.util
from hl7.util import escape as _library_escape
from hl7.util import unescape as _library_unescape

# python-hl7 logs the raw field (a name, a CURP) when an escape sequence is malformed
# (hl7.util.unescape); its loggers (named after their files) stay silent, and what is wrong with a
# message goes in the NAK instead.
for _module in (hl7.util, hl7.containers):
    logging.getLogger(_module.__file__).setLevel(logging.CRITICAL + 1)

__all__ = [
    "ERROR_TEXTS",
    "AdtMessage",
    "CodedValue",
    "Header",
    "Hl7Error",
    "Identifier",
    "OruMessage",
    "OruObservation",
    "OruOrder",
    "OutboundHeader",
    "OutboundOrder",
    "OutboundPatient",
    "Parsed",
    "PatientAddress",
    "PatientDemographics",
    "PatientIds",
    "StructuredNumeric",
    "ack",
    "escape",
    "format_timestamp",
    "hl7_timestamp",
    "join_batch",
    "orm_o01",
    "parse",
    "read",
    "read_adt",
    "read_oru",
    "split",
]

VERSION: Final = "2.5.1"
ENCODING_CHARACTERS: Final = "^~\\&"
CHARACTER_SET: Final = "UNICODE UTF-8"
# PID-3 CX-4 of our own record ids: what our ORM^O01 sends and what results must send back.
RECORD_AUTHORITY: Final = "EXPEDIENTE"

# HL7 table 0357 (message error condition codes) with the standard texts that go into ERR-3.2.
ERROR_TEXTS: Final[Mapping[str, str]] = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_REJECT_CODES: Final = frozenset({"200", "201", "202", "203"})
_SEVERITIES: Final = frozenset({"E", "W", "I"})
_ACK_CODES: Final = frozenset({"AA", "AE", "AR"})

SUPPORTED: Final[Mapping[str, frozenset[str]]] = {"ORU": frozenset({"R01"}), "ADT": frozenset({"A04", "A08"})}
PROCESSING_IDS: Final = frozenset({"P", "T", "D"})
VALUE_TYPES: Final = frozenset({"NM", "ST", "TX", "CE", "CWE", "SN"})
OBSERVATION_STATUSES: Final = frozenset({"F", "P", "C", "X", "R", "I", "D", "W"})
_NO_VALUE_STATUSES: Final = frozenset({"X", "D", "I"})  # cannot be obtained, deleted, pending
_SEX_TO_GENDER: Final[Mapping[str, str]] = {
    "M": "male", "F": "female", "O": "other", "U": "unknown", "A": "unknown", "N": "unknown",
}
_GENDER_TO_SEX: Final[Mapping[str, str]] = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_ENCOUNTER_CLASS_TO_PATIENT_CLASS: Final[Mapping[str, str]] = {"AMB": "O", "EMER": "E", "IMP": "I"}
_PRIORITY_TO_TQ: Final[Mapping[str, str]] = {"routine": "R", "urgent": "A", "asap": "A", "stat": "S"}
_ORDER_CONTROLS: Final = frozenset({"NW", "CA"})
_SN_COMPARATORS: Final = frozenset({"", ">", "<", ">=", "<=", "=", "<>"})
_SN_SEPARATORS: Final = frozenset({"", "-", "+", "/", ".", ":"})
# Segments that repeat in our profiles: their error texts name the occurrence ("OBX #3").
_REPEATING: Final = frozenset({"OBR", "OBX", "ORC", "NTE", "NK1", "DG1", "BHS", "BTS"})
_BATCH_SEGMENTS: Final = frozenset({"FHS", "BHS", "BTS", "FTS"})
_NULL: Final = '""'  # HL7 explicit null: "the value is deleted", which for reading means absent

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # HL7 NM: no exponent, no NaN/Infinity
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE_BETWEEN = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*")
_RANGE_ABOVE = re.compile(rf"\s*>=?\s*({_NUM})\s*")
_RANGE_BELOW = re.compile(rf"\s*<=?\s*({_NUM})\s*")
_TIMESTAMP = re.compile(
    r"(?P<year>\d{4})(?:(?P<month>\d{2})(?:(?P<day>\d{2})(?:(?P<hour>\d{2})(?:(?P<minute>\d{2})"
    r"(?:(?P<second>\d{2})(?:\.(?P<fraction>\d{1,4}))?)?)?)?)?)?(?P<offset>[+-]\d{4})?"
)
# Inbound formatting escapes become plain text: highlighting has no meaning in our data, and line
# breaks are "\n" (python-hl7 would turn \H\ into "_" and \.br\ into "\r").
_UNESCAPE_MAP: Final[dict[str, str]] = {"H": "", "N": "", ".br": "\n", ".sp": "\n", ".ce": "\n"}
_KNOWN_ESCAPE = re.compile(r"[FRSTEHN]|\.(?:br|sp|fi|nf|in|ti|sk|ce)(?:[+-]?\d+)?|X[0-9A-Fa-f]+")
# python-hl7 escapes against a container's separators; this one carries the standard set we emit.
_STANDARD: Final[Any] = hl7.Message()
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CHUNK = re.compile(r"[\x20-\x7e]+|[^\x00-\x7f]+|[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------------------------- errors


class Hl7Error(Exception):
    """A problem with a message, located as precisely as HL7's ERR segment allows.

    ``code`` is an HL7 table 0357 code (see :data:`ERROR_TEXTS`); ``text`` says what was wrong and
    where; ``segment``/``sequence``/``field``/``component`` locate it (``sequence`` is the 1-based
    occurrence of the segment in the message, ``None`` when the segment is absent or the problem
    concerns the whole message); ``severity`` is E, W or I; ``framing`` marks problems with the
    message as a whole (no readable MSH, bad batch envelope, a sender not permitted to send this
    message type), which reject it (``AR``).

    Raises ``ValueError`` for a code outside table 0357 or an unknown severity.

    Not a dataclass: exceptions get attributes assigned by the interpreter and by context managers
    (``__traceback__``), which a frozen dataclass would refuse.
    """

    def __init__(
        self,
        code: str,
        text: str,
        *,
        segment: str | None = None,
        sequence: int | None = None,
        field: int | None = None,
        component: int | None = None,
        severity: str = "E",
        framing: bool = False,
    ) -> None:
        if code not in ERROR_TEXTS:
            raise ValueError(f"{code!r} is not an HL7 table 0357 error code")
        if severity not in _SEVERITIES:
            raise ValueError(f"severity must be one of E, W, I, not {severity!r}")
        super().__init__(text)
        self.code = code
        self.text = text
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.severity = severity
        self.framing = framing

    @classmethod
    def at(
        cls,
        code: str,
        segment: str,
        field: int | None,
        text: str,
        *,
        sequence: int | None = 1,
        component: int | None = None,
        severity: str = "E",
        framing: bool = False,
    ) -> Hl7Error:
        """Build the error for ``segment``-``field`` (occurrence ``sequence``, default the first).

        ``raise Hl7Error.at("101", "PID", 7, "PID-7 birth date is missing")``. Raises ``ValueError``
        like the constructor.
        """
        return cls(code, text, segment=segment, sequence=sequence, field=field, component=component,
                   severity=severity, framing=framing)

    @property
    def ack_code(self) -> str:
        """``AR`` when the message is rejected outright (codes 200-203, framing), else ``AE``."""
        return "AR" if self.framing or self.code in _REJECT_CODES else "AE"

    @property
    def location(self) -> str:
        """The place in HL7 notation, ``OBX-5.1``; empty when the error has no segment."""
        if not self.segment:
            return ""
        where = self.segment
        if self.field is not None:
            where += f"-{self.field}"
            if self.component is not None:
                where += f".{self.component}"
        return where

    def __repr__(self) -> str:
        return (f"Hl7Error(code={self.code!r}, text={self.text!r}, segment={self.segment!r}, "
                f"sequence={self.sequence!r}, field={self.field!r}, component={self.component!r}, "
                f"severity={self.severity!r}, framing={self.framing!r})")


def _framing(code: str, text: str, *, segment: str | None = "MSH", field: int | None = None,
             sequence: int | None = None, component: int | None = None) -> Hl7Error:
    return Hl7Error(code, text, segment=segment, sequence=sequence, field=field, component=component,
                    framing=True)


# ------------------------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class Header:
    """The MSH of a received message. Applications and facilities are HD-1 (namespace id)."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    timestamp: str  # MSH-7 as sent (not checked)
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    message_structure: str = ""  # MSH-9.3, may be empty


@dataclass(frozen=True)
class Parsed:
    """One message whose MSH passed :func:`parse`, with the python-hl7 tree for anything else."""

    header: Header
    message: Any  # hl7.Message

    @property
    def raw_msh(self) -> str:
        """The MSH segment as ER7 text, for :func:`ack` (keeps the full HD of MSH-3..6)."""
        return str(self.message.segment("MSH"))


@dataclass(frozen=True)
class CodedValue:
    """A CE/CWE: code, text and coding system (``LN``, ``UCUM``, ``I10`` ...), plus the alternate triplet."""

    code: str
    text: str = ""
    coding_system: str = ""
    alternate_code: str = ""
    alternate_text: str = ""
    alternate_system: str = ""

    def code_in(self, system: str) -> str | None:
        """The code this value carries for ``system`` (primary first, then alternate), or ``None``."""
        if self.code and self.coding_system == system:
            return self.code
        if self.alternate_code and self.alternate_system == system:
            return self.alternate_code
        return None


@dataclass(frozen=True)
class Identifier:
    """One PID-3 repetition (CX): value, assigning authority (CX-4 HD-1) and type (CX-5: MR, NI ...)."""

    value: str
    assigning_authority: str
    type_code: str


@dataclass(frozen=True)
class StructuredNumeric:
    """An SN value: ``<^0.5`` is ``("<", 0.5)``; ranges and ratios (``^1^:^128``) fill ``separator``/``second``."""

    comparator: str  # "", ">", "<", ">=", "<=", "=", "<>"
    number: Decimal
    separator: str = ""  # "", "-", "+", "/", ".", ":"
    second: Decimal | None = None


@dataclass(frozen=True)
class PatientIds:
    """What an ORU says about its patient, to find the patient; names and dates stay raw."""

    identifiers: list[Identifier]
    family: str  # PID-5 XPN-1 (FN-1) as sent
    given: str  # PID-5 XPN-2 as sent
    birth_date: str  # PID-7 as sent
    sex: str  # PID-8 as sent


ObservationValue = Decimal | StructuredNumeric | str | CodedValue | None


@dataclass(frozen=True)
class OruObservation:
    """One OBX with its notes. ``value`` depends on ``value_type``: NM Decimal, SN StructuredNumeric,
    ST/TX str (unescaped, repetitions as lines), CE/CWE CodedValue; ``None`` when OBX-11 is X, D or I
    and OBX-5 is empty."""

    set_id: str
    value_type: str
    code: CodedValue
    sub_id: str
    value: ObservationValue
    units: CodedValue | None
    reference_range: str
    range_low: Decimal | None
    range_high: Decimal | None
    abnormal_flags: tuple[str, ...]
    status: str
    observed_at: str | None
    performing_org: str | None
    notes: list[str]


@dataclass(frozen=True)
class OruOrder:
    """One order group: [ORC] OBR [NTE*] {OBX [NTE*]}*."""

    placer_number: str
    filler_number: str
    service: CodedValue
    observed_at: str | None
    result_status: str
    observations: list[OruObservation]
    notes: list[str]


@dataclass(frozen=True)
class OruMessage:
    """An ORU^R01 read by :func:`read_oru`."""

    header: Header
    patient: PatientIds
    orders: list[OruOrder]


@dataclass(frozen=True)
class PatientAddress:
    """PID-11, first repetition."""

    street: str | None  # XAD-1.1
    other_designation: str | None  # XAD-2 (interior number, colonia ...)
    city: str | None  # XAD-3
    state: str | None  # XAD-4
    postal_code: str | None  # XAD-5
    country: str | None  # XAD-6
    district: str | None  # XAD-9 county/parish code (municipio)


Location = tuple[str, int, int | None]  # (segment, field, component)

_ADT_LOCATIONS: Final[Mapping[str, Location]] = {
    "identifier": ("PID", 3, None),
    "family": ("PID", 5, 1),
    "given": ("PID", 5, 2),
    "birthDate": ("PID", 7, None),
    "gender": ("PID", 8, None),
    "address": ("PID", 11, None),
    "address.line": ("PID", 11, 1),
    "address.city": ("PID", 11, 3),
    "address.state": ("PID", 11, 4),
    "address.postalCode": ("PID", 11, 5),
    "address.country": ("PID", 11, 6),
    "address.district": ("PID", 11, 9),
    "telecom": ("PID", 13, None),
}


@dataclass(frozen=True)
class PatientDemographics:
    """The patient of an ADT^A04/A08 (see the module's name rule for the surnames).

    ``locations`` maps the FHIR-ish element names (``identifier``, ``family``, ``given``,
    ``birthDate``, ``gender``, ``address``, ``address.line|city|state|postalCode|country|district``,
    ``telecom``) to the (segment, field, component) they were read from, so domain code can report
    its own findings against the right HL7 field.
    """

    identifiers: list[Identifier]
    first_surname: str
    second_surname: str | None
    given: list[str]
    birth_date: str  # YYYY-MM-DD
    sex: str  # FHIR administrative gender: male, female, other, unknown
    address: PatientAddress | None
    phone: str | None
    locations: dict[str, Location] = field(default_factory=lambda: dict(_ADT_LOCATIONS))

    @property
    def family_names(self) -> list[str]:
        """The surnames in order, one or two."""
        return [self.first_surname] if self.second_surname is None else [self.first_surname, self.second_surname]


@dataclass(frozen=True)
class AdtMessage:
    """An ADT^A04 or ADT^A08 read by :func:`read_adt`."""

    header: Header
    event: str
    patient: PatientDemographics

    def error_at(self, key: str, code: str, text: str) -> Hl7Error:
        """An :class:`Hl7Error` located at the field ``key`` was read from (see ``patient.locations``).

        Raises ``KeyError`` for an unknown key and ``ValueError`` for a code outside table 0357.
        """
        segment, field_number, component = self.patient.locations[key]
        return Hl7Error.at(code, segment, field_number, text, component=component)


# ------------------------------------------------------------------------------------------ escaping


def escape(text: str) -> str:
    """``text`` made safe for any ER7 field with the standard encoding characters ``^~\\&``.

    The delimiters become ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\`` (python-hl7 does this), line breaks become
    ``\\.br\\`` and other control characters ``\\Xhh\\``; non-ASCII text passes through unchanged since
    our messages are UTF-8 (python-hl7 would hex-escape it byte by byte as Latin-1, which breaks
    characters above U+00FF, and writes ``\\X 9\\`` for a tab). Never raises.
    """
    return "\\.br\\".join(_escape_line(line) for line in _LINE_BREAK.split(text))


def _escape_line(line: str) -> str:
    out: list[str] = []
    for chunk in _CHUNK.findall(line):
        if chunk[0] > "\x7f":
            out.append(chunk)
        elif " " <= chunk[0] <= "~":
            out.append(str(_library_escape(_STANDARD, chunk)))
        else:
            out.append(f"\\X{ord(chunk):02X}\\")
    return "".join(out)


def _unescape(container: Any, raw: str) -> str:
    esc = str(container.esc)
    if esc not in raw:
        return raw
    # python-hl7 logs the whole field (patient data) when it meets a sequence it does not know, and
    # raises ValueError on some (``\.brx\``); it drops them anyway, so drop them here first. The
    # pairing (an escape character opens, the next one closes) is the library's.
    sequence = re.compile(f"{re.escape(esc)}([^{re.escape(esc)}]*){re.escape(esc)}")
    cleaned = sequence.sub(lambda m: m[0] if _KNOWN_ESCAPE.fullmatch(m[1]) else "", raw)
    if cleaned.count(esc) % 2:
        # A lone escape character (a sender that did not escape a backslash) would make the library drop
        # the rest of the value; keep it as a literal instead.
        head, _, tail = cleaned.rpartition(esc)
        cleaned = f"{head}{esc}E{esc}{tail}"
    return str(_library_unescape(container, cleaned, _UNESCAPE_MAP))


# --------------------------------------------------------------------------------------- field access


def _structure(hl7_field: Any) -> list[list[list[str]]]:
    """A python-hl7 field as repetitions -> components -> subcomponents of raw (escaped) strings.

    python-hl7 nests only as deep as the separators present require (a plain value is a bare
    string inside the Field), so readers would otherwise have to probe the depth at every access.
    """
    reps: list[list[list[str]]] = []
    for rep in hl7_field:
        if isinstance(rep, str):
            reps.append([[rep]])
            continue
        comps: list[list[str]] = []
        for comp in rep:
            comps.append([comp] if isinstance(comp, str) else [str(sub) for sub in comp])
        reps.append(comps)
    return reps


@dataclass(frozen=True)
class _Seg:
    """One segment of a message with its id and 1-based occurrence, and typed accessors."""

    id: str
    sequence: int
    raw: Any  # hl7.Segment

    def structure(self, n: int) -> list[list[list[str]]]:
        if n <= 0 or n >= len(self.raw):
            return []
        return _structure(self.raw[n])

    def value(self, n: int, component: int = 1, sub: int = 1, rep: int = 1) -> str:
        """One leaf, unescaped and stripped; "" when absent or HL7 null."""
        try:
            raw = self.structure(n)[rep - 1][component - 1][sub - 1]
        except IndexError:
            return ""
        return "" if raw == _NULL else _unescape(self.raw, raw).strip()

    def components(self, n: int, rep: int = 1) -> list[str]:
        """The first subcomponent of each component of one repetition, unescaped."""
        reps = self.structure(n)
        if len(reps) < rep:
            return []
        return ["" if comp[0] == _NULL else _unescape(self.raw, comp[0]).strip() for comp in reps[rep - 1]]

    def repetitions(self, n: int) -> int:
        return len(self.structure(n))

    def text(self, n: int) -> str:
        """The whole field as text: repetitions are lines, stray component separators are kept as text."""
        comp_sep, sub_sep = str(self.raw.separators[3]), str(self.raw.separators[4])
        reps = self.structure(n)
        if reps == [[[_NULL]]]:
            return ""
        lines = (comp_sep.join(sub_sep.join(_unescape(self.raw, s) for s in comp) for comp in rep) for rep in reps)
        return "\n".join(lines).strip()

    def present(self, n: int) -> bool:
        return any(s and s != _NULL for rep in self.structure(n) for comp in rep for s in comp)

    def coded(self, n: int, rep: int = 1) -> CodedValue | None:
        """A CE/CWE field, ``None`` when it holds neither a code nor a text."""
        parts = [*self.components(n, rep), *[""] * 6][:6]
        if not any(parts):
            return None
        return CodedValue(*parts)

    def where(self, n: int | None = None, component: int | None = None) -> str:
        place = self.id if n is None else f"{self.id}-{n}"
        return place if component is None else f"{place}.{component}"

    def error(self, code: str, n: int | None, text: str, *, component: int | None = None,
              framing: bool = False) -> Hl7Error:
        # Naming the occurrence helps a person find "the third OBX"; single segments need no number.
        suffix = f" ({self.id} #{self.sequence})" if self.id in _REPEATING else ""
        return Hl7Error.at(code, self.id, n, text + suffix, sequence=self.sequence, component=component,
                           framing=framing)


def _segments(message: Any) -> list[_Seg]:
    counts: dict[str, int] = {}
    out: list[_Seg] = []
    for raw in message:
        seg_id = str(raw[0])
        counts[seg_id] = counts.get(seg_id, 0) + 1
        out.append(_Seg(seg_id, counts[seg_id], raw))
    return out


# ----------------------------------------------------------------------------------------- timestamps


def hl7_timestamp(value: str, *, segment: str, sequence: int | None, field: int,
                  component: int | None = None) -> str:
    """An HL7 TS/DTM ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`` as ISO 8601, same precision.

    ``20261125143000-0600`` gives ``2026-11-25T14:30:00-06:00``, ``20261125`` gives ``2026-11-25``,
    ``202611251430`` gives ``2026-11-25T14:30`` (no offset sent, none added: the caller decides).
    An offset on a date without a time is dropped. ``segment``/``sequence``/``field``/``component``
    only locate the error. Raises :class:`Hl7Error` 101 when ``value`` is empty and 102 when it is
    not a valid timestamp (shape, calendar date, time of day or offset).
    """
    text = value.strip()
    where = f"{segment}-{field}" if component is None else f"{segment}-{field}.{component}"
    if not text:
        raise Hl7Error.at("101", segment, field, f"{where} timestamp is missing", sequence=sequence,
                          component=component)

    def bad(reason: str) -> Hl7Error:
        return Hl7Error.at("102", segment, field, f"{where} value {text!r} is not an HL7 timestamp ({reason})",
                           sequence=sequence, component=component)

    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise bad("expected YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]][+/-ZZZZ]")
    g = match.groupdict()
    if g["offset"] and (int(g["offset"][1:3]) > 14 or int(g["offset"][3:5]) > 59):
        raise bad("no such UTC offset")
    try:
        date(int(g["year"]), int(g["month"] or 1), int(g["day"] or 1))
    except ValueError:
        raise bad("no such date") from None
    if int(g["hour"] or 0) > 23 or int(g["minute"] or 0) > 59 or int(g["second"] or 0) > 59:
        raise bad("no such time of day")
    out = g["year"]
    if g["month"]:
        out += f"-{g['month']}"
    if g["day"]:
        out += f"-{g['day']}"
    if g["hour"]:
        out += f"T{g['hour']}"
        if g["minute"]:
            out += f":{g['minute']}"
        if g["second"]:
            out += f":{g['second']}"
        if g["fraction"]:
            out += f".{g['fraction']}"
        if g["offset"]:
            out += f"{g['offset'][:3]}:{g['offset'][3:]}"
    return out


def format_timestamp(moment: datetime) -> str:
    """``moment`` as HL7 ``YYYYMMDDHHMMSS+/-ZZZZ`` in its own offset (sub-seconds dropped).

    Raises ``ValueError`` for a naive datetime: an HL7 timestamp without offset is ambiguous.
    """
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("format_timestamp needs a timezone-aware datetime")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    # Explicit padding: strftime("%Y") does not zero-pad years below 1000 on every platform.
    return (f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}"
            f"{moment.second:02d}{sign}{minutes // 60:02d}{minutes % 60:02d}")


def _optional_timestamp(seg: _Seg, n: int) -> str | None:
    value = seg.value(n)
    return hl7_timestamp(value, segment=seg.id, sequence=seg.sequence, field=n) if value else None


# --------------------------------------------------------------------------------- splitting/parsing


def _lines(text: str) -> list[str]:
    # Senders use \r (the standard), \n or \r\n; HTTP clients and editors convert freely between them.
    # str.strip also removes MLLP framing bytes (\x0b, \x1c) a gateway may leave in the body.
    unified = text.replace("\r\n", "\r").replace("\n", "\r")
    return [stripped for line in unified.split("\r") if (stripped := line.strip())]


def split(text: str) -> list[str]:
    """The messages in ``text``: one message, or a batch ``[FHS] BHS MSH... BTS [FTS]``.

    Line endings ``\\r``, ``\\n`` and ``\\r\\n`` are all segment separators; blank lines and
    surrounding whitespace are dropped. Text that starts with FHS/BHS or holds several MSH is a
    batch; BHS/BTS/FHS/FTS are optional. Returns each message's ER7 text, starting with ``MSH`` and
    ending with ``\\r``. Raises :class:`Hl7Error` (framing, so ``AR``): 100 at MSH when there is no MSH
    or the first segment after the batch headers is not MSH (named in ``segment``); 100 at BTS-1
    (FTS-1) when the batch (file) count disagrees with the messages (batches) present, 102 there when
    the count is not a number, 100 when python-hl7 cannot split the envelope (e.g. two BHS in a row).
    """
    lines = _lines(text)
    if not any(line.startswith("MSH") for line in lines):
        raise _framing("100", "no MSH segment: the body is not an HL7 message")
    first = next(line for line in lines if line[:3] not in ("FHS", "BHS"))
    if not first.startswith("MSH"):
        seg_id = first[:3]
        raise _framing("100", f"segment {seg_id} comes before the message header; every message starts with MSH",
                       segment=seg_id, sequence=1)
    try:
        # The library splits on \r only once everything else is \r, and keeps segment text intact.
        parsed_file = hl7.parse_file("\r".join(lines) + "\r")
    except (hl7.HL7Exception, IndexError, ValueError, AssertionError) as exc:
        # Not the library's text: it quotes whole segments, i.e. patient data, into what may be logged.
        raise _framing("100", "the batch envelope cannot be read (a second BHS before BTS, or a segment "
                       "before a batch's first MSH)", segment=None) from exc
    messages: list[str] = []
    for number, batch in enumerate(parsed_file, start=1):
        _check_count(batch.trailer, len(batch), "BTS", "messages", number)
        messages.extend(str(message) for message in batch)
    _check_count(parsed_file.trailer, len(parsed_file), "FTS", "batches", 1)
    return messages


def _check_count(trailer: Any, actual: int, seg_id: str, what: str, sequence: int) -> None:
    if not trailer or len(trailer) < 2:
        return
    declared = str(trailer[1]).strip()
    if not declared:
        return
    if not declared.isdigit():
        raise _framing("102", f"{seg_id}-1 count {declared!r} is not a number", segment=seg_id, field=1,
                       sequence=sequence)
    if int(declared) != actual:
        raise _framing("100", f"{seg_id}-1 says {int(declared)} {what} but {actual} are present",
                       segment=seg_id, field=1, sequence=sequence)


def parse(text: str) -> Parsed:
    """One message read with python-hl7 and its MSH checked against our profile.

    Accepts any line endings (see :func:`split`). Raises :class:`Hl7Error`, all framing (``AR``):
    100 when the text holds no MSH, is a batch, does not start with MSH, or holds a line that is not
    a segment; 102 at MSH-1 (not ``|``) or MSH-2 (not 4-5 distinct encoding characters); 101 at
    MSH-9 (type or event missing), MSH-10, MSH-11 or MSH-12 when empty; 102 at MSH-9 when type or
    event is not a 3-character code; 202 at MSH-11 when not P, T or D; 203 at MSH-12 when the version
    is not 2.x with x >= 3.
    """
    lines = _lines(text)
    if not lines:
        raise _framing("100", "the message is empty")
    if lines[0][:3] in _BATCH_SEGMENTS or sum(line.startswith("MSH") for line in lines) > 1:
        raise _framing("100", "expected one message but got a batch; split it first", segment=lines[0][:3],
                       sequence=1)
    if not lines[0].startswith("MSH"):
        raise _framing("100", f"segment {lines[0][:3]} comes before the message header; a message starts with MSH",
                       segment=lines[0][:3], sequence=1)
    if len(lines[0]) < 4 or lines[0][3] != "|":
        raise _framing("102", "MSH-1 field separator must be '|'", field=1, sequence=1)
    # python-hl7 builds its parse plan from MSH-2 and fails obscurely on a bad one, so check it first.
    end = lines[0].find("|", 4)
    _check_encoding_characters(lines[0][4:] if end < 0 else lines[0][4:end])
    for number, line in enumerate(lines, start=1):
        if not _SEGMENT_ID.fullmatch(line[:3]) or (len(line) > 3 and line[3] != "|"):
            raise _framing("100", f"line {number} is not a segment (an unescaped line break inside a field?)",
                           segment=None)
    try:
        message = hl7.parse("\r".join(lines))
    except (hl7.HL7Exception, IndexError, ValueError, AssertionError) as exc:
        raise _framing("100", f"the message cannot be read: {exc}") from exc
    return Parsed(_read_header(_segments(message)[0]), message)


def _check_encoding_characters(encoding: str) -> None:
    if (len(encoding) not in (4, 5) or len(set(encoding)) != len(encoding) or "|" in encoding
            or any(c.isalnum() or c.isspace() for c in encoding)):
        raise _framing("102", f"MSH-2 encoding characters {encoding!r} are not valid (expected ^~\\&)",
                       field=2, sequence=1)


def _read_header(msh: _Seg) -> Header:
    message_type, event, structure = [*msh.components(9), "", "", ""][:3]
    if not message_type:
        raise _framing("101", "MSH-9 message type is missing", field=9, component=1, sequence=1)
    if not event:
        raise _framing("101", f"MSH-9 trigger event is missing for message type {message_type}", field=9,
                       component=2, sequence=1)
    for number, code in ((1, message_type), (2, event)):
        if not re.fullmatch(r"[A-Z0-9]{3}", code):
            raise _framing("102", f"MSH-9.{number} {code!r} is not a 3-character code", field=9,
                           component=number, sequence=1)
    control_id = msh.value(10)
    if not control_id:
        raise _framing("101", "MSH-10 message control id is missing", field=10, sequence=1)
    processing_id = msh.value(11)
    if not processing_id:
        raise _framing("101", "MSH-11 processing id is missing", field=11, sequence=1)
    if processing_id not in PROCESSING_IDS:
        raise _framing("202", f"MSH-11 processing id {processing_id!r} is not supported (P, T or D)", field=11,
                       sequence=1)
    version = msh.value(12)
    if not version:
        raise _framing("101", "MSH-12 version id is missing", field=12, sequence=1)
    if not _version_supported(version):
        raise _framing("203", f"MSH-12 version {version!r} is not supported (2.3 or later 2.x)", field=12,
                       sequence=1)
    return Header(
        sending_application=msh.value(3), sending_facility=msh.value(4),
        receiving_application=msh.value(5), receiving_facility=msh.value(6),
        timestamp=msh.value(7), message_type=message_type, trigger_event=event, control_id=control_id,
        processing_id=processing_id, version=version, message_structure=structure,
    )


def _version_supported(version: str) -> bool:
    parts = version.split(".")
    if parts[0] != "2" or len(parts) < 2 or not all(p.isdigit() for p in parts):
        return False
    return int(parts[1]) >= 3


# -------------------------------------------------------------------------------------------- readers


def _expect(header: Header, message_type: str, events: Iterable[str]) -> None:
    allowed = sorted(events)
    if header.message_type != message_type:
        raise Hl7Error.at("200", "MSH", 9, f"MSH-9 message type {header.message_type!r} is not supported here "
                          f"(expected {message_type})", component=1)
    if header.trigger_event not in allowed:
        raise Hl7Error.at("201", "MSH", 9, f"MSH-9 event {header.trigger_event!r} is not supported for "
                          f"{message_type} (expected {', '.join(allowed)})", component=2)


def read(parsed: Parsed) -> OruMessage | AdtMessage:
    """The typed message for any supported MSH-9 (ORU^R01, ADT^A04, ADT^A08).

    Raises :class:`Hl7Error` 200 at MSH-9.1 for another type, 201 at MSH-9.2 for another event of a
    supported type, and whatever :func:`read_oru` / :func:`read_adt` raise.
    """
    header = parsed.header
    if header.message_type not in SUPPORTED:
        raise Hl7Error.at("200", "MSH", 9, f"MSH-9 message type {header.message_type!r} is not supported "
                          f"(ORU^R01, ADT^A04, ADT^A08)", component=1)
    return read_oru(parsed) if header.message_type == "ORU" else read_adt(parsed)


def _the_pid(segments: list[_Seg]) -> tuple[int, _Seg]:
    """Index and segment of the single PID; 101 when absent, 100 at PID #2 when repeated."""
    found = [(i, seg) for i, seg in enumerate(segments) if seg.id == "PID"]
    if not found:
        raise Hl7Error.at("101", "PID", None, "PID segment is missing", sequence=None)
    if len(found) > 1:
        raise found[1][1].error("100", None, "a second PID: one patient per message is supported")
    return found[0]


def _identifiers(pid: _Seg) -> list[Identifier]:
    out: list[Identifier] = []
    for rep in range(1, pid.repetitions(3) + 1):
        value = pid.value(3, 1, rep=rep)
        if value:
            out.append(Identifier(value, pid.value(3, 4, rep=rep), pid.value(3, 5, rep=rep)))
    if not out:
        raise pid.error("101", 3, "PID-3 patient identifier list is empty")
    return out


def read_oru(parsed: Parsed) -> OruMessage:
    """An ORU^R01: MSH, PID, [PV1], then order groups [ORC] OBR [NTE*] {OBX [NTE*]}*.

    Raises :class:`Hl7Error`: 200/201 at MSH-9 for another message type/event; 101 naming PID when
    absent, 100 at PID when it follows the first ORC/OBR/OBX or repeats; 101 at PID-3 without any
    identifier; 101 naming OBR when there is none; 100 at an OBX before any OBR and at an ORC not
    followed by its OBR; 101 at OBR-4 without a service code; per OBX: 101 at OBX-3 (no code),
    OBX-11 (no status), OBX-2 (value without type), OBX-5 (no value unless OBX-11 is X, D or I);
    103 at OBX-11 for an unknown status; 102 at OBX-2 for an unsupported value type, at OBX-5 for a
    value that does not fit its type (component 1 or 2 for SN), and at any malformed timestamp.
    """
    _expect(parsed.header, "ORU", SUPPORTED["ORU"])
    segments = _segments(parsed.message)
    pid_index, pid = _the_pid(segments)
    first_order = next((i for i, seg in enumerate(segments) if seg.id in ("ORC", "OBR", "OBX")), None)
    if first_order is not None and first_order < pid_index:
        raise pid.error("100", None, f"PID must come before the orders, but {segments[first_order].id} "
                        f"#{segments[first_order].sequence} precedes it")
    patient = PatientIds(identifiers=_identifiers(pid), family=pid.value(5), given=pid.value(5, 2),
                         birth_date=pid.value(7), sex=pid.value(8))

    # Drafts are mutable while notes are still arriving; the frozen results are built at the end.
    orders: list[tuple[OruOrder, list[str], list[tuple[OruObservation, list[str]]]]] = []
    pending_orc: _Seg | None = None
    notes_target: list[str] | None = None  # where the next NTE goes; None before the first OBR
    for seg in segments[pid_index + 1:]:
        if seg.id == "ORC":
            if pending_orc is not None:
                raise pending_orc.error("100", None, "ORC is not followed by its OBR")
            pending_orc, notes_target = seg, None
        elif seg.id == "OBR":
            order_notes: list[str] = []
            orders.append((_read_order(seg, pending_orc), order_notes, []))
            pending_orc, notes_target = None, order_notes
        elif seg.id == "OBX":
            if not orders:
                raise seg.error("100", None, "OBX comes before any OBR")
            observation_notes: list[str] = []
            orders[-1][2].append((_read_observation(seg), observation_notes))
            notes_target = observation_notes
        elif seg.id == "NTE" and notes_target is not None:
            notes_target.append(seg.text(3))
    if pending_orc is not None:
        raise pending_orc.error("100", None, "ORC is not followed by its OBR")
    if not orders:
        raise Hl7Error.at("101", "OBR", None, "no OBR segment: an ORU^R01 needs at least one order",
                          sequence=None)
    return OruMessage(parsed.header, patient, [
        replace(order, notes=notes, observations=[replace(obs, notes=obs_notes) for obs, obs_notes in observations])
        for order, notes, observations in orders
    ])


def _read_order(obr: _Seg, orc: _Seg | None) -> OruOrder:
    service = obr.coded(4)
    if service is None or not (service.code or service.alternate_code):
        raise obr.error("101", 4, "OBR-4 universal service identifier has no code", component=1)
    placer = obr.value(2) or (orc.value(2) if orc else "")
    filler = obr.value(3) or (orc.value(3) if orc else "")
    return OruOrder(placer_number=placer, filler_number=filler, service=service,
                    observed_at=_optional_timestamp(obr, 7), result_status=obr.value(25), observations=[], notes=[])


def _read_observation(obx: _Seg) -> OruObservation:
    code = obx.coded(3)
    if code is None or not (code.code or code.alternate_code):
        raise obx.error("101", 3, "OBX-3 observation identifier is missing")
    status = obx.value(11)
    if not status:
        raise obx.error("101", 11, "OBX-11 observation result status is missing")
    if status not in OBSERVATION_STATUSES:
        raise obx.error("103", 11, f"OBX-11 status {status!r} is not one of {', '.join(sorted(OBSERVATION_STATUSES))}")
    value_type = obx.value(2)
    if value_type and value_type not in VALUE_TYPES:
        raise obx.error("102", 2, f"OBX-2 value type {value_type!r} is not supported "
                        f"({', '.join(sorted(VALUE_TYPES))})")
    value: ObservationValue = None
    if obx.present(5):
        if not value_type:
            raise obx.error("101", 2, "OBX-2 value type is missing but OBX-5 has a value")
        value = _observation_value(obx, value_type)
    elif status not in _NO_VALUE_STATUSES:
        raise obx.error("101", 5, f"OBX-5 observation value is missing (required unless OBX-11 is X, D or I, "
                        f"not {status})")
    reference_range = obx.text(7)
    low, high = _reference_range(reference_range)
    flags = tuple(flag for rep in range(1, obx.repetitions(8) + 1) if (flag := obx.value(8, rep=rep)))
    return OruObservation(
        set_id=obx.value(1), value_type=value_type, code=code, sub_id=obx.value(4), value=value,
        units=obx.coded(6), reference_range=reference_range, range_low=low, range_high=high,
        abnormal_flags=flags, status=status, observed_at=_optional_timestamp(obx, 14),
        performing_org=obx.value(23) or None, notes=[],
    )


def _observation_value(obx: _Seg, value_type: str) -> ObservationValue:
    if value_type in ("ST", "TX"):
        return obx.text(5)
    if obx.repetitions(5) > 1:
        # A second number would be silently dropped; for a clinical value that is worse than rejecting.
        raise obx.error("102", 5, f"OBX-5 repeats but value type {value_type} allows one value")
    if value_type in ("CE", "CWE"):
        coded = obx.coded(5)
        if coded is None:  # only subcomponents beyond the first were sent
            raise obx.error("102", 5, f"OBX-5 holds no code or text for value type {value_type}", component=1)
        return coded
    if value_type == "NM":
        raw = obx.text(5)
        number = _decimal(raw)
        if number is None:
            raise obx.error("102", 5, f"OBX-5 value {raw!r} is not a number for value type NM")
        return number
    # SN: comparator ^ number ^ separator/suffix ^ number
    comparator, first, separator, second = [*obx.components(5), "", "", "", ""][:4]
    if comparator not in _SN_COMPARATORS:
        raise obx.error("102", 5, f"OBX-5.1 comparator {comparator!r} is not valid for value type SN", component=1)
    number = _decimal(first)
    if number is None:
        raise obx.error("102", 5, f"OBX-5.2 value {first!r} is not a number for value type SN", component=2)
    if separator not in _SN_SEPARATORS:
        raise obx.error("102", 5, f"OBX-5.3 separator {separator!r} is not valid for value type SN", component=3)
    second_number = _decimal(second) if second else None
    if second and second_number is None:
        raise obx.error("102", 5, f"OBX-5.4 value {second!r} is not a number for value type SN", component=4)
    if separator and second_number is None:
        raise obx.error("102", 5, f"OBX-5.4 second number is missing after separator {separator!r}", component=4)
    return StructuredNumeric(comparator, number, separator, second_number)


def _decimal(text: str) -> Decimal | None:
    # Decimal() alone would accept "NaN", "Infinity" and "1e3", none of which is an HL7 NM.
    stripped = text.strip()
    if not _NUMBER.fullmatch(stripped):
        return None
    try:
        return Decimal(stripped)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        return None


def _reference_range(text: str) -> tuple[Decimal | None, Decimal | None]:
    """Low/high of ``3.5-5.1``, ``3.5 - 5.1``, ``>60`` (low), ``<5.0`` (high); other forms give no bounds."""
    if match := _RANGE_BETWEEN.fullmatch(text):
        return Decimal(match[1]), Decimal(match[2])
    if match := _RANGE_ABOVE.fullmatch(text):
        return Decimal(match[1]), None
    if match := _RANGE_BELOW.fullmatch(text):
        return None, Decimal(match[1])
    return None, None


def read_adt(parsed: Parsed) -> AdtMessage:
    """An ADT^A04 (register) or ADT^A08 (update): structure ADT_A01, of which only PID is read.

    Other segments (EVN, PD1, NK1, PV1 ...) are not required and not read. The names follow the
    module's profile: PID-5 first repetition, XPN-1 surnames (two words split into first and second;
    one word: no second; three or more: all kept as the first, second ``None``), XPN-2 and XPN-3
    given names split on spaces. Birth date is PID-7 to the day; sex PID-8 becomes the FHIR gender
    (M male, F female, O other, U/A/N unknown); address PID-11 and phone PID-13 (XTN-1, else XTN-12,
    else +XTN-5 XTN-6XTN-7) come from the first repetition.

    Raises :class:`Hl7Error`: 200/201 at MSH-9; 101 naming PID when absent, 100 at PID #2; 101 at
    PID-3 (no identifier), PID-5.1 (no surname), PID-7 and PID-8 when empty; 102 at PID-7 when it is
    not a date with day precision; 103 at PID-8 for a code outside M, F, O, U, A, N.
    """
    _expect(parsed.header, "ADT", SUPPORTED["ADT"])
    _, pid = _the_pid(_segments(parsed.message))
    identifiers = _identifiers(pid)
    surnames = pid.value(5).split()
    if not surnames:
        raise pid.error("101", 5, "PID-5.1 patient surname is missing", component=1)
    if len(surnames) == 2:
        first_surname, second_surname = surnames[0], surnames[1]
    else:
        first_surname, second_surname = " ".join(surnames), None
    given = pid.value(5, 2).split() + pid.value(5, 3).split()

    birth_raw = pid.value(7)
    if not birth_raw:
        raise pid.error("101", 7, "PID-7 birth date is missing")
    birth = hl7_timestamp(birth_raw, segment="PID", sequence=pid.sequence, field=7)
    if len(birth) < len("YYYY-MM-DD"):
        raise pid.error("102", 7, f"PID-7 birth date {birth_raw!r} must be a full date YYYYMMDD")

    sex_code = pid.value(8)
    if not sex_code:
        raise pid.error("101", 8, "PID-8 administrative sex is missing")
    if sex_code not in _SEX_TO_GENDER:
        raise pid.error("103", 8, f"PID-8 administrative sex {sex_code!r} is not one of "
                        f"{', '.join(sorted(_SEX_TO_GENDER))}")

    locations = dict(_ADT_LOCATIONS)
    phone, phone_component = _phone(pid)
    locations["telecom"] = ("PID", 13, phone_component)
    patient = PatientDemographics(
        identifiers=identifiers, first_surname=first_surname, second_surname=second_surname, given=given,
        birth_date=birth[:10], sex=_SEX_TO_GENDER[sex_code], address=_address(pid), phone=phone,
        locations=locations,
    )
    return AdtMessage(parsed.header, parsed.header.trigger_event, patient)


def _address(pid: _Seg) -> PatientAddress | None:
    parts = [pid.value(11, n) or None for n in (1, 2, 3, 4, 5, 6, 9)]
    return PatientAddress(*parts) if any(parts) else None


def _phone(pid: _Seg) -> tuple[str | None, int | None]:
    if number := pid.value(13, 1):
        return number, 1
    if number := pid.value(13, 12):
        return number, 12
    # v2.5 deprecates XTN-1; senders that follow it send country, area and local number separately.
    country, area, local = pid.value(13, 5), pid.value(13, 6), pid.value(13, 7)
    if local:
        return (f"+{country} " if country else "") + area + local, 7
    return None, None


# ------------------------------------------------------------------------------------------- building


def _segment(name: str, *fields: str) -> str:
    """One segment from already-escaped fields (for MSH/BHS the fields start at field 3).

    Trailing empty fields are dropped: HL7 treats them as absent and receivers prefer short segments.
    """
    values = list(fields)
    while values and not values[-1]:
        values.pop()
    if name in ("MSH", "BHS", "FHS"):
        return "|".join([name + "|" + ENCODING_CHARACTERS, *values])
    return "|".join([name, *values])


def _composite(*components: str) -> str:
    """Already-escaped components joined with ``^``, trailing empty components dropped."""
    values = list(components)
    while values and not values[-1]:
        values.pop()
    return "^".join(values)


def _hd(value: tuple[str, ...]) -> str:
    return _composite(*(escape(part) for part in value))


@dataclass(frozen=True)
class _Received:
    """What an ACK echoes from the message it answers."""

    sending_application: tuple[str, ...] = ("",)
    sending_facility: tuple[str, ...] = ("",)
    receiving_application: tuple[str, ...] = ("",)
    receiving_facility: tuple[str, ...] = ("",)
    control_id: str = ""
    event: str = ""
    processing_id: str = ""


def _salvage(raw_msh: str) -> _Received | None:
    """Best effort over an MSH that may have failed :func:`parse`; ``None`` when it is unreadable."""
    msh_line = next((line for line in _lines(raw_msh) if line.startswith("MSH")), None)
    if msh_line is None:
        return None
    try:
        msh = _segments(hl7.parse(msh_line))[0]
        return _Received(
            sending_application=tuple(msh.components(3)) or ("",),
            sending_facility=tuple(msh.components(4)) or ("",),
            receiving_application=tuple(msh.components(5)) or ("",),
            receiving_facility=tuple(msh.components(6)) or ("",),
            control_id=msh.value(10), event=msh.value(9, 2), processing_id=msh.value(11),
        )
    except (hl7.HL7Exception, IndexError, ValueError, AssertionError):
        return None


def _erl(error: Hl7Error) -> str:
    if not error.segment:
        return ""
    parts = [error.segment, "" if error.sequence is None else str(error.sequence),
             "" if error.field is None else str(error.field), "",
             "" if error.component is None else str(error.component)]
    return _composite(escape(parts[0]), *parts[1:])


def ack(
    header: Header | None,
    code: str,
    *,
    control_id: str,
    errors: Sequence[Hl7Error] = (),
    now: datetime,
    raw_msh: str | None = None,
) -> str:
    """The v2.5.1 ACK for a received message, segments separated by ``\\r`` (and ending with one).

    MSH swaps the received sending and receiving application/facility (empty when neither ``header``
    nor ``raw_msh`` gives them), MSH-7 is ``now``, MSH-9 ``ACK^<event>^ACK``, MSH-10 ``control_id``
    (the ACK's own new id), MSH-11 the received processing id (``P`` when unknown), MSH-12 2.5.1.
    MSA-1 is ``code``, MSA-2 the received control id (empty when unknown). Each error adds
    ``ERR||SEG^seq^field^^component|code^text^HL70357|severity||||user message``, every value escaped.

    ``raw_msh`` is the received message (or its MSH segment) as text: when given, the full HD of
    MSH-3..6 (namespace, universal id and type) is echoed from it instead of the header's HD-1, and
    when ``header`` is ``None`` (the MSH failed :func:`parse`) the control id, event and processing id
    are salvaged from it as far as it can be read. Raises ``ValueError`` when ``code`` is not AA, AE
    or AR, or ``now`` is naive.
    """
    if code not in _ACK_CODES:
        raise ValueError(f"acknowledgement code must be AA, AE or AR, not {code!r}")
    received = _Received()
    if header is not None:
        received = _Received(
            (header.sending_application,), (header.sending_facility,), (header.receiving_application,),
            (header.receiving_facility,), header.control_id, header.trigger_event, header.processing_id,
        )
    salvaged = _salvage(raw_msh) if raw_msh else None
    if salvaged is not None:
        received = replace(
            received,
            sending_application=salvaged.sending_application, sending_facility=salvaged.sending_facility,
            receiving_application=salvaged.receiving_application, receiving_facility=salvaged.receiving_facility,
        ) if header is not None else salvaged
    processing_id = received.processing_id if received.processing_id in PROCESSING_IDS else "P"
    segments = [
        _segment("MSH", _hd(received.receiving_application), _hd(received.receiving_facility),
                 _hd(received.sending_application), _hd(received.sending_facility), format_timestamp(now), "",
                 _composite("ACK", escape(received.event), "ACK"), escape(control_id), processing_id, VERSION,
                 "", "", "", "", "", CHARACTER_SET),
        _segment("MSA", code, escape(received.control_id)),
    ]
    for error in errors:
        segments.append(_segment(
            "ERR", "", _erl(error), _composite(error.code, escape(ERROR_TEXTS[error.code]), "HL70357"),
            error.severity, "", "", "", escape(error.text),
        ))
    return "\r".join(segments) + "\r"


def join_batch(acks: Sequence[str], *, now: datetime, control_id: str = "") -> str:
    """ACKs (from :func:`ack`) wrapped as ``BHS ... BTS|<count>`` for a reply to a batch.

    BHS-7 is ``now``, BHS-11 the optional batch control id. Raises ``ValueError`` when ``now`` is naive.
    """
    body = [message.strip("\r\n") for message in acks]
    header = _segment("BHS", "", "", "", "", format_timestamp(now), "", "", "", escape(control_id))
    return "\r".join([header, *body, _segment("BTS", str(len(body)))]) + "\r"


@dataclass(frozen=True)
class OutboundHeader:
    """Who sends (our application and the clinic's CLUES) and who receives an outbound message."""

    clues: str
    receiving_application: str
    receiving_facility: str
    processing_id: str = "P"
    sending_application: str = "EXPEDIENTE"


@dataclass(frozen=True)
class OutboundPatient:
    """The patient as the order carries it. ``sex`` is the FHIR gender (male, female, other, unknown)."""

    record_number: str
    record_authority: str
    first_surname: str
    given: str  # given names, space-separated
    birth_date: date
    sex: str
    second_surname: str | None = None
    curp: str | None = None


@dataclass(frozen=True)
class OutboundOrder:
    """One laboratory order (ServiceRequest) to send, or to cancel with ``control="CA"``.

    ``priority`` is the FHIR request priority (routine, urgent, asap, stat); ``reasons`` are ICD-10
    (code, text) pairs; ``encounter_class`` is the FHIR v3 ActCode (AMB, EMER, IMP) or ``None``.
    """

    placer_number: str
    service_code: str
    service_text: str
    requested_at: datetime
    provider_id: str
    provider_family: str
    provider_given: str
    facility_name: str
    control: str = "NW"
    filler_number: str | None = None
    status: str | None = None  # ORC-5, HL7 table 0038
    priority: str = "routine"
    reasons: tuple[tuple[str, str], ...] = ()
    clinical_info: str | None = None
    encounter_class: str | None = None
    encounter_id: str | None = None
    service_system: str = "LN"


def orm_o01(*, header: OutboundHeader, patient: OutboundPatient, order: OutboundOrder, now: datetime,
            control_id: str) -> str:
    """An ORM^O01 (v2.5.1) for one order: MSH PID PV1 ORC OBR DG1*, segments ended by ``\\r``.

    PID-3 carries the record number (CX-4 ``record_authority``, CX-5 MR) and the CURP when known
    (CX-4 RENAPO, CX-5 NI); PID-5 ``surnames^given^^^^^L``; PV1-2 O/E/I from AMB/EMER/IMP (U when
    unknown), PV1-19 the encounter id; ORC-1 NW or CA, ORC-9 ``now``, ORC-12/OBR-16 the ordering
    provider ``id^family^given``, ORC-21 ``facility name^...^CLUES`` (XON-10); OBR-27 TQ priority
    (R, A, S); one DG1 per reason (``code^text^I10``, DG1-6 W). Every value is escaped.

    Raises ``ValueError`` for an unknown control, sex, priority or encounter class, or naive datetimes.
    """
    if order.control not in _ORDER_CONTROLS:
        raise ValueError(f"order control must be NW or CA, not {order.control!r}")
    if patient.sex not in _GENDER_TO_SEX:
        raise ValueError(f"sex must be one of {', '.join(sorted(_GENDER_TO_SEX))}, not {patient.sex!r}")
    if order.priority not in _PRIORITY_TO_TQ:
        raise ValueError(f"priority must be one of {', '.join(sorted(_PRIORITY_TO_TQ))}, not {order.priority!r}")
    if order.encounter_class is not None and order.encounter_class not in _ENCOUNTER_CLASS_TO_PATIENT_CLASS:
        raise ValueError(f"encounter class must be AMB, EMER or IMP, not {order.encounter_class!r}")

    identifiers = [_composite(escape(patient.record_number), "", "", escape(patient.record_authority), "MR")]
    if patient.curp:
        identifiers.append(_composite(escape(patient.curp), "", "", "RENAPO", "NI"))
    surnames = " ".join(s for s in (patient.first_surname, patient.second_surname) if s)
    provider = _composite(escape(order.provider_id), escape(order.provider_family), escape(order.provider_given))
    patient_class = _ENCOUNTER_CLASS_TO_PATIENT_CLASS.get(order.encounter_class or "", "U")
    segments = [
        _segment("MSH", escape(header.sending_application), escape(header.clues),
                 escape(header.receiving_application), escape(header.receiving_facility), format_timestamp(now),
                 "", "ORM^O01^ORM_O01", escape(control_id), escape(header.processing_id), VERSION,
                 "", "", "", "", "", CHARACTER_SET),
        _segment("PID", "1", "", "~".join(identifiers), "",
                 _composite(escape(surnames), escape(patient.given), "", "", "", "", "L"),
                 "", f"{patient.birth_date:%Y%m%d}", _GENDER_TO_SEX[patient.sex]),
        _segment("PV1", "1", patient_class, *([""] * 16), escape(order.encounter_id or "")),
        _segment("ORC", order.control, escape(order.placer_number), escape(order.filler_number or ""), "",
                 escape(order.status or ""), "", "", "", format_timestamp(now), "", "", provider,
                 *([""] * 8), _composite(escape(order.facility_name), *([""] * 8), escape(header.clues))),
        _segment("OBR", "1", escape(order.placer_number), escape(order.filler_number or ""),
                 _composite(escape(order.service_code), escape(order.service_text), escape(order.service_system)),
                 "", format_timestamp(order.requested_at), *([""] * 6), escape(order.clinical_info or ""),
                 "", "", provider, *([""] * 10), "^^^^^" + _PRIORITY_TO_TQ[order.priority]),
    ]
    for number, (code, text) in enumerate(order.reasons, start=1):
        segments.append(_segment("DG1", str(number), "", _composite(escape(code), escape(text), "I10"),
                                 "", "", "W"))
    return "\r".join(segments) + "\r"
