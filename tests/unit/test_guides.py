"""The integration guide's event table says what the code does: every event, its fields, where it goes."""

from __future__ import annotations

import re
from pathlib import Path

from expediente import events
from infra import definitions

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "integration.md"
ROW = re.compile(r"^\| `(?P<event>\w+)` \| (?P<fields>[^|]*) \| (?P<targets>[^|]*) \|$", re.MULTILINE)
COMMON = {"tenant_id", "occurred_at", "request_id"}


def _table() -> dict[str, tuple[list[str], set[str]]]:
    text = GUIDE.read_text(encoding="utf-8")
    return {m["event"]: ([f.strip() for f in m["fields"].split(",")],
                         {t.strip().removesuffix(" (SNS)") for t in m["targets"].split(",")})
            for m in ROW.finditer(text)}


def test_every_event_is_in_the_guide_with_its_fields_in_order() -> None:
    table = _table()
    assert sorted(table) == sorted(t.__name__ for t in events.EVENT_TYPES)
    for model in events.EVENT_TYPES:
        assert table[model.__name__][0] == [f for f in model.model_fields if f not in COMMON], model.__name__


def test_every_event_goes_where_the_guide_says() -> None:
    table = _table()
    for model in events.EVENT_TYPES:
        name = model.__name__
        expected = {r.target_queue for r in definitions.RULES if name in r.detail_types}
        expected |= {t for r in definitions.RULES if name in r.detail_types for t in r.target_topics}
        assert table[name][1] == expected, name
