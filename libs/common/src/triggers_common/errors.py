"""One exception hierarchy, mapped to the error envelope of the API in one place (``http.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import msgspec


class TriggersError(Exception):
    """Base of every error that reaches a client. Subclasses fix the status and the code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        super().__init__(self.message)


class ValidationFailed(TriggersError):
    """The request body failed validation."""

    status_code = 400
    code = "VALIDATION_ERROR"
    default_message = "Request validation failed"

    @classmethod
    def of(cls, errors: list[dict[str, str]], message: str | None = None) -> Self:
        return cls(message, {"validation_errors": errors})

    @classmethod
    def field(cls, field: str, message: str, summary: str | None = None) -> Self:
        """The error for one bad field (``body.items.3.source``, ``query.limit``, ...)."""
        return cls.of([{"field": field, "message": message, "type": "value_error"}], summary)


class InvalidParameter(ValidationFailed):
    """A path or query parameter failed validation."""

    status_code = 422


class Unauthorized(TriggersError):
    status_code = 401
    code = "UNAUTHORIZED"
    default_message = "Invalid or missing API key"


class Forbidden(TriggersError):
    status_code = 403
    code = "FORBIDDEN"
    default_message = "Forbidden"


class NotFound(TriggersError):
    status_code = 404
    code = "NOT_FOUND"
    default_message = "Not found"


class MethodNotAllowed(TriggersError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed"


class Conflict(TriggersError):
    status_code = 409
    code = "CONFLICT"
    default_message = "Conflict"


class PayloadTooLarge(TriggersError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Payload too large"


class UnsupportedMediaType(TriggersError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "Content-Type must be application/json"


class ServiceUnavailable(TriggersError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "Service temporarily unavailable"

    def __init__(self, message: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class BulkErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any]


class BulkFailure(msgspec.Struct):
    """One failed item of a bulk request, by its index in the request."""

    index: int
    error: BulkErrorBody

    @classmethod
    def of(cls, index: int, error: TriggersError) -> BulkFailure:
        return cls(index, BulkErrorBody(error.code, error.message, error.details))
