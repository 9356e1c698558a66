"""Clinical note rules (``Composition``): NOM-004 note types, sections, entries, addenda.

A note is written as ``preliminary`` (each save a new version, ``If-Match``), then signed by its
author (:mod:`signature`), after which it never changes: corrections are addenda, new notes whose
``relatesTo`` appends to or replaces the original, and a retraction is an addendum that says the
original was entered in error and why. The server sets the author, the clinic (custodian), the
date and the patient's name, age and sex (NOM-004 5.9) from the records, never from the body.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from expediente import records
from expediente.clinical import ClinicalRepository, Saved, SearchSpec, check_version, now_instant, stamp
from expediente.context import RequestContext
from expediente.errors import Conflict, Forbidden, Invalid, Unprocessable
from expediente.fhir import validate
from expediente.index import Entry
from expediente.permissions import Role
from expediente.store import Stored

from .note_types import (
    DIAGNOSIS_SECTIONS,
    NOTE_KIND_SYSTEM,
    NOTE_TYPES,
    SECTION_SYSTEM,
    SECTIONS,
    VITAL_SIGNS,
    NoteType,
)

EXT = "https://expediente.mx/fhir/StructureDefinition"
PATIENT_SNAPSHOT = f"{EXT}/datos-paciente"   # NOM-004 5.9: name, age and sex on every note
DIAGNOSIS_RANK = f"{EXT}/rango-diagnostico"  # 1 = primary diagnosis, 2.. = secondary
IN_REPLY_TO = f"{EXT}/respuesta-a"           # an interconsulta reply names the request it answers
RETRACTION = f"{EXT}/retractacion"           # an addendum retracting the original, with the reason
ENTRY_DIGEST = f"{EXT}/sha256-entrada"       # set at signing: SHA-256 of the pinned entry version
STATUS_TAGS = "https://expediente.mx/fhir/CodeSystem/estado-nota"
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
            "display": "redacted"}
ADDENDUM_CODES = frozenset({"appends", "replaces"})
VITAL_SIGNS_CATEGORY = "vital-signs"

SEARCH = SearchSpec(
    resource_type="Composition",
    facets={"patient": "patient", "subject": "patient", "encounter": "encounter", "author": "author",
            "related-ref": "related"},
    filters={"type": "type", "category": "kind"},
    resource_filters={"status": lambda resource: str(resource.get("status", ""))},
    date="date",
    references={"patient": "Patient", "subject": "Patient", "encounter": "Encounter", "author": "Practitioner",
                "related-ref": "Composition"},
)


@dataclass(frozen=True)
class Context:
    """What a note needs from other records: its encounter, the patient and the author."""

    encounter: Stored
    patient: dict[str, Any]


def note_type(resource: dict[str, Any]) -> NoteType:
    kinds = [c.get("code") for cat in resource.get("category") or [] for c in cat.get("coding") or []
             if c.get("system") == NOTE_KIND_SYSTEM]
    type_code = next((c.get("code") for c in (resource.get("type") or {}).get("coding") or []
                      if c.get("system") == "http://loinc.org"), None)
    if kinds:
        kind = NOTE_TYPES.get(str(kinds[0]))
        if kind is None:
            raise Invalid(f"Composition.category {kinds[0]!r} is not a note type; use one of "
                          f"{', '.join(NOTE_TYPES)}", expression="Composition.category")
        if type_code not in (None, kind.loinc):
            raise Invalid(f"Composition.type {type_code} does not match note type {kind.kind} ({kind.loinc})",
                          expression="Composition.type")
        return kind
    matches = [t for t in NOTE_TYPES.values() if t.loinc == type_code]
    if not matches:
        codes = ", ".join(f"{t.loinc} ({t.title})" for t in NOTE_TYPES.values())
        raise Invalid(f"Composition.type must be a LOINC note code: {codes}", expression="Composition.type")
    if len(matches) > 1:
        is_reply = _extension(resource, IN_REPLY_TO) is not None
        return next(t for t in matches if t.reply == is_reply)
    return matches[0]


def _extension(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension") or [] if e.get("url") == url), None)


def section_code(section: dict[str, Any]) -> str | None:
    return next((c.get("code") for c in (section.get("code") or {}).get("coding") or []
                 if c.get("system") == SECTION_SYSTEM), None)


def entry_refs(resource: dict[str, Any]) -> list[tuple[str, int, int, records.Ref]]:
    """Every entry reference as (section code, section index, entry index, parsed reference)."""
    found = []
    for s, section in enumerate(resource.get("section") or []):
        code = section_code(section) or ""
        allowed = SECTIONS.get(code, ("", frozenset()))[1]
        for e, entry in enumerate(section.get("entry") or []):
            where = f"Composition.section[{s}].entry[{e}]"
            if not allowed:
                raise Invalid(f"Section {code} holds text only, no entries", expression=where)
            found.append((code, s, e, records.parse(entry.get("reference"), where=where, types=allowed)))
    return found


def addendum_target(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(code, original note id) when the note is an addendum, else None."""
    relations = resource.get("relatesTo") or []
    if not relations:
        return None
    if len(relations) > 1:
        raise Invalid("An addendum relates to one note", expression="Composition.relatesTo[1]")
    relation = relations[0]
    if relation.get("code") not in ADDENDUM_CODES:
        raise Invalid("Composition.relatesTo.code must be appends or replaces", expression="Composition.relatesTo[0]")
    ref = records.parse((relation.get("targetReference") or {}).get("reference"),
                        where="Composition.relatesTo[0].targetReference", types=("Composition",))
    if ref.version is not None:
        raise Invalid("relatesTo names the note, not a version", expression="Composition.relatesTo[0]")
    return str(relation["code"]), ref.id


