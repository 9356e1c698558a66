"""Patient rules: NOM-024 identification, one record per CURP, versions, merge.

Pure domain code: no boto3, no HTTP. Collaborators (the repository, the clock,
the id generator) come in as arguments so the rules are easy to test.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from expediente import arco
from expediente import identifiers as ids
from expediente.context import RequestContext
from expediente.errors import Conflict, Duplicate, Invalid, NotFound, PreconditionFailed, Unprocessable
from expediente.fhir import validate
from expediente.store import Stored

from .model import (
    BIRTH_PLACE,
    FATHERS_FAMILY,
    LOCALITY,
    MOTHERS_FAMILY,
    NAME_MAX,
    NATIONALITY,
    PENDING_IDENTIFICATION,
    TAG_SYSTEM,
    Demographics,
)

_SERVER_META = ("versionId", "lastUpdated")
ARCO_TAGS = "urn:expediente:fhir:CodeSystem:arco"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_patient_id() -> str:
    """16 lowercase base32 characters: unguessable, and short enough to serve as folio."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(16))


class Repository(Protocol):
    def get(self, ctx: RequestContext, patient_id: str) -> Stored | None: ...
    def find_by_curp(self, ctx: RequestContext, curp: str) -> str | None: ...
    def find_by_folio(self, ctx: RequestContext, folio: str) -> str | None: ...
    def create(self, ctx: RequestContext, patient_id: str, resource: dict[str, Any], demo: Demographics,
               now: str, extra: Sequence[dict[str, Any]] = ()) -> None: ...
    def update(self, ctx: RequestContext, patient_id: str, resource: dict[str, Any], demo: Demographics,
               previous: Stored, old: Demographics, now: str, extra: Sequence[dict[str, Any]] = ()) -> None: ...
    def merge(self, ctx: RequestContext, source: Change, target: Change, now: str) -> None: ...
    def block(self, ctx: RequestContext, change: Change, now: str, *, until: str, request_date: str) -> None: ...


@dataclass(frozen=True)
class Change:
    """A new version of a patient and the version it replaces, with both readings of Tabla 1."""

    resource: dict[str, Any]
    demo: Demographics
    previous: Stored
    old: Demographics


@dataclass(frozen=True)
class Saved:
    resource: dict[str, Any]
    version: int
    created: bool


# ---------------------------------------------------------------- parsing ---


