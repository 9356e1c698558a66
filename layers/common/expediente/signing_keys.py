"""Practitioners' signing keys: which key signs for whom, kept so every signature stays verifiable.

Layout in the ``admin`` table, in the practitioner's own partition (``<tenant>#Practitioner#<id>``):
``SIGNKEY#<kid>`` holds every key the practitioner ever had (a KMS key or a registered X.509
certificate, with its public key), and ``SIGNKEY`` names the active one. Keys are never deleted:
a signature made years ago names its ``kid`` and must still verify.

Only the admin function writes these items (when a practitioner is registered, and when a
practitioner registers a certificate); the signing functions read them.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from expediente import aws
from expediente.context import TenantId
from expediente.settings import settings
from expediente.store import get_item, partition

ACTIVE = "SIGNKEY"
KMS, CERTIFICATE = "kms", "certificate"
# A device signature must be submitted within this time of the signing time it declares.
DEVICE_SIGNATURE_WINDOW = timedelta(minutes=15)
CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class KeyRecord:
    """One signing key of one practitioner."""

    practitioner_id: str
    kid: str
    kind: str                    # "kms" or "certificate"
    public_key_pem: str
    algorithms: tuple[str, ...]  # JWS algorithms the key signs with
    created: str
    key_id: str = ""             # the KMS key ARN (kind "kms")
    certificate_pem: str = ""    # the registered certificate (kind "certificate")
    not_before: str = ""
    not_after: str = ""

    def public(self) -> dict[str, Any]:
        """What anyone may know about the key (no KMS ARN)."""
        view = {k: v for k, v in asdict(self).items() if k != "key_id" and v not in ("", ())}
        view["algorithms"] = list(self.algorithms)
        return view


def _key(tenant: TenantId | str, practitioner_id: str, sk: str) -> dict[str, str]:
    return {"pk": partition(TenantId(tenant), "Practitioner", practitioner_id), "sk": sk}


def _record(item: dict[str, Any]) -> KeyRecord:
    fields = {k: item[k] for k in KeyRecord.__dataclass_fields__ if k in item}
    fields["algorithms"] = tuple(fields.get("algorithms") or ())
    return KeyRecord(**fields)


def active(tenant: TenantId, practitioner_id: str, *, table: str | None = None) -> KeyRecord | None:
    """The practitioner's active signing key, or None when they have none."""
    item = get_item(table or settings().table_admin, _key(tenant, practitioner_id, ACTIVE))
    return None if item is None else _record(item)


def by_kid(tenant: TenantId, practitioner_id: str, kid: str, *, table: str | None = None) -> KeyRecord | None:
    """A key the practitioner had at any time, by its JWS ``kid``."""
    item = get_item(table or settings().table_admin, _key(tenant, practitioner_id, f"{ACTIVE}#{kid}"))
    return None if item is None else _record(item)


def put_ops(tenant: TenantId, record: KeyRecord, *, table: str | None = None) -> list[dict[str, Any]]:
    """Transaction elements recording ``record`` and making it the active key."""
    name = table or settings().table_admin
    values = {k: v for k, v in asdict(record).items() if v not in ("", ())}
    values["algorithms"] = list(record.algorithms)
    return [
        {"Put": {"TableName": name, "Item": aws.to_item({**_key(tenant, record.practitioner_id,
                                                                  f"{ACTIVE}#{record.kid}"), **values}),
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Put": {"TableName": name, "Item": aws.to_item({**_key(tenant, record.practitioner_id, ACTIVE), **values})}},
    ]


def certificate_sha256(key: KeyRecord) -> str | None:
    """The registered certificate's ``x5t#S256`` (base64url SHA-256 of its DER), or None for a KMS key."""
    if key.kind != CERTIFICATE:
        return None
    body = "".join(line for line in key.certificate_pem.strip().splitlines() if not line.startswith("-----"))
    return base64.urlsafe_b64encode(hashlib.sha256(base64.b64decode(body)).digest()).decode().rstrip("=")


def device_signing_time(device_jws: str, key: KeyRecord, *, now: datetime) -> tuple[str, datetime]:
    """The signing time (``sigT`` as sent, and parsed) a device's detached JWS declares, checked: present,
    within :data:`DEVICE_SIGNATURE_WINDOW` before ``now`` (and :data:`CLOCK_SKEW` after), by ``key``.

    Raises :class:`~expediente.errors.Invalid` (no or bad ``sigT``, malformed JWS) or
    :class:`~expediente.errors.Unprocessable` (too old, in the future, another key), naming
    ``Parameters.signature``.
    """
    from expediente import signing
    from expediente.errors import Invalid, Unprocessable

    header, _ = signing.parse_detached_jws(device_jws)
    signing_time = str(header.get("sigT", ""))
    try:
        declared = signing.parse_signing_time(signing_time)
    except Invalid as exc:
        raise Invalid("The JWS header needs sigT, the signing time $sign prepare returned",
                      expression="Parameters.signature") from exc
    if not (now - DEVICE_SIGNATURE_WINDOW <= declared <= now + CLOCK_SKEW):
        raise Unprocessable("The signature's signing time is too old or in the future; prepare again",
                            expression="Parameters.signature")
    if header.get("kid") != key.kid:
        raise Unprocessable("The signature names another key than the practitioner's registered certificate",
                            expression="Parameters.signature")
    return signing_time, declared
