"""Analytics end to end: counts per day and hour by source and type, the summary (acks, pending, ack latency,
webhook outcomes), CSV and JSON export, exact counts when records come again (a replayed partition, an
idempotent retry), bad dates, scopes and tenant isolation."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from triggers_common.auth import create_key
from triggers_common.db import Pool

from tests.support import Receiver, committed_records, consumed, event, wait_until

pytestmark = pytest.mark.e2e


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def post(client: httpx.AsyncClient, key: str, source: str, event_type: str) -> str:
    response = await client.post("/v1/events", json=event(source=source, event_type=event_type), headers=auth(key))
    assert response.status_code == 201, response.text
    event_id: str = response.json()["event_id"]
    return event_id


async def summary_when(client: httpx.AsyncClient, key: str, done: Any, what: str) -> dict[str, Any]:
    """The summary of today, once ``done(summary)`` holds."""

    last: dict[str, Any] = {}

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get("/v1/analytics/summary", headers=auth(key))).json()
        last.update(body)
        return body if done(body) else None

    try:
        return await wait_until(check, timeout=30, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last summary: {last}") from None


async def test_counts_by_day_hour_source_and_type(client: httpx.AsyncClient, tenant_key: str, pool: Pool) -> None:
    sent = [("shop", "order.created")] * 3 + [("shop", "order.paid")] * 2 + [("crm", "user.created")]
    for source, event_type in sent:
        await post(client, tenant_key, source, event_type)
    await summary_when(client, tenant_key, lambda s: s["total_events"] == len(sent), "six events counted")

    daily = (await client.get("/v1/analytics", headers=auth(tenant_key))).json()
    assert daily["metric_type"] == "daily" and daily["end_date"] == today()
    assert daily["start_date"] == (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    assert [m["date"] for m in daily["metrics"]][-1] == today() and len(daily["metrics"]) == 7
    assert all(m["event_count"] == 0 for m in daily["metrics"][:-1])  # every day is there, empty ones included
    assert daily["metrics"][-1] == {
        "date": today(),
        "event_count": 6,
        "source_distribution": {"shop": 5, "crm": 1},
        "event_type_distribution": {"order.created": 3, "order.paid": 2, "user.created": 1},
    }
    assert daily["request_id"]

    hourly = (
        await client.get(
            "/v1/analytics",
            params={"metric_type": "hourly", "start_date": today(), "end_date": today()},
            headers=auth(tenant_key),
        )
    ).json()
    assert [m["hour"] for m in hourly["metrics"]] == list(range(24))
    now_hour = hourly["metrics"][datetime.now(UTC).hour]
    # the events were created this hour (or, right at its turn, the one before)
    assert sum(m["event_count"] for m in hourly["metrics"]) == 6 and now_hour["event_count"] in (0, 6)

    summary = (await client.get("/v1/analytics/summary", headers=auth(tenant_key))).json()
    assert summary["top_sources"] == [{"source": "shop", "count": 5}, {"source": "crm", "count": 1}]
    assert summary["top_event_types"][0] == {"event_type": "order.created", "count": 3}

    # another tenant sees none of it
    async with pool.acquire() as conn:
        other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
    theirs = (await client.get("/v1/analytics/summary", headers=auth(other))).json()
    assert theirs["total_events"] == 0 and theirs["top_sources"] == []
    assert all(
        m["event_count"] == 0 for m in (await client.get("/v1/analytics", headers=auth(other))).json()["metrics"]
    )


async def test_summary_counts_acks_pending_latency_and_webhooks(client: httpx.AsyncClient, tenant_key: str) -> None:
    async with Receiver() as receiver:
        hook = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["order.*"]}, headers=auth(tenant_key)
        )
        assert hook.status_code == 201, hook.text
        ids = [await post(client, tenant_key, "shop", "order.created") for _ in range(4)]
        ids.append(await post(client, tenant_key, "shop", "user.created"))  # not for the webhook
        for event_id in ids[:2]:
            assert (await client.post(f"/v1/events/{event_id}/ack", headers=auth(tenant_key))).status_code == 200
        assert (await client.delete(f"/v1/events/{ids[0]}", headers=auth(tenant_key))).status_code == 200  # acked
        assert (await client.delete(f"/v1/events/{ids[2]}", headers=auth(tenant_key))).status_code == 200  # not

        summary = await summary_when(
            client,
            tenant_key,
            lambda s: s["acknowledged"] == 2 and s["webhooks"]["delivered"] == 4 and s["pending"] == 2,
            "acks, the unacked delete and four deliveries counted",
        )
    assert summary["total_events"] == 5
    assert summary["webhooks"] == {"delivered": 4, "failed": 0, "retrying": 0}
    latency = summary["ack_latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] < 60_000
    assert summary["start_date"] <= today() == summary["end_date"]


async def test_nothing_counts_twice(client: httpx.AsyncClient, test_env: dict[str, str], pool: Pool) -> None:
    """A replayed partition (every record of the tenant's partition produced again, as a redelivery or a re-send
    after a crash looks to a consumer) and an idempotent retry change no figure."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn:
        tenant_key = (await create_key(conn, tenant)).key
    first = await client.post(
        "/v1/events", json=event(source="billing"), headers={**auth(tenant_key), "Idempotency-Key": "invoice-1"}
    )
    again = await client.post(
        "/v1/events", json=event(source="billing"), headers={**auth(tenant_key), "Idempotency-Key": "invoice-1"}
    )
    assert again.headers.get("Idempotent-Replayed") == "true"
    second = await post(client, tenant_key, "billing", "order.created")
    assert (await client.post(f"/v1/events/{second}/ack", headers=auth(tenant_key))).status_code == 200
    before = await summary_when(
        client, tenant_key, lambda s: s["total_events"] == 2 and s["acknowledged"] == 1, "two events, one ack"
    )
    assert first.json()["event_id"] == again.json()["event_id"]

    bootstrap = test_env["TRIGGERS_KAFKA_BOOTSTRAP"]
    prefix = test_env["TRIGGERS_CONSUMER_GROUP_PREFIX"]
    for topic, group in (
        (test_env["TRIGGERS_EVENTS_TOPIC"], f"{prefix}-analytics"),
        (test_env["TRIGGERS_STATUS_TOPIC"], f"{prefix}-analytics-status"),
    ):
        assert await replay_tenant(bootstrap, topic, tenant) >= 1, f"nothing of tenant {tenant} on {topic}"
        await consumed(bootstrap, topic, group)

    after = (await client.get("/v1/analytics/summary", headers=auth(tenant_key))).json()
    for field in ("total_events", "top_sources", "acknowledged", "pending", "ack_latency_ms"):
        assert after[field] == before[field], field
    daily = (await client.get("/v1/analytics", headers=auth(tenant_key))).json()
    assert daily["metrics"][-1]["event_count"] == 2


