"""Which stored prescriptions the checks compare against, and when they stop counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from expediente.store import Stored
from functions.prescriptions import logic
from functions.prescriptions.formulary import Formulary
from tests.unit.prescriptions.test_dosing import prescription

AUTHORED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
VIEW = Formulary(local={}, hidden=frozenset())


def _stored(status: str, *, days: float = 5) -> Stored:
    resource: dict[str, Any] = {**prescription(days=days), "id": "rx1", "status": status,
                                "authoredOn": AUTHORED.isoformat().replace("+00:00", "Z")}
    return Stored(resource, 1, resource["authoredOn"])


@pytest.mark.parametrize(("status", "after", "current"), [
    ("draft", timedelta(hours=23), True),
    ("draft", timedelta(hours=25), False),
    ("active", timedelta(days=5), True),
    ("active", timedelta(days=5, hours=23), True),
    ("active", timedelta(days=6, hours=1), False),
    ("completed", timedelta(days=3), True),
    ("completed", timedelta(days=7), False),
    ("stopped", timedelta(hours=1), False),
    ("cancelled", timedelta(hours=1), False),
])
def test_a_prescription_counts_while_its_treatment_lasts(status: str, after: timedelta, current: bool) -> None:
    found = logic.medicine_of(_stored(status), VIEW, at=AUTHORED + after)
    assert (found is not None) is current


def test_without_a_moment_every_parseable_prescription_counts() -> None:
    assert logic.medicine_of(_stored("stopped"), VIEW) is not None


def test_the_index_lists_completed_prescriptions_as_current_but_not_stopped_ones() -> None:
    completed = {**_stored("completed").resource}
    stopped = {**_stored("stopped").resource}
    assert logic.index_entry(completed).facets["current"] == (completed["subject"]["reference"].split("/")[1],)
    assert logic.index_entry(stopped).facets["current"] == ()
