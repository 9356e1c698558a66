"""Imaging studies on the read side: FHIR ``ImagingStudy`` and DICOMweb (QIDO-RS, WADO-RS, thumbnails).

The DICOM ingest writes the studies (:mod:`expediente.imaging`); this module only reads them.
A study's stored resource holds its series; the instances are separate items, added to
``series.instance`` here, those of the version read (a vread shows what that version held).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from expediente import aws, imaging, records
from expediente.clinical import ClinicalRepository, SearchSpec
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import NotFound, ServiceUnavailable
from expediente.settings import settings
from expediente.store import Stored

STUDY = imaging.STUDY
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
_UID = re.compile(r"^[0-9.]{1,64}$")

SEARCH = SearchSpec(
    resource_type=STUDY,
    facets={"patient": "patient", "subject": "patient", "basedon": "order", "identifier": "identifier"},
    filters={"modality": "modality"},
    date="started",
    references={"patient": "Patient", "subject": "Patient", "basedon": "ServiceRequest"},
)


def search_params(params: dict[str, str]) -> dict[str, str]:
    """Token parameters accept ``system|code``: the index holds the codes (accession, study UID, modality)."""
    planned = dict(params)
    for name in ("identifier", "modality"):
        if planned.get(name):
            planned[name] = ",".join(v.split("|")[-1] for v in planned[name].split(","))
    return planned


def present(ctx: RequestContext, stored: Stored) -> dict[str, Any]:
    """The study with the instances its version holds, in each series."""
    resource = stored.resource
    found: dict[str, list[dict[str, Any]]] = {}
    for record in imaging.instances(ctx.tenant, resource["id"], up_to_version=stored.version):
        entry: dict[str, Any] = {"uid": record.sop_uid,
                                 "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{record.sop_class_uid}"}}
        if record.instance_number is not None:
            entry["number"] = record.instance_number
        found.setdefault(record.series_uid, []).append(entry)
    series = [{**s, "instance": found[s["uid"]]} if found.get(s["uid"]) else s for s in resource.get("series", [])]
    return {**resource, "series": series}


# ------------------------------------------------------------------ DICOMweb ---

DICOM_JSON = "application/dicom+json"
# What one QIDO-RS search reads at most from the index before answering (limit and offset apply within).
SEARCH_SCAN = 1000
RETRIEVE_URL_SECONDS = 300
_STUDY_UID, _ACCESSION, _PATIENT_ID = "0020000D", "00080050", "00100020"


@dataclass(frozen=True)
class Found:
    """A search's answer: DICOM JSON results and the patients whose data they hold (for the audit)."""

    results: list[dict[str, Any]]
    patients: tuple[str, ...]


def search_studies(ctx: RequestContext, repo: ClinicalRepository, params: dict[str, str], *, base_url: str) -> Found:
    """QIDO-RS ``/studies``: read by study UID, accession number or record id when the query names one,
    else among the tenant's studies by date; then matched on the DICOM attributes."""
    from . import dicomweb

    query = dicomweb.parse_qido(dicomweb.STUDY, params)
    stored, query = _candidates(ctx, repo, query)
    results: list[dict[str, Any]] = []
    patients: list[str] = []
    for study in stored:
        full = imaging.study_dicom(ctx.tenant, study.resource["id"], study.attrs)
        result = dicomweb.study_result(study.resource, full, base_url=base_url)
        if dicomweb.matches(query, result):
            results.append(dicomweb.apply_includefield(query, result, full))
            patients.append(patient_of(study))
    return _window(query, results, patients)


def _candidates(ctx: RequestContext, repo: ClinicalRepository, query: Any) -> tuple[list[Stored], Any]:
    """The studies a query can match, and the query left to match on them."""
    filters = dict(query.filters)
    uid = filters.get(_STUDY_UID, "")
    if uid and "," not in uid and "\\" not in uid:
        found = repo.get(ctx, STUDY, uid)
        return ([found] if found else []), query
    accession = filters.get(_ACCESSION, "").strip()
    if accession and not set(accession) & {"*", "?"}:
        return _scan(ctx, repo, "identifier", accession.upper()), query
    patient = filters.get(_PATIENT_ID, "").strip()
    if patient and valid_resource_id(patient):
        # PatientID names the Expediente record (the header's PatientID may be a CURP or record number).
        kept = tuple((tag, value) for tag, value in query.filters if tag != _PATIENT_ID)
        return _scan(ctx, repo, "patient", patient), replace(query, filters=kept)
    return _scan(ctx, repo, "all", "studies"), query


def _scan(ctx: RequestContext, repo: ClinicalRepository, facet: str, value: str) -> list[Stored]:
    found: list[Stored] = []
    token: str | None = None
    while len(found) < SEARCH_SCAN:
        page_found, page = repo.search(ctx, STUDY, facet, value, limit=100, token=token,
                                       fingerprint=f"dicomweb|{facet}|{value}")
        found += page_found
        token = page.next_token
        if token is None:
            break
    return found[:SEARCH_SCAN]


