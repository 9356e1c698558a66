"""Sale groups I-III: pad number, duration, quantity, validity, dispensations and who signs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.notes.conftest import Chain, Staff

from .conftest import UCUM, created, prescription, rx, sign
from .test_formulary_api import local_medication

CLONAZEPAM = "040.000.2612.00"   # tableta 2 mg, 30 per package
MORPHINE = "040.000.4029.00"     # tableta 30 mg, 20 per package
ALPRAZOLAM = "040.000.2500.00"   # tableta 0.25 mg
PAD = "https://expediente.mx/fhir/sid/recetario-especial"


def group(chain: Chain, key: str, value: str) -> None:
    """The clinic records the sale group of a catalogue item (from the product's registration)."""
    pharmacist = chain.staff("pharmacist")
    current = rx(pharmacist, "GET", f"/fhir/Medication/{key}").body
    body = local_medication(current["code"]["text"], key=key, group=value)
    body["ingredient"] = current["ingredient"]
    reply = rx(pharmacist, "PUT", f"/fhir/Medication/{key}", body)
    assert reply.status in (200, 201), reply.body
    assert any(e.get("valueCode") == value for e in reply.body["extension"])


def dispense(pharmacist: Staff, prescription_id: str, **extra: Any) -> Any:
    return rx(pharmacist, "POST", "/fhir/MedicationDispense", {
        "resourceType": "MedicationDispense",
        "authorizingPrescription": [{"reference": f"MedicationRequest/{prescription_id}"}], **extra})


def test_group_one_needs_the_special_pad_number_and_at_most_30_days(chain: Chain, physician: Staff,
                                                                       patient_id: str) -> None:
    group(chain, MORPHINE, "I")
    missing = rx(physician, "POST", "/fhir/MedicationRequest", prescription(patient_id, MORPHINE, every_hours=12))
    assert missing.status == 400 and missing.body["issue"][0]["expression"] == ["MedicationRequest.identifier"]
    pad = {"identifier": [{"system": PAD, "value": "MX-2026-0001234"}]}
    too_long = rx(physician, "POST", "/fhir/MedicationRequest",
                  prescription(patient_id, MORPHINE, every_hours=12, days=31, **pad))
    assert too_long.status == 400 and "30 days" in too_long.issue
    ok = created(physician, prescription(patient_id, MORPHINE, every_hours=12, days=10, packages=1, **pad))
    signed = sign(physician, ok)
    assert signed.status == 200, signed.body
    assert signed.body["dispenseRequest"]["numberOfRepeatsAllowed"] == 0


def test_group_two_allows_two_packages_one_dispensation_and_30_days_validity(
        chain: Chain, physician: Staff, patient_id: str) -> None:
    group(chain, CLONAZEPAM, "II")
    three = rx(physician, "POST", "/fhir/MedicationRequest",
               prescription(patient_id, CLONAZEPAM, every_hours=24, days=30, packages=3))
    assert three.status == 400 and "at most 2" in three.issue
    repeats = prescription(patient_id, CLONAZEPAM, every_hours=24, days=30, packages=2)
    repeats["dispenseRequest"]["numberOfRepeatsAllowed"] = 1
    assert rx(physician, "POST", "/fhir/MedicationRequest", repeats).status == 400
    draft = created(physician, prescription(patient_id, CLONAZEPAM, every_hours=24, days=30, packages=2))
    signed = sign(physician, draft)
    assert signed.status == 200, signed.body
    validity = signed.body["dispenseRequest"]["validityPeriod"]
    start = datetime.fromisoformat(validity["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(validity["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=30)
    assert abs(start - datetime.now(UTC)) < timedelta(minutes=5)
    pharmacist = chain.staff("pharmacist")
    assert dispense(pharmacist, draft["id"]).status == 201
    assert dispense(pharmacist, draft["id"]).status == 409


def test_group_three_allows_three_dispensations(chain: Chain, physician: Staff, patient_id: str) -> None:
    group(chain, ALPRAZOLAM, "III")
    body = prescription(patient_id, ALPRAZOLAM, every_hours=24, days=90, packages=1)
    body["dispenseRequest"]["numberOfRepeatsAllowed"] = 3
    assert rx(physician, "POST", "/fhir/MedicationRequest", body).status == 400
    body["dispenseRequest"]["numberOfRepeatsAllowed"] = 2
    draft = created(physician, body)
    assert sign(physician, draft).status == 200
    pharmacist = chain.staff("pharmacist")
    remaining = [dispense(pharmacist, draft["id"]).headers.get("X-Dispensations-Remaining") for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    assert dispense(pharmacist, draft["id"]).status == 409
    assert rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}").body["status"] == "completed"


def test_only_physicians_sign_groups_one_to_three(chain: Chain, patient_id: str) -> None:
    group(chain, CLONAZEPAM, "II")
    nurse = chain.staff("nurse")
    draft = created(nurse, prescription(patient_id, CLONAZEPAM, every_hours=24, days=30, packages=1))
    refused = sign(nurse, draft)
    assert refused.status == 403 and "physicians" in refused.issue
    plain = created(nurse, prescription(patient_id))
    assert sign(nurse, plain).status == 200


def test_a_dispensation_larger_than_prescribed_is_refused(chain: Chain, physician: Staff, patient_id: str) -> None:
    draft = created(physician, prescription(patient_id, packages=1))
    sign(physician, draft)
    reply = dispense(chain.staff("pharmacist"), draft["id"],
                     quantity={"value": 2, "system": UCUM, "code": "{package}"})
    assert reply.status == 400


@pytest.mark.parametrize("status", ["cancelled", "stopped"])
def test_a_cancelled_or_stopped_prescription_is_not_dispensed(chain: Chain, physician: Staff, patient_id: str,
                                                              status: str) -> None:
    draft = created(physician, prescription(patient_id))
    version = sign(physician, draft).body["meta"]["versionId"]
    params = {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": status}]}
    assert rx(physician, "POST", f"/fhir/MedicationRequest/{draft['id']}/$status", params,
              headers={"If-Match": f'W/"{version}"'}).status == 400  # a reason is required
    params["parameter"].append({"name": "reason", "valueString": "Reacción adversa"})
    changed = rx(physician, "POST", f"/fhir/MedicationRequest/{draft['id']}/$status", params,
                 headers={"If-Match": f'W/"{version}"'})
    assert changed.status == 200, changed.body
    assert changed.body["statusReason"]["text"] == "Reacción adversa"
    reply = dispense(chain.staff("pharmacist"), draft["id"])
    assert reply.status == 409 and status in reply.issue


def test_an_expired_prescription_is_not_dispensed(chain: Chain, physician: Staff, patient_id: str) -> None:
    body = prescription(patient_id)
    body["dispenseRequest"]["validityPeriod"] = {"start": "2026-01-01", "end": "2026-01-31"}
    draft = created(physician, body)
    assert sign(physician, draft).status == 200
    reply = dispense(chain.staff("pharmacist"), draft["id"])
    assert reply.status == 409 and "expired" in reply.issue


def test_sale_group_overrides_are_audited_as_local_items_and_need_a_source(chain: Chain) -> None:
    pharmacist = chain.staff("pharmacist")
    current = rx(pharmacist, "GET", f"/fhir/Medication/{CLONAZEPAM}").body
    body = local_medication(current["code"]["text"], key="010.000.0104.00", group="II")
    body["ingredient"] = current["ingredient"]
    reply = rx(pharmacist, "PUT", f"/fhir/Medication/{CLONAZEPAM}", body)
    assert reply.status == 400  # the key must stay the catalogue item's


def test_two_pharmacies_cannot_both_take_the_same_dispensation(chain: Chain, physician: Staff, patient_id: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The second pharmacy read the prescription before the first one dispensed: its write is refused (409)
    and nothing of it is stored, for an intermediate and for the last dispensation."""
    from expediente.context import service_context
    from functions.prescriptions import handler
    from functions.prescriptions.repository import repository

    body = prescription(patient_id, packages=1)
    body["dispenseRequest"]["numberOfRepeatsAllowed"] = 1
    draft = created(physician, body)
    assert sign(physician, draft).status == 200
    pharmacist = chain.staff("pharmacist")
    real = repository()
    ctx = service_context(chain.tenant.id, "test")
    for remaining in ("1", "0"):
        stale = real.get(ctx, "MedicationRequest", draft["id"])
        assert dispense(pharmacist, draft["id"]).headers["X-Dispensations-Remaining"] == remaining

        class StaleReads:
            def __init__(self, snapshot: Any) -> None:
                self.snapshot = snapshot

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def get(self, ctx: Any, resource_type: str, resource_id: str) -> Any:
                if resource_type == "MedicationRequest":
                    return self.snapshot
                return real.get(ctx, resource_type, resource_id)

        reads = StaleReads(stale)
        monkeypatch.setattr(handler, "repository", lambda reads=reads: reads)
        raced = dispense(pharmacist, draft["id"])
        assert raced.status == 409, raced.body
        monkeypatch.setattr(handler, "repository", repository)
    listed = rx(pharmacist, "GET", "/fhir/MedicationDispense", query={"prescription": draft["id"]})
    assert listed.body["total"] == 2
    assert rx(physician, "GET", f"/fhir/MedicationRequest/{draft['id']}").body["status"] == "completed"
