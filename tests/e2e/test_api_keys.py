"""API key management over HTTP and the CLI: create (shown once), list, get, change, revoke, rotate with a
transition, versions, the audit log; changes reach every replica of every service within 5 s; no key manages
another tenant's keys; bad input is a 4xx that changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from triggers_common.auth import SCOPES, create_key
from triggers_common.db import Pool

from tests.support import Server, event, wait_until

pytestmark = pytest.mark.e2e

PROPAGATION_S = 5.0  # the contract: every replica of every service within 5 s


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def admin(pool: Pool) -> tuple[str, str]:
    """An admin key of a brand-new tenant: (tenant, key)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn:
        return tenant, (await create_key(conn, tenant, SCOPES)).key


async def make_key(client: httpx.AsyncClient, admin_key: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json=body, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def ingest_status(url: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=url) as c:
        return (await c.post("/v1/events", json=event(), headers=auth(key))).status_code


async def inbox_status(url: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=url) as c:
        return (await c.get("/v1/inbox", headers=auth(key))).status_code


async def test_create_shows_the_key_once_and_it_works(client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
    tenant, admin_key = admin
    created = await make_key(client, admin_key, name="sync", scopes=["events:write"], rate_limit=600)
    assert created["key"].startswith("tr_") and len(created["key"]) == 46
    assert created["tenant_id"] == tenant and created["status"] == "active" and created["version"] == 1
    assert created["scopes"] == ["events:write"] and created["rate_limit"] == 600
    assert (await client.post("/v1/events", json=event(), headers=auth(created["key"]))).status_code == 201
    assert (await client.get("/v1/inbox", headers=auth(created["key"]))).status_code == 403, "no events:read"

    listed = (await client.get("/v1/api-keys", headers=auth(admin_key))).json()["api_keys"]
    assert created["key_id"] in {k["key_id"] for k in listed}
    got = (await client.get(f"/v1/api-keys/{created['key_id']}", headers=auth(admin_key))).json()
    text = json.dumps([listed, got])
    assert created["key"] not in text and "key" not in got, "the key is in the creating response only"


async def test_revocation_reaches_every_replica_of_every_service_within_5_s(
    client: httpx.AsyncClient, admin: tuple[str, str], replicas: list[Server], server: Server
) -> None:
    _, admin_key = admin
    key = (await make_key(client, admin_key))["key"]
    ingest_urls = [r.url for r in replicas] + [server.url]
    for url in ingest_urls:  # every process has the key cached
        assert await ingest_status(url, key) == 201
    assert await inbox_status(server.url, key) == 200

    revoked = await client.delete(f"/v1/api-keys/{(await key_id_of(client, admin_key, key))}", headers=auth(admin_key))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"

    async def refused_everywhere() -> bool:
        statuses = [await ingest_status(url, key) for url in ingest_urls] + [await inbox_status(server.url, key)]
        return all(status == 401 for status in statuses)

    await wait_until(refused_everywhere, timeout=PROPAGATION_S, what="the revoked key refused everywhere")


async def key_id_of(client: httpx.AsyncClient, admin_key: str, key: str) -> str:
    """The newest key's id (keys are created in the test just before)."""
    listed = (await client.get("/v1/api-keys", headers=auth(admin_key))).json()["api_keys"]
    return str(listed[-1]["key_id"])


async def test_scope_and_ip_changes_reach_the_other_replicas(
    client: httpx.AsyncClient, admin: tuple[str, str], replicas: list[Server]
) -> None:
    _, admin_key = admin
    created = await make_key(client, admin_key)
    for r in replicas:
        assert await ingest_status(r.url, created["key"]) == 201
    changed = await client.patch(
        f"/v1/api-keys/{created['key_id']}", json={"scopes": ["events:read"]}, headers=auth(admin_key)
    )
    assert changed.status_code == 200 and changed.json()["scopes"] == ["events:read"]

    async def forbidden() -> bool:
        return all([await ingest_status(r.url, created["key"]) == 403 for r in replicas])

    await wait_until(forbidden, timeout=PROPAGATION_S, what="the removed scope refused on every replica")
    fenced = await client.patch(
        f"/v1/api-keys/{created['key_id']}",
        json={"scopes": ["events:write"], "allowed_ips": ["192.0.2.0/24"]},
        headers=auth(admin_key),
    )
    assert fenced.json()["allowed_ips"] == ["192.0.2.0/24"]

    async def outside() -> bool:
        return all([await ingest_status(r.url, created["key"]) == 403 for r in replicas])

    await wait_until(outside, timeout=PROPAGATION_S, what="the IP allowlist applied on every replica")


async def test_rotation_keeps_both_keys_during_the_transition_and_only_the_new_one_after(
    client: httpx.AsyncClient, admin: tuple[str, str], pool: Pool, replicas: list[Server]
) -> None:
    _, admin_key = admin
    old = await make_key(client, admin_key, name="rotating one")
    rotated = await client.post(
        f"/v1/api-keys/{old['key_id']}/rotate", params={"transition_days": "2"}, headers=auth(admin_key)
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["key"] != old["key"] and new["version"] == 2 and new["name"] == "rotating one"
    assert new["previous"]["status"] == "rotating" and new["previous"]["expires_at"]
    for key in (old["key"], new["key"]):
        for r in replicas:
            assert await ingest_status(r.url, key) == 201, "both work during the transition"

    versions = (await client.get(f"/v1/api-keys/{new['key_id']}/versions", headers=auth(admin_key))).json()
    assert [(v["key_id"], v["version"]) for v in versions["versions"]] == [(old["key_id"], 1), (new["key_id"], 2)]
    again = await client.post(f"/v1/api-keys/{old['key_id']}/rotate", headers=auth(admin_key))
    assert again.status_code == 409, "only the latest version rotates"

    async with pool.acquire() as conn:  # the transition ends (two days pass in a moment)
        await conn.execute("UPDATE api_keys SET expires_at = now() WHERE key_id = $1", old["key_id"])
        await conn.execute("SELECT pg_notify('triggers_keys', $1)", old["key_id"])

    async def only_new() -> bool:
        olds = [await ingest_status(r.url, old["key"]) for r in replicas]
        news = [await ingest_status(r.url, new["key"]) for r in replicas]
        return olds == [401, 401] and news == [201, 201]

    await wait_until(only_new, timeout=PROPAGATION_S, what="only the new key after the transition")
    got = (await client.get(f"/v1/api-keys/{old['key_id']}", headers=auth(admin_key))).json()
    assert got["status"] == "expired"


async def test_no_key_manages_another_tenants_keys(
    client: httpx.AsyncClient, admin: tuple[str, str], pool: Pool
) -> None:
    _, admin_key = admin
    victim = await make_key(client, admin_key)
    other_tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn:
        intruder = (await create_key(conn, other_tenant, SCOPES)).key
    path = f"/v1/api-keys/{victim['key_id']}"
    for method, url, body in (
        ("GET", path, None),
        ("PATCH", path, {"scopes": ["admin"]}),
        ("DELETE", path, None),
        ("POST", f"{path}/rotate", None),
        ("GET", f"{path}/versions", None),
    ):
        response = await client.request(method, url, json=body, headers=auth(intruder))
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    escalate = await client.post("/v1/api-keys", json={"tenant": victim["tenant_id"]}, headers=auth(intruder))
    assert escalate.status_code == 404
    assert victim["key_id"] not in (await client.get("/v1/api-keys", headers=auth(intruder))).text
    assert victim["key_id"] not in (await client.get("/v1/audit-log", headers=auth(intruder))).text
    assert await ingest_status(str(client.base_url), victim["key"]) == 201, "the victim's key is untouched"


async def test_management_needs_the_admin_scope(client: httpx.AsyncClient, tenant_key: str) -> None:
    for method, url in (("GET", "/v1/api-keys"), ("POST", "/v1/api-keys"), ("GET", "/v1/audit-log")):
        response = await client.request(method, url, json={} if method == "POST" else None, headers=auth(tenant_key))
        assert response.status_code == 403, (method, url, response.text)
        assert response.json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["events:write", "root"]}, "body.scopes"),
        ({"scopes": []}, "body.scopes"),
        ({"allowed_ips": ["10.0.0.0/33"]}, "body.allowed_ips"),
        ({"rate_limit": 0}, "body.rate_limit"),
        ({"name": "x" * 101}, "body.name"),
        ({"require_signature": True}, "body.require_signature"),
        ({"signing_secret": "short"}, "body.signing_secret"),
        ({"key": "tr_mine"}, "body"),
        ({"name": "nul\u0000"}, "body.name"),
        ({"allowed_ips": []}, "body.allowed_ips"),
        ({"allowed_ips": ["fe80::1%eth0"]}, "body.allowed_ips"),
    ],
)
async def test_bad_key_requests_are_400_and_create_nothing(
    client: httpx.AsyncClient, admin: tuple[str, str], body: dict[str, Any], field: str
) -> None:
    _, admin_key = admin
    before = (await client.get("/v1/api-keys", headers=auth(admin_key))).json()["api_keys"]
    response = await client.post("/v1/api-keys", json=body, headers=auth(admin_key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["validation_errors"][0]["field"] == field
    assert (await client.get("/v1/api-keys", headers=auth(admin_key))).json()["api_keys"] == before


async def test_concurrent_rotations_make_one_next_version_and_changes_reach_every_version(
    client: httpx.AsyncClient, admin: tuple[str, str], replicas: list[Server]
) -> None:
    _, admin_key = admin
    old = await make_key(client, admin_key)
    results = await asyncio.gather(
        *(client.post(f"/v1/api-keys/{old['key_id']}/rotate", headers=auth(admin_key)) for _ in range(4))
    )
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
    new = next(r.json() for r in results if r.status_code == 201)
    versions = (await client.get(f"/v1/api-keys/{old['key_id']}/versions", headers=auth(admin_key))).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]

    narrowed = await client.patch(
        f"/v1/api-keys/{new['key_id']}", json={"scopes": ["events:read"]}, headers=auth(admin_key)
    )
    assert narrowed.status_code == 200

    async def both_narrowed() -> bool:
        return all([await ingest_status(r.url, k) == 403 for r in replicas for k in (old["key"], new["key"])])

    await wait_until(both_narrowed, timeout=PROPAGATION_S, what="the rotating version narrowed too")


async def test_odd_key_ids_and_paging_values_are_4xx(client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
    _, admin_key = admin
    for key_id in ("key_%00", "nope", "key_" + "a" * 100):
        response = await client.get(f"/v1/api-keys/{key_id}", headers=auth(admin_key))
        assert response.status_code == 404, (key_id, response.text)
    huge = await client.get("/v1/audit-log", params={"before": "9" * 5000}, headers=auth(admin_key))
    assert huge.status_code == 422
    bad_days = await client.post("/v1/api-keys/key_0000000000000000/rotate?transition_days=91", headers=auth(admin_key))
    assert bad_days.status_code == 422


async def test_the_audit_log_records_who_did_what(client: httpx.AsyncClient, admin: tuple[str, str]) -> None:
    _, admin_key = admin
    created = await make_key(client, admin_key, name="audited")
    await client.patch(f"/v1/api-keys/{created['key_id']}", json={"signing_secret": "s" * 32}, headers=auth(admin_key))
    await client.delete(f"/v1/api-keys/{created['key_id']}", headers=auth(admin_key))
    log = (await client.get("/v1/audit-log", params={"limit": "2"}, headers=auth(admin_key))).json()
    assert [(e["key_id"], e["action"]) for e in log["entries"]] == [
        (created["key_id"], "revoked"),
        (created["key_id"], "updated"),
    ]
    assert log["entries"][1]["changes"] == {"signing_secret": "changed"}, "never the secret itself"
    admin_id = (await client.get("/v1/api-keys", headers=auth(admin_key))).json()["api_keys"][0]["key_id"]
    assert {e["actor"] for e in log["entries"]} == {admin_id}
    older = await client.get("/v1/audit-log", params={"before": str(log["next_before"])}, headers=auth(admin_key))
    assert (created["key_id"], "created") in [(e["key_id"], e["action"]) for e in older.json()["entries"]]


async def test_operator_cli_lists_and_revokes_without_a_server(
    client: httpx.AsyncClient, admin: tuple[str, str], test_env: dict[str, str]
) -> None:
    tenant, admin_key = admin
    created = await make_key(client, admin_key)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**test_env, "PATH": ""}
        return subprocess.run([sys.executable, "-m", "triggers.cli", *args], env=env, capture_output=True, text=True)

    listed = await asyncio.to_thread(cli, "keys", "list", "--tenant", tenant, "--json")
    assert listed.returncode == 0, listed.stderr
    assert created["key_id"] in {k["key_id"] for k in json.loads(listed.stdout)}
    assert created["key"] not in listed.stdout
    revoked = await asyncio.to_thread(cli, "keys", "revoke", created["key_id"])
    assert revoked.returncode == 0, revoked.stderr

    async def refused() -> bool:
        return await ingest_status(str(client.base_url), created["key"]) == 401

    await wait_until(refused, timeout=PROPAGATION_S, what="the key revoked by the CLI refused")
