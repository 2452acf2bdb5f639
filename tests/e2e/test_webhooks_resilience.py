"""Webhooks under trouble: a circuit breaker for a failing endpoint, a dispatcher killed mid-stream (with two
more running), and replays of a time range, including the days a webhook was disabled."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from triggers_common.auth import create_key
from triggers_common.db import Pool

from tests.support import Receiver, Server, consumed, event, wait_until

pytestmark = pytest.mark.e2e


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def create_hook(client: httpx.AsyncClient, key: str, url: str, events: list[str]) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, "events": events}, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def post_events(client: httpx.AsyncClient, key: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await client.post("/v1/events/bulk", json={"items": items}, headers=auth(key))
    assert response.status_code == 201 and not response.json()["failed"], response.text
    successful: list[dict[str, Any]] = response.json()["successful"]
    return successful


async def delivery_states(pool: Pool, webhook_id: str) -> list[tuple[str, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, attempts FROM deliveries WHERE webhook_id = $1", uuid.UUID(webhook_id))
    return [(r["status"], r["attempts"]) for r in rows]


async def open_breakers(client: httpx.AsyncClient) -> float:
    found = re.search(r"^triggers_webhook_open_breakers (\S+)$", (await client.get("/metrics")).text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_an_open_breaker_holds_deliveries_back_without_using_retries_then_closes(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool
) -> None:
    async with Receiver(status=500) as receiver:
        hook = await create_hook(client, tenant_key, receiver.url, ["*"])
        await post_events(client, tenant_key, [event()] * 40)

        async def opened() -> bool:
            failures = sum(attempts for _, attempts in await delivery_states(pool, hook["webhook_id"]))
            return failures >= 5 and await open_breakers(client) >= 1

        await wait_until(opened, timeout=20, what="the breaker open after 5 failures in a row")
        states = await delivery_states(pool, hook["webhook_id"])
        untouched = [s for s in states if s == ("pending", 0)]
        # At most the webhook's 10 concurrent attempts (and their retries) went out before the breaker opened;
        # without it, every delivery would have used up its 4 attempts by now.
        assert len(untouched) >= 20, f"held back: {len(untouched)} of {len(states)}"
        assert all(status != "failed" for status, _ in states), "no delivery used up its retries"

        receiver.status = 204  # the endpoint recovers: the next probe succeeds and closes the breaker

        async def all_delivered() -> bool:
            return [s for s, _ in await delivery_states(pool, hook["webhook_id"])] == ["succeeded"] * 40

        await wait_until(all_delivered, timeout=40, what="every delivery once the endpoint recovered")
        assert len(receiver.requests) < 40 + 25, "a failing endpoint was not hammered"
        # (The gauge going back down is a unit test: other tests' dead endpoints keep breakers of their own open.)


async def test_a_killed_dispatcher_loses_nothing_and_never_sends_an_attempt_twice_at_once(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool, test_env: dict[str, str], tmp_path: Path
) -> None:
    # Two more webhooks processes next to the session's server; a short delivery timeout keeps the hold on a
    # dead process's deliveries (4 x the timeout) short.
    env = {**test_env, "TRIGGERS_WEBHOOK_TIMEOUT_S": "2"}
    first, second = Server(env, target="webhooks", log_dir=tmp_path), Server(env, target="webhooks", log_dir=tmp_path)
    restarted = Server(env, target="webhooks", log_dir=tmp_path)
    async with Receiver(hang_s=0.05) as receiver:
        try:
            await first.start()
            await second.start()
            hook = await create_hook(client, tenant_key, receiver.url, ["*"])
            accepted = []
            for batch in range(3):
                items = [event(payload={"n": batch * 100 + i}) for i in range(100)]
                accepted += await post_events(client, tenant_key, items)
            wanted = {a["event_id"] for a in accepted}

            async def some_delivered() -> bool:
                return len(receiver.requests) >= 50

            await wait_until(some_delivered, timeout=30, what="deliveries under way")
            first.kill()  # mid-stream: attempts in flight, outcomes unwritten, offsets uncommitted
            await restarted.start()

            async def all_succeeded() -> bool:
                states = await delivery_states(pool, hook["webhook_id"])
                return len(states) == len(wanted) and all(s == "succeeded" for s, _ in states)

            await wait_until(all_succeeded, timeout=90, what="every delivery after the kill")
        finally:
            for server in (first, second, restarted):
                server.stop()

    signer = Webhook(hook["secret"])
    body_of: dict[str, bytes] = {}
    delivered = set()
    for headers, body in receiver.requests:
        delivered.add(signer.verify(body, headers)["event_id"])  # the official library accepts every one
        assert headers["X-Webhook-Signature"] == hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert body_of.setdefault(headers["webhook-id"], body) == body, "a repeat carries the same signed bytes"
    assert delivered == wanted, "every event delivered"
    assert len(body_of) == len(wanted), "one webhook-id per event"
    spans: dict[str, list[tuple[float, float]]] = {}
    for webhook_id, arrived, ended in receiver.spans:
        spans.setdefault(webhook_id, []).append((arrived, ended))
    for webhook_id, times in spans.items():
        times.sort()
        for (_, ended), (arrived, _) in itertools.pairwise(times):
            assert arrived >= ended, f"{webhook_id} was being sent twice at once"


async def replay(client: httpx.AsyncClient, key: str, webhook_id: str, since: str, until: str) -> httpx.Response:
    return await client.post(
        f"/v1/webhooks/{webhook_id}/replay", json={"since": since, "until": until}, headers=auth(key)
    )


async def test_a_replay_resends_a_time_range_including_the_days_the_webhook_was_disabled(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool, test_env: dict[str, str]
) -> None:
    async with pool.acquire() as conn:
        other = (await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")).key
    async with Receiver() as receiver:
        hook = await create_hook(client, tenant_key, receiver.url, ["order.*"])
        path = f"/v1/webhooks/{hook['webhook_id']}"
        [before] = await post_events(client, tenant_key, [event(event_type="order.created")])
        [first] = await post_events(client, tenant_key, [event(event_type="order.created")])

        def arrivals(event_id: str) -> int:
            return sum(1 for _, body in receiver.requests if event_id.encode() in body)

        async def both_live() -> bool:
            return arrivals(before["event_id"]) == 1 and arrivals(first["event_id"]) == 1

        await wait_until(both_live, timeout=20, what="the live deliveries")
        assert (await client.patch(path, json={"is_active": False}, headers=auth(tenant_key))).status_code == 200
        missed, unmatched, deleted = await post_events(
            client,
            tenant_key,
            [event(event_type="order.paid"), event(event_type="user.created"), event(event_type="order.paid")],
        )
        gone = await client.delete(f"/v1/events/{deleted['event_id']}", headers=auth(tenant_key))
        assert gone.status_code == 200, gone.text
        # The webhook is enabled again only once these events went past it: else they would go live.
        await consumed(
            test_env["TRIGGERS_KAFKA_BOOTSTRAP"],
            test_env["TRIGGERS_EVENTS_TOPIC"],
            f"{test_env['TRIGGERS_CONSUMER_GROUP_PREFIX']}-webhooks",
        )
        await post_events(client, other, [event(event_type="order.paid")])  # another tenant's, in the range
        until = (datetime.fromisoformat(deleted["created_at"]) + timedelta(milliseconds=1)).isoformat()

        refused = await replay(client, tenant_key, hook["webhook_id"], first["created_at"], until)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "CONFLICT", refused.text
        assert (await client.patch(path, json={"is_active": True}, headers=auth(tenant_key))).status_code == 200

        started = await replay(client, tenant_key, hook["webhook_id"], first["created_at"], until)
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] == "pending" and job["deliveries_scheduled"] == 0
        assert job["webhook_id"] == hook["webhook_id"]

        async def completed() -> dict[str, Any] | None:
            got = (await client.get(f"{path}/replays/{job['replay_id']}", headers=auth(tenant_key))).json()
            return got if got["status"] == "completed" else None

        done = await wait_until(completed, timeout=30, what="the replay completed")
        assert done["deliveries_scheduled"] == 2, done

        async def resent() -> bool:
            return arrivals(first["event_id"]) == 2 and arrivals(missed["event_id"]) == 1

        await wait_until(resent, timeout=20, what="the replayed deliveries")
        assert arrivals(before["event_id"]) == 1, "an event created before `since` is not replayed"
        assert arrivals(unmatched["event_id"]) == 0, "an event the webhook does not match is not replayed"
        assert arrivals(deleted["event_id"]) == 0, "a deleted event is not replayed"
        assert len(receiver.requests) == 4, "and no other tenant's event"
        ids = {h["webhook-id"] for h, body in receiver.requests if first["event_id"].encode() in body}
        assert len(ids) == 1, "a replayed delivery keeps its webhook-id"

        assert (await replay(client, other, hook["webhook_id"], first["created_at"], until)).status_code == 404
        foreign = await client.get(f"{path}/replays/{job['replay_id']}", headers=auth(other))
        assert foreign.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400, "body.until"),
        ({"since": "2999-01-01T00:00:00Z", "until": "2999-01-02T00:00:00Z"}, 400, "body.since"),
        ({"since": "2026-01-01T00:00:00Z"}, 400, None),
        ({"since": "2026-01-01T00:00:00", "until": "2026-01-02T00:00:00Z"}, 400, None),
        ({"since": "yesterday", "until": "2026-01-02T00:00:00Z"}, 400, None),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z", "extra": 1}, 400, None),
        ([], 400, None),
    ],
)
async def test_bad_replays_are_400_and_start_nothing(
    client: httpx.AsyncClient, tenant_key: str, pool: Pool, body: Any, status: int, field: str | None
) -> None:
    hook = await create_hook(client, tenant_key, "http://127.0.0.1:9/hook", ["*"])
    response = await client.post(f"/v1/webhooks/{hook['webhook_id']}/replay", json=body, headers=auth(tenant_key))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    if field is not None:
        assert error["details"]["validation_errors"][0]["field"] == field
    async with pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM webhook_replays WHERE webhook_id = $1", uuid.UUID(hook["webhook_id"])
        )
    assert count == 0


async def test_replay_of_an_unknown_webhook_is_404_and_a_bad_id_422(client: httpx.AsyncClient, tenant_key: str) -> None:
    window = ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    assert (await replay(client, tenant_key, str(uuid.uuid4()), *window)).status_code == 404
    assert (await replay(client, tenant_key, "nope", *window)).status_code == 422
    hook = await create_hook(client, tenant_key, "http://127.0.0.1:9/hook", ["*"])
    missing = await client.get(f"/v1/webhooks/{hook['webhook_id']}/replays/{uuid.uuid4()}", headers=auth(tenant_key))
    assert missing.status_code == 404


async def test_a_replay_of_times_before_the_event_log_completes_empty(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    hook = await create_hook(client, tenant_key, "http://127.0.0.1:9/hook", ["*"])
    started = await replay(client, tenant_key, hook["webhook_id"], "0001-01-01T00:00:00Z", "1971-01-01T00:00:00Z")
    assert started.status_code == 202, started.text
    path = f"/v1/webhooks/{hook['webhook_id']}/replays/{started.json()['replay_id']}"

    async def finished() -> dict[str, Any] | None:
        got: dict[str, Any] = (await client.get(path, headers=auth(tenant_key))).json()
        return got if got["status"] in ("completed", "failed") else None

    done = await wait_until(finished, timeout=30, what="the replay finished")
    assert (done["status"], done["deliveries_scheduled"], done["error"]) == ("completed", 0, None)
    assert done["since"] == "1970-01-01T00:00:00.000000Z", "nothing is older than the epoch"
