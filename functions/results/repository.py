"""The only code that talks to DynamoDB for results.

Items in the ``results`` table (layout hidden from callers; see :mod:`expediente.clinical`):
- versioned ``Observation`` (``<tenant>#Observation#<id>`` / ``CURRENT`` and ``V#n``), bodies
  encrypted with the tenant's envelope; notes read the same items through
  :func:`expediente.records.load` to check the Observations a note references;
- search index items per facet (``<tenant>#Observation#IX#<facet>#<value>`` / ``<instant>#<id>``):
  a patient's or an encounter's Observations, newest measurement first.
"""

from __future__ import annotations

from functools import cache

from expediente.clinical import ClinicalRepository
from expediente.settings import settings

TYPES = ("Observation",)


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_results, types=TYPES)
