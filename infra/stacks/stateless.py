"""The stateless stack: the dependency layer, one function per ``FunctionDef``, the REST API and
the schedules.

Nothing here holds data, so the whole stack can be destroyed and redeployed. Routes come from
``FunctionDef.routes`` (``ANY``, Cognito authorizer) and ``FunctionDef.public_routes`` (``GET``,
no token); each route points at the function's ``live`` alias, whose published version has
SnapStart. Each ``ScheduleDef`` is an EventBridge rule on the account's default bus (schedules
cannot live on a custom bus) that invokes the function's alias with a ``Scheduled Event``.

Request bodies are not validated by API Gateway models: the FHIR routes validate in the function
(``OperationOutcome`` with the details), and ``/hl7v2`` takes HL7 v2 ER7 text
(``x-application/hl7-v2+er7`` or ``text/plain``), which a JSON model would refuse. The request
validator only checks declared parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as logs_destinations
from constructs import Construct

from infra import definitions
from infra.build import BuildPaths
from infra.constructs.function import ExpedienteFunction, dependency_layer
from infra.constructs.monitoring import Monitoring
from infra.constructs.waf import ApiFirewall
from infra.nag import acknowledge
from infra.naming import pascal
from infra.shared import SharedResources

STAGE_NAME = "v1"
# Stage-wide throttling; the WAF rate rule limits each address on top of this.
THROTTLE_RATE_PER_S = 200
THROTTLE_BURST = 400
AUTHORIZER_CACHE = cdk.Duration.minutes(5)
FHIR_JSON = "'application/fhir+json'"
# Responses the functions return base64-encoded (isBase64Encoded): API Gateway turns them back into
# bytes when the request's Accept names one of these types (printable reports, series thumbnails).
BINARY_MEDIA_TYPES = ("application/pdf", "image/png")

class StatelessStack(cdk.Stack):
    """Functions and the API over the resources of the stateful stack."""

    def __init__(self, scope: Construct, construct_id: str, *, shared: SharedResources, build: BuildPaths,
                 name_prefix: str = "", **kwargs: object) -> None:
        """``build`` comes from :func:`infra.build.build_all`; ``shared`` from the stateful stack."""
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]

        layer = dependency_layer(self, "DependenciesLayer", layer_dir=build.layer)
        self.functions = {
            fn.id: ExpedienteFunction(
                self, f"{pascal(fn.id)}Function", definition=fn, code=Path(build.functions[fn.id]),
                layer=layer, shared=shared,
            )
            for fn in definitions.FUNCTIONS
        }

        self.schedules = {schedule.id: self._schedule(schedule) for schedule in definitions.SCHEDULES}
        self._audit_digests(shared)
        self._sign_in_failures(shared)
        self.api = self._api(shared)
        self._routes(shared)
        self.firewall = ApiFirewall(
            self, "Firewall", stage_arn=self.api.deployment_stage.stage_arn, logs_key=shared.logs_key,
            log_group_name=f"aws-waf-logs-{name_prefix}expediente-api",
        )
        self.monitoring = Monitoring(self, "Monitoring", functions=self.functions, api=self.api, shared=shared)
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the REST API")
        cdk.CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name,
                      description="CloudWatch dashboard of the API, the functions, the queues and the domain alarms")

    def _audit_digests(self, shared: SharedResources) -> None:
        """The function running the ``audit_digest`` schedule signs with the digest key and reads its public
        key (decision 0022); nothing else may sign with it. ``$verify`` only reads the public key. The bucket
        grants come from ``buckets_write`` / ``buckets_read``."""
        schedule = next(s for s in definitions.SCHEDULES if s.id == "audit_digest")
        signer = self.functions[schedule.function]
        verifier = self.functions[definitions.AUDIT_VERIFY_FUNCTION]
        for fn in (signer, verifier):
            fn.function.add_environment("KEY_AUDIT_DIGEST_ARN", shared.audit_digest_key.key_arn)
        shared.audit_digest_key.grant(signer.role, "kms:Sign", "kms:GetPublicKey")
        shared.audit_digest_key.grant(verifier.role, "kms:GetPublicKey")

    def _sign_in_failures(self, shared: SharedResources) -> logs.SubscriptionFilter:
        """Cognito's sign-in event log, delivered to the admin function, which audits the failed sign-ins
        (decision 0029; functions/admin/sign_in_failures.py). Every event is delivered: the function keeps
        the failures and counts what it cannot read, so a change of Cognito's log format raises an alarm
        instead of silently matching nothing."""
        group = logs.LogGroup.from_log_group_name(self, "SignInEventLogs", shared.sign_in_log_group_name)
        return logs.SubscriptionFilter(
            self, "SignInFailuresSubscription", log_group=group,
            destination=logs_destinations.LambdaDestination(
                self.functions[definitions.SIGN_IN_FAILURES_FUNCTION].alias),
            filter_pattern=logs.FilterPattern.all_events(), filter_name="expediente-sign-in-failures",
        )

    def _schedule(self, schedule: definitions.ScheduleDef) -> events.Rule:
        """``rate(n minutes)`` on the default bus, invoking the function's ``live`` alias.

        ``LambdaFunction`` adds the alias's resource policy for events.amazonaws.com, bound to
        this rule's ARN. A run that cannot be delivered within one period is dropped rather than
        retried: the next run does the same work from the tables.
        """
        period = cdk.Duration.minutes(schedule.minutes)
        return events.Rule(
            self, f"{pascal(schedule.id)}Schedule",
            description=f"Expediente {schedule.function}: {schedule.purpose}"[:512],
            schedule=events.Schedule.rate(period),
            targets=[targets.LambdaFunction(
                self.functions[schedule.function].alias, max_event_age=period, retry_attempts=2,
            )],
        )

    def _api(self, shared: SharedResources) -> apigw.RestApi:
        access_logs = logs.LogGroup(
            self, "ApiAccessLogs", encryption_key=shared.logs_key, retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # Opaque ids only: the resource path template, not the path or query string, which can
        # carry identifiers (decision 6: no CURP in any log).
        access_format = apigw.AccessLogFormat.custom(json.dumps({
            "requestId": apigw.AccessLogField.context_request_id(),
            "ip": apigw.AccessLogField.context_identity_source_ip(),
            "requestTime": apigw.AccessLogField.context_request_time(),
            "httpMethod": apigw.AccessLogField.context_http_method(),
            "resourcePath": apigw.AccessLogField.context_resource_path(),
            "status": apigw.AccessLogField.context_status(),
            "protocol": apigw.AccessLogField.context_protocol(),
            "responseLength": apigw.AccessLogField.context_response_length(),
            "latencyMs": apigw.AccessLogField.context_response_latency(),
            "integrationLatencyMs": apigw.AccessLogField.context_integration_latency(),
            "sub": apigw.AccessLogField.context_authorizer_claims("sub"),
            "wafStatus": apigw.AccessLogField.context_waf_response_code(),
            "xrayTraceId": apigw.AccessLogField.context_xray_trace_id(),
            "error": apigw.AccessLogField.context_error_message(),
        }))
        api = apigw.RestApi(
            self, "Api",
            description="Expediente FHIR R4 API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=list(BINARY_MEDIA_TYPES),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                tracing_enabled=True,
                # ERROR, not INFO: INFO execution logs print the query string, which can carry a
                # patient identifier. Bodies are never logged (data_trace_enabled=False).
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=THROTTLE_RATE_PER_S,
                throttling_burst_limit=THROTTLE_BURST,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=access_format,
            ),
        )
        stage = api.deployment_stage
        acknowledge(stage, "HIPAA.Security-APIGWCacheEnabledAndEncrypted",
                    "Responses are not cached at all: they carry patient data filtered by the caller's "
                    "tenant and role, and a stage cache keyed on the path would serve them to others.")
        acknowledge(stage, "HIPAA.Security-APIGWSSLEnabled",
                    "The rule asks for a client certificate that API Gateway presents to HTTP backends; "
                    "every integration here is a Lambda proxy, invoked over AWS's signed API. Clients "
                    "reach the API over TLS only.")
        for response in definitions.GATEWAY_RESPONSES:
            response_type = getattr(apigw.ResponseType, response.type)
            api.add_gateway_response(
                f"{response_type.response_type}Response",
                type=response_type,
                status_code=response.status or None,
                response_headers={"Content-Type": FHIR_JSON},
                templates={"application/json": response.body()},
            )
        role = api.node.try_find_child("CloudWatchRole")
        if role is not None:
            acknowledge(
                role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "The account-level role API Gateway assumes to write execution and access logs; "
                "AWS maintains this policy as the minimum for that service.",
            )
        return api

    def _routes(self, shared: SharedResources) -> None:
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[shared.user_pool], results_cache_ttl=AUTHORIZER_CACHE,
        )
        validator = self.api.add_request_validator(
            "RequestValidator", validate_request_parameters=True, validate_request_body=True,
        )
        for function_id, fn in self.functions.items():
            # One invoke permission for the whole API instead of one per method: a function
            # with many routes would otherwise outgrow the 20 KB resource-policy limit.
            integration = apigw.LambdaIntegration(fn.alias, scope_permission_to_method=False)
            for path in fn.definition.routes:
                self.api.root.resource_for_path(path).add_method(
                    "ANY", integration,
                    authorizer=authorizer,
                    authorization_type=apigw.AuthorizationType.COGNITO,
                    request_validator=validator,
                )
            for path in fn.definition.public_routes:
                method = self.api.root.resource_for_path(path).add_method(
                    "GET", integration,
                    authorization_type=apigw.AuthorizationType.NONE,
                    request_validator=validator,
                )
                reason = f"{path} ({function_id}) is public by design: {fn.definition.public_reason}"
                acknowledge(method, "AwsSolutions-APIG4", reason)
                acknowledge(method, "AwsSolutions-COG4", reason)
