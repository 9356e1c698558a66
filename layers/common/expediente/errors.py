"""The error hierarchy, mapped once to an HTTP status and a FHIR ``OperationOutcome``.

Domain code raises these; :mod:`expediente.api` turns them into responses. A
message says what was wrong and where (``Patient.birthDate is required``) and
never contains patient data beyond what the caller itself sent.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class DomainError(Exception):
    """A request that cannot be honoured, with the FHIR issue code to report."""

    status: ClassVar[HTTPStatus] = HTTPStatus.BAD_REQUEST
    code: ClassVar[str] = "invalid"  # FHIR issue-type code

    def __init__(self, message: str, *, expression: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        """This error as a FHIR R4 ``OperationOutcome``."""
        issue: dict[str, Any] = {"severity": "error", "code": self.code, "diagnostics": self.message}
        if self.expression:
            issue["expression"] = [self.expression]
        return {"resourceType": "OperationOutcome", "issue": [issue]}


class Invalid(DomainError):
    """400: the request is malformed or a value is not acceptable."""


class Unauthenticated(DomainError):
    status, code = HTTPStatus.UNAUTHORIZED, "login"


class Forbidden(DomainError):
    status, code = HTTPStatus.FORBIDDEN, "forbidden"


class NotFound(DomainError):
    """404: missing, or belonging to another tenant (both answer the same)."""

    status, code = HTTPStatus.NOT_FOUND, "not-found"


class MethodNotAllowed(DomainError):
    status, code = HTTPStatus.METHOD_NOT_ALLOWED, "not-supported"


class Conflict(DomainError):
    status, code = HTTPStatus.CONFLICT, "conflict"


class Duplicate(Conflict):
    """409 for a uniqueness rule (one record per CURP per tenant)."""

    code = "duplicate"


class Gone(DomainError):
    status, code = HTTPStatus.GONE, "deleted"


class PreconditionFailed(DomainError):
    """412: ``If-Match`` names a version that is no longer current."""

    status, code = HTTPStatus.PRECONDITION_FAILED, "conflict"


class PreconditionRequired(DomainError):
    status, code = HTTPStatus.PRECONDITION_REQUIRED, "required"


class Unprocessable(DomainError):
    """422: well-formed but breaks a business rule."""

    status, code = HTTPStatus.UNPROCESSABLE_ENTITY, "business-rule"


class PayloadTooLarge(DomainError):
    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-costly"


class UnsupportedMediaType(DomainError):
    status, code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "not-supported"


RETRY_AFTER_SECONDS = 2  # what a 503 tells the client to wait (RFC 9110 Retry-After), unless the raiser says


class Transient(DomainError):
    """503 ``transient``: a dependency failed or is throttling; nothing was changed, retrying is worth it.

    Always carries ``Retry-After`` (``RETRY_AFTER_SECONDS`` unless the raiser passes its own).
    """

    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "transient"

    def __init__(self, message: str, *, expression: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message, expression=expression,
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})})


class AuditUnavailable(Transient):
    """503: the audit record could not be written, so no data is returned."""


class ServiceUnavailable(Transient):
    """503: a store or service (DynamoDB, KMS, S3, EventBridge, Cognito) failed; nothing was changed."""


class InternalError(DomainError):
    """500: an unexpected, non-retryable failure of a dependency; the outcome carries no details."""

    status, code = HTTPStatus.INTERNAL_SERVER_ERROR, "exception"
