"""Imaging studies on the read side: FHIR ``ImagingStudy`` and DICOMweb (QIDO-RS, WADO-RS, thumbnails).

The DICOM ingest writes the studies (:mod:`expediente.imaging`); this module only reads them.
A study's stored resource holds its series; the instances are separate items, added to
``series.instance`` here, those of the version read (a vread shows what that version held).
"""

from __future__ import annotations

from typing import Any

from expediente import imaging
from expediente.clinical import SearchSpec
from expediente.context import RequestContext
from expediente.store import Stored

STUDY = imaging.STUDY
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"

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
