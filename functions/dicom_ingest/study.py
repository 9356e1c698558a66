"""The FHIR ``ImagingStudy`` an ingest writes: the study, its series and their instance counts.

The stored resource holds the study and series; the instances themselves are separate items
(:mod:`expediente.imaging`), added to ``series.instance`` when the study is read, because a CT
study can hold thousands of instances and a DynamoDB item is limited to 400 KB. Each ingest
batch that adds instances writes one new version (decision 0018).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from expediente import records
from expediente.clinical import stamp
from expediente.identifiers import ACCESSION_SYSTEM, IDENTIFIER_TYPE_SYSTEM
from expediente.imaging import DCM, DICOM_UID_SYSTEM, STUDY
from expediente.index import Entry

from .header import Instance

# Study-level attributes kept (encrypted) with the ImagingStudy for QIDO-RS study answers.
STUDY_TAGS = frozenset({
    "00080005",  # SpecificCharacterSet
    "00080020", "00080030",  # StudyDate, StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    "00081030",  # StudyDescription
    "00100010", "00100020", "00100030", "00100040",  # PatientName, PatientID, PatientBirthDate, PatientSex
    "00200010",  # StudyID
})


def study_dicom(instance: Instance) -> dict[str, Any]:
    """The study-level part of an instance's header (DICOM JSON)."""
    return {tag: value for tag, value in instance.metadata.items() if tag in STUDY_TAGS}


def merged(current: dict[str, Any] | None, added: Sequence[Instance], *, patient_id: str, order_id: str,
           accession: str, version: int, now: str) -> dict[str, Any]:
    """The next version of the study with ``added`` instances (none of them already stored)."""
    first = added[0]
    series: dict[str, dict[str, Any]] = {s["uid"]: dict(s) for s in (current or {}).get("series", [])}
    for instance in added:
        entry = series.get(instance.series_uid)
        if entry is None:
            entry = series[instance.series_uid] = _series(instance)
        entry["numberOfInstances"] = int(entry.get("numberOfInstances", 0)) + 1
    ordered = sorted(series.values(), key=lambda s: (s.get("number", 1 << 30), s["uid"]))
    modalities = list(dict.fromkeys(s["modality"]["code"] for s in ordered))
    resource: dict[str, Any] = {
        "resourceType": STUDY,
        "identifier": [
            {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{first.study_uid}"},
            {"type": {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "ACSN"}]}, "system": ACCESSION_SYSTEM,
             "value": accession},
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": code} for code in modalities],
        "subject": {"reference": f"Patient/{patient_id}"},
        "basedOn": [{"reference": f"ServiceRequest/{order_id}"}],
        "numberOfSeries": len(ordered),
        "numberOfInstances": sum(int(s["numberOfInstances"]) for s in ordered),
        "series": ordered,
    }
    started = (current or {}).get("started") or first.study_date
    if started:
        resource["started"] = started
    return stamp(resource, first.study_uid, version, now)


def _series(instance: Instance) -> dict[str, Any]:
    entry: dict[str, Any] = {"uid": instance.series_uid,
                             "modality": {"system": DCM, "code": instance.modality or "OT"}}
    if instance.series_number is not None:
        entry["number"] = instance.series_number
    if instance.series_description:
        entry["description"] = instance.series_description
    if instance.body_part:
        entry["bodySite"] = {"display": instance.body_part}
    return entry


def index_entry(resource: dict[str, Any]) -> Entry:
    """Found by patient, by order, by accession number or study UID, or among all the tenant's studies;
    filtered by modality; sorted by date."""
    study_uid = resource["id"]
    accession = next((i["value"] for i in resource.get("identifier", []) if i.get("system") == ACCESSION_SYSTEM), "")
    return Entry(
        sort=str(resource.get("started") or resource["meta"]["lastUpdated"]),
        facets={"patient": (records.subject_of(resource) or "",), "order": (order_of(resource),),
                "all": ("studies",),  # the tenant's studies by date, for DICOMweb searches without a key
                "identifier": tuple(v for v in (accession, f"urn:oid:{study_uid}", study_uid) if v)},
        attrs={"modality": [m["code"] for m in resource.get("modality", [])]},
    )


def order_of(resource: dict[str, Any]) -> str:
    """The id of the imaging order a study was made for."""
    return str(resource["basedOn"][0]["reference"]).removeprefix("ServiceRequest/")
