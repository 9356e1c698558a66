"""The embedded AWS of the local stack: moto in server mode on 127.0.0.1.

``EmbeddedAws`` runs moto's WSGI application in a background thread; ``provision`` creates, from
``infra.definitions`` and nothing else, what the CDK stacks declare: DynamoDB tables (keys, GSIs,
TTL), the application KMS key, versioned buckets with the ingest bucket's ObjectCreated
notification to SQS, queues with dead-letter queues (visibility timeouts and redrive from
``infra.delivery``), SNS topics, the custom EventBridge bus with one rule per ``RuleDef``
(delivering to its queue and topics), one rule on the default bus per ``ScheduleDef``, and the
Cognito user pool (groups = roles, ``custom:*`` attributes, an app client for
USER_PASSWORD_AUTH). The result is a ``LocalAws``: names, ARNs and the environment each function
receives. What moto does not run by itself (schedules firing, SQS event sources invoking
functions) ``local.dispatch`` does.

Documented differences from the deployed stack:

- MFA is OFF in the local pool; the deployed pool requires TOTP for the signing roles.
- Tables use moto's default encryption and have no PITR, backups or deletion protection
  (moto does not enforce them); buckets are versioned and default to SSE-KMS with the
  ``storage`` key but have no access logging, TLS-only policy or lifecycle rules. Only the
  ``app`` and ``storage`` keys exist (no messaging, logs or trail keys), queues are not
  encrypted, and there is no CloudTrail, alarm topic or backup plan.
- The event bus is named ``expediente``; the deployed one has a generated name (both reach
  functions as ``EVENT_BUS_NAME``).
- Each topic has a local-only SQS subscriber, ``<topic name>-inbox`` (raw message delivery), so
  tests and the demo can read what was notified; deployed topics get people's channels instead.
  Topics are not encrypted (there is no messaging key).
- Schedule rules target a Lambda ARN that moto does not run: ``local.dispatch.Scheduler`` invokes
  the function in-process on the rule's period.
- Credentials are fake (``testing``), set only on the boto3 sessions this module creates and in
  the environment handed to functions; nothing is written to ``~/.aws``.
- Each function gets a tenant data role (``expediente-local-<id>-tenant-data``, ``TENANT_ROLE_ARN``)
  and assumes it with the session tag ``tenant`` through moto's STS, so the tenant-scoped credential
  path runs end to end (decision 0023); moto does not evaluate IAM policies, so the roles carry no
  policy here: the conditions are proven by tests/infra and tests/integration/security instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from infra import delivery
from infra.definitions import (
    ALL_FUNCTIONS,
    BUCKETS,
    FUNCTIONS,
    QUEUES,
    ROLES,
    RULES,
    SCHEDULES,
    TABLES,
    TOPICS,
    USER_ATTRIBUTES,
    QueueDef,
)
from local.routes import RouteTable

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 4566
PORT_ENV = "EXPEDIENTE_AWS_PORT"
REGION_ENV = "EXPEDIENTE_AWS_REGION"
DEFAULT_REGION = "us-east-1"
# moto places every request signed with an unknown access key in its default account.
ACCOUNT_ID = "123456789012"
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"

NAME_PREFIX = "expediente-local"
EVENT_BUS_NAME = "expediente"
# Schedules cannot live on a custom bus: the stateless stack puts them on the account's default.
DEFAULT_EVENT_BUS = "default"
# Same aliases as the stateful stack (alias/<stage->expediente/<name>).
KEY_ALIASES = {"app": "alias/expediente/app", "storage": "alias/expediente/storage"}
# The audit digest signing key (ECDSA P-256; decision 0022): the functions find it by this alias.
AUDIT_DIGEST_KEY_ALIAS = "alias/expediente/audit-digest"
DLQ_MAX_RECEIVE_COUNT = delivery.MAX_RECEIVE_COUNT
# Callers invoke the functions' alias (SnapStart), as in the stateless stack.
FUNCTION_ALIAS = "live"

# ObjectCreated in the ingest bucket feeds the dicom_ingest queue (architecture: "S3 ingest
# bucket → ObjectCreated → SQS (DLQ)"), as the stateful stack's notification configuration does.
INGEST_BUCKET_ID = "ingest"

# How often a server thread checks for shutdown (werkzeug's default 0.5 s makes Ctrl-C feel slow).
SERVE_POLL_S = 0.1

_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


def resource_name(resource_id: str) -> str:
    """The local physical name of a table, bucket, queue or rule (DNS-safe for buckets)."""
    return f"{NAME_PREFIX}-{resource_id.replace('_', '-')}"


def function_name(function_id: str) -> str:
    """The local Lambda function name (``expediente-local-<id>``), as in the Lambda-like context."""
    return resource_name(function_id)


def function_arn(region: str, account_id: str, function_id: str) -> str:
    """The ARN of the function's ``live`` alias, the target schedules and event sources name."""
    return f"arn:aws:lambda:{region}:{account_id}:function:{function_name(function_id)}:{FUNCTION_ALIAS}"


