"""The local front door: what API Gateway (REST), its Cognito authorizer and Lambda do for a request.

For each HTTP request ``FrontDoor``:

1. refuses a body over 1 MiB with 413 and the WAF's OperationOutcome (the deployed stack's limit);
2. routes the path to the function that owns it (``local.routes``, built from
   ``infra.definitions.FUNCTIONS``); no route → 404 with a FHIR ``OperationOutcome``, as the
   deployed API's missing-resource gateway response;
3. unless the route is public (``GET`` only), verifies the Cognito ID token like the user-pool
   authorizer; any failure → 401 with the deployed API's ``UNAUTHORIZED`` gateway response (an
   ``OperationOutcome``, ``infra.definitions.GATEWAY_RESPONSES``);
4. builds an API Gateway REST proxy event (payload 1.0) with the claims in
   ``requestContext.authorizer.claims`` (every value a string) and invokes the function's
   ``functions.<id>.handler.lambda_handler`` in-process with a Lambda-like context;
5. maps the proxy response back to HTTP; a raised exception, a malformed response or a run over
   the function's timeout → 502 with the deployed API's ``DEFAULT_5XX`` gateway response.

Every response carries ``x-amzn-RequestId``. Invocations run one at a time in the process, each
with its function's environment (``LocalAws.function_env``) applied only for the import and the
call (``local.aws.temporary_environ`` holds a process-wide lock): a Lambda execution environment
also runs one request at a time, the handlers' module-level state need not be thread-safe, and
``os.environ`` (which differs per function in ``POWERTOOLS_SERVICE_NAME``) is never shared by two
functions at once. The access log
names the route template, status and request id only: never the query string, a token or a body.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from infra.definitions import ALL_FUNCTIONS, FunctionDef, gateway_response
from local.auth import IdTokenVerifier, JwksUnavailable, TokenRejected, api_gateway_claims
from local.aws import HOST, BackgroundServer, LocalAws, temporary_environ
from local.routes import RouteMatch, RouteTable

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3000
PORT_ENV = "EXPEDIENTE_API_PORT"
STAGE = "local"
API_ID = "local"
MAX_BODY_BYTES = 1024 * 1024
# A client may still be sending an oversized body; read and drop up to API Gateway's own 10 MB
# limit so it gets the 413 instead of a reset connection.
_DRAIN_LIMIT_BYTES = 10 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_PATHS = (REPO_ROOT, REPO_ROOT / "layers" / "common")

Handler = Callable[[dict[str, Any], Any], Any]

_TEXT_MEDIA_TYPES = frozenset(
    {"application/json", "application/xml", "application/x-www-form-urlencoded", "application/javascript"}
)
# Lambda strips these hop-by-hop or recomputed headers from a proxy response.
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def configured_port(default: int = DEFAULT_PORT) -> int:
    """The port from ``EXPEDIENTE_API_PORT`` (0 picks a free one), else ``default``."""
    return int(os.environ.get(PORT_ENV, default))


def ensure_code_paths() -> None:
    """Make ``functions.<id>.handler`` and the shared ``expediente`` package importable."""
    for path in reversed(CODE_PATHS):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


class LambdaContext:
    """The attributes and method of the Lambda Python runtime's context object.

    ``memory_limit_in_mb`` is a string, as the real runtime gives it.
    """

    def __init__(self, *, definition: FunctionDef, local_aws: LocalAws) -> None:
        self.function_name = f"expediente-{STAGE}-{definition.id}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{local_aws.region}:{local_aws.account_id}:function:{self.function_name}"
        )
        self.memory_limit_in_mb = str(definition.memory_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + definition.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionError(Exception):
    """The function failed as Lambda would report it: raised, timed out or answered malformed."""


class FunctionRunner:
    """Imports and invokes the functions of ``infra.definitions`` in this process.

    Each function runs on a thread of its own, kept for the runner's life, whoever invokes it (an API
    request's thread, the queue dispatcher, the scheduler, the sign-in hooks): like one warm Lambda
    container, so what a function keeps per thread lasts across invocations as it does on AWS (the
    audit trail's hash chains: one chain, and one chain key, per container and tenant).

    ``handlers`` replaces the import of ``functions.<id>.handler`` for the given ids (tests use it
    to put a recording handler behind the front door).
    """

    def __init__(self, local_aws: LocalAws, *, handlers: Mapping[str, Handler] | None = None) -> None:
        self._local_aws = local_aws
        self._definitions = {fn.id: fn for fn in ALL_FUNCTIONS}
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._containers: dict[str, ThreadPoolExecutor] = {}
        self._containers_lock = threading.Lock()
        ensure_code_paths()

    def invoke(self, function_id: str, event: dict[str, Any]) -> Any:
        """The handler's return value; raises FunctionError like a failed Lambda invocation.

        Runs on the function's own thread. One invocation at a time per process: the environment overlay
        holds a process-wide lock.
        """
        if function_id not in self._definitions:
            raise KeyError(function_id)
        with self._containers_lock:
            container = self._containers.get(function_id)
            if container is None:
                container = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lambda-{function_id}")
                self._containers[function_id] = container
        if threading.current_thread().name.startswith(f"lambda-{function_id}_"):
            return self._run(function_id, event)  # invoked from its own thread: no deadlock on itself
        return container.submit(self._run, function_id, event).result()

    def close(self) -> None:
        """Stop the functions' threads once their current invocation ends."""
        with self._containers_lock:
            containers, self._containers = list(self._containers.values()), {}
        for container in containers:
            container.shutdown(wait=True)

    def _run(self, function_id: str, event: dict[str, Any]) -> Any:
        definition = self._definitions[function_id]
        with temporary_environ(self._local_aws.function_env(function_id)):
            handler = self._load(function_id)
            context = LambdaContext(definition=definition, local_aws=self._local_aws)
            started = time.monotonic()
            try:
                result = handler(event, context)
            # Lambda turns any exception of the handler into a function error; so does this,
            # after logging where it happened (the message is left out: it may carry patient data).
            except Exception as error:
                logger.error(
                    "function %s raised %s (request %s)\n%s",
                    function_id, type(error).__name__, context.aws_request_id,
                    "".join(traceback.format_tb(error.__traceback__)),
                )
                raise FunctionError(f"{function_id} raised {type(error).__name__}") from error
            elapsed = time.monotonic() - started
        if elapsed > definition.timeout_s:
            logger.error("function %s ran %.1fs, over its %ds timeout", function_id, elapsed, definition.timeout_s)
            raise FunctionError(f"{function_id} timed out")
        return result

    def _load(self, function_id: str) -> Handler:
        handler = self._handlers.get(function_id)
        if handler is not None:
            return handler
        module_name = f"functions.{function_id}.handler"
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            # Not cached: the next request tries again, so a function written meanwhile is picked up.
            logger.error("cannot import %s: %s", module_name, error)
            raise FunctionError(f"cannot import {module_name}") from error
        found: object = getattr(module, "lambda_handler", None)
        if not callable(found):
            logger.error("%s has no callable lambda_handler", module_name)
            raise FunctionError(f"{module_name} has no lambda_handler")
        handler = cast(Handler, found)
        self._handlers[function_id] = handler
        return handler


class FrontDoor:
    """A WSGI application (and its server) that stands in for the deployed REST API."""

    def __init__(
        self,
        local_aws: LocalAws,
        *,
        runner: FunctionRunner | None = None,
        routes: RouteTable | None = None,
        verifier: IdTokenVerifier | None = None,
    ) -> None:
        self.local_aws = local_aws
        self.runner = runner or FunctionRunner(local_aws)
        self.routes = routes or RouteTable.from_definitions()
        self.verifier = verifier or IdTokenVerifier(
            jwks_url=local_aws.jwks_url, issuer=local_aws.issuer, audience=local_aws.user_pool_client_id
        )
        self._server = BackgroundServer("front door", self, _QuietRequestHandler)

    # -- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (raises RuntimeError before ``start``)."""
        return self._server.url()

    def start(self, *, port: int = DEFAULT_PORT) -> str:
        """Serve on 127.0.0.1:``port`` in a daemon thread; returns the base URL (OSError if busy)."""
        self._server.start(HOST, port)
        logger.info("front door listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._server.stop()

    # -- WSGI -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        response, route_label = self._handle(request, request_id)
        response.headers["x-amzn-RequestId"] = request_id
        logger.info(
            "%s %s -> %d in %.0f ms (request %s)",
            request.method, route_label, response.status_code, (time.monotonic() - started) * 1000, request_id,
        )
        return response(environ, start_response)

    def _handle(self, request: Request, request_id: str) -> tuple[Response, str]:
        body = _read_body(request)
        if body is None:
            return Response(_TOO_LARGE_BODY, status=413, content_type="application/json"), "(body too large)"
        match = self.routes.resolve(request.path)
        if match is None or (match.route.public and request.method != "GET"):
            return _not_found(request), "(no route)"
        label = match.route.resource
        claims: dict[str, str] | None = None
        if not match.route.public:
            try:
                claims = api_gateway_claims(self.verifier.verify(request.headers.get("Authorization")))
            except TokenRejected as rejection:
                logger.debug("unauthorized (request %s): %s", request_id, rejection)
                return _api_gateway_error(401, "UNAUTHORIZED", "UnauthorizedException", request_id), label
            except JwksUnavailable:
                logger.exception("cannot verify tokens (request %s)", request_id)
                return _api_gateway_error(500, "DEFAULT_5_XX", "AuthorizerConfigurationException", request_id), label
        event = build_proxy_event(
            request, match, body=body, claims=claims, request_id=request_id, account_id=self.local_aws.account_id
        )
        try:
            result = self.runner.invoke(match.route.function_id, event)
            return _proxy_response(result), label
        except FunctionError:
            return _api_gateway_error(502, "DEFAULT_5_XX", "InternalServerErrorException", request_id), label


class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its access log, whose request line carries the query string."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def _read_body(request: Request) -> bytes | None:
    """The request body, or None if it is over ``MAX_BODY_BYTES`` (drained so the 413 arrives)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        if declared <= _DRAIN_LIMIT_BYTES:
            _drain(request)
        return None
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        _drain(request)
        return None
    return body


def _drain(request: Request) -> None:
    while request.stream.read(64 * 1024):
        pass


def _is_text(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return (
        not media_type
        or media_type.startswith("text/")
        or media_type in _TEXT_MEDIA_TYPES
        or media_type.endswith(("+json", "+xml"))
        or "hl7-v2" in media_type
    )


def build_proxy_event(
    request: Request,
    match: RouteMatch,
    *,
    body: bytes,
    claims: dict[str, str] | None,
    request_id: str,
    account_id: str,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload format 1.0) for ``request`` on ``match``.

    Headers and query parameters keep their last value in the single-value maps and all values in
    the ``multiValue*`` maps (each ``None`` when empty, as API Gateway sends them); a text body is
    a string, anything else base64 with ``isBase64Encoded``. ``claims`` (already strings) go to
    ``requestContext.authorizer.claims``.
    """
    source_ip = request.remote_addr or HOST
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append(value)
    forwarded = headers.pop("X-Forwarded-For", [])
    headers["X-Forwarded-For"] = [", ".join([*forwarded, source_ip])]
    headers["X-Forwarded-Proto"] = [request.scheme]
    headers["X-Forwarded-Port"] = [str(request.server[1]) if request.server and request.server[1] else "80"]
    headers.setdefault("X-Amzn-Trace-Id", [f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"])

    query: dict[str, list[str]] = {name: request.args.getlist(name) for name in request.args}

    event_body: str | None = None
    is_base64 = False
    if body:
        text = None
        if _is_text(request.content_type):
            with contextlib.suppress(UnicodeDecodeError):
                text = body.decode("utf-8")
        if text is None:
            event_body, is_base64 = base64.b64encode(body).decode("ascii"), True
        else:
            event_body = text

    now = time.time()
    moment = time.gmtime(now)
    resource = match.route.resource
    request_context: dict[str, Any] = {
        "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, resource).hex[:6],
        "resourcePath": resource,
        "httpMethod": request.method,
        "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode("ascii"),
        "requestTime": (
            f"{moment.tm_mday:02d}/{_MONTHS[moment.tm_mon - 1]}/{moment.tm_year}:"
            f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000"
        ),
        # The path the client called. On execute-api URLs it starts with the stage (/prod/...);
        # the front door serves without one, like a custom domain, so links built from it work.
        "path": request.path,
        "accountId": account_id,
        "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "stage": STAGE,
        "domainPrefix": request.host.split(".", 1)[0],
        "requestTimeEpoch": int(now * 1000),
        "requestId": request_id,
        "identity": {
            "cognitoIdentityPoolId": None,
            "accountId": None,
            "cognitoIdentityId": None,
            "caller": None,
            "sourceIp": source_ip,
            "principalOrgId": None,
            "accessKey": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": None,
            "userAgent": request.headers.get("User-Agent"),
            "user": None,
        },
        "domainName": request.host,
        "apiId": API_ID,
    }
    if claims is not None:
        request_context["authorizer"] = {"claims": claims}
    return {
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": event_body,
        "isBase64Encoded": is_base64,
    }


def _proxy_response(result: Any) -> Response:
    """The HTTP response for a Lambda proxy result; FunctionError if API Gateway would reject it."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int | str):
        logger.error("malformed Lambda proxy response: %s", type(result).__name__)
        raise FunctionError("malformed proxy response")
    try:
        status = int(result["statusCode"])
        body = result.get("body") or ""
        if not isinstance(body, str):
            raise TypeError("body must be a string")
        payload = base64.b64decode(body, validate=True) if result.get("isBase64Encoded") else body.encode("utf-8")
    except (ValueError, TypeError) as error:  # binascii.Error is a ValueError
        logger.error("malformed Lambda proxy response: %s", error)
        raise FunctionError("malformed proxy response") from error
    # API Gateway merges both maps; a name present in multiValueHeaders keeps only those values.
    merged: dict[str, list[str]] = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        merged[name.lower()] = [str(value) for value in values]
    for name, value in (result.get("headers") or {}).items():
        merged.setdefault(name.lower(), [str(value)])
    headers = Headers()
    for name, values in merged.items():
        if name in _DROPPED_RESPONSE_HEADERS:
            continue
        for value in values:
            headers.add(name, value)
    if "content-type" not in headers:
        headers["Content-Type"] = "application/json"
    return Response(payload, status=status, headers=headers)


# Over the body limit the deployed API answers with its WAF rule's block response (infra/constructs/waf.py,
# BodyTooLarge), not API Gateway's default; the same bytes here (tests/unit/fuzz/test_body_limits_every_route.py).
_TOO_LARGE_BODY = json.dumps({"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "too-costly", "diagnostics": f"Request body over {MAX_BODY_BYTES} bytes"}]})


def _api_gateway_error(status: int, response_type: str, error_type: str, request_id: str) -> Response:
    """One of the deployed API's gateway responses (``infra.definitions.GATEWAY_RESPONSES``: an
    ``OperationOutcome``, its ``$context`` variables filled in as API Gateway does), with the
    ``x-amzn-ErrorType`` API Gateway adds."""
    template = gateway_response(response_type).body()
    body = template.replace("$context.requestId", request_id)
    response = Response(body, status=status, content_type="application/fhir+json")
    response.headers["x-amzn-ErrorType"] = error_type
    return response


def _not_found(request: Request) -> Response:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "not-found",
                "diagnostics": f"No resource {request.path} accepts {request.method}",
            }
        ],
    }
    return Response(json.dumps(outcome), status=404, content_type="application/fhir+json")
