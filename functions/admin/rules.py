"""Pure rules of the admin domain: what a valid clinic, practitioner, user or audit query is.

No boto3, no HTTP. Each rule raises an :mod:`expediente.errors` error whose
message and ``expression`` name the field that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from expediente import identifiers
from expediente.context import valid_resource_id
from expediente.errors import Invalid, Unprocessable
from expediente.fhir import validate
from expediente.permissions import Role

TENANT_SYSTEM = "urn:expediente:tenant"
ORGANIZATION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/organization-type"
NAME_MAX = 200
# Index terms are key material: bounded so a key stays far below DynamoDB's 1 KB sort key limit.
_TERM_MAX = 200


# ------------------------------------------------------------------ shared shapes ---


@dataclass(frozen=True)
class Unique:
    """An identifier value that at most one resource of its type may hold in a tenant."""

    value: str
    label: str  # what to call it in a 409 ("CLUES", "cédula profesional")
    expression: str  # where it is in the resource


@dataclass(frozen=True)
class Indexed:
    """What a resource contributes to its tenant's lookups: a unique key and search terms.

    ``terms`` are ``(facet, term)`` pairs; a search on a facet matches terms that start with
    the folded search value.
    """

    unique: Unique | None
    terms: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class ResourceQuery:
    """A search, answered by one lookup: a unique identifier, or one facet with a term prefix.

    ``matches`` filters what the lookup found by the remaining parameters.
    """

    identifier: str | None
    facet: str
    prefix: str
    matches: Callable[[dict[str, Any]], bool]
    empty: bool = False  # the parameters can match nothing (e.g. another identifier system)


@dataclass(frozen=True)
class Placement:
    """Where a resource sits in its tenant: the chain organization id and the resource's own id."""

    tenant: str
    chain_id: str
    resource_id: str


def fold(text: str) -> str:
    """A search term: upper case, no accents, no ``#`` (the key separator), bounded."""
    return identifiers.fold(text.replace("#", " "))[:_TERM_MAX]


def _strip_server_fields(body: dict[str, Any]) -> dict[str, Any]:
    # The server owns id and meta (versionId, lastUpdated).
    return {k: v for k, v in body.items() if k not in ("id", "meta")}


def _one_value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if re.search(r"(?<!\\),", value):
        raise Invalid(f"{name} takes one value here", expression=name)
    return value.replace("\\,", ",")


def _token_value(raw: str, system: str) -> tuple[bool, str]:
    """``system|value``, ``|value`` or ``value``; False when another system is named."""
    if "|" in raw:
        named, value = raw.split("|", 1)
        return (named in ("", system)), value.strip()
    return True, raw.strip()


