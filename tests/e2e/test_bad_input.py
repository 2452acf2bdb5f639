"""Every bad input of API.md §3 gets its documented status and error envelope, and changes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from tests.support import event

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


def fields(error: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["type"] for e in error["details"]["validation_errors"]}


BAD_BODIES: list[tuple[str, Any, dict[str, str]]] = [
    ("source not a string", event(source=1), {"body.source": "type_error"}),
    ("event_type not a string", event(event_type=["x"]), {"body.event_type": "type_error"}),
    ("payload a list", event(payload=[1, 2]), {"body.payload": "type_error"}),
    ("payload a string", event(payload="x"), {"body.payload": "type_error"}),
    ("payload empty", event(payload={}), {"body.payload": "value_error"}),
    ("payload missing", {"source": "s", "event_type": "t"}, {"body.payload": "missing"}),
    ("source missing", {"event_type": "t", "payload": {"a": 1}}, {"body.source": "missing"}),
    ("unknown field", {**event(), "extra": 1}, {"body.extra": "extra_forbidden"}),
    ("blank source", event(source="   "), {"body.source": "value_error"}),
    ("blank event_type", event(event_type=""), {"body.event_type": "value_error"}),
    (
        "both blank",
        event(source=" ", event_type="\t"),
        {"body.source": "value_error", "body.event_type": "value_error"},
    ),
    ("source too long", event(source="s" * 101), {"body.source": "value_error"}),
    ("metadata a list", event(metadata=[1]), {"body.metadata": "type_error"}),
    ("bad priority", event(metadata={"priority": "urgent"}), {"body.metadata.priority": "value_error"}),
    (
        "idempotency key not a string",
        event(metadata={"idempotency_key": 5}),
        {"body.metadata.idempotency_key": "type_error"},
    ),
    (
        "idempotency key too long",
        event(metadata={"idempotency_key": "k" * 256}),
        {"body.metadata.idempotency_key": "value_error"},
    ),
    ("body not an object", [event()], {"body": "type_error"}),
]


@pytest.mark.parametrize(("case", "body", "expected"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_invalid_event_is_400_with_field_details(
    client: httpx.AsyncClient, case: str, body: Any, expected: dict[str, str]
) -> None:
    error = assert_envelope(await client.post("/v1/events", json=body), 400, "VALIDATION_ERROR")
    assert fields(error) == expected, case


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"source": "s", "event_type": "t", "payload": {"a": 1}', b"", b"\xff\xfe{}", b"null"],
    ids=["malformed", "truncated", "empty", "invalid utf-8", "null"],
)
async def test_non_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    assert_envelope(await client.post("/v1/events", content=raw, headers=JSON), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/v1/events", content=httpx.Response(200, json=event()).content, headers=headers)
    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_payload_over_limit_is_413_with_sizes(client: httpx.AsyncClient) -> None:
    big = {"blob": "x" * 409_600}
    error = assert_envelope(await client.post("/v1/events", json=event(payload=big)), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit_bytes"] == 409_600
    assert error["details"]["actual_bytes"] == len('{"blob":""}') + 409_600


async def test_metadata_over_its_limit_is_413_and_spacing_does_not_count(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    auth = {"X-API-Key": tenant_key}
    big = event(metadata={"blob": "m" * 70_000})  # beyond 65,536 bytes: the broker would refuse the record
    error = assert_envelope(await client.post("/v1/events", json=big, headers=auth), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"] == {"limit_bytes": 65_536, "actual_bytes": len(b'{"blob":""}') + 70_000}
    bulk = await client.post("/v1/events/bulk", json={"items": [big, event(payload={"ok": 1})]}, headers=auth)
    assert bulk.status_code == 201 and [f["index"] for f in bulk.json()["failed"]] == [0]
    assert bulk.json()["failed"][0]["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # limits count the compact JSON: a payload just under its limit, pretty-printed, is accepted
    pretty = json.dumps(event(payload={f"k{i:06}": i for i in range(25_000)}), indent=2).encode()
    assert len(pretty) > 409_600 + 65_536
    accepted = await client.post("/v1/events", content=pretty, headers={**auth, **JSON})
    assert accepted.status_code == 201, accepted.text


async def test_payload_at_limit_is_accepted(client: httpx.AsyncClient) -> None:
    exact = {"blob": "x" * (409_600 - len('{"blob":""}'))}
    assert (await client.post("/v1/events", json=event(payload=exact))).status_code == 201


async def test_huge_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"source":"s","event_type":"t","payload":{"blob":"' + b"x" * (2 * 1024 * 1024) + b'"}}'
    error = assert_envelope(await client.post("/v1/events", content=body, headers=JSON), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit_bytes"] > 0


@pytest.mark.parametrize("path", ["/v1/events/not-a-uuid", "/v1/events/1234", "/v1/events/not-a-uuid/ack"])
async def test_bad_event_id_is_422(client: httpx.AsyncClient, path: str) -> None:
    method = client.post if path.endswith("/ack") else client.get
    error = assert_envelope(await method(path), 422, "VALIDATION_ERROR")
    assert fields(error) == {"path.event_id": "value_error"}
    assert_envelope(await client.delete("/v1/events/zzz"), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "101"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"limit": "-1"}, "query.limit"),
        ({"cursor": "garbage"}, "query.cursor"),
        ({"cursor": "eyJhIjoxfQ.AAAA"}, "query.cursor"),
        ({"source": " "}, "query.source"),
        ({"event_type": "t" * 101}, "query.event_type"),
    ],
)
async def test_bad_inbox_parameters_are_422(client: httpx.AsyncClient, params: dict[str, str], field: str) -> None:
    error = assert_envelope(await client.get("/v1/inbox", params=params), 422, "VALIDATION_ERROR")
    assert field in fields(error)


async def test_tampered_cursor_is_422(client: httpx.AsyncClient, tenant_key: str) -> None:
    auth = {"X-API-Key": tenant_key}
    for i in range(3):
        created = await client.post("/v1/events", json=event(payload={"i": i}), headers=auth)
        assert created.status_code == 201
    assert (await client.get(f"/v1/events/{created.json()['event_id']}", headers=auth)).status_code == 200
    page = await client.get("/v1/inbox", params={"limit": "1"}, headers=auth)
    cursor = page.json()["next_cursor"]
    assert cursor
    body, mac = cursor.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for tampered in (f"{flipped}.{mac}", f"{body}.{mac[:-1]}", cursor + "x"):
        error = assert_envelope(
            await client.get("/v1/inbox", params={"cursor": tampered}, headers=auth), 422, "VALIDATION_ERROR"
        )
        assert fields(error) == {"query.cursor": "value_error"}
    assert (await client.get("/v1/inbox", params={"cursor": cursor}, headers=auth)).status_code == 200


async def test_auth_errors(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as anonymous:
        missing = assert_envelope(await anonymous.post("/v1/events", json=event()), 401, "UNAUTHORIZED")
        assert missing["message"] == "Missing X-API-Key header"
        for key in ("nope", "tr_" + "a" * 43):
            assert_envelope(await anonymous.get("/v1/inbox", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
        assert_envelope(await anonymous.get("/v1/inbox", headers={"Authorization": "Basic abc"}), 401, "UNAUTHORIZED")


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/nothing-here"), 404, "NOT_FOUND")
    wrong = await client.put("/v1/events")
    assert_envelope(wrong, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in wrong.headers["allow"]


async def test_bad_input_changes_nothing(server_url: str, tenant_key: str) -> None:
    """After every kind of rejected request, the tenant's inbox holds only the one valid marker event."""
    async with httpx.AsyncClient(base_url=server_url, headers={"X-API-Key": tenant_key}) as c:
        for _, body, _ in BAD_BODIES:
            assert (await c.post("/v1/events", json=body)).status_code == 400
        assert (await c.post("/v1/events", content=b"{oops", headers=JSON)).status_code == 400
        assert (await c.post("/v1/events", content=b"{}", headers={"Content-Type": "text/plain"})).status_code == 415
        assert (await c.post("/v1/events", json=event(payload={"b": "x" * 500_000}))).status_code == 413
        for raw in TOO_FINE:
            assert (await c.post("/v1/events", content=raw, headers=JSON)).status_code == 400
        assert (await c.post(f"/v1/events/{uuid.uuid4()}/ack")).status_code == 404
        marker = await c.post("/v1/events", json=event(payload={"marker": True}))
        assert marker.status_code == 201
        # the marker is visible, and per-tenant ordering means anything posted before it would be too
        assert (await c.get(f"/v1/events/{marker.json()['event_id']}")).status_code == 200
        inbox = (await c.get("/v1/inbox")).json()["events"]
        assert [e["payload"] for e in inbox] == [{"marker": True}]


