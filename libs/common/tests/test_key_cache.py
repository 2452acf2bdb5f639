"""The key cache with an in-memory stand-in for the pool (pure unit test)."""

import asyncio
from typing import Any

import asyncpg
import pytest
from triggers_common.auth import KeyCache, hash_key
from triggers_common.errors import ServiceUnavailable, Unauthorized
from triggers_common.settings import DEV_API_KEY, Settings


class FakePool:
    def __init__(self, rows: dict[bytes, dict[str, Any]]) -> None:
        self.rows = rows
        self.queries = 0
        self.down = False

    async def fetchrow(self, _sql: str, digest: bytes) -> dict[str, Any] | None:
        self.queries += 1
        await asyncio.sleep(0)
        if self.down:
            raise asyncpg.InterfaceError("connection lost")
        return self.rows.get(digest)


ROW = {
    "key_id": "key_1",
    "tenant_id": "acme",
    "scopes": ["events:read"],
    "rate_limit": None,
    "tenant_rate_limit": None,
    "allowed_ips": None,
    "signing_secret": None,
    "require_signature": False,
    "expires_at": None,
}


def cache(pool: FakePool, **overrides: Any) -> KeyCache:
    settings = Settings(
        dev_mode=overrides.pop("dev_mode", True), secret_key="s", key_cache_ttl_s=overrides.pop("ttl", 60.0)
    )
    return KeyCache(settings, pool)  # type: ignore[arg-type]


async def test_known_key_resolves_once_per_ttl_even_when_concurrent() -> None:
    pool = FakePool({hash_key("tr_abc"): ROW})
    keys = cache(pool)
    principals = await asyncio.gather(*(keys.authenticate("tr_abc") for _ in range(20)))
    assert {p.tenant_id for p in principals} == {"acme"}
    assert pool.queries == 1


async def test_missing_and_unknown_keys_are_401() -> None:
    keys = cache(FakePool({}))
    with pytest.raises(Unauthorized, match="Missing X-API-Key header"):
        await keys.authenticate(None)
    with pytest.raises(Unauthorized):
        await keys.authenticate("tr_unknown")


async def test_scope_is_enforced() -> None:
    principal = await cache(FakePool({hash_key("tr_abc"): ROW})).authenticate("tr_abc")
    principal.require("events:read")
    with pytest.raises(Exception, match="events:write"):
        principal.require("events:write")


async def test_dev_key_is_refused_outside_dev_mode_even_if_stored() -> None:
    pool = FakePool({hash_key(DEV_API_KEY): ROW})
    with pytest.raises(Unauthorized):
        await cache(pool, dev_mode=False).authenticate(DEV_API_KEY)
    assert pool.queries == 0
    assert (await cache(pool, dev_mode=True).authenticate(DEV_API_KEY)).tenant_id == "acme"


async def test_store_outage_keeps_known_keys_and_refuses_unknown_ones() -> None:
    pool = FakePool({hash_key("tr_abc"): ROW})
    keys = cache(pool, ttl=0.0)
    await keys.authenticate("tr_abc")
    pool.down = True
    assert (await keys.authenticate("tr_abc")).key_id == "key_1"
    with pytest.raises(ServiceUnavailable):
        await keys.authenticate("tr_never_seen")
