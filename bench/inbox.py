"""How fast accepted events reach the inbox table: persisted_at (consumer's insert) minus created_at (gateway)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

_COUNT = "SELECT count(*) FROM events WHERE tenant_id = $1 AND source = $2"

_LATENCY = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
       max(ms),
       extract(epoch FROM max(persisted_at) - min(persisted_at))
FROM (SELECT persisted_at, extract(epoch FROM persisted_at - created_at) * 1000 AS ms
      FROM events WHERE tenant_id = $1 AND source = $2) AS e
"""


@dataclass
class InboxLatency:
    """Ingest-to-inbox latency (milliseconds) of one tenant's events from one source."""

    expected: int
    persisted: int
    waited_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    persist_span_s: float | None

    @property
    def missing(self) -> int:
        """Accepted events that had not reached the inbox when the wait ended."""
        return max(self.expected - self.persisted, 0)


async def wait_persisted(
    conn: asyncpg.Connection, tenant: str, source: str, expected: int, deadline_s: float, settle_s: float = 1.0
) -> tuple[int, float]:
    """Poll until at least ``expected`` rows exist and the count stops growing for ``settle_s``, or the deadline.

    Returns the last count and the seconds waited. Waiting for the count to settle also catches events that were
    accepted while the load generator stopped counting (wrk does not count requests in flight at its end).
    """
    started = time.monotonic()
    last, stable_since = -1, started
    while True:
        count = int(await conn.fetchval(_COUNT, tenant, source))
        now = time.monotonic()
        if count != last:
            last, stable_since = count, now
        if count >= expected and now - stable_since >= settle_s:
            return count, now - started
        if now - started >= deadline_s:
            return count, now - started
        await asyncio.sleep(0.2)


async def measure(dsn: str, tenant: str, source: str, expected: int, deadline_s: float) -> InboxLatency:
    """Wait for ``expected`` events of ``tenant``/``source`` to be persisted, then compute their latency."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        _, waited = await wait_persisted(conn, tenant, source, expected, deadline_s)
        row = await conn.fetchrow(_LATENCY, tenant, source)
    finally:
        await conn.close()
    assert row is not None
    count, p50, p90, p99, worst, span = row
    return InboxLatency(
        expected=expected,
        persisted=int(count),
        waited_s=waited,
        p50_ms=_float(p50),
        p90_ms=_float(p90),
        p99_ms=_float(p99),
        max_ms=_float(worst),
        persist_span_s=_float(span),
    )


_KEYS = """
SELECT count(*), count(completed_at) FROM idempotency_keys
WHERE tenant_id = $1 AND idempotency_key LIKE $2 || '-%'
"""


async def idempotency_keys(dsn: str, tenant: str, prefix: str) -> tuple[int, int]:
    """How many idempotency keys ``tenant`` has that start with ``prefix-``, and how many of them completed."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow(_KEYS, tenant, prefix)
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


async def forget(dsn: str, tenant: str) -> int:
    """Delete the run tenant's pending events from the inbox; how many. Each run leaves about a million, 1 GB
    in Postgres, and a database grown by many runs slows the later ones (webhook deliveries halved at 16 GB)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        status: str = await conn.execute(
            "DELETE FROM events WHERE tenant_id = $1 AND status = 'pending'", tenant, timeout=600
        )
        return int(status.split()[-1])
    finally:
        await conn.close()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
