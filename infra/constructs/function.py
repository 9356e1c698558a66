"""The one construct that makes every Expediente Lambda function.

Everything that is the same for all functions lives here (runtime, architecture, layer, tracing,
logging, SnapStart, alias, alarm, role); what differs comes from the function's
:class:`~infra.definitions.FunctionDef`. Permissions are granted only through ``grant_*`` on the
resources the definition names, so a function can touch nothing it did not declare.

Queues the function consumes (``FunctionDef.consumes``) are delivered to its ``live`` alias by SQS
event source mappings that report partial batch failures: the records a handler lists in
``batchItemFailures`` return to the queue, whose redrive policy parks them in its dead-letter
queue after ``MAX_RECEIVE_COUNT`` receives.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from infra import definitions, delivery, tenancy
from infra.nag import INLINE_POLICY_REASON, acknowledge, rendered
from infra.shared import SharedResources

RUNTIME = lambda_.Runtime.PYTHON_3_12
ALIAS_NAME = "live"
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
METRICS_NAMESPACE = "Expediente"

# The Cognito admin API calls a user-managing function may make, on its own pool only. They
# must cover every call in functions/admin (tests/infra checks the code against this list).
COGNITO_ADMIN_ACTIONS = (
    "cognito-idp:AdminCreateUser",
    "cognito-idp:AdminAddUserToGroup",
    "cognito-idp:AdminRemoveUserFromGroup",
    "cognito-idp:AdminUpdateUserAttributes",
    "cognito-idp:AdminDeleteUserAttributes",  # clearing a user's clinics or practitioner link
    "cognito-idp:AdminDisableUser",
    "cognito-idp:AdminEnableUser",
    "cognito-idp:AdminGetUser",
    "cognito-idp:ListUsers",
    "cognito-idp:AdminListGroupsForUser",
    "cognito-idp:AdminUserGlobalSignOut",  # revoke tokens when role, clinics or status change
    "cognito-idp:AdminSetUserPassword",  # initial password chosen by the tenant admin
    "cognito-idp:AdminDeleteUser",  # only to undo a half-created account
)


# Practitioners' signing keys (layers/common/expediente/signing.py tags every key it creates with
# purpose=practitioner-signing); IAM conditions keep both grants to those keys only.
SIGNING_KEY_TAG = ("purpose", "practitioner-signing")
SIGNING_KEY_CREATE_ACTIONS = ("kms:CreateKey", "kms:TagResource")
SIGNING_KEY_MANAGE_ACTIONS = ("kms:GetPublicKey", "kms:ScheduleKeyDeletion")
SIGNING_KEY_SIGN_ACTIONS = ("kms:Sign",)


def dependency_layer(scope: Construct, construct_id: str, *, layer_dir: Path,
                     used_by: str = "") -> lambda_.LayerVersion:
    """The dependency layer (``infra.build``'s ``build/layer``: runtime dependencies and ``expediente``)."""
    return lambda_.LayerVersion(
        scope, construct_id,
        code=lambda_.Code.from_asset(str(layer_dir)),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[lambda_.Architecture.ARM_64],
        description="Expediente runtime dependencies and the shared expediente package" + used_by,
    )


def handler_for(function_id: str) -> str:
    """The handler string for a function asset built by ``infra.build``."""
    return f"functions.{function_id}.handler.lambda_handler"


def _bucket_ids(definition: definitions.FunctionDef) -> tuple[str, ...]:
    """Every bucket the function touches, each once."""
    return tuple(dict.fromkeys((*definition.buckets_write, *definition.buckets_read, *definition.buckets_upload,
                                *definition.buckets_delete)))


class ExpedienteFunction(Construct):
    """A domain function: Python 3.12 on arm64, published with SnapStart behind alias ``live``.

    Attributes: ``function`` (the unversioned function), ``alias`` (what callers must invoke),
    ``role``, ``log_group`` and ``errors_alarm``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition: definitions.FunctionDef,
        code: Path,
        layer: lambda_.ILayerVersion,
        shared: SharedResources,
    ) -> None:
        """``code`` is the asset directory holding the ``<id>`` package (see ``infra.build``).

        Raises KeyError when the definition names a table or bucket that ``shared`` lacks.
        """
        super().__init__(scope, construct_id)
        self.definition = definition
        self._tables = {t: shared.table(self, t) for t in dict.fromkeys((*definition.writes, *definition.reads))}
        self._buckets = {b: shared.bucket(self, b) for b in _bucket_ids(definition)}

        # Our own role, without the AWSLambdaBasicExecutionRole managed policy: log writes are
        # granted on this function's log group only.
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Expediente {definition.id} function",
        )
        # Decision 0023: tenant data is reached only through this role, assumed by the function with the
        # session tag tenant=<tenant>; its policy names the tenant's keys, objects and encryption context.
        self.tenant_role = iam.Role(
            self, "TenantDataRole",
            assumed_by=iam.PrincipalWithConditions(
                iam.SessionTagsPrincipal(iam.ArnPrincipal(self.role.role_arn)),
                {"Null": {f"aws:RequestTag/{tenancy.TENANT_TAG}": "false"},
                 "ForAllValues:StringEquals": {"aws:TagKeys": [tenancy.TENANT_TAG]}},
            ),
            description=f"Expediente {definition.id} function: one tenant's data (session tag tenant)",
            max_session_duration=cdk.Duration.hours(1),
        )
        self.log_group = logs.LogGroup(
            self, "Logs", encryption_key=shared.logs_key, retention=LOG_RETENTION,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.log_group.grant_write(self.role)

        self.function = lambda_.Function(
            self, "Function",
            description=definition.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler_for(definition.id),
            code=lambda_.Code.from_asset(str(code)),
            layers=[layer],
            role=self.role,
            memory_size=definition.memory_mb,
            timeout=cdk.Duration.seconds(definition.timeout_s),
            environment={**self._environment(definition, shared), "TENANT_ROLE_ARN": self.tenant_role.role_arn},
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS,
        )
        self.alias = lambda_.Alias(
            self, "Alias", alias_name=ALIAS_NAME, version=self.function.current_version,
        )
        self._grant(definition, shared)
        self._consume(definition, shared)
        self.errors_alarm = self._errors_alarm(shared)
        self._acknowledge()

    @staticmethod
    def _environment(definition: definitions.FunctionDef, shared: SharedResources) -> dict[str, str]:
        env = {
            "POWERTOOLS_SERVICE_NAME": f"{definitions.SERVICE}-{definition.id}",
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "KEY_APP_ARN": shared.app_key.key_arn,
            "EVENT_BUS_NAME": shared.event_bus.event_bus_name,
        }
        if shared.user_pool is not None and shared.user_pool_client is not None:  # not the pool's own trigger
            env["USER_POOL_ID"] = shared.user_pool.user_pool_id
            env["USER_POOL_CLIENT_ID"] = shared.user_pool_client.user_pool_client_id
        for table_id in (*definition.writes, *definition.reads):
            env[definitions.table(table_id).env] = shared.table_names[table_id]
        buckets = {b.id: b for b in definitions.BUCKETS}
        for bucket_id in _bucket_ids(definition):
            env[buckets[bucket_id].env] = shared.bucket_names[bucket_id]
        env.update(definition.env)
        return env

    def _grant(self, definition: definitions.FunctionDef, shared: SharedResources) -> None:
        tables = self._tables
        self._grant_tenant_data(definition, shared)
        self._grant_global_data(definition, shared)
        if tables:
            # Decision 5: every list or search is a Query; a Scan reads every tenant's items (and carries
            # no dynamodb:LeadingKeys), so it is denied to both roles explicitly.
            for role in (self.role, self.tenant_role):
                role.add_to_principal_policy(iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    actions=["dynamodb:Scan"],
                    resources=[arn for t in tables.values() for arn in (t.table_arn, f"{t.table_arn}/index/*")],
                ))
        if definition.puts_events:
            shared.event_bus.grant_put_events_to(self.role)
        if definition.cognito_admin:
            if shared.user_pool is None:
                raise ValueError(f"{definition.id} manages users but is made without the user pool")
            shared.user_pool.grant(self.role, *COGNITO_ADMIN_ACTIONS)
        if definition.signing_keys:
            self._grant_signing_keys(definition.signing_keys)

    def _grant_tenant_data(self, definition: definitions.FunctionDef, shared: SharedResources) -> None:
        """The tenant data role: the function's tables, buckets and app key, for the tagged tenant only.

        DynamoDB: every partition key (table and index) must match ``<tenant>#*`` or ``TENANT#<tenant>``
        (``ForAllValues:StringLike`` on ``dynamodb:LeadingKeys``; the ``Null`` test refuses a request
        that carries no leading key, which ``ForAllValues`` alone would allow). S3: objects under
        ``<tenant>/`` only, never ``DeleteObjectVersion`` (NOM-004 5.11: a move leaves a delete
        marker). KMS: the app key only with the encryption context ``tenant=<tenant>``.
        """
        role, tag = self.tenant_role, tenancy.PRINCIPAL_TENANT
        leading = [p.replace("{tenant}", tag) for p in tenancy.TENANT_LEADING_KEYS]
        objects = [p.replace("{tenant}", tag) for p in tenancy.TENANT_OBJECT_KEYS]
        for table_id, table in self._tables.items():
            actions = list(tenancy.TABLE_READ_ACTIONS)
            if table_id in definition.writes:
                actions += tenancy.TABLE_WRITE_ACTIONS
            indexes = [f"{table.table_arn}/index/*"] if definitions.table(table_id).indexes else []
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=sorted(actions), resources=[table.table_arn, *indexes],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": leading},
                            "Null": {"dynamodb:LeadingKeys": "false"}},
            ))
        for bucket_id, bucket in self._buckets.items():
            actions = []
            if bucket_id in (*definition.buckets_write, *definition.buckets_read):
                actions += tenancy.OBJECT_READ_ACTIONS
            if bucket_id in (*definition.buckets_write, *definition.buckets_upload):
                actions += tenancy.OBJECT_PUT_ACTIONS
            if bucket_id in definition.buckets_delete:
                actions += tenancy.OBJECT_DELETE_ACTIONS
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=sorted(actions), resources=[bucket.arn_for_objects(p) for p in objects]))
            if bucket_id in (*definition.buckets_write, *definition.buckets_read):
                role.add_to_principal_policy(iam.PolicyStatement(
                    actions=list(tenancy.BUCKET_LIST_ACTIONS), resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": objects}},
                ))
        for grant in tenancy.global_access(definition.id, "tenant"):
            self._global_statement(role, grant)
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(tenancy.APP_KEY_ACTIONS), resources=[shared.app_key.key_arn],
            conditions={"StringEquals": {tenancy.APP_KEY_CONTEXT: tag}},
        ))
        if self._tables or self._buckets:
            self._grant_storage_key(role, shared)

    def _grant_global_data(self, definition: definitions.FunctionDef, shared: SharedResources) -> None:
        """The execution role: assume the tenant data role, and the few global items of ``infra.tenancy``."""
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sts:AssumeRole", "sts:TagSession"], resources=[self.tenant_role.role_arn],
            conditions={"Null": {f"aws:RequestTag/{tenancy.TENANT_TAG}": "false"}},
        ))
        grants = tenancy.global_access(definition.id)
        for grant in grants:
            self._global_statement(self.role, grant)
        if grants:
            self._grant_storage_key(self.role, shared)

    def _global_statement(self, role: iam.Role, grant: tenancy.GlobalAccess) -> None:
        if grant.kind == "table":
            table = self._tables[grant.resource]
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=sorted(grant.actions), resources=[table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(grant.keys)},
                            "Null": {"dynamodb:LeadingKeys": "false"}},
            ))
        else:
            bucket = self._buckets[grant.resource]
            keys = [k.replace("{tenant}", tenancy.PRINCIPAL_TENANT) for k in grant.keys]
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=sorted(grant.actions), resources=[bucket.arn_for_objects(k) for k in keys]))

    @staticmethod
    def _grant_storage_key(role: iam.Role, shared: SharedResources) -> None:
        """The tables' and buckets' KMS key, only as DynamoDB and S3 use it on the role's behalf."""
        stack = cdk.Stack.of(role)
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
            resources=[shared.storage_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": [f"dynamodb.{stack.region}.{stack.url_suffix}",
                                                            f"s3.{stack.region}.{stack.url_suffix}"]}},
        ))

    def _consume(self, definition: definitions.FunctionDef, shared: SharedResources) -> None:
        """One SQS event source per consumed queue, on the alias (the SnapStart version).

        ``SqsEventSource`` grants the role what the poller needs on that queue only (receive,
        delete, change visibility, attributes) and ``kms:Decrypt`` on the queue's key.
        """
        for queue_id in definition.consumes:
            self.alias.add_event_source(event_sources.SqsEventSource(
                shared.queues[queue_id],
                batch_size=delivery.CONSUMER_BATCH_SIZE,
                max_batching_window=cdk.Duration.seconds(delivery.CONSUMER_BATCHING_WINDOW_S),
                report_batch_item_failures=True,
            ))

    def _grant_signing_keys(self, use: str) -> None:
        """``create``: make practitioner keys (only ECC_NIST_P256 signing keys tagged for the purpose)
        and read their public key; ``sign``: sign with keys carrying that tag and nothing else."""
        stack = cdk.Stack.of(self)
        keys = f"arn:{stack.partition}:kms:{stack.region}:{stack.account}:key/*"
        tag, value = SIGNING_KEY_TAG
        if use == "create":
            self.role.add_to_principal_policy(iam.PolicyStatement(
                actions=list(SIGNING_KEY_CREATE_ACTIONS), resources=["*"],
                conditions={
                    "StringEquals": {f"aws:RequestTag/{tag}": value, "kms:KeySpec": "ECC_NIST_P256",
                                     "kms:KeyUsage": "SIGN_VERIFY"},
                },
            ))
            self.role.add_to_principal_policy(iam.PolicyStatement(
                actions=list(SIGNING_KEY_MANAGE_ACTIONS), resources=[keys],
                conditions={"StringEquals": {f"aws:ResourceTag/{tag}": value}},
            ))
        elif use == "sign":
            self.role.add_to_principal_policy(iam.PolicyStatement(
                actions=list(SIGNING_KEY_SIGN_ACTIONS), resources=[keys],
                conditions={"StringEquals": {f"aws:ResourceTag/{tag}": value,
                                             "kms:SigningAlgorithm": "ECDSA_SHA_256",
                                             "kms:MessageType": "DIGEST"}},
            ))
        else:
            raise ValueError(f"signing_keys must be 'create' or 'sign', not {use!r}")

    def _errors_alarm(self, shared: SharedResources) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self, "ErrorsAlarm",
            alarm_description=f"Expediente {self.definition.id}: invocations ended in an error",
            metric=self.alias.metric_errors(period=cdk.Duration.minutes(5), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(shared.alarm_topic))
        return alarm

    def _dlq_reason(self) -> str:
        """Why this function needs no dead-letter queue of its own, for each way it is invoked."""
        reasons = []
        if self.definition.routes or self.definition.public_routes:
            reasons.append("API Gateway invokes it synchronously: a failure is returned to the caller as an "
                           "OperationOutcome, so there is no asynchronous event to park")
        if self.definition in definitions.IDENTITY_FUNCTIONS:
            reasons.append("Cognito invokes it synchronously as a user pool trigger: a failure refuses the "
                           "sign-in, so there is no asynchronous event to park")
        if self.definition.id == definitions.SIGN_IN_FAILURES_FUNCTION:
            reasons.append(
                "the subscription of Cognito's sign-in event log invokes it asynchronously: a delivery that still "
                "fails after Lambda's two retries raises the errors alarm, and its events stay in that log group "
                "(retained five years), where the failed sign-ins can still be read"
            )
        if self.definition.consumes:
            reasons.append(
                f"its SQS event sources ({', '.join(self.definition.consumes)}) are polled synchronously: "
                "failed records go back to their queue, whose redrive policy parks them in that queue's "
                "dead-letter queue (alarmed)"
            )
        schedules = [s for s in definitions.SCHEDULES if s.function == self.definition.id]
        if schedules:
            reasons.append(
                "its EventBridge schedules ("
                + ", ".join(f"{s.id} every {s.minutes} min" for s in schedules)
                + ") carry no data: a failed run is redone by the next one, which works from the "
                "tables, and failures raise the errors alarm"
            )
        return "; ".join(reasons) + "."

    def _acknowledge(self) -> None:
        """Acknowledge the findings every function has, each with why it is accepted."""
        fn = self.function
        acknowledge(fn, "AwsSolutions-L1",
                    "Python 3.12 is pinned by decision 11: the dependency layer is built for cp312 "
                    "wheels and SnapStart is validated on it; moving runtimes is a deliberate upgrade.")
        acknowledge(fn, "HIPAA.Security-LambdaConcurrency",
                    "Concurrency is bounded by API Gateway stage throttling and the WAF rate rule; "
                    "reserved concurrency would carve capacity out of the account pool per function.")
        acknowledge(fn, "HIPAA.Security-LambdaDLQ", self._dlq_reason())
        acknowledge(fn, "HIPAA.Security-LambdaInsideVPC",
                    "The function reaches only AWS APIs (DynamoDB, KMS, S3, EventBridge, Cognito) over "
                    "TLS with IAM; there is no private network resource to reach, and a VPC would add "
                    "NAT or endpoint cost without narrowing access.")
        acknowledge(fn, "Annotation::@aws-cdk/aws-lambda:snapStartRequirePublish",
                    "Versions are published: the live alias points at current_version.")
        if not cdk.Token.is_unresolved(cdk.Stack.of(self).region):  # checked only for a known region
            acknowledge(fn, "CloudFormation-Validate::E2530",
                        "CDK 2.275's bundled region table lacks SnapStart in mx-central-1, while cfn-lint "
                        "1.58 (run by tests/infra on that region) lists it; if a region truly lacks "
                        "SnapStart the deploy fails at CloudFormation rather than silently.")

        policy = self.role.node.find_child("DefaultPolicy")
        acknowledge(policy, "HIPAA.Security-IAMNoInlinePolicy", INLINE_POLICY_REASON)
        creates_keys = self.definition.signing_keys == "create"
        acknowledge(policy, "AwsSolutions-IAM5[Resource::*]",
                    "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions"
                    + ("; kms:CreateKey has no resource to name before the key exists, and its statement only "
                       "allows ECC_NIST_P256 SIGN_VERIFY keys tagged purpose=practitioner-signing" if creates_keys
                       else "")
                    + "; every other statement names its resources.")
        if self.definition.signing_keys:
            stack = cdk.Stack.of(self)
            keys = f"arn:{stack.partition}:kms:{stack.region}:{stack.account}:key/*"
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{rendered(self, keys)}]",
                        "Practitioners' signing keys are created at run time, one per practitioner; the "
                        "statement is limited by condition to keys tagged purpose=practitioner-signing.")
        self._acknowledge_data_access(policy)

    def _acknowledge_data_access(self, execution_policy: IConstruct) -> None:
        """The tenant data role's wildcards are its tenant's keys; the execution role's are its global items."""
        tenant_policy = self.tenant_role.node.find_child("DefaultPolicy")
        acknowledge(tenant_policy, "HIPAA.Security-IAMNoInlinePolicy", INLINE_POLICY_REASON)
        for table_id, table in self._tables.items():
            if definitions.table(table_id).indexes:
                acknowledge(
                    tenant_policy, f"AwsSolutions-IAM5[Resource::{rendered(self, f'{table.table_arn}/index/*')}]",
                    f"Queries use the indexes of the {table_id} table, which this function declares; the wildcard "
                    "spans only that table's GSIs, and dynamodb:LeadingKeys limits them to the tagged tenant.",
                )
        for bucket_id, bucket in self._buckets.items():
            for pattern in tenancy.TENANT_OBJECT_KEYS:
                resource = bucket.arn_for_objects(pattern.replace("{tenant}", tenancy.PRINCIPAL_TENANT))
                # cdk-nag writes the policy variable ${aws:PrincipalTag/tenant} as <aws:PrincipalTag/tenant>.
                shown = rendered(self, resource).replace("${", "<").replace("}", ">")
                acknowledge(tenant_policy, f"AwsSolutions-IAM5[Resource::{shown}]",
                            f"Object keys in the {bucket_id} bucket start with the tenant and are chosen at run "
                            "time; the wildcard spans only the tagged tenant's prefix of that bucket.")
        for grant in (*tenancy.global_access(self.definition.id), *tenancy.global_access(self.definition.id, "tenant")):
            if grant.kind != "bucket":
                continue
            policy = execution_policy if grant.credentials == "execution" else tenant_policy
            for key in grant.keys:
                resource = self._buckets[grant.resource].arn_for_objects(
                    key.replace("{tenant}", tenancy.PRINCIPAL_TENANT))
                shown = rendered(self, resource).replace("${", "<").replace("}", ">")
                why = (f"Reached before any tenant is known: {grant.reason}." if grant.credentials == "execution"
                       else f"Only under the tagged tenant's prefix: {grant.reason}.")
                acknowledge(policy, f"AwsSolutions-IAM5[Resource::{shown}]", why)
