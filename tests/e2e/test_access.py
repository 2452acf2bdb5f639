"""Signed requests, IP allowlists, scopes and rate limits, on purpose and from two gateway replicas."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from triggers_common.auth import create_key, set_tenant_rate_limit
from triggers_common.db import Pool
from triggers_common.key_admin import update_key
from triggers_common.signing import sign_request

from tests.support import Server, event, wait_until

pytestmark = pytest.mark.e2e
SECRET = "sig-secret-0123456789"


async def new_key(pool: Pool, **policy: Any) -> str:
    async with pool.acquire() as conn:
        return (await create_key(conn, f"acc-{uuid.uuid4().hex[:10]}", **policy)).key


def signed_post(
    key: str, body: bytes, *, secret: str = SECRET, offset: int = 0, path: str = "/v1/events"
) -> dict[str, str]:
    now = time.time()
    # Rounded away from now, so a timestamp just outside the window is still outside when the gateway checks it
    # a moment later (int() of now + 301 is only 300.x s ahead once the clock has passed the next second).
    timestamp = math.ceil(now) + offset if offset > 0 else math.floor(now) + offset
    headers = sign_request(secret, "POST", path, "", body, timestamp=timestamp)
    return {"X-API-Key": key, "Content-Type": "application/json", **headers}


BODY = msgspec.json.encode(event())


async def test_signed_requests(client: httpx.AsyncClient, pool: Pool) -> None:
    key = await new_key(pool, signing_secret=SECRET)
    ok = await client.post("/v1/events", content=BODY, headers=signed_post(key, BODY))
    assert ok.status_code == 201, ok.text

    failures: dict[str, Callable[[], dict[str, Any]]] = {  # each signed just before it is sent
        "wrong secret": lambda: signed_post(key, BODY, secret="another-secret-value"),
        "stale": lambda: signed_post(key, BODY, offset=-301),
        "future": lambda: signed_post(key, BODY, offset=301),
        "other body": lambda: signed_post(key, BODY + b" "),
        "garbage": lambda: {**signed_post(key, BODY), "X-Signature": "not-base64!"},
        "no timestamp": lambda: {k: v for k, v in signed_post(key, BODY).items() if k != "X-Signature-Timestamp"},
        "bad timestamp": lambda: {**signed_post(key, BODY), "X-Signature-Timestamp": "yesterday"},
        "superscript digit": lambda: {**signed_post(key, BODY), "X-Signature-Timestamp": b"1\xb2"},  # "1²"
    }
    for case, headers in failures.items():
        response = await client.post("/v1/events", content=BODY, headers=headers())
        assert response.status_code == 401, case
        assert response.json()["error"]["code"] == "UNAUTHORIZED", case

    # the query string is part of what is signed
    inbox = sign_request(SECRET, "GET", "/v1/inbox", "limit=5", b"")
    assert (await client.get("/v1/inbox?limit=5", headers={"X-API-Key": key, **inbox})).status_code == 200
    assert (await client.get("/v1/inbox?limit=6", headers={"X-API-Key": key, **inbox})).status_code == 401


async def test_signature_required_or_impossible(client: httpx.AsyncClient, pool: Pool) -> None:
    strict = await new_key(pool, signing_secret=SECRET, require_signature=True)
    unsigned = await client.post(
        "/v1/events", content=BODY, headers={"X-API-Key": strict, "Content-Type": "application/json"}
    )
    assert unsigned.status_code == 401
    assert (await client.post("/v1/events", content=BODY, headers=signed_post(strict, BODY))).status_code == 201

    # a signature on a key without a secret can't be checked, so it fails closed
    plain = await new_key(pool)
    assert (await client.post("/v1/events", content=BODY, headers=signed_post(plain, BODY))).status_code == 401


async def test_ip_allowlist_uses_the_socket_peer(client: httpx.AsyncClient, pool: Pool) -> None:
    allowed = await new_key(pool, allowed_ips=["127.0.0.0/8", "2001:db8::/32"])
    assert (await client.post("/v1/events", json=event(), headers={"X-API-Key": allowed})).status_code == 201

    for networks in (["10.0.0.0/8"], ["::1/128"], ["203.0.113.7"]):
        key = await new_key(pool, allowed_ips=networks)
        denied = await client.post("/v1/events", json=event(), headers={"X-API-Key": key})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"

    # 127.0.0.1 is not a trusted proxy of this server, so a forged X-Forwarded-For changes nothing
    spoofed = await new_key(pool, allowed_ips=["203.0.113.7/32"])
    forged = {"X-API-Key": spoofed, "X-Forwarded-For": "203.0.113.7"}
    assert (await client.post("/v1/events", json=event(), headers=forged)).status_code == 403


async def test_rate_limit_headers_and_429(client: httpx.AsyncClient, pool: Pool) -> None:
    key = await new_key(pool, rate_limit=30)
    responses = [await client.get("/v1/inbox", headers={"X-API-Key": key}) for _ in range(40)]
    statuses = [r.status_code for r in responses]
    assert 30 <= statuses.count(200) <= 32 and statuses.count(429) >= 8
    first = responses[0]
    assert first.headers["x-ratelimit-limit"] == "30"
    assert int(first.headers["x-ratelimit-remaining"]) >= 28
    assert int(first.headers["x-ratelimit-reset"]) >= int(time.time())
    limited = next(r for r in responses if r.status_code == 429)
    error = limited.json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED"
    assert set(error["details"]) == {"limit", "reset_at", "retry_after"} and error["details"]["limit"] == 30
    assert int(limited.headers["retry-after"]) >= 1 and limited.headers["x-ratelimit-remaining"] == "0"
    # errors after authentication carry the headers too
    bad = await client.post("/v1/events", json={"nope": 1}, headers={"X-API-Key": await new_key(pool)})
    assert bad.status_code == 400 and bad.headers["x-ratelimit-limit"] == "1000"


async def test_refusals_of_a_known_key_report_its_limit_without_spending_it(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    keys = {
        "scope": await new_key(pool, scopes=["events:read"], rate_limit=30),
        "ip": await new_key(pool, allowed_ips=["203.0.113.7"], rate_limit=30),
        "signature": await new_key(pool, signing_secret=SECRET, require_signature=True, rate_limit=30),
    }
    for case, key in keys.items():
        refusals = [
            await client.post(
                "/v1/events", content=BODY, headers={"X-API-Key": key, "Content-Type": "application/json"}
            )
            for _ in range(35)
        ]
        assert {r.status_code for r in refusals} == ({401} if case == "signature" else {403}), case
        assert all(r.headers["x-ratelimit-limit"] == "30" for r in refusals), case
        assert int(refusals[-1].headers["x-ratelimit-remaining"]) >= 29, case  # 35 refusals spent nothing
        assert int(refusals[-1].headers["x-ratelimit-reset"]) >= int(time.time()) - 1, case
    allowed = await client.get("/v1/inbox", headers={"X-API-Key": keys["scope"]})
    assert allowed.status_code == 200 and int(allowed.headers["x-ratelimit-remaining"]) >= 28


async def test_a_lowered_limit_holds_at_once_for_tokens_already_leased(client: httpx.AsyncClient, pool: Pool) -> None:
    async with pool.acquire() as conn:
        created = await create_key(conn, f"acc-{uuid.uuid4().hex[:10]}", rate_limit=1000)
    auth = {"X-API-Key": created.key}
    for _ in range(3):  # this replica now holds a lease of 20 tokens under the old limit
        assert (await client.get("/v1/inbox", headers=auth)).status_code == 200
    async with pool.acquire() as conn:
        assert await update_key(conn, created.tenant_id, created.key_id, {"rate_limit": 5}, "test")

    async def lowered() -> httpx.Response | None:
        response = await client.get("/v1/inbox", headers=auth)
        return response if response.headers.get("x-ratelimit-limit") == "5" else None

    first = await wait_until(lowered, timeout=10, what="the new limit")
    later = [await client.get("/v1/inbox", headers=auth) for _ in range(15)]
    statuses = [r.status_code for r in [first, *later]]
    assert statuses.count(200) <= 6 and statuses.count(429) >= 10, statuses  # 5, and what refills meanwhile
    assert all(int(r.headers["x-ratelimit-remaining"]) <= 5 for r in [first, *later])


async def test_tenant_cap_spans_keys(client: httpx.AsyncClient, pool: Pool) -> None:
    tenant = f"capped-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await set_tenant_rate_limit(conn, tenant, 20)
        keys = [(await create_key(conn, tenant)).key for _ in range(2)]
    statuses = [(await client.get("/v1/inbox", headers={"X-API-Key": keys[i % 2]})).status_code for i in range(30)]
    assert 20 <= statuses.count(200) <= 22
    assert statuses.count(429) >= 8


async def test_one_limit_across_two_replicas(replicas: list[Server], pool: Pool) -> None:
    limit = 600
    key = await new_key(pool, rate_limit=limit)
    clients = [httpx.AsyncClient(base_url=s.url, headers={"X-API-Key": key}, timeout=30) for s in replicas]
    # At most 64 in flight per client: httpx's pool slows down with the square of the requests queued in it
    # (1,200 at once took half a minute, all of it in the client).
    in_flight = [asyncio.Semaphore(64), asyncio.Semaphore(64)]

    async def post(i: int) -> httpx.Response:
        async with in_flight[i % 2]:
            return await clients[i % 2].post("/v1/events", json=event(payload={"i": i}))

    try:
        started = time.monotonic()
        responses = await asyncio.gather(*(post(i) for i in range(1200)))
        elapsed = time.monotonic() - started
    finally:
        for c in clients:
            await c.aclose()
    accepted = sum(r.status_code == 201 for r in responses)
    assert {r.status_code for r in responses} <= {201, 429}
    # All of the bucket is usable through either replica; at most the bucket plus what refilled while the test
    # ran gets through (how much of the refill is used depends on when the last requests happen to be served).
    most = limit + limit / 60 * elapsed
    assert 0.9 * limit <= accepted <= 1.1 * most, (accepted, limit, most)
    # Both replicas drew from the one bucket: each accepted some of its 600 and refused others, where a bucket of
    # 600 per replica would have taken all of them. How the bucket splits between the two depends on which one
    # happens to be faster, so the split itself is not asserted.
    by_replica = [[r.status_code for r in responses[i::2]] for i in range(2)]
    assert all(201 in seen and 429 in seen for seen in by_replica), [sorted(set(seen)) for seen in by_replica]


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(replicas: list[Server], pool: Pool) -> None:
    key = await new_key(pool, allowed_ips=["203.0.113.7/32"])
    cases = {
        "203.0.113.7": 201,
        "203.0.113.7, 127.0.0.1": 201,  # right-most untrusted hop
        "198.51.100.1, 203.0.113.7": 201,
        "203.0.113.7, 198.51.100.1": 403,
        "garbage": 403,
    }
    async with httpx.AsyncClient(base_url=replicas[0].url) as c:
        for forwarded, status in cases.items():
            response = await c.post(
                "/v1/events", json=event(), headers={"X-API-Key": key, "X-Forwarded-For": forwarded}
            )
            assert response.status_code == status, forwarded
        assert (await c.post("/v1/events", json=event(), headers={"X-API-Key": key})).status_code == 403
        # a proxy that adds its own line: the lines are one list, so the forged first line is not the client
        lines = [("X-API-Key", key), ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.1")]
        assert (await c.post("/v1/events", json=event(), headers=lines)).status_code == 403