def _window(query: Any, results: list[dict[str, Any]], patients: list[str]) -> Found:
    end = None if query.limit is None else query.offset + query.limit
    return Found(results[query.offset:end], tuple(dict.fromkeys(patients[query.offset:end])))


def study(ctx: RequestContext, repo: ClinicalRepository, study_uid: str) -> Stored:
    """The study (404 when missing, another tenant's, or not the patient user's own)."""
    if not _UID.match(study_uid):
        raise NotFound(f"Study {study_uid} not found")
    found = repo.get(ctx, STUDY, study_uid)
    if found is None:
        raise NotFound(f"Study {study_uid} not found")
    return found


def patient_of(stored: Stored) -> str:
    return records.subject_of(stored.resource) or ""


def search_series(ctx: RequestContext, stored: Stored, params: dict[str, str], *, base_url: str) -> Found:
    """QIDO-RS ``/studies/{study}/series``: each series with its study's attributes."""
    from . import dicomweb

    query = dicomweb.parse_qido(dicomweb.SERIES, params)
    full = imaging.study_dicom(ctx.tenant, stored.resource["id"], stored.attrs)
    study_attrs = dicomweb.study_result(stored.resource, full, base_url=base_url)
    results = []
    for series in stored.resource.get("series", []):
        result = dicomweb.combine(study_attrs, dicomweb.series_result(stored.resource, series, base_url=base_url))
        if dicomweb.matches(query, result):
            results.append(dicomweb.apply_includefield(query, result, full))
    return _window(query, results, [patient_of(stored)] * len(results))


def search_instances(ctx: RequestContext, stored: Stored, series_uid: str | None, params: dict[str, str], *,
                     base_url: str) -> Found:
    """QIDO-RS ``/studies/{study}[/series/{series}]/instances``: each instance with its series' attributes."""
    from . import dicomweb

    query = dicomweb.parse_qido(dicomweb.INSTANCE, params)
    series_by_uid = {s["uid"]: s for s in stored.resource.get("series", [])}
    if series_uid is not None and series_uid not in series_by_uid:
        raise NotFound(f"Series {series_uid} not found in this study")
    full = imaging.study_dicom(ctx.tenant, stored.resource["id"], stored.attrs)
    study_attrs = dicomweb.study_result(stored.resource, full, base_url=base_url)
    results = []
    for record in imaging.instances(ctx.tenant, stored.resource["id"], series_uid=series_uid):
        series = series_by_uid.get(record.series_uid)
        if series is None:
            continue
        result = dicomweb.combine(study_attrs, dicomweb.series_result(stored.resource, series, base_url=base_url),
                                  dicomweb.instance_result(record, base_url=base_url))
        if dicomweb.matches(query, result):
            results.append(dicomweb.apply_includefield(query, result, record.metadata))
    return _window(query, results, [patient_of(stored)] * len(results))


def metadata(ctx: RequestContext, stored: Stored, *, series_uid: str | None, sop_uid: str | None,
             base_url: str) -> list[dict[str, Any]]:
    """WADO-RS metadata of a study, a series or an instance (404 when it holds none)."""
    from . import dicomweb

    records = imaging.instances(ctx.tenant, stored.resource["id"], series_uid=series_uid, sop_uid=sop_uid)
    if not records:
        raise NotFound("No such series or instance in this study")
    return [dicomweb.metadata(record, base_url=base_url) for record in records]


def retrieve_url(ctx: RequestContext, stored: Stored, series_uid: str, sop_uid: str) -> str:
    """A short-lived presigned GET of the archived instance, pinned to the version that was indexed."""
    records = imaging.instances(ctx.tenant, stored.resource["id"], series_uid=series_uid, sop_uid=sop_uid)
    if not records:
        raise NotFound(f"Instance {sop_uid} not found in this series")
    record = records[0]
    params = {"Bucket": settings().bucket_imaging, "Key": record.archive_key,
              "ResponseContentType": "application/dicom"}
    if record.archive_version:
        params["VersionId"] = record.archive_version
    return str(aws.client("s3").generate_presigned_url("get_object", Params=params, ExpiresIn=RETRIEVE_URL_SECONDS))


def thumbnail(ctx: RequestContext, stored: Stored, series_uid: str) -> bytes:
    """A PNG of the series' representative instance (the middle one); NoPreview when none can be made."""
    from . import imaging_preview

    records = imaging.instances(ctx.tenant, stored.resource["id"], series_uid=series_uid)
    if not records:
        raise NotFound(f"Series {series_uid} not found in this study")
    record = records[len(records) // 2]
    if record.size > imaging_preview.MAX_OBJECT_BYTES:
        raise imaging_preview.NoPreview("too-large", "the representative instance is too large for a preview")
    args: dict[str, Any] = {"Bucket": settings().bucket_imaging, "Key": record.archive_key}
    if record.archive_version:
        args["VersionId"] = record.archive_version
    try:
        data = aws.client("s3").get_object(**args)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable("The imaging archive is unavailable") from exc
    return imaging_preview.render_thumbnail(data)
