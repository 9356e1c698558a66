"""The HTTP front every API function shares: routing, errors, bodies, responses, idempotency.

A function builds its router with :func:`create_app`, reads the verified
caller with :func:`request_context`, and answers with :func:`fhir_response`.
Every :class:`~expediente.errors.DomainError` becomes an ``OperationOutcome``
with its status here, once; anything unexpected becomes a 500 outcome without
patient data and is logged with the request id only.
"""

from __future__ import annotations

import base64
import binascii
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
from botocore.exceptions import BotoCoreError, ClientError

from expediente import aws
from expediente.context import RequestContext, context_from_event
from expediente.errors import (
    Conflict,
    DomainError,
    InternalError,
    Invalid,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from expediente.fhir import FHIR_JSON, etag
from expediente.settings import settings

logger = Logger(service="expediente")

MAX_BODY_BYTES = 1024 * 1024  # the WAF's and the local front door's limit too (infra/constructs/waf.py)
MAX_JSON_DEPTH = 64  # FHIR resources nest about 10 deep; deeper input is refused before it costs stack
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

    @app.exception_handler([ClientError, BotoCoreError])
    def _aws_error(exc: ClientError | BotoCoreError) -> Response[str]:
        return outcome_response(aws_failure(exc))

    @app.not_found
    def _not_found(_: NotFoundError) -> Response[str]:
        event = app.current_event
        return outcome_response(NotFound(f"No route for {event.http_method} {event.path}"))

    app.use(middlewares=[_tenant_unbound, _measured])
    return app


def _tenant_unbound(app: APIGatewayRestResolver, next_middleware: Any) -> Response[Any]:
    """Each request starts with no tenant bound (a warm container keeps the last one otherwise):
    data calls are signed for a tenant only once this request's verified context names it."""
    from expediente.context import tenant_scope

    with tenant_scope(None):
        response: Response[Any] = next_middleware(app)
    return response


def aws_failure(exc: ClientError | BotoCoreError) -> DomainError:
    """An AWS error nobody handled, as the error to answer: 503 ``transient`` with ``Retry-After`` when
    retrying may succeed (throttling, 5xx, connection failure), else 500 ``exception`` without details.

    Logged with the operation's error code only: AWS messages may echo request values.
    """
    transient = aws.is_transient(exc)
    operation = getattr(exc, "operation_name", "") or ""
    logger.warning("AWS call failed", extra={"error": aws.error_code(exc) or type(exc).__name__,
                                             "operation": operation, "transient": transient})
    if transient:
        return ServiceUnavailable("A storage or security service is busy or unavailable; retry later")
    return InternalError("The request could not be completed because of an internal error")


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
    except (ClientError, BotoCoreError) as exc:
        status = 503 if aws.is_transient(exc) else 500
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

    Raises 415 for another media type, 413 when over :data:`MAX_BODY_BYTES`, 400 when it is not
    UTF-8, not JSON (``NaN``/``Infinity``, numbers out of range and lone surrogates included), not
    an object, nested deeper than :data:`MAX_JSON_DEPTH`, or names another ``resourceType`` than expected.
    Never anything else: the body is untrusted input (docs/decisions/0025-bad-input-fuzzed.md).
    """
    content_type = (header(app, "content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be application/fhir+json, got {content_type}")
    raw = body_text(app)
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise Invalid(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError as exc:
        raise Invalid(f"The body nests JSON deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # a number past int's digit limit or float's range, NaN, Infinity
        raise Invalid(f"The body is not acceptable JSON: {exc}"[:200]) from exc
    if not isinstance(body, dict):
        raise Invalid("The body must be a JSON object")
    _check_tree(body, MAX_JSON_DEPTH)
    if resource_type is not None and body.get("resourceType") != resource_type:
        raise Invalid(f"Expected a {resource_type} resource, got {str(body.get('resourceType'))[:64]!r}",
                      expression="resourceType")
    return body


def body_text(app: APIGatewayRestResolver) -> str:
    """The request body as text (base64 bodies decoded): 413 over :data:`MAX_BODY_BYTES`, 400 when not UTF-8.

    For routes that read a body other than JSON (HL7 v2 ER7): the same limits as :func:`json_body`.
    """
    event = app.current_event
    raw = event.body or ""
    if event.is_base64_encoded and raw:
        if len(raw) > (MAX_BODY_BYTES + 2) // 3 * 4:
            raise PayloadTooLarge(f"The body exceeds {MAX_BODY_BYTES} bytes")
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise Invalid("The body is not valid base64") from exc
    else:
        data = raw.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body exceeds {MAX_BODY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"The body is not UTF-8 text (byte {exc.start})") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _check_tree(value: Any, limit: int) -> None:
    """400 when ``value`` nests deeper than ``limit`` or holds a string that is not Unicode text.

    Iterative, so a deep document cannot exhaust the stack here; a lone surrogate (``"\\ud800"``,
    which JSON admits and UTF-8 cannot encode) would otherwise fail later, in storage, as a 500.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise Invalid(f"The body nests JSON deeper than {limit} levels")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            for text in (key, child):
                if isinstance(text, str) and not _is_unicode(text):
                    raise Invalid("The body holds a string that is not Unicode text (a lone surrogate escape)")
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    # The record's key starts with the tenant like every other key (decision 0023): the stored response
    # is patient data, and the tenant-scoped credentials reach only the tenant's own records.
    wrapped = idempotent_function(
        once, data_keyword_argument="request", persistence_store=_idempotency_store(), config=config,
        key_prefix=f"{ctx.tenant}#idempotency",
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
