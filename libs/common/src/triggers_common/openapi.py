"""What the generated OpenAPI document cannot know from raw-body handlers: bodies, headers, errors, examples.

Each route declares a :class:`Doc` in its ``opt``; :func:`enrich` folds them into Litestar's document, with
every schema derived from the msgspec types the code uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from triggers_common.errors import ErrorEnvelope

ERRORS = {
    400: "VALIDATION_ERROR: the body failed validation (`details.validation_errors` names each field)",
    401: "UNAUTHORIZED: missing, unknown, revoked or expired key, or a bad or stale request signature",
    403: "FORBIDDEN: the client IP is not in the key's allowlist, or the key lacks the scope",
    404: "NOT_FOUND: no such resource for the caller's tenant",
    409: "CONFLICT: the resource is not in a state that allows this",
    413: "PAYLOAD_TOO_LARGE: body or payload over its limit (`details.limit_bytes`, `details.actual_bytes`)",
    415: "UNSUPPORTED_MEDIA_TYPE: the body is not JSON",
    422: "VALIDATION_ERROR: a path or query parameter failed validation",
    429: "RATE_LIMIT_EXCEEDED: per-key or per-tenant limit; see `Retry-After`",
    503: "SERVICE_UNAVAILABLE: Kafka or Postgres unreachable; nothing was done; see `Retry-After`",
}
AUTH_ERRORS = (401, 403, 429, 503)
UUID_PATH_PARAMS = {"event_id", "lease_id", "webhook_id", "delivery_id"}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests per minute allowed for the key",
    "X-RateLimit-Remaining": "Requests left in the current window",
    "X-RateLimit-Reset": "Epoch seconds when the bucket is full again",
    "X-Request-ID": "The request's id (the caller's, if sent)",
}


@dataclass(frozen=True)
class Param:
    name: str
    location: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


SIGNATURE_HEADERS = (
    Param("X-Signature", "header", "base64 HMAC-SHA256 of METHOD\\nPATH\\nRAW_QUERY\\nTIMESTAMP\\nhex(sha256(body))"),
    Param("X-Signature-Timestamp", "header", "Unix seconds of the signature; within ±300 s of the server's clock"),
    Param("X-Request-ID", "header", "Your id for the request (≤ 128 chars), echoed back"),
)


@dataclass(frozen=True)
class Doc:
    """The parts of one operation the code's signature does not show."""

    body: Any = None
    body_example: Any = None
    body_media: tuple[str, ...] = ("application/json",)
    other_bodies: tuple[tuple[str, Any, Any], ...] = ()
    """More media types the body may have: (media type, its type, an example)."""
    params: tuple[Param, ...] = ()
    response: Any = None
    response_example: Any = None
    response_headers: tuple[tuple[str, str], ...] = ()
    """Headers of the success response beyond the ones every response has: (name, description)."""
    status: int = 200
    errors: tuple[int, ...] = ()
    error_notes: tuple[tuple[int, str], ...] = ()
    """What an error status means on this route, where it is more than :data:`ERRORS` says: "CODE: when"."""


def _header_docs(described: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Response headers as OpenAPI describes them: name -> description, a string."""
    return {name: {"description": text, "schema": {"type": "string"}} for name, text in described}


_RATE_HEADER_DOCS = _header_docs(_RATE_HEADERS.items())
_RETRY_AFTER_DOCS = _header_docs([("Retry-After", "Seconds to wait before trying again")])
_EXAMPLE_REQUEST_ID = "5f0c6d8e-2a41-4a0e-9a57-0b8f3f7c2d11"


def _error_example(note: str) -> dict[str, Any]:
    code, _, message = note.partition(": ")
    return {
        "error": {
            "code": code,
            "message": message[:1].upper() + message[1:],
            "details": {},
            "request_id": _EXAMPLE_REQUEST_ID,
        }
    }


def _schema(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    (schema,), defs = msgspec.json.schema_components([tp], ref_template="#/components/schemas/{name}")
    components.update(defs)
    return schema


def _path_key(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def enrich(document: dict[str, Any], docs: Iterable[tuple[str, str, Doc]]) -> dict[str, Any]:
    """Fold each route's :class:`Doc` into the OpenAPI ``document`` (modified and returned)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    envelope = _schema(ErrorEnvelope, schemas)
    for method, path, doc in docs:
        operation = document["paths"].get(_path_key(path), {}).get(method)
        if operation is None:
            continue
        operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
        params = operation.setdefault("parameters", [])
        for param in params:
            if param.get("in") == "path" and param.get("name") in UUID_PATH_PARAMS:
                param["schema"] = {"type": "string", "format": "uuid"}
        for p in (*doc.params, *SIGNATURE_HEADERS):
            params.append(
                {
                    "name": p.name,
                    "in": p.location,
                    "description": p.description,
                    "required": p.required,
                    "schema": p.schema,
                }
            )
        if doc.body is not None:
            body_schema = _schema(doc.body, schemas)
            content: dict[str, dict[str, Any]] = {media: {"schema": body_schema} for media in doc.body_media}
            if doc.body_example is not None:
                for one in content.values():
                    one["example"] = doc.body_example
            for media, tp, example in doc.other_bodies:
                content[media] = {"schema": _schema(tp, schemas), "example": example}
            operation["requestBody"] = {"required": True, "content": content}
        responses: dict[str, Any] = {}
        headers = _RATE_HEADER_DOCS
        if doc.response is not None:
            success: dict[str, Any] = {"schema": _schema(doc.response, schemas)}
            if doc.response_example is not None:
                success["example"] = doc.response_example
            responses[str(doc.status)] = {
                "description": "Success",
                "headers": {**headers, **_header_docs(doc.response_headers)},
                "content": {"application/json": success},
            }
        notes = dict(doc.error_notes)
        for status in sorted({*doc.errors, *AUTH_ERRORS}):
            note = notes.get(status, ERRORS[status])
            responses[str(status)] = {
                "description": note,
                "headers": {**headers, **_RETRY_AFTER_DOCS} if status in (429, 503) else headers,
                "content": {"application/json": {"schema": envelope, "example": _error_example(note)}},
            }
        operation["responses"] = responses
    return document
