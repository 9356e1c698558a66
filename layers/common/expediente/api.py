"""The HTTP front every API function shares: routing, errors, bodies, responses, idempotency.

A function builds its router with :func:`create_app`, reads the verified
caller with :func:`request_context`, and answers with :func:`fhir_response`.
Every :class:`~expediente.errors.DomainError` becomes an ``OperationOutcome``
with its status here, once; anything unexpected becomes a 500 outcome without
patient data and is logged with the request id only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from expediente.context import RequestContext, context_from_event
from expediente.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from expediente.fhir import FHIR_JSON, etag
from expediente.settings import settings

logger = Logger(service="expediente")

MAX_BODY_BYTES = 1_000_000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_JSON_TYPES = ("application/fhir+json", "application/json")


def create_app() -> APIGatewayRestResolver:
    """A resolver whose errors are FHIR ``OperationOutcome``s."""
    app = APIGatewayRestResolver()

    @app.exception_handler(DomainError)
    def _domain_error(exc: DomainError) -> Response[str]:
        if exc.status >= 500:
            logger.warning("request failed", extra={"status": int(exc.status), "reason": type(exc).__name__})
        return outcome_response(exc)

    @app.not_found
    def _not_found(_: NotFoundError) -> Response[str]:
        event = app.current_event
        return outcome_response(NotFound(f"No route for {event.http_method} {event.path}"))

    app.use(middlewares=[_measured])
    return app


def _measured(app: APIGatewayRestResolver, next_middleware: Any) -> Response[Any]:
    """Requests, errors and latency per route template (``expediente.metrics``); never ids."""
    from expediente import metrics

    started = time.perf_counter()
    status = 500
    try:
        response: Response[Any] = next_middleware(app)
        status = response.status_code
        return response
    except DomainError as exc:
        status = int(exc.status)
        raise
    finally:
        route = app.context.get("_route")
        action = f"{app.current_event.http_method} {getattr(route, 'path', '') or 'unrouted'}"
        metrics.request(action, status, (time.perf_counter() - started) * 1000)


def outcome_response(exc: DomainError) -> Response[str]:
    return Response(
        status_code=int(exc.status),
        content_type=FHIR_JSON,
        body=json.dumps(exc.outcome()),
        headers=dict(exc.headers),
    )


def request_context(app: APIGatewayRestResolver) -> RequestContext:
    """The verified caller of the current request (401 when the claims are missing)."""
    return context_from_event(app.current_event.raw_event)


def query_params(app: APIGatewayRestResolver) -> dict[str, str]:
    """Query parameters; a repeated parameter keeps its values comma-joined (FHIR OR)."""
    event = app.current_event.raw_event
    multi = event.get("multiValueQueryStringParameters") or {}
    if multi:
        return {k: ",".join(v) for k, v in multi.items() if v}
    return dict(event.get("queryStringParameters") or {})


def header(app: APIGatewayRestResolver, name: str) -> str | None:
    wanted = name.lower()
    for key, value in (app.current_event.raw_event.get("headers") or {}).items():
        if key.lower() == wanted:
            return str(value)
    return None


def json_body(app: APIGatewayRestResolver, *, resource_type: str | None = None) -> dict[str, Any]:
    """The request body as a JSON object (FHIR JSON or plain JSON).

    Raises 415 for another media type, 413 when too large, 400 when it is not a
    JSON object or names another ``resourceType`` than expected.
    """
    content_type = (header(app, "content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be application/fhir+json, got {content_type}")
    raw = app.current_event.decoded_body or ""
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Invalid(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(body, dict):
        raise Invalid("The body must be a JSON object")
    if resource_type is not None and body.get("resourceType") != resource_type:
        raise Invalid(f"Expected a {resource_type} resource, got {body.get('resourceType')!r}",
                      expression="resourceType")
    return body


def base_url(app: APIGatewayRestResolver) -> str:
    """Scheme, host and stage prefix the client used (for links and ``Location``)."""
    event = app.current_event.raw_event
    request = event.get("requestContext") or {}
    host = header(app, "host") or request.get("domainName") or "localhost"
    proto = header(app, "x-forwarded-proto") or "https"
    full_path = str(request.get("path") or "")
    path = str(event.get("path") or "")
    prefix = full_path[: -len(path)] if path and full_path.endswith(path) else ""
    return f"{proto}://{host}{prefix}"


def fhir_response(
    resource: dict[str, Any],
    *,
    status: int = 200,
    version: int | None = None,
    location: str | None = None,
    last_modified: str | None = None,
) -> Response[str]:
    """A FHIR JSON response with ``ETag``, ``Location`` and ``Last-Modified`` when given."""
    headers: dict[str, str] = {}
    if version is not None:
        headers["ETag"] = etag(version)
    if location:
        headers["Location"] = location
    if last_modified:
        headers["Last-Modified"] = http_date(last_modified)
    return Response(status_code=status, content_type=FHIR_JSON, body=json.dumps(resource), headers=headers)


def http_date(instant: str) -> str:
    """An ISO-8601 instant (``meta.lastUpdated``) as an HTTP-date (RFC 9110), as ``Last-Modified`` requires."""
    parsed = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return format_datetime(parsed.astimezone(UTC), usegmt=True)


@cache
def _idempotency_store() -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from expediente import aws

    return DynamoDBPersistenceLayer(table_name=settings().table_idempotency, boto3_client=aws.client("dynamodb"))


def idempotent(
    app: APIGatewayRestResolver,
    ctx: RequestContext,
    run: Callable[[], Response[str]],
    *,
    on_replay: Callable[[Response[str]], None] | None = None,
) -> Response[str]:
    """Run a POST once per ``Idempotency-Key`` (architecture decision 10).

    Without the header the request simply runs. With it, the first successful
    response is stored for the tenant and user and a retry gets that same
    response without running anything again (``on_replay`` lets the caller audit
    the replay). The same key with a different body answers 422; a retry while
    the first is still running answers 409. Failed requests are not remembered.
    """
    key = header(app, "idempotency-key")
    if key is None:
        return run()
    if not _IDEMPOTENCY_KEY.match(key):
        raise Invalid("Idempotency-Key must be 1-255 visible ASCII characters", expression="Idempotency-Key")

    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    event = app.current_event
    body = event.decoded_body or ""
    request = {
        "key": f"{ctx.tenant}|{ctx.user_id}|{event.http_method} {event.path}|{key}",
        "body": hashlib.sha256(body.encode()).hexdigest(),
    }
    executed = False

    def once(request: dict[str, str]) -> dict[str, Any]:
        nonlocal executed
        executed = True
        response = run()
        return {"status": response.status_code, "headers": response.headers, "body": response.body}

    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="body",
        expires_after_seconds=settings().idempotency_ttl_s,
        use_local_cache=False,
    )
    config.register_lambda_context(app.lambda_context)
    wrapped = idempotent_function(
        once, data_keyword_argument="request", persistence_store=_idempotency_store(), config=config
    )
    try:
        stored = wrapped(request=request)
    except IdempotencyValidationError as exc:
        raise Unprocessable(
            "Idempotency-Key was already used with a different request", expression="Idempotency-Key"
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise Conflict("A request with this Idempotency-Key is still being processed; retry later") from exc
    headers = {k: v for k, v in (stored.get("headers") or {}).items() if isinstance(v, str)}
    response = Response(status_code=int(stored["status"]), content_type=FHIR_JSON, body=stored["body"],
                        headers=headers)
    if not executed:
        response.headers["Idempotent-Replayed"] = "true"
        if on_replay is not None:
            on_replay(response)
    return response
