"""The NOM-024 Tabla 1 view of a FHIR Patient, and how it maps to and from the wire.

Mapping (recorded in docs/decisions/0004-patient-mapping.md):
- CURP: ``identifier`` with system ``urn:oid:2.16.840.1.113883.4.629``;
  internal folio: system ``urn:expediente:folio``.
- Names: ``name[0]`` (use ``official``): ``given`` = given names, ``family`` = the
  full family name, with ``_family`` extensions ``humanname-fathers-family``
  (first surname) and ``humanname-mothers-family`` (second surname, optional).
  Upper case, 50 characters per part.
- Birth state: extension ``patient-birthPlace`` ``valueAddress.state`` = INEGI key,
  ``NE`` born abroad, ``00`` unknown.
- Nationality: extension ``patient-nationality`` / ``code`` with the RENAPO key
  (``NND`` unknown).
- Residence: ``address[0]`` ``state`` (INEGI, ``00``), ``district`` (municipality,
  ``000``), and extension ``inegi-locality`` (``0000``).
- A record without CURP carries ``meta.tag`` ``pending-identification``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from expediente.identifiers import FATHERS_FAMILY, MOTHERS_FAMILY

__all__ = ["FATHERS_FAMILY", "MOTHERS_FAMILY"]  # the patients rules use them from here

BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
NATIONALITY = "http://hl7.org/fhir/StructureDefinition/patient-nationality"
LOCALITY = "urn:expediente:fhir:StructureDefinition:inegi-locality"
TAG_SYSTEM = "urn:expediente:fhir:CodeSystem:record-flags"
PENDING_IDENTIFICATION = "pending-identification"
NAME_MAX = 50


@dataclass(frozen=True)
class Demographics:
    """What identifies a patient: the values the guards and search index are built from."""

    curp: str | None
    folio: str
    first_surname: str
    second_surname: str | None
    given: tuple[str, ...]
    birth_date: str
    gender: str
    active: bool
    birth_state: str
    nationality: str
    residence: tuple[str, str, str] = ("00", "000", "0000")
    links: tuple[tuple[str, str], ...] = field(default=())
