"""Demo tenants, clinics, practitioners and users, created through the product.

Nothing here writes a table. A tenant and its first admin come from the operator command
(``ops.tenants.create_tenant``); as that admin, the seed then creates over the HTTP API the
clinics (``POST /fhir/Organization``) and practitioners (``POST /fhir/Practitioner``); as the
tenant's receptionist, one demo patient (``POST /fhir/Patient``), whose record the ``patient``
account is linked to; and one user per role (``POST /admin/users``). As the operator again, it
sets each user's known password (``AdminSetUserPassword`` with ``Permanent=True``) so no
new-password challenge comes up.

**Local demo only**: every demo user has the password ``DEMO_PASSWORD``, printed by
``python -m local`` and written to ``.local/stack.json``. The clinic chains and the practitioners
and the patients (with CURPs built to be valid, check digit included) are fictitious; the
clinics use real CLUES keys from ``local/data/clues_sample_pahtli_hgo.json``
(see ``local/data/SOURCES.md``). Logs name tenants by id and users by username only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import requests

from infra.definitions import ROLES, SIGNING_ROLES, TABLES
from local.auth import password_login
from local.aws import LocalAws, temporary_environ

logger = logging.getLogger(__name__)

DEMO_PASSWORD = "Expediente-Demo-2026!"
CLUES_FILE = Path(__file__).with_name("data") / "clues_sample_pahtli_hgo.json"
# Identifier systems (OIDs of the DGIS CDA templates; shared/design/domain.md).
CLUES_SYSTEM = "urn:oid:2.16.840.1.113883.4.631"
CEDULA_SYSTEM = "urn:oid:2.16.840.1.113883.3.215.12.18"
CURP_SYSTEM = "urn:oid:2.16.840.1.113883.4.629"
FATHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family"
MOTHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"
FHIR_JSON = "application/fhir+json"
_HTTP_TIMEOUT_S = 30


class SeedError(Exception):
    """A step of the seed failed; the message names the step and what the API answered."""


@dataclass(frozen=True)
class DemoPractitioner:
    """A fictitious practitioner; ``cedula`` is a made-up 7- or 8-digit cédula profesional."""

    role: str
    given: str
    family: str
    cedula: str


@dataclass(frozen=True)
class DemoPatient:
    """A fictitious patient; ``curp`` agrees with the name, birth date, sex and state (Hidalgo)."""

    curp: str
    given: str
    first_surname: str
    second_surname: str
    birth_date: str
    gender: str


@dataclass(frozen=True)
class DemoTenant:
    """A fictitious clinic chain. ``slug`` prefixes its usernames (``<slug>.<role>``).

    ``patient`` is the record the tenant's ``patient`` account is linked to.
    """

    slug: str
    name: str
    clinics: tuple[str, ...]
    practitioners: tuple[DemoPractitioner, ...]
    patient: DemoPatient

    def username(self, role: str) -> str:
        return f"{self.slug}.{role}"

    def email(self, role: str) -> str:
        return f"{self.slug}.{role}@example.com"


DEMO_TENANTS: tuple[DemoTenant, ...] = (
    DemoTenant(
        slug="actopan",
        name="Red Clínica Demo Actopan",
        clinics=("HGIMB000151", "HGIMB000163"),
        practitioners=(
            DemoPractitioner("physician", "Lucía", "Hernández Ortega", "10000001"),
            DemoPractitioner("nurse", "Rosa María", "Téllez Ramírez", "10000002"),
            DemoPractitioner("pharmacist", "Jorge", "Islas Cruz", "10000003"),
            DemoPractitioner("lab", "Mariana", "Pérez Vargas", "10000004"),
            DemoPractitioner("radiology", "Ernesto", "Gómez Ángeles", "10000005"),
        ),
        patient=DemoPatient("GAPL850312MHGRRC04", "LUCÍA", "GARCÍA", "PÉREZ", "1985-03-12", "female"),
    ),
    DemoTenant(
        slug="pachuca",
        name="Clínicas Demo Pachuca",
        clinics=("HGCRO000032",),
        practitioners=(
            DemoPractitioner("physician", "Andrés", "Olvera Castillo", "2000001"),
            DemoPractitioner("nurse", "Guadalupe", "Monroy Sánchez", "2000002"),
            DemoPractitioner("pharmacist", "Patricia", "Zúñiga León", "2000003"),
            DemoPractitioner("lab", "Ricardo", "Mendoza Trejo", "2000004"),
            DemoPractitioner("radiology", "Daniela", "Rivera Soto", "2000005"),
        ),
        patient=DemoPatient("ROMJ790921HHGDRN04", "JUAN", "RODRÍGUEZ", "MÁRQUEZ", "1979-09-21", "male"),
    ),
)


@dataclass(frozen=True)
class SeededClinic:
    id: str
    clues: str
    name: str


@dataclass(frozen=True)
class SeededUser:
    username: str
    password: str
    role: str
    practitioner_id: str | None = None
    patient_id: str | None = None


@dataclass(frozen=True)
class SeededTenant:
    id: str
    name: str
    organization_id: str
    clinics: tuple[SeededClinic, ...] = ()
    users: tuple[SeededUser, ...] = ()
    patient_ids: tuple[str, ...] = ()

    def user(self, role: str) -> SeededUser:
        """The demo user with ``role`` (raises KeyError)."""
        for user in self.users:
            if user.role == role:
                return user
        raise KeyError(f"tenant {self.id} has no demo user with role {role!r}")


class CreatedTenant(Protocol):
    """What ``ops.tenants.create_tenant`` returns."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def organization_id(self) -> str: ...

    @property
    def admin_username(self) -> str: ...


