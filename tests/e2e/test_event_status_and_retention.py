"""What the inbox tells other teams and keeps: status transitions on ``triggers.event-status.v1`` (only those
that committed, exactly once each here), the retention purge, and the inbox's own metrics."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from triggers_common.auth import create_key
from triggers_common.db import Pool
from triggers_common.models import new_event_id, utc_now
from triggers_common.runtime import Runtime
from triggers_common.settings import Settings
from triggers_inbox import retention, store

from tests.support import event, read_topic, wait_until

pytestmark = pytest.mark.e2e

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def statuses(test_env: dict[str, str], ids: list[str], *markers: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The status records of ``ids``, read until every marker's record arrived. A tenant's marker transition
    commits after the tenant's others, and the relay publishes in outbox order into the tenant's partition, so
    everything before it is in."""

    def done(records: list[Any]) -> bool:
        return set(markers) <= {value["event_id"] for _, value in records}

    records = await read_topic(test_env["TRIGGERS_KAFKA_BOOTSTRAP"], test_env["TRIGGERS_STATUS_TOPIC"], done)
    return [(key, value) for key, value in records if value["event_id"] in ids]


async def test_every_committed_transition_is_published_once(
    client: httpx.AsyncClient, tenant_key: str, test_env: dict[str, str]
) -> None:
    posted = await client.post("/v1/events/bulk", json={"items": [event()] * 5}, headers=auth(tenant_key))
    ids = [item["event_id"] for item in posted.json()["successful"]]
    assert (await client.get(f"/v1/events/{ids[-1]}", headers=auth(tenant_key))).status_code == 200

    assert (await client.post(f"/v1/events/{ids[0]}/ack", headers=auth(tenant_key))).status_code == 200
    assert (await client.post(f"/v1/events/{ids[0]}/ack", headers=auth(tenant_key))).status_code == 409
    bulk = await client.post("/v1/events/bulk/ack", json={"event_ids": [ids[1]]}, headers=auth(tenant_key))
    assert bulk.status_code == 200
    assert (await client.delete(f"/v1/events/{ids[2]}", headers=auth(tenant_key))).status_code == 200
    assert (await client.delete(f"/v1/events/{ids[2]}", headers=auth(tenant_key))).status_code == 200
    for _ in range(5):  # quarantine ids[3] (and lease ids[4] along the way)
        leased = (await client.post("/v1/inbox/lease", json={"limit": 1}, headers=auth(tenant_key))).json()
        await client.post(f"/v1/inbox/leases/{leased['lease_id']}/release", headers=auth(tenant_key))
    leased = (await client.post("/v1/inbox/lease", json={"limit": 1}, headers=auth(tenant_key))).json()
    assert [e["event_id"] for e in leased["events"]] == [ids[4]]
    redrive = await client.post("/v1/inbox/quarantine/redrive", json={"event_ids": [ids[3]]}, headers=auth(tenant_key))
    assert len(redrive.json()["successful"]) == 1
    acked = await client.post(
        f"/v1/inbox/leases/{leased['lease_id']}/ack", json={"event_ids": [ids[4]]}, headers=auth(tenant_key)
    )
    assert len(acked.json()["successful"]) == 1
    marker = (await client.post("/v1/events", json=event(), headers=auth(tenant_key))).json()["event_id"]
    assert (await client.get(f"/v1/events/{marker}", headers=auth(tenant_key))).status_code == 200  # arrived
    assert (await client.delete(f"/v1/events/{marker}", headers=auth(tenant_key))).status_code == 200

    records = await statuses(test_env, ids, marker)
    assert Counter((value["event_id"], value["status"]) for _, value in records) == Counter(
        {
            (ids[0], "acknowledged"): 1,  # the 409 published nothing
            (ids[1], "acknowledged"): 1,
            (ids[2], "deleted"): 1,  # nor did the repeated delete
            (ids[3], "quarantined"): 1,
            (ids[3], "pending"): 1,
            (ids[4], "acknowledged"): 1,
        }
    )
    for key, value in records:
        assert set(value) == {"event_id", "tenant_id", "status", "at"}
        assert key == value["tenant_id"].encode() and TIMESTAMP.match(value["at"])
    assert len({value["tenant_id"] for _, value in records}) == 1, "all of them the caller's tenant"


async def test_a_delete_made_while_the_event_was_in_flight_is_published_when_it_arrives(
    client: httpx.AsyncClient, pool: Pool, test_env: dict[str, str]
) -> None:
    """An id deleted before the inbox had its event leaves a tombstone and publishes nothing yet (the id may be
    anyone's). When the tenant's own event arrives, the delete is published, once, even if the event is
    delivered again, and even if another tenant deleted the id first; a tombstone only another tenant left
    publishes nothing, for either tenant."""
    owner, intruder = f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn:
        owner_key, intruder_key = (await create_key(conn, owner)).key, (await create_key(conn, intruder)).key

    def in_flight() -> store.NewRow:
        event_id, created = new_event_id()
        return store.NewRow(event_id, owner, created, "shop", "order.created", "high", b"{}", None)

    late, foreign, contested = in_flight(), in_flight(), in_flight()
    for event_id, key in (
        (late.event_id, owner_key),
        (foreign.event_id, intruder_key),
        (contested.event_id, intruder_key),
        (contested.event_id, owner_key),
    ):
        assert (await client.delete(f"/v1/events/{event_id}", headers=auth(key))).status_code == 200
    for _ in range(2):  # arrival, then a redelivery, as the inbox consumer writes them
        async with pool.acquire() as conn, conn.transaction():
            await store.insert_events(conn, [late, foreign, contested])
    assert (await client.get(f"/v1/events/{late.event_id}", headers=auth(owner_key))).status_code == 404
    assert (await client.get(f"/v1/events/{contested.event_id}", headers=auth(owner_key))).status_code == 404
    assert (await client.get(f"/v1/events/{foreign.event_id}", headers=auth(owner_key))).status_code == 200

    markers = []
    for key in (owner_key, intruder_key):  # one in each tenant's partition
        marker = (await client.post("/v1/events", json=event(), headers=auth(key))).json()["event_id"]
        assert (await client.get(f"/v1/events/{marker}", headers=auth(key))).status_code == 200  # arrived
        assert (await client.delete(f"/v1/events/{marker}", headers=auth(key))).status_code == 200
        markers.append(marker)

    ids = [str(e.event_id) for e in (late, foreign, contested)]
    records = await statuses(test_env, ids, *markers)
    assert sorted((key, value["event_id"], value["status"]) for key, value in records) == sorted(
        [(owner.encode(), str(late.event_id), "deleted"), (owner.encode(), str(contested.event_id), "deleted")]
    )


