"""The HTTP skeleton every target shares: request ids, the error envelope, health, metrics, CORS, docs."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any, NamedTuple, TypeVar

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.routes import HTTPRoute
from litestar.types import (
    ControllerRouterHandler,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from triggers_common import metrics_switch
from triggers_common.errors import (
    ErrorBody,
    ErrorEnvelope,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TriggersError,
    UnsupportedMediaType,
    ValidationFailed,
)
from triggers_common.models import format_timestamp, utc_now
from triggers_common.request_metrics import RequestTimer, RouteLatency
from triggers_common.settings import Settings

log = logging.getLogger("triggers.http")

T = TypeVar("T")
_REQUEST_ID = "triggers.request_id"
RATE_LIMIT_HEADERS = "triggers.rate_limit_headers"
"""Scope key under which the access check leaves the X-RateLimit-* headers for the response."""
_MAX_REQUEST_ID = 128
JSON = "application/json"
encode = msgspec.json.Encoder().encode


@dataclass
class Component:
    """One deployable part (ingest, inbox, ...): its routes, its migrations and its background work."""

    name: str
    routes: Sequence[ControllerRouterHandler] = ()
    migrations: Traversable | None = None
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


def request_id(scope: Scope | Request[Any, Any, Any]) -> str:
    """The caller's ``X-Request-ID`` (capped at 128 chars) or a new UUID, fixed for the whole request."""
    s: Any = scope.scope if isinstance(scope, Request) else scope
    rid: str | None = s.get(_REQUEST_ID)
    if rid is None:
        rid = header(s, b"x-request-id")
        rid = utf8(rid)[:_MAX_REQUEST_ID] if rid else str(uuid.uuid4())  # the same text in header and body
        s[_REQUEST_ID] = rid
    return rid


def media_type(content_type: str | None) -> str:
    """``application/json`` from ``Application/JSON; charset=utf-8``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def require_json(content_type: str | None) -> None:
    if media_type(content_type) != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json", {"content_type": content_type or None})


def uuid_param(raw: str, field: str) -> uuid.UUID:
    """A path or query parameter that must be a UUID (``field`` like ``path.event_id``): 422 otherwise."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidParameter.field(field, "Must be a UUID") from None


_AT = re.compile(r" - at `\$(.*)`$")  # where msgspec found a bad value: "... - at `$.scopes[0]`"