TenantCreator = Callable[..., CreatedTenant]


@cache
def clues_catalogue() -> dict[str, dict[str, Any]]:
    """The CLUES sample shipped in ``local/data``, by CLUES key."""
    records = json.loads(CLUES_FILE.read_text(encoding="utf-8"))
    return {record["clues"]: record for record in records}


def ops_tenant_creator(local_aws: LocalAws) -> TenantCreator:
    """``ops.tenants.create_tenant`` bound to the local stack (raises SeedError if ops is missing).

    The operator command gets a ``StackInfo`` naming the embedded AWS as its ``endpoint_url``
    and a session with the fake credentials. It runs with the admin function's environment
    applied too, so that a default client made on the way would also reach the embedded AWS,
    never a real account. Its domain errors (a refused name or username) become SeedError.
    """
    try:
        from expediente.errors import DomainError
        from ops.tenants import StackInfo, create_tenant
    except ImportError as error:
        raise SeedError(f"the operator command ops.tenants is not available: {error}") from error

    offered = {
        "region": local_aws.region,
        "user_pool_id": local_aws.user_pool_id,
        "user_pool_client_id": local_aws.user_pool_client_id,
        "key_app_arn": local_aws.key_app_arn,
        "event_bus_name": local_aws.event_bus_name,
        "endpoint_url": local_aws.endpoint,
        # StackInfo names its table fields after TableDef.env (TABLE_ADMIN -> table_admin).
        **{table.env.lower(): local_aws.tables[table.id] for table in TABLES},
    }
    accepted = {f.name for f in dataclasses.fields(StackInfo)}
    stack = StackInfo(**{name: value for name, value in offered.items() if name in accepted})

    def create(**arguments: Any) -> CreatedTenant:
        try:
            with temporary_environ(local_aws.function_env("admin")):
                created: CreatedTenant = create_tenant(session=local_aws.session(), stack=stack, **arguments)
        except DomainError as error:
            raise SeedError(f"ops.tenants.create_tenant refused: {error}") from error
        return created

    return create


def seed(
    local_aws: LocalAws,
    api_url: str,
    *,
    tenants: Sequence[DemoTenant] = DEMO_TENANTS,
    create_tenant: TenantCreator | None = None,
) -> list[SeededTenant]:
    """Create the demo ``tenants`` through the operator command and the API at ``api_url``.

    ``create_tenant`` defaults to ``ops_tenant_creator(local_aws)``. Raises SeedError when a
    step is refused (with the API's status and diagnostics) and botocore's ClientError when
    Cognito refuses an operator call.
    """
    creator = create_tenant or ops_tenant_creator(local_aws)
    return [_seed_tenant(local_aws, api_url, tenant, creator) for tenant in tenants]


def _seed_tenant(local_aws: LocalAws, api_url: str, demo: DemoTenant, creator: TenantCreator) -> SeededTenant:
    cognito = local_aws.client("cognito-idp")
    admin_username = demo.username("admin")
    created = creator(
        name=demo.name, admin_username=admin_username, admin_email=demo.email("admin"), admin_password=DEMO_PASSWORD
    )
    tenant_id = created.tenant_id
    logger.info("seed: tenant %s created with admin %s", tenant_id, created.admin_username)
    _set_password(cognito, local_aws, created.admin_username)
    api = _ApiClient(api_url, _id_token(local_aws, created.admin_username))

    clinics = tuple(_create_clinic(api, clues, created.organization_id) for clues in demo.clinics)
    clinic_keys = [clinic.clues for clinic in clinics]
    practitioners = {p.role: _create_practitioner(api, p) for p in demo.practitioners}
    links: dict[str, dict[str, str]] = {role: {"practitioner_id": pid} for role, pid in practitioners.items()}

    users = [SeededUser(created.admin_username, DEMO_PASSWORD, "admin")]
    patient_ids: list[str] = []
    # The patient's record is registered by the tenant's reception, so that account comes first.
    ordered = [role for role in ROLES if role not in ("admin", "patient")] + ["patient"]
    for role in ordered:
        if role == "patient":
            reception = _ApiClient(api_url, _id_token(local_aws, demo.username("reception")))
            patient_id = _create_patient(reception, demo.patient)
            patient_ids.append(patient_id)
            links["patient"] = {"patient_id": patient_id}
        if role in SIGNING_ROLES and role not in practitioners:
            raise SeedError(f"demo tenant {demo.slug} has no practitioner for the signing role {role}")
        username = demo.username(role)
        request: dict[str, Any] = {
            "username": username,
            "email": demo.email(role),
            "role": role,
            # A patient account sees its own record from any clinic: it works in none.
            "clinic_ids": [] if role == "patient" else clinic_keys,
            **links.get(role, {}),
        }
        api.post("/admin/users", request, what=f"user {username}", content_type="application/json")
        _set_password(cognito, local_aws, username)
        users.append(SeededUser(username, DEMO_PASSWORD, role, **links.get(role, {})))
    logger.info(
        "seed: tenant %s has %d clinics, %d practitioners, %d users",
        tenant_id, len(clinics), len(practitioners), len(users),
    )
    return SeededTenant(tenant_id, demo.name, created.organization_id, clinics, tuple(users), tuple(patient_ids))