def _upper_part(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{where} is required", expression=where)
    text = " ".join(value.split()).upper()  # NOM-024 Tabla 1: upper case
    if len(text) > NAME_MAX:
        raise Invalid(f"{where} exceeds {NAME_MAX} characters", expression=where)
    return text


def _extension(items: list[dict[str, Any]] | None, url: str) -> dict[str, Any] | None:
    return next((e for e in items or [] if e.get("url") == url), None)


def demographics(body: dict[str, Any]) -> Demographics:
    """Check a Patient body against FHIR R4 and NOM-024 Tabla 1; raise :class:`Invalid` naming the field."""
    validate("Patient", body)
    return _tabla1(body)


def _tabla1(body: dict[str, Any]) -> Demographics:
    """The NOM-024 reading of a Patient that is already valid FHIR."""
    curp: str | None = None
    folio: str | None = None
    for index, identifier in enumerate(body.get("identifier") or []):
        system, value = identifier.get("system"), identifier.get("value") or ""
        where = f"Patient.identifier[{index}]"
        if system == ids.CURP_SYSTEM:
            if curp is not None:
                raise Invalid("A patient has one CURP", expression=where)
            curp = ids.validate_curp(value, where=f"{where}.value")
        elif system == ids.FOLIO_SYSTEM:
            folio = ids.validate_folio(value, where=f"{where}.value")

    names = body.get("name") or []
    if not names:
        raise Invalid("Patient.name is required (given names and first surname)", expression="Patient.name")
    name = names[0]
    given = tuple(_upper_part(g, f"Patient.name[0].given[{i}]") for i, g in enumerate(name.get("given") or []))
    if not given:
        raise Invalid("Patient.name[0].given is required", expression="Patient.name[0].given")
    family_ext = (name.get("_family") or {}).get("extension")
    fathers = _extension(family_ext, FATHERS_FAMILY)
    mothers = _extension(family_ext, MOTHERS_FAMILY)
    if fathers:
        first = _upper_part(fathers.get("valueString"), "Patient.name[0].family (fathers-family)")
        second = _upper_part(mothers.get("valueString"), "Patient.name[0].family (mothers-family)") if mothers else None
    else:
        first = _upper_part(name.get("family"), "Patient.name[0].family")
        second = None

    birth_date = body.get("birthDate")
    if not isinstance(birth_date, str) or len(birth_date) != 10:
        raise Invalid("Patient.birthDate is required as a full date (YYYY-MM-DD)", expression="Patient.birthDate")
    gender = body.get("gender")
    if gender not in {"male", "female", "other", "unknown"}:
        raise Invalid("Patient.gender must be male, female, other or unknown", expression="Patient.gender")

    birth_place = _extension(body.get("extension"), BIRTH_PLACE)
    birth_state = ((birth_place or {}).get("valueAddress") or {}).get("state")
    if birth_state is None:
        birth_state = ids.curp_birth_state(curp) if curp else "00"
    elif birth_state != ids.BORN_ABROAD and birth_state not in ids.states():
        raise Invalid(f"Birth state {birth_state!r} is not an INEGI state key, NE or 00",
                      expression="Patient.extension(birthPlace)")

    nationality_ext = _extension(body.get("extension"), NATIONALITY)
    nationality = ids.UNKNOWN_NATIONALITY
    if nationality_ext:
        code = _extension(nationality_ext.get("extension"), "code") or {}
        codings = (code.get("valueCodeableConcept") or {}).get("coding") or []
        nationality = str(codings[0].get("code", "")) if codings else ""
        if nationality not in ids.nationalities():
            raise Invalid(f"Nationality {nationality!r} is not a RENAPO key (NND when unknown)",
                          expression="Patient.extension(nationality)")

    residence = ("00", "000", "0000")
    addresses = body.get("address") or []
    if addresses:
        address = addresses[0]
        state = address.get("state", "00")
        municipality = address.get("district", "000")
        locality_ext = _extension(address.get("extension"), LOCALITY)
        locality = (locality_ext or {}).get("valueString", "0000")
        if state not in ids.states():
            raise Invalid(f"Residence state {state!r} is not an INEGI key (00 when unknown)",
                          expression="Patient.address[0].state")
        if municipality != "000" and (state, municipality) not in ids.municipalities():
            raise Invalid(f"Municipality {municipality!r} is not an INEGI key of state {state}",
                          expression="Patient.address[0].district")
        if not (isinstance(locality, str) and len(locality) == 4 and locality.isdigit()):
            raise Invalid("Locality must be a 4-digit INEGI key (0000 when unknown)",
                          expression="Patient.address[0].extension(inegi-locality)")
        residence = (state, municipality, locality)

    if curp:
        _check_curp_agrees(curp, birth_date, gender, birth_state)

    return Demographics(
        curp=curp,
        folio=folio or "",
        first_surname=first,
        second_surname=second,
        given=given,
        birth_date=birth_date,
        gender=gender,
        active=body.get("active", True) is not False,
        birth_state=birth_state,
        nationality=nationality,
        residence=residence,
    )


def _check_curp_agrees(curp: str, birth_date: str, gender: str, birth_state: str) -> None:
    """The CURP encodes birth date, sex and birth state; a record that contradicts it is wrong."""
    if ids.curp_birth_date(curp).isoformat() != birth_date:
        raise Invalid("Patient.birthDate does not match the birth date in the CURP", expression="Patient.birthDate")
    if ids.curp_gender(curp) != gender:
        raise Invalid(f"Patient.gender must be {ids.curp_gender(curp)} for this CURP's sex letter",
                      expression="Patient.gender")
    if ids.curp_birth_state(curp) != birth_state:
        raise Invalid("The birth state does not match the state in the CURP",
                      expression="Patient.extension(birthPlace)")


# --------------------------------------------------------------- rendering ---


def render(patient_id: str, demo: Demographics, body: dict[str, Any], *, version: int, now: str) -> dict[str, Any]:
    """The stored Patient: the client's body normalized to the NOM-024 mapping, plus server meta."""
    identifiers = [i for i in body.get("identifier") or [] if i.get("system") not in (ids.CURP_SYSTEM,
                                                                                      ids.FOLIO_SYSTEM)]
    if demo.curp:
        identifiers.insert(0, {"use": "official", "system": ids.CURP_SYSTEM, "value": demo.curp})
    if demo.folio:
        identifiers.insert(1 if demo.curp else 0, {"use": "usual", "system": ids.FOLIO_SYSTEM, "value": demo.folio})
    family = " ".join(p for p in (demo.first_surname, demo.second_surname) if p)
    family_ext = [{"url": FATHERS_FAMILY, "valueString": demo.first_surname}]
    if demo.second_surname:
        family_ext.append({"url": MOTHERS_FAMILY, "valueString": demo.second_surname})
    first_name = {**(body.get("name") or [{}])[0], "use": "official", "family": family,
                  "_family": {"extension": family_ext}, "given": list(demo.given)}
    first_name.pop("text", None)
    # The ARCO block is server-managed (arco_cancel): a client's copy of its extension or tag is dropped.
    extensions = [e for e in body.get("extension") or []
                  if e.get("url") not in (BIRTH_PLACE, NATIONALITY, arco.BLOCK_EXTENSION)]
    extensions.append({"url": BIRTH_PLACE, "valueAddress": {"state": demo.birth_state,
                                                           "country": "MEX" if demo.birth_state != "NE" else None}})
    if extensions[-1]["valueAddress"]["country"] is None:
        del extensions[-1]["valueAddress"]["country"]
    extensions.append({"url": NATIONALITY, "extension": [{"url": "code", "valueCodeableConcept": {"coding": [
        {"system": ids.NATIONALITY_SYSTEM, "code": demo.nationality}]}}]})
    state, municipality, locality = demo.residence
    addresses = list(body.get("address") or [{}])
    first_address = {**addresses[0], "state": state, "district": municipality, "country": "MEX"}
    first_address["extension"] = [e for e in first_address.get("extension") or [] if e.get("url") != LOCALITY]
    first_address["extension"].append({"url": LOCALITY, "valueString": locality})
    tags = [t for t in (body.get("meta") or {}).get("tag") or [] if t.get("system") not in (TAG_SYSTEM, ARCO_TAGS)]
    if not demo.curp:
        tags.append({"system": TAG_SYSTEM, "code": PENDING_IDENTIFICATION,
                     "display": "Registered without CURP; identify when possible"})
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in (*_SERVER_META, "tag")}
    meta.update({"versionId": str(version), "lastUpdated": now})
    if tags:
        meta["tag"] = tags
    resource = {
        **{k: v for k, v in body.items() if k not in ("id", "meta", "text", "link")},
        "resourceType": "Patient",
        "id": patient_id,
        "meta": meta,
        "identifier": identifiers,
        "active": demo.active,
        "name": [first_name, *(body.get("name") or [])[1:]],
        "gender": demo.gender,
        "birthDate": demo.birth_date,
        "extension": extensions,
        "address": [first_address, *addresses[1:]],
    }
    if demo.links:
        resource["link"] = [{"other": {"reference": f"Patient/{other}"}, "type": kind} for other, kind in demo.links]
    validate("Patient", resource)
    return resource


