"""The only code that talks to DynamoDB for notes.

Items in the ``notes`` table (layout hidden from callers; see :mod:`expediente.clinical`):
- versioned ``Encounter``, ``Composition``, ``Condition`` and ``Provenance``
  (``<tenant>#<Type>#<id>`` / ``CURRENT`` and ``V#n``), bodies encrypted with the tenant's envelope;
- search index items per facet (``<tenant>#<Type>#IX#<facet>#<value>`` / ``<date>#<id>``):
  a patient's, an encounter's, an author's or a clinic's resources, newest first.

A signed note's ``CURRENT`` item also carries server attributes that are not part of the signed
body: ``provenance`` (the signature's Provenance id) and ``addenda`` (signed addenda that append
to, replace or retract it).
"""

from __future__ import annotations

from functools import cache

from expediente.clinical import ClinicalRepository
from expediente.settings import settings

TYPES = ("Encounter", "Composition", "Condition", "Provenance")


@cache
def repository() -> ClinicalRepository:
    return ClinicalRepository(table=settings().table_notes, types=TYPES)
