"""Every SQL statement of the analytics component."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec
from triggers_common.db import Conn

from triggers_analytics.aggregate import EventState, StatusDeltas


class CountedEvent(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    tenant_id: str
    hour: datetime
    source: str
    event_type: str


async def count_events(conn: Conn, events: Sequence[CountedEvent]) -> int:
    """Add the events not counted before to their hours; how many were new. ``events`` hold each id once."""
    ordered = sorted(events, key=lambda e: (e.tenant_id, e.hour, e.source, e.event_type))
    new: int = await conn.fetchval(
        """WITH batch AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
               AS b (event_id, tenant_id, hour, source, event_type)),
           new AS (
             INSERT INTO analytics_counted (event_id) SELECT event_id FROM batch
             ON CONFLICT DO NOTHING RETURNING event_id),
           counted AS (
             INSERT INTO analytics_hourly AS h (tenant_id, hour, source, event_type, events)
             SELECT tenant_id, hour, source, event_type, count(*) FROM batch JOIN new USING (event_id)
             GROUP BY tenant_id, hour, source, event_type
             ORDER BY tenant_id, hour, source, event_type
             ON CONFLICT (tenant_id, hour, source, event_type) DO UPDATE SET events = h.events + EXCLUDED.events)
           SELECT count(*) FROM new""",
        [e.event_id for e in ordered],
        [e.tenant_id for e in ordered],
        [e.hour for e in ordered],
        [e.source for e in ordered],
        [e.event_type for e in ordered],
    )
    return new


async def lock_event_states(conn: Conn, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventState]:
    """What was already counted for these events, locked until the transaction ends. An event seen for the first
    time gets its (empty) row first, so that two transactions handling it at once (a partition moving between
    consumers mid-batch) wait for each other instead of both counting it."""
    ids = sorted(set(event_ids))
    await conn.execute(
        "INSERT INTO analytics_event_status (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", ids
    )
    rows = await conn.fetch(
        """SELECT event_id, acknowledged, deleted FROM analytics_event_status
           WHERE event_id = ANY($1::uuid[]) ORDER BY event_id FOR UPDATE""",
        ids,
    )
    return {r["event_id"]: EventState(r["acknowledged"], r["deleted"]) for r in rows}


async def save_status_deltas(conn: Conn, deltas: StatusDeltas) -> None:
    """Write what a batch of transitions changed: event states, status counters and the latency histogram."""
    if deltas.states:
        ids = sorted(deltas.states)
        await conn.execute(
            """INSERT INTO analytics_event_status AS s (event_id, acknowledged, deleted)
               SELECT * FROM unnest($1::uuid[], $2::boolean[], $3::boolean[])
               ON CONFLICT (event_id) DO UPDATE SET acknowledged = EXCLUDED.acknowledged, deleted = EXCLUDED.deleted""",
            ids,
            [deltas.states[i].acknowledged for i in ids],
            [deltas.states[i].deleted for i in ids],
        )
    hours = sorted(set(deltas.acknowledged) | set(deltas.deleted))
    if hours:
        await conn.execute(
            """INSERT INTO analytics_status_hourly AS s (tenant_id, hour, acknowledged, deleted)
               SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[])
               ON CONFLICT (tenant_id, hour) DO UPDATE
                 SET acknowledged = s.acknowledged + EXCLUDED.acknowledged, deleted = s.deleted + EXCLUDED.deleted""",
            [tenant for tenant, _ in hours],
            [hour for _, hour in hours],
            [deltas.acknowledged[h] for h in hours],
            [deltas.deleted[h] for h in hours],
        )
    buckets = sorted(deltas.latency)
    if buckets:
        await conn.execute(
            """INSERT INTO analytics_ack_latency AS l (tenant_id, hour, bucket, acks)
               SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::smallint[], $4::bigint[])
               ON CONFLICT (tenant_id, hour, bucket) DO UPDATE SET acks = l.acks + EXCLUDED.acks""",
            [b[0] for b in buckets],
            [b[1] for b in buckets],
            [b[2] for b in buckets],
            [deltas.latency[b] for b in buckets],
        )


class HourRow(msgspec.Struct, frozen=True):
    hour: datetime
    source: str
    event_type: str
    events: int


async def hourly(pool: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime) -> list[HourRow]:
    """The tenant's counts per hour, source and type, for hours in [start, end)."""
    rows = await pool.fetch(
        """SELECT hour, source, event_type, events FROM analytics_hourly
           WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour""",
        tenant_id,
        start,
        end,
    )
    return [HourRow(r[0], r[1], r[2], r[3]) for r in rows]


async def status_totals(pool: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(acknowledged, deleted without an ack) of the events created in [start, end)."""
    row = await pool.fetchrow(
        """SELECT coalesce(sum(acknowledged), 0)::bigint, coalesce(sum(deleted), 0)::bigint
           FROM analytics_status_hourly WHERE tenant_id = $1 AND hour >= $2 AND hour < $3""",
        tenant_id,
        start,
        end,
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def ack_latency(pool: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime) -> dict[int, int]:
    """The ack-latency histogram (bucket -> acks) of the events created in [start, end)."""
    rows = await pool.fetch(
        """SELECT bucket, sum(acks)::bigint FROM analytics_ack_latency
           WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 GROUP BY bucket""",
        tenant_id,
        start,
        end,
    )
    return {r[0]: int(r[1]) for r in rows}


async def webhook_outcomes(pool: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime) -> tuple[int, int, int]:
    """(delivered, failed, retrying) of the tenant's webhook deliveries created in [start, end), as they stand now.

    Read from the webhooks component's deliveries, one row per (webhook, event): the figures are exact and
    always current, e.g. a failed delivery retried by hand and then delivered counts as delivered.
    """
    try:
        row = await pool.fetchrow(
            """SELECT count(*) FILTER (WHERE d.status = 'succeeded'),
                      count(*) FILTER (WHERE d.status = 'failed'),
                      count(*) FILTER (WHERE d.status = 'pending' AND d.attempts > 0)
               FROM webhooks w JOIN deliveries d USING (webhook_id)
               WHERE w.tenant_id = $1 AND d.created_at >= $2 AND d.created_at < $3""",
            tenant_id,
            start,
            end,
        )
    except asyncpg.UndefinedTableError:  # a database the webhooks component never started on
        return 0, 0, 0
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


PURGED_TABLES = ("analytics_counted", "analytics_event_status")
"""The tables keyed by event id (UUIDv7, so ``event_id < bound`` selects the events created before a time)."""


async def purge_before(pool: asyncpg.Pool, table: str, before: uuid.UUID, limit: int) -> int:
    """Forget up to ``limit`` rows of ``table`` (one of PURGED_TABLES) whose event id is below ``before``, the
    smallest UUIDv7 of the cut-off time."""
    assert table in PURGED_TABLES
    status: str = await pool.execute(
        f"""DELETE FROM {table} WHERE event_id = ANY(ARRAY(
             SELECT event_id FROM {table} WHERE event_id < $1 ORDER BY event_id LIMIT $2))""",
        before,
        limit,
    )
    return int(status.split()[-1])