def _timestamp(clock: Clock) -> str:
    return clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------- commands ---


def create(ctx: RequestContext, body: dict[str, Any], *, repo: Repository, clock: Clock = utc_now,
           new_id: Callable[[], str] = new_patient_id, extra: Sequence[dict[str, Any]] = ()) -> Saved:
    """Register a patient. A CURP (or folio) already on file answers 409 naming the existing record.

    ``extra`` transaction elements are written with it (the HL7 interface's message guard).
    """
    demo = demographics(body)
    patient_id = new_id()
    if not demo.folio:
        demo = replace(demo, folio=patient_id.upper())
    # No read-before-write: the CURP and folio guards in the create transaction decide, and the
    # repository names the existing record when one of them fails (409).
    now = _timestamp(clock)
    resource = render(patient_id, demo, body, version=1, now=now)
    repo.create(ctx, patient_id, resource, demo, now, extra)
    return Saved(resource, 1, created=True)


def _refuse_duplicates(ctx: RequestContext, demo: Demographics, repo: Repository, own_id: str | None) -> None:
    if demo.curp:
        existing = repo.find_by_curp(ctx, demo.curp)
        if existing and existing != own_id:
            raise Duplicate(f"A patient with this CURP is already registered: Patient/{existing}",
                            expression="Patient.identifier", headers={"Location": f"Patient/{existing}"})
    existing_folio = repo.find_by_folio(ctx, demo.folio) if demo.folio else None
    if existing_folio and existing_folio != own_id:
        raise Duplicate(f"Folio {demo.folio} belongs to Patient/{existing_folio}", expression="Patient.identifier")


