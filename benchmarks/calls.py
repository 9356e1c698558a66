"""AWS calls per request, counted: read, create, search, once warm."""

from __future__ import annotations

from benchmarks.harness import call, counters, world
from tests.support.curp import make_curp


def _body(curp: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": curp}],
            "name": [{"family": "PEREZ", "given": ["JUAN"]}], "birthDate": "1980-01-01", "gender": "male"}


def run() -> str:
    with world():
        status, first = call("POST", "/fhir/Patient", body=_body(make_curp(prefix="WAAM")))
        assert status == 201
        call("GET", f"/fhir/Patient/{first['id']}")  # warm: keys unwrapped and cached
        calls = counters()
        rows = []
        for label, args in (
            ("read `GET /Patient/{id}`", ("GET", f"/fhir/Patient/{first['id']}", {})),
            ("create `POST /Patient`", ("POST", "/fhir/Patient", {"body": _body(make_curp(prefix="CAAM"))})),
            ("create with `Idempotency-Key`", ("POST", "/fhir/Patient",
                                               {"body": _body(make_curp(prefix="CEAM")),
                                                "headers": {"Idempotency-Key": "bench-1"}})),
            ("search `?family=perez`", ("GET", "/fhir/Patient", {"query": {"family": "perez"}})),
            ("search `?identifier=<CURP>`", ("GET", "/fhir/Patient",
                                             {"query": {"identifier": first["identifier"][0]["value"]}})),
        ):
            calls.reset()
            method, path, kwargs = args
            status, _ = call(method, path, **kwargs)
            ops = ", ".join(f"{op} ×{n}" for op, n in sorted(calls.ops.items()))
            kms = sum(n for op, n in calls.ops.items() if op.startswith("kms:"))
            rows.append(f"| {label} | {status} | {sum(calls.ops.values())} | {kms} | {ops} |")
    return "\n".join([
        "### AWS calls per request (warm process, counted with botocore hooks)",
        "",
        "| request | status | AWS calls | KMS calls | operations |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "A read is one `GetItem` plus one audit `PutItem`; a create is one `TransactWriteItems` "
        "(resource, version, CURP and folio guards, index items, audit; a taken CURP fails the guard's "
        "condition, and only then is the guard read to name the existing record), plus the `PutEvents` "
        "of `PatientRegistered`; with an `Idempotency-Key` "
        "Powertools adds its record (`PutItem` in progress, `UpdateItem` completed). A search that finds "
        "several patients writes its audit record with one `BatchWriteItem` (the record plus a copy in each "
        "found patient's trail); finding one patient, one `PutItem`.",
    ])
