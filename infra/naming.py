"""Names derived from definitions ids, so construct ids and physical names stay stable.

Tables and buckets have fixed physical names: both stacks derive them from the same ids, so the
stateless stack refers to them by name (no cross-stack token in its IAM policies, which stay
readable and give cdk-nag findings stable ids), and operators and the local stack can predict them.
"""

from __future__ import annotations

import aws_cdk as cdk


def pascal(identifier: str) -> str:
    """``audit_archive`` -> ``AuditArchive``: construct ids from definition ids."""
    return "".join(part[:1].upper() + part[1:] for part in identifier.replace("-", "_").split("_"))


def stage_prefix(stage: str | None) -> str:
    """``dev`` -> ``dev-``; no stage -> empty. Prefixes stack names and account-unique names."""
    return f"{stage}-" if stage else ""


def table_name(prefix: str, table_id: str) -> str:
    """``expediente-<id>`` with the stage prefix: unique per account and region."""
    return f"{prefix}expediente-{table_id.replace('_', '-')}"


def bucket_name(prefix: str, bucket_id: str) -> str:
    """``expediente-<id>-<account>-<region>`` with the stage prefix: S3 names are global.

    Keep stage names short: a bucket name has at most 63 characters.
    """
    return f"{prefix}expediente-{bucket_id.replace('_', '-')}-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"


def sign_in_log_group_name(prefix: str) -> str:
    """The log group Cognito exports its sign-in events to (decision 0029), under ``/aws/vendedlogs/`` as AWS
    advises for log groups a service delivers to."""
    return f"/aws/vendedlogs/cognito/{prefix}expediente-sign-in-events"