def index_entry(resource: dict[str, Any]) -> Entry:
    kind = note_type(resource)
    encounter = str((resource.get("encounter") or {}).get("reference", "")).removeprefix("Encounter/")
    authors = tuple(str(a.get("reference", "")).removeprefix("Practitioner/") for a in resource.get("author") or [])
    target = addendum_target(resource)
    clinic = ((resource.get("custodian") or {}).get("identifier") or {}).get("value", "")
    return Entry(
        sort=resource["date"],
        facets={"patient": (records.subject_of(resource) or "",), "encounter": (encounter,), "author": authors,
                "related": (target[1],) if target else ()},
        # No status here: signing then leaves the index items as they are (status is checked on the note).
        attrs={"type": kind.loinc, "kind": kind.kind,
               "patient": records.subject_of(resource), "encounter": encounter, "author": list(authors),
               "related": target[1] if target else "", "clinic": clinic},
    )


def age_on(birth_date: str, on: str) -> int:
    born, day = date.fromisoformat(birth_date[:10]), date.fromisoformat(on[:10])
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def patient_snapshot(patient: dict[str, Any], on: str) -> dict[str, Any]:
    """NOM-004 5.9: the patient's full name, age and sex as they were when the note was written."""
    name = (patient.get("name") or [{}])[0]
    full = " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()
    parts: list[dict[str, Any]] = [{"url": "nombre", "valueString": full}]
    if patient.get("birthDate") and len(patient["birthDate"]) == 10:
        parts.append({"url": "edad", "valueAge": {"value": age_on(patient["birthDate"], on), "unit": "años",
                                                  "system": "http://unitsofmeasure.org", "code": "a"}})
    parts.append({"url": "sexo", "valueCode": patient.get("gender", "unknown")})
    return {"url": PATIENT_SNAPSHOT, "extension": parts}