def decode_body(decode: Callable[[bytes], T], body: bytes, content_type: str | None) -> T:
    """A JSON request body as a msgspec type: 415 if it is not JSON, 400 naming the bad field otherwise."""
    require_json(content_type)
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        at = _AT.search(str(exc))
        path = re.sub(r"\[(\d+)\]", r".\1", at.group(1)) if at else ""
        raise ValidationFailed.field(f"body{path}", _AT.sub("", str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed.field("body", str(exc)) from None


def header(scope: Any, name: bytes) -> str | None:
    """One request header by lower-case name, read straight from the ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


def utf8(value: str) -> str:
    """A header value (read as latin-1, byte for byte) as UTF-8 when its bytes are UTF-8, as a body's would be."""
    try:
        return value.encode("latin-1").decode()
    except UnicodeError:
        return value


def api_key(scope: Any) -> str | None:
    """The key from ``X-API-Key``, or from ``Authorization: Bearer``."""
    key = header(scope, b"x-api-key")
    if key:
        return key
    auth = header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def json_response(body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(content=body, status_code=status_code, media_type=JSON, headers=headers)


def _with_request_headers(scope: Any, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus what every response carries: ``X-Request-ID``, and the ``X-RateLimit-*`` headers the
    access check left in the scope (unless the response already has them, as a 429 does)."""
    headers.append((b"x-request-id", request_id(scope).encode()))
    limits: dict[str, str] | None = scope.get(RATE_LIMIT_HEADERS)
    if limits:
        present = {name for name, _ in headers}
        headers.extend((k.lower().encode(), v.encode()) for k, v in limits.items() if k.lower().encode() not in present)
    return headers


async def _add_request_id(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        message["headers"] = _with_request_headers(scope, list(message.get("headers", [])))


def _as_triggers_error(request: Request[Any, Any, Any], exc: Exception) -> TriggersError:
    if isinstance(exc, TriggersError):
        return exc
    if isinstance(exc, HTTPException):
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 404:
            return NotFound(f"No route for {request.method} {request.url.path}")
        if status == 405:
            err = MethodNotAllowed(f"Method {request.method} not allowed", headers={"Allow": headers.get("allow", "")})
            return err
        if status == 413:
            limit = request.route_handler.resolve_request_max_body_size() if "route_handler" in request.scope else 0
            actual = request.headers.get("content-length")
            return PayloadTooLarge(
                "Request body too large",
                {
                    "limit_bytes": limit,
                    "actual_bytes": int(actual) if actual and actual.isascii() and actual.isdigit() else None,
                },
            )
        if status == 400:
            return ValidationFailed(str(exc.detail))
        generic = TriggersError(str(exc.detail) if status < 500 else None)
        generic.status_code = status  # type: ignore[misc]
        return generic
    return _as_api_error(request.scope, exc)


def _as_api_error(scope: Any, exc: Exception) -> TriggersError:
    """Any exception but Litestar's own as the error the client sees."""
    if isinstance(exc, TriggersError):
        return exc
    if isinstance(exc, asyncpg.TransactionRollbackError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        # A deadlock or serialization failure (nothing was done: the transaction rolled back), or Postgres
        # out of reach: the client may simply try again.
        log.warning("database unavailable", extra={"request_id": request_id(scope), "error": repr(exc)})
        return ServiceUnavailable("Database unavailable, retry later")
    if isinstance(exc, OSError | TimeoutError):
        log.warning("dependency unreachable", extra={"request_id": request_id(scope), "error": repr(exc)})
        return ServiceUnavailable()
    log.exception("unhandled error", extra={"request_id": request_id(scope), "path": scope["path"]})
    return TriggersError()


def _envelope(scope: Any, err: TriggersError) -> bytes:
    return encode(ErrorEnvelope(ErrorBody(err.code, err.message, err.details, request_id(scope))))


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The one place an exception becomes the API's error envelope (for direct routes too: see
    :class:`DirectRoute`)."""
    err = _as_triggers_error(request, exc)
    return json_response(_envelope(request.scope, err), err.status_code, err.headers or None)


class Answer(NamedTuple):
    """What a :func:`direct_post` handler answers: status, JSON body and any headers of its own."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None


DirectHandler = Callable[[Any, bytes], Awaitable[Answer]]
"""``handler(scope, body)``: the request's ASGI scope and its whole body."""
_DIRECT = "triggers.direct"


def direct_post(path: str, handler: DirectHandler, **options: Any) -> HTTPRouteHandler:
    """A POST route whose work is ``handler``, for the hottest routes (ingest). :class:`App` answers its POSTs
    straight from the ASGI call: Litestar's request, signature model, middleware and response objects cost, per
    request, about as much CPU as ingest's own work. What they do that matters here is done alike, and in one
    place with the other routes: the error envelope, ``X-Request-ID``, the rate-limit headers, CORS headers, the
    body size limit (``request_max_body_size``) and the request latency metric. Litestar still owns the route
    for everything else: other methods (405), the CORS preflight, the OpenAPI document (``options`` are those of
    :func:`litestar.post`); and it answers a POST alike should one reach it."""

    async def via_litestar(request: Request[Any, Any, Any]) -> Response[bytes]:
        answer = await handler(request.scope, await request.body())
        return json_response(answer.body, answer.status, answer.headers)

    via_litestar.__name__ = via_litestar.__qualname__ = handler.__name__
    via_litestar.__doc__ = handler.__doc__
    opt = {**options.pop("opt", {}), _DIRECT: handler}
    return post(path, opt=opt, **options)(via_litestar)


class DirectRoute:
    """How :class:`App` serves one :func:`direct_post` route."""

    __slots__ = ("handler", "latency", "max_body_bytes")

    def __init__(self, handler: DirectHandler, max_body_bytes: int, latency: RouteLatency | None) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.latency = latency

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            body = await self._body(scope, receive)
            if body is None:
                return  # the client went away
            answer = await self.handler(scope, body)
        except Exception as exc:
            err = _as_api_error(scope, exc)
            answer = Answer(err.status_code, _envelope(scope, err), err.headers or None)
        headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(answer.body)).encode())]
        if answer.headers:
            headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items())
        origin = header(scope, b"origin")
        if origin:
            headers.extend(_cors_headers(scope, origin))
        start: Any = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": _with_request_headers(scope, headers),
        }
        await send(start)
        if self.latency is not None:
            self.latency.observe(answer.status, time.perf_counter() - started)
        end: Any = {"type": "http.response.body", "body": answer.body}
        await send(end)

    async def _body(self, scope: Any, receive: Receive) -> bytes | None:
        """The whole body, or None if the client disconnected; 413 as soon as it is known to be too large."""
        limit = self.max_body_bytes
        declared = header(scope, b"content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge("Request body too large", {"limit_bytes": limit, "actual_bytes": int(declared)})
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge("Request body too large", {"limit_bytes": limit, "actual_bytes": None})
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _cors_headers(scope: Any, origin: str) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an actual (not preflight) request from ``origin``, as Litestar's middleware sets them."""
    headers = dict(CORS.simple_headers)
    if (CORS.is_allow_all_origins and header(scope, b"cookie") is not None) or (
        not CORS.is_allow_all_origins and CORS.is_origin_allowed(origin)
    ):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class App(Litestar):
    """Litestar, answering the :func:`direct_post` routes itself (see there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct: dict[str, DirectRoute] = {}

    def serve_direct(self, timer: RequestTimer | None) -> None:
        """Find the :func:`direct_post` routes; from now on, their POSTs bypass Litestar."""
        for route in self.routes:
            if isinstance(route, HTTPRoute) and "POST" in route.route_handler_map:
                handler = route.route_handler_map["POST"][0]
                if _DIRECT in handler.opt:
                    limit = handler.resolve_request_max_body_size()
                    if limit is None:
                        raise ValueError(f"{route.path}: a direct route needs request_max_body_size")
                    latency = timer.latency(handler) if timer else None
                    self.direct[route.path] = DirectRoute(handler.opt[_DIRECT], limit, latency)

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        s: Any = scope
        if s["type"] == "http" and s["method"] == "POST":
            direct = self.direct.get(s["path"])
            if direct is not None:
                await direct(s, receive, send)  # type: ignore[arg-type]
                return
        await super().__call__(scope, receive, send)


_collectors: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Add a collector whose numbers are the same in every worker (e.g. read from the database) to /metrics."""
    _collectors.append(collector)
    REGISTRY.register(collector)


def unregister_collector(collector: Collector) -> None:
    """Undo :func:`register_collector`; a no-op for one never registered (a start-up that failed before it)."""
    if collector in _collectors:
        _collectors.remove(collector)
        REGISTRY.unregister(collector)


def _registry() -> CollectorRegistry:
    """The process's own metrics, or every worker's when they run side by side (multiprocess mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for collector in _collectors:
        registry.register(collector)
    return registry


class Health(msgspec.Struct):
    status: str
    timestamp: str
    version: str
    request_id: str
    checks: dict[str, bool] | None = None


def health_routes(
    settings: Settings, ready_checks: Callable[[], Awaitable[dict[str, bool]]]
) -> list[ControllerRouterHandler]:

    @get("/v1/health", tags=["health"], summary="Service health", include_in_schema=True)
    async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = Health("healthy", format_timestamp(utc_now()), settings.version, request_id(request))
        return json_response(encode(body))

    @get("/health/live", tags=["health"], summary="Process is up")
    async def live(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = Health("alive", format_timestamp(utc_now()), settings.version, request_id(request))
        return json_response(encode(body))

    @get("/health/ready", tags=["health"], summary="Kafka and Postgres reachable (503 otherwise)")
    async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
        checks = await ready_checks()
        ok = all(checks.values())
        body = Health(
            "ready" if ok else "unavailable",
            format_timestamp(utc_now()),
            settings.version,
            request_id(request),
            checks,
        )
        return json_response(encode(body), 200 if ok else 503, None if ok else {"Retry-After": "2"})

    @get("/metrics", tags=["health"], summary="Prometheus metrics", media_type="text/plain")
    async def metrics() -> Response[bytes]:
        if not metrics_switch.ENABLED:
            raise NotFound("Metrics are off (TRIGGERS_METRICS=false)")
        return Response(content=generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    document: bytes | None = None

    @get("/openapi.json", tags=["health"], summary="OpenAPI document", include_in_schema=False)
    async def openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
        nonlocal document
        if document is None:
            from triggers_common.openapi import enrich

            docs = [
                (method.lower(), route.path, handler.opt["doc"])
                for route in request.app.routes
                for handler in getattr(route, "route_handlers", ())
                if "doc" in handler.opt
                for method in handler.http_methods
            ]
            document = encode(enrich(request.app.openapi_schema.to_schema(), docs))
        return json_response(document)

    @get("/docs", tags=["health"], summary="API documentation (Swagger UI)", include_in_schema=False)
    async def docs() -> Response[bytes]:
        return Response(content=_SWAGGER_PAGE, media_type="text/html")

    return [health, live, ready, metrics, openapi, docs]


_SWAGGER_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Triggers API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


CORS = CORSConfig(
    allow_origins=["*"],
    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    allow_headers=[
        "Content-Type",
        "X-API-Key",
        "Authorization",
        "X-Request-ID",
        "X-Signature",
        "X-Signature-Timestamp",
        "Idempotency-Key",
    ],
    expose_headers=[
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
        "X-Request-ID",
        "Idempotent-Replayed",
    ],
    allow_credentials=False,
)


def build_app(
    settings: Settings,
    components: Sequence[Component],
    ready_checks: Callable[[], Awaitable[dict[str, bool]]],
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> App:
    """One Litestar app serving the given components side by side (``--target all`` is just all of them)."""
    routes: list[ControllerRouterHandler] = [*health_routes(settings, ready_checks)]
    for component in components:
        routes.extend(component.routes)
    timer = RequestTimer() if metrics_switch.ENABLED else None
    app = App(
        route_handlers=routes,
        exception_handlers={Exception: error_response},
        before_request=timer.start if timer else None,
        before_send=[_add_request_id, timer.stop] if timer else [_add_request_id],
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        cors_config=CORS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Triggers API",
            version=settings.version,
            path="/_litestar/openapi",  # the enriched document is /openapi.json, shown at /docs
            render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        logging_config=None,
        debug=False,
    )
    if timer:
        timer.bind(app)
    app.serve_direct(timer)
    return app
