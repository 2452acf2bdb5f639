"""Every SQL statement of the inbox, one function each."""

from __future__ import annotations

import time
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
    """An inbox row. For a row with ``status == 'deleted'`` payload and metadata are None (and source and
    event_type too, for a delete marker whose event has not arrived): callers answer 404 for those before
    reading them."""

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


def _columns(table: str = "") -> str:
    """The columns of :class:`EventRow`. Metadata as sent (``metadata_sent``), or its jsonb form for rows stored
    before that was kept."""
    t = f"{table}." if table else ""
    return (
        f"{t}event_id, {t}created_at, {t}source, {t}event_type, {t}payload, {t}status, "
        f"coalesce({t}metadata_sent, {t}metadata::json) AS metadata, {t}acknowledged_at"
    )


_COLUMNS = _columns()


def _row(record: asyncpg.Record) -> EventRow:
    return EventRow(*record.values())


async def insert_events(conn: Conn, rows: Sequence[NewRow]) -> int:
    """Insert a batch; how many rows became pending. Ids already present (redeliveries, or deleted before they
    arrived) are skipped.

    Two exceptions. A tombstone only other tenants left for this id (deletes of an id they do not own, made
    while the event was in flight) never hides the owner's event, which replaces it. And a tombstone the
    owner left too (as its first deleter or in ``deleted_by``), once its event arrives, becomes an ordinary
    deleted row of the owner (see ``_deleted_on_arrival``), so the delete is published like any other.
    The NOTIFY is delivered when the caller's transaction commits, waking the waiters of the tenants written.
    """
    first: dict[uuid.UUID, NewRow] = {}
    for row in rows:
        first.setdefault(row.event_id, row)  # an event re-sent after a 503 may come twice in one batch
    unique = sorted(first.values(), key=lambda r: r.event_id)  # one lock order for every writer of these rows
    status = await conn.execute(
        """INSERT INTO events (event_id, tenant_id, created_at, source, event_type, priority, payload, metadata,
                              metadata_sent)
           SELECT e, t, c, s, et, p, pl, m::jsonb, m
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::json[],
                       $8::json[]) AS row (e, t, c, s, et, p, pl, m)
           ON CONFLICT (event_id) DO UPDATE
             SET tenant_id = EXCLUDED.tenant_id, created_at = EXCLUDED.created_at, source = EXCLUDED.source,
                 event_type = EXCLUDED.event_type, priority = EXCLUDED.priority, payload = EXCLUDED.payload,
                 metadata = EXCLUDED.metadata, metadata_sent = EXCLUDED.metadata_sent, status = 'pending',
                 deleted_at = NULL, deleted_by = NULL,
                 persisted_at = clock_timestamp()
             WHERE events.tenant_id <> EXCLUDED.tenant_id AND events.source IS NULL
               AND NOT EXCLUDED.tenant_id = ANY(coalesce(events.deleted_by, '{}'))""",
        [r.event_id for r in unique],
        [r.tenant_id for r in unique],
        [r.created_at for r in unique],
        [r.source for r in unique],
        [r.event_type for r in unique],
        [r.priority for r in unique],
        [r.payload for r in unique],
        [r.metadata for r in unique],
    )
    written = int(status.rsplit(" ", 1)[1])
    if written < len(unique):  # some were here already: redeliveries, or events their tenant deleted in flight
        await _deleted_on_arrival(conn, unique)
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, encode_tenants({r.tenant_id for r in unique}))
    return written


