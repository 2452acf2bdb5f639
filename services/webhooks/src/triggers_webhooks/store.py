"""Every SQL statement of the webhooks service, one function each; all scoped to the caller's tenant."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec


class Webhook(msgspec.Struct, frozen=True):
    webhook_id: uuid.UUID
    url: str
    events: list[str]
    sources: list[str] | None
    description: str
    is_active: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = "webhook_id, url, events, sources, description, is_active, disabled_reason, created_at, updated_at"
EDITABLE = ("url", "events", "sources", "description", "is_active")


def _webhook(record: Any) -> Webhook:
    return Webhook(*record.values())


async def create_webhook(
    pool: asyncpg.Pool,
    tenant_id: str,
    url: str,
    events: list[str],
    sources: list[str] | None,
    description: str,
    secret: str,
) -> Webhook:
    record = await pool.fetchrow(
        f"""INSERT INTO webhooks (webhook_id, tenant_id, url, events, sources, description, secret)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        url,
        events,
        sources,
        description,
        secret,
    )
    await notify_changed(pool)
    return _webhook(record)


async def get_webhook(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> Webhook | None:
    record = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    return None if record is None else _webhook(record)


async def list_webhooks(
    pool: asyncpg.Pool,
    tenant_id: str,
    is_active: bool | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Webhook]:
    """The tenant's webhooks, oldest first, after the keyset position ``after``."""
    records = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM webhooks
            WHERE tenant_id = $1 AND ($2::boolean IS NULL OR is_active = $2)
              AND ($3::timestamptz IS NULL OR (created_at, webhook_id) > ($3, $4))
            ORDER BY created_at, webhook_id LIMIT $5""",
        tenant_id,
        is_active,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_webhook(r) for r in records]


async def update_webhook(
    pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, changes: Mapping[str, Any]
) -> Webhook | None:
    """Set the given fields (of ``EDITABLE``); turning a webhook on again clears why it was disabled."""
    fields = [name for name in EDITABLE if name in changes]
    sets = [f"{name} = ${i}" for i, name in enumerate(fields, start=3)]
    if changes.get("is_active"):
        sets.append("disabled_reason = NULL")
    record = await pool.fetchrow(
        f"""UPDATE webhooks SET {", ".join([*sets, "updated_at = now()"])}
            WHERE webhook_id = $1 AND tenant_id = $2 RETURNING {_COLUMNS}""",
        webhook_id,
        tenant_id,
        *(changes[name] for name in fields),
    )
    await notify_changed(pool)
    return None if record is None else _webhook(record)


async def delete_webhook(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> bool:
    status: str = await pool.execute(
        "DELETE FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    await notify_changed(pool)
    return status != "DELETE 0"


async def rotate_secret(
    pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, secret: str, overlap: timedelta
) -> datetime | None:
    """Sign with ``secret`` from now on, and with the current one too for ``overlap``; when that ends."""
    until: datetime | None = await pool.fetchval(
        """UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + $3::interval,
                               secret = $4, updated_at = now()
           WHERE webhook_id = $1 AND tenant_id = $2 RETURNING previous_secret_until""",
        webhook_id,
        tenant_id,
        overlap,
        secret,
    )
    return until


async def signing_target(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> tuple[str, list[str]] | None:
    """The webhook's URL and the secrets that sign for it now (the current one first)."""
    record = await pool.fetchrow(
        """SELECT url, secret, CASE WHEN previous_secret_until > now() THEN previous_secret END AS previous
           FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2""",
        webhook_id,
        tenant_id,
    )
    if record is None:
        return None
    return record["url"], [record["secret"], *([record["previous"]] if record["previous"] else [])]


# --- Deliveries --------------------------------------------------------------------------------------------

CHANGES_CHANNEL = "triggers_webhooks"
"""NOTIFY'd by every subscription change: each process reloads its subscription index."""


async def notify_changed(pool: asyncpg.Pool) -> None:
    await pool.execute("SELECT pg_notify($1, '')", CHANGES_CHANNEL)


class Subscription(msgspec.Struct, frozen=True):
    webhook_id: uuid.UUID
    tenant_id: str
    events: list[str]
    sources: list[str] | None


async def active_subscriptions(pool: asyncpg.Pool) -> tuple[list[Subscription], datetime]:
    """Every active subscription, and the database time they were read at."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        records = await conn.fetch("SELECT webhook_id, tenant_id, events, sources FROM webhooks WHERE is_active")
        read_at: datetime = await conn.fetchval("SELECT statement_timestamp()")
    return [Subscription(*r.values()) for r in records], read_at


async def changed_subscriptions(
    pool: asyncpg.Pool, since: datetime
) -> tuple[list[tuple[Subscription, bool]], datetime]:
    """Subscriptions changed since ``since`` with whether each is active, and the database time they were read
    at. (A deleted one is not among them: deliveries to it are dropped when they are scheduled.)"""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        records = await conn.fetch(
            "SELECT webhook_id, tenant_id, events, sources, is_active FROM webhooks WHERE updated_at >= $1", since
        )
        read_at: datetime = await conn.fetchval("SELECT statement_timestamp()")
    return [(Subscription(*list(r.values())[:4]), r["is_active"]) for r in records], read_at


class NewDelivery(msgspec.Struct, frozen=True):
    delivery_id: uuid.UUID
    tenant_id: str
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    body: bytes
    traceparent: str | None = None


_ON_CONFLICT = {
    False: "DO NOTHING",
    True: """DO UPDATE SET status = 'pending', next_attempt_at = now(), updated_at = now()
             WHERE d.claimed_until IS NULL OR d.claimed_until <= now()""",
}


async def schedule_deliveries(pool: asyncpg.Pool, rows: list[NewDelivery], *, again: bool = False) -> int:
    """Schedule deliveries, due now (those of a webhook deleted meanwhile are dropped); answers how many.

    A delivery that exists already (a redelivered record) is left alone, unless ``again`` (a replay): then a
    finished one (succeeded or failed) or one waiting for a retry is due now too, and only one that a
    dispatcher is sending right now is left to it."""
    rows = sorted({r.delivery_id: r for r in rows}.values(), key=lambda r: r.delivery_id)
    status: str = await pool.execute(
        f"""INSERT INTO deliveries AS d (delivery_id, tenant_id, webhook_id, event_id, body, traceparent)
            SELECT n.* FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::bytea[], $6::text[])
              AS n (delivery_id, tenant_id, webhook_id, event_id, body, traceparent)
            JOIN webhooks w USING (webhook_id)
            ON CONFLICT (delivery_id) {_ON_CONFLICT[again]}""",
        [r.delivery_id for r in rows],
        [r.tenant_id for r in rows],
        [r.webhook_id for r in rows],
        [r.event_id for r in rows],
        [r.body for r in rows],
        [r.traceparent for r in rows],
    )
    return int(status.rsplit(" ", 1)[1])


_NOT_IN_FLIGHT = "(claimed_until IS NULL OR claimed_until <= now())"
"""A delivery no dispatcher is sending right now: a retry or replay may make it due without a second send."""


class Due(msgspec.Struct, frozen=True):
    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    body: bytes
    attempts: int
    tenant_id: str
    event_id: uuid.UUID
    traceparent: str | None
    url: str
    secrets: list[str]
    is_active: bool


async def claim_due(
    pool: asyncpg.Pool,
    limit: int,
    hold: timedelta,
    per_webhook: int,
    room: Mapping[uuid.UUID, int],
) -> list[Due]:
    """Take up to ``limit`` due deliveries, oldest first, for ``hold`` (longer than an attempt can last): no
    other dispatcher sends them meanwhile, and if this one dies they are due again after it. At most
    ``per_webhook`` of one webhook, or its ``room`` if given (webhooks without room are not even looked at),
    so one webhook's backlog never takes every slot."""
    full = [w for w, n in room.items() if n <= 0]
    limited = [(w, n) for w, n in room.items() if n > 0]
    # Concurrent claimers skip each other's candidates (SKIP LOCKED) instead of colliding on the oldest rows;
    # a few webhooks' worth of candidates is enough, as a busy dispatcher claims again at once.
    records = await pool.fetch(
        f"""WITH candidates AS (
             SELECT delivery_id, webhook_id, next_attempt_at FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= now() AND {_NOT_IN_FLIGHT}
               AND webhook_id <> ALL($3::uuid[])
             ORDER BY next_attempt_at LIMIT least($1, $6 * 4) FOR UPDATE SKIP LOCKED),
           wanted AS (
             SELECT c.delivery_id FROM (
               SELECT *, row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at) AS rank FROM candidates
             ) c LEFT JOIN unnest($4::uuid[], $5::int[]) AS room (webhook_id, n) USING (webhook_id)
             WHERE c.rank <= coalesce(room.n, $6)),
           taken AS (
             UPDATE deliveries d SET claimed_until = now() + $2::interval
             FROM wanted WHERE d.delivery_id = wanted.delivery_id
             RETURNING d.delivery_id, d.webhook_id, d.body, d.attempts, d.tenant_id, d.event_id, d.traceparent)
           SELECT t.*, w.url,
                  array_remove(ARRAY[w.secret, CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END],
                               NULL) AS secrets,
                  w.is_active
           FROM taken t JOIN webhooks w USING (webhook_id)""",
        limit,
        hold,
        full,
        [w for w, _ in limited],
        [n for _, n in limited],
        per_webhook,
    )
    return [Due(*r.values()) for r in records]


