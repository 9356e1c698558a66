"""The web ACL in front of the REST API.

Rules, in priority order:

1. ``RateLimitPerIp`` — an IP sending more than :data:`RATE_LIMIT_PER_5_MIN` requests in five
   minutes gets 429. Clinics sit behind one NAT address, so the limit is per clinic, not per user.
2. ``BodyTooLarge`` — a request declaring ``Content-Length`` above :data:`MAX_BODY_BYTES` gets 413.
   WAF inspects at most the first 8-64 KB of a body, so a size constraint on the body itself can
   never see a 1 MiB body: the declared length is what can be checked. API Gateway's own 10 MB
   limit still caps requests without the header.
3. ``AWSManagedRulesCommonRuleSet`` — with ``SizeRestrictions_BODY`` (which blocks any body over
   8 KB, far below an ordinary FHIR Bundle or Composition) switched to count; rule 2 replaces it.
4. ``AWSManagedRulesKnownBadInputsRuleSet``.

Blocked requests get a JSON body shaped like a FHIR ``OperationOutcome``. WAF logs go to an
encrypted log group with the ``Authorization`` header redacted (it carries the user's token).
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

MAX_BODY_BYTES = 1024 * 1024
RATE_LIMIT_PER_5_MIN = 6000


def greater_than_regex(limit: int) -> str:
    """A regular expression matching exactly the decimal integers greater than ``limit``.

    Leading zeros are allowed; signs, spaces and anything else are not matched. Used to compare a
    header value numerically in WAF, which has no numeric comparison on header values.
    """
    digits = str(limit)
    alternatives = [f"[1-9][0-9]{{{len(digits)},}}"]  # more digits than the limit
    for i, ch in enumerate(digits):
        d = int(ch)
        if d == 9:
            continue
        rest = len(digits) - i - 1
        higher = "9" if d == 8 else f"[{d + 1}-9]"
        tail = f"[0-9]{{{rest}}}" if rest else ""
        alternatives.append(f"{digits[:i]}{higher}{tail}")
    return "^0*(" + "|".join(alternatives) + ")$"


def _outcome(code: str, diagnostics: str) -> str:
    return json.dumps({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    })


class ApiFirewall(Construct):
    """A regional web ACL, associated with ``stage_arn`` and logged to ``log_group``."""

    def __init__(self, scope: Construct, construct_id: str, *, stage_arn: str, logs_key: kms.IKey,
                 log_group_name: str) -> None:
        """``log_group_name`` must start with ``aws-waf-logs-`` (a WAF requirement)."""
        super().__init__(scope, construct_id)
        visibility = self._visibility
        block_json = wafv2.CfnWebACL.CustomResponseBodyProperty
        self.web_acl = wafv2.CfnWebACL(
            self, "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility("ExpedienteApi"),
            custom_response_bodies={
                "throttled": block_json(content_type="APPLICATION_JSON",
                                        content=_outcome("throttled", "Too many requests from this address")),
                "too_large": block_json(content_type="APPLICATION_JSON",
                                        content=_outcome("too-costly", f"Request body over {MAX_BODY_BYTES} bytes")),
                "forbidden": block_json(content_type="APPLICATION_JSON",
                                        content=_outcome("security", "Request blocked")),
            },
            rules=[
                self._block_rule(
                    "RateLimitPerIp", 0, status=429, body="throttled",
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=RATE_LIMIT_PER_5_MIN, aggregate_key_type="IP",
                            evaluation_window_sec=300,
                        ),
                    ),
                ),
                self._block_rule(
                    "BodyTooLarge", 1, status=413, body="too_large",
                    statement=wafv2.CfnWebACL.StatementProperty(
                        regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                            regex_string=greater_than_regex(MAX_BODY_BYTES),
                            field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                                single_header={"Name": "content-length"},
                            ),
                            text_transformations=[wafv2.CfnWebACL.TextTransformationProperty(
                                priority=0, type="NONE",
                            )],
                        ),
                    ),
                ),
                self._managed_rule("AWSManagedRulesCommonRuleSet", 2, count=("SizeRestrictions_BODY",)),
                self._managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 3),
            ],
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=stage_arn, web_acl_arn=self.web_acl.attr_arn,
        )
        self.log_group = logs.LogGroup(
            self, "Logs", log_group_name=log_group_name, encryption_key=logs_key,
            retention=logs.RetentionDays.ONE_YEAR, removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        logging = wafv2.CfnLoggingConfiguration(
            self, "Logging",
            resource_arn=self.web_acl.attr_arn,
            # WAF wants the log group ARN without the ":*" suffix that LogGroup.log_group_arn has.
            log_destination_configs=[cdk.Stack.of(self).format_arn(
                service="logs", resource="log-group", resource_name=log_group_name,
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )],
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": "authorization"}),
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": "cookie"}),
            ],
        )
        # The ARN above is built from the name, so CloudFormation does not see the dependency.
        logging.node.add_dependency(self.log_group)

    @staticmethod
    def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True,
        )

    def _block_rule(self, name: str, priority: int, *, status: int, body: str,
                    statement: wafv2.CfnWebACL.StatementProperty) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name, priority=priority, statement=statement,
            action=wafv2.CfnWebACL.RuleActionProperty(block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=status, custom_response_body_key=body,
                ),
            )),
            visibility_config=self._visibility(name),
        )

    def _managed_rule(self, name: str, priority: int, *,
                      count: tuple[str, ...] = ()) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name, priority=priority,
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=name,
                    rule_action_overrides=[
                        wafv2.CfnWebACL.RuleActionOverrideProperty(
                            name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                        ) for rule in count
                    ] or None,
                ),
            ),
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            visibility_config=self._visibility(name),
        )