async def _deleted_on_arrival(conn: Conn, rows: Sequence[NewRow]) -> None:
    """Fill in the tombstones the rows' own tenants left while the events were in flight (see ``delete_events``)
    and publish those deletes now: until the event arrived, the id could not be told to be the tenant's. Such a
    row then is the owner's and looks like any deleted one (content dropped, source and type kept), so a
    redelivery finds nothing left to do and the delete is published once. Its time is the tombstone's: the
    first delete of the id, which may have been another tenant's."""
    await conn.execute(
        """WITH arrived AS (
             UPDATE events e SET tenant_id = b.tenant_id, source = b.source, event_type = b.event_type,
                                 priority = b.priority, deleted_by = NULL
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
               AS b (event_id, tenant_id, source, event_type, priority)
             WHERE e.event_id = b.event_id AND e.status = 'deleted' AND e.source IS NULL
               AND (e.tenant_id = b.tenant_id OR b.tenant_id = ANY(coalesce(e.deleted_by, '{}')))
             RETURNING e.event_id, e.tenant_id, e.deleted_at)
           INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
           SELECT event_id, tenant_id, 'deleted', deleted_at FROM arrived""",
        [r.event_id for r in rows],
        [r.tenant_id for r in rows],
        [r.source for r in rows],
        [r.event_type for r in rows],
        [r.priority for r in rows],
    )


async def get_event(pool: asyncpg.Pool, tenant_id: str, event_id: uuid.UUID) -> EventRow | None:
    """The tenant's event in any status, 'deleted' included (so callers can tell gone from not yet here)."""
    record = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM events WHERE event_id = $1 AND tenant_id = $2",
        event_id,
        tenant_id,
    )
    return None if record is None else _row(record)


def _filter_clauses(where: InboxFilter, args: list[object]) -> list[str]:
    """The WHERE clauses of ``where`` (appending their values to ``args``): pending events that no live lease
    holds. The statement text depends only on which filters are present, so each combination is one cached
    prepared statement, served by the partial index of its leading filter."""
    clauses = ["status = 'pending'", "(leased_until IS NULL OR leased_until <= now())"]
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
    return clauses


def _after(after: tuple[datetime, uuid.UUID] | None, args: list[object]) -> list[str]:
    if after is None:
        return []
    args.extend(after)
    return [f"(created_at, event_id) > (${len(args) - 1}, ${len(args)})"]


