"""Names derived from definitions ids, so construct ids and logical ids stay stable."""

from __future__ import annotations


def pascal(identifier: str) -> str:
    """``audit_archive`` -> ``AuditArchive``: construct ids from definition ids."""
    return "".join(part[:1].upper() + part[1:] for part in identifier.replace("-", "_").split("_"))


def stage_prefix(stage: str | None) -> str:
    """``dev`` -> ``dev-``; no stage -> empty. Prefixes stack names and account-unique names."""
    return f"{stage}-" if stage else ""