def _boolean(params: Mapping[str, str], name: str) -> bool | None:
    value = _one_value(params, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise Invalid(f"{name} must be true or false", expression=name)
    return value == "true"


def check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """400 for a parameter this search does not support (never silently widen a search)."""
    for name in sorted(params):
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise Invalid(f"Unsupported search parameter {name!r}; supported: {known}", expression=name)


# ------------------------------------------------------------------ Organization ---


class OrganizationRules:
    """The clinic chain and its clinics (architecture decision 3).

    The chain is the tenant's root Organization, written by the operator command; every
    Organization created through the API is a clinic of the chain: ``partOf`` the chain,
    identified by exactly one CLUES (NOM-024 fundamental catalogue), unique in the chain.
    """

    resource_type = "Organization"
    search_params = frozenset({"identifier", "name", "partof", "active", "_count", "_page"})

    def normalize(self, body: dict[str, Any], place: Placement, *, is_chain: bool) -> dict[str, Any]:
        """The resource to store (without id/meta); raises Invalid (400) or Unprocessable (422)."""
        resource: dict[str, Any] = validate("Organization", _strip_server_fields(body)).model_dump(mode="json")
        # The tenant identifier is the server's to assign (on the chain only).
        kept = [i for i in resource.pop("identifier", []) if i.get("system") != TENANT_SYSTEM]
        if kept:
            resource["identifier"] = kept
        name = (resource.get("name") or "").strip()
        if not name:
            raise Invalid("Organization.name is required", expression="Organization.name")
        if len(name) > NAME_MAX:
            raise Invalid(f"Organization.name exceeds {NAME_MAX} characters", expression="Organization.name")
        resource["name"] = name
        clues = self._clues(resource, required=not is_chain)
        resource.setdefault("active", True)
        if is_chain:
            if "partOf" in resource:
                raise Unprocessable("The chain organization is not part of another organization",
                                    expression="Organization.partOf")
            resource["identifier"] = [*resource.get("identifier", []),
                                      {"system": TENANT_SYSTEM, "value": place.tenant}]
        else:
            chain_ref = f"Organization/{place.chain_id}"
            reference = (resource.get("partOf") or {}).get("reference", chain_ref)
            if reference != chain_ref:
                raise Unprocessable(f"A clinic is part of its chain: Organization.partOf must be {chain_ref}",
                                    expression="Organization.partOf")
            resource["partOf"] = {"reference": chain_ref}
            resource.setdefault("type", [{"coding": [{"system": ORGANIZATION_TYPE_SYSTEM, "code": "prov",
                                                      "display": "Healthcare Provider"}]}])
        if clues is not None:
            index, value = clues
            resource["identifier"][index]["value"] = value
        return resource

    @staticmethod
    def _clues(resource: dict[str, Any], *, required: bool) -> tuple[int, str] | None:
        found = [(i, ident) for i, ident in enumerate(resource.get("identifier") or [])
                 if ident.get("system") == identifiers.CLUES_SYSTEM]
        if not found:
            if required:
                raise Invalid(f"A clinic needs its CLUES: Organization.identifier with system "
                              f"{identifiers.CLUES_SYSTEM}", expression="Organization.identifier")
            return None
        if len(found) > 1:
            raise Invalid("An Organization has one CLUES", expression=f"Organization.identifier[{found[1][0]}]")
        index, ident = found[0]
        where = f"Organization.identifier[{index}].value"
        return index, identifiers.validate_clues(str(ident.get("value") or ""), where=where)

    def indexed(self, resource: dict[str, Any]) -> Indexed:
        name = fold(resource["name"])
        terms = {("name", name)}
        parent = (resource.get("partOf") or {}).get("reference", "")
        if parent.startswith("Organization/"):
            terms.add((f"partof:{parent.removeprefix('Organization/')}", name))
        unique = None
        for index, ident in enumerate(resource.get("identifier") or []):
            if ident.get("system") == identifiers.CLUES_SYSTEM:
                unique = Unique(ident["value"], "CLUES", f"Organization.identifier[{index}].value")
        return Indexed(unique, frozenset(terms))

    def query(self, params: Mapping[str, str]) -> ResourceQuery:
        """One lookup for ``identifier``/``name``/``partof``/``active`` (400 for anything else)."""
        check_params(params, self.search_params)
        name = fold(_one_value(params, "name") or "")
        active = _boolean(params, "active")
        parent = _one_value(params, "partof")
        facet = "name"
        if parent is not None:
            parent = parent.removeprefix("Organization/")
            if not valid_resource_id(parent):
                raise Invalid("partof must be Organization/<id>", expression="partof")
            facet = f"partof:{parent}"

        def matches(resource: dict[str, Any]) -> bool:
            return (
                (active is None or resource.get("active", True) is active)
                and fold(resource.get("name", "")).startswith(name)
                and (parent is None or (resource.get("partOf") or {}).get("reference") == f"Organization/{parent}")
            )

        raw = _one_value(params, "identifier")
        if raw is not None:
            same_system, value = _token_value(raw, identifiers.CLUES_SYSTEM)
            return ResourceQuery(value.upper(), facet, name, matches, empty=not same_system or not value)
        return ResourceQuery(None, facet, name, matches)

    @staticmethod
    def is_active_clinic(resource: dict[str, Any], chain_id: str) -> bool:
        return bool(resource.get("active", True)) and (
            (resource.get("partOf") or {}).get("reference") == f"Organization/{chain_id}")


# ------------------------------------------------------------------ Practitioner ---


class PractitionerRules:
    """Health professionals: cédula profesional, name, and (LGS art. 83) the title-issuing institution."""

    resource_type = "Practitioner"
    search_params = frozenset({"identifier", "family", "given", "name", "active", "_count", "_page"})

    def normalize(self, body: dict[str, Any], place: Placement, *, is_chain: bool = False) -> dict[str, Any]:
        """The resource to store (without id/meta); raises Invalid (400) naming the field."""
        resource: dict[str, Any] = validate("Practitioner", _strip_server_fields(body)).model_dump(mode="json")
        names = resource.get("name") or []
        if not names:
            raise Invalid("Practitioner.name is required (family and given)", expression="Practitioner.name")
        index, name = self._primary_name(names)
        if not (name.get("family") or "").strip():
            raise Invalid(f"Practitioner.name[{index}].family is required",
                          expression=f"Practitioner.name[{index}].family")
        if not any((g or "").strip() for g in name.get("given") or []):
            raise Invalid(f"Practitioner.name[{index}].given is required",
                          expression=f"Practitioner.name[{index}].given")
        cedulas = [(i, ident) for i, ident in enumerate(resource.get("identifier") or [])
                   if ident.get("system") == identifiers.CEDULA_SYSTEM]
        if not cedulas:
            raise Invalid(f"Practitioner.identifier with the cédula profesional (system "
                          f"{identifiers.CEDULA_SYSTEM}) is required", expression="Practitioner.identifier")
        if len(cedulas) > 1:
            raise Invalid("A Practitioner has one cédula profesional; specialty cédulas go in qualification",
                          expression=f"Practitioner.identifier[{cedulas[1][0]}]")
        i, ident = cedulas[0]
        ident["value"] = identifiers.validate_cedula(str(ident.get("value") or ""),
                                                     where=f"Practitioner.identifier[{i}].value")
        for q, qualification in enumerate(resource.get("qualification") or []):
            # Ley General de Salud art. 83: documents show the institution that issued the title.
            if not ((qualification.get("issuer") or {}).get("display") or "").strip():
                raise Invalid(f"Practitioner.qualification[{q}].issuer.display (the title-issuing institution) "
                              "is required", expression=f"Practitioner.qualification[{q}].issuer.display")
            for j, qid in enumerate(qualification.get("identifier") or []):
                if qid.get("system") == identifiers.CEDULA_SYSTEM:
                    where = f"Practitioner.qualification[{q}].identifier[{j}].value"
                    qid["value"] = identifiers.validate_cedula(str(qid.get("value") or ""), where=where)
        resource.setdefault("active", True)
        return resource

    @staticmethod
    def _primary_name(names: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        for index, name in enumerate(names):
            if name.get("use") == "official":
                return index, name
        return 0, names[0]

    def indexed(self, resource: dict[str, Any]) -> Indexed:
        _, name = self._primary_name(resource["name"])
        family = fold(name.get("family") or "")
        given = {fold(g) for g in name.get("given") or [] if fold(g)}
        terms = {("family", family)} | {("given", g) for g in given} | {("name", t) for t in {family, *given}}
        unique = None
        for index, ident in enumerate(resource.get("identifier") or []):
            if ident.get("system") == identifiers.CEDULA_SYSTEM:
                unique = Unique(ident["value"], "cédula profesional", f"Practitioner.identifier[{index}].value")
        return Indexed(unique, frozenset(terms))

    def query(self, params: Mapping[str, str]) -> ResourceQuery:
        """One lookup for ``identifier``/``family``/``given``/``name``/``active`` (400 for anything else)."""
        check_params(params, self.search_params)
        wanted = {key: fold(_one_value(params, key) or "") for key in ("family", "given", "name")}
        active = _boolean(params, "active")

        def matches(resource: dict[str, Any]) -> bool:
            terms = self.indexed(resource).terms
            return (active is None or resource.get("active", True) is active) and all(
                any(facet == key and term.startswith(value) for facet, term in terms)
                for key, value in wanted.items() if value)

        raw = _one_value(params, "identifier")
        if raw is not None:
            same_system, value = _token_value(raw, identifiers.CEDULA_SYSTEM)
            return ResourceQuery(value, "family", "", matches, empty=not same_system or not value)
        facet = next((key for key in ("family", "name", "given") if wanted[key]), "family")
        return ResourceQuery(None, facet, wanted[facet], matches)


ORGANIZATION = OrganizationRules()
PRACTITIONER = PractitionerRules()


# ------------------------------------------------------------------ users ---

# Roles whose users sign clinical documents. infra.definitions.SIGNING_ROLES is the declaration
# (it drives MFA in the pool); ``infra`` is not shipped to Lambda, so the list is repeated here and a
# unit test keeps the two equal.
SIGNING_ROLES: frozenset[str] = frozenset({"physician", "nurse", "pharmacist", "lab", "radiology"})
ROLES: tuple[str, ...] = tuple(role.value for role in Role)
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CLINICAL_ROLES = frozenset({Role.PHYSICIAN, Role.NURSE, Role.PHARMACIST, Role.LAB, Role.RADIOLOGY, Role.RECEPTION})
MAX_CLINICS = 100
_CLINIC_CLAIM_MAX = 2048  # the custom:clinic_ids attribute's maximum length


@dataclass(frozen=True)
class UserSpec:
    """What an account is allowed to be: role, clinics (CLUES) and links to its records."""

    role: str
    clinic_ids: tuple[str, ...]
    practitioner_id: str | None
    patient_id: str | None
    enabled: bool = True


@dataclass(frozen=True)
class NewUser:
    username: str
    email: str
    spec: UserSpec


def _string(body: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise Invalid(f"{key} is required", expression=key)
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{key} must be a non-empty string", expression=key)
    return value.strip()


def _reject_unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise Invalid(f"Unknown field {key!r}; allowed: {', '.join(allowed)}", expression=str(key))


def username(value: str) -> str:
    """The canonical username (the pool is case-insensitive); 400 if it has another shape."""
    name = value.strip().lower()
    if not _USERNAME.match(name):
        raise Invalid("username must be 3-64 characters: lowercase letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit", expression="username")
    return name


def _clinic_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid("clinic_ids must be a list of CLUES", expression="clinic_ids")
    if len(value) > MAX_CLINICS:
        raise Invalid(f"clinic_ids holds at most {MAX_CLINICS} clinics", expression="clinic_ids")
    clues = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(f"clinic_ids[{i}] must be a CLUES string", expression=f"clinic_ids[{i}]")
        clues.append(identifiers.validate_clues(item, where=f"clinic_ids[{i}]"))
    unique = tuple(dict.fromkeys(clues))
    if len(",".join(unique)) > _CLINIC_CLAIM_MAX:
        raise Invalid("clinic_ids is too long for the token", expression="clinic_ids")
    return unique


def check_spec(spec: UserSpec) -> UserSpec:
    """The cross-field rules of an account; raises Invalid naming the field."""
    if spec.role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", expression="role")
    if spec.role in SIGNING_ROLES and not spec.practitioner_id:
        # Signed documents name their author's cédula (LGS art. 83): the account must be a Practitioner.
        raise Invalid(f"A {spec.role} signs clinical documents: practitioner_id (the user's Practitioner) "
                      "is required", expression="practitioner_id")
    if spec.role in _CLINICAL_ROLES and not spec.clinic_ids:
        raise Invalid(f"A {spec.role} works in at least one clinic: clinic_ids is required", expression="clinic_ids")
    if spec.role == Role.PATIENT:
        if not spec.patient_id:
            raise Invalid("A patient account is linked to its record: patient_id is required",
                          expression="patient_id")
        if spec.practitioner_id:
            raise Invalid("A patient account has no practitioner_id", expression="practitioner_id")
    elif spec.patient_id:
        raise Invalid("Only a patient account has a patient_id", expression="patient_id")
    for key in ("practitioner_id", "patient_id"):
        value = getattr(spec, key)
        if value is not None and not valid_resource_id(value):
            raise Invalid(f"{key} must be a resource id", expression=key)
    return spec


def new_user(body: Mapping[str, Any]) -> NewUser:
    """Parse ``POST /admin/users``; the tenant never comes from the body."""
    _reject_unknown(body, ("username", "email", "role", "clinic_ids", "practitioner_id", "patient_id"))
    email = _string(body, "email", required=True) or ""
    if len(email) > 254 or not _EMAIL.match(email):
        raise Invalid("email is not a valid address", expression="email")  # never echo the address
    spec = UserSpec(
        role=_string(body, "role", required=True) or "",
        clinic_ids=_clinic_ids(body.get("clinic_ids", [])),
        practitioner_id=_string(body, "practitioner_id", required=False),
        patient_id=_string(body, "patient_id", required=False),
    )
    return NewUser(username(_string(body, "username", required=True) or ""), email, check_spec(spec))


def changed_user(body: Mapping[str, Any], current: UserSpec) -> UserSpec:
    """Parse ``PUT /admin/users/{username}`` onto ``current``: role, clinics, record links, enabled."""
    allowed = ("role", "clinic_ids", "practitioner_id", "patient_id", "enabled")
    _reject_unknown(body, allowed)
    if not body:
        raise Invalid(f"Nothing to change; send any of {', '.join(allowed)}")
    enabled = body.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise Invalid("enabled must be true or false", expression="enabled")
    links = {key: getattr(current, key) for key in ("practitioner_id", "patient_id")}
    for key in links:
        if key in body:  # null clears the link
            links[key] = None if body[key] is None else _string(body, key, required=False)
    spec = UserSpec(
        role=_string(body, "role", required=False) or current.role,
        clinic_ids=_clinic_ids(body["clinic_ids"]) if "clinic_ids" in body else current.clinic_ids,
        enabled=enabled,
        **links,
    )
    return check_spec(spec)


# ------------------------------------------------------------------ AuditEvent queries ---

_DATE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2}))?)?)?$"
)
AUDIT_PARAMS = frozenset({"patient", "agent", "date", "_sort", "_count", "_page", "_format"})


