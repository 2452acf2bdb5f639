"""What one process shares between the components it runs: settings, the pool, the producer, the key cache, the
tracer."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from triggers_common.access import Access
from triggers_common.auth import KeyCache, sync_dev_key
from triggers_common.db import create_pool, migrate, ping
from triggers_common.http import Component
from triggers_common.kafka import Producer, ensure_topics
from triggers_common.ratelimit import RateLimiter
from triggers_common.settings import Settings

log = logging.getLogger("triggers.runtime")

GC_THRESHOLD = 50_000
"""Allocations (net of frees) between two young-generation collections of the cyclic GC."""


class Runtime:
    """Opened once at start-up (``open``), closed at shutdown; components read its attributes per request."""

    def __init__(self, settings: Settings, tracer_provider: TracerProvider | None = None) -> None:
        """``tracer_provider``: where spans go; None turns tracing off (no span is created). Shut down at close."""
        self.settings = settings
        self._tracer_provider = tracer_provider
        self.tracer: Tracer | None = tracer_provider.get_tracer("triggers") if tracer_provider else None
        self.producer = Producer(settings)
        self._pool: asyncpg.Pool | None = None
        self._keys: KeyCache | None = None
        self._access: Access | None = None
        self._relaxed_pool: asyncpg.Pool | None = None
        self._query_pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "runtime not opened"
        return self._pool

    @property
    def relaxed_pool(self) -> asyncpg.Pool:
        """For writes whose loss in a Postgres crash does no harm (rate buckets, idempotency completions):
        their commits do not wait for the disk."""
        assert self._relaxed_pool is not None, "runtime not opened"
        return self._relaxed_pool

    @property
    def query_pool(self) -> asyncpg.Pool:
        """For filtered reads whose best index depends on the values (an inbox page with several filters):
        each statement is planned for its own parameters. A generic plan would pick one index for every
        combination of values, and for some of them read thousands of rows to return fifty."""
        assert self._query_pool is not None, "runtime not opened"
        return self._query_pool

    @property
    def keys(self) -> KeyCache:
        assert self._keys is not None, "runtime not opened"
        return self._keys

    @property
    def access(self) -> Access:
        assert self._access is not None, "runtime not opened"
        return self._access

    async def open(self, components: Sequence[Component]) -> None:
        """Connect, migrate, create topics, sync the dev key, start the producer and then the components."""
        self._pool = await create_pool(self.settings)
        self._relaxed_pool = await create_pool(self.settings, durable=False, max_size=4)
        self._query_pool = await create_pool(self.settings, custom_plans=True)
        self._keys = KeyCache(self.settings, self._pool)
        await self._keys.start()
        self._access = Access(self.settings, self._keys, RateLimiter(self._relaxed_pool))
        async with self._pool.acquire() as conn:
            await migrate(conn, migration_sources(components))
            await sync_dev_key(conn, self.settings.dev_mode)
        await ensure_topics(self.settings)
        await self.producer.start()
        for component in components:
            if component.start is not None:
                await component.start()
        # What exists now lives as long as the process: the cyclic GC need not walk it again. Requests make
        # many short-lived, acyclic objects that reference counting frees; a collection per 700 allocations
        # (the default) cost a fifth of the CPU of a bulk request, so collect far less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        log.info("started", extra={"components": ",".join(c.name for c in components)})

    async def close(self, components: Sequence[Component]) -> None:
        for component in reversed(components):
            if component.stop is not None:
                try:
                    await component.stop()
                except Exception:
                    log.exception("stopping %s failed", component.name)
        await self.producer.stop()
        if self._keys is not None:
            await self._keys.stop()
        for pool in (self._pool, self._relaxed_pool, self._query_pool):
            if pool is not None:
                await asyncio.wait_for(pool.close(), 10)
        if self._tracer_provider is not None:
            await asyncio.to_thread(self._tracer_provider.shutdown)  # exports the spans still queued

    async def ready(self) -> dict[str, bool]:
        postgres, kafka = await asyncio.gather(ping(self.pool), self.producer.ping())
        return {"postgres": postgres, "kafka": kafka}


def migration_sources(components: Sequence[Component]) -> list[tuple[str, Traversable]]:
    sources: list[tuple[str, Traversable]] = [("common", files("triggers_common") / "migrations")]
    sources.extend((c.name, c.migrations) for c in components if c.migrations is not None)
    return sources
