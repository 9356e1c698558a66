"""Imaging figures: bytes read and memory per DICOM instance whatever its size, and ingest throughput.

1. Header-only reads: synthetic CT instances of 1 MB, 100 MB and 1 GB (a complete header, then zero
   pixels; generated in 8 MiB chunks, never whole in memory) are uploaded to an embedded AWS server
   (moto on 127.0.0.1, in this process). A fresh interpreter then ingests them through
   ``dicom_ingest``'s SQS entry point exactly as deployed: S3 notification, ranged GETs, order and
   patient matching, server-side copy to the archive, ImagingStudy transaction, event, delete.
   Reported per instance: bytes read from S3 (counted on the GetObject responses) against the header
   size + 64 KiB bound, and for the 1 GB instance the growth of the process's peak RSS (and the
   traced Python peak) over its baseline after a warm-up ingest, against the 128 MB bound. The
   uploads happen in this process, so the measured process only ever ingests.
2. Throughput: 300 instances of three CT studies (one 256×256 frame each, about 130 KB), uploaded
   first, then delivered in SQS batches of ten to the handler in this process against the embedded
   AWS (moto in-process); instances per second end to end, against the time the same objects take
   to read and parse their headers from memory (``read_header`` alone).
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import TENANT, world

ROOT = Path(__file__).resolve().parent.parent
CLUES = "HGIMB000151"
KIB, MIB = 1024, 1024 * 1024
SIZES = {"1 MB": MIB, "100 MB": 100 * MIB, "1 GB": 1024 * MIB}
BYTES_BOUND = 64 * KIB
MEMORY_BOUND_MB = 128


class _Stream(io.RawIOBase):
    """A file object over a generator of chunks, for ``upload_fileobj`` without the whole object in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.543.{n}"


def _patient_and_order() -> tuple[str, str]:
    """A registered patient and an imaging order for them; returns (patient id, accession number)."""
    from benchmarks.results import _patient
    from expediente.audit import Action, AuditEntry
    from expediente.clinical import Write, stamp
    from expediente.context import service_context
    from functions.orders import logic
    from functions.orders.repository import number_guard
    from functions.orders.repository import repository as orders_repository
    from tests.support.aws import User

    patient = _patient(User(tenant=TENANT, role="reception", clinic_ids=(CLUES,)), 7)
    ctx = service_context(TENANT, "bench")
    now = "2026-11-25T07:00:00.000Z"
    accession = "A20261125BENCH01"
    order = stamp(logic._with_status({
        "resourceType": "ServiceRequest", "intent": "order", "priority": "routine", "authoredOn": now,
        "category": [{"coding": [{"system": logic.SNOMED, "code": logic.IMAGING}]}],
        "code": {"text": "Tomografía de tórax"},
        "orderDetail": [{"coding": [{"system": logic.DICOM, "code": "CT"}]}],
        "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": "Practitioner/benchdoctor"},
        "identifier": [{"system": logic.ACCESSION_SYSTEM, "value": accession}],
        "extension": [{"url": f"{logic.EXT}/clues", "valueString": CLUES}],
    }, "requested"), "benchimagingorder", 1, now)
    orders = orders_repository()
    orders.save(ctx, [Write("ServiceRequest", order, 1, logic.index_entry(order))], now=now,
                extra=[number_guard(orders.table, TENANT, accession, order["id"])],
                entry=AuditEntry("ServiceRequest", Action.CREATE, order["id"], (patient,), 201))
    return patient, accession


def _notification(bucket: str, key: str, size: int, n: int) -> dict[str, Any]:
    body = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-11-25T08:00:00.000Z",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}}}]}
    return {"messageId": f"m{n}", "body": json.dumps(body), "eventSource": "aws:sqs"}


# ------------------------------------------------------------------ 1. bytes and memory ---


