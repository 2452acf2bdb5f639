"""Every SQL statement of the inbox, one function each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec
from triggers_common.db import Conn

NOTIFY_CHANNEL = "triggers_inbox"


class EventRow(msgspec.Struct, frozen=True):
    """An inbox row. For a row with ``status == 'deleted'`` the content fields (source, event_type,
    payload, metadata) are None: callers answer 404 for those before reading them."""

    event_id: uuid.UUID
    created_at: datetime
    source: str
    event_type: str
    payload: msgspec.Raw
    status: str
    metadata: msgspec.Raw | None
    acknowledged_at: datetime | None


class NewRow(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    tenant_id: str
    created_at: datetime
    source: str
    event_type: str
    priority: str
    payload: bytes
    metadata: bytes | None


class InboxFilter(msgspec.Struct, frozen=True):
    source: str | None = None
    event_type: str | None = None


_COLUMNS = "event_id, created_at, source, event_type, payload, status, metadata, acknowledged_at"


def _row(record: asyncpg.Record) -> EventRow:
    return EventRow(*record.values())


async def insert_events(conn: Conn, rows: Sequence[NewRow]) -> int:
    """Insert a batch; ids already present (redeliveries, or deleted before they arrived) are skipped.

    The NOTIFY is delivered when the caller's transaction commits, waking read-your-writes waiters.
    """
    status = await conn.execute(
        """INSERT INTO events (event_id, tenant_id, created_at, source, event_type, priority, payload, metadata)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                                $6::text[], $7::json[], $8::jsonb[])
           ON CONFLICT (event_id) DO NOTHING""",
        [r.event_id for r in rows],
        [r.tenant_id for r in rows],
        [r.created_at for r in rows],
        [r.source for r in rows],
        [r.event_type for r in rows],
        [r.priority for r in rows],
        [r.payload for r in rows],
        [r.metadata for r in rows],
    )
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return int(status.rsplit(" ", 1)[1])


async def get_event(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID) -> EventRow | None:
    """The tenant's event in any status, 'deleted' included (so callers can tell gone from not yet here)."""
    record = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM events WHERE event_id = $1 AND tenant_id = $2",
        event_id,
        tenant_id,
    )
    return None if record is None else _row(record)


async def list_pending(
    pool: asyncpg.Pool,
    tenant_id: str,
    where: InboxFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[EventRow]:
    """Pending events oldest first, from the partial index; the statement text depends only on which
    filters are present, so each combination is one cached prepared statement."""
    clauses = ["tenant_id = $1", "status = 'pending'"]
    args: list[object] = [tenant_id]
    if where.source is not None:
        args.append(where.source)
        clauses.append(f"source = ${len(args)}")
    if where.event_type is not None:
        args.append(where.event_type)
        clauses.append(f"event_type = ${len(args)}")
    if after is not None:
        args.extend(after)
        clauses.append(f"(created_at, event_id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY created_at, event_id LIMIT ${len(args)}"
    )
    return [_row(r) for r in await pool.fetch(sql, *args)]


async def ack_event(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID) -> datetime | None:
    """Acknowledge a pending event; None when it is not pending (absent, foreign, acked or deleted)."""
    acked: datetime | None = await pool.fetchval(
        """UPDATE events SET status = 'acknowledged', acknowledged_at = now()
           WHERE event_id = $1 AND tenant_id = $2 AND status = 'pending'
           RETURNING acknowledged_at""",
        event_id,
        tenant_id,
    )
    return acked


async def event_state(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID) -> tuple[str, datetime | None] | None:
    record = await pool.fetchrow(
        "SELECT status, acknowledged_at FROM events WHERE event_id = $1 AND tenant_id = $2",
        event_id,
        tenant_id,
    )
    return None if record is None else (record["status"], record["acknowledged_at"])


async def delete_event(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID) -> None:
    """Mark an event deleted and drop its content."""
    await pool.execute(
        """UPDATE events SET status = 'deleted', payload = NULL, metadata = NULL, deleted_at = now()
           WHERE event_id = $1 AND tenant_id = $2 AND status <> 'deleted'""",
        event_id,
        tenant_id,
    )


async def delete_inflight_event(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID, created_at: datetime) -> None:
    """Delete an event that may still be on its way from Kafka: one upsert leaves a 'deleted' row either way.

    The unique key serialises it with the consumer's insert, so the late event can never slip in after.
    """
    await pool.execute(
        """INSERT INTO events (event_id, tenant_id, created_at, status, deleted_at)
           VALUES ($1, $2, $3, 'deleted', now())
           ON CONFLICT (event_id) DO UPDATE
             SET status = 'deleted', payload = NULL, metadata = NULL, deleted_at = now()
             WHERE events.tenant_id = EXCLUDED.tenant_id AND events.status <> 'deleted'""",
        event_id,
        tenant_id,
        created_at,
    )