def _normalize(ctx: RequestContext, body: dict[str, Any]) -> tuple[dict[str, Any], NoteType]:
    resource = {k: v for k, v in body.items() if k not in ("id", "meta", "text", "attester")}
    resource["resourceType"] = "Composition"
    resource.setdefault("status", "preliminary")
    resource.setdefault("title", "-")
    resource.setdefault("date", "1970-01-01T00:00:00Z")  # replaced by the server below
    resource.setdefault("author", [{"reference": "Practitioner/-"}])
    validate("Composition", resource)
    if resource["status"] != "preliminary":
        raise Invalid("Notes are written as preliminary; signing ($sign) makes them final",
                      expression="Composition.status")
    kind = note_type(resource)
    if body.get("title") is None:
        resource["title"] = kind.title
    resource["type"] = {"coding": [kind.coding()]}
    resource["category"] = [kind.category()]
    records.parse((resource.get("subject") or {}).get("reference"), where="Composition.subject", types=("Patient",))
    records.parse((resource.get("encounter") or {}).get("reference"), where="Composition.encounter",
                  types=("Encounter",))
    seen: set[str] = set()
    for s, section in enumerate(resource.get("section") or []):
        code = section_code(section)
        where = f"Composition.section[{s}]"
        if code not in SECTIONS:
            raise Invalid(f"{where}.code must be a section of {SECTION_SYSTEM} (e.g. {next(iter(SECTIONS))})",
                          expression=f"{where}.code")
        if code in seen:
            raise Invalid(f"Section {code} appears twice", expression=where)
        seen.add(code)
        section["title"] = section.get("title") or SECTIONS[code][0]
        if section.get("section"):
            raise Invalid("Nested sections are not supported", expression=f"{where}.section")
    entry_refs(resource)
    return resource, kind


def _check_author(ctx: RequestContext, kind: NoteType) -> str:
    if not ctx.practitioner_id:
        raise Forbidden("Your user is not linked to a Practitioner (with cédula profesional); ask an administrator")
    if not {role.value for role in ctx.roles} & kind.signed_by:
        raise Forbidden(f"Role {ctx.role_names} may not write a {kind.title}")
    return ctx.practitioner_id


def _links(ctx: RequestContext, resource: dict[str, Any], kind: NoteType, *, repo: ClinicalRepository,
           load_patient: Callable[[RequestContext, str], dict[str, Any] | None],
           practitioner_active: Callable[[RequestContext, str], bool]) -> Context:
    patient_id = records.subject_of(resource) or ""
    patient = load_patient(ctx, patient_id)
    if patient is None:
        raise Unprocessable(f"Composition.subject: Patient/{patient_id} does not exist",
                            expression="Composition.subject")
    encounter_id = resource["encounter"]["reference"].split("/")[1]
    encounter = repo.get(ctx, "Encounter", encounter_id)
    if encounter is None or records.subject_of(encounter.resource) != patient_id:
        raise Unprocessable(f"Composition.encounter: Encounter/{encounter_id} is not an encounter of this patient",
                            expression="Composition.encounter")
    if encounter.resource["status"] in ("cancelled", "entered-in-error"):
        raise Unprocessable(f"Encounter/{encounter_id} is {encounter.resource['status']}",
                            expression="Composition.encounter")
    if kind.kind in ("ingreso", "egreso") and encounter.resource["class"]["code"] != "IMP":
        raise Unprocessable(f"A {kind.title} belongs to an inpatient (IMP) encounter",
                            expression="Composition.encounter")
    if not practitioner_active(ctx, ctx.practitioner_id or ""):
        raise Forbidden(f"Practitioner/{ctx.practitioner_id} is not an active practitioner of this chain")
    check_entries(ctx, resource, patient_id)
    reply = _extension(resource, IN_REPLY_TO)
    if kind.reply:
        ref = records.parse(((reply or {}).get("valueReference") or {}).get("reference"),
                            where=f"Composition.extension({IN_REPLY_TO})", types=("Composition",))
        request = repo.get(ctx, "Composition", ref.id)
        if (request is None or records.subject_of(request.resource) != patient_id
                or note_type(request.resource).kind != "interconsulta-solicitud"):
            raise Unprocessable(f"{ref} is not an interconsulta request of this patient",
                                expression="Composition.extension")
        if request.resource["status"] != "final":
            raise Unprocessable(f"{ref} is not signed yet; a reply answers a signed request",
                                expression="Composition.extension")
    elif reply is not None:
        raise Invalid("Only an interconsulta reply answers a request", expression="Composition.extension")
    target = addendum_target(resource)
    if target is not None:
        original = repo.get(ctx, "Composition", target[1])
        if original is None or records.subject_of(original.resource) != patient_id:
            raise Unprocessable(f"Composition/{target[1]} is not a note of this patient",
                                expression="Composition.relatesTo[0]")
        if original.resource["status"] != "final":
            raise Unprocessable(f"Composition/{target[1]} is not signed: correct it directly instead of by addendum",
                                expression="Composition.relatesTo[0]")
    elif _extension(resource, RETRACTION) is not None:
        raise Invalid("A retraction is an addendum: it needs relatesTo (replaces) naming the retracted note",
                      expression="Composition.relatesTo")
    return Context(encounter, patient)


