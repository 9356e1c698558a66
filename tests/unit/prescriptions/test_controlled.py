"""Sale-group rules (LGS art. 226) for controlled medicines: pad number, duration, packages, dispensations."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from expediente.errors import Invalid
from functions.prescriptions import controlled, dosing
from functions.prescriptions.formulary import Item, catalogue
from tests.unit.prescriptions.test_dosing import PARACETAMOL, prescription

MR = "MedicationRequest"
DURATION = f"{MR}.dosageInstruction[0].timing.repeat.boundsDuration"
QUANTITY = f"{MR}.dispenseRequest.quantity"
REPEATS = f"{MR}.dispenseRequest.numberOfRepeatsAllowed"
PAD = "RE-2026-0001234"


def _item(group: str | None) -> Item:
    """Paracetamol tablets (10 per package) as if the catalogue gave them ``group``."""
    return dataclasses.replace(catalogue()[PARACETAMOL], sale_group=group)


def _request(*, pad: str | None = None, pad_system: str = controlled.SPECIAL_PAD_SYSTEM, repeats: int = 0,
             **changes: Any) -> dict[str, Any]:
    resource = prescription(**{"quantity": 1, **changes})
    if pad is not None:
        resource["identifier"] = [{"system": "https://expediente.mx/fhir/sid/folio", "value": "F-1"},
                                  {"system": pad_system, "value": pad}]
    resource["dispenseRequest"]["numberOfRepeatsAllowed"] = repeats
    return resource


def _check(group: str | None, resource: dict[str, Any]) -> None:
    item = _item(group)
    controlled.check(resource, item, dosing.parse(resource, item))


def _refused(group: str | None, resource: dict[str, Any]) -> str | None:
    with pytest.raises(Invalid) as raised:
        _check(group, resource)
    return raised.value.expression


def _allowed(group: str | None, resource: dict[str, Any]) -> int:
    item = _item(group)
    return controlled.dispensations_allowed(item, dosing.parse(resource, item))


# ---------------------------------------------------------------- group I ---


def test_group_i_with_pad_number_and_30_days_is_accepted() -> None:
    resource = _request(pad=PAD, days=30)
    _check("I", resource)
    assert controlled.pad_number(resource) == PAD


@pytest.mark.parametrize(("value", "unit"), [(4, "wk"), (1, "mo"), (30, "d")])
def test_group_i_accepts_up_to_30_days_in_any_unit(value: float, unit: str) -> None:
    resource = _request(pad=PAD, days=value, duration_unit=unit)
    _check("I", resource)
    assert dosing.parse(resource, _item("I")).duration_days <= 30


def test_group_i_without_the_special_pad_number_is_refused() -> None:
    assert _refused("I", _request()) == f"{MR}.identifier"


def test_group_i_pad_number_under_another_system_is_refused() -> None:
    assert _refused("I", _request(pad=PAD, pad_system="https://expediente.mx/fhir/sid/folio")) == f"{MR}.identifier"


@pytest.mark.parametrize("pad", ["", "123", "RE 2026 0001", "RE/2026/0001", "x" * 41])
def test_group_i_malformed_pad_number_is_refused(pad: str) -> None:
    assert _refused("I", _request(pad=pad)) == f"{MR}.identifier"


@pytest.mark.parametrize(("value", "unit"), [(31, "d"), (5, "wk"), (2, "mo")])
def test_group_i_over_30_days_is_refused(value: float, unit: str) -> None:
    assert _refused("I", _request(pad=PAD, days=value, duration_unit=unit)) == DURATION


def test_group_i_is_dispensed_once() -> None:
    assert _refused("I", _request(pad=PAD, repeats=1)) == REPEATS
    assert _allowed("I", _request(pad=PAD)) == 1


# ---------------------------------------------------------------- group II ---


@pytest.mark.parametrize(("quantity", "unit"), [(2, "{package}"), (1, "{package}"), (20, "{tablet}"),
                                                (15, "{tablet}")])
def test_group_ii_up_to_two_packages_is_accepted(quantity: float, unit: str) -> None:
    resource = _request(quantity=quantity, quantity_unit=unit)
    _check("II", resource)
    item = _item("II")
    assert (dosing.parse(resource, item).packages(item) or 0) <= 2


@pytest.mark.parametrize(("quantity", "unit"), [(3, "{package}"), (2.5, "{package}"), (21, "{tablet}"),
                                                (30, "{tablet}")])
def test_group_ii_over_two_packages_is_refused(quantity: float, unit: str) -> None:
    assert _refused("II", _request(quantity=quantity, quantity_unit=unit)) == QUANTITY


def test_group_ii_in_units_of_an_item_without_package_size_is_refused() -> None:
    item = dataclasses.replace(_item("II"), package=None)
    resource = _request(quantity=10, quantity_unit="{tablet}")
    with pytest.raises(Invalid) as raised:
        controlled.check(resource, item, dosing.parse(resource, item))
    assert raised.value.expression == QUANTITY


def test_group_ii_is_dispensed_once() -> None:
    assert _refused("II", _request(repeats=1)) == REPEATS
    assert _allowed("II", _request()) == 1


def test_group_ii_needs_no_pad_and_has_no_duration_limit() -> None:
    resource = _request(days=90)
    _check("II", resource)
    assert controlled.pad_number(resource) is None


# ---------------------------------------------------------------- group III ---


@pytest.mark.parametrize("repeats", [0, 1, 2])
def test_group_iii_up_to_three_dispensations_is_accepted(repeats: int) -> None:
    resource = _request(repeats=repeats, quantity=5)
    _check("III", resource)
    assert _allowed("III", resource) == repeats + 1


def test_group_iii_fourth_dispensation_is_refused() -> None:
    assert _refused("III", _request(repeats=3)) == REPEATS


def test_group_iii_has_no_package_or_duration_limit() -> None:
    resource = _request(quantity=10, days=180)
    _check("III", resource)
    assert controlled.rule_for(_item("III")) == controlled.RULES["III"]


# ---------------------------------------------------------------- groups IV-VI ---


@pytest.mark.parametrize("group", ["IV", "V", "VI", None])
def test_uncontrolled_groups_follow_the_prescriber(group: str | None) -> None:
    resource = _request(repeats=11, quantity=40, days=366)
    _check(group, resource)
    assert controlled.rule_for(_item(group)) is None
    assert _allowed(group, resource) == 12


def test_controlled_groups_are_i_to_iii() -> None:
    assert frozenset(controlled.RULES) == controlled.CONTROLLED == {"I", "II", "III"}
    assert all(rule.notice for rule in controlled.RULES.values())


def test_dispensations_allowed_is_capped_by_the_group_rule_without_check() -> None:
    """The cap holds even for a dosage that skipped :func:`controlled.check` (e.g. an old stored request)."""
    item = _item("III")
    resource = _request(repeats=5)
    assert controlled.dispensations_allowed(item, dosing.parse(resource, item)) == 3
