"""HTTP request latency per route, for every target: ``triggers_http_request_seconds{route, method, status}``.

``route`` is the path template (``/v1/events/{event_id}``), never the raw path, and ``status`` the status class
(``2xx``, ``4xx``, ``5xx``), so the number of series is bounded by the routes and an error rate is a ratio of
two sums. The hot path pays for one ``perf_counter`` at each end and two dict lookups: the histogram children
are bound once per route handler when the app is built, and no middleware wraps the request (a Litestar
middleware would add an exception handler and a ``send`` closure per request).

The clock starts in the app's ``before_request`` hook (after routing, before the handler reads anything) and
stops in its ``before_send`` hook when the response starts. Requests that match no route (404, 405) and the
undocumented routes (CORS ``OPTIONS``, ``/docs``, ``/openapi.json``) are not counted. Direct routes
(``http.direct_post``) run no hooks: they observe their :meth:`RequestTimer.latency` children themselves, over
the same span of the request.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Litestar, Request
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope
from prometheus_client import Histogram

REQUEST_SECONDS = Histogram(
    "triggers_http_request_seconds",
    "Time from routing a request to the start of its response, per route template, method and status class",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_STARTED = "triggers.request_started"


class RouteLatency:
    """The children of one route handler, one per status class, bound once."""

    __slots__ = ("by_class", "method", "route")

    def __init__(self, route: str, method: str) -> None:
        self.route = route
        self.method = method
        self.by_class = {n: REQUEST_SECONDS.labels(route, method, f"{n}xx") for n in (2, 4, 5)}

    def observe(self, status: int, seconds: float) -> None:
        child = self.by_class.get(status // 100)
        if child is None:  # a class the API does not answer with (1xx, 3xx): bound on first use
            child = self.by_class[status // 100] = REQUEST_SECONDS.labels(self.route, self.method, f"{status // 100}xx")
        child.observe(seconds)


class RequestTimer:
    """Times the requests of one app's documented routes; ``start`` and ``stop`` are the app's hooks."""

    def __init__(self) -> None:
        self._routes: dict[Any, RouteLatency] = {}

    def bind(self, app: Litestar) -> None:
        """Resolve every documented route handler of ``app`` to its children, once, before it serves."""
        for route in app.routes:
            if isinstance(route, HTTPRoute):
                for method, (handler, _) in route.route_handler_map.items():
                    if handler.resolve_include_in_schema():
                        self._routes[handler] = RouteLatency(route.path_format, method)

    def latency(self, handler: Any) -> RouteLatency | None:
        """The children of ``handler``, for a route served without the hooks (see ``http.direct_post``)."""
        return self._routes.get(handler)

    async def start(self, request: Request[Any, Any, Any]) -> None:
        scope: Any = request.scope
        scope[_STARTED] = time.perf_counter()

    async def stop(self, message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            s: Any = scope
            started: float | None = s.get(_STARTED)
            route = self._routes.get(s.get("route_handler"))
            if started is not None and route is not None:
                route.observe(message["status"], time.perf_counter() - started)