@dataclass(frozen=True)
class AuditQuery:
    """An audit search: at most one patient and one agent; recorded-time bounds ``[low, high)``."""

    patient: str | None = None
    agent: str | None = None
    low: str | None = None
    high: str | None = None
    ascending: bool = False

    @property
    def impossible(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high


def _instant(moment: datetime) -> str:
    # The same form as the audit record's sort key: milliseconds, UTC, 'Z'.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def date_range(value: str) -> tuple[str, str, str]:
    """``(prefix, low, high)``: the instants a FHIR date value covers, at its precision, as ``[low, high)``."""
    match = _DATE.match(value)
    if not match:
        raise Invalid(f"date must be a FHIR date or dateTime with an optional prefix, got {value!r}",
                      expression="date")
    prefix = match["prefix"] or "eq"
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise Invalid(f"date supports the prefixes eq, ge, gt, le, lt; got {prefix}", expression="date")
    if match["hour"] is not None and match["tz"] is None:
        raise Invalid("A date with a time needs a time zone (Z or ±hh:mm)", expression="date")
    try:
        year, month, day = int(match["year"]), int(match["month"] or 1), int(match["day"] or 1)
        if match["hour"] is None:
            start = datetime(year, month, day, tzinfo=UTC)
            if match["day"]:
                end = start + timedelta(days=1)
            elif match["month"]:
                end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            else:
                end = datetime(year + 1, 1, 1, tzinfo=UTC)
        else:
            tz = match["tz"]
            text = f"{match['year']}-{match['month']}-{match['day']}T{match['hour']}:{match['minute']}"
            text += f":{match['second'] or '00'}"
            fraction = (match["fraction"] or "")[:6]
            text += f".{fraction.ljust(6, '0')}" + ("+00:00" if tz == "Z" else tz)
            start = datetime.fromisoformat(text)
            step = (timedelta(minutes=1) if match["second"] is None
                    else timedelta(seconds=1) if not match["fraction"] else timedelta(milliseconds=1))
            end = start + step
    except ValueError as exc:
        raise Invalid(f"date {value!r} is not a real date", expression="date") from exc
    return prefix, _instant(start), _instant(end)


def audit_query(params: Mapping[str, str]) -> AuditQuery:
    """Parse an ``AuditEvent`` search (400 naming the parameter that is wrong)."""
    check_params(params, AUDIT_PARAMS)
    patient = _one_value(params, "patient")
    if patient is not None:
        patient = patient.removeprefix("Patient/")
        if not valid_resource_id(patient):
            raise Invalid("patient must be Patient/<id> or <id>", expression="patient")
    agent = _one_value(params, "agent")
    if agent is not None and not re.fullmatch(r"[A-Za-z0-9:._@/-]{1,128}", agent):
        raise Invalid("agent must be a user id", expression="agent")
    sort = params.get("_sort", "-date")
    if sort not in ("date", "-date"):
        raise Invalid("_sort supports date and -date", expression="_sort")
    low: str | None = None
    high: str | None = None
    values = [v for v in (params.get("date") or "").split(",") if v]
    if len(values) > 2:
        raise Invalid("date takes at most two values (a lower and an upper bound)", expression="date")
    for value in values:
        prefix, start, end = date_range(value)
        lower = {"eq": start, "ge": start, "gt": end}.get(prefix)
        upper = {"eq": end, "le": end, "lt": start}.get(prefix)
        if lower is not None:
            low = max(low, lower) if low else lower
        if upper is not None:
            high = min(high, upper) if high else upper
    return AuditQuery(patient=patient, agent=agent, low=low, high=high, ascending=sort == "date")
