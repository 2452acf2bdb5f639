"""Every SQL statement of the inbox, one function each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec
from triggers_common.db import Conn

NOTIFY_CHANNEL = "triggers_inbox"
_MAX_NOTIFY_PAYLOAD = 7900  # Postgres caps a payload at 8,000 bytes


def encode_tenants(tenants: set[str]) -> str:
    """The NOTIFY payload naming the tenants a batch wrote; empty (wake everyone) if they do not fit."""
    payload = msgspec.json.encode(sorted(tenants)).decode()
    return payload if len(payload) <= _MAX_NOTIFY_PAYLOAD else ""


def decode_tenants(payload: str) -> list[str] | None:
    """The tenants named by :func:`encode_tenants`; None means every tenant."""
    if not payload:
        return None
    try:
        return msgspec.json.decode(payload, type=list[str])
    except msgspec.DecodeError:
        return None


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
    """What GET /v1/inbox (and a lease) selects among pending events; every field narrows the set."""

    source: str | None = None
    event_type: str | None = None
    priority: str | None = None
    created_after: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Inclusive."""
    metadata: tuple[bytes, ...] = ()
    """JSON objects of one top-level field; an event matches if its metadata contains any of them."""


_COLUMNS = "event_id, created_at, source, event_type, payload, status, metadata, acknowledged_at"


def _row(record: asyncpg.Record) -> EventRow:
    return EventRow(*record.values())


async def insert_events(conn: Conn, rows: Sequence[NewRow]) -> int:
    """Insert a batch; ids already present (redeliveries, or deleted before they arrived) are skipped.

    One exception: a tombstone another tenant left for this id (a delete of an id it does not own, made
    while the event was in flight) never hides the owner's event, which replaces it. The NOTIFY is delivered
    when the caller's transaction commits, waking the waiters of the tenants written.
    """
    first: dict[uuid.UUID, NewRow] = {}
    for row in rows:
        first.setdefault(row.event_id, row)  # an event re-sent after a 503 may come twice in one batch
    unique = list(first.values())
    status = await conn.execute(
        """INSERT INTO events (event_id, tenant_id, created_at, source, event_type, priority, payload, metadata)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                                $6::text[], $7::json[], $8::jsonb[])
           ON CONFLICT (event_id) DO UPDATE
             SET tenant_id = EXCLUDED.tenant_id, created_at = EXCLUDED.created_at, source = EXCLUDED.source,
                 event_type = EXCLUDED.event_type, priority = EXCLUDED.priority, payload = EXCLUDED.payload,
                 metadata = EXCLUDED.metadata, status = 'pending', deleted_at = NULL,
                 persisted_at = clock_timestamp()
             WHERE events.tenant_id <> EXCLUDED.tenant_id AND events.source IS NULL""",
        [r.event_id for r in unique],
        [r.tenant_id for r in unique],
        [r.created_at for r in unique],
        [r.source for r in unique],
        [r.event_type for r in unique],
        [r.priority for r in unique],
        [r.payload for r in unique],
        [r.metadata for r in unique],
    )
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, encode_tenants({r.tenant_id for r in unique}))
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
    for column, op, value in (
        ("source", "=", where.source),
        ("event_type", "=", where.event_type),
        ("priority", "=", where.priority),
        ("created_at", ">=", where.created_after),
        ("created_at", "<=", where.created_before),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} {op} ${len(args)}")
    if where.metadata:
        alternatives = []
        for candidate in where.metadata:
            args.append(candidate)
            alternatives.append(f"metadata @> ${len(args)}::jsonb")
        clauses.append(f"({' OR '.join(alternatives)})")
    if after is not None:
        args.extend(after)
        clauses.append(f"(created_at, event_id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY created_at, event_id LIMIT ${len(args)}"
    )
    return [_row(r) for r in await pool.fetch(sql, *args)]


async def ack_events(
    pool: asyncpg.Pool, tenant_id: str, event_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, datetime | None]]:
    """Acknowledge the tenant's pending events among ``event_ids``, in one statement.

    For each id found: ``("acked", at)`` if this call acknowledged it, else its status and acknowledged_at
    as they were (``"pending"`` means another statement held it meanwhile: try again). Absent and foreign
    ids are missing from the answer.
    """
    records = await pool.fetch(
        """WITH acked AS (
             UPDATE events SET status = 'acknowledged', acknowledged_at = now()
             WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status = 'pending'
             RETURNING event_id, acknowledged_at)
           SELECT event_id, 'acked' AS outcome, acknowledged_at FROM acked
           UNION ALL
           SELECT event_id, status, acknowledged_at FROM events
           WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND event_id NOT IN (SELECT event_id FROM acked)""",
        tenant_id,
        list(event_ids),
    )
    return {r["event_id"]: (r["outcome"], r["acknowledged_at"]) for r in records}


async def delete_events(
    pool: asyncpg.Pool,
    tenant_id: str,
    event_ids: Sequence[uuid.UUID],
    in_flight: Sequence[tuple[uuid.UUID, datetime]],
) -> None:
    """Mark the tenant's events deleted and drop their content: one UPDATE, and one upsert only for ids that
    may still be on their way from Kafka (``in_flight``: recent UUIDv7s and their instants) and are not here.

    The upsert leaves a 'deleted' row either way; the unique key serialises it with the consumer's insert, so
    the late event can never slip in after. A foreign tenant's row is left alone.
    """
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetch(
            """UPDATE events SET status = 'deleted', payload = NULL, metadata = NULL, deleted_at = now()
               WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status <> 'deleted'
               RETURNING event_id""",
            tenant_id,
            list(event_ids),
        )
        done = {r["event_id"] for r in deleted}
        rest = [(event_id, born) for event_id, born in in_flight if event_id not in done]
        if rest:
            await conn.execute(
                """INSERT INTO events (event_id, tenant_id, created_at, status, deleted_at)
                   SELECT event_id, $1, created_at, 'deleted', now()
                   FROM unnest($2::uuid[], $3::timestamptz[]) AS late (event_id, created_at)
                   ON CONFLICT (event_id) DO UPDATE
                     SET status = 'deleted', payload = NULL, metadata = NULL, deleted_at = now()
                     WHERE events.tenant_id = EXCLUDED.tenant_id AND events.status <> 'deleted'""",
                tenant_id,
                [event_id for event_id, _ in rest],
                [born for _, born in rest],
            )
