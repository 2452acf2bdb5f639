"""Request latency per route (pure unit test): the shared HTTP skeleton with one component, driven in-process."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from triggers_common.errors import NotFound
from triggers_common.http import Component, build_app, json_response
from triggers_common.settings import Settings

ROUTE = "/v1/things/{thing_id}"


@get("/v1/things/{thing_id:str}")
async def get_thing(request: Request[Any, Any, Any]) -> Response[bytes]:
    thing_id = request.path_params["thing_id"]
    if thing_id == "missing":
        raise NotFound("No such thing")
    if thing_id == "broken":
        raise RuntimeError("a bug")
    return json_response(b"{}")


async def all_ready() -> dict[str, bool]:
    return {"kafka": True, "postgres": True}


def count(route: str, status: str, method: str = "GET") -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("triggers_http_request_seconds_count", labels) or 0.0


def test_requests_are_counted_per_route_template_and_status_class() -> None:
    app = build_app(Settings(dev_mode=True), [Component("things", routes=[get_thing])], all_ready)
    before = {status: count(ROUTE, status) for status in ("2xx", "4xx", "5xx")}
    with TestClient(app) as client:
        assert client.get("/v1/things/a").status_code == 200
        assert client.get("/v1/things/b").status_code == 200
        assert client.get("/v1/things/missing").status_code == 404
        assert client.get("/v1/things/broken").status_code == 500
        assert client.get("/v1/nowhere").status_code == 404
        assert client.get("/health/live").status_code == 200
        metrics = client.get("/metrics").text

    assert count(ROUTE, "2xx") - before["2xx"] == 2
    assert count(ROUTE, "4xx") - before["4xx"] == 1
    assert count(ROUTE, "5xx") - before["5xx"] == 1
    assert count("/health/live", "2xx") >= 1
    assert "/v1/things/a" not in metrics and "/v1/nowhere" not in metrics, "raw paths never become labels"
    assert 'route="/docs"' not in metrics and 'method="OPTIONS"' not in metrics


def test_every_status_class_of_a_route_exists_before_its_first_request() -> None:
    build_app(Settings(dev_mode=True), [Component("things", routes=[get_thing])], all_ready)
    for status in ("2xx", "4xx", "5xx"):
        labels = {"route": "/metrics", "method": "GET", "status": status}
        assert REGISTRY.get_sample_value("triggers_http_request_seconds_count", labels) is not None, status