TOO_FINE = [
    b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"tiny":1e-20000}}',
    b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"v":0.' + b"0" * 17000 + b"1}}",
]
"""Metadata numbers that a double reads as 0.0 but Postgres's jsonb cannot store (over 16383 decimal places)."""


async def test_metadata_numbers_jsonb_cannot_store_are_refused(client: httpx.AsyncClient, tenant_key: str) -> None:
    auth = {"X-API-Key": tenant_key}
    for raw in TOO_FINE:
        error = assert_envelope(
            await client.post("/v1/events", content=raw, headers={**JSON, **auth}), 400, "VALIDATION_ERROR"
        )
        assert fields(error) == {"body.metadata": "value_error"}
        assert "decimal point" in error["details"]["validation_errors"][0]["message"]
    bulk = b'{"items":[' + b",".join([TOO_FINE[0], msgspec.json.encode(event(payload={"ok": 1}))]) + b"]}"
    answer = (await client.post("/v1/events/bulk", content=bulk, headers={**JSON, **auth})).json()
    assert [f["index"] for f in answer["failed"]] == [0] and len(answer["successful"]) == 1
    # the finest number jsonb holds, and text that merely looks like a NUL escape, are stored and read back
    fine = b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"v":1e-16383,"t":"\\\\u0000"}}'
    stored = await client.post("/v1/events", content=fine, headers={**JSON, **auth})
    assert stored.status_code == 201, stored.text
    read = (await client.get(f"/v1/events/{stored.json()['event_id']}", headers=auth)).json()
    assert read["metadata"]["t"] == "\\u0000" and read["metadata"]["v"] == 0.0
    assert [e["event_id"] for e in (await client.get("/v1/inbox", headers=auth)).json()["events"]] == [
        answer["successful"][0]["event_id"],
        stored.json()["event_id"],
    ]


