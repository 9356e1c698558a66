"""A tenant's critical-result policy: limits by LOINC code, the acknowledgement deadline, on-call contacts.

A laboratory result beyond a critical limit is a danger to the patient until a clinician knows it
(closed-loop communication): the results domain flags it ``HH``/``LL``, opens an alert and escalates
it until a named physician acknowledges it. This module is the policy those rules read; the
admin function stores it (``PUT /admin/critical-results``), the results function reads it.

Defaults (:data:`DEFAULT_LIMITS`) are the adult limits common in hospital policies listed in the
design notes (``domain.md``); a tenant replaces the limit of any code or adds codes. Troponin I
has no default: its limit is the assay's cut-off, which only the tenant's laboratory knows; until
it is configured, a troponin is critical only when the laboratory itself flags it ``HH``.

Stored in the ``admin`` table as one item, ``pk = <tenant>#SETTINGS``, ``sk = critical-results``,
with a version for If-Match. Plain data: limits and practitioner ids, no patient data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from expediente import loinc
from expediente.errors import Invalid

SORT_KEY = "critical-results"
DEFAULT_DEADLINE_MINUTES = 30
MIN_DEADLINE_MINUTES, MAX_DEADLINE_MINUTES = 5, 240
MAX_ON_CALL = 10


@dataclass(frozen=True)
class Limit:
    """Critical below ``low`` or above ``high`` (either may be absent), for values in one of ``units``.

    ``units`` are UCUM codes that mean the same quantity for this test (10*3/uL and 10*9/L;
    mmol/L and meq/L for a monovalent ion); a value in another unit is not compared (it cannot be
    judged without a conversion the laboratory did not state).
    """

    code: str
    units: tuple[str, ...]
    low: Decimal | None = None
    high: Decimal | None = None

    def judge(self, value: Decimal, unit: str) -> str | None:
        """``LL``/``HH`` when ``value`` (in ``unit``) is beyond a limit; None inside or in another unit."""
        if unit not in self.units:
            return None
        if self.low is not None and value < self.low:
            return "LL"
        if self.high is not None and value > self.high:
            return "HH"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "units": list(self.units)}
        if self.low is not None:
            out["low"] = float(self.low)
        if self.high is not None:
            out["high"] = float(self.high)
        return out


def _d(text: str) -> Decimal:
    return Decimal(text)


_BLOOD_COUNT = ("10*3/uL", "10*9/L")
# domain.md "Critical laboratory values" (adult, units as given there).
DEFAULT_LIMITS: dict[str, Limit] = {limit.code: limit for limit in (
    Limit("2823-3", ("mmol/L", "meq/L"), _d("2.8"), _d("6.2")),     # potassium
    Limit("2951-2", ("mmol/L", "meq/L"), _d("120"), _d("160")),     # sodium
    Limit("2345-7", ("mg/dL",), _d("40"), _d("450")),               # glucose
    Limit("17861-6", ("mg/dL",), _d("6.0"), _d("13.0")),            # calcium
    Limit("718-7", ("g/dL",), _d("7"), None),                       # hemoglobin
    Limit("777-3", _BLOOD_COUNT, _d("20"), None),                   # platelets
    Limit("6690-2", _BLOOD_COUNT, _d("2"), _d("30")),               # leukocytes
    Limit("6301-6", ("{INR}", "1", "{ratio}"), None, _d("5")),      # INR
    Limit("2744-1", ("[pH]", "1"), _d("7.20"), _d("7.60")),         # arterial pH
    Limit("2019-8", ("mm[Hg]",), _d("20"), _d("70")),               # arterial pCO2
    Limit("2524-7", ("mmol/L",), None, _d("4")),                    # lactate
)}


@dataclass(frozen=True)
class Policy:
    """The tenant's limits (its own over the defaults), deadline and on-call physicians per clinic.

    ``on_call`` maps a clinic's CLUES to practitioner ids, in the order they are called after the
    ordering physician.
    """

    limits: Mapping[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    deadline_minutes: int = DEFAULT_DEADLINE_MINUTES
    on_call: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0
    custom: frozenset[str] = frozenset()  # codes whose limit the tenant set

    def judge(self, code: str, value: Decimal, unit: str) -> str | None:
        limit = self.limits.get(code)
        return limit.judge(value, unit) if limit is not None else None

    def to_json(self) -> dict[str, Any]:
        """The policy as the API shows it: every limit in force, marked default or tenant's."""
        return {
            "acknowledgeWithinMinutes": self.deadline_minutes,
            "limits": [{**limit.to_json(), "source": "tenant" if code in self.custom else "default"}
                       for code, limit in sorted(self.limits.items())],
            "onCall": {clinic: [f"Practitioner/{p}" for p in ids] for clinic, ids in sorted(self.on_call.items())},
            "version": self.version,
        }


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(f"{where} must be a number", expression=where)
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise Invalid(f"{where} must be a number", expression=where) from exc
    if not number.is_finite():
        raise Invalid(f"{where} must be a finite number", expression=where)
    return number