async def replay_tenant(bootstrap: str, topic: str, tenant: str) -> int:
    """Produce every record of ``tenant`` on ``topic`` once more (same key, value and headers), in one
    transaction, so the topic ends with a commit marker like the service's own transactions."""
    records = [r for r in await committed_records(bootstrap, topic) if r.key == tenant.encode()]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"replay-{uuid.uuid4().hex}")
    await producer.start()
    try:
        async with producer.transaction():
            for r in records:
                await producer.send(topic, r.value, key=r.key, headers=list(r.headers), partition=r.partition)
    finally:
        await producer.stop()
    return len(records)


async def test_export_as_csv_and_json(client: httpx.AsyncClient, tenant_key: str) -> None:
    await post(client, tenant_key, "shop", "order.created")
    await post(client, tenant_key, '=cmd|"/c calc"!A1', "order.created")  # a formula-like source stays text
    await summary_when(client, tenant_key, lambda s: s["total_events"] == 2, "two events counted")

    response = await client.get("/v1/analytics/export", params={"format": "csv"}, headers=auth(tenant_key))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="triggers-analytics-')
    assert response.headers["x-request-id"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["date", "event_count", "source_distribution", "event_type_distribution"]
    assert len(rows) == 8 and rows[-1][:2] == [today(), "2"]
    assert msgspec.json.decode(rows[-1][2]) == {"shop": 1, '=cmd|"/c calc"!A1': 1}
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)

    hourly = await client.get(
        "/v1/analytics/export", params={"format": "csv", "metric_type": "hourly"}, headers=auth(tenant_key)
    )
    hourly_rows = list(csv.reader(io.StringIO(hourly.text)))
    assert hourly_rows[0][:3] == ["date", "hour", "event_count"] and len(hourly_rows) == 1 + 7 * 24

    as_json = await client.get("/v1/analytics/export", params={"format": "json"}, headers=auth(tenant_key))
    assert as_json.headers["content-disposition"].endswith('.json"')
    plain = (await client.get("/v1/analytics", headers=auth(tenant_key))).json()
    assert as_json.json()["metrics"] == plain["metrics"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_date": "2026-13-01"}, "query.start_date"),
        ({"end_date": "yesterday"}, "query.end_date"),
        ({"end_date": "20261125"}, "query.end_date"),
        ({"start_date": "2026-11-20", "end_date": "2026-11-10"}, "query.start_date"),
        ({"start_date": "2026-01-01", "end_date": "2026-02-01"}, "query.end_date"),
        ({"metric_type": "weekly"}, "query.metric_type"),
    ],
)
async def test_bad_dates_and_types_are_400(
    client: httpx.AsyncClient, tenant_key: str, params: dict[str, str], field: str
) -> None:
    for path in ("/v1/analytics", "/v1/analytics/summary", "/v1/analytics/export"):
        if path.endswith("summary") and "metric_type" in params:
            continue
        response = await client.get(path, params=params, headers=auth(tenant_key))
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["request_id"]
        assert [e["field"] for e in error["details"]["validation_errors"]] == [field]


async def test_export_format_scope_and_auth(client: httpx.AsyncClient, tenant_key: str, pool: Pool) -> None:
    response = await client.get("/v1/analytics/export", params={"format": "xml"}, headers=auth(tenant_key))
    assert response.status_code == 400
    assert response.json()["error"]["details"]["validation_errors"][0]["field"] == "query.format"
    # 31 days, both ends included, is the longest range
    ok = await client.get(
        "/v1/analytics", params={"start_date": "2026-01-01", "end_date": "2026-01-31"}, headers=auth(tenant_key)
    )
    assert ok.status_code == 200 and len(ok.json()["metrics"]) == 31

    async with pool.acquire() as conn:
        writer = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}", scopes=["events:write"])).key
    for path in ("/v1/analytics", "/v1/analytics/summary", "/v1/analytics/export"):
        denied = await client.get(path, headers=auth(writer))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
        anonymous = await client.get(path, headers={"X-API-Key": ""})
        assert anonymous.status_code == 401