def bytes_and_memory() -> str:
    from functions.dicom_ingest.header import synthetic_instance
    from local.aws import EmbeddedAws
    from tests.support.aws import REGION, bucket_name, create_tenant_record, environment, provision, reset_caches

    server = EmbeddedAws(port=0)
    endpoint = server.start()
    saved = dict(os.environ)
    uploads = []
    try:
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "POWERTOOLS_LOG_LEVEL": "WARNING"})
        key, _ = provision()
        os.environ.update(environment(key))
        reset_caches()
        create_tenant_record(TENANT, key)
        patient, accession = _patient_and_order()
        from expediente import aws

        s3 = aws.client("s3")
        for n, name in enumerate(["warm-up", *SIZES]):
            chunks = synthetic_instance(size=SIZES.get(name, MIB), patient_id=patient, accession=accession,
                                        study_uid=_uid(1), series_uid=_uid(2), sop_uid=_uid(100 + n),
                                        rows=256, cols=256)
            first = next(chunks)
            object_key = f"{TENANT}/bench/{n}.dcm"
            s3.upload_fileobj(_Stream(_chain(first, chunks)), bucket_name("ingest"), object_key)
            size = s3.head_object(Bucket=bucket_name("ingest"), Key=object_key)["ContentLength"]
            # The first chunk ends with the pixel data element's 12-byte tag, VR and length.
            uploads.append({"name": name, "key": object_key, "size": size, "header": len(first) - 12})
        child_env = {**os.environ, "BENCH_UPLOADS": json.dumps(uploads)}
        measured = json.loads(subprocess.run(
            [sys.executable, "-m", "benchmarks.imaging", "measure"], cwd=ROOT, env=child_env, check=True,
            capture_output=True, text=True).stdout.strip().splitlines()[-1])
    finally:
        reset_caches()
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    rows = []
    for item in uploads[1:]:
        read = measured["bytes"][item["name"]]
        bound = item["header"] + BYTES_BOUND
        rows.append(f"| {item['name']} ({item['size']:,} B) | {item['header']:,} | {read:,} | {bound:,} | "
                    f"{'met' if read <= bound else 'NOT met'} |")
    rss, traced = measured["rss_mb"], measured["traced_mb"]
    return "\n".join([
        "### DICOM ingest: bytes read and memory (`imaging.bytes_memory`)",
        "",
        "| instance | header bytes | bytes read from S3 | bound (header + 64 KiB) | |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        f"Ingesting the 1 GB instance grew the process's peak RSS by **{rss:.1f} MB** over its baseline after a "
        f"warm-up ingest (traced Python peak {traced:.1f} MB); bound {MEMORY_BOUND_MB} MB: "
        f"**{'met' if rss <= MEMORY_BOUND_MB else 'NOT met'}**. Each instance ended archived: "
        f"{measured['ingested']} of {len(uploads)} ingested, {measured['failed']} failed.",
    ])


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def measure() -> None:
    """The child process: ingest the uploaded objects one at a time; print bytes read and memory as JSON."""
    from expediente import aws
    from functions.dicom_ingest.handler import consume
    from tests.support.aws import bucket_name

    uploads = json.loads(os.environ["BENCH_UPLOADS"])
    s3 = aws.client("s3")
    read = {"bytes": 0}

    def count(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "GetObject":
            read["bytes"] += int(parsed.get("ContentLength", 0))

    s3.meta.events.register("after-call.s3.GetObject", count)
    results: dict[str, int] = {}
    ingested = failed = 0
    baseline_kb = 0
    for n, item in enumerate(uploads):
        if n == 1:
            baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
        read["bytes"] = 0
        answer = consume({"Records": [_notification(bucket_name("ingest"), item["key"], item["size"], n)]})
        failed += len(answer["batchItemFailures"])
        archived = s3.list_objects_v2(Bucket=bucket_name("imaging"), Prefix=f"{TENANT}/").get("KeyCount", 0)
        ingested = archived
        results[item["name"]] = read["bytes"]
    _, traced_peak = tracemalloc.get_traced_memory()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"bytes": results, "rss_mb": (peak_kb - baseline_kb) / 1024, "traced_mb": traced_peak / MIB,
                      "ingested": ingested, "failed": failed}))


# ------------------------------------------------------------------ 2. throughput ---


def throughput(*, instances: int = 300) -> str:
    from functions.dicom_ingest.header import read_header, synthetic_instance
    from tests.support.aws import bucket_name

    with world():
        patient, accession = _patient_and_order()
        from expediente import aws
        from functions.dicom_ingest.handler import consume

        s3 = aws.client("s3")
        objects: list[tuple[str, bytes]] = []
        for n in range(instances):
            study = n * 3 // instances  # a modality sends one study after the other
            data = b"".join(synthetic_instance(size=140 * KIB, patient_id=patient, accession=accession,
                                               study_uid=_uid(10 + study), series_uid=_uid(20 + study),
                                               sop_uid=_uid(1000 + n), rows=256, cols=256))
            key = f"{TENANT}/bench/t{n}.dcm"
            s3.put_object(Bucket=bucket_name("ingest"), Key=key, Body=data)
            objects.append((key, data))

        parse_started = time.perf_counter()
        for _, data in objects:
            read_header(lambda start, end, d=data: d[start:end], size=len(data))
        parse_s = time.perf_counter() - parse_started

        records = [_notification(bucket_name("ingest"), key, len(data), n)
                   for n, (key, data) in enumerate(objects)]
        from benchmarks.results import _aws_time

        sqs = aws.client("sqs")
        events_queue = sqs.get_queue_url(QueueName="all-events")["QueueUrl"]
        elapsed = inside = 0.0
        calls = failures = 0
        for start in range(0, len(records), 10):
            with _aws_time() as spent:
                begun = time.perf_counter()
                failures += len(consume({"Records": records[start:start + 10]})["batchItemFailures"])
                elapsed += time.perf_counter() - begun
            inside += spent["seconds"]
            calls += int(spent["calls"])
            # The events' consumers keep their queues short, as deployed (moto's send slows as a queue grows).
            _drain(sqs, events_queue)
        archived = s3.list_objects_v2(Bucket=bucket_name("imaging"), Prefix=f"{TENANT}/", MaxKeys=1000)["KeyCount"]
    rate = instances / elapsed
    return "\n".join([
        "### DICOM ingest throughput (`imaging.throughput`)",
        "",
        f"{instances} instances of three studies, in SQS batches of ten, against the embedded AWS (moto in this "
        f"process, one core): **{rate:.0f} instances/s** end to end (target ≥ 100: "
        f"**{'met' if rate >= 100 else 'NOT met'}**); {archived} archived, {failures} failed records. "
        f"Reading and parsing the same headers from memory alone: {instances / parse_s:.0f} instances/s, so the "
        f"whole ingest costs **{elapsed / parse_s:.1f}×** the header parse. "
        f"{calls / instances:.1f} AWS calls per instance, {inside / elapsed:.0%} of the time inside them (moto): "
        f"our code takes {(elapsed - inside) / instances * 1000:.1f} ms per instance.",
    ])


def _drain(sqs: Any, queue_url: str) -> None:
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])


if __name__ == "__main__":
    if sys.argv[1:] == ["measure"]:
        measure()