def read(ctx: RequestContext, patient_id: str, *, repo: Repository) -> Stored:
    """The current version; 404 for a missing id, another tenant's id, or another patient's (patient role);
    403 for a record blocked by an ARCO cancellation when the caller's role is one the block applies to."""
    ctx.require_own_patient(patient_id)
    stored = repo.get(ctx, patient_id)
    if stored is None:
        raise NotFound(f"Patient/{patient_id} not found")
    if arco.applies_to(ctx):
        arco.check_open(stored)
    return stored


def stored_demographics(stored: Stored) -> Demographics:
    """The demographics of a stored version, with its server-managed links.

    A stored version was validated when it was written, so it is not validated again here.
    """
    demo = _tabla1(stored.resource)
    links = tuple((link["other"]["reference"].split("/", 1)[1], link["type"])
                  for link in stored.resource.get("link") or [])
    return replace(demo, links=links)


def update(ctx: RequestContext, patient_id: str, body: dict[str, Any], *, if_match: int, repo: Repository,
           clock: Clock = utc_now, extra: Sequence[dict[str, Any]] = ()) -> Saved:
    """Write a new version. ``if_match`` must name the current version (412 otherwise); every version is kept.

    ``Patient.link`` is managed by ``$merge`` only and is carried over unchanged.
    """
    if body.get("id") not in (None, patient_id):
        raise Invalid(f"Patient.id {body.get('id')!r} does not match the URL id {patient_id}", expression="Patient.id")
    current = read(ctx, patient_id, repo=repo)
    arco.check_open(current)  # a blocked record takes no new data, whoever sends it
    if current.version != if_match:
        raise PreconditionFailed(f"Patient/{patient_id} is at version {current.version}, not {if_match}",
                                 headers={"ETag": f'W/"{current.version}"'})
    previous = stored_demographics(current)
    demo = demographics(body)
    if not demo.folio:
        demo = replace(demo, folio=previous.folio)
    demo = replace(demo, links=previous.links)
    if previous.links and any(kind == "replaced-by" for _, kind in previous.links) and demo.active:
        raise Unprocessable(f"Patient/{patient_id} was merged into another record and cannot be reactivated")
    _refuse_duplicates(ctx, demo, repo, own_id=patient_id)
    now = _timestamp(clock)
    version = current.version + 1
    resource = render(patient_id, demo, body, version=version, now=now)
    repo.update(ctx, patient_id, resource, demo, current, previous, now, extra)
    return Saved(resource, version, created=False)