class Outcome(msgspec.Struct, frozen=True):
    """One attempt's result: the delivery's new ``status`` (succeeded, failed, or pending again after
    ``retry_in``), and what the receiver answered."""

    delivery_id: uuid.UUID
    status: str
    status_code: int | None
    error: str | None
    retry_in: timedelta | None
    latency_ms: float = 0.0


async def record_outcomes(pool: asyncpg.Pool, outcomes: Sequence[Outcome]) -> None:
    """Apply attempts' outcomes to their deliveries and log each attempt: one statement for them all."""
    rows = sorted(outcomes, key=lambda o: o.delivery_id)
    await pool.execute(
        """WITH o AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::float8[], $6::float8[])
               AS o (delivery_id, status, status_code, error, retry_in_s, latency_ms)),
           done AS (
             UPDATE deliveries d SET status = o.status, attempts = d.attempts + 1, last_status_code = o.status_code,
                                     last_error = o.error, updated_at = now(), claimed_until = NULL,
                                     next_attempt_at = CASE WHEN o.retry_in_s IS NULL THEN d.next_attempt_at
                                                            ELSE now() + make_interval(secs => o.retry_in_s) END
             FROM o WHERE d.delivery_id = o.delivery_id
             RETURNING d.delivery_id, d.attempts, o.status_code, o.latency_ms, o.error)
           INSERT INTO delivery_attempts (delivery_id, attempt, status_code, latency_ms, error)
           SELECT delivery_id, attempts, status_code, latency_ms, error FROM done""",
        [o.delivery_id for o in rows],
        [o.status for o in rows],
        [o.status_code for o in rows],
        [o.error for o in rows],
        [o.retry_in.total_seconds() if o.retry_in is not None else None for o in rows],
        [o.latency_ms for o in rows],
    )


