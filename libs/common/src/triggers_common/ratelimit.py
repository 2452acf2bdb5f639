"""Token-bucket rate limits that hold as one limit across every replica, without a query per request.

Each bucket lives in Postgres (``rate_buckets``); a replica leases tokens from it in small chunks and spends
them locally. Tokens never appear from nowhere, so replicas together never exceed the limit; a replica's
unspent chunk is at most ``LEASE_FRACTION`` of the limit, which bounds how far below it they can fall.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import asyncpg
import msgspec

log = logging.getLogger("triggers.ratelimit")

LEASE_FRACTION = 0.02
MAX_LEASE = 1000


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    """Epoch seconds when the bucket is full again."""
    retry_after: int
    """Seconds until a token is available (0 when allowed)."""

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class _Pocket:
    """A replica's share of one bucket."""

    __slots__ = ("empty_until", "global_remaining", "lease", "per_minute", "tokens")

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        """The limit its tokens were leased under."""
        self.tokens = 0
        self.global_remaining = 0.0
        self.empty_until = 0.0
        self.lease: asyncio.Future[None] | None = None


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pockets: dict[str, _Pocket] = {}

    async def take(self, bucket: str, per_minute: int) -> Decision:
        """Spend one token of ``bucket`` (capacity ``per_minute``, refilled at ``per_minute / 60`` per second)."""
        pocket = self._pocket(bucket, per_minute)
        # Lease until this request holds a token or the bucket is known to be empty: waiters that lose the
        # race for a small chunk lease again instead of being refused while the bucket still has tokens.
        while pocket.tokens <= 0 and time.monotonic() >= pocket.empty_until:
            await self._lease(bucket, per_minute, pocket)
        rate = per_minute / 60.0
        if pocket.tokens > 0:
            pocket.tokens -= 1
            remaining = min(int(pocket.global_remaining) + pocket.tokens, per_minute)
            return Decision(True, per_minute, remaining, _reset_at(per_minute, remaining, rate), 0)
        retry_after = max(1, math.ceil(max(pocket.empty_until - time.monotonic(), 1.0 / rate)))
        return Decision(False, per_minute, 0, _reset_at(per_minute, 0, rate), retry_after)

    async def peek(self, bucket: str, per_minute: int) -> Decision:
        """The bucket as :meth:`take` would report it, without spending a token: for the headers of a request
        refused for another reason (scope, IP, signature), which must not use up the key's budget."""
        known = self._pockets.get(bucket)
        pocket = self._pocket(bucket, per_minute)
        if pocket is not known:  # first sight here (or a new limit): lease, so the numbers are the real ones
            await self._lease(bucket, per_minute, pocket)
        remaining = min(int(pocket.global_remaining) + pocket.tokens, per_minute)
        return Decision(True, per_minute, remaining, _reset_at(per_minute, remaining, per_minute / 60.0), 0)

    def _pocket(self, bucket: str, per_minute: int) -> _Pocket:
        """This replica's share of ``bucket``: a new one when the limit has changed, since tokens leased under
        the old limit (up to 2 % of it) must not be spent under the new one."""
        pocket = self._pockets.get(bucket)
        if pocket is None or pocket.per_minute != per_minute:
            pocket = self._pockets[bucket] = _Pocket(per_minute)
        return pocket

    async def _lease(self, bucket: str, per_minute: int, pocket: _Pocket) -> None:
        if pocket.lease is not None:
            await asyncio.shield(pocket.lease)
            return
        pocket.lease = asyncio.get_running_loop().create_future()
        want = min(MAX_LEASE, max(1, math.ceil(per_minute * LEASE_FRACTION)))
        rate = per_minute / 60.0
        try:
            async with asyncio.timeout(2.0):
                row = await self._pool.fetchrow(
                    "SELECT granted, remaining FROM rate_lease($1, $2, $3, $4)", bucket, float(per_minute), rate, want
                )
            assert row is not None
            pocket.tokens += row["granted"]
            pocket.global_remaining = row["remaining"]
            if row["granted"] == 0:
                pocket.empty_until = time.monotonic() + (1.0 - row["remaining"]) / rate
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Limits protect capacity, not secrets: while Postgres is away, requests are let through.
            log.warning("rate limit store unreachable; allowing requests", extra={"bucket": bucket})
            pocket.tokens += want
        finally:
            pocket.lease.set_result(None)
            pocket.lease = None


def _reset_at(capacity: int, remaining: int, rate: float) -> int:
    return int(time.time() + max(0, capacity - remaining) / rate)
