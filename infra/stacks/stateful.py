"""The stateful stack: everything that holds data or identity and must outlive a redeploy.

Keys, DynamoDB tables, S3 buckets, the user pool, the event bus with its rules, queues and
topics, the CloudTrail trail and the backup plan. Every resource here is ``RETAIN``; tables and
the user pool also have deletion protection. All of it is built by iterating over
``infra.definitions``, so a table, bucket, queue, topic, rule or role added there appears here
with no other change.

The stateless stack receives :class:`SharedResources`, never this stack itself.

Identity includes the user pool's sign-in audit (decision 0029): its trigger function
(``definitions.SIGN_IN``, with its own copy of the dependency layer) and the log group Cognito
exports its sign-in events to. A trigger must exist before the pool that names it, and a function in
the stateless stack would make the two stacks reference each other.
"""

from __future__ import annotations

import dataclasses

import aws_cdk as cdk
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import definitions, delivery
from infra.build import BuildPaths, build_all
from infra.constructs.function import ExpedienteFunction, dependency_layer
from infra.nag import INLINE_POLICY_REASON, acknowledge
from infra.naming import bucket_name, pascal, sign_in_log_group_name, table_name
from infra.shared import SharedResources

__all__ = ["SharedResources", "StatefulStack"]

# NOM-004-SSA3 5.4: the clinical record is kept at least five years; logs that prove who saw
# it are kept as long.
RECORD_RETENTION = cdk.Duration.days(5 * 365 + 2)
LOG_RETENTION = logs.RetentionDays.FIVE_YEARS
# The bucket whose uploads feed the DICOM ingest queue (BucketDef has no notification field yet).
INGEST_BUCKET = "ingest"

_REPLICATION_REASON = (
    "Cross-region replication is a per-deployment disaster-recovery choice: the only AWS region "
    "in Mexico is mx-central-1, and copying clinical data abroad needs the data controller's "
    "consent (LFPDPPP). Durability comes from versioning, RETAIN and S3's multi-AZ storage."
)