async def test_nesting_utf8_and_header_limits(client: httpx.AsyncClient) -> None:
    deep = event(payload={"a": 1})
    nested: object = 1
    for _ in range(70):
        nested = [nested]
    deep["payload"] = {"deep": nested}
    too_deep = assert_envelope(await client.post("/v1/events", json=deep), 400, "VALIDATION_ERROR")
    assert fields(too_deep) == {"body.payload": "value_error"}
    bomb = b'{"source":"s","event_type":"t","payload":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert_envelope(await client.post("/v1/events", content=bomb, headers=JSON), 400, "VALIDATION_ERROR")

    bad_utf8 = b'{"source":"s","event_type":"t","payload":{"a":"\xff\xfe"}}'
    error = assert_envelope(await client.post("/v1/events", content=bad_utf8, headers=JSON), 400, "VALIDATION_ERROR")
    assert fields(error) == {"body": "json_invalid"}
    nul = event(metadata={"note": "\u0000"})
    assert fields(assert_envelope(await client.post("/v1/events", json=nul), 400, "VALIDATION_ERROR")) == {
        "body.metadata": "value_error"
    }

    huge_header = await client.get("/v1/inbox", headers={"X-Padding": "p" * 20_000})
    error = assert_envelope(huge_header, 400, "VALIDATION_ERROR")
    assert error["details"]["limit_bytes"] == 16_384
    long_key = await client.post("/v1/events", json=event(), headers={"Idempotency-Key": "k" * 256})
    assert fields(assert_envelope(long_key, 400, "VALIDATION_ERROR")) == {"header.Idempotency-Key": "value_error"}


async def test_revoked_key_stops_working(client: httpx.AsyncClient, pool: object) -> None:
    from triggers_common.auth import create_key

    from tests.support import wait_until

    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        created = await create_key(conn, f"revoke-{uuid.uuid4().hex[:8]}")
    auth = {"X-API-Key": created.key}
    assert (await client.get("/v1/inbox", headers=auth)).status_code == 200
    await pool.execute("UPDATE api_keys SET status = 'revoked' WHERE key_id = $1", created.key_id)  # type: ignore[attr-defined]

    async def refused() -> bool:
        return (await client.get("/v1/inbox", headers=auth)).status_code == 401

    await wait_until(refused, timeout=10, interval=0.2, what="the revoked key to be refused")