async def test_retention_purges_old_events_in_batches_and_publishes_it(
    client: httpx.AsyncClient, pool: Pool, settings: Settings, test_env: dict[str, str]
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    now = utc_now()

    def aged(days: float) -> store.NewRow:
        event_id, created = new_event_id(int((now - timedelta(days=days)).timestamp() * 1e9))
        return store.NewRow(event_id, tenant, created, "shop", "old.thing", "normal", b"{}", None)

    old_pending, young_pending, old_quarantined = aged(31), aged(29), aged(40)
    old_acked, young_acked = aged(10), aged(10)
    old_marker = aged(31)
    async with pool.acquire() as conn, conn.transaction():
        await store.insert_events(conn, [old_pending, young_pending, old_quarantined, old_acked, young_acked])
        await conn.execute(
            "UPDATE events SET status = 'acknowledged', acknowledged_at = $2 WHERE event_id = $1",
            old_acked.event_id,
            now - timedelta(days=8),
        )
        await conn.execute(
            "UPDATE events SET status = 'acknowledged', acknowledged_at = $2 WHERE event_id = $1",
            young_acked.event_id,
            now - timedelta(days=6),
        )
        await conn.execute(
            "UPDATE events SET status = 'quarantined', quarantined_at = now() WHERE event_id = $1",
            old_quarantined.event_id,
        )
        await conn.execute(
            """INSERT INTO events (event_id, tenant_id, created_at, status, deleted_at)
               VALUES ($1, $2, $3, 'deleted', now())""",
            old_marker.event_id,
            tenant,
            old_marker.created_at,
        )
        expired, live = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO leases (lease_id, tenant_id, leased_until) VALUES ($1, $3, $4), ($2, $3, $5)",
            expired,
            live,
            tenant,
            now - timedelta(days=2),
            now - timedelta(hours=1),
        )

    await retention.purge(cast(Runtime, SimpleNamespace(pool=pool, settings=settings)))

    async with pool.acquire() as conn:
        left = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM events WHERE tenant_id = $1", tenant)}
        leases = {r["lease_id"] for r in await conn.fetch("SELECT lease_id FROM leases WHERE tenant_id = $1", tenant)}
    assert left == {young_pending.event_id, young_acked.event_id}
    assert leases == {live}, "a lease that ended a day ago is gone; one that ended an hour ago can still ack"

    purged = [str(row.event_id) for row in (old_pending, old_quarantined, old_acked)]

    def done(records: list[Any]) -> bool:
        return {v["event_id"] for _, v in records if v["status"] == "purged"} >= set(purged)

    records = await read_topic(test_env["TRIGGERS_KAFKA_BOOTSTRAP"], test_env["TRIGGERS_STATUS_TOPIC"], done)
    published = {v["event_id"] for _, v in records if v["tenant_id"] == tenant}
    assert published == set(purged), "a purged delete marker was already published as deleted"


async def test_inbox_metrics(client: httpx.AsyncClient, tenant_key: str) -> None:
    posted = await client.post("/v1/events/bulk", json={"items": [event()] * 2}, headers=auth(tenant_key))
    event_id = posted.json()["successful"][0]["event_id"]  # acked; the other one stays pending
    assert (await client.post(f"/v1/events/{event_id}/ack", headers=auth(tenant_key))).status_code == 200

    def value(text: str, name: str) -> float | None:
        found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None

    async def scraped() -> str | None:
        text = (await client.get("/metrics")).text
        return text if (value(text, "triggers_inbox_pending_events_all") or 0) >= 1 else None

    text = await wait_until(scraped, timeout=10, what="the inbox gauges")
    assert (value(text, "triggers_inbox_ack_latency_seconds_count") or 0) >= 1
    assert value(text, "triggers_inbox_oldest_pending_age_all_seconds") is not None
    assert value(text, "triggers_inbox_quarantined_events_all") is not None
    assert re.search(r'^triggers_consumer_lag_records\{group="[^"]+-inbox",partition="\d+"\} \d', text, re.M)
    assert re.search(r"^triggers_inbox_write_seconds_count [1-9]", text, re.M)
    tenants = re.findall(r'^triggers_inbox_pending_events\{tenant="([^"]*)"\}', text, re.M)
    assert 0 < len(tenants) <= 10, "a tenant label only for the deepest few"
    assert all(re.fullmatch(r"t_[0-9a-f]{12}", t) for t in tenants), "/metrics is open: no tenant ids in it"