class AttemptRow(msgspec.Struct, frozen=True):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryRow(msgspec.Struct, frozen=True):
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    log: list[AttemptRow]


async def list_deliveries(
    pool: asyncpg.Pool,
    tenant_id: str,
    webhook_id: uuid.UUID,
    status: str | None,
    event_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[DeliveryRow]:
    """The webhook's deliveries, newest first, each with its attempts (two statements for the page)."""
    records = await pool.fetch(
        """SELECT delivery_id, event_id, status, attempts,
                  CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
                  last_status_code, last_error, created_at, updated_at
           FROM deliveries
           WHERE webhook_id = $1 AND tenant_id = $2 AND ($3::text IS NULL OR status = $3)
             AND ($4::uuid IS NULL OR event_id = $4)
             AND ($5::timestamptz IS NULL OR (created_at, delivery_id) < ($5, $6))
           ORDER BY created_at DESC, delivery_id DESC LIMIT $7""",
        webhook_id,
        tenant_id,
        status,
        event_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    attempts: dict[uuid.UUID, list[AttemptRow]] = {r["delivery_id"]: [] for r in records}
    for a in await pool.fetch(
        """SELECT delivery_id, attempt, at, status_code, latency_ms, error FROM delivery_attempts
           WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt""",
        list(attempts),
    ):
        attempts[a["delivery_id"]].append(AttemptRow(*list(a.values())[1:]))
    return [DeliveryRow(**dict(r), log=attempts[r["delivery_id"]]) for r in records]


async def retry_delivery(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """Make a delivery due now again (a failed one too); False if the tenant's webhook has no such delivery."""
    status: str = await pool.execute(
        f"""UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
           WHERE delivery_id = $1 AND webhook_id = $2 AND tenant_id = $3 AND status <> 'succeeded'
             AND {_NOT_IN_FLIGHT}""",
        delivery_id,
        webhook_id,
        tenant_id,
    )
    if status != "UPDATE 0":
        return True
    exists = await pool.fetchval(
        "SELECT true FROM deliveries WHERE delivery_id = $1 AND webhook_id = $2 AND tenant_id = $3",
        delivery_id,
        webhook_id,
        tenant_id,
    )
    return bool(exists)


async def webhooks_health(
    pool: asyncpg.Pool, succeeded: Sequence[uuid.UUID], failed: Sequence[uuid.UUID], disable_after: timedelta
) -> list[uuid.UUID]:
    """Note which webhooks just had a success (their failure clock stops) and which only failures (it starts,
    if stopped); answer those that have now failed for ``disable_after`` and were disabled."""
    if succeeded:
        await pool.execute(
            "UPDATE webhooks SET failing_since = NULL WHERE webhook_id = ANY($1::uuid[]) AND failing_since IS NOT NULL",
            sorted(succeeded),
        )
    if not failed:
        return []
    disabled: list[uuid.UUID] = [
        r[0]
        for r in await pool.fetch(
            """WITH f AS (
                 UPDATE webhooks SET failing_since = coalesce(failing_since, now()),
                        is_active = is_active AND coalesce(failing_since, now()) > now() - $2::interval,
                        updated_at = CASE WHEN is_active AND coalesce(failing_since, now()) <= now() - $2::interval
                                          THEN now() ELSE updated_at END,
                        disabled_reason = CASE WHEN is_active AND coalesce(failing_since, now()) <= now() - $2::interval
                                               THEN 'every delivery failed for ' || $2::interval::text
                                               ELSE disabled_reason END
                 WHERE webhook_id = ANY($1::uuid[])
                 RETURNING webhook_id, disabled_reason IS NOT NULL AND NOT is_active AS disabled)
               SELECT webhook_id FROM f WHERE disabled""",
            sorted(failed),
            disable_after,
        )
    ]
    if disabled:
        await notify_changed(pool)
    return disabled


async def queue_state(pool: asyncpg.Pool) -> tuple[int, float]:
    """Pending deliveries, and how long the oldest due one has been waiting (seconds; 0 when none is due)."""
    record = await pool.fetchrow(
        f"""SELECT count(*) AS pending,
                  coalesce(extract(epoch FROM now() - min(next_attempt_at)
                                   FILTER (WHERE next_attempt_at <= now() AND {_NOT_IN_FLIGHT})), 0)
                    AS oldest_due_s
           FROM deliveries WHERE status = 'pending'"""
    )
    assert record is not None
    return int(record["pending"]), float(record["oldest_due_s"])


async def disable_webhook(pool: asyncpg.Pool, webhook_id: uuid.UUID, reason: str) -> None:
    await pool.execute(
        "UPDATE webhooks SET is_active = false, disabled_reason = $2, updated_at = now() WHERE webhook_id = $1",
        webhook_id,
        reason,
    )
    await notify_changed(pool)


class Replay(msgspec.Struct, frozen=True):
    replay_id: uuid.UUID
    tenant_id: str
    webhook_id: uuid.UUID
    since: datetime
    until: datetime
    status: str
    scheduled: int
    positions: dict[str, int]
    """The next offset to read, by partition (as a string), once the replay has started."""
    tries: int
    error: str | None
    created_at: datetime
    completed_at: datetime | None


_REPLAY_COLUMNS = (
    "replay_id, tenant_id, webhook_id, since, until, status, scheduled, positions, tries, error, created_at, "
    "completed_at"
)


def _replay(record: Any) -> Replay:
    fields = dict(record)
    fields["positions"] = msgspec.json.decode(fields["positions"]) if fields["positions"] else {}
    return Replay(**fields)


async def create_replay(
    pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, since: datetime, until: datetime
) -> Replay | None:
    """A pending replay of the tenant's webhook; None if the tenant has no such webhook."""
    record = await pool.fetchrow(
        f"""INSERT INTO webhook_replays (replay_id, tenant_id, webhook_id, since, until)
            SELECT $1, tenant_id, webhook_id, $3, $4 FROM webhooks WHERE webhook_id = $2 AND tenant_id = $5
            RETURNING {_REPLAY_COLUMNS}""",
        uuid.uuid4(),
        webhook_id,
        since,
        until,
        tenant_id,
    )
    return _replay(record) if record is not None else None


async def get_replay(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, replay_id: uuid.UUID) -> Replay | None:
    record = await pool.fetchrow(
        f"""SELECT {_REPLAY_COLUMNS} FROM webhook_replays
            WHERE replay_id = $1 AND webhook_id = $2 AND tenant_id = $3""",
        replay_id,
        webhook_id,
        tenant_id,
    )
    return _replay(record) if record is not None else None


async def claim_replay(pool: asyncpg.Pool, hold: timedelta) -> Replay | None:
    """Take the oldest replay that nobody is running (new, or its worker stopped renewing) for ``hold``; its
    ``tries`` counts this one."""
    record = await pool.fetchrow(
        f"""UPDATE webhook_replays SET status = 'running', claimed_until = now() + $1::interval, tries = tries + 1
            WHERE replay_id = (
              SELECT replay_id FROM webhook_replays
              WHERE status IN ('pending', 'running') AND (claimed_until IS NULL OR claimed_until <= now())
              ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING {_REPLAY_COLUMNS}""",
        hold,
    )
    return _replay(record) if record is not None else None


async def replay_progress(
    pool: asyncpg.Pool, replay_id: uuid.UUID, positions: dict[str, int], scheduled: int, hold: timedelta
) -> None:
    """Save how far a running replay got, and keep holding it."""
    await pool.execute(
        """UPDATE webhook_replays SET positions = $2::text::jsonb, scheduled = scheduled + $3,
                  claimed_until = now() + $4::interval
           WHERE replay_id = $1""",
        replay_id,
        msgspec.json.encode(positions).decode(),
        scheduled,
        hold,
    )


async def finish_replay(pool: asyncpg.Pool, replay_id: uuid.UUID, error: str | None = None) -> None:
    await pool.execute(
        """UPDATE webhook_replays SET status = CASE WHEN $2::text IS NULL THEN 'completed' ELSE 'failed' END,
                  error = $2, completed_at = now(), claimed_until = NULL
           WHERE replay_id = $1""",
        replay_id,
        error,
    )


async def deleted_events(pool: asyncpg.Pool, tenant_id: str, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the tenant's events were deleted (``DELETE /v1/events/{id}``, kept by the inbox component):
    a replay leaves them out."""
    try:
        rows = await pool.fetch(
            "SELECT event_id FROM events WHERE tenant_id = $1 AND event_id = ANY($2::uuid[]) AND status = 'deleted'",
            tenant_id,
            list(event_ids),
        )
    except asyncpg.UndefinedTableError:  # no inbox component in this database: nothing was deleted
        return set()
    return {r["event_id"] for r in rows}