def merge(ctx: RequestContext, source_id: str, target_id: str, *, repo: Repository,
          clock: Clock = utc_now) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge a confirmed duplicate (source) into the surviving record (target).

    Both records keep their histories; the source becomes inactive with a
    ``replaced-by`` link and the target gains a ``replaces`` link. Records with
    two different CURPs are different people and are not merged (422).
    Returns the new source and target resources.
    """
    if source_id == target_id:
        raise Invalid("source-patient and target-patient must be different records")
    source, target = read(ctx, source_id, repo=repo), read(ctx, target_id, repo=repo)
    arco.check_open(source)
    arco.check_open(target)
    source_demo, target_demo = stored_demographics(source), stored_demographics(target)
    for demo, which in ((source_demo, source_id), (target_demo, target_id)):
        if any(kind == "replaced-by" for _, kind in demo.links):
            raise Conflict(f"Patient/{which} has already been merged into another record")
    if source_demo.curp and target_demo.curp and source_demo.curp != target_demo.curp:
        raise Unprocessable("The records have different CURPs; they are different people and cannot be merged")
    now = _timestamp(clock)
    new_source_demo = replace(source_demo, active=False, links=(*source_demo.links, (target_id, "replaced-by")))
    new_target_demo = replace(target_demo, links=(*target_demo.links, (source_id, "replaces")))
    new_source = render(source_id, new_source_demo, source.resource, version=source.version + 1, now=now)
    new_target = render(target_id, new_target_demo, target.resource, version=target.version + 1, now=now)
    repo.merge(ctx, Change(new_source, new_source_demo, source, source_demo),
               Change(new_target, new_target_demo, target, target_demo), now)
    return new_source, new_target


# ------------------------------------------------------------------ ARCO ---


@dataclass(frozen=True)
class CancellationRequest:
    """An ARCO cancellation request the clinic received: when the patient made it, and why."""

    request_date: str
    reason: str


def cancellation_request(body: dict[str, Any], *, today: str) -> CancellationRequest:
    """``Parameters``: ``reason`` (valueString) and ``requestDate`` (valueDate, not in the future); else 400."""
    values = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    reason = (values.get("reason") or {}).get("valueString")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise Invalid("reason is required as a valueString of 1-2000 characters", expression="Parameters.reason")
    request_date = (values.get("requestDate") or {}).get("valueDate")
    if not isinstance(request_date, str) or len(request_date) != 10:
        raise Invalid("requestDate is required as a valueDate (YYYY-MM-DD)", expression="Parameters.requestDate")
    try:
        datetime.strptime(request_date, "%Y-%m-%d")
    except ValueError as exc:
        raise Invalid(f"requestDate {request_date!r} is not a date", expression="Parameters.requestDate") from exc
    if request_date > today:
        raise Invalid("requestDate cannot be in the future", expression="Parameters.requestDate")
    return CancellationRequest(request_date, reason.strip())


def arco_cancel(ctx: RequestContext, patient_id: str, request: CancellationRequest, *, repo: Repository,
                last_act: Callable[[Stored], str], clock: Clock = utc_now) -> Saved:
    """Block the record (ARCO cancellation) instead of deleting it: a new Patient version, never an erasure.

    The new version is inactive, tagged and carries the request in an extension; its item carries the
    date the retention period ends (:data:`expediente.arco.BLOCK_ATTR`): five years after the last act
    on the record (``last_act``, NOM-004-SSA3 5.4). 409 when the record is already blocked.
    """
    current = read(ctx, patient_id, repo=repo)
    until = arco.blocked_until(current)
    if until:
        raise Conflict(f"Patient/{patient_id} is already blocked by an ARCO cancellation request until {until}")
    previous = stored_demographics(current)
    last = last_act(current)
    retention = arco.retention_end(datetime.fromisoformat(last.replace("Z", "+00:00")).date()).isoformat()
    now = _timestamp(clock)
    demo = replace(previous, active=False)
    body = {**current.resource, "extension": [*(current.resource.get("extension") or []), {
        "url": arco.BLOCK_EXTENSION, "extension": [
            {"url": "requestDate", "valueDate": request.request_date},
            {"url": "recorded", "valueInstant": now},
            {"url": "reason", "valueString": request.reason},
            {"url": "lastAct", "valueDateTime": last},
            {"url": "retentionUntil", "valueDate": retention},
        ]}]}
    resource = render(patient_id, demo, body, version=current.version + 1, now=now)
    resource["extension"].append(body["extension"][-1])
    resource["meta"]["tag"] = [*(resource["meta"].get("tag") or []), {
        "system": ARCO_TAGS, "code": arco.BLOCK_TAG,
        "display": f"Blocked by an ARCO cancellation request; kept until {retention} (NOM-004-SSA3 5.4)"}]
    validate("Patient", resource)
    repo.block(ctx, Change(resource, demo, current, previous), now, until=retention,
               request_date=request.request_date)
    return Saved(resource, current.version + 1, created=False)
