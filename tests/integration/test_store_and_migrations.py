"""Migrations, keys and the inbox's own statements against the real Postgres."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest
from triggers_common.auth import create_key, hash_key, sync_dev_key
from triggers_common.db import Pool, migrate
from triggers_common.models import new_event_id
from triggers_common.runtime import Runtime, migration_sources
from triggers_common.settings import DEV_API_KEY, Settings
from triggers_inbox import store

pytestmark = pytest.mark.integration


async def fresh_database(pool: Pool, settings: Settings) -> tuple[str, str]:
    name = f"triggers_mig_{uuid.uuid4().hex[:8]}"
    await pool.execute(f'CREATE DATABASE "{name}"')
    return name, settings.database_url.rsplit("/", 1)[0] + f"/{name}"


async def test_migrations_apply_once_even_when_two_starts_race(pool: Pool, settings: Settings) -> None:
    from triggers.server import TARGETS

    name, dsn = await fresh_database(pool, settings)
    try:
        sources = migration_sources([factory(Runtime(settings)) for factory in TARGETS.values()])
        a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        first, second = await asyncio.gather(migrate(a, sources), migrate(b, sources))
        every_file = sorted(
            f"{c}/{f.name}" for c, folder in sources for f in folder.iterdir() if f.name.endswith(".sql")
        )
        assert {"common/0001_tenants_and_keys.sql", "inbox/0001_events.sql"} <= set(every_file)
        assert sorted(first + second) == every_file  # each file applied once, by one of the two
        assert await migrate(a, sources) == []
        applied = await a.fetchval("SELECT count(*) FROM schema_migrations")
        assert applied == len(every_file)
        await a.close()
        await b.close()
    finally:
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_keys_are_stored_only_as_hashes(pool: Pool) -> None:
    async with pool.acquire() as conn:
        created = await create_key(conn, "hash-check", scopes=["events:read"])
    assert created.key.startswith("tr_") and len(created.key) == 46
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", created.key_id)
    assert row["key_hash"] == hash_key(created.key)
    assert created.key not in str(dict(row))
    with pytest.raises(ValueError, match="unknown scopes"):
        async with pool.acquire() as conn:
            await create_key(conn, "hash-check", scopes=["root"])


async def test_dev_key_exists_only_in_dev_mode(pool: Pool) -> None:
    lookup = "SELECT status FROM api_keys WHERE key_hash = $1"
    async with pool.acquire() as conn:
        await sync_dev_key(conn, dev_mode=True)
        assert await conn.fetchval(lookup, hash_key(DEV_API_KEY)) == "active"
        await sync_dev_key(conn, dev_mode=False)
        assert await conn.fetchval(lookup, hash_key(DEV_API_KEY)) == "revoked"
        await sync_dev_key(conn, dev_mode=True)
        assert await conn.fetchval(lookup, hash_key(DEV_API_KEY)) == "active"


def row(tenant: str) -> store.NewRow:
    event_id, created = new_event_id()
    return store.NewRow(event_id, tenant, created, "s", "t", "normal", b'{"a":1}', None)


async def test_delete_before_arrival_keeps_the_late_event_gone(pool: Pool) -> None:
    tenant = f"late-{uuid.uuid4().hex[:6]}"
    late, other = row(tenant), row(tenant)
    await store.delete_events(pool, tenant, [late.event_id], [(late.event_id, late.created_at)])
    async with pool.acquire() as conn, conn.transaction():
        assert await store.insert_events(conn, [late, other]) == 1
    assert (await store.get_event(pool, tenant, late.event_id)).status == "deleted"  # type: ignore[union-attr]
    pending = await store.list_pending(pool, tenant, store.InboxFilter(), None, 10)
    assert [r.event_id for r in pending] == [other.event_id]


async def test_a_foreign_delete_before_arrival_does_not_hide_the_owners_event(pool: Pool) -> None:
    owner, intruder = f"own-{uuid.uuid4().hex[:6]}", f"int-{uuid.uuid4().hex[:6]}"
    event = row(owner)
    await store.delete_events(pool, intruder, [event.event_id], [(event.event_id, event.created_at)])
    async with pool.acquire() as conn, conn.transaction():
        assert await store.insert_events(conn, [event, event]) == 1  # the same record twice in one batch, too
    assert (await store.get_event(pool, owner, event.event_id)).status == "pending"  # type: ignore[union-attr]
    assert await store.get_event(pool, intruder, event.event_id) is None


async def test_the_owners_delete_holds_when_another_tenant_deleted_the_id_first(pool: Pool) -> None:
    owner, intruder, third = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("own", "int", "thr"))
    event, bystander = row(owner), row(owner)
    for tenant in (intruder, owner, owner):  # the intruder's marker first; the owner's delete, twice
        await store.delete_events(pool, tenant, [event.event_id], [(event.event_id, event.created_at)])
    await store.delete_events(pool, third, [bystander.event_id], [(bystander.event_id, bystander.created_at)])
    await store.delete_events(pool, intruder, [bystander.event_id], [(bystander.event_id, bystander.created_at)])
    async with pool.acquire() as conn, conn.transaction():
        assert await store.insert_events(conn, [event, bystander]) == 1  # the bystander, not deleted by its owner
    gone = await store.get_event(pool, owner, event.event_id)
    assert gone is not None and gone.status == "deleted" and gone.source == "s"  # the owner's now
    assert await store.get_event(pool, intruder, event.event_id) is None
    assert (await store.get_event(pool, owner, bystander.event_id)).status == "pending"  # type: ignore[union-attr]
    assert await store.get_event(pool, third, bystander.event_id) is None
    assert await store.get_event(pool, intruder, bystander.event_id) is None


async def test_redelivered_batch_inserts_nothing_new(pool: Pool) -> None:
    tenant = f"redeliver-{uuid.uuid4().hex[:6]}"
    batch = [row(tenant) for _ in range(50)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await store.insert_events(conn, batch) == 50
        async with conn.transaction():
            assert await store.insert_events(conn, batch) == 0


async def test_foreign_tenant_cannot_delete_in_flight_event(pool: Pool) -> None:
    owner, intruder = f"own-{uuid.uuid4().hex[:6]}", f"int-{uuid.uuid4().hex[:6]}"
    event = row(owner)
    async with pool.acquire() as conn, conn.transaction():
        await store.insert_events(conn, [event])
    await store.delete_events(pool, intruder, [event.event_id], [(event.event_id, event.created_at)])
    await store.delete_events(pool, intruder, [event.event_id], [])
    assert (await store.get_event(pool, owner, event.event_id)).status == "pending"  # type: ignore[union-attr]
    assert await store.get_event(pool, intruder, event.event_id) is None
    assert await store.ack_events(pool, intruder, [event.event_id]) == {}


async def test_pending_page_uses_the_partial_index(pool: Pool) -> None:
    plan = "\n".join(
        r[0]
        for r in await pool.fetch(
            "EXPLAIN SELECT event_id FROM events WHERE tenant_id = 'x' AND status = 'pending' "
            "AND (created_at, event_id) > (now() - interval '1 day', gen_random_uuid()) "
            "ORDER BY created_at, event_id LIMIT 50"
        )
    )
    # On a near-empty table the planner may as well take another pending index (their later columns serve
    # the created_at bound too): any of them, never a scan of the whole table.
    assert re.search(r"Index (Only )?Scan (on|using) events_pending(_\w+)?\s", plan), plan