def check_entries(ctx: RequestContext, resource: dict[str, Any], patient_id: str) -> dict[str, Stored]:
    """Every entry must exist in the tenant and belong to the note's patient; returns them by reference."""
    found: dict[str, Stored] = {}
    listed = entry_refs(resource)
    loaded = records.load_many(ctx.tenant, [ref for _, _, _, ref in listed])
    for code, s, e, ref in listed:
        where = f"Composition.section[{s}].entry[{e}]"
        stored = loaded.get(str(ref))
        if stored is None:
            raise Unprocessable(f"{where}: {ref} does not exist", expression=where)
        if records.subject_of(stored.resource) != patient_id:
            raise Unprocessable(f"{where}: {ref} belongs to another patient", expression=where)
        if code == VITAL_SIGNS and not _is_vital_sign(stored.resource):
            raise Unprocessable(f"{where}: {ref} is not a vital-signs Observation", expression=where)
        found[str(ref)] = stored
    return found


def _is_vital_sign(resource: dict[str, Any]) -> bool:
    return any(c.get("code") == VITAL_SIGNS_CATEGORY for cat in resource.get("category") or []
               for c in cat.get("coding") or [])


def _rank_diagnoses(resource: dict[str, Any]) -> None:
    """The first diagnosis is primary unless the client ranked them; ranks are made explicit."""
    for section in resource.get("section") or []:
        if section_code(section) not in DIAGNOSIS_SECTIONS:
            continue
        entries = section.get("entry") or []
        ranked = [e for e in entries if _extension(e, DIAGNOSIS_RANK)]
        if ranked and len(ranked) != len(entries):
            raise Invalid(f"Rank every diagnosis of section {section_code(section)} or none",
                          expression="Composition.section.entry.extension")
        if not ranked:
            for position, entry in enumerate(entries, start=1):
                entry["extension"] = [*(entry.get("extension") or []), {"url": DIAGNOSIS_RANK,
                                                                      "valuePositiveInt": position}]
        primaries = [e for e in entries if (_extension(e, DIAGNOSIS_RANK) or {}).get("valuePositiveInt") == 1]
        if entries and len(primaries) != 1:
            raise Invalid(f"Section {section_code(section)} needs exactly one primary diagnosis (rank 1)",
                          expression="Composition.section.entry.extension")


def _render(ctx: RequestContext, resource: dict[str, Any], links: Context, *, note_id: str, version: int,
            now: str) -> dict[str, Any]:
    resource = copy.deepcopy(resource)
    encounter = links.encounter.resource
    resource["author"] = [{"reference": f"Practitioner/{ctx.practitioner_id}"}]
    resource["custodian"] = dict(encounter["serviceProvider"])
    resource["date"] = now
    resource["extension"] = [e for e in resource.get("extension") or [] if e.get("url") != PATIENT_SNAPSHOT]
    resource["extension"].append(patient_snapshot(links.patient, now))
    _rank_diagnoses(resource)
    resource = stamp(resource, note_id, version, now)
    validate("Composition", resource)
    return resource


def create(ctx: RequestContext, body: dict[str, Any], *, repo: ClinicalRepository,
           load_patient: Callable[[RequestContext, str], dict[str, Any] | None],
           practitioner_active: Callable[[RequestContext, str], bool], new_id: Callable[[], str],
           clock: Callable[[], Any] | None = None) -> Saved:
    """Write a new preliminary note (or addendum) by the calling practitioner."""
    resource, kind = _normalize(ctx, body)
    _check_author(ctx, kind)
    links = _links(ctx, resource, kind, repo=repo, load_patient=load_patient, practitioner_active=practitioner_active)
    now = now_instant(clock)
    resource = _render(ctx, resource, links, note_id=new_id(), version=1, now=now)
    return repo.put(ctx, resource, index=index_entry, now=now)


