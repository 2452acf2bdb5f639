"""The core flow over HTTP against the running stack: post, see it in the inbox, get, ack, delete."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from tests.support import event

pytestmark = pytest.mark.e2e

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def post_event(client: httpx.AsyncClient, key: str, **overrides: object) -> dict[str, object]:
    response = await client.post("/v1/events", json=event(**overrides), headers=headers(key))
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_post_get_ack_delete(client: httpx.AsyncClient, tenant_key: str) -> None:
    raw = (
        b'{"source":"shop","event_type":"order.created","metadata":{"priority":"high","k":null,"e":1e2,"z":-0.0,'
        b'"f":1.50,"s":1.5E-7},'
        b'"payload":{"order_id":42,"total":19.99,"exact":1.50,"big":123456789012345678901234567890,"tags":["a"]}}'
    )
    response = await client.post(
        "/v1/events", content=raw, headers={**headers(tenant_key), "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    event_id = str(created["event_id"])
    assert uuid.UUID(event_id).version == 7
    assert created["status"] == "pending"
    assert created["message"] == "Event ingested successfully"
    assert TIMESTAMP.match(str(created["created_at"]))

    got = await client.get(f"/v1/events/{event_id}", headers=headers(tenant_key))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["event_id"] == event_id
    assert body["created_at"] == created["created_at"]
    assert body["status"] == "pending" and body["acknowledged_at"] is None
    assert body["source"] == "shop" and body["event_type"] == "order.created"
    assert body["metadata"] == {"priority": "high", "k": None, "e": 100.0, "z": -0.0, "f": 1.5, "s": 1.5e-7}
    # numbers come back exactly as sent, in payload and metadata: not re-rendered by a float or jsonb round-trip
    assert '"exact":1.50' in got.text and '"big":123456789012345678901234567890' in got.text
    assert '"e":1e2,"z":-0.0,"f":1.50,"s":1.5E-7' in got.text
    assert body["payload"]["total"] == 19.99

    inbox = (await client.get("/v1/inbox", headers=headers(tenant_key))).json()
    assert [e["event_id"] for e in inbox["events"]] == [event_id]
    assert inbox["next_cursor"] is None and inbox["pagination"] == {"limit": 50, "next_cursor": None}

    acked = await client.post(f"/v1/events/{event_id}/ack", headers=headers(tenant_key))
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert TIMESTAMP.match(acked.json()["acknowledged_at"])

    again = await client.post(f"/v1/events/{event_id}/ack", headers=headers(tenant_key))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"
    assert again.json()["error"]["details"] == {
        "event_id": event_id,
        "current_status": "acknowledged",
        "acknowledged_at": acked.json()["acknowledged_at"],
    }

    assert (await client.get("/v1/inbox", headers=headers(tenant_key))).json()["events"] == []
    after_ack = (await client.get(f"/v1/events/{event_id}", headers=headers(tenant_key))).json()
    assert after_ack["status"] == "acknowledged"

    for _ in range(2):  # idempotent
        deleted = await client.delete(f"/v1/events/{event_id}", headers=headers(tenant_key))
        assert deleted.status_code == 200
        assert deleted.json()["message"] == "Event deleted successfully"
    gone = await client.get(f"/v1/events/{event_id}", headers=headers(tenant_key))
    assert gone.status_code == 404
    assert gone.json()["error"]["details"] == {"event_id": event_id}


async def test_read_your_writes_no_spurious_404(client: httpx.AsyncClient, tenant_key: str) -> None:
    """Right after 201 the event can be fetched, acked and deleted, although it is still crossing Kafka."""
    for i in range(20):
        fetched = await post_event(client, tenant_key, payload={"i": i})
        got = await client.get(f"/v1/events/{fetched['event_id']}", headers=headers(tenant_key))
        assert got.status_code == 200, got.text

        acked = await post_event(client, tenant_key, payload={"i": i})
        ack = await client.post(f"/v1/events/{acked['event_id']}/ack", headers=headers(tenant_key))
        assert ack.status_code == 200, ack.text

        doomed = await post_event(client, tenant_key, payload={"i": i})
        deleted = await client.delete(f"/v1/events/{doomed['event_id']}", headers=headers(tenant_key))
        assert deleted.status_code == 200
        assert (await client.get(f"/v1/events/{doomed['event_id']}", headers=headers(tenant_key))).status_code == 404

    inbox = (await client.get("/v1/inbox?limit=100", headers=headers(tenant_key))).json()["events"]
    assert len(inbox) == 20  # only the fetched ones stay pending: acked and deleted ones are gone
    assert all(e["payload"]["i"] == i for i, e in enumerate(inbox))


async def test_inbox_pages_oldest_first_with_filters(client: httpx.AsyncClient, tenant_key: str) -> None:
    ids = []
    for i in range(7):
        created = await post_event(
            client, tenant_key, source="crm" if i % 2 else "shop", event_type=f"type.{i % 3}", payload={"i": i}
        )
        ids.append(created["event_id"])
    # the last one is visible (read-your-writes), and per-tenant order means all earlier ones are too
    assert (await client.get(f"/v1/events/{ids[-1]}", headers=headers(tenant_key))).status_code == 200

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/inbox", params=params, headers=headers(tenant_key))).json()
        assert len(page["events"]) == 3 or page["next_cursor"] is None  # a page is never short mid-way
        seen.extend(e["event_id"] for e in page["events"])
        cursor = page["next_cursor"]
        assert page["pagination"]["next_cursor"] == cursor
        if cursor is None:
            break
    assert seen == ids

    shop = (await client.get("/v1/inbox", params={"source": "shop"}, headers=headers(tenant_key))).json()
    assert [e["event_id"] for e in shop["events"]] == ids[0::2]
    typed = (await client.get("/v1/inbox", params={"event_type": "type.1"}, headers=headers(tenant_key))).json()
    assert [e["event_id"] for e in typed["events"]] == [ids[1], ids[4]]
    both = await client.get(
        "/v1/inbox", params={"source": "crm", "event_type": "type.0", "limit": "1"}, headers=headers(tenant_key)
    )
    assert [e["event_id"] for e in both.json()["events"]] == [ids[3]]
    assert both.json()["next_cursor"] is None


async def test_names_are_trimmed(client: httpx.AsyncClient, tenant_key: str) -> None:
    created = await post_event(client, tenant_key, source="  shop ", event_type="\torder.paid ")
    body = (await client.get(f"/v1/events/{created['event_id']}", headers=headers(tenant_key))).json()
    assert (body["source"], body["event_type"]) == ("shop", "order.paid")


async def test_bearer_auth_and_request_ids(client: httpx.AsyncClient, tenant_key: str) -> None:
    response = await client.post(
        "/v1/events",
        json=event(),
        headers={"Authorization": f"Bearer {tenant_key}", "X-API-Key": "", "X-Request-ID": "trace-me-1"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "trace-me-1"
    assert response.json()["request_id"] == "trace-me-1"

    long_id = "x" * 500
    capped = await client.get("/v1/health", headers={"X-Request-ID": long_id})
    assert capped.headers["x-request-id"] == "x" * 128 and capped.json()["request_id"] == "x" * 128
    # an id in UTF-8 is the same text in the header and the body, cut at 128 characters, not bytes
    for sent, echoed in (("req-é", "req-é"), ("a" * 127 + "éé", "a" * 127 + "é"), ("ключ", "ключ")):
        answer = await client.get("/v1/health", headers=[(b"X-Request-ID", sent.encode())])
        assert answer.json()["request_id"] == echoed
        assert {k.lower(): v for k, v in answer.headers.raw}[b"x-request-id"] == echoed.encode()

    generated = await client.get("/v1/inbox", headers=headers(tenant_key))
    assert (
        uuid.UUID(generated.headers["x-request-id"])
        and generated.json()["request_id"] == generated.headers["x-request-id"]
    )


async def test_health_and_metrics_are_open(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as anonymous:
        health = await anonymous.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert TIMESTAMP.match(health.json()["timestamp"]) and health.json()["request_id"]
        assert (await anonymous.get("/health/live")).status_code == 200
        ready = await anonymous.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": True, "kafka": True}
        metrics = await anonymous.get("/metrics")
        assert metrics.status_code == 200 and "triggers_ingest_events_total" in metrics.text
        spec = await anonymous.get("/openapi.json")
        assert spec.status_code == 200
        assert {"/v1/events", "/v1/inbox", "/v1/events/{event_id}"} <= set(spec.json()["paths"])
        assert (await anonymous.get("/docs")).status_code == 200


async def test_concurrent_acks_exactly_one_wins(client: httpx.AsyncClient, tenant_key: str) -> None:
    created = await post_event(client, tenant_key)
    assert (await client.get(f"/v1/events/{created['event_id']}", headers=headers(tenant_key))).status_code == 200
    results = await asyncio.gather(
        *(client.post(f"/v1/events/{created['event_id']}/ack", headers=headers(tenant_key)) for _ in range(10))
    )
    assert sorted(r.status_code for r in results) == [200] + [409] * 9
