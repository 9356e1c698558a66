"""What the stateful stack shares with the functions: :class:`SharedResources`.

Its own module so that the function construct can be used in both stacks (the user pool's
trigger function lives in the stateful stack, decision 0029) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import definitions
from infra.naming import pascal


@dataclass(frozen=True)
class SharedResources:
    """What the stateless stack may use from the stateful one.

    Tables and buckets are passed by physical name (see ``infra.naming``) and imported into the
    consumer's scope with :meth:`table` and :meth:`bucket`, so grants on them name literal ARNs.
    """

    table_names: Mapping[str, str]
    bucket_names: Mapping[str, str]
    storage_key: kms.IKey
    app_key: kms.IKey
    logs_key: kms.IKey
    event_bus: events.IEventBus
    # None only for the user pool's own trigger function, made before the pool (decision 0029).
    user_pool: cognito.IUserPool | None
    user_pool_client: cognito.IUserPoolClient | None
    alarm_topic: sns.ITopic
    queues: Mapping[str, sqs.IQueue]
    ingest_queue: sqs.IQueue
    topics: Mapping[str, sns.ITopic]
    # Signs the audit trail's periodic digests (decision 0022); no one else signs with it.
    audit_digest_key: kms.IKey
    # The log group Cognito exports its sign-in events to (userAuthEvents); the admin function
    # subscribes to it and audits the failed sign-ins (decision 0029).
    sign_in_log_group_name: str = ""

    def table(self, scope: Construct, table_id: str) -> dynamodb.ITable:
        """Table ``table_id`` (with its indexes and key) as a reference inside ``scope``."""
        table_def = definitions.table(table_id)
        return dynamodb.Table.from_table_attributes(
            scope, f"{pascal(table_id)}Table",
            table_name=self.table_names[table_id],
            encryption_key=self.storage_key,
            global_indexes=[index.name for index in table_def.indexes] or None,
        )

    def bucket(self, scope: Construct, bucket_id: str) -> s3.IBucket:
        """Bucket ``bucket_id`` (with its key) as a reference inside ``scope``."""
        return s3.Bucket.from_bucket_attributes(
            scope, f"{pascal(bucket_id)}Bucket",
            bucket_name=self.bucket_names[bucket_id],
            encryption_key=self.storage_key,
        )