class StatefulStack(cdk.Stack):
    """Keys, tables, buckets, identity, events and audit trail; exposes :attr:`resources`."""

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str = "", build: BuildPaths | None = None,
                 **kwargs: object) -> None:
        """``name_prefix`` (e.g. ``dev-``) keeps account-unique names (aliases, trail) apart per stage.

        ``build`` (from :func:`infra.build.build_all`, built here when omitted) holds the sign-in trigger's code.
        """
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self._prefix = name_prefix
        build = build or build_all()

        self.storage_key = self._key("Storage", "DynamoDB tables and S3 buckets holding clinical data")
        self.messaging_key = self._key(
            "Messaging",
            "SQS queues and SNS topics; kept apart from the storage key because AWS services "
            "(S3, EventBridge, CloudWatch) need grants on it",
        )
        self.app_key = self._key(
            "App", "application-level envelope encryption (CURP, narrative) and blind-index keys"
        )
        self.logs_key = self._logs_key()
        self.trail_key = self._key("Trail", "CloudTrail log files")
        self.audit_digest_key = self._audit_digest_key()

        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", display_name="Expediente alarms", master_key=self.messaging_key,
            enforce_ssl=True,
        )
        # CloudWatch alarms publish to the encrypted topic as the CloudWatch service principal.
        self.messaging_key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )

        self.tables = {t.id: self._table(t) for t in definitions.TABLES}
        self._backup_plan()

        self.access_logs_bucket = self._access_logs_bucket()
        self.buckets = {b.id: self._bucket(b) for b in definitions.BUCKETS}

        self.event_bus = events.EventBus(self, "EventBus", description="Expediente domain events")
        self.queues = {q.id: self._queue(q.id, q.purpose) for q in definitions.QUEUES}
        self.topics = {t.id: self._topic(t) for t in definitions.TOPICS}
        self.rules = {rule.id: self._rule(rule) for rule in definitions.RULES}
        self.ingest_queue = self.queues[delivery.INGEST_QUEUE_ID]
        self._notify_on_upload(self.buckets[INGEST_BUCKET], self.ingest_queue)

        before_identity = SharedResources(
            table_names={t.id: table_name(name_prefix, t.id) for t in definitions.TABLES},
            bucket_names={b.id: bucket_name(name_prefix, b.id) for b in definitions.BUCKETS},
            queues=self.queues,
            ingest_queue=self.ingest_queue,
            topics=self.topics,
            storage_key=self.storage_key,
            app_key=self.app_key,
            logs_key=self.logs_key,
            event_bus=self.event_bus,
            user_pool=None,
            user_pool_client=None,
            alarm_topic=self.alarm_topic,
            audit_digest_key=self.audit_digest_key,
        )
        self.sign_in = self._sign_in_trigger(build, before_identity)
        self.functions = {definitions.SIGN_IN.id: self.sign_in}  # the identity functions, by id
        self.user_pool, self.user_pool_client = self._user_pool(self.sign_in)
        self.sign_in_log_group = self._sign_in_event_log(self.user_pool)
        self._trail()

        self.resources = dataclasses.replace(
            before_identity, user_pool=self.user_pool, user_pool_client=self.user_pool_client,
            sign_in_log_group_name=sign_in_log_group_name(name_prefix),
        )
        self._outputs()

    # Keys ----------------------------------------------------------------------------------------

    def _key(self, name: str, purpose: str) -> kms.Key:
        return kms.Key(
            self, f"{name}Key",
            description=f"Expediente: {purpose}",
            alias=f"alias/{self._prefix}expediente/{name.lower()}",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _audit_digest_key(self) -> kms.Key:
        """ECDSA P-256 key that signs the audit digests; verifiers use its public key (decision 0022).

        Asymmetric keys cannot rotate automatically; a new key can replace it (old digests name the
        key that signed them and stay verifiable with its public key).
        """
        key = kms.Key(
            self, "AuditDigestKey",
            description="Expediente: signs the periodic digests of the audit trail's hash chains",
            alias=f"alias/{self._prefix}expediente/audit-digest",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        return key

    def _logs_key(self) -> kms.Key:
        key = self._key("Logs", "CloudWatch Logs log groups (functions, API access, trail, WAF)")
        # CloudWatch Logs uses the key as its regional service principal, bound by encryption
        # context to log groups of this account and region.
        key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{cdk.Aws.REGION}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                     "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {
                "kms:EncryptionContext:aws:logs:arn":
                    f"arn:{cdk.Aws.PARTITION}:logs:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:log-group:*",
            }},
        ))
        return key

    # Tables --------------------------------------------------------------------------------------

    def _table(self, table_def: definitions.TableDef) -> dynamodb.Table:
        string = dynamodb.AttributeType.STRING
        table = dynamodb.Table(
            self, f"{pascal(table_def.id)}Table",
            table_name=table_name(self._prefix, table_def.id),
            partition_key=dynamodb.Attribute(name=table_def.pk, type=string),
            sort_key=dynamodb.Attribute(name=table_def.sk, type=string) if table_def.sk else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.storage_key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True,
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            time_to_live_attribute=table_def.ttl_attribute,
        )
        for index in table_def.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.pk, type=string),
                sort_key=dynamodb.Attribute(name=index.sk, type=string),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def _backup_plan(self) -> None:
        """Daily/weekly/monthly backups kept five years (NOM-004 5.4), on top of 35-day PITR."""
        vault = backup.BackupVault(
            self, "BackupVault", encryption_key=self.storage_key, removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        plan = backup.BackupPlan.daily_weekly_monthly5_year_retention(self, "BackupPlan", vault)
        selection = plan.add_selection(
            "Tables",
            resources=[backup.BackupResource.from_dynamo_db_table(t) for t in self.tables.values()],
        )
        acknowledge(
            selection, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSBackupServiceRolePolicyForBackup]",
            "AWS Backup's own service-role policy is the documented, AWS-maintained minimum for the "
            "role that AWS Backup assumes to snapshot the tables.",
        )

    # Buckets -------------------------------------------------------------------------------------

    def _secure_bucket_props(self) -> dict[str, object]:
        return {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "versioned": True,
            "removal_policy": cdk.RemovalPolicy.RETAIN,
            "auto_delete_objects": False,
            "lifecycle_rules": [s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(7))],
        }

    def _access_logs_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self, "AccessLogsBucket",
            # S3 server access logging delivers only to SSE-S3 buckets, never SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            **self._secure_bucket_props(),  # type: ignore[arg-type]
        )
        acknowledge(bucket, "HIPAA.Security-S3DefaultEncryptionKMS",
                    "S3 server access logging can only deliver to SSE-S3 buckets; the logs hold "
                    "request metadata, not clinical data.")
        acknowledge(bucket, "HIPAA.Security-S3BucketReplicationEnabled", _REPLICATION_REASON)
        return bucket

    def _bucket(self, bucket_def: definitions.BucketDef) -> s3.Bucket:
        bucket = s3.Bucket(
            self, f"{pascal(bucket_def.id)}Bucket",
            bucket_name=bucket_name(self._prefix, bucket_def.id),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.storage_key,
            bucket_key_enabled=True,  # one KMS call per bucket key, not per object
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=f"{bucket_def.id}/",
            # ASTM E2147 (decision 0022): COMPLIANCE mode, so no one, root included, can shorten the
            # retention or delete or overwrite a version before it ends.
            object_lock_enabled=True if bucket_def.object_lock_years else None,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(
                cdk.Duration.days(bucket_def.object_lock_years * 365 + 3)) if bucket_def.object_lock_years else None,
            **self._secure_bucket_props(),  # type: ignore[arg-type]
        )
        acknowledge(bucket, "HIPAA.Security-S3BucketReplicationEnabled", _REPLICATION_REASON)
        return bucket

    # Events and queues ---------------------------------------------------------------------------

    def _queue(self, queue_id: str, purpose: str) -> sqs.Queue:
        """A KMS-encrypted, TLS-only queue with an alarmed dead-letter queue.

        Its visibility timeout comes from ``infra.delivery`` (longer for queues that functions
        consume, so a batch being processed is never delivered twice).
        """
        name = pascal(queue_id)
        visibility = delivery.visibility_timeout_s(queue_id)
        dlq = sqs.Queue(
            self, f"{name}DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.messaging_key,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        queue = sqs.Queue(
            self, f"{name}Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.messaging_key,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(visibility) if visibility is not None else None,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=delivery.MAX_RECEIVE_COUNT, queue=dlq),
        )
        alarm = cloudwatch.Alarm(
            self, f"{name}DeadLetterAlarm",
            alarm_description=f"Messages parked in the dead-letter queue of: {purpose}",
            metric=dlq.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(5)),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))
        return queue

    def _topic(self, topic_def: definitions.TopicDef) -> sns.Topic:
        """An SNS topic encrypted with the messaging key (as the queues are), reachable over TLS only.

        EventBridge rules publish to it (``RuleDef.target_topics``); people's notification channels
        (e-mail, SMS, a paging service) subscribe to it per deployment, outside this stack.
        """
        return sns.Topic(
            self, f"{pascal(topic_def.id)}Topic",
            # Shown as the sender of e-mail and SMS notifications: short, letters and spaces only.
            display_name=f"Expediente {topic_def.id.replace('_', ' ')}"[:100],
            master_key=self.messaging_key,
            enforce_ssl=True,
        )

    def _rule(self, rule_def: definitions.RuleDef) -> events.Rule:
        queue = self.queues[rule_def.target_queue]
        # Events that cannot be delivered go to the queue's own dead-letter queue, whichever
        # target refused them: one place to look for lost events of this rule.
        dlq = queue.dead_letter_queue.queue if queue.dead_letter_queue else None
        rule_targets: list[events.IRuleTarget] = [targets.SqsQueue(queue, dead_letter_queue=dlq)]
        for topic_id in rule_def.target_topics:
            # SnsTopic adds the topic policy statement that lets events.amazonaws.com publish and,
            # since the topic is encrypted, lets it use the messaging key (kms:Decrypt and
            # kms:GenerateDataKey*), without which SNS refuses EventBridge's publish
            # (tests/infra checks both statements).
            rule_targets.append(targets.SnsTopic(self.topics[topic_id], dead_letter_queue=dlq))
        return events.Rule(
            self, f"{pascal(rule_def.id)}Rule",
            event_bus=self.event_bus,
            event_pattern=events.EventPattern(
                source=[rule_def.source], detail_type=list(rule_def.detail_types),
            ),
            targets=rule_targets,
        )

    def _notify_on_upload(self, bucket: s3.Bucket, queue: sqs.Queue) -> None:
        """S3 ObjectCreated → queue, declared on the bucket itself.

        CDK's ``add_event_notification`` would add a custom-resource Lambda to the stack; the
        native ``NotificationConfiguration`` needs none. S3 checks the destination when the
        bucket is created, so the bucket waits for the queue policy. The policy is bound to this
        account rather than to the bucket ARN, which would make the two depend on each other.
        """
        queue.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("s3.amazonaws.com")],
            actions=["sqs:SendMessage"],
            resources=[queue.queue_arn],
            conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
        ))
        # S3 encrypts the notification with the queue's key as its service principal.
        self.messaging_key.grant(iam.ServicePrincipal("s3.amazonaws.com"), "kms:GenerateDataKey", "kms:Decrypt")
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[s3.CfnBucket.QueueConfigurationProperty(
                event="s3:ObjectCreated:*", queue=queue.queue_arn,
            )],
        )
        # add_to_resource_policy created the queue's QueuePolicy child.
        cfn_bucket.node.add_dependency(queue.node.find_child("Policy"))

    # Identity ------------------------------------------------------------------------------------

    def _sign_in_trigger(self, build: BuildPaths, shared: SharedResources) -> ExpedienteFunction:
        """The pool's PreAuthentication and PostAuthentication trigger (``functions/sign_in``), with its own
        copy of the dependency layer (same asset as the stateless stack's)."""
        definition = definitions.SIGN_IN
        layer = dependency_layer(self, "SignInDependenciesLayer", layer_dir=build.layer, used_by=" (sign-in trigger)")
        return ExpedienteFunction(self, f"{pascal(definition.id)}Function", definition=definition,
                                  code=build.functions[definition.id], layer=layer, shared=shared)

    def _sign_in_event_log(self, pool: cognito.UserPool) -> logs.LogGroup:
        """Cognito's sign-in events (``userAuthEvents``, Plus plan with threat protection) exported to a log
        group, to which the admin function subscribes to audit failed sign-ins (decision 0029)."""
        group = logs.LogGroup(
            self, "SignInEventLogs",
            log_group_name=sign_in_log_group_name(self._prefix),
            retention=LOG_RETENTION,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(group, "HIPAA.Security-CloudWatchLogGroupEncrypted",
                    "Cognito delivers its sign-in event log only to a log group without a KMS key (Cognito API "
                    "reference, CloudWatchLogsConfigurationType); CloudWatch Logs still encrypts it at rest with its "
                    "own keys. It holds usernames, addresses and risk verdicts, no clinical data.")
        # Cognito refuses the ARN with the trailing ``:*`` that ``log_group_arn`` carries.
        arn = cdk.Stack.of(self).format_arn(service="logs", resource="log-group",
                                            resource_name=sign_in_log_group_name(self._prefix),
                                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
        delivery = cognito.CfnLogDeliveryConfiguration(
            self, "SignInEventLogDelivery", user_pool_id=pool.user_pool_id,
            log_configurations=[cognito.CfnLogDeliveryConfiguration.LogConfigurationProperty(
                event_source="userAuthEvents", log_level="INFO",
                cloud_watch_logs_configuration=cognito.CfnLogDeliveryConfiguration.CloudWatchLogsConfigurationProperty(
                    log_group_arn=arn),
            )],
        )
        delivery.node.add_dependency(group)  # the ARN is literal, so name the dependency
        return group

    def _user_pool(self, sign_in: ExpedienteFunction) -> tuple[cognito.UserPool, cognito.UserPoolClient]:
        pool = cognito.UserPool(
            self, "UserPool",
            sign_in_aliases=cognito.SignInAliases(username=True),
            sign_in_case_sensitive=False,
            self_sign_up_enabled=False,  # users are created by a tenant admin (functions/admin)
            # Every user has TOTP MFA, which covers the signing roles (definitions.SIGNING_ROLES).
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(
                min_length=14, require_lowercase=True, require_uppercase=True, require_digits=True,
                require_symbols=True, temp_password_validity=cdk.Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=False, mutable=True),
            ),
            custom_attributes={
                name: cognito.StringAttribute(mutable=True) for name in definitions.USER_ATTRIBUTES
            },
            # Plus: threat protection, and the sign-in event log that records failed sign-ins (decision 0029).
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            # Every sign-in attempt and success in the tenant's audit trail; no sign-in without its record.
            lambda_triggers=cognito.UserPoolTriggers(
                pre_authentication=sign_in.alias, post_authentication=sign_in.alias,
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self._risk_configuration(pool)
        for role in definitions.ROLES:
            cognito.UserPoolGroup(
                self, f"{pascal(role)}Group", user_pool=pool, group_name=role,
                description=f"Expediente role: {role}",
            )
        # Users must never write their own custom attributes: the tenant and clinics come from
        # them (decision 3), so only admin APIs (AdminUpdateUserAttributes) may change them.
        readable = cognito.ClientAttributes().with_standard_attributes(
            email=True, email_verified=True, locale=True, timezone=True,
        ).with_custom_attributes(*definitions.USER_ATTRIBUTES)
        writable = cognito.ClientAttributes().with_standard_attributes(locale=True, timezone=True)
        client = pool.add_client(
            "AppClient",
            auth_flows=cognito.AuthFlow(user_password=True, user_srp=True),
            generate_secret=False,  # mobile and browser apps cannot keep a secret
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            access_token_validity=cdk.Duration.minutes(60),
            id_token_validity=cdk.Duration.minutes(60),
            refresh_token_validity=cdk.Duration.hours(12),  # one clinical shift
            read_attributes=readable,
            write_attributes=writable,
        )
        return pool, client

    def _risk_configuration(self, pool: cognito.UserPool) -> None:
        """What threat protection does (all app clients): block sign-ins and password changes with credentials
        known to be leaked, and high-risk sign-ins; ask for MFA at medium risk (every user has TOTP). No
        e-mail notification: it would need an SES identity per deployment."""
        risk = cognito.CfnUserPoolRiskConfigurationAttachment
        cognito.CfnUserPoolRiskConfigurationAttachment(
            self, "ThreatProtection", user_pool_id=pool.user_pool_id, client_id="ALL",
            compromised_credentials_risk_configuration=risk.CompromisedCredentialsRiskConfigurationTypeProperty(
                actions=risk.CompromisedCredentialsActionsTypeProperty(event_action="BLOCK"),
                event_filter=["SIGN_IN", "PASSWORD_CHANGE", "SIGN_UP"],
            ),
            account_takeover_risk_configuration=risk.AccountTakeoverRiskConfigurationTypeProperty(
                actions=risk.AccountTakeoverActionsTypeProperty(
                    high_action=risk.AccountTakeoverActionTypeProperty(event_action="BLOCK", notify=False),
                    medium_action=risk.AccountTakeoverActionTypeProperty(event_action="MFA_REQUIRED", notify=False),
                    low_action=risk.AccountTakeoverActionTypeProperty(event_action="NO_ACTION", notify=False),
                ),
            ),
        )

    # Audit trail ---------------------------------------------------------------------------------

    def _trail(self) -> cloudtrail.Trail:
        """Multi-region trail with management events plus S3 and DynamoDB data events."""
        trail_name = f"{self._prefix}expediente"
        trail_arn = (f"arn:{cdk.Aws.PARTITION}:cloudtrail:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
                     f":trail/{trail_name}")
        self.trail_key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
            actions=["kms:GenerateDataKey*"],
            resources=["*"],
            conditions={
                "StringEquals": {"aws:SourceArn": trail_arn},
                "StringLike": {
                    "kms:EncryptionContext:aws:cloudtrail:arn":
                        f"arn:{cdk.Aws.PARTITION}:cloudtrail:*:{cdk.Aws.ACCOUNT_ID}:trail/*",
                },
            },
        ))
        self.trail_key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
            actions=["kms:DescribeKey"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
        ))
        trail_bucket = s3.Bucket(
            self, "TrailBucket",
            # CloudTrail encrypts each log file with the trail key itself (SSE-KMS). The bucket
            # default stays SSE-S3, as in CDK's own trail bucket: a KMS default (and bucket keys)
            # would change the encryption context that the trail key policy is bound to.
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="trail/",
            **self._secure_bucket_props(),  # type: ignore[arg-type]
        )
        acknowledge(trail_bucket, "HIPAA.Security-S3DefaultEncryptionKMS",
                    "CloudTrail writes every log file SSE-KMS with the trail key; the SSE-S3 default "
                    "only covers CloudTrail's digest files, which hold hashes, not events.")
        acknowledge(trail_bucket, "HIPAA.Security-S3BucketReplicationEnabled", _REPLICATION_REASON)
        log_group = logs.LogGroup(
            self, "TrailLogs", encryption_key=self.logs_key, retention=LOG_RETENTION,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        trail = cloudtrail.Trail(
            self, "Trail",
            trail_name=trail_name,
            bucket=trail_bucket,
            encryption_key=self.trail_key,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_file_validation=True,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=log_group,
        )
        acknowledge(trail.node.find_child("LogsRole").node.find_child("DefaultPolicy"),
                    "HIPAA.Security-IAMNoInlinePolicy", INLINE_POLICY_REASON)
        cfn_trail = trail.node.default_child
        assert isinstance(cfn_trail, cloudtrail.CfnTrail)
        # The L2 construct only knows basic event selectors (S3 and Lambda); DynamoDB data events
        # need advanced selectors, and a trail cannot mix both kinds.
        cfn_trail.add_property_deletion_override("EventSelectors")
        selector = cloudtrail.CfnTrail.AdvancedEventSelectorProperty
        field = cloudtrail.CfnTrail.AdvancedFieldSelectorProperty
        cfn_trail.advanced_event_selectors = [
            selector(name="Management events", field_selectors=[
                field(field="eventCategory", equal_to=["Management"]),
            ]),
            selector(name="S3 object events on clinical buckets", field_selectors=[
                field(field="eventCategory", equal_to=["Data"]),
                field(field="resources.type", equal_to=["AWS::S3::Object"]),
                field(field="resources.ARN",
                      starts_with=[f"{b.bucket_arn}/" for b in self.buckets.values()]),
            ]),
            selector(name="DynamoDB item events on clinical tables", field_selectors=[
                field(field="eventCategory", equal_to=["Data"]),
                field(field="resources.type", equal_to=["AWS::DynamoDB::Table"]),
                field(field="resources.ARN", equal_to=[t.table_arn for t in self.tables.values()]),
            ]),
        ]
        return trail

    # Outputs -------------------------------------------------------------------------------------

    def _outputs(self) -> None:
        cdk.CfnOutput(self, "AppKeyArn", value=self.app_key.key_arn,
                      export_name=f"{self._prefix}Expediente-AppKeyArn",
                      description="KMS key for application-level envelope encryption")
        cdk.CfnOutput(self, "UserPoolId", value=self.user_pool.user_pool_id)
        cdk.CfnOutput(self, "UserPoolClientId", value=self.user_pool_client.user_pool_client_id)
        cdk.CfnOutput(self, "EventBusName", value=self.event_bus.event_bus_name)
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic_arn,
                      description="Subscribe the on-call address here")
        cdk.CfnOutput(self, "IngestBucketName", value=self.buckets[INGEST_BUCKET].bucket_name)
        for topic_def in definitions.TOPICS:
            cdk.CfnOutput(self, f"{pascal(topic_def.id)}TopicArn", value=self.topics[topic_def.id].topic_arn,
                          description=f"Subscribe notification channels here: {topic_def.purpose}")