def parse(body: Mapping[str, Any], *, is_clinic: Callable[[str], bool],
          is_practitioner: Callable[[str], bool]) -> Policy:
    """The policy an admin sends (400 naming the field when wrong).

    ``limits`` lists the tenant's own limits (code in the LOINC laboratory catalogue, at least one
    UCUM unit, ``low`` < ``high``, at least one of them); codes not listed keep the default. ``onCall``
    names, per clinic of the chain (``is_clinic``), its practitioners (``is_practitioner``).
    """
    if not isinstance(body, Mapping):
        raise Invalid("The body must be a JSON object")
    unknown = sorted(set(body) - {"acknowledgeWithinMinutes", "limits", "onCall", "version"})
    if unknown:
        raise Invalid(f"Unknown field {unknown[0]!r}; accepted: acknowledgeWithinMinutes, limits, onCall",
                      expression=unknown[0])
    minutes = body.get("acknowledgeWithinMinutes", DEFAULT_DEADLINE_MINUTES)
    if not isinstance(minutes, int) or isinstance(minutes, bool) \
            or not MIN_DEADLINE_MINUTES <= minutes <= MAX_DEADLINE_MINUTES:
        raise Invalid(f"acknowledgeWithinMinutes must be a whole number from {MIN_DEADLINE_MINUTES} to "
                      f"{MAX_DEADLINE_MINUTES}", expression="acknowledgeWithinMinutes")
    limits = dict(DEFAULT_LIMITS)
    custom: set[str] = set()
    raw_limits = body.get("limits") or []
    if not isinstance(raw_limits, list):
        raise Invalid("limits must be a list", expression="limits")
    for i, raw in enumerate(raw_limits):
        where = f"limits[{i}]"
        if not isinstance(raw, Mapping):
            raise Invalid(f"{where} must be an object", expression=where)
        code = loinc.lab_test(str(raw.get("code", "")), where=f"{where}.code").code
        if code in custom:
            raise Invalid(f"{where}.code {code} is listed twice", expression=f"{where}.code")
        units = raw.get("units")
        if not isinstance(units, list) or not units or not all(isinstance(u, str) and u.strip() for u in units):
            raise Invalid(f"{where}.units must list the UCUM unit codes the limit is written in",
                          expression=f"{where}.units")
        low, high = _decimal(raw.get("low"), f"{where}.low"), _decimal(raw.get("high"), f"{where}.high")
        if low is None and high is None:
            raise Invalid(f"{where} needs low, high or both", expression=where)
        if low is not None and high is not None and low >= high:
            raise Invalid(f"{where}.low must be below {where}.high", expression=f"{where}.low")
        limits[code] = Limit(code, tuple(u.strip() for u in units), low, high)
        custom.add(code)
    on_call: dict[str, tuple[str, ...]] = {}
    raw_on_call = body.get("onCall") or {}
    if not isinstance(raw_on_call, Mapping):
        raise Invalid("onCall must map a clinic's CLUES to a list of Practitioner references", expression="onCall")
    for clinic, refs in raw_on_call.items():
        where = f"onCall.{clinic}"
        if not is_clinic(str(clinic)):
            raise Invalid(f"{where}: {clinic} is not a clinic of this chain", expression=where)
        if not isinstance(refs, list) or len(refs) > MAX_ON_CALL:
            raise Invalid(f"{where} must list at most {MAX_ON_CALL} Practitioner references", expression=where)
        ids: list[str] = []
        for j, ref in enumerate(refs):
            practitioner = str(ref).removeprefix("Practitioner/")
            if not is_practitioner(practitioner):
                raise Invalid(f"{where}[{j}]: {ref} is not a practitioner of this chain", expression=f"{where}[{j}]")
            if practitioner not in ids:
                ids.append(practitioner)
        on_call[clinic] = tuple(ids)
    return Policy(limits, minutes, on_call, custom=frozenset(custom))


def to_item_body(policy: Policy) -> str:
    """The stored form (only what the tenant set; defaults stay in the code so they can be corrected)."""
    return json.dumps({
        "acknowledgeWithinMinutes": policy.deadline_minutes,
        "limits": [policy.limits[code].to_json() for code in sorted(policy.custom)],
        "onCall": {clinic: list(ids) for clinic, ids in policy.on_call.items()},
    }, separators=(",", ":"))


def from_item(item: Mapping[str, Any] | None) -> Policy:
    """The policy in force from the stored item (the defaults when the tenant set none)."""
    if item is None:
        return Policy()
    body = json.loads(str(item["body"]))
    limits = dict(DEFAULT_LIMITS)
    custom = set()
    for raw in body.get("limits", []):
        low, high = raw.get("low"), raw.get("high")
        limits[raw["code"]] = Limit(raw["code"], tuple(raw["units"]),
                                    Decimal(str(low)) if low is not None else None,
                                    Decimal(str(high)) if high is not None else None)
        custom.add(raw["code"])
    on_call = {clinic: tuple(ids) for clinic, ids in body.get("onCall", {}).items()}
    return Policy(limits, int(body["acknowledgeWithinMinutes"]), on_call, int(item.get("version", 0)),
                  frozenset(custom))


def key(tenant: str) -> dict[str, str]:
    """The item key in the admin table."""
    return {"pk": f"{tenant}#SETTINGS", "sk": SORT_KEY}


def load(tenant: str) -> Policy:
    """The tenant's policy in force (one GetItem on the admin table)."""
    from expediente.settings import settings
    from expediente.store import get_item

    return from_item(get_item(settings().table_admin, key(tenant)))


CACHE_TTL_S = 60.0  # a changed policy applies within a minute; reading it for every result would cost a GetItem
_cache: dict[str, tuple[float, Policy]] = {}


def in_force(tenant: str) -> Policy:
    """:func:`load`, remembered per tenant for :data:`CACHE_TTL_S` seconds in this process."""
    import time

    cached = _cache.get(tenant)
    if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
        return cached[1]
    policy = load(tenant)
    _cache[tenant] = (time.monotonic(), policy)
    return policy


def forget() -> None:
    """Drop the remembered policies (tests; a process that must see a change at once)."""
    _cache.clear()
