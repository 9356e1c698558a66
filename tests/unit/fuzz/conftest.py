"""The HL7 ingest fuzz runs in the notes world (a chain, its clinic, staff with practitioners, patients)."""

from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    admin_world,
    chain,
    physician,
    reception,
)
