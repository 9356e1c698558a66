"""Audit reports: a page of the trail as CSV, and the period of a ``$verify``.

The CSV holds ids, codes and times only, as the records do (no names, CURPs or query values).
Cells that a spreadsheet would run as a formula are prefixed with ``'`` (OWASP CSV injection).
The next page, when there is one, is in a ``Link: <...>; rel="next"`` header, as FHIR paging
works for the Bundle.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.event_handler import Response

from expediente.errors import Invalid

from . import rules

CSV = "text/csv"
CSV_FORMATS = frozenset({CSV, "csv", "text/csv; charset=utf-8"})
COLUMNS = ("recorded", "id", "action", "outcome", "status", "resource_type", "resource_id", "patient_ids",
           "user_id", "roles", "practitioner_id", "clinic", "source_ip", "request_id", "detail", "chain", "seq",
           "hash")
VERIFY_PARAMS = frozenset({"start", "end"})
DEFAULT_VERIFY_SPAN = timedelta(hours=24)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        text = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def to_csv(items: Sequence[Mapping[str, Any]]) -> str:
    """Audit records (plain values) as CSV with a header row, in the order given."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in items:
        writer.writerow([_cell(item.get(column)) for column in COLUMNS])
    return out.getvalue()


def csv_response(items: Sequence[Mapping[str, Any]], *, next_url: str | None) -> Response[str]:
    """A ``text/csv`` response of one page, with the next page in ``Link`` (RFC 8288)."""
    headers = {"Content-Disposition": 'attachment; filename="audit-events.csv"', "Cache-Control": "no-store"}
    if next_url:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return Response(status_code=200, content_type="text/csv; charset=utf-8", body=to_csv(items), headers=headers)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verify_period(params: Mapping[str, str], *, now: datetime | None = None) -> tuple[str, str]:
    """``[start, end)`` of a ``$verify`` from ``start``/``end`` (FHIR dates or dateTimes; ``end`` covers its whole
    precision, so ``end=2026-03-01`` includes that day). Defaults: the 24 hours before ``end``, ``end`` = now.
    Raises :class:`Invalid` (400) naming the parameter."""
    rules.check_params(params, VERIFY_PARAMS)
    for name in ("start", "end"):
        if "," in params.get(name, ""):
            raise Invalid(f"{name} takes one value", expression=name)
    end = _bounds(params["end"], "end")[1] if params.get("end") else _instant(now or datetime.now(UTC))
    if params.get("start"):
        start = _bounds(params["start"], "start")[0]
    else:
        start = _instant(datetime.fromisoformat(end.replace("Z", "+00:00")) - DEFAULT_VERIFY_SPAN)
    if start >= end:
        raise Invalid("start must be before end", expression="start")
    return start, end


def _bounds(value: str, name: str) -> tuple[str, str]:
    try:
        prefix, low, high = rules.date_range(value)
    except Invalid as exc:
        raise Invalid(f"{name} must be a FHIR date or dateTime with a time zone, got {value!r}",
                      expression=name) from exc
    if prefix != "eq" or value[:2].isalpha():
        raise Invalid(f"{name} takes no prefix", expression=name)
    return low, high
