"""Presigned PUT URLs for the DICOM files of an imaging order.

A gateway or an app asks for one URL per file, giving each file's size. Each URL writes one new
object under ``<tenant>/orders/<accession>/<random>.dcm`` in the ingest bucket, expires after
:data:`URL_SECONDS`, and signs ``Content-Length`` and ``Content-Type``, so S3 refuses a body of
another size: the size limit holds without trusting the client. The tenant prefix comes from the
verified token, never from the request. The ingest checks that the header's AccessionNumber is the
one the URL was issued for (decision 0018).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from expediente import aws
from expediente.context import RequestContext
from expediente.errors import Conflict, Invalid, Unprocessable
from expediente.settings import settings

from . import logic

URL_SECONDS = 15 * 60
# One DICOM instance per URL; FHIR's valueInteger tops out just under 2 GiB.
MAX_FILE_BYTES = 2**31 - 1
MAX_FILES = 100
CONTENT_TYPE = "application/dicom"
OPEN = frozenset({"requested", "in-process"})


@dataclass(frozen=True)
class Issued:
    url: str
    size: int
    expires: str


def presign(ctx: RequestContext, order: dict[str, Any], sizes: list[object]) -> list[Issued]:
    """One URL per declared size; 422 for a laboratory order, 409 for a closed one, 400 for bad sizes."""
    if logic.category_of(order) != logic.IMAGING:
        raise Unprocessable("DICOM files belong to imaging orders; this is a laboratory order")
    status = logic.order_status(order)
    if status not in OPEN:
        raise Conflict(f"The order is {status}: no more images are accepted for it")
    if not sizes:
        raise Invalid("Parameters needs one size (valueInteger, bytes) per file", expression="Parameters.size")
    if len(sizes) > MAX_FILES:
        raise Invalid(f"At most {MAX_FILES} files per request", expression="Parameters.size")
    for size in sizes:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_FILE_BYTES:
            raise Invalid(f"Each size must be a whole number of bytes from 1 to {MAX_FILE_BYTES}",
                          expression="Parameters.size")
    accession = _accession(order)
    expires = (datetime.now(UTC) + timedelta(seconds=URL_SECONDS)).isoformat(timespec="seconds")
    s3 = aws.client("s3")
    issued = []
    for size in sizes:
        assert isinstance(size, int)
        key = f"{ctx.tenant}/orders/{accession}/{uuid.uuid4().hex}.dcm"
        url = s3.generate_presigned_url(
            "put_object", ExpiresIn=URL_SECONDS,
            Params={"Bucket": settings().bucket_ingest, "Key": key, "ContentLength": size,
                    "ContentType": CONTENT_TYPE})
        issued.append(Issued(url=str(url), size=size, expires=expires.replace("+00:00", "Z")))
    return issued


def _accession(order: dict[str, Any]) -> str:
    for identifier in order.get("identifier") or []:
        if identifier.get("system") == logic.ACCESSION_SYSTEM:
            return str(identifier["value"])
    raise Unprocessable("The order has no accession number")


def parameters(issued: list[Issued]) -> dict[str, Any]:
    """The answer: one ``upload`` part per file, in the order the sizes were given."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": "upload", "part": [
            {"name": "url", "valueUrl": item.url},
            {"name": "method", "valueCode": "PUT"},
            {"name": "size", "valueInteger": item.size},
            {"name": "contentType", "valueString": CONTENT_TYPE},
            {"name": "expires", "valueInstant": item.expires},
        ]} for item in issued]}
