"""Every SQL statement of the ingest gateway: idempotency keys (nothing else touches Postgres here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec


class KeyRow(msgspec.Struct, frozen=True):
    request_hash: bytes
    event_id: uuid.UUID
    created_at: datetime
    claimed_at: datetime
    completed_at: datetime | None
    claimed: bool
    """True when this call claimed the key (new, or expired and started over)."""


async def claim_key(
    pool: asyncpg.Pool,
    tenant_id: str,
    key: str,
    request_hash: bytes,
    event_id: uuid.UUID,
    created_at: datetime,
    ttl: timedelta,
) -> KeyRow:
    """Claim ``key`` for this request, or return the row of whoever holds it."""
    record = await pool.fetchrow(
        """INSERT INTO idempotency_keys AS k
               (tenant_id, idempotency_key, request_hash, event_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6::interval)
           ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, event_id = EXCLUDED.event_id,
                 created_at = EXCLUDED.created_at, claimed_at = clock_timestamp(), completed_at = NULL,
                 expires_at = EXCLUDED.expires_at
             WHERE k.expires_at <= clock_timestamp()
           RETURNING request_hash, event_id, created_at, claimed_at, completed_at, true AS claimed""",
        tenant_id,
        key,
        request_hash,
        event_id,
        created_at,
        ttl,
    )
    if record is None:  # held by another request (or one that finished); read it with a fresh snapshot
        record = await pool.fetchrow(
            """SELECT request_hash, event_id, created_at, claimed_at, completed_at, false AS claimed
               FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2""",
            tenant_id,
            key,
        )
        assert record is not None, "a conflicting key row cannot vanish while unexpired"
    return KeyRow(*record.values())


async def take_over_key(pool: asyncpg.Pool, tenant_id: str, key: str, claimed_at: datetime) -> bool:
    """Take over a claim whose request died or failed (still incomplete, unchanged since ``claimed_at``)."""
    taken = await pool.fetchval(
        """UPDATE idempotency_keys SET claimed_at = clock_timestamp()
           WHERE tenant_id = $1 AND idempotency_key = $2 AND claimed_at = $3 AND completed_at IS NULL
           RETURNING true""",
        tenant_id,
        key,
        claimed_at,
    )
    return bool(taken)


async def complete_keys(pool: asyncpg.Pool, tenant_id: str, keys: Sequence[tuple[str, uuid.UUID]]) -> None:
    """Mark claims done once their events are in Kafka; later repeats are answered from the row."""
    await pool.execute(
        """UPDATE idempotency_keys k SET completed_at = clock_timestamp()
           FROM unnest($2::text[], $3::uuid[]) AS done (idempotency_key, event_id)
           WHERE k.tenant_id = $1 AND k.idempotency_key = ANY($2::text[])  -- keeps the primary key in use
             AND k.idempotency_key = done.idempotency_key AND k.event_id = done.event_id""",
        tenant_id,
        [k for k, _ in keys],
        [e for _, e in keys],
    )


async def release_keys(pool: asyncpg.Pool, tenant_id: str, keys: Sequence[tuple[str, uuid.UUID]]) -> None:
    """After a 503: make the claims stale at once, so a retry takes them over (same event ids)."""
    await pool.execute(
        """UPDATE idempotency_keys k SET claimed_at = to_timestamp(0)
           FROM unnest($2::text[], $3::uuid[]) AS failed (idempotency_key, event_id)
           WHERE k.tenant_id = $1 AND k.idempotency_key = ANY($2::text[])
             AND k.idempotency_key = failed.idempotency_key AND k.event_id = failed.event_id
             AND k.completed_at IS NULL""",
        tenant_id,
        [k for k, _ in keys],
        [e for _, e in keys],
    )