def refuse_if_signed(stored: Stored) -> None:
    status = stored.resource["status"]
    if status != "preliminary":
        raise Conflict(f"Composition/{stored.resource['id']} is {status} (signed) and can never change "
                       "(NOM-004 5.11). Write an addendum: a new note with relatesTo appends or replaces "
                       "pointing at it, and sign it.")


def update(ctx: RequestContext, note_id: str, body: dict[str, Any], *, if_match: int, repo: ClinicalRepository,
           load_patient: Callable[[RequestContext, str], dict[str, Any] | None],
           practitioner_active: Callable[[RequestContext, str], bool],
           clock: Callable[[], Any] | None = None) -> Saved:
    """Save a new version of a preliminary note; only its author may, and never after signing (409)."""
    if body.get("id") not in (None, note_id):
        raise Invalid(f"Composition.id {body.get('id')!r} does not match the URL id {note_id}",
                      expression="Composition.id")
    current = repo.require(ctx, "Composition", note_id)
    refuse_if_signed(current)  # 409 before 412: a signed note never changes, whatever version is named
    check_version(current, if_match)
    resource, kind = _normalize(ctx, body)
    _check_author(ctx, kind)
    author = current.resource["author"][0]["reference"]
    if author != f"Practitioner/{ctx.practitioner_id}":
        raise Forbidden(f"Only the author ({author}) edits this note")
    if records.subject_of(resource) != records.subject_of(current.resource):
        raise Unprocessable("Composition.subject cannot change", expression="Composition.subject")
    if note_type(current.resource).kind != kind.kind:
        raise Unprocessable("The note type cannot change; write a new note", expression="Composition.type")
    links = _links(ctx, resource, kind, repo=repo, load_patient=load_patient, practitioner_active=practitioner_active)
    now = now_instant(clock)
    version = current.version + 1
    resource = _render(ctx, resource, links, note_id=note_id, version=version, now=now)
    return repo.put(ctx, resource, index=index_entry, now=now, previous=current)


# ---------------------------------------------------------------- reading ---


def present(stored: Stored, roles: frozenset[Role], *, narrative: bool) -> dict[str, Any]:
    """A stored note as a reader sees it.

    Server facts that are not part of the signed body (its addenda) are shown as ``meta.tag``;
    readers whose role does not read narrative get the structure without any text, labelled
    ``REDACTED``.
    """
    resource = copy.deepcopy(stored.resource)
    tags = list((resource.get("meta") or {}).get("tag") or [])
    for addendum in stored.attrs.get("addenda") or []:
        code = "retracted" if addendum.get("retraction") else ("amended" if addendum["code"] == "replaces"
                                                                else "appended")
        tags.append({"system": STATUS_TAGS, "code": code,
                     "display": f"{code} by Composition/{addendum['id']}"})
    if tags:
        resource["meta"]["tag"] = tags
    if not narrative:
        resource.pop("text", None)
        for section in resource.get("section") or []:
            section.pop("text", None)
        for extension in resource.get("extension") or []:
            if extension.get("url") == RETRACTION:
                extension["valueString"] = "redacted"
        resource["meta"]["security"] = [*(resource["meta"].get("security") or []), REDACTED]
    return resource


def missing_sections(resource: dict[str, Any]) -> list[str]:
    """The required sections a note lacks (or holds empty), in the order the type lists them."""
    kind = note_type(resource)
    if addendum_target(resource) is not None:
        present_codes = {section_code(s) for s in resource.get("section") or [] if _has_content(s)}
        return [] if present_codes else ["any section (an addendum must say something)"]
    sections = {section_code(s): s for s in resource.get("section") or []}
    missing = []
    for code in kind.required:
        section = sections.get(code)
        if section is None or not _has_content(section):
            missing.append(code)
        elif code in DIAGNOSIS_SECTIONS and not section.get("entry"):
            missing.append(f"{code} (at least one coded Condition)")
    return missing


def _has_content(section: dict[str, Any]) -> bool:
    """Text with visible characters, entries, or an explicit emptyReason."""
    div = str((section.get("text") or {}).get("div") or "")
    visible = re.sub(r"<[^>]*>", "", div).strip()
    return bool(section.get("entry")) or bool(section.get("emptyReason")) or bool(visible)
