"""A fault at every AWS call of every write route: full success or a clean 503 that leaves no trace.

What each run checks, and how it stays fast, is in :mod:`tests.integration.faults.sweep`. The routes are
spread over this file and ``test_write_faults_<group>.py`` (:data:`sweep.GROUPS`) so that xdist runs
them on several workers; this file holds the record routes and the check that the groups cover
every scenario, and that a trace or a fault landing on another call than planned does fail it.
"""

from __future__ import annotations

import os
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError

from expediente import aws
from tests.conftest import Reply
from tests.integration.faults.injector import Injector, snapshot, trace
from tests.integration.faults.scenarios import Clinic, Scenario, scenarios
from tests.integration.faults.sweep import GROUPS, check, exercise
from tests.support.aws import REGION, bucket_name, table_name


def test_the_sweep_covers_every_write_scenario_once() -> None:
    swept = [route for routes in GROUPS.values() for route in routes]
    # The scenarios' requests are closures: naming them touches no clinic.
    assert sorted(swept) == sorted(s.route for s in scenarios(cast(Clinic, None)))
    assert len(swept) == len(set(swept)) == 17


@pytest.mark.parametrize("route", GROUPS["records"])
def test_a_fault_at_any_aws_call_of_a_write_answers_503_and_leaves_no_trace(
        route: str, shared_clinic: tuple[Injector, Clinic], record_property: Any) -> None:
    injector, clinic = shared_clinic
    scenario = next(s for s in scenarios(clinic) if s.route == route)
    record_property("faults", check(injector, clinic, scenario))


def test_a_snapshot_sees_an_item_an_object_version_a_key_and_a_user_left_behind(
        shared_clinic: tuple[Injector, Clinic]) -> None:
    before = snapshot()
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=table_name("patients"), Item={"pk": {"S": "T#PATIENT#x"}, "sk": {"S": "v1"}})
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket_name("documents"), Key="left/behind", Body=b"x")
    boto3.client("kms", region_name=REGION).create_key(Description="left behind")
    boto3.client("cognito-idp", region_name=REGION).admin_create_user(
        UserPoolId=os.environ["USER_POOL_ID"], Username="left.behind")
    left = trace(before, snapshot())
    assert not left.clean
    assert left.items == ["patients T#PATIENT#x v1"]
    assert left.objects == ["documents/left/behind"]
    assert len(left.keys) == 1 and left.keys[0].endswith(" Enabled")
    assert left.users == ["left.behind"]  # (the routes swept after this compare with their own snapshots)
    assert trace(before, before).clean


def test_a_fault_that_lands_on_another_call_than_planned_fails_the_sweep(
        shared_clinic: tuple[Injector, Clinic]) -> None:
    injector, clinic = shared_clinic
    runs: list[int] = []

    def request() -> Reply:
        runs.append(1)
        try:
            for _ in range(1 if len(runs) <= 2 else 2):  # a cache the reset misses: later runs list twice
                aws.client("dynamodb").list_tables()
            aws.client("kms").list_keys()
        except ClientError:
            return Reply(503, {"Retry-After": "2"}, {"issue": [{"code": "transient"}]})
        return Reply(200, {}, {})

    tally = exercise(injector, clinic, Scenario("GET /drifting", 200, lambda: request))
    assert tally.calls == ["dynamodb.ListTables", "kms.ListKeys"]
    moved = [p for p in tally.problems if "the call sequence moved" in p]
    assert moved and all(p.startswith("call 2 kms.ListKeys") for p in moved), tally.problems