async def list_pending(
    pool: asyncpg.Pool,
    tenant_id: str,
    where: InboxFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[EventRow]:
    """Pending events that no live lease holds, oldest first, after the keyset cursor ``after``."""
    args: list[object] = [tenant_id]
    clauses = ["tenant_id = $1", *_filter_clauses(where, args), *_after(after, args)]
    args.append(limit)
    sql = (
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY created_at, event_id LIMIT ${len(args)}"
    )
    return [_row(r) for r in await pool.fetch(sql, *args)]


class AckOutcome(msgspec.Struct, frozen=True):
    outcome: str
    """``acked`` if this call acknowledged the event, else its status as it was."""
    acknowledged_at: datetime | None
    created_at: datetime
    lease_id: uuid.UUID | None
    """The lease holding the event (for a ``pending`` outcome)."""


async def ack_events(
    pool: asyncpg.Pool, tenant_id: str, event_ids: Sequence[uuid.UUID], lease_id: uuid.UUID | None = None
) -> dict[uuid.UUID, AckOutcome]:
    """Acknowledge the tenant's pending or quarantined events among ``event_ids`` (only those ``lease_id``
    holds, if given), in one statement that also records the transitions in the status outbox.

    Absent and foreign ids are missing from the answer. A ``pending`` outcome without a lease condition means
    another statement held the row meanwhile (try again); with one, that the lease does not hold the event.
    """
    records = await pool.fetch(
        """WITH acked AS (
             UPDATE events SET status = 'acknowledged', acknowledged_at = now(), lease_id = NULL, leased_until = NULL
             WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status IN ('pending', 'quarantined')
               AND ($3::uuid IS NULL OR lease_id = $3)
             RETURNING event_id, acknowledged_at, created_at),
           logged AS (
             INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
             SELECT event_id, $1, 'acknowledged', acknowledged_at FROM acked)
           SELECT event_id, 'acked' AS outcome, acknowledged_at, created_at, NULL::uuid AS lease_id FROM acked
           UNION ALL
           SELECT event_id, status, acknowledged_at, created_at, lease_id FROM events
           WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND event_id NOT IN (SELECT event_id FROM acked)""",
        tenant_id,
        list(event_ids),
        lease_id,
    )
    return {r["event_id"]: AckOutcome(*list(r.values())[1:]) for r in records}


async def delete_events(
    pool: asyncpg.Pool,
    tenant_id: str,
    event_ids: Sequence[uuid.UUID],
    in_flight: Sequence[tuple[uuid.UUID, datetime]],
) -> None:
    """Mark the tenant's events deleted and drop their content: one UPDATE, and one upsert only for ids that
    may still be on their way from Kafka (``in_flight``: recent UUIDv7s and their instants) and are not here.

    The upsert leaves a 'deleted' row either way; the unique key serialises it with the consumer's insert, so
    the late event can never slip in after. A foreign tenant's row is left alone; if it is a marker, this
    tenant is added to its ``deleted_by``, so the delete holds if the event turns out to be this tenant's.
    Events that were here get a 'deleted' status record now; a marker for an id not seen yet gets it when its
    event arrives, if the event is the tenant's (``insert_events``): until then the id may be anyone's.
    """
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetch(
            """WITH deleted AS (
                 UPDATE events SET status = 'deleted', payload = NULL, metadata = NULL, metadata_sent = NULL,
                                   deleted_at = now(), lease_id = NULL, leased_until = NULL
                 WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status <> 'deleted'
                 RETURNING event_id, deleted_at),
               logged AS (
                 INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
                 SELECT event_id, $1, 'deleted', deleted_at FROM deleted)
               SELECT event_id FROM deleted""",
            tenant_id,
            list(event_ids),
        )
        done = {r["event_id"] for r in deleted}
        rest = sorted((event_id, born) for event_id, born in in_flight if event_id not in done)
        if rest:
            await conn.execute(
                """WITH marked AS (
                     INSERT INTO events (event_id, tenant_id, created_at, status, deleted_at)
                     SELECT event_id, $1, created_at, 'deleted', now()
                     FROM unnest($2::uuid[], $3::timestamptz[]) AS late (event_id, created_at)
                     ON CONFLICT (event_id) DO UPDATE
                       SET status = 'deleted', payload = NULL, metadata = NULL, metadata_sent = NULL,
                           deleted_at = now(), lease_id = NULL, leased_until = NULL
                       WHERE events.tenant_id = EXCLUDED.tenant_id AND events.status <> 'deleted'
                     RETURNING event_id, deleted_at, xmax <> 0 AS arrived)
                   INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
                   SELECT event_id, $1, 'deleted', deleted_at FROM marked WHERE arrived""",
                tenant_id,
                [event_id for event_id, _ in rest],
                [born for _, born in rest],
            )
            # Another tenant's marker holds the id already: the event may be either's, so list this tenant too.
            await conn.execute(
                """UPDATE events SET deleted_by = array_append(coalesce(deleted_by, '{}'), $1)
                   WHERE event_id = ANY($2::uuid[]) AND tenant_id <> $1 AND status = 'deleted'
                     AND source IS NULL AND NOT $1 = ANY(coalesce(deleted_by, '{}'))""",
                tenant_id,
                [event_id for event_id, _ in rest],
            )


# --- Leases and quarantine ---------------------------------------------------------------------------------


class QuarantinedRow(EventRow, frozen=True):
    lease_count: int
    quarantined_at: datetime


async def lease_events(
    pool: asyncpg.Pool,
    tenant_id: str,
    where: InboxFilter,
    limit: int,
    lease_id: uuid.UUID,
    lease_seconds: int,
    max_leases: int,
) -> tuple[list[EventRow], int, datetime | None]:
    """Lease up to ``limit`` of the oldest matching events no live lease holds: one statement that locks them
    (skipping rows other leases are taking), quarantines those already leased ``max_leases`` times, leases the
    rest and records the lease (only if it took something). The expiry comes from the database clock, the one
    visibility is judged by. The leased rows oldest first, how many were quarantined, and the expiry."""
    args: list[object] = [tenant_id, lease_id, lease_seconds, max_leases]
    clauses = ["tenant_id = $1", *_filter_clauses(where, args)]
    args.append(limit)
    records = await pool.fetch(
        f"""WITH candidates AS (
              SELECT event_id, lease_count >= $4 AS poisoned FROM events WHERE {" AND ".join(clauses)}
              ORDER BY created_at, event_id LIMIT ${len(args)} FOR UPDATE SKIP LOCKED),
            quarantined AS (
              UPDATE events e SET status = 'quarantined', quarantined_at = now(), lease_id = NULL,
                                  leased_until = NULL
              FROM candidates c WHERE e.event_id = c.event_id AND c.poisoned
              RETURNING e.event_id, e.quarantined_at),
            logged AS (
              INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
              SELECT event_id, $1, 'quarantined', quarantined_at FROM quarantined),
            leased AS (
              UPDATE events e SET lease_id = $2, leased_until = now() + make_interval(secs => $3),
                                  lease_count = e.lease_count + 1
              FROM candidates c WHERE e.event_id = c.event_id AND NOT c.poisoned
              RETURNING {_columns("e")}, e.leased_until),
            lease AS (
              INSERT INTO leases (lease_id, tenant_id, leased_until, event_ids)
              SELECT $2, $1, max(leased_until), array_agg(event_id) FROM leased HAVING count(*) > 0
              ON CONFLICT (lease_id) DO UPDATE
                SET event_ids = leases.event_ids || EXCLUDED.event_ids,
                    leased_until = greatest(leases.leased_until, EXCLUDED.leased_until))
            SELECT *, NULL::bigint AS quarantined FROM leased
            UNION ALL
            SELECT {", ".join("NULL" for _ in EventRow.__struct_fields__)}, NULL, count(*) FROM quarantined
            ORDER BY created_at, event_id""",
        *args,
    )
    rows = [EventRow(*list(r.values())[:-2]) for r in records if r["event_id"] is not None]
    until = records[0]["leased_until"] if rows else None
    return rows, int(records[-1]["quarantined"]), until  # the last row counts the quarantined ones


async def get_lease(pool: asyncpg.Pool, tenant_id: str, lease_id: uuid.UUID) -> datetime | None:
    """When the tenant's lease expires(d); None if it has no such lease."""
    until: datetime | None = await pool.fetchval(
        "SELECT leased_until FROM leases WHERE lease_id = $1 AND tenant_id = $2", lease_id, tenant_id
    )
    return until


async def release_events(
    pool: asyncpg.Pool, tenant_id: str, lease_id: uuid.UUID, event_ids: Sequence[uuid.UUID] | None
) -> tuple[list[uuid.UUID], dict[uuid.UUID, str]]:
    """Make the lease's pending events (those of ``event_ids``, or all) visible again now. The ids released,
    and the status of each other id of ``event_ids`` that the tenant has (those it lacks are missing)."""
    async with pool.acquire() as conn, conn.transaction():
        released = [
            r["event_id"]
            for r in await conn.fetch(
                """UPDATE events SET lease_id = NULL, leased_until = NULL
                   WHERE event_id = ANY(coalesce($3::uuid[], (SELECT event_ids FROM leases WHERE lease_id = $2)))
                     AND tenant_id = $1 AND lease_id = $2 AND status = 'pending'
                   RETURNING event_id""",
                tenant_id,
                lease_id,
                None if event_ids is None else list(event_ids),
            )
        ]
        others: dict[uuid.UUID, str] = {}
        rest = [eid for eid in event_ids or () if eid not in set(released)]
        if rest:
            for r in await conn.fetch(
                "SELECT event_id, status FROM events WHERE tenant_id = $1 AND event_id = ANY($2::uuid[])",
                tenant_id,
                rest,
            ):
                others[r["event_id"]] = r["status"]
        if released:  # long polls of this tenant look again
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, encode_tenants({tenant_id}))
    return released, others


