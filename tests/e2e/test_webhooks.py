"""Webhooks end to end: subscriptions (secret shown once, cursors, put/patch/delete, rotation), signed
deliveries to a real receiver verified with the official standardwebhooks library, retries with one
webhook-id, 410 and 5-day disabling, the delivery log and manual retry, isolation from a hanging endpoint
and from other tenants."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from triggers_common.auth import create_key
from triggers_common.db import Pool

from tests.support import Receiver, event, free_port, wait_until

pytestmark = pytest.mark.e2e

HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["order.*", "user.created"], "description": "orders"}


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def create(client: httpx.AsyncClient, key: str, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={**HOOK, **overrides}, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_webhook_lifecycle(client: httpx.AsyncClient, tenant_key: str) -> None:
    created = await create(client, tenant_key)
    assert created["secret"].startswith("whsec_") and created["is_active"] is True
    assert created["events"] == ["order.*", "user.created"] and created["sources"] is None
    path = f"/v1/webhooks/{created['webhook_id']}"

    got = (await client.get(path, headers=auth(tenant_key))).json()
    assert "secret" not in got and got["url"] == HOOK["url"]

    patched = await client.patch(path, json={"is_active": False, "sources": ["shop"]}, headers=auth(tenant_key))
    assert patched.status_code == 200 and patched.json()["is_active"] is False
    assert patched.json()["sources"] == ["shop"] and patched.json()["events"] == HOOK["events"]

    replaced = await client.put(
        path, json={"url": "https://127.0.0.1/other", "events": ["*"]}, headers=auth(tenant_key)
    )
    body = replaced.json()
    assert replaced.status_code == 200
    assert (body["url"], body["events"], body["sources"], body["is_active"], body["description"]) == (
        "https://127.0.0.1/other",
        ["*"],
        None,
        True,
        "",
    )

    rotated = await client.post(f"{path}/rotate-secret", headers=auth(tenant_key))
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires_at"].endswith("Z")
    chosen = await client.post(f"{path}/rotate-secret", json={"secret": "s" * 20}, headers=auth(tenant_key))
    assert chosen.json()["secret"] == "s" * 20

    deleted = await client.delete(path, headers=auth(tenant_key))
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(path, headers=auth(tenant_key))).status_code == 404
    assert (await client.delete(path, headers=auth(tenant_key))).status_code == 404


async def test_list_pages_and_filters(client: httpx.AsyncClient, tenant_key: str) -> None:
    ids = [(await create(client, tenant_key, description=str(i)))["webhook_id"] for i in range(5)]
    await client.patch(f"/v1/webhooks/{ids[1]}", json={"is_active": False}, headers=auth(tenant_key))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/webhooks", params=params, headers=auth(tenant_key))).json()
        seen += [w["webhook_id"] for w in page["webhooks"]]
        assert all("secret" not in w for w in page["webhooks"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    active = (await client.get("/v1/webhooks", params={"is_active": "true"}, headers=auth(tenant_key))).json()
    assert [w["webhook_id"] for w in active["webhooks"]] == [i for i in ids if i != ids[1]]
    for params in ({"is_active": "yes"}, {"limit": "0"}, {"cursor": "x.y"}):
        assert (await client.get("/v1/webhooks", params=params, headers=auth(tenant_key))).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x"}, "body.url"),
        ({"url": "http://user:pw@example.com/x"}, "body.url"),
        ({"url": "not a url"}, "body.url"),
        ({"events": []}, "body.events"),
        ({"events": ["user.*.x"]}, "body.events.0"),
        ({"events": ["a b"]}, "body.events.0"),
        ({"secret": "short"}, "body.secret"),
        ({"sources": []}, "body.sources"),
        ({"extra": 1}, "body"),
    ],
)
async def test_bad_webhooks_are_400_and_create_nothing(
    client: httpx.AsyncClient, tenant_key: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/webhooks", json={**HOOK, **body}, headers=auth(tenant_key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["validation_errors"][0]["field"] == field
    assert (await client.get("/v1/webhooks", headers=auth(tenant_key))).json()["webhooks"] == []


async def test_another_tenant_sees_and_changes_nothing(client: httpx.AsyncClient, tenant_key: str, pool: Pool) -> None:
    async with pool.acquire() as conn:
        other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
    created = await create(client, tenant_key)
    path = f"/v1/webhooks/{created['webhook_id']}"
    for method, url, body in (
        ("GET", path, None),
        ("PUT", path, HOOK),
        ("PATCH", path, {"is_active": False}),
        ("DELETE", path, None),
        ("POST", f"{path}/rotate-secret", None),
    ):
        response = await client.request(method, url, json=body, headers=auth(other))
        assert response.status_code == 404, (method, response.text)
    assert (await client.get("/v1/webhooks", headers=auth(other))).json()["webhooks"] == []
    assert (await client.get(path, headers=auth(tenant_key))).json() | {"request_id": None} == {
        **{k: v for k, v in created.items() if k != "secret"},
        "request_id": None,
    }


async def test_a_test_delivery_is_signed_both_ways_over_the_exact_bytes(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    async with Receiver() as receiver:
        created = await create(client, tenant_key, url=receiver.url)
        result = await client.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=auth(tenant_key))
        assert result.status_code == 200, result.text
        assert result.json()["status"] == "success" and result.json()["status_code"] == 204
        [(headers, body)] = receiver.requests
        event = Webhook(created["secret"]).verify(body, headers)  # the official Standard Webhooks library
        assert event["event_type"] == "webhook.test" and event["status"] == "pending"
        legacy = hmac.new(created["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Webhook-Signature"] == legacy
        assert headers["X-Webhook-Id"] == headers["webhook-id"]

        rotated = (
            await client.post(f"/v1/webhooks/{created['webhook_id']}/rotate-secret", headers=auth(tenant_key))
        ).json()
        await client.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=auth(tenant_key))
        headers, body = receiver.requests[-1]
        assert len(headers["webhook-signature"].split()) == 2, "both secrets sign during the overlap"
        Webhook(created["secret"]).verify(body, headers)
        Webhook(rotated["secret"]).verify(body, headers)

        receiver.status = 500
        failed = (await client.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=auth(tenant_key))).json()
        assert (failed["status"], failed["status_code"]) == ("failed", 500)


async def test_a_test_delivery_to_a_dead_endpoint_fails_cleanly(client: httpx.AsyncClient, tenant_key: str) -> None:
    created = await create(client, tenant_key, url=f"http://127.0.0.1:{free_port()}/hook")
    result = (await client.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=auth(tenant_key))).json()
    assert result["status"] == "failed" and result["status_code"] is None and result["message"]


async def post_event(client: httpx.AsyncClient, key: str, **overrides: Any) -> str:
    response = await client.post("/v1/events", json=event(**overrides), headers=auth(key))
    assert response.status_code == 201, response.text
    return str(response.json()["event_id"])


async def test_matching_events_are_delivered_signed_once_per_webhook(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    async with Receiver() as orders, Receiver() as shop_only:
        hook = await create(client, tenant_key, url=orders.url, events=["order.*"])
        narrow = await create(client, tenant_key, url=shop_only.url, events=["*"], sources=["shop"])
        raw = b'{"source":"shop","event_type":"order.created","payload":{"n":1.50}}'
        posted = await client.post(
            "/v1/events", content=raw, headers={**auth(tenant_key), "Content-Type": "application/json"}
        )
        wanted = posted.json()["event_id"]
        other_source = await post_event(client, tenant_key, event_type="order.paid", source="crm")
        await post_event(client, tenant_key, event_type="user.created", source="crm")  # matches neither

        async def delivered() -> bool:
            return len(orders.requests) >= 2 and len(shop_only.requests) >= 1

        await wait_until(delivered, timeout=20, what="the deliveries")
        got = {Webhook(hook["secret"]).verify(body, headers)["event_id"] for headers, body in orders.requests}
        assert got == {wanted, other_source}
        [(headers, body)] = shop_only.requests
        delivered_event = Webhook(narrow["secret"]).verify(body, headers)
        assert delivered_event["event_id"] == wanted and b'"n":1.50' in body, "the payload's bytes as sent"
        assert set(delivered_event) == {
            "event_id",
            "created_at",
            "source",
            "event_type",
            "payload",
            "status",
            "metadata",
            "acknowledged_at",
        }
        mine = (await client.get(f"/v1/events/{wanted}", headers=auth(tenant_key))).json()
        assert delivered_event == {k: v for k, v in mine.items() if k != "request_id"}


async def test_a_failing_endpoint_gets_retries_with_the_same_webhook_id(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    async with Receiver(status=500) as receiver:
        hook = await create(client, tenant_key, url=receiver.url, events=["*"])
        await post_event(client, tenant_key)

        async def retried() -> bool:
            return len(receiver.requests) >= 2

        await wait_until(retried, timeout=20, what="a retry")
        receiver.status = 204

        async def settled() -> bool:
            return len(receiver.requests) >= 3

        await wait_until(settled, timeout=20, what="the third attempt")
        ids = {headers["webhook-id"] for headers, _ in receiver.requests}
        assert len(ids) == 1, "one webhook-id for every attempt"
        for headers, body in receiver.requests:
            Webhook(hook["secret"]).verify(body, headers)


async def test_410_disables_the_webhook(client: httpx.AsyncClient, tenant_key: str) -> None:
    async with Receiver(status=410) as receiver:
        hook = await create(client, tenant_key, url=receiver.url, events=["*"])
        await post_event(client, tenant_key)

        async def disabled() -> dict[str, Any] | None:
            got = (await client.get(f"/v1/webhooks/{hook['webhook_id']}", headers=auth(tenant_key))).json()
            return got if got["is_active"] is False else None

        got = await wait_until(disabled, timeout=20, what="the webhook disabled")
        assert "410" in got["disabled_reason"]
        assert len(receiver.requests) == 1


async def test_another_tenants_events_never_reach_a_webhook(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool
) -> None:
    async with pool.acquire() as conn:
        other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
    async with Receiver() as receiver:
        await create(client, tenant_key, url=receiver.url, events=["*"])
        await post_event(client, other)
        mine = await post_event(client, tenant_key)

        async def mine_arrived() -> bool:
            return any(mine.encode() in body for _, body in receiver.requests)

        await wait_until(mine_arrived, timeout=20, what="the tenant's own event")
        assert len(receiver.requests) == 1, "and only that one"


async def test_the_delivery_log_shows_every_attempt_and_a_failed_delivery_can_be_retried(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool
) -> None:
    async with Receiver(status=500) as receiver:
        hook = await create(client, tenant_key, url=receiver.url, events=["*"])
        path = f"/v1/webhooks/{hook['webhook_id']}/deliveries"
        event_id = await post_event(client, tenant_key)

        async def failed() -> dict[str, Any] | None:
            page = (await client.get(path, params={"status": "failed"}, headers=auth(tenant_key))).json()
            return page["deliveries"][0] if page["deliveries"] else None

        delivery = await wait_until(failed, timeout=20, what="the retries used up")
        assert delivery["event_id"] == event_id and delivery["attempts"] == 4, "the first try and 3 retries"
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500] * 4
        assert delivery["next_attempt_at"] is None and delivery["last_error"] == "HTTP 500"

        receiver.status = 204
        retried = await client.post(f"{path}/{delivery['delivery_id']}/retry", headers=auth(tenant_key))
        assert retried.status_code == 202, retried.text

        async def succeeded() -> dict[str, Any] | None:
            page = (await client.get(path, params={"event_id": event_id}, headers=auth(tenant_key))).json()
            return page["deliveries"][0] if page["deliveries"][0]["status"] == "succeeded" else None

        done = await wait_until(succeeded, timeout=20, what="the manual retry delivered")
        assert done["attempts"] == 5 and done["attempt_log"][-1]["status_code"] == 204
        assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1

        async with pool.acquire() as conn:
            other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
        assert (await client.get(path, headers=auth(other))).status_code == 404
        foreign = await client.post(f"{path}/{delivery['delivery_id']}/retry", headers=auth(other))
        assert foreign.status_code == 404
        for params in ({"status": "lost"}, {"event_id": "x"}, {"cursor": "x.y"}):
            assert (await client.get(path, params=params, headers=auth(tenant_key))).status_code == 422


async def test_a_webhook_failing_for_5_days_is_disabled_and_one_success_resets_the_clock(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool
) -> None:
    async with Receiver(status=503) as receiver:
        hook = await create(client, tenant_key, url=receiver.url, events=["*"])
        async with pool.acquire() as conn:  # five days and a bit of failures, in a moment
            await conn.execute(
                "UPDATE webhooks SET failing_since = now() - interval '5 days 1 minute' WHERE webhook_id = $1",
                uuid.UUID(hook["webhook_id"]),
            )
        await post_event(client, tenant_key)

        async def disabled() -> dict[str, Any] | None:
            got = (await client.get(f"/v1/webhooks/{hook['webhook_id']}", headers=auth(tenant_key))).json()
            return got if not got["is_active"] else None

        got = await wait_until(disabled, timeout=20, what="the webhook disabled after 5 days of failures")
        assert got["disabled_reason"].startswith("every delivery failed for")

    async with Receiver() as healthy:
        fine = await create(client, tenant_key, url=healthy.url, events=["*"])
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE webhooks SET failing_since = now() - interval '4 days' WHERE webhook_id = $1",
                uuid.UUID(fine["webhook_id"]),
            )
        await post_event(client, tenant_key)
        await wait_until(lambda: _has_requests(healthy), timeout=20, what="a successful delivery")

        async def reset() -> bool:
            async with pool.acquire() as conn:
                value = await conn.fetchval(
                    "SELECT failing_since FROM webhooks WHERE webhook_id = $1", uuid.UUID(fine["webhook_id"])
                )
            return value is None

        await wait_until(reset, timeout=10, what="the failure clock reset by a success")


async def _has_requests(receiver: Receiver) -> bool:
    return bool(receiver.requests)


async def test_webhook_metrics(client: httpx.AsyncClient, tenant_key: str) -> None:
    async with Receiver() as receiver:
        await create(client, tenant_key, url=receiver.url, events=["*"])
        await post_event(client, tenant_key)
        await wait_until(lambda: _has_requests(receiver), timeout=20, what="a delivery")

    async def scraped() -> str | None:
        text = (await client.get("/metrics")).text
        return text if 'triggers_webhook_attempts_total{outcome="succeeded"}' in text else None

    text = await wait_until(scraped, timeout=10, what="the webhook metrics")
    for name in ("triggers_webhook_attempt_seconds_count", "triggers_webhook_pending_deliveries"):
        assert name in text, name


async def test_a_hanging_endpoint_does_not_delay_a_healthy_one(client: httpx.AsyncClient, tenant_key: str) -> None:
    async with Receiver(hang_s=20) as dead, Receiver() as healthy:
        stuck = await create(client, tenant_key, url=dead.url, events=["*"])
        await create(client, tenant_key, url=healthy.url, events=["*"])
        posted = await client.post("/v1/events/bulk", json={"items": [event()] * 60}, headers=auth(tenant_key))
        assert posted.status_code == 201

        async def all_healthy() -> bool:
            return len(healthy.requests) >= 60

        await wait_until(all_healthy, timeout=30, what="every delivery to the healthy endpoint")
        latencies = [
            arrived - datetime.fromisoformat(json.loads(body)["created_at"]).timestamp()
            for arrived, (_, body) in zip(healthy.arrivals, healthy.requests, strict=True)
        ]
        # Each attempt to the hanging endpoint holds its slot for 15 s; the healthy one's stay far below that.
        assert max(latencies) < 2.0, f"the healthy endpoint waited {max(latencies):.2f} s behind the hanging one"
        assert len(dead.requests) <= 10, "the hanging endpoint gets no more attempts at once than its share"
        await client.delete(f"/v1/webhooks/{stuck['webhook_id']}", headers=auth(tenant_key))
