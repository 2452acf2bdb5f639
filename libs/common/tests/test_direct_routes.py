"""Direct routes (``http.direct_post``) answer like any other route: the envelope, headers, limits and metric."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from triggers_common.errors import ServiceUnavailable, ValidationFailed
from triggers_common.http import RATE_LIMIT_HEADERS, Answer, App, Component, build_app, direct_post
from triggers_common.settings import load_settings

LIMIT = 100


async def echo(scope: Any, body: bytes) -> Answer:
    """Answers the body back; some bodies stand for what a real handler may do."""
    if body == b"invalid":
        raise ValidationFailed("Bad input")
    if body == b"kafka down":
        raise ServiceUnavailable()
    if body == b"bug":
        raise RuntimeError("a bug")
    scope[RATE_LIMIT_HEADERS] = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9", "X-RateLimit-Reset": "1"}
    return Answer(201, body, {"Idempotent-Replayed": "true"})


async def nothing_to_check() -> dict[str, bool]:
    return {}


def make_app() -> App:
    """The app every target builds, with one direct route."""
    route = direct_post("/echo", echo, status_code=201, request_max_body_size=LIMIT)
    return build_app(load_settings({"TRIGGERS_DEV_MODE": "true"}), [Component("echo", [route])], nothing_to_check)


async def call(
    app: App,
    chunks: list[bytes],
    headers: dict[str, str] | None = None,
    path: str = "/echo",
    method: str = "POST",
    complete: bool = True,
) -> tuple[int, dict[str, str], bytes, bool]:
    """One request; the status, headers and body of the answer, and whether it was answered at all. Unless
    ``complete``, the client disconnects after the last chunk instead of ending the body."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or not complete}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    if not sent:
        return 0, {}, b"", False
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body, True


def served(status_class: str) -> float:
    """How many answers of ``status_class`` the request latency metric counted for the route."""
    labels = {"route": "/echo", "method": "POST", "status": status_class}
    return REGISTRY.get_sample_value("triggers_http_request_seconds_count", labels) or 0.0


async def test_answer_carries_the_handlers_headers_the_request_id_and_the_rate_limit_headers() -> None:
    before = served("2xx")
    status, headers, body, _ = await call(make_app(), [b'{"a":', b"1}"], {"X-Request-ID": "r-1"})
    assert (status, body) == (201, b'{"a":1}')
    assert headers["content-type"] == "application/json" and headers["content-length"] == "7"
    assert headers["idempotent-replayed"] == "true"
    assert headers["x-request-id"] == "r-1"
    assert headers["x-ratelimit-remaining"] == "9"
    assert "access-control-allow-origin" not in headers  # no Origin, no CORS headers
    assert served("2xx") > before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"invalid", 400, "VALIDATION_ERROR"),
        (b"kafka down", 503, "SERVICE_UNAVAILABLE"),
        (b"bug", 500, "INTERNAL_ERROR"),
    ],
)
async def test_errors_get_the_envelope(body: bytes, status: int, code: str) -> None:
    got, headers, answer, _ = await call(make_app(), [body])
    error = msgspec.json.decode(answer)["error"]
    assert (got, error["code"]) == (status, code)
    assert error["request_id"] == headers["x-request-id"]
    assert "a bug" not in answer.decode()
    if status == 503:
        assert headers["retry-after"]


async def test_too_large_is_413_whether_declared_or_streamed() -> None:
    declared = await call(make_app(), [b"x" * (LIMIT + 1)], {"Content-Length": str(LIMIT + 1)})
    streamed = await call(make_app(), [b"x" * 60, b"x" * 60])  # chunked: no Content-Length
    for status, _, body, _ in (declared, streamed):
        error = msgspec.json.decode(body)["error"]
        assert (status, error["code"], error["details"]["limit_bytes"]) == (413, "PAYLOAD_TOO_LARGE", LIMIT)
    assert msgspec.json.decode(declared[2])["error"]["details"]["actual_bytes"] == LIMIT + 1
    assert (await call(make_app(), [b"x" * LIMIT]))[0] == 201


async def test_cors_headers_as_for_every_other_route() -> None:
    _, headers, _, _ = await call(make_app(), [b"{}"], {"Origin": "https://app.example"})
    assert headers["access-control-allow-origin"] == "*"
    assert "X-Request-ID" in headers["access-control-expose-headers"]
    _, with_cookie, _, _ = await call(make_app(), [b"{}"], {"Origin": "https://app.example", "Cookie": "a=b"})
    assert with_cookie["access-control-allow-origin"] == "https://app.example" and with_cookie["vary"] == "Origin"


async def test_a_client_that_goes_away_gets_no_answer() -> None:
    before = served("2xx") + served("4xx") + served("5xx")
    assert (await call(make_app(), [b"{"], complete=False))[3] is False
    assert served("2xx") + served("4xx") + served("5xx") == before


async def test_litestar_keeps_the_other_methods_and_serves_the_route_alike() -> None:
    app = make_app()
    status, headers, _, _ = await call(app, [b""], method="GET")
    assert status == 405 and "POST" in headers["allow"]
    status, headers, _, _ = await call(
        app, [b""], {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}, method="OPTIONS"
    )
    assert status == 204 and headers["access-control-allow-origin"] == "*"
    status, headers, body, _ = await call(app, [b'{"b":2}'], {"X-Request-ID": "r-2"}, path="/echo/")  # via Litestar
    assert (status, body, headers["idempotent-replayed"], headers["x-request-id"]) == (201, b'{"b":2}', "true", "r-2")
