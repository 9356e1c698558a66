"""The only code of the ingest that talks to S3: ranged reads, server-side copies, deletes.

Objects are never downloaded whole: the header is read with ranged GETs and every move is a
server-side copy (``CopyObject``, or a multipart copy above :data:`SINGLE_COPY_LIMIT`), so the
function's memory does not depend on the size of a study. A "move" is a copy followed by a
delete; the buckets are versioned, so a delete only adds a delete marker and the bytes stay
recoverable until the bucket's lifecycle expires old versions (NOM-004 5.11: nothing clinical is
erased by the application).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from expediente import aws

# CopyObject copies up to 5 GiB in one call; larger objects need a multipart copy.
SINGLE_COPY_LIMIT = 5 * 1024**3
_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


class Gone(Exception):
    """The object (or the notified version of it) is no longer in the bucket."""


@dataclass
class Source:
    """One object being read, pinned to the version seen first."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    bytes_read: int = 0

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; the first call learns the object's size and version."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end - 1}"}
        if self.version_id:
            args["VersionId"] = self.version_id
        try:
            response = aws.client("s3").get_object(**args)
        except ClientError as exc:
            if aws.error_code(exc) in _MISSING:
                raise Gone(self.key) from exc
            if aws.error_code(exc) == "InvalidRange":
                return b""
            raise
        if self.version_id is None and response.get("VersionId") not in (None, "null"):
            self.version_id = str(response["VersionId"])
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        if total.isdigit():
            self.size = int(total)
        body: bytes = response["Body"].read()
        self.bytes_read += len(body)
        return body


def copy(source: Source, bucket: str, key: str, *, size: int, metadata: dict[str, str] | None = None) -> str | None:
    """Server-side copy of ``source`` (its pinned version) to ``bucket/key``; the new version id."""
    copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
    if source.version_id:
        copy_source["VersionId"] = source.version_id
    extra: dict[str, Any] = {"ContentType": "application/dicom", "MetadataDirective": "REPLACE",
                             "Metadata": metadata or {}}
    s3 = aws.client("s3")
    try:
        if size < SINGLE_COPY_LIMIT:
            response = s3.copy_object(CopySource=copy_source, Bucket=bucket, Key=key, **extra)
            version = response.get("VersionId")
        else:
            s3.copy(copy_source, bucket, key, ExtraArgs=extra)
            version = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
    except ClientError as exc:
        if aws.error_code(exc) in _MISSING:
            raise Gone(source.key) from exc
        raise
    return None if version in (None, "null") else str(version)


def delete(bucket: str, key: str) -> None:
    """Remove ``key`` from the bucket's current view (a delete marker; versions are kept)."""
    aws.client("s3").delete_object(Bucket=bucket, Key=key)


# DeleteObjects takes at most this many keys per call.
DELETE_BATCH = 1000


def delete_many(bucket: str, keys: list[str]) -> None:
    """:func:`delete` for many keys, a thousand per call; raises ``ClientError`` if any key was not deleted."""
    s3 = aws.client("s3")
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), DELETE_BATCH):
        chunk = unique[start:start + DELETE_BATCH]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            raise ClientError({"Error": {"Code": str(errors[0].get("Code", "InternalError")),
                                         "Message": f"{len(errors)} of {len(chunk)} objects were not deleted"}},
                              "DeleteObjects")