def tenant_role_arn(account_id: str, function_id: str) -> str:
    """The ARN of the function's tenant data role (decision 0023), created by :func:`provision`."""
    return f"arn:aws:iam::{account_id}:role/{resource_name(function_id)}-tenant-data"


def queue_definitions() -> tuple[QueueDef, ...]:
    """The declared queues (the ingest queue among them)."""
    return QUEUES


def configured_port(default: int = DEFAULT_PORT) -> int:
    """The port from ``EXPEDIENTE_AWS_PORT`` (0 picks a free one), else ``default``."""
    return int(os.environ.get(PORT_ENV, default))


def configured_region() -> str:
    """The region from ``EXPEDIENTE_AWS_REGION``, else us-east-1."""
    return os.environ.get(REGION_ENV, DEFAULT_REGION)


def boto_session(region: str) -> boto3.Session:
    """A boto3 session with the fake local credentials (never the developer's real ones)."""
    return boto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        region_name=region,
    )


# os.environ belongs to the whole process: one overlay at a time.
_ENVIRON_LOCK = threading.RLock()


@contextlib.contextmanager
def temporary_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then restore what was there.

    Holds a process-wide lock for the whole block, so two overlays (two function invocations,
    or an invocation and the operator command) never run at the same time.
    """
    with _ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class BackgroundServer:
    """A threaded werkzeug server on ``host:port`` (0 = any free port), served by a daemon thread.

    Binds the socket in the caller's thread: werkzeug, on a busy port, prints a message and calls
    ``sys.exit``, and moto's ``ThreadedMotoServer`` binds inside its thread and then waits forever
    for a ready event the failed bind never sets. ``start`` raises OSError instead, so callers can
    stop what they started and say why.
    """

    def __init__(self, name: str, app: Any, handler: type[WSGIRequestHandler]) -> None:
        self._name = name
        self._app = app
        self._handler = handler
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, host: str = HOST) -> str:
        """``http://<host>:<port>`` (raises RuntimeError when not running)."""
        if self._server is None:
            raise RuntimeError(f"the {self._name} is not running")
        return f"http://{host}:{self._server.port}"

    def start(self, host: str, port: int) -> None:
        """Listen and serve in the background (OSError if the port is taken)."""
        if self._server is not None:
            raise RuntimeError(f"the {self._name} is already running")
        listener = socket.create_server((host, port))
        try:
            self._server = make_server(
                host, listener.getsockname()[1], self._app, threaded=True, request_handler=self._handler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # the server works on its own duplicate of the descriptor
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SERVE_POLL_S,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        logger.info("%s stopped", self._name)


class _QuietMotoRequestHandler(MotoRequestHandler):
    """moto's request handler without the per-request access log (S3 keys, noise); errors still log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class EmbeddedAws:
    """moto's server (every service, one in-process state) on 127.0.0.1, in a daemon thread.

    Serves the same moto WSGI application as ``ThreadedMotoServer``, through ``BackgroundServer``
    so that a busy port raises OSError at once instead of hanging.
    """

    def __init__(self, *, port: int = DEFAULT_PORT, host: str = HOST) -> None:
        self._host = host
        self._port = port
        self._server = BackgroundServer(
            "embedded AWS", DomainDispatcherApplication(create_backend_app), _QuietMotoRequestHandler
        )

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` (raises RuntimeError before ``start``)."""
        return self._server.url(self._host)

    def start(self) -> str:
        """Bind, serve in the background, reset moto's state and return the endpoint.

        Raises OSError if the port is in use. moto keeps one state per process, so the reset
        makes every start a fresh, empty AWS.
        """
        from local import moto_patches

        moto_patches.apply()
        self._server.start(self._host, self._port)
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        logger.info("embedded AWS listening on %s", self.endpoint)
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._server.stop()


@dataclass(frozen=True)
class QueueInfo:
    """A provisioned queue and its dead-letter queue."""

    id: str
    name: str
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


@dataclass(frozen=True)
class TopicInfo:
    """A provisioned SNS topic and its local inbox queue (an SQS subscriber with raw delivery)."""

    id: str
    name: str
    arn: str
    inbox_url: str
    inbox_arn: str


@dataclass(frozen=True)
class ScheduleInfo:
    """A provisioned schedule: a rule on the default bus that invokes ``function`` every ``minutes``."""

    id: str
    rule_name: str
    rule_arn: str
    function: str
    minutes: int


@dataclass(frozen=True)
class LocalAws:
    """What ``provision`` created: where the embedded AWS is and the names of everything in it.

    ``tables``, ``buckets`` and ``rules`` map definition ids to physical names; ``queues``,
    ``topics`` and ``schedules`` map definition ids to their ``QueueInfo``, ``TopicInfo`` and
    ``ScheduleInfo``.
    """

    endpoint: str
    region: str
    account_id: str
    tables: Mapping[str, str]
    buckets: Mapping[str, str]
    queues: Mapping[str, QueueInfo]
    event_bus_name: str
    event_bus_arn: str
    rules: Mapping[str, str]
    key_app_arn: str
    user_pool_id: str
    user_pool_client_id: str
    topics: Mapping[str, TopicInfo] = field(default_factory=dict)
    schedules: Mapping[str, ScheduleInfo] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        """The ``iss`` of the pool's tokens: moto always uses the real AWS issuer URL."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        """Where the embedded Cognito publishes the pool's signing keys."""
        return f"{self.endpoint}/{self.user_pool_id}/.well-known/jwks.json"

    def to_document(self) -> dict[str, Any]:
        """JSON-ready description (the AWS part of ``.local/stack.json``); ``from_document`` reads it."""
        return {
            "aws_endpoint": self.endpoint,
            "region": self.region,
            "account_id": self.account_id,
            "user_pool_id": self.user_pool_id,
            "user_pool_client_id": self.user_pool_client_id,
            "key_app_arn": self.key_app_arn,
            "event_bus_name": self.event_bus_name,
            "event_bus_arn": self.event_bus_arn,
            "tables": dict(self.tables),
            "buckets": dict(self.buckets),
            "queues": {
                queue_id: {"name": q.name, "url": q.url, "arn": q.arn, "dlq_url": q.dlq_url, "dlq_arn": q.dlq_arn}
                for queue_id, q in self.queues.items()
            },
            "rules": dict(self.rules),
            "topics": {
                topic_id: {"name": t.name, "arn": t.arn, "inbox_url": t.inbox_url, "inbox_arn": t.inbox_arn}
                for topic_id, t in self.topics.items()
            },
            "schedules": {
                schedule_id: {"rule_name": s.rule_name, "rule_arn": s.rule_arn, "function": s.function,
                              "minutes": s.minutes}
                for schedule_id, s in self.schedules.items()
            },
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LocalAws:
        """The ``LocalAws`` a running stack described with ``to_document`` (KeyError if incomplete)."""
        return cls(
            endpoint=document["aws_endpoint"],
            region=document["region"],
            account_id=document["account_id"],
            tables=dict(document["tables"]),
            buckets=dict(document["buckets"]),
            queues={queue_id: QueueInfo(id=queue_id, **q) for queue_id, q in document["queues"].items()},
            event_bus_name=document["event_bus_name"],
            event_bus_arn=document["event_bus_arn"],
            rules=dict(document["rules"]),
            key_app_arn=document["key_app_arn"],
            user_pool_id=document["user_pool_id"],
            user_pool_client_id=document["user_pool_client_id"],
            topics={topic_id: TopicInfo(id=topic_id, **t) for topic_id, t in document.get("topics", {}).items()},
            schedules={
                schedule_id: ScheduleInfo(id=schedule_id, **schedule)
                for schedule_id, schedule in document.get("schedules", {}).items()
            },
        )

    def function_arn(self, function_id: str) -> str:
        """The ARN of the function's ``live`` alias in this region and account."""
        return function_arn(self.region, self.account_id, function_id)

    def session(self) -> boto3.Session:
        """A boto3 session with the fake credentials and this region (no endpoint: see ``client``)."""
        return boto_session(self.region)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at the embedded AWS."""
        return self.session().client(service, endpoint_url=self.endpoint, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    def function_env(self, function_id: str) -> dict[str, str]:
        """The environment the function ``function_id`` gets (raises KeyError for an unknown id).

        Every function gets every table (``TableDef.env`` → name) and every bucket
        (``BucketDef.env`` → name), the app key, the bus, the user pool, the embedded endpoint
        (``AWS_ENDPOINT_URL``, honoured by every boto3 client), region, fake credentials, the
        Powertools settings, and last the function's own ``FunctionDef.env``.
        """
        definition = next((fn for fn in ALL_FUNCTIONS if fn.id == function_id), None)
        if definition is None:
            raise KeyError(f"no function {function_id!r} in infra.definitions.ALL_FUNCTIONS")
        env = {table.env: self.tables[table.id] for table in TABLES}
        env.update({bucket.env: self.buckets[bucket.id] for bucket in BUCKETS})
        env.update(
            {
                "KEY_APP_ARN": self.key_app_arn,
                "EVENT_BUS_NAME": self.event_bus_name,
                "USER_POOL_ID": self.user_pool_id,
                "USER_POOL_CLIENT_ID": self.user_pool_client_id,
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
                "POWERTOOLS_SERVICE_NAME": f"expediente-{function_id}",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "Expediente",
                "TENANT_ROLE_ARN": tenant_role_arn(self.account_id, function_id),
            }
        )
        env.update(definition.env)
        return env


def provision(endpoint: str, region: str = DEFAULT_REGION) -> LocalAws:
    """Create every stateful resource of ``infra.definitions`` in the AWS at ``endpoint``.

    Expects an empty AWS (``EmbeddedAws.start`` resets it); raises botocore's ClientError if a
    resource already exists or moto rejects a request.
    """
    session = boto_session(region)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint, config=_CLIENT_CONFIG)  # type: ignore[call-overload]

    kms = client("kms")
    key_app_arn = _create_key(kms, "app", "envelope encryption (CURP, narrative) and blind-index keys")
    key_storage_arn = _create_key(kms, "storage", "S3 buckets holding clinical data")
    _create_audit_digest_key(kms)
    tables = _create_tables(client("dynamodb"))
    queues = _create_queues(client("sqs"))
    buckets = _create_buckets(client("s3"), region=region, key_arn=key_storage_arn, queues=queues)
    topics = _create_topics(client("sns"), client("sqs"))
    bus_arn, rules = _create_bus_and_rules(client("events"), queues, topics)
    schedules = _create_schedules(client("events"), region)
    pool_id, client_id = _create_user_pool(client("cognito-idp"))
    _create_tenant_roles(client("iam"))
    logger.info(
        "provisioned %d tables, %d buckets, %d queues, %d topics, %d rules, %d schedules, %d groups",
        len(tables), len(buckets), len(queues), len(topics), len(rules), len(schedules), len(ROLES),
    )
    return LocalAws(
        endpoint=endpoint,
        region=region,
        account_id=ACCOUNT_ID,
        tables=tables,
        buckets=buckets,
        queues=queues,
        event_bus_name=EVENT_BUS_NAME,
        event_bus_arn=bus_arn,
        rules=rules,
        key_app_arn=key_app_arn,
        user_pool_id=pool_id,
        user_pool_client_id=client_id,
        topics=topics,
        schedules=schedules,
    )


def _create_tenant_roles(iam: Any) -> None:
    """One tenant data role per function, assumable with the session tag ``tenant`` (decision 0023)."""
    for definition in ALL_FUNCTIONS:
        iam.create_role(
            RoleName=tenant_role_arn(ACCOUNT_ID, definition.id).rsplit("/", 1)[1],
            Description=f"Expediente {definition.id} function: one tenant's data (session tag tenant)",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {"Null": {"aws:RequestTag/tenant": "false"}},
            }]}),
        )


def _create_key(kms: Any, name: str, purpose: str) -> str:
    key = kms.create_key(
        Description=f"Expediente: {purpose}", KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT"
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    kms.create_alias(AliasName=KEY_ALIASES[name], TargetKeyId=key["KeyId"])
    return str(key["Arn"])


def _create_audit_digest_key(kms: Any) -> str:
    key = kms.create_key(
        Description="Expediente: signs the periodic digests of the audit trail's hash chains",
        KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
    )["KeyMetadata"]
    kms.create_alias(AliasName=AUDIT_DIGEST_KEY_ALIAS, TargetKeyId=key["KeyId"])
    return str(key["Arn"])


def _create_tables(dynamodb: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for table in TABLES:
        name = resource_name(table.id)
        key_schema = [{"AttributeName": table.pk, "KeyType": "HASH"}]
        attributes = [table.pk]
        if table.sk is not None:
            key_schema.append({"AttributeName": table.sk, "KeyType": "RANGE"})
            attributes.append(table.sk)
        indexes = []
        for index in table.indexes:
            indexes.append(
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.pk, "KeyType": "HASH"},
                        {"AttributeName": index.sk, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            )
            attributes += [index.pk, index.sk]
        request: dict[str, Any] = {
            "TableName": name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": key_schema,
            "AttributeDefinitions": [
                {"AttributeName": attribute, "AttributeType": "S"} for attribute in dict.fromkeys(attributes)
            ],
        }
        if indexes:
            request["GlobalSecondaryIndexes"] = indexes
        dynamodb.create_table(**request)
        if table.ttl_attribute is not None:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        names[table.id] = name
    return names


def _create_queues(sqs: Any) -> dict[str, QueueInfo]:
    queues: dict[str, QueueInfo] = {}
    for queue in queue_definitions():
        name = resource_name(queue.id)
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = _queue_arn(sqs, dlq_url)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(DLQ_MAX_RECEIVE_COUNT)}
        attributes = {"RedrivePolicy": json.dumps(redrive)}
        visibility = delivery.visibility_timeout_s(queue.id)
        if visibility is not None:
            attributes["VisibilityTimeout"] = str(visibility)
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        queues[queue.id] = QueueInfo(queue.id, name, url, _queue_arn(sqs, url), dlq_url, dlq_arn)
    return queues


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _create_buckets(s3: Any, *, region: str, key_arn: str, queues: Mapping[str, QueueInfo]) -> dict[str, str]:
    names: dict[str, str] = {}
    for bucket in BUCKETS:
        name = resource_name(bucket.id)
        lock = {"ObjectLockEnabledForBucket": True} if bucket.object_lock_years else {}
        if region == "us-east-1":
            s3.create_bucket(Bucket=name, **lock)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region}, **lock)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if bucket.object_lock_years:
            s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": bucket.object_lock_years}},
            })
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        names[bucket.id] = name
    # Set after every bucket exists; the first message moto (like S3) delivers is an s3:TestEvent.
    s3.put_bucket_notification_configuration(
        Bucket=names[INGEST_BUCKET_ID],
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "ingest-object-created",
                    "QueueArn": queues[delivery.INGEST_QUEUE_ID].arn,
                    "Events": ["s3:ObjectCreated:*"],
                }
            ]
        },
    )
    return names


def _create_topics(sns: Any, sqs: Any) -> dict[str, TopicInfo]:
    """One topic per ``TopicDef``, each with its inbox queue subscribed (raw message delivery)."""
    topics: dict[str, TopicInfo] = {}
    for topic in TOPICS:
        name = resource_name(topic.id)
        arn = str(sns.create_topic(Name=name, Tags=[{"Key": "purpose", "Value": topic.purpose[:256]}])["TopicArn"])
        inbox_url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
        inbox_arn = _queue_arn(sqs, inbox_url)
        sns.subscribe(
            TopicArn=arn, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"},
        )
        topics[topic.id] = TopicInfo(topic.id, name, arn, inbox_url, inbox_arn)
    return topics


def _create_bus_and_rules(
    events: Any, queues: Mapping[str, QueueInfo], topics: Mapping[str, TopicInfo]
) -> tuple[str, dict[str, str]]:
    bus_arn = str(events.create_event_bus(Name=EVENT_BUS_NAME)["EventBusArn"])
    rules: dict[str, str] = {}
    for rule in RULES:
        name = resource_name(rule.id)
        pattern = {"source": [rule.source], "detail-type": list(rule.detail_types)}
        events.put_rule(Name=name, EventBusName=EVENT_BUS_NAME, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(
            Rule=name,
            EventBusName=EVENT_BUS_NAME,
            Targets=[
                {"Id": rule.target_queue, "Arn": queues[rule.target_queue].arn},
                *({"Id": topic_id, "Arn": topics[topic_id].arn} for topic_id in rule.target_topics),
            ],
        )
        rules[rule.id] = name
    return bus_arn, rules


def _create_schedules(events: Any, region: str) -> dict[str, ScheduleInfo]:
    """One rule per ``ScheduleDef`` on the default bus, targeting the function's alias ARN.

    moto stores the rule but never fires it: ``local.dispatch.Scheduler`` does.
    """
    schedules: dict[str, ScheduleInfo] = {}
    for schedule in SCHEDULES:
        name = resource_name(schedule.id)
        rule_arn = str(events.put_rule(
            Name=name, EventBusName=DEFAULT_EVENT_BUS, ScheduleExpression=delivery.rate_expression(schedule.minutes),
            State="ENABLED", Description=schedule.purpose[:512],
        )["RuleArn"])
        events.put_targets(
            Rule=name,
            EventBusName=DEFAULT_EVENT_BUS,
            Targets=[{"Id": schedule.function, "Arn": function_arn(region, ACCOUNT_ID, schedule.function)}],
        )
        schedules[schedule.id] = ScheduleInfo(schedule.id, name, rule_arn, schedule.function, schedule.minutes)
    return schedules


def _create_user_pool(cognito: Any) -> tuple[str, str]:
    custom_attributes = [f"custom:{attribute}" for attribute in USER_ATTRIBUTES]
    pool = cognito.create_user_pool(
        PoolName=f"{NAME_PREFIX}-users",
        # Local difference: the deployed pool requires TOTP MFA for the roles that sign.
        MfaConfiguration="OFF",
        Policies={
            "PasswordPolicy": {
                "MinimumLength": 14,
                "RequireUppercase": True,
                "RequireLowercase": True,
                "RequireNumbers": True,
                "RequireSymbols": True,
                "TemporaryPasswordValidityDays": 3,
            }
        },
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
        AutoVerifiedAttributes=["email"],
        AccountRecoverySetting={"RecoveryMechanisms": [{"Priority": 1, "Name": "verified_email"}]},
        UsernameConfiguration={"CaseSensitive": False},
        Schema=[
            {
                "Name": attribute,
                "AttributeDataType": "String",
                "Mutable": True,
                "StringAttributeConstraints": {"MinLength": "0", "MaxLength": "2048"},
            }
            for attribute in USER_ATTRIBUTES
        ],
    )["UserPool"]
    pool_id = str(pool["Id"])
    for role in ROLES:
        cognito.create_group(UserPoolId=pool_id, GroupName=role, Description=f"Expediente role {role}")
    app_client = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=f"{NAME_PREFIX}-app",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
        EnableTokenRevocation=True,
        AccessTokenValidity=60,
        IdTokenValidity=60,
        RefreshTokenValidity=12,
        TokenValidityUnits={"AccessToken": "minutes", "IdToken": "minutes", "RefreshToken": "hours"},
        # Users never write their own custom attributes: the tenant and clinics come from them.
        ReadAttributes=["email", "email_verified", "locale", "zoneinfo", *custom_attributes],
        WriteAttributes=["locale", "zoneinfo"],
    )["UserPoolClient"]
    return pool_id, str(app_client["ClientId"])


def describe_local_resources(local_aws: LocalAws) -> dict[str, Any]:
    """A normalized description of what is provisioned, read back from the embedded AWS.

    Meant for comparison with the synthesized CDK template (``tests/infra``). Shape (all lists
    sorted, everything keyed by definition id, not physical name)::

        {"tables": {id: {"pk", "sk", "indexes": {name: {"pk", "sk"}}, "ttl_attribute"}},
         "buckets": {id: {"versioned": bool, "notifications": {queue_id: [events]}}},
         "queues": {id: {"dlq": bool, "max_receive_count": int, "visibility_timeout_s": int}},
         "topics": {id: {"rules": [rule ids that deliver to it]}},
         "event_bus": name,
         "rules": {id: {"sources": [...], "detail_types": [...], "target_queues": [...]}},
         "schedules": {id: {"function": function_id, "minutes": int, "bus": "default"}},
         "event_sources": {function_id: {queue_id: {"batch_size": int, "report_batch_item_failures": bool}}},
         "routes": {function_id: {"authorized": [...], "public": [...]}},
         "user_pool": {"groups": [...], "custom_attributes": [...], "mfa": str,
                       "client_auth_flows": [...], "client_has_secret": bool}}
    """
    from local.dispatch import describe_event_sources  # local.dispatch imports this module

    return {
        "tables": _describe_tables(local_aws),
        "buckets": _describe_buckets(local_aws),
        "queues": _describe_queues(local_aws),
        "topics": _describe_topics(local_aws),
        "event_bus": local_aws.event_bus_name,
        "rules": _describe_rules(local_aws),
        "schedules": _describe_schedules(local_aws),
        "event_sources": describe_event_sources(),
        "routes": RouteTable.from_definitions().by_function(),
        "user_pool": _describe_user_pool(local_aws),
    }


def _describe_tables(local_aws: LocalAws) -> dict[str, Any]:
    dynamodb = local_aws.client("dynamodb")
    described: dict[str, Any] = {}
    for table_id, name in local_aws.tables.items():
        table = dynamodb.describe_table(TableName=name)["Table"]
        keys = {key["KeyType"]: key["AttributeName"] for key in table["KeySchema"]}
        indexes = {}
        for index in table.get("GlobalSecondaryIndexes", []):
            index_keys = {key["KeyType"]: key["AttributeName"] for key in index["KeySchema"]}
            indexes[index["IndexName"]] = {"pk": index_keys["HASH"], "sk": index_keys.get("RANGE")}
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        described[table_id] = {
            "pk": keys["HASH"],
            "sk": keys.get("RANGE"),
            "indexes": indexes,
            "ttl_attribute": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None,
        }
    return described


def _describe_buckets(local_aws: LocalAws) -> dict[str, Any]:
    s3 = local_aws.client("s3")
    queue_ids = {queue.arn: queue.id for queue in local_aws.queues.values()}
    described: dict[str, Any] = {}
    for bucket_id, name in local_aws.buckets.items():
        versioning = s3.get_bucket_versioning(Bucket=name)
        notifications = s3.get_bucket_notification_configuration(Bucket=name)
        try:
            lock = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
        except s3.exceptions.ClientError:
            lock = {}
        retention = lock.get("Rule", {}).get("DefaultRetention", {})
        described[bucket_id] = {
            "versioned": versioning.get("Status") == "Enabled",
            "object_lock": retention.get("Mode"),
            "notifications": {
                queue_ids.get(config["QueueArn"], config["QueueArn"]): sorted(config["Events"])
                for config in notifications.get("QueueConfigurations", [])
            },
        }
    return described


def _describe_queues(local_aws: LocalAws) -> dict[str, Any]:
    sqs = local_aws.client("sqs")
    described: dict[str, Any] = {}
    for queue in local_aws.queues.values():
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue.url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
        )["Attributes"]
        redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
        described[queue.id] = {
            "dlq": redrive.get("deadLetterTargetArn") == queue.dlq_arn,
            "max_receive_count": int(redrive.get("maxReceiveCount", 0)),
            "visibility_timeout_s": int(attributes["VisibilityTimeout"]),
        }
    return described


def _rule_targets(local_aws: LocalAws, rule_name: str) -> list[str]:
    events = local_aws.client("events")
    targets = events.list_targets_by_rule(Rule=rule_name, EventBusName=local_aws.event_bus_name)["Targets"]
    return [str(target["Arn"]) for target in targets]


def _describe_topics(local_aws: LocalAws) -> dict[str, Any]:
    """Every topic in the embedded AWS with the bus rules that deliver to it."""
    topic_ids = {topic.arn: topic.id for topic in local_aws.topics.values()}
    arns = [topic["TopicArn"] for topic in local_aws.client("sns").list_topics()["Topics"]]
    described: dict[str, Any] = {topic_ids.get(arn, arn): {"rules": []} for arn in arns}
    for rule_id, name in local_aws.rules.items():
        for arn in _rule_targets(local_aws, name):
            if arn in topic_ids:
                described[topic_ids[arn]]["rules"].append(rule_id)
    for topic in described.values():
        topic["rules"].sort()
    return described


def _describe_rules(local_aws: LocalAws) -> dict[str, Any]:
    """Every bus rule with its pattern and queue targets (topic targets: ``_describe_topics``)."""
    events = local_aws.client("events")
    queue_ids = {queue.arn: queue.id for queue in local_aws.queues.values()}
    topic_arns = {topic.arn for topic in local_aws.topics.values()}
    described: dict[str, Any] = {}
    for rule_id, name in local_aws.rules.items():
        rule = events.describe_rule(Name=name, EventBusName=local_aws.event_bus_name)
        pattern = json.loads(rule["EventPattern"])
        described[rule_id] = {
            "sources": sorted(pattern.get("source", [])),
            "detail_types": sorted(pattern.get("detail-type", [])),
            "target_queues": sorted(queue_ids.get(arn, arn) for arn in _rule_targets(local_aws, name)
                                    if arn not in topic_arns),
        }
    return described


def _describe_schedules(local_aws: LocalAws) -> dict[str, Any]:
    events = local_aws.client("events")
    function_ids = {local_aws.function_arn(fn.id): fn.id for fn in FUNCTIONS}
    described: dict[str, Any] = {}
    for schedule_id, schedule in local_aws.schedules.items():
        rule = events.describe_rule(Name=schedule.rule_name, EventBusName=DEFAULT_EVENT_BUS)
        targets = events.list_targets_by_rule(Rule=schedule.rule_name, EventBusName=DEFAULT_EVENT_BUS)["Targets"]
        (target,) = targets
        described[schedule_id] = {
            "function": function_ids.get(target["Arn"], target["Arn"]),
            "minutes": delivery.rate_minutes(rule["ScheduleExpression"]),
            "bus": rule.get("EventBusName", DEFAULT_EVENT_BUS),
        }
    return described


def _describe_user_pool(local_aws: LocalAws) -> dict[str, Any]:
    cognito = local_aws.client("cognito-idp")
    pool = cognito.describe_user_pool(UserPoolId=local_aws.user_pool_id)["UserPool"]
    groups = cognito.list_groups(UserPoolId=local_aws.user_pool_id)["Groups"]
    app_client = cognito.describe_user_pool_client(
        UserPoolId=local_aws.user_pool_id, ClientId=local_aws.user_pool_client_id
    )["UserPoolClient"]
    return {
        "groups": sorted(group["GroupName"] for group in groups),
        "custom_attributes": sorted(
            attribute["Name"] for attribute in pool["SchemaAttributes"] if attribute["Name"].startswith("custom:")
        ),
        "mfa": pool.get("MfaConfiguration", "OFF"),
        "client_auth_flows": sorted(app_client.get("ExplicitAuthFlows", [])),
        "client_has_secret": "ClientSecret" in app_client,
    }
