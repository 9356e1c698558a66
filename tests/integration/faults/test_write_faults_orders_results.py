"""A fault at every AWS call of the orders and results write routes: full success or a clean 503 that leaves no
trace (what each run checks: :mod:`tests.integration.faults.sweep`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.faults.injector import Injector
from tests.integration.faults.scenarios import Clinic, scenarios
from tests.integration.faults.sweep import GROUPS, check


@pytest.mark.parametrize("route", GROUPS["orders_results"])
def test_a_fault_at_any_aws_call_of_a_write_answers_503_and_leaves_no_trace(
        route: str, shared_clinic: tuple[Injector, Clinic], record_property: Any) -> None:
    injector, clinic = shared_clinic
    scenario = next(s for s in scenarios(clinic) if s.route == route)
    record_property("faults", check(injector, clinic, scenario))