async def list_quarantined(
    pool: asyncpg.Pool, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[QuarantinedRow]:
    """The tenant's quarantined events, oldest first, after the keyset cursor ``after``."""
    args: list[object] = [tenant_id]
    clauses = ["tenant_id = $1", "status = 'quarantined'", *_after(after, args)]
    args.append(limit)
    records = await pool.fetch(
        f"""SELECT {_COLUMNS}, lease_count, quarantined_at FROM events WHERE {" AND ".join(clauses)}
            ORDER BY created_at, event_id LIMIT ${len(args)}""",
        *args,
    )
    return [QuarantinedRow(*r.values()) for r in records]


async def redrive_events(pool: asyncpg.Pool, tenant_id: str, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Put the tenant's quarantined events among ``event_ids`` back in the inbox with a fresh lease count.
    For each id the tenant has: ``redriven``, or its current status (absent ids are missing)."""
    async with pool.acquire() as conn, conn.transaction():
        redriven = await conn.fetch(
            """WITH redriven AS (
                 UPDATE events SET status = 'pending', quarantined_at = NULL, lease_count = 0
                 WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status = 'quarantined'
                 RETURNING event_id),
               logged AS (
                 INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
                 SELECT event_id, $1, 'pending', now() FROM redriven)
               SELECT event_id FROM redriven""",
            tenant_id,
            sorted(event_ids),
        )
        outcomes = {r["event_id"]: "redriven" for r in redriven}
        rest = [eid for eid in event_ids if eid not in outcomes]
        if rest:  # a statement of its own: it sees what concurrent statements committed meanwhile
            for r in await conn.fetch(
                "SELECT event_id, status FROM events WHERE tenant_id = $1 AND event_id = ANY($2::uuid[])",
                tenant_id,
                rest,
            ):
                outcomes[r["event_id"]] = r["status"]
        if redriven:
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, encode_tenants({tenant_id}))
    return outcomes


# --- Retention ---------------------------------------------------------------------------------------------


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond: every event id created before it sorts lower."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)


async def purge_acknowledged(pool: asyncpg.Pool, acked_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` events acknowledged before ``acked_before`` (a 'purged' status record each)."""
    return await _purge(
        pool,
        """SELECT ctid FROM events WHERE status = 'acknowledged' AND acknowledged_at < $1
           LIMIT $2 FOR UPDATE SKIP LOCKED""",
        acked_before,
        limit,
    )


async def purge_unacknowledged(pool: asyncpg.Pool, created_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` pending or quarantined events and delete markers created before
    ``created_before``, found through the primary key (event ids are time-ordered UUIDv7s)."""
    return await _purge(
        pool,
        """SELECT ctid FROM events WHERE event_id < $3 AND created_at < $1 AND status <> 'acknowledged'
           LIMIT $2 FOR UPDATE SKIP LOCKED""",
        created_before,
        limit,
        uuid7_floor(created_before),
    )


async def _purge(pool: asyncpg.Pool, select_ctids: str, *args: object) -> int:
    """One batch: delete the rows ``select_ctids`` locks; concurrent purgers (other replicas) skip them."""
    deleted: int = await pool.fetchval(
        f"""WITH gone AS (
              DELETE FROM events WHERE ctid = ANY(ARRAY({select_ctids}))
              RETURNING event_id, tenant_id, status),
            logged AS (
              INSERT INTO event_status_outbox (event_id, tenant_id, status, at)
              SELECT event_id, tenant_id, 'purged', now() FROM gone WHERE status <> 'deleted')
            SELECT count(*) FROM gone""",
        *args,
    )
    return deleted


async def purge_leases(pool: asyncpg.Pool, expired_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` leases that expired before ``expired_before``."""
    status: str = await pool.execute(
        """DELETE FROM leases WHERE lease_id = ANY(ARRAY(
             SELECT lease_id FROM leases WHERE leased_until < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))""",
        expired_before,
        limit,
    )
    return int(status.split()[-1])


# --- The status outbox and the inbox gauges ----------------------------------------------------------------


class StatusChange(msgspec.Struct, frozen=True):
    """One record of ``triggers.event-status.v1``."""

    event_id: uuid.UUID
    tenant_id: str
    status: str
    at: datetime


_RELAY_LOCK = 0x7472_6967_7374_6174  # "trigstat": one relay at a time, across every process


async def take_status_changes(conn: Conn, limit: int) -> list[StatusChange]:
    """Delete and return up to ``limit`` of the oldest outbox rows, within the caller's transaction (roll it
    back to keep them). Nothing while another relay's transaction runs: one relay at a time keeps each event's
    transitions in order on the topic."""
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
        return []
    records = await conn.fetch(
        """DELETE FROM event_status_outbox WHERE id = ANY(ARRAY(
             SELECT id FROM event_status_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
           RETURNING id, event_id, tenant_id, status, at""",
        limit,
    )
    return [StatusChange(*list(r.values())[1:]) for r in sorted(records, key=lambda r: r["id"])]


class TenantDepth(msgspec.Struct, frozen=True):
    tenant_id: str
    pending: int
    oldest: datetime | None


class InboxStats(msgspec.Struct, frozen=True):
    deepest: list[TenantDepth]
    """The tenants with the most pending events, most first."""
    oldest: list[TenantDepth]
    """The tenants with the oldest pending event, oldest first."""
    total: TenantDepth
    """Every tenant together (``tenant_id`` empty)."""
    quarantined: int
    took_s: float = 0.0
    """How long computing these took (they count every pending event)."""


_STATS_LOCK = 0x7472_6967_7374_6174 + 1


async def shared_inbox_stats(pool: asyncpg.Pool, top: int, max_age_s: float) -> InboxStats | None:
    """The gauges' numbers, computed by one process for all of them: the stored snapshot while it is younger
    than ``max_age_s``; else the process that gets the lock recomputes it, and the others keep the old one.
    With millions of pending events counting them takes seconds: a snapshot then stays fresh for 20 times as
    long as it took (so the gauges cost at most 5 % of one core), and the count runs without parallel
    workers, so it never takes every core at once."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT stats, taken_at > now() - make_interval(
                                 secs => greatest($1, 20 * coalesce((stats ->> 'took_s')::float8, 0))) AS fresh
               FROM inbox_stats WHERE id = 1""",
            max_age_s,
        )
        stored = msgspec.json.decode(bytes(row["stats"]), type=InboxStats) if row is not None else None
        if (row is not None and row["fresh"]) or not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1)", _STATS_LOCK
        ):
            return stored
        started = time.perf_counter()
        await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        stats = msgspec.structs.replace(await inbox_stats(conn, top), took_s=round(time.perf_counter() - started, 3))
        await conn.execute(
            """INSERT INTO inbox_stats (id, taken_at, stats) VALUES (1, now(), $1)
               ON CONFLICT (id) DO UPDATE SET taken_at = EXCLUDED.taken_at, stats = EXCLUDED.stats""",
            msgspec.json.encode(stats),
        )
        return stats


async def inbox_stats(conn: Conn, top: int) -> InboxStats:
    """Pending events per tenant for the gauges, ``top`` tenants by depth and ``top`` by age, in one statement."""
    records = await conn.fetch(
        """WITH per AS (
             SELECT tenant_id, count(*) AS pending, min(created_at) AS oldest
             FROM events WHERE status = 'pending' GROUP BY tenant_id)
           (SELECT 'deepest' AS rank, * FROM per ORDER BY pending DESC, tenant_id LIMIT $1)
           UNION ALL
           (SELECT 'oldest', * FROM per ORDER BY oldest, tenant_id LIMIT $1)
           UNION ALL
           SELECT 'total', '', coalesce(sum(pending), 0)::bigint, min(oldest) FROM per
           UNION ALL
           SELECT 'quarantined', '', count(*), NULL FROM events WHERE status = 'quarantined'""",
        top,
    )
    rows: dict[str, list[TenantDepth]] = {"deepest": [], "oldest": [], "total": [], "quarantined": []}
    for r in records:
        rows[r["rank"]].append(TenantDepth(r["tenant_id"], r["pending"], r["oldest"]))
    return InboxStats(rows["deepest"], rows["oldest"], rows["total"][0], rows["quarantined"][0].pending)
