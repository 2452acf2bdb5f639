"""No tenant ever sees, acks, deletes or pages through another tenant's events."""

from __future__ import annotations

import httpx
import pytest

from tests.support import event

pytestmark = pytest.mark.e2e


async def test_a_second_tenant_sees_none_of_the_first(client: httpx.AsyncClient, pool: object) -> None:
    from triggers_common.auth import create_key

    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        alice = (await create_key(conn, "alice-co")).key
        bob = (await create_key(conn, "bob-co")).key
    a, b = {"X-API-Key": alice}, {"X-API-Key": bob}

    ids = []
    for i in range(3):
        response = await client.post("/v1/events", json=event(payload={"secret": i}), headers=a)
        assert response.status_code == 201
        ids.append(response.json()["event_id"])
    assert (await client.get(f"/v1/events/{ids[-1]}", headers=a)).status_code == 200

    assert (await client.get("/v1/inbox", headers=b)).json()["events"] == []
    for event_id in ids:
        for response in (
            await client.get(f"/v1/events/{event_id}", headers=b),
            await client.post(f"/v1/events/{event_id}/ack", headers=b),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["details"] == {"event_id": event_id}  # same as a missing id
        assert (await client.delete(f"/v1/events/{event_id}", headers=b)).status_code == 200

    # bob's delete and ack attempts changed nothing for alice
    alice_inbox = (await client.get("/v1/inbox", headers=a)).json()
    assert [e["event_id"] for e in alice_inbox["events"]] == ids
    assert all(e["status"] == "pending" for e in alice_inbox["events"])

    # a cursor is bound to its tenant
    cursor = (await client.get("/v1/inbox", params={"limit": "1"}, headers=a)).json()["next_cursor"]
    stolen = await client.get("/v1/inbox", params={"cursor": cursor}, headers=b)
    assert stolen.status_code == 422

    # and the dev tenant (the client's default key) sees none of it either
    dev_ids = {e["event_id"] for e in (await client.get("/v1/inbox", params={"limit": "100"})).json()["events"]}
    assert not dev_ids & set(ids)


async def test_key_without_read_scope_cannot_read(client: httpx.AsyncClient, pool: object) -> None:
    from triggers_common.auth import create_key

    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        writer = (await create_key(conn, "writer-co", scopes=["events:write"])).key
    assert (await client.post("/v1/events", json=event(), headers={"X-API-Key": writer})).status_code == 201
    denied = await client.get("/v1/inbox", headers={"X-API-Key": writer})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"


async def test_key_without_write_scope_cannot_ingest(client: httpx.AsyncClient, pool: object) -> None:
    from triggers_common.auth import create_key

    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        reader = (await create_key(conn, "reader-co", scopes=["events:read"])).key
    for path, body in (("/v1/events", event()), ("/v1/events/bulk", {"items": [event()]})):
        denied = await client.post(path, json=body, headers={"X-API-Key": reader})
        assert denied.status_code == 403 and denied.json()["error"]["details"] == {"required_scope": "events:write"}
    assert (await client.get("/v1/inbox", headers={"X-API-Key": reader})).status_code == 200
