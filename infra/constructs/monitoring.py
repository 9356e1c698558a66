"""Alarms and the operations dashboard of the stateless stack.

Every alarm notifies the stack's alarm topic. Per function (besides the errors alarm of
:mod:`infra.constructs.function`): throttles, and p99 duration above 80% of its timeout. For the
API: 5xx responses and p99 latency. For the domain, from the functions' own EMF metrics
(:mod:`expediente.metrics`, namespace ``Expediente``): DICOM objects quarantined, and critical
results escalated because nobody acknowledged them in time. The dead-letter queues' depth alarms
live with the queues (stateful stack); the dashboard shows them with everything else.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import definitions
from infra.constructs.function import METRICS_NAMESPACE, ExpedienteFunction
from infra.naming import pascal
from infra.shared import SharedResources

FIVE_MINUTES = cdk.Duration.minutes(5)
AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
API_5XX_THRESHOLD = 5            # 5xx answers in five minutes
API_P99_LATENCY_MS = 3000
DURATION_SHARE_OF_TIMEOUT = 0.8


def domain_metric(function_id: str, name: str, *, period: cdk.Duration = FIVE_MINUTES) -> cloudwatch.Metric:
    """A counter the function emits with :func:`expediente.metrics.count` (dimensions service, action)."""
    return cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name=name, statistic="Sum", period=period,
                             dimensions_map={"service": f"{definitions.SERVICE}-{function_id}", "action": name})


# (function, metric, description, threshold, period): the domain alarms
DOMAIN_ALARMS: tuple[tuple[str, str, str, int, cdk.Duration], ...] = (
    ("dicom_ingest", "DicomQuarantined",
     "DICOM objects were quarantined (not attached to any patient): review GET /admin/dicom-quarantine", 1,
     cdk.Duration.hours(1)),
    ("results", "CriticalResultsEscalated",
     "Critical results were escalated: nobody acknowledged them before the tenant's deadline", 1, FIVE_MINUTES),
    # Decision 0028: the relay keeps finding events over five minutes old, so PutEvents keeps failing for them.
    ("orders", "OutboxStale",
     "Domain events stayed in the outbox for over five minutes: the relay cannot put them on the bus", 1,
     FIVE_MINUTES),
    # Decision 0029: Cognito's sign-in event log holds something the failed-login audit cannot read.
    (definitions.SIGN_IN_FAILURES_FUNCTION, "SignInEventsUnreadable",
     "Sign-in events from Cognito's log could not be read, so failed sign-ins may be missing from the audit "
     "trail: compare the log group with functions/admin/sign_in_failures.py", 1, cdk.Duration.hours(1)),
)


class Monitoring(Construct):
    """The alarms and the ``Expediente`` dashboard over the functions, the API and the queues."""

    def __init__(self, scope: Construct, construct_id: str, *, functions: Mapping[str, ExpedienteFunction],
                 api: apigw.RestApi, shared: SharedResources) -> None:
        super().__init__(scope, construct_id)
        self._topic = shared.alarm_topic
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for function_id, function in functions.items():
            name = pascal(function_id)
            self._alarm(f"{name}Throttles", f"Expediente {function_id}: invocations were throttled",
                        function.alias.metric_throttles(period=FIVE_MINUTES, statistic="Sum"), threshold=1)
            limit_ms = function.definition.timeout_s * 1000 * DURATION_SHARE_OF_TIMEOUT
            self._alarm(f"{name}Duration", f"Expediente {function_id}: p99 duration above "
                        f"{int(DURATION_SHARE_OF_TIMEOUT * 100)}% of its {function.definition.timeout_s} s timeout",
                        function.alias.metric_duration(period=FIVE_MINUTES, statistic="p99"), threshold=limit_ms,
                        periods=3, comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD)
        self._alarm("Api5xx", f"Expediente API: {API_5XX_THRESHOLD} or more 5xx answers in five minutes",
                    api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"), threshold=API_5XX_THRESHOLD)
        self._alarm("ApiLatency", f"Expediente API: p99 latency above {API_P99_LATENCY_MS} ms",
                    api.metric_latency(period=FIVE_MINUTES, statistic="p99"), threshold=API_P99_LATENCY_MS,
                    periods=3, comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD)
        for function_id, metric_name, description, threshold, period in DOMAIN_ALARMS:
            self._alarm(metric_name, f"Expediente: {description}", domain_metric(function_id, metric_name,
                                                                                period=period), threshold=threshold)
        self.dashboard = self._dashboard(functions, api, shared)

    def _alarm(self, alarm_id: str, description: str, metric: cloudwatch.IMetric, *, threshold: float,
               periods: int = 1,
               comparison: cloudwatch.ComparisonOperator = AT_LEAST) -> None:
        alarm = cloudwatch.Alarm(
            self, f"{alarm_id}Alarm", alarm_description=description, metric=metric, threshold=threshold,
            evaluation_periods=periods, comparison_operator=comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self._topic))
        self.alarms[alarm_id] = alarm

    def _dashboard(self, functions: Mapping[str, ExpedienteFunction], api: apigw.RestApi,
                   shared: SharedResources) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard",
                                         dashboard_name=f"{cdk.Stack.of(self).stack_name}-operations")
        aliases = {fid: fn.alias for fid, fn in functions.items()}
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="API requests and errors", width=12, left=[
                api.metric_count(period=FIVE_MINUTES, statistic="Sum"),
                api.metric_client_error(period=FIVE_MINUTES, statistic="Sum"),
                api.metric_server_error(period=FIVE_MINUTES, statistic="Sum")]),
            cloudwatch.GraphWidget(title="API latency (p50, p99)", width=12, left=[
                api.metric_latency(period=FIVE_MINUTES, statistic="p50"),
                api.metric_latency(period=FIVE_MINUTES, statistic="p99")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Function errors", width=8, left=[
                a.metric_errors(period=FIVE_MINUTES, statistic="Sum", label=fid) for fid, a in aliases.items()]),
            cloudwatch.GraphWidget(title="Function throttles", width=8, left=[
                a.metric_throttles(period=FIVE_MINUTES, statistic="Sum", label=fid) for fid, a in aliases.items()]),
            cloudwatch.GraphWidget(title="Function duration p99", width=8, left=[
                a.metric_duration(period=FIVE_MINUTES, statistic="p99", label=fid) for fid, a in aliases.items()]),
        )
        dead_letters = {name: queue.dead_letter_queue.queue for name, queue in shared.queues.items()
                        if isinstance(queue, sqs.Queue) and queue.dead_letter_queue is not None}
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Dead-letter queue depth", width=8, left=[
                queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, label=name)
                for name, queue in dead_letters.items()]),
            cloudwatch.GraphWidget(title="Domain alarms' metrics", width=8, left=[
                domain_metric(function_id, name, period=FIVE_MINUTES) for function_id, name, *_ in DOMAIN_ALARMS]),
            cloudwatch.GraphWidget(title="Prescriptions", width=8, left=[
                domain_metric("prescriptions", name) for name in (
                    "PrescriptionsSigned", "PrescriptionAlertsOverridden", "MedicationsDispensed")]),
        )
        dashboard.add_widgets(cloudwatch.AlarmStatusWidget(
            title="Alarms", width=24, alarms=list(self.alarms.values())))
        return dashboard
