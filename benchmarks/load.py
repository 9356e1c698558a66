"""A bounded load on the local stack: several threads, several tenants, mixed reads and writes, loopback only.

Each worker is one tenant's receptionist and nurse (the seeded demo users). A step is, at random
(seeded, so runs are comparable): register a patient (``POST /fhir/Patient``), record a vital sign
for a patient registered earlier (``POST /fhir/Observation``), read a patient or an observation back,
or search the tenant's patients. Only 429 and 503 (throttling) are acceptable errors. Afterwards every
``201`` is read back by its tenant (and must be found, whole) and, for a sample, by another tenant
(and must not be: 404). The section prints requests, throughput, error counts and p50/p99 per kind.
"""

from __future__ import annotations

import collections
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

FHIR_JSON = "application/fhir+json"
THROTTLING = {429, 503}
_NAMES = ("ANA", "LUIS", "MARÍA", "JOSÉ", "ELENA", "PEDRO", "SOFÍA", "DIEGO")


@dataclass(frozen=True)
class TenantUsers:
    tenant: str
    reception_token: str
    nurse_token: str


@dataclass
class LoadResult:
    duration_s: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    created: list[tuple[str, str, str]] = field(default_factory=list)  # (tenant, resource type, id)
    lost: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    duplicates: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def throttled(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in THROTTLING)

    def ok(self) -> bool:
        return not (self.unexpected or self.lost or self.leaked or self.duplicates)


def _session(base_url: str, token: str) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
    session.trust_env = False  # loopback only: never through a proxy from the environment
    session.base_url = base_url  # type: ignore[attr-defined]
    return session