def _create_clinic(api: _ApiClient, clues: str, organization_id: str) -> SeededClinic:
    record = clues_catalogue().get(clues)
    if record is None:
        raise SeedError(f"CLUES {clues} is not in {CLUES_FILE.name}")
    organization = {
        "resourceType": "Organization",
        "active": True,
        "identifier": [{"system": CLUES_SYSTEM, "value": clues}],
        "name": record["nombre"],
        "partOf": {"reference": f"Organization/{organization_id}"},
    }
    created = api.post("/fhir/Organization", organization, what=f"clinic {clues}")
    return SeededClinic(id=_resource_id(created, f"clinic {clues}"), clues=clues, name=record["nombre"])


def _create_practitioner(api: _ApiClient, practitioner: DemoPractitioner) -> str:
    resource = {
        "resourceType": "Practitioner",
        "active": True,
        "identifier": [{"system": CEDULA_SYSTEM, "value": practitioner.cedula}],
        "name": [{"use": "official", "family": practitioner.family, "given": practitioner.given.split()}],
    }
    what = f"practitioner for role {practitioner.role}"
    return _resource_id(api.post("/fhir/Practitioner", resource, what=what), what)


def _create_patient(api: _ApiClient, patient: DemoPatient) -> str:
    resource = {
        "resourceType": "Patient",
        "active": True,
        "identifier": [{"use": "official", "system": CURP_SYSTEM, "value": patient.curp}],
        "name": [
            {
                "use": "official",
                "family": f"{patient.first_surname} {patient.second_surname}",
                "_family": {
                    "extension": [
                        {"url": FATHERS_FAMILY, "valueString": patient.first_surname},
                        {"url": MOTHERS_FAMILY, "valueString": patient.second_surname},
                    ]
                },
                "given": patient.given.split(),
            }
        ],
        "gender": patient.gender,
        "birthDate": patient.birth_date,
    }
    return _resource_id(api.post("/fhir/Patient", resource, what="the demo patient"), "the demo patient")


def _resource_id(resource: dict[str, Any], what: str) -> str:
    resource_id = resource.get("id")
    if not isinstance(resource_id, str) or not resource_id:
        raise SeedError(f"the API created {what} but answered without an id")
    return resource_id


def _set_password(cognito: Any, local_aws: LocalAws, username: str) -> None:
    cognito.admin_set_user_password(
        UserPoolId=local_aws.user_pool_id, Username=username, Password=DEMO_PASSWORD, Permanent=True
    )


def _id_token(local_aws: LocalAws, username: str) -> str:
    return password_login(
        endpoint=local_aws.endpoint,
        region=local_aws.region,
        client_id=local_aws.user_pool_client_id,
        username=username,
        password=DEMO_PASSWORD,
        session=local_aws.session(),
    ).id_token


class _ApiClient:
    """POSTs to the front door as one user."""

    def __init__(self, api_url: str, id_token: str) -> None:
        self._api_url = api_url
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {id_token}"

    def post(self, path: str, body: dict[str, Any], *, what: str, content_type: str = FHIR_JSON) -> dict[str, Any]:
        response = self._session.post(
            f"{self._api_url}{path}",
            data=json.dumps(body),
            headers={"Content-Type": content_type, "Accept": FHIR_JSON},
            timeout=_HTTP_TIMEOUT_S,
        )
        if response.status_code not in (200, 201):
            raise SeedError(f"POST {path} for {what} answered {response.status_code}: {_diagnostics(response)}")
        answer = response.json() if response.content else {}
        return answer if isinstance(answer, dict) else {}


def _diagnostics(response: requests.Response) -> str:
    """The issues of an OperationOutcome, or the start of whatever else came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(
            f"{issue.get('code')}: {issue.get('diagnostics') or issue.get('details', {}).get('text', '')}"
            for issue in body.get("issue", [])
        )
    return json.dumps(body)[:300]
