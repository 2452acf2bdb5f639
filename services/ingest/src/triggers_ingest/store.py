"""Every SQL statement of the ingest gateway: idempotency keys (nothing else touches Postgres here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec


class Claim(msgspec.Struct, frozen=True):
    """A request's bid for an idempotency key, carrying the event it would produce."""

    tenant_id: str
    key: str
    request_hash: bytes
    """The compact JSON's hash: how replicas of the previous version compare bodies."""
    event_id: uuid.UUID
    created_at: datetime
    body_hash: bytes | None = None
    """The event's, however its JSON is spelled (``validation.body_hash``): how bodies compare now."""

    def same_body(self, row: KeyRow | Claim) -> bool:
        """Whether ``row`` holds this body; a claim made by the previous version has only its compact hash."""
        if row.body_hash is None or self.body_hash is None:
            return row.request_hash == self.request_hash
        return row.body_hash == self.body_hash


class KeyRow(msgspec.Struct, frozen=True):
    request_hash: bytes
    event_id: uuid.UUID
    created_at: datetime
    claimed_at: datetime
    completed_at: datetime | None
    claimed: bool
    """True when this call claimed the key (new, or expired and started over)."""
    body_hash: bytes | None = None


_COLUMNS = "request_hash, event_id, created_at, claimed_at, completed_at, body_hash"


def _key_row(record: asyncpg.Record, *, claimed: bool) -> KeyRow:
    return KeyRow(
        record["request_hash"],
        record["event_id"],
        record["created_at"],
        record["claimed_at"],
        record["completed_at"],
        claimed,
        record["body_hash"],
    )


async def claim_keys(pool: asyncpg.Pool, claims: Sequence[Claim], ttl: timedelta) -> list[KeyRow | None]:
    """Claim each key, or return the row of whoever holds it: one INSERT for every claim.

    Keys go in sorted, so concurrent batches (on any replica) lock them in one order and cannot deadlock. When a
    batch holds one key twice, the first claim may win and the others see its row. None: the holder's row expired
    and was purged between the two statements (the caller answers "in flight"; a retry claims the key).
    """
    bids: dict[tuple[str, str], Claim] = {}
    for claim in sorted(claims, key=lambda c: (c.tenant_id, c.key)):
        bids.setdefault((claim.tenant_id, claim.key), claim)
    rows: dict[tuple[str, str], KeyRow] = {}
    for record in await pool.fetch(
        f"""INSERT INTO idempotency_keys AS k
               (tenant_id, idempotency_key, request_hash, event_id, created_at, expires_at, body_hash)
           SELECT tenant_id, idempotency_key, request_hash, event_id, created_at, clock_timestamp() + $6::interval,
                  body_hash
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::uuid[], $5::timestamptz[], $7::bytea[])
             AS bid (tenant_id, idempotency_key, request_hash, event_id, created_at, body_hash)
           ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, body_hash = EXCLUDED.body_hash, event_id = EXCLUDED.event_id,
                 created_at = EXCLUDED.created_at, claimed_at = clock_timestamp(), completed_at = NULL,
                 expires_at = EXCLUDED.expires_at
             WHERE k.expires_at <= clock_timestamp()
           RETURNING k.tenant_id, k.idempotency_key, {_COLUMNS}""",
        [c.tenant_id for c in bids.values()],
        [c.key for c in bids.values()],
        [c.request_hash for c in bids.values()],
        [c.event_id for c in bids.values()],
        [c.created_at for c in bids.values()],
        ttl,
        [c.body_hash for c in bids.values()],
    ):
        rows[record[0], record[1]] = _key_row(record, claimed=True)
    held = [key for key in bids if key not in rows]
    if held:  # held by other requests (or finished ones); read them with a fresh snapshot
        for record in await pool.fetch(
            f"""SELECT k.tenant_id, k.idempotency_key, {_COLUMNS}
                FROM unnest($1::text[], $2::text[]) AS held (tenant_id, idempotency_key)
                JOIN idempotency_keys k USING (tenant_id, idempotency_key)""",
            [tenant_id for tenant_id, _ in held],
            [key for _, key in held],
        ):
            rows[record[0], record[1]] = _key_row(record, claimed=False)
    answers: list[KeyRow | None] = []
    for claim in claims:
        row = rows.get((claim.tenant_id, claim.key))
        if row is not None and row.claimed and row.event_id != claim.event_id:  # a twin in this batch won
            row = msgspec.structs.replace(row, claimed=False)
        answers.append(row)
    return answers


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


async def complete_keys(pool: asyncpg.Pool, done: Sequence[Claim]) -> None:
    """Mark claims done once their events are in Kafka; later repeats are answered from the row."""
    await pool.execute(
        """UPDATE idempotency_keys k SET completed_at = clock_timestamp()
           FROM unnest($1::text[], $2::text[], $3::uuid[]) AS done (tenant_id, idempotency_key, event_id)
           WHERE k.tenant_id = done.tenant_id AND k.idempotency_key = done.idempotency_key
             AND k.event_id = done.event_id""",
        [c.tenant_id for c in done],
        [c.key for c in done],
        [c.event_id for c in done],
    )


async def release_keys(pool: asyncpg.Pool, failed: Sequence[Claim]) -> None:
    """After a 503: make the claims stale at once, so a retry takes them over (same event ids)."""
    await pool.execute(
        """UPDATE idempotency_keys k SET claimed_at = to_timestamp(0)
           FROM unnest($1::text[], $2::text[], $3::uuid[]) AS failed (tenant_id, idempotency_key, event_id)
           WHERE k.tenant_id = failed.tenant_id AND k.idempotency_key = failed.idempotency_key
             AND k.event_id = failed.event_id AND k.completed_at IS NULL""",
        [c.tenant_id for c in failed],
        [c.key for c in failed],
        [c.event_id for c in failed],
    )


async def purge_expired_keys(pool: asyncpg.Pool, limit: int) -> int:
    """Delete up to ``limit`` expired keys; concurrent purgers (other replicas) skip each other's rows."""
    status: str = await pool.execute(
        """DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM idempotency_keys WHERE expires_at <= clock_timestamp()
             LIMIT $1 FOR UPDATE SKIP LOCKED))""",
        limit,
    )
    return int(status.split()[-1])
