"""Leases over HTTP: lease, ack by lease, release, expiry, quarantine after max_leases, redrive; concurrent
leases never overlap; another tenant can touch none of it; bad lease requests change nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from triggers_common.auth import create_key

from tests.support import event, wait_until

pytestmark = pytest.mark.e2e

MAX_LEASES = 5  # the default


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def post_events(client: httpx.AsyncClient, key: str, n: int, **overrides: Any) -> list[str]:
    """Post ``n`` events in one bulk request and wait until the last (so all) is in the inbox; ids oldest first."""
    items = [event(payload={"i": i}, **overrides) for i in range(n)]
    posted = await client.post("/v1/events/bulk", json={"items": items}, headers=auth(key))
    assert posted.status_code == 201, posted.text
    ids = [item["event_id"] for item in posted.json()["successful"]]
    assert (await client.get(f"/v1/events/{ids[-1]}", headers=auth(key))).status_code == 200
    return ids


async def lease(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/inbox/lease", json=body, headers=auth(key))
    assert response.status_code == 200, response.text
    leased: dict[str, Any] = response.json()
    return leased


async def inbox_ids(client: httpx.AsyncClient, key: str) -> list[str]:
    response = await client.get("/v1/inbox", params={"limit": "100"}, headers=auth(key))
    assert response.status_code == 200, response.text
    return [e["event_id"] for e in response.json()["events"]]


def ids_of(leased: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in leased["events"]]


async def test_leased_events_are_hidden_until_acked_by_their_lease(client: httpx.AsyncClient, tenant_key: str) -> None:
    ids = await post_events(client, tenant_key, 5)
    first = await lease(client, tenant_key, limit=3)
    assert ids_of(first) == ids[:3], "a lease takes the oldest events, oldest first"
    assert uuid.UUID(first["lease_id"]) and first["leased_until"].endswith("Z")
    assert first["events"][0]["payload"] == {"i": 0} and first["events"][0]["status"] == "pending"
    assert await inbox_ids(client, tenant_key) == ids[3:], "leased events are hidden from GET /v1/inbox"

    second = await lease(client, tenant_key, limit=10)
    assert ids_of(second) == ids[3:], "and from other leases"
    nothing = await lease(client, tenant_key)
    assert nothing["events"] == [] and nothing["lease_id"] is None and nothing["leased_until"] is None

    acked = await client.post(
        f"/v1/inbox/leases/{first['lease_id']}/ack", json={"event_ids": [*ids[:3], ids[3]]}, headers=auth(tenant_key)
    )
    assert acked.status_code == 200, acked.text
    assert [s["event_id"] for s in acked.json()["successful"]] == ids[:3]
    [failed] = acked.json()["failed"]
    assert failed["index"] == 3 and failed["error"]["code"] == "CONFLICT"
    assert failed["error"]["details"]["current_status"] == "pending", "held by the second lease"
    for eid in ids[:3]:
        got = (await client.get(f"/v1/events/{eid}", headers=auth(tenant_key))).json()
        assert got["status"] == "acknowledged"

    again = await client.post(
        f"/v1/inbox/leases/{second['lease_id']}/ack", json={"event_ids": [ids[0], ids[4]]}, headers=auth(tenant_key)
    )
    assert [s["event_id"] for s in again.json()["successful"]] == [ids[4]]
    assert again.json()["failed"][0]["error"]["code"] == "CONFLICT", "already acknowledged"


async def test_parallel_leases_never_hand_out_one_event_twice(client: httpx.AsyncClient, tenant_key: str) -> None:
    ids = await post_events(client, tenant_key, 120)
    handed: list[str] = []
    while True:
        leases = await asyncio.gather(*(lease(client, tenant_key, limit=7) for _ in range(8)))
        got = [eid for leased in leases for eid in ids_of(leased)]
        if not got:
            break
        handed += got
    assert len(handed) == len(set(handed)), "no event is in two live leases"
    assert sorted(handed) == sorted(ids), "and every event was leased"


async def test_an_expired_lease_makes_events_visible_and_may_still_ack_what_nobody_took(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    ids = await post_events(client, tenant_key, 2)
    old = await lease(client, tenant_key, limit=2, lease_seconds=1)
    assert ids_of(old) == ids

    async def visible() -> bool:
        return await inbox_ids(client, tenant_key) == ids

    await wait_until(visible, timeout=10, what="the expired lease's events back in the inbox")
    new = await lease(client, tenant_key, limit=1)
    assert ids_of(new) == ids[:1], "another lease takes the first"

    acked = await client.post(
        f"/v1/inbox/leases/{old['lease_id']}/ack", json={"event_ids": ids}, headers=auth(tenant_key)
    )
    body = acked.json()
    assert [s["event_id"] for s in body["successful"]] == ids[1:], "nobody took the second: the old lease acks it"
    assert body["failed"][0]["error"]["code"] == "CONFLICT", "the first belongs to the new lease now"
    acked = await client.post(
        f"/v1/inbox/leases/{new['lease_id']}/ack", json={"event_ids": ids[:1]}, headers=auth(tenant_key)
    )
    assert [s["event_id"] for s in acked.json()["successful"]] == ids[:1]


async def test_release_makes_events_visible_at_once(client: httpx.AsyncClient, tenant_key: str) -> None:
    ids = await post_events(client, tenant_key, 3)
    leased = await lease(client, tenant_key, limit=3, lease_seconds=3600)
    path = f"/v1/inbox/leases/{leased['lease_id']}/release"
    unknown = str(uuid.uuid4())

    one = await client.post(path, json={"event_ids": [ids[1], unknown, "nope"]}, headers=auth(tenant_key))
    assert one.status_code == 200, one.text
    assert [s["event_id"] for s in one.json()["successful"]] == [ids[1]]
    assert [(f["index"], f["error"]["code"]) for f in one.json()["failed"]] == [
        (1, "NOT_FOUND"),
        (2, "VALIDATION_ERROR"),
    ]
    assert await inbox_ids(client, tenant_key) == [ids[1]]

    rest = await client.post(path, json={}, headers=auth(tenant_key))  # no event_ids: all of them
    assert sorted(s["event_id"] for s in rest.json()["successful"]) == sorted([ids[0], ids[2]])
    assert await inbox_ids(client, tenant_key) == ids

    twice = await client.post(path, json={"event_ids": [ids[0]]}, headers=auth(tenant_key))
    assert twice.json()["failed"][0]["error"]["code"] == "CONFLICT", "released events are no longer held"

    missing = await client.post(f"/v1/inbox/leases/{uuid.uuid4()}/release", headers=auth(tenant_key))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    bad = await client.post("/v1/inbox/leases/not-a-uuid/ack", json={"event_ids": ids}, headers=auth(tenant_key))
    assert bad.status_code == 422 and bad.json()["error"]["details"]["validation_errors"][0]["field"] == "path.lease_id"


async def test_an_event_leased_too_often_is_quarantined_until_redriven(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    [poison, healthy] = await post_events(client, tenant_key, 2)
    for _ in range(MAX_LEASES):
        leased = await lease(client, tenant_key, limit=1)
        assert ids_of(leased) == [poison]
        released = await client.post(f"/v1/inbox/leases/{leased['lease_id']}/release", headers=auth(tenant_key))
        assert released.status_code == 200

    leased = await lease(client, tenant_key, limit=1)
    assert ids_of(leased) == [healthy], "the next lease quarantines the poison event and takes the next one"
    got = (await client.get(f"/v1/events/{poison}", headers=auth(tenant_key))).json()
    assert got["status"] == "quarantined"
    assert poison not in await inbox_ids(client, tenant_key)

    page = (await client.get("/v1/inbox/quarantine", headers=auth(tenant_key))).json()
    [quarantined] = page["events"]
    assert quarantined["event_id"] == poison and quarantined["lease_count"] == MAX_LEASES
    assert quarantined["status"] == "quarantined" and quarantined["quarantined_at"].endswith("Z")
    assert page["next_cursor"] is None

    redriven = await client.post(
        "/v1/inbox/quarantine/redrive",
        json={"event_ids": [poison, healthy, str(uuid.uuid4())]},
        headers=auth(tenant_key),
    )
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["successful"] == [
        {"event_id": poison, "status": "pending", "message": "Event returned to the inbox"}
    ]
    failures = [(f["index"], f["error"]["code"]) for f in redriven.json()["failed"]]
    assert failures == [(1, "CONFLICT"), (2, "NOT_FOUND")]
    assert (await client.get("/v1/inbox/quarantine", headers=auth(tenant_key))).json()["events"] == []
    assert ids_of(await lease(client, tenant_key, limit=5)) == [poison], "back with a fresh lease count"


async def test_a_quarantined_event_can_still_be_acknowledged_directly(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    [poison] = await post_events(client, tenant_key, 1)
    for _ in range(MAX_LEASES):
        leased = await lease(client, tenant_key)
        await client.post(f"/v1/inbox/leases/{leased['lease_id']}/release", headers=auth(tenant_key))
    assert (await lease(client, tenant_key))["events"] == []
    acked = await client.post(f"/v1/events/{poison}/ack", headers=auth(tenant_key))
    assert acked.status_code == 200, acked.text
    assert (await client.get("/v1/inbox/quarantine", headers=auth(tenant_key))).json()["events"] == []


async def test_lease_filters_and_long_poll(client: httpx.AsyncClient, tenant_key: str) -> None:
    await post_events(client, tenant_key, 2, event_type="a.b")
    [wanted] = await post_events(client, tenant_key, 1, event_type="c.d", metadata={"n": 5, "priority": "high"})
    leased = await lease(client, tenant_key, event_type="c.d", priority="high", metadata_key="n", metadata_value=5)
    assert ids_of(leased) == [wanted]

    waiting = asyncio.create_task(lease(client, tenant_key, source="later", wait=20))
    await asyncio.sleep(0)  # let the request go out; the test waits for the answer below, not for time
    [late] = await post_events(client, tenant_key, 1, source="later")
    assert ids_of(await asyncio.wait_for(waiting, 20)) == [late]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": 0}, "body.limit"),
        ({"limit": 101}, "body.limit"),
        ({"lease_seconds": 0}, "body.lease_seconds"),
        ({"lease_seconds": 3601}, "body.lease_seconds"),
        ({"wait": 31}, "body.wait"),
        ({"priority": "urgent"}, "body.priority"),
        ({"created_after": "yesterday"}, "body.created_after"),
        ({"metadata_key": "n"}, "body.metadata_key"),
        ({"created_after": "0001-01-01T00:00:00+01:00"}, "body.created_after"),
        ({"limit": "ten"}, "body.limit"),
        ({"unknown": 1}, "body"),
    ],
)
async def test_bad_lease_requests_are_400_and_lease_nothing(
    client: httpx.AsyncClient, tenant_key: str, body: dict[str, Any], field: str
) -> None:
    [eid] = await post_events(client, tenant_key, 1)
    response = await client.post("/v1/inbox/lease", json=body, headers=auth(tenant_key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["validation_errors"][0]["field"] == field
    assert await inbox_ids(client, tenant_key) == [eid], "nothing was leased"
    text = await client.post("/v1/inbox/lease", content=b"limit=1", headers=auth(tenant_key))
    assert text.status_code == 415


async def test_another_tenant_can_touch_no_lease_and_no_quarantine(
    client: httpx.AsyncClient, tenant_key: str, pool: Any
) -> None:
    async with pool.acquire() as conn:
        other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
    ids = await post_events(client, tenant_key, 2)
    mine = await lease(client, tenant_key, limit=1)
    for _ in range(MAX_LEASES):  # quarantine the second event
        leased = await lease(client, tenant_key, limit=1)
        await client.post(f"/v1/inbox/leases/{leased['lease_id']}/release", headers=auth(tenant_key))
    assert (await lease(client, tenant_key))["events"] == []

    assert (await lease(client, other, limit=100))["events"] == []
    for path, body in (
        (f"/v1/inbox/leases/{mine['lease_id']}/ack", {"event_ids": ids}),
        (f"/v1/inbox/leases/{mine['lease_id']}/release", {"event_ids": ids}),
    ):
        response = await client.post(path, json=body, headers=auth(other))
        assert response.status_code == 404, (path, response.text)
    assert (await client.get("/v1/inbox/quarantine", headers=auth(other))).json()["events"] == []
    redrive = await client.post("/v1/inbox/quarantine/redrive", json={"event_ids": ids}, headers=auth(other))
    assert [f["error"]["code"] for f in redrive.json()["failed"]] == ["NOT_FOUND", "NOT_FOUND"]

    quarantined = (await client.get("/v1/inbox/quarantine", headers=auth(tenant_key))).json()["events"]
    assert [e["event_id"] for e in quarantined] == ids[1:], "the owner's quarantine is untouched"
    acked = await client.post(
        f"/v1/inbox/leases/{mine['lease_id']}/ack", json={"event_ids": ids[:1]}, headers=auth(tenant_key)
    )
    assert len(acked.json()["successful"]) == 1, "and the owner's lease still holds its event"
