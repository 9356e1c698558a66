"""``GET /fhir/Patient/{id}`` through the local stack against a bare ``GetItem`` on the same endpoint."""

from __future__ import annotations

import statistics
import time

import boto3
import requests

from local.stack import LocalStack
from tests.support.curp import make_curp


def _token(doc: dict, username: str, password: str) -> str:
    cognito = boto3.client("cognito-idp", endpoint_url=doc["aws_endpoint"], region_name=doc["region"],
                           aws_access_key_id="local", aws_secret_access_key="local")
    result = cognito.initiate_auth(ClientId=doc["user_pool_client_id"], AuthFlow="USER_PASSWORD_AUTH",
                                   AuthParameters={"USERNAME": username, "PASSWORD": password})
    return str(result["AuthenticationResult"]["IdToken"])


def run(requests_count: int = 300, **_: object) -> str:
    with LocalStack(aws_port=0, api_port=0, stack_file=None) as stack:
        doc = stack.document()
        user = next(u for u in doc["tenants"][0]["users"] if u["role"] == "reception")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {_token(doc, user['username'], user['password'])}"
        body = {"resourceType": "Patient", "name": [{"family": "PEREZ", "given": ["JUAN"]}],
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.629", "value": make_curp(prefix="BEAM")}],
                "birthDate": "1980-01-01", "gender": "male"}
        created = session.post(f"{doc['api_url']}/fhir/Patient", json=body, timeout=10)
        created.raise_for_status()
        pid = created.json()["id"]
        url = f"{doc['api_url']}/fhir/Patient/{pid}"
        dynamodb = boto3.client("dynamodb", endpoint_url=doc["aws_endpoint"], region_name=doc["region"],
                                aws_access_key_id="local", aws_secret_access_key="local")
        table = stack.aws.tables["patients"] if stack.aws else ""
        key = {"pk": {"S": f"{doc['tenants'][0]['id']}#Patient#{pid}"}, "sk": {"S": "CURRENT"}}
        for _ in range(20):  # warm both paths
            session.get(url, timeout=10).raise_for_status()
            dynamodb.get_item(TableName=table, Key=key)
        api, bare = [], []
        for _ in range(requests_count):
            started = time.perf_counter()
            response = session.get(url, timeout=10)
            api.append(time.perf_counter() - started)
            assert response.status_code == 200
            started = time.perf_counter()
            assert "Item" in dynamodb.get_item(TableName=table, Key=key)
            bare.append(time.perf_counter() - started)
    api_p50, bare_p50 = statistics.median(api), statistics.median(bare)
    ratio = api_p50 / bare_p50
    return "\n".join([
        f"### `GET /fhir/Patient/{{id}}` through the local stack ({requests_count} requests, alternating)",
        "",
        "| path | p50 | p95 |",
        "|---|---|---|",
        f"| HTTP front door → JWT check → handler → GetItem + audit PutItem | {api_p50 * 1000:.2f} ms | "
        f"{statistics.quantiles(api, n=20)[18] * 1000:.2f} ms |",
        f"| bare `GetItem` on the same endpoint | {bare_p50 * 1000:.2f} ms | "
        f"{statistics.quantiles(bare, n=20)[18] * 1000:.2f} ms |",
        "",
        f"Ratio of p50s: **{ratio:.2f}** (target ≤ 3.0: {'met' if ratio <= 3.0 else 'not met'}).",
    ])
