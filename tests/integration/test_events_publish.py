"""Events go to the bus ten per PutEvents call (the EventBridge quota), all of them delivered."""

from __future__ import annotations

from tests.conftest import World


def test_more_than_ten_events_are_all_published(world: World) -> None:
    from expediente import events

    sent = [events.OrderStatusChanged(tenant_id="t-chain-a", order_id=f"o{n}", patient_id="p", status="requested")
            for n in range(23)]
    assert events.publish(*sent) is True
    received = sorted(e["detail"]["order_id"] for e in world.published() if e["detail-type"] == "OrderStatusChanged")
    assert received == sorted(f"o{n}" for n in range(23))