def _patient(rng: random.Random) -> dict[str, Any]:
    return {"resourceType": "Patient", "gender": rng.choice(["female", "male"]),
            "name": [{"family": "CARGA PRUEBA", "given": [rng.choice(_NAMES)]}],
            "birthDate": f"{rng.randint(1940, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}


def _vital(patient_id: str, rng: random.Random) -> dict[str, Any]:
    return {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {"value": rng.randint(50, 110), "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


class _Worker:
    def __init__(self, base_url: str, users: TenantUsers, result: LoadResult, lock: threading.Lock, seed: int):
        self.url, self.users, self.result, self.lock = base_url, users, result, lock
        self.reception = _session(base_url, users.reception_token)
        self.nurse = _session(base_url, users.nurse_token)
        self.rng = random.Random(seed)
        self.patients: list[str] = []
        self.observations: list[str] = []

    def _call(self, kind: str, session: requests.Session, method: str, path: str, body: Any = None
              ) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = session.request(method, f"{self.url}{path}", json=body, timeout=30)
        except requests.RequestException as exc:
            with self.lock:
                self.result.unexpected.append(f"{kind}: {type(exc).__name__}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.result.latencies[kind].append(elapsed)
            self.result.statuses[response.status_code] += 1
            if response.status_code >= 400 and response.status_code not in THROTTLING:
                self.result.unexpected.append(f"{kind}: {response.status_code} {response.text[:200]}")
            if response.status_code in THROTTLING and not response.headers.get("Retry-After"):
                self.result.unexpected.append(f"{kind}: {response.status_code} without Retry-After")
        return response

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.35 or not self.patients:
            response = self._call("create Patient", self.reception, "POST", "/fhir/Patient", _patient(self.rng))
            if response is not None and response.status_code == 201:
                self.patients.append(response.json()["id"])
                with self.lock:
                    self.result.created.append((self.users.tenant, "Patient", self.patients[-1]))
        elif roll < 0.55:
            patient = self.rng.choice(self.patients)
            response = self._call("create Observation", self.nurse, "POST", "/fhir/Observation",
                                  _vital(patient, self.rng))
            if response is not None and response.status_code == 201:
                self.observations.append(response.json()["id"])
                with self.lock:
                    self.result.created.append((self.users.tenant, "Observation", self.observations[-1]))
        elif roll < 0.8:
            self._call("read Patient", self.reception, "GET", f"/fhir/Patient/{self.rng.choice(self.patients)}")
        elif roll < 0.9 and self.observations:
            self._call("read Observation", self.nurse, "GET",
                       f"/fhir/Observation/{self.rng.choice(self.observations)}")
        else:
            self._call("search Patient", self.reception, "GET", "/fhir/Patient?family=CARGA&_count=10")


def run_load(base_url: str, tenants: list[TenantUsers], *, threads: int, seconds: float,
             max_requests: int | None = None, seed: int = 7) -> LoadResult:
    """Drive the stack at ``base_url`` (must be loopback) and check every write afterwards."""
    if not base_url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("the load test only runs against the local stack on the loopback interface")
    result, lock = LoadResult(), threading.Lock()
    workers = [_Worker(base_url, tenants[n % len(tenants)], result, lock, seed + n) for n in range(threads)]
    deadline = time.perf_counter() + seconds

    def drive(worker: _Worker) -> None:
        while time.perf_counter() < deadline and (max_requests is None or result.requests < max_requests):
            worker.step()

    started = time.perf_counter()
    pool = [threading.Thread(target=drive, args=(w,), name=f"load-{n}") for n, w in enumerate(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.duration_s = time.perf_counter() - started
    _verify(base_url, tenants, result)
    return result


def _verify(base_url: str, tenants: list[TenantUsers], result: LoadResult) -> None:
    """Every 201 is readable by its tenant; no id was answered twice; another tenant gets 404."""
    seen = collections.Counter((t, kind, rid) for t, kind, rid in result.created)
    result.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    by_tenant = {t.tenant: t for t in tenants}
    for index, (tenant, kind, rid) in enumerate(result.created):
        users = by_tenant[tenant]
        session = _session(base_url, users.reception_token if kind == "Patient" else users.nurse_token)
        response = session.get(f"{base_url}/fhir/{kind}/{rid}", timeout=30)
        while response.status_code in THROTTLING:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            response = session.get(f"{base_url}/fhir/{kind}/{rid}", timeout=30)
        if response.status_code != 200 or response.json().get("id") != rid:
            result.lost.append(f"{kind}/{rid} of {tenant}: {response.status_code}")
        if len(tenants) > 1 and index % 10 == 0:
            other = next(t for t in tenants if t.tenant != tenant)
            foreign = _session(base_url, other.reception_token if kind == "Patient" else other.nurse_token)
            if foreign.get(f"{base_url}/fhir/{kind}/{rid}", timeout=30).status_code != 404:
                result.leaked.append(f"{kind}/{rid} of {tenant} visible to {other.tenant}")


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def report(result: LoadResult, *, threads: int, tenants: int) -> str:
    """The section's Markdown: totals, then p50/p99 per kind of request."""
    rows = [f"| {kind} | {len(values)} | {_quantile(values, 0.5) * 1000:.1f} ms | "
            f"{_quantile(values, 0.99) * 1000:.1f} ms |" for kind, values in sorted(result.latencies.items())]
    errors = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()) if status >= 400) or "none"
    writes = collections.Counter(kind for _, kind, _ in result.created)
    return "\n".join([
        f"### Load on the local stack ({threads} threads, {tenants} tenants, {result.duration_s:.0f} s, mixed)",
        "",
        f"{result.requests} requests, **{result.requests / max(result.duration_s, 1e-9):.1f} requests/s**; "
        f"error responses: {errors}; unexpected: {len(result.unexpected)}. "
        f"Writes answered 201: {writes['Patient']} patients, {writes['Observation']} observations; "
        f"read back afterwards: {len(result.created) - len(result.lost)} of {len(result.created)} "
        f"(**{len(result.lost)} lost**, {result.duplicates} duplicate ids, {len(result.leaked)} visible to "
        "another tenant).",
        "",
        "| request | count | p50 | p99 |",
        "|---|---|---|---|",
        *rows,
        "",
        "The local front door runs one handler at a time (like one warm Lambda instance per function, in one "
        "process), so throughput is the embedded AWS's, not AWS's; the figures that must not move are the zeros.",
    ])


def run(threads: int = 8, seconds: float = 45.0, **_: object) -> str:
    """The benchmark section: its own local stack with the demo tenants, then the load."""
    from local.stack import LocalStack

    with LocalStack(aws_port=0, api_port=0, stack_file=None) as stack:
        doc = stack.document()
        users = [TenantUsers(t["id"], _token(doc, t, "reception"), _token(doc, t, "nurse")) for t in doc["tenants"]]
        result = run_load(doc["api_url"], users, threads=threads, seconds=seconds)
    return report(result, threads=threads, tenants=len(users))


def _token(doc: dict[str, Any], tenant: dict[str, Any], role: str) -> str:
    import boto3

    user = next(u for u in tenant["users"] if u["role"] == role)
    cognito = boto3.client("cognito-idp", endpoint_url=doc["aws_endpoint"], region_name=doc["region"],
                           aws_access_key_id="local", aws_secret_access_key="local")
    result = cognito.initiate_auth(ClientId=doc["user_pool_client_id"], AuthFlow="USER_PASSWORD_AUTH",
                                   AuthParameters={"USERNAME": user["username"], "PASSWORD": user["password"]})
    return str(result["AuthenticationResult"]["IdToken"])


if __name__ == "__main__":
    import sys

    sys.stdout.write(run(threads=int(sys.argv[1]) if len(sys.argv) > 1 else 8,
                         seconds=float(sys.argv[2]) if len(sys.argv) > 2 else 45.0) + "\n")
