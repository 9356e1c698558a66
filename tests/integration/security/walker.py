"""The route table as data, two tenants' worlds built through the product, and the leak oracle.

Shared by the tenant-isolation walk (``test_tenant_walk.py``), the interleavings
(``test_tenant_interleavings.py``) and the role matrix (``test_role_matrix.py``):

- :func:`operations` lists every operation of the published OpenAPI description
  (``functions/admin/openapi.json``, generated from the handlers) and :func:`classify` says which
  function answers it and which permission-table cell (resource type × interaction) it exercises.
- :func:`build_tenant` makes one clinic chain with data in every domain, through the handlers
  only: patient, encounter, diagnoses (one sensitive), vital signs, a signed note, lab and imaging
  orders, an HL7 v2 ORU with a critical potassium (result, report, alert, acknowledgement), a DICOM
  study from the ingest bucket and a quarantined upload, an allergy, two interacting prescriptions
  (a DetectedIssue), one signed with an override and dispensed, a local formulary item, users,
  practitioners, clinics and the audit trail they left.
- :class:`Secrets` is what one tenant produced that no other tenant may ever see: every id,
  identifier value, CURP, name, S3 key, DICOM UID and receta token; :meth:`Secrets.leaks` scans any
  bytes for them.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets as random_secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from expediente.permissions import PERMISSIONS, Interaction, Role
from infra import definitions
from tests.conftest import Reply
from tests.integration.admin.conftest import AdminWorld
from tests.integration.notes.conftest import (
    CLUES,
    Chain,
    Staff,
    call,
    historia_clinica_body,
    make_chain,
)
from tests.integration.patients.conftest import patient_body
from tests.support.aws import REGION, bucket_name
from tests.support.curp import make_curp

ROOT = Path(__file__).resolve().parents[3]
OPENAPI = ROOT / "functions" / "admin" / "openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
CNIS = "urn:oid:2.16.840.1.113883.3.215.12.8"
SIMVASTATIN = "010.000.4124.00"
CLARITHROMYCIN = "010.000.2132.00"
PARACETAMOL = "010.000.0104.00"
SENSITIVE_CODE = "F32.9"  # depressive episode, unspecified: labelled PSY (expediente.icd10.SENSITIVITY_RULES)
ER7 = "x-application/hl7-v2+er7"
CLUES_OID = "urn:oid:2.16.840.1.113883.4.631"
_CONTROL = itertools.count(1)


# ------------------------------------------------------------------------------------------------ routes ---


@dataclass(frozen=True)
class Operation:
    """One operation of the API as the OpenAPI description publishes it."""

    method: str  # upper case
    path: str  # template, e.g. /fhir/Patient/{patient_id}/_history/{version}

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Cell:
    """The permission-table cell an operation exercises (``public`` when no token is needed)."""

    function: str
    resource_type: str | None
    interaction: Interaction | None
    public: bool = False


def operations() -> list[Operation]:
    """Every (method, path) of ``functions/admin/openapi.json``: the whole route table."""
    document = json.loads(OPENAPI.read_text(encoding="utf-8"))
    return [Operation(method.upper(), path) for path, item in sorted(document["paths"].items())
            for method in METHODS if method in item]


def _function_of(path: str) -> tuple[str, bool]:
    """The function whose API Gateway resources hold ``path`` (infra/definitions.py) and whether it is public."""
    def covers(resource: str) -> bool:
        if resource.endswith("/{proxy+}"):
            return path.startswith(resource.removesuffix("{proxy+}"))
        pattern = re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(resource))
        return re.fullmatch(pattern, path) is not None

    for fn in definitions.FUNCTIONS:
        if any(covers(r) for r in fn.public_routes):
            return fn.id, True
    for fn in definitions.FUNCTIONS:
        if any(covers(r) for r in fn.routes):
            return fn.id, False
    raise LookupError(f"no function of infra/definitions.py routes {path}")


_INSTANCE_METHODS = {"GET": Interaction.READ, "PUT": Interaction.UPDATE, "DELETE": Interaction.DELETE,
                     "PATCH": Interaction.UPDATE}
_ADMIN_TYPES = {"/admin/users": "User", "/admin/critical-results": "CriticalResultsPolicy",
                "/admin/dicom-quarantine": "DicomQuarantine"}


def classify(op: Operation) -> Cell:
    """Which function answers ``op`` and which permission cell it exercises.

    FHIR paths follow the REST pattern (type → search/create, instance → read/update/delete,
    ``_history`` → history/vread, ``$name`` → that operation). ``/admin/*`` resources are named
    by the permission table's own types; DICOMweb is ``ImagingStudy`` (QIDO-RS searches a study's
    content, WADO-RS reads it); HL7 v2 results need ``Observation`` create (and DiagnosticReport).
    Raises ``LookupError`` for a path this scheme does not know, so a new kind of route must be
    classified here before the walk and the role matrix accept it.
    """
    function, public = _function_of(op.path)
    if public:
        return Cell(function, None, None, public=True)
    parts = [p for p in op.path.split("/") if p]
    if parts[0] == "fhir":
        resource_type, rest = parts[1], parts[2:]
        if resource_type not in PERMISSIONS:
            raise LookupError(f"{op}: {resource_type} is not in the permission table")
        if not rest:
            return Cell(function, resource_type, Interaction.SEARCH if op.method == "GET" else Interaction.CREATE)
        if rest[0].startswith("$"):
            return Cell(function, resource_type, Interaction(rest[0]))
        if len(rest) == 1:
            return Cell(function, resource_type, _INSTANCE_METHODS[op.method])
        if rest[1] == "_history":
            return Cell(function, resource_type, Interaction.VREAD if len(rest) == 3 else Interaction.HISTORY)
        if rest[1].startswith("$"):
            return Cell(function, resource_type, Interaction(rest[1]))
    if parts[0] == "admin":
        base = "/" + "/".join(parts[:2])
        resource_type = _ADMIN_TYPES[base]
        rest = parts[2:]
        if resource_type == "CriticalResultsPolicy":
            return Cell(function, resource_type, Interaction.READ if op.method == "GET" else Interaction.UPDATE)
        if not rest:
            return Cell(function, resource_type, Interaction.SEARCH if op.method == "GET" else Interaction.CREATE)
        if len(rest) == 2 and rest[1].startswith("$"):
            return Cell(function, resource_type, Interaction(rest[1]))
        return Cell(function, resource_type, _INSTANCE_METHODS[op.method])
    if parts[0] == "dicomweb":
        qido = parts[-1] in ("studies", "series", "instances")
        return Cell(function, "ImagingStudy", Interaction.SEARCH if qido else Interaction.READ)
    if parts[0] == "hl7v2":
        return Cell(function, "Observation", Interaction.CREATE)
    raise LookupError(f"{op}: no permission cell")


def roles_allowed(cell: Cell) -> list[Role]:
    """The roles the permission table grants this cell, in the table's role order."""
    if cell.resource_type is None or cell.interaction is None:
        return list(Role)
    grants = PERMISSIONS.get(cell.resource_type, {})
    return [role for role in Role if cell.interaction in grants.get(role, frozenset())]


# ------------------------------------------------------------------------------------------------ secrets ---


@dataclass
class Secrets:
    """What one tenant produced; none of it may reach another tenant (compared case-insensitively)."""

    values: dict[str, str] = field(default_factory=dict)  # value -> what it is

    def add(self, value: Any, what: str) -> None:
        text = str(value or "").strip()
        if len(text) >= 8:  # shorter values (versions, codes) are not identifying
            self.values.setdefault(text.lower(), what)

    def add_resource(self, resource: dict[str, Any] | None) -> None:
        """A resource's id and every identifier value in it (at any depth)."""
        if not isinstance(resource, dict):
            return
        kind = str(resource.get("resourceType", "resource"))
        if resource.get("id"):
            self.add(resource["id"], f"{kind}.id")
        for node in _walk(resource):
            for identifier in node.get("identifier") or [] if isinstance(node.get("identifier"), list) else []:
                # CLUES is the national registry's public code of a clinic, not data of the tenant.
                if isinstance(identifier, dict) and identifier.get("value") and identifier.get("system") != CLUES_OID:
                    self.add(identifier["value"], f"{kind}.identifier")

    def leaks(self, data: Any) -> list[str]:
        """The secrets found in ``data`` (any JSON-able value or text), as ``what=value``."""
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
        lowered = text.lower()
        return [f"{what}={value}" for value, what in self.values.items() if value in lowered]

    def __len__(self) -> int:
        return len(self.values)


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def random_id(length: int = 20) -> str:
    """An id in the shape the product issues (lowercase base32) that names nothing."""
    return "".join(random_secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(length))


# ------------------------------------------------------------------------------------------------ tenants ---


@dataclass
class Tenant:
    """One clinic chain with data in every domain, and who in it may call what."""

    chain: Chain
    staff: dict[str, Staff]
    ids: dict[str, list[str]]  # resource type (or kind) -> ids, first is the main one
    resources: dict[str, dict[str, Any]]  # resource type -> one current resource as its owner reads it
    secrets: Secrets
    extra: dict[str, str]  # names of other values: placer, accession, token, username, uids
    person: Person

    @property
    def id(self) -> str:
        return self.chain.tenant.id

    def first(self, kind: str) -> str:
        return self.ids[kind][0]

    def keep(self, kind: str, value: str) -> str:
        self.ids.setdefault(kind, []).append(value)
        self.secrets.add(value, kind)
        return value

    def as_role(self, role: str) -> Staff:
        return self.staff[role]


def fn_call(staff: Staff, function: str, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
    """Call one function's handler in-process with a real API Gateway event for ``staff``."""
    if function == "hl7v2":
        kw["headers"] = {"Content-Type": ER7, **(kw.get("headers") or {})}
    return call(staff.caller, function, method, path, body, **kw)


def _ok(reply: Reply, *statuses: int) -> dict[str, Any]:
    assert reply.status in (statuses or (200, 201)), (reply.status, reply.body)
    return reply.body if isinstance(reply.body, dict) else {}


@dataclass(frozen=True)
class Person:
    """How a tenant's demo patient is named (distinct per tenant so names are a usable secret)."""

    family: str
    second: str
    given: str
    curp_prefix: str
    consonants: str
    birth: str


PEOPLE = {
    "a": Person("Zárate", "Ibarrola", "Eulalia", "ZAIE", "RBL", "750314"),
    "b": Person("Pérez", "Gómez", "Juan", "PEGJ", "RRN", "800101"),
}
_SERIAL = itertools.count()


def register(staff: Staff, person: Person, tenant: Tenant | None = None, *, sex: str = "M") -> dict[str, Any]:
    """A patient named as ``person`` with a CURP that agrees with the name (differentiator varies)."""
    n = next(_SERIAL)
    curp = make_curp(prefix=person.curp_prefix, birth=person.birth, sex=sex, consonants=person.consonants,
                     differentiator=str(n % 10))
    body = patient_body(curp, family=person.family, second=person.second, given=(person.given,),
                        birth=f"19{person.birth[:2]}-{person.birth[2:4]}-{person.birth[4:]}",
                        gender="female" if sex == "M" else "male")
    patient = _ok(fn_call(staff, "patients", "POST", "/fhir/Patient", body))
    if tenant is not None:
        tenant.secrets.add(curp, "CURP")
        tenant.secrets.add_resource(patient)
    return patient


def staff_of(chain: Chain, role: str, *, practitioner: bool) -> Staff:
    return chain.staff(role, practitioner=practitioner)


CLINICAL_ROLES = ("physician", "nurse", "pharmacist", "lab", "radiology")


def build_tenant(world: AdminWorld, label: str, *, full: bool = True) -> Tenant:
    """A chain with one user per role and, with ``full``, data in every domain (see the module doc)."""
    from tests.integration.imaging.conftest import Imaging, dicom_bytes
    from tests.integration.orders.conftest import imaging_order, lab_order

    person = PEOPLE[label]
    chain = make_chain(world, f"Red Clínica {label.upper()}")
    staff = {role: staff_of(chain, role, practitioner=True) for role in CLINICAL_ROLES}
    staff["reception"] = staff_of(chain, "reception", practitioner=False)
    staff["auditor"] = staff_of(chain, "auditor", practitioner=False)
    staff["admin"] = Staff(chain.tenant.admin, None)
    tenant = Tenant(chain, staff, {}, {}, Secrets(), {}, person)
    tenant.secrets.add(chain.tenant.id, "tenant id")
    tenant.keep("Organization", chain.clinic_id)
    tenant.keep("Organization", chain.tenant.chain_id)
    for role, member in staff.items():
        if member.practitioner_id:
            tenant.keep("Practitioner", member.practitioner_id)
        if member.caller.username:
            tenant.keep("User", member.caller.username)
            tenant.secrets.add(member.caller.user_id, f"user sub ({role})")
    patient = register(staff["reception"], person, tenant)
    tenant.keep("Patient", patient["id"])
    tenant.resources["Patient"] = patient
    second = register(staff["reception"], person, tenant, sex="H")
    tenant.keep("Patient", second["id"])
    me = chain.patient_user(patient["id"])
    staff["patient"] = me
    tenant.keep("User", me.caller.username)
    tenant.secrets.add(person.family, "family name")
    tenant.secrets.add(person.second, "second family name")
    tenant.secrets.add(f"{person.given} ", "given name")  # padded: short names would match inside words
    if not full:
        return tenant
    physician, nurse, lab, pharmacist = staff["physician"], staff["nurse"], staff["lab"], staff["pharmacist"]
    pid = patient["id"]

    def kept(kind: str, reply: Reply, *statuses: int) -> dict[str, Any]:
        body = _ok(reply, *statuses)
        tenant.secrets.add_resource(body)
        tenant.keep(kind, str(body["id"]))
        tenant.resources.setdefault(kind, body)
        return body

    encounter = kept("Encounter", fn_call(physician, "notes", "POST", "/fhir/Encounter", {
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"}}))
    eid = encounter["id"]
    condition = kept("Condition", fn_call(physician, "notes", "POST", "/fhir/Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"}, "code": {"coding": [{"system": ICD10, "code": "I10X"}]}}))
    sensitive = kept("Condition", fn_call(physician, "notes", "POST", "/fhir/Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": ICD10, "code": SENSITIVE_CODE}]}}))
    tenant.extra["sensitive_condition"] = sensitive["id"]
    vitals = []
    for code, value, unit in (("29463-7", 72.5, "kg"), ("8302-2", 170, "cm"), ("8867-4", 80, "/min")):
        vital = kept("Observation", fn_call(nurse, "results", "POST", "/fhir/Observation", {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/{eid}"}, "effectiveDateTime": "2026-11-25T10:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}))
        vitals.append(f"Observation/{vital['id']}")
    note = historia_clinica(pid, eid, condition["id"], vitals)
    draft = kept("Composition", fn_call(physician, "notes", "POST", "/fhir/Composition", note))
    signed = fn_call(physician, "notes", "POST", f"/fhir/Composition/{draft['id']}/$sign",
                     headers={"If-Match": f'W/"{draft["meta"]["versionId"]}"'})
    _ok(signed, 200)
    tenant.resources["Composition"] = signed.body
    tenant.keep("Provenance", signed.headers["X-Provenance"].split("/")[1])
    tenant.secrets.add("Madre con diabetes tipo 2", "note narrative")

    # Laboratory: an order, an HL7 v2 ORU with a critical potassium, the alert acknowledged.
    lab_request = kept("ServiceRequest", fn_call(physician, "orders", "POST", "/fhir/ServiceRequest",
                                                 lab_order(pid, eid)))
    placer = next(str(i["value"]) for i in lab_request["identifier"] if i["system"] == "urn:expediente:placer")
    tenant.extra["placer"] = placer
    control = f"LAB{label.upper()}{next(_CONTROL):05d}"
    tenant.extra["control"] = control
    ack = fn_call(lab, "hl7v2", "POST", "/hl7v2", oru(patient=pid, placer=placer, control=control,
                                                        obx=[potassium("7.1", flags="HH")]))
    assert ack.status == 200 and "|AA|" in str(ack.body), ack.body
    found = _ok(fn_call(physician, "results", "GET", "/fhir/Observation",
                        query={"based-on": f"ServiceRequest/{lab_request['id']}"}), 200)
    result = found["entry"][0]["resource"]
    tenant.secrets.add_resource(result)
    tenant.keep("Observation", result["id"])
    tenant.extra["critical_observation"] = result["id"]
    reports = _ok(fn_call(physician, "results", "GET", "/fhir/DiagnosticReport",
                          query={"based-on": f"ServiceRequest/{lab_request['id']}"}), 200)
    report = reports["entry"][0]["resource"]
    tenant.secrets.add_resource(report)
    tenant.keep("DiagnosticReport", report["id"])
    tenant.resources["DiagnosticReport"] = report
    alerts = _ok(fn_call(physician, "results", "GET", "/fhir/Communication",
                         query={"about": f"Observation/{result['id']}"}), 200)
    alert = alerts["entry"][0]["resource"]
    tenant.secrets.add_resource(alert)
    tenant.keep("Communication", alert["id"])
    _ok(fn_call(physician, "results", "POST", f"/fhir/Observation/{result['id']}/$acknowledge", {
        "resourceType": "Parameters", "parameter": [{"name": "readBack", "valueString": "Potasio 7.1 mmol/L"}]}),
        200)
    from tests.integration.results.test_laboratory import deliver_to_orders

    deliver_to_orders(chain)

    # Imaging: an order, a DICOM instance through the ingest bucket, and an upload that is quarantined.
    image_request = kept("ServiceRequest", fn_call(physician, "orders", "POST", "/fhir/ServiceRequest",
                                                   imaging_order(pid, eid)))
    imaging = Imaging(chain=chain, physician=physician, radiology=staff["radiology"], admin=staff["admin"],
                      patient_id=pid, encounter_id=eid)
    accession = imaging.accession(image_request)
    tenant.extra["accession"] = accession
    import pydicom

    data = dicom_bytes("CT_small.dcm", patient_id=pid, accession=accession)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    imaging.ingest(data)
    imaging.deliver_events_to_orders()
    for name, uid in (("study_uid", ds.StudyInstanceUID), ("series_uid", ds.SeriesInstanceUID),
                      ("sop_uid", ds.SOPInstanceUID)):
        tenant.extra[name] = str(uid)
        tenant.secrets.add(str(uid), f"DICOM {name}")
    study = _ok(fn_call(physician, "results", "GET", f"/fhir/ImagingStudy/{ds.StudyInstanceUID}"), 200)
    tenant.secrets.add_resource(study)
    tenant.keep("ImagingStudy", study["id"])
    imaging.ingest(b"this is not DICOM at all " * 8)
    queued = _ok(fn_call(staff["admin"], "dicom_ingest", "GET", "/admin/dicom-quarantine"), 200)
    quarantine_id = str(queued["items"][0]["id"]) if "items" in queued else str(queued["entry"][0]["id"])
    tenant.keep("DicomQuarantine", quarantine_id)

    # Prescriptions: an allergy, two interacting prescriptions (an alert), one signed with an override and
    # dispensed; a local formulary item.
    from tests.integration.prescriptions.conftest import prescription

    kept("AllergyIntolerance", fn_call(physician, "prescriptions", "POST", "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
        "category": ["food"], "code": {"text": "Cacahuate"}}))
    kept("MedicationRequest", fn_call(physician, "prescriptions", "POST", "/fhir/MedicationRequest",
                                      prescription(pid, SIMVASTATIN, every_hours=24, days=30)))
    draft_rx = kept("MedicationRequest", fn_call(physician, "prescriptions", "POST", "/fhir/MedicationRequest",
                                                 prescription(pid, CLARITHROMYCIN, every_hours=12, days=7)))
    for reference in draft_rx.get("detectedIssue") or []:
        tenant.keep("DetectedIssue", reference["reference"].split("/")[1])
    signed_rx = fn_call(physician, "prescriptions", "POST", f"/fhir/MedicationRequest/{draft_rx['id']}/$sign", {
        "resourceType": "Parameters", "parameter": [{"name": "overrideReason", "valueString": "Vigilancia estrecha"}]},
        headers={"If-Match": f'W/"{draft_rx["meta"]["versionId"]}"'})
    _ok(signed_rx, 200)
    tenant.keep("Provenance", signed_rx.headers["X-Provenance"].split("/")[1])
    token = signed_rx.headers["X-Receta-Verify"].rsplit("/", 1)[1]
    tenant.extra["receta_token"] = token
    tenant.secrets.add(token, "receta token")
    tenant.resources["MedicationRequest"] = signed_rx.body
    kept("MedicationDispense", fn_call(pharmacist, "prescriptions", "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{draft_rx['id']}"}]}))
    from tests.integration.prescriptions.test_formulary_api import local_medication

    kept("Medication", fn_call(pharmacist, "prescriptions", "POST", "/fhir/Medication",
                               local_medication(f"Jarabe magistral {person.family}")))
    tenant.secrets.add(f"Jarabe magistral {person.family}", "local medication name")

    # Administration: the policy changed, and what the auditor sees.
    _ok(fn_call(staff["admin"], "admin", "PUT", "/admin/critical-results",
                {"onCall": {CLUES: [f"Practitioner/{physician.practitioner_id}"]}}), 200)
    trail = _ok(fn_call(staff["auditor"], "admin", "GET", "/fhir/AuditEvent", query={"patient": f"Patient/{pid}"}),
                200)
    for entry in trail.get("entry") or []:
        tenant.keep("AuditEvent", entry["resource"]["id"])
    for key in all_keys():
        if key.split("/", 1)[0] == tenant.id:
            tenant.secrets.add(key, "S3 key")
    for name in ("Organization", "Practitioner"):
        current = fn_call(staff["admin"], "admin", "GET", f"/fhir/{name}/{tenant.first(name)}")
        tenant.resources[name] = _ok(current, 200)
        tenant.secrets.add_resource(current.body)
    return tenant


def all_keys() -> list[str]:
    """Every object key in every bucket of the stack."""
    s3 = boto3.client("s3", region_name=REGION)
    keys = []
    for bucket in definitions.BUCKETS:
        listed = s3.list_object_versions(Bucket=bucket_name(bucket.id))
        keys += [v["Key"] for v in listed.get("Versions", [])]
    return keys


def historia_clinica(patient_id: str, encounter_id: str, condition_id: str, vitals: list[str]) -> dict[str, Any]:
    return historia_clinica_body(patient_id, encounter_id, condition_id, vitals)


def oru(*, patient: str, placer: str, obx: list[str], control: str) -> str:
    lines = [r"MSH|^~\&|LABSYS|LAB CENTRAL|EXPEDIENTE|" + CLUES + "|20261125143000-0600||ORU^R01^ORU_R01|"
             + control + "|P|2.5.1",
             f"PID|1||{patient}^^^EXPEDIENTE^MR||PÉREZ GÓMEZ^JUAN||19800101|M",
             f"ORC|RE|{placer}|F-{control}||CM",
             f"OBR|1|{placer}|F-{control}|2823-3^Potassium^LN|||20261125080000-0600||||||||||||||||||F",
             *obx]
    return "\r".join(lines) + "\r"


def potassium(value: str, *, flags: str = "") -> str:
    return f"OBX|1|NM|2823-3^Potassium^LN||{value}|mmol/L^^UCUM|3.5-5.1|{flags}|||F|||20261125080000-0600"


def flatten(values: Iterable[Iterable[str]]) -> list[str]:
    return [v for group in values for v in group]


# ------------------------------------------------------------------------------------------------ probes ---


@dataclass
class Probe:
    """One request of the walk: made with ``values`` (the tenant's ids) and, as its control, with fresh ids."""

    op: Operation
    cell: Cell
    path: str
    query: dict[str, str] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "foreign"  # foreign: compare with a missing id; search: results only the caller's; public
    fresh: dict[str, str] = field(default_factory=dict)  # unique values the control must not reuse


PARAMETERS = {"resourceType": "Parameters", "parameter": []}


def _params(**values: Any) -> dict[str, Any]:
    parts = []
    for name, value in values.items():
        kind = ("valueBoolean" if isinstance(value, bool) else "valueInteger" if isinstance(value, int)
                else "valueCode" if name == "status" else "valueString")
        parts.append({"name": name, kind: value})
    return {"resourceType": "Parameters", "parameter": parts}


def _op_body(cell: Cell, t: Tenant) -> Any:
    """A body for an instance operation: what a legitimate caller would send."""
    i = cell.interaction
    if i == Interaction.SIGN:
        return _params(overrideReason="Vigilancia estrecha") if cell.resource_type == "MedicationRequest" else None
    if i == Interaction.STATUS:
        status = "stopped" if cell.resource_type == "MedicationRequest" else "cancelled"
        return _params(status=status, reason="Solicitud duplicada")
    if i == Interaction.ACKNOWLEDGE:
        return _params(readBack="Potasio 7.1 mmol/L")
    if i == Interaction.DICOM_UPLOAD:
        return _params(size=1024)
    if i == Interaction.RELEASE:
        return _params(accession=t.extra.get("accession", "A00000000000000"), reason="número mal capturado")
    if i == Interaction.REGISTER_CERTIFICATE:
        return _params(certificate="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", proof="a..b")
    if i == Interaction.HIDE:
        return _params(reason="No se surte en la cadena")
    return PARAMETERS


INSTANCE_ID = {  # which of the tenant's ids an instance route acts on, when not the first of its type
    "MedicationRequest": lambda t: t.ids["MedicationRequest"][-1],  # the signed, dispensed one
    "Observation": lambda t: t.extra["critical_observation"],
    "Condition": lambda t: t.extra["sensitive_condition"],
}


def instance_id(t: Tenant, resource_type: str) -> str:
    if resource_type in INSTANCE_ID:
        return str(INSTANCE_ID[resource_type](t))
    if resource_type not in t.ids:
        raise LookupError(f"tenant has no {resource_type}: make one in walker.build_tenant")
    return t.first(resource_type)


def path_values(op: Operation, cell: Cell, t: Tenant, caller: Staff | None = None) -> dict[str, str]:
    """The tenant's values for the path parameters of ``op`` (the caller's own practitioner for its routes)."""
    names = re.findall(r"\{(\w+)\}", op.path)
    values: dict[str, str] = {}
    for name in names:
        if name in ("resource_id", "patient_id"):
            assert cell.resource_type is not None
            if cell.resource_type == "Practitioner" and caller is not None and caller.practitioner_id:
                values[name] = caller.practitioner_id
            else:
                values[name] = instance_id(t, cell.resource_type)
        elif name == "version":
            values[name] = "1"
        elif name == "username":
            values[name] = t.staff["physician"].caller.username
        elif name == "quarantine_id":
            values[name] = t.first("DicomQuarantine")
        elif name in ("study_uid", "series_uid", "sop_uid", "token"):
            values[name] = t.extra["receta_token" if name == "token" else name]
        else:
            raise LookupError(f"{op}: no value for path parameter {name}")
    return values


def fresh_values(values: dict[str, str]) -> dict[str, str]:
    """Values of the same shape that name nothing: the control of a probe."""
    out = {}
    for name, value in values.items():
        if name == "version":
            out[name] = value
        elif name.endswith("_uid"):
            # A valid UID: no component may start with 0 (DICOM PS3.5 9.1), or the control would be a 400.
            out[name] = ("1.2.826.0.1.3680043.8.498." + random_secrets.choice("123456789")
                         + "".join(random_secrets.choice("0123456789") for _ in range(29)))
        elif name == "username":
            out[name] = f"physician{random_secrets.randbelow(10**6)}.t-{random_id(10)}"
        elif name == "token":
            out[name] = random_secrets.token_urlsafe(16)
        else:
            out[name] = random_id(len(value)) if value.islower() else random_id(len(value)).upper()
    return out


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template)


def collection_requests(op: Operation, t: Tenant) -> list[dict[str, Any]]:
    """Requests on a type-level route (search, create, type operation) that name ``t``'s data.

    Each is ``{"query": ..., "body": ..., "headers": ...}``. Raises ``LookupError`` for a route this table
    does not know: a new route must say here how it can reach another tenant's data.
    """
    from tests.integration.orders.conftest import lab_order
    from tests.integration.prescriptions.conftest import prescription
    from tests.integration.prescriptions.test_formulary_api import local_medication

    pid, eid = t.first("Patient"), t.first("Encounter")
    order, image_order = t.ids["ServiceRequest"][0], t.ids["ServiceRequest"][-1]
    obs, note, rx = t.extra["critical_observation"], t.first("Composition"), t.ids["MedicationRequest"][-1]
    person = t.person
    curp = next(v.upper() for v, what in t.secrets.values.items() if what == "CURP")
    folio = pid.upper()
    subject = {"reference": f"Patient/{pid}"}

    def q(**query: str) -> dict[str, Any]:
        return {"query": query}

    def b(body: Any, **headers: str) -> dict[str, Any]:
        return {"body": body, "headers": headers}

    def unique(prefix: str) -> tuple[str, dict[str, str]]:
        """A value that must be new (a username, a cédula) and the control's own."""
        value, other = (f"{prefix}{random_secrets.randbelow(10**6):06d}" for _ in range(2))
        return value, {value: other}

    username, patient_username = unique("nuevo.usuario"), unique("paciente.usuario")
    cedula = unique("9")

    vital = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": LOINC,
                                                                                     "code": "8867-4"}]},
             "subject": subject, "encounter": {"reference": f"Encounter/{eid}"},
             "effectiveDateTime": "2026-11-25T10:00:00Z",
             "valueQuantity": {"value": 80, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}
    table: dict[str, list[dict[str, Any]]] = {
        "GET /fhir/Patient": [q(identifier=f"urn:oid:2.16.840.1.113883.4.629|{curp}"), q(identifier=folio),
                              q(family=person.family), q(_id=pid), q(name=person.given)],
        "POST /fhir/Patient": [
            b(patient_body(curp, family=person.family, second=person.second, given=(person.given,),
                           birth=f"19{person.birth[:2]}-{person.birth[2:4]}-{person.birth[4:]}", gender="female"),
              **{"If-None-Exist": f"identifier=urn:oid:2.16.840.1.113883.4.629|{curp}"})],
        "POST /fhir/Patient/$merge": [b({"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{t.ids['Patient'][1]}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{pid}"}}]})],
        "GET /fhir/Encounter": [q(patient=pid), q(patient=pid, _include="Encounter:patient")],
        "POST /fhir/Encounter": [b({"resourceType": "Encounter", "status": "in-progress", "subject": subject,
                                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                              "code": "AMB"}})],
        "GET /fhir/Condition": [q(patient=pid), q(encounter=eid, _include="Condition:encounter")],
        "POST /fhir/Condition": [b({"resourceType": "Condition", "subject": subject,
                                    "encounter": {"reference": f"Encounter/{eid}"},
                                    "code": {"coding": [{"system": ICD10, "code": "I10X"}]}})],
        "GET /fhir/Composition": [q(patient=pid), q(patient=pid, _include="Composition:encounter,Composition:author",
                                                    _revinclude="Provenance:target"), q(encounter=eid)],
        "POST /fhir/Composition": [b(historia_clinica(pid, eid, t.ids["Condition"][0],
                                                      [f"Observation/{o}" for o in t.ids["Observation"][:3]]))],
        "GET /fhir/Provenance": [q(target=f"Composition/{note}"), q(target=f"MedicationRequest/{rx}")],
        "GET /fhir/Observation": [q(patient=pid), q(**{"based-on": f"ServiceRequest/{order}"}),
                                  q(encounter=eid), q(subject=f"Patient/{pid}", category="vital-signs")],
        "POST /fhir/Observation": [b(vital), b({key: value for key, value in vital.items() if key != "encounter"}
                                               | {"basedOn": [{"reference": f"ServiceRequest/{order}"}]})],
        "GET /fhir/Observation/$lastn": [q(patient=pid), q(patient=pid, category="vital-signs")],
        "GET /fhir/Observation/$trend": [q(patient=pid, code=f"{LOINC}|8867-4")],
        "GET /fhir/DiagnosticReport": [q(patient=pid), q(**{"based-on": f"ServiceRequest/{order}"},
                                                         _include="DiagnosticReport:result")],
        "POST /fhir/DiagnosticReport": [b({"resourceType": "DiagnosticReport", "status": "final",
                                           "code": {"coding": [{"system": LOINC, "code": "2823-3"}]},
                                           "subject": subject, "basedOn": [{"reference": f"ServiceRequest/{order}"}],
                                           "result": [{"reference": f"Observation/{obs}"}]})],
        "GET /fhir/Communication": [q(about=f"Observation/{obs}", _include="Communication:about"), q(patient=pid)],
        "GET /fhir/Communication/$time-to-acknowledge": [q(clinic=CLUES)],
        "GET /fhir/ImagingStudy": [q(patient=pid), q(basedon=f"ServiceRequest/{image_order}")],
        "GET /fhir/ServiceRequest": [q(patient=pid), q(identifier=t.extra["accession"]),
                                     q(identifier=t.extra["placer"]), q(encounter=eid)],
        "POST /fhir/ServiceRequest": [b(lab_order(pid, eid))],
        "GET /fhir/Medication": [q(name=f"Jarabe magistral {person.family}"), q(_id=t.first("Medication"))],
        "POST /fhir/Medication": [b(local_medication(f"Jarabe magistral {person.family}"))],
        "GET /fhir/AllergyIntolerance": [q(patient=pid)],
        "POST /fhir/AllergyIntolerance": [b({"resourceType": "AllergyIntolerance", "patient": subject,
                                             "category": ["food"], "code": {"text": "Cacahuate"}})],
        "GET /fhir/MedicationRequest": [q(patient=pid)],
        "POST /fhir/MedicationRequest": [b(prescription(pid, PARACETAMOL))],
        "POST /fhir/MedicationRequest/$check": [b(prescription(pid, SIMVASTATIN))],
        "GET /fhir/DetectedIssue": [q(patient=pid), q(implicated=f"MedicationRequest/{rx}")],
        "GET /fhir/MedicationDispense": [q(patient=pid), q(prescription=rx)],
        "POST /fhir/MedicationDispense": [b({"resourceType": "MedicationDispense", "authorizingPrescription": [
            {"reference": f"MedicationRequest/{rx}"}]})],
        "GET /fhir/Organization": [q(partof=f"Organization/{t.ids['Organization'][1]}"),
                                   q(_id=t.first("Organization"))],
        "POST /fhir/Organization": [b({"resourceType": "Organization", "name": "Clínica Norte", "active": True,
                                       "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.631",
                                                       "value": "HGIMB000163"}],
                                       "partOf": {"reference": f"Organization/{t.ids['Organization'][1]}"}})],
        "GET /fhir/Practitioner": [q(_id=t.first("Practitioner"))],
        "POST /fhir/Practitioner": [b({"resourceType": "Practitioner", "active": True,
                                       "name": [{"family": "Ortega", "given": ["Ana"]}],
                                       "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.215.12.18",
                                                       "value": cedula[0]}]}) | {"fresh": cedula[1]}],
        "GET /fhir/AuditEvent": [q(patient=f"Patient/{pid}"), q(entity=f"Composition/{note}"),
                                 q(agent=t.staff["physician"].caller.user_id)],
        "GET /fhir/AuditEvent/$verify": [q(), q(patient=f"Patient/{pid}")],
        "GET /admin/users": [q(), q(role="physician")],
        "POST /admin/users": [b({"username": username[0], "role": "physician", "email": "nuevo@example.com",
                                 "clinic_ids": [CLUES], "practitioner_id": t.first("Practitioner")},
                                **{"Content-Type": "application/json"}) | {"fresh": username[1]},
                              b({"username": patient_username[0], "role": "patient",
                                 "email": "paciente@example.com", "patient_id": pid},
                                **{"Content-Type": "application/json"}) | {"fresh": patient_username[1]}],
        "GET /admin/critical-results": [q()],
        "PUT /admin/critical-results": [b({"onCall": {CLUES: [f"Practitioner/{t.first('Practitioner')}"]}})],
        "GET /admin/dicom-quarantine": [q()],
        "GET /dicomweb/studies": [q(StudyInstanceUID=t.extra["study_uid"]), q(AccessionNumber=t.extra["accession"]),
                                  q(PatientID=pid), q()],
        "POST /hl7v2": [b(oru(patient=pid, placer=t.extra["placer"], control=t.extra["control"],
                              obx=[potassium("4.4")]))],
    }
    key = str(op)
    if key not in table:
        raise LookupError(f"{op}: add how this route can name another tenant's data to walker.collection_requests")
    return table[key]


def requests_for(op: Operation, t: Tenant, caller: Staff | None = None) -> list[Probe]:
    """Every request the walk makes on ``op``, naming ``t``'s data (ids, references, identifiers)."""
    cell = classify(op)
    if cell.public:
        values = path_values(op, cell, t, caller)
        return [Probe(op, cell, fill(op.path, values), kind="public")]
    if "{" not in op.path:
        return [Probe(op, cell, op.path, query=r.get("query") or None, body=r.get("body"),
                      headers=dict(r.get("headers") or {}),
                      kind="search" if op.method == "GET" else "foreign", fresh=dict(r.get("fresh") or {}))
                for r in collection_requests(op, t)]
    values = path_values(op, cell, t, caller)
    path = fill(op.path, values)
    headers: dict[str, str] = {}
    body: Any = None
    if op.method == "PUT":
        headers["If-Match"] = 'W/"1"'
        if cell.resource_type == "User":
            body, headers["Content-Type"] = {"clinic_ids": [CLUES]}, "application/json"
        else:
            assert cell.resource_type is not None
            body = dict(t.resources.get(cell.resource_type) or {"resourceType": cell.resource_type,
                                                                 "id": values.get("resource_id")})
    elif op.method == "POST":
        body = _op_body(cell, t)
        if cell.interaction in (Interaction.SIGN, Interaction.STATUS):
            headers["If-Match"] = 'W/"1"'
    return [Probe(op, cell, path, body=body, headers=headers)]


def fresh_curp(curp: str) -> str:
    """A valid CURP of the same person-shape that is not ``curp``."""
    for digit in "0123456789":
        candidate = make_curp(prefix=curp[:4], birth=curp[4:10], sex=curp[10], state=curp[11:13],
                              consonants=curp[13:16], differentiator=digit)
        if candidate != curp.upper():
            return candidate
    raise AssertionError("unreachable")


@dataclass
class Substitution:
    """Every id-like value of one tenant, each with a fresh value of the same shape (the control)."""

    pairs: dict[str, str]

    @classmethod
    def of(cls, t: Tenant) -> Substitution:
        pairs: dict[str, str] = {}
        for kind, values in t.ids.items():
            for value in values:
                if kind == "User":
                    pairs[value] = f"usuario{random_secrets.randbelow(10**8)}.t-{random_id(10)}"
                else:
                    pairs[value] = random_id(len(value))
                    pairs[value.upper()] = pairs[value].upper()
        for name, value in t.extra.items():
            if name.endswith("_uid"):
                pairs[value] = fresh_values({name: value})[name]
            elif name in ("placer", "accession", "control"):
                pairs[value] = value[:-7] + random_id(7).upper()
            elif name == "receta_token":
                pairs[value] = random_secrets.token_urlsafe(16)
        for value, what in t.secrets.values.items():
            if what == "CURP":
                pairs[value.upper()] = fresh_curp(value.upper())
        pairs[t.staff["physician"].caller.user_id] = "00000000-0000-4000-8000-" + random_id(12).replace(
            "a", "0")[:12]
        return cls({k: v for k, v in pairs.items() if len(k) >= 8})

    def apply(self, value: Any) -> Any:
        text = json.dumps(value, ensure_ascii=False)
        for old in sorted(self.pairs, key=len, reverse=True):
            text = text.replace(old, self.pairs[old])
        return json.loads(text)

    def mask(self, value: Any, *, control: bool) -> Any:
        """``value`` with the tenant's values (or, for a control, their fresh stand-ins) replaced by ``<id>``."""
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        olds = self.pairs.values() if control else self.pairs.keys()
        for old in sorted(olds, key=len, reverse=True):
            text = re.sub(re.escape(old), "<id>", text, flags=re.IGNORECASE)
        return json.loads(text)


def send(caller: Staff, probe: Probe, path: str | None = None, query: dict[str, str] | None = None,
         body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """Make ``probe`` as ``caller`` (optionally with its parts replaced)."""
    return fn_call(caller, probe.cell.function, probe.op.method, path or probe.path,
                   body if body is not None else probe.body,
                   query=query if query is not None else probe.query,
                   headers={**probe.headers, **(headers or {})})


def caller_for(cell: Cell, t: Tenant) -> Staff:
    """A user of ``t`` whose role the table grants the cell (so the tenant check, not a 403, answers)."""
    for role in roles_allowed(cell):
        if str(role) in t.staff:
            return t.staff[str(role)]
    return t.staff["physician"]


def outcome_shape(reply: Reply) -> Any:
    """What must not differ between another tenant's id and a missing one."""
    body = reply.body
    if reply.status < 300:
        return (reply.status, body.get("resourceType") if isinstance(body, dict) else type(body).__name__)
    return reply.status, body


def dynamo_items() -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of every table, by (table, key): what the walk's writes are checked against."""
    from tests.support.aws import table_name

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for table in definitions.TABLES:
        kwargs: dict[str, Any] = {"TableName": table_name(table.id)}
        while True:
            page = dynamodb.scan(**kwargs)
            for item in page.get("Items", []):
                key = json.dumps({k: item[k] for k in (table.pk, table.sk) if k and k in item}, sort_keys=True)
                items[(table.id, key)] = item
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def placeholder_tenant() -> Tenant:
    """A tenant of made-up values, to check the walk's tables without building a world."""
    from tests.integration.admin.conftest import Caller

    staff = {str(role): Staff(Caller({"sub": random_id(), "cognito:groups": str(role)}, f"{role}1.t-placeholder"),
                              random_id()) for role in Role}
    ids = {kind: [random_id() for _ in range(3)] for kind in (*PERMISSIONS, "Provenance")}
    extra = {"critical_observation": random_id(), "sensitive_condition": random_id(), "placer": "L20261126ABCDEFG",
             "accession": "A20261126ABCDEFG", "control": "LABA00001", "receta_token": "x" * 22,
             "study_uid": "1.2.3.4.5", "series_uid": "1.2.3.4.6", "sop_uid": "1.2.3.4.7"}
    secrets = Secrets({make_curp().lower(): "CURP"})
    return Tenant(None, staff, ids, {}, secrets, extra, PEOPLE["a"])  # type: ignore[arg-type]
