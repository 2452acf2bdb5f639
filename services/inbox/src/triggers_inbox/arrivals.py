"""Wakes requests waiting for an event that is still between Kafka and Postgres (read-your-writes)."""

from __future__ import annotations

import asyncio

from triggers_common.db import Listener

from triggers_inbox.store import NOTIFY_CHANNEL, decode_tenants


class Arrivals:
    """LISTENs on the inbox channel. Each committed consumer batch notifies with the tenants it wrote (or
    with nothing, meaning "anyone"), and ends those tenants' current wait generation."""

    def __init__(self, dsn: str) -> None:
        self._generations: dict[str, asyncio.Event] = {}
        self._listener = Listener(dsn, NOTIFY_CHANNEL, self._arrived)

    def current(self, tenant_id: str) -> asyncio.Event:
        """Take this *before* checking the database, then wait on it: no arrival can slip in between."""
        generation = self._generations.get(tenant_id)
        if generation is None:
            generation = self._generations[tenant_id] = asyncio.Event()
        return generation

    def _arrived(self, payload: str | None) -> None:
        tenants = decode_tenants(payload or "")
        if tenants is None:
            woken, self._generations = list(self._generations.values()), {}
        else:
            woken = [g for g in (self._generations.pop(t, None) for t in tenants) if g is not None]
        for generation in woken:
            generation.set()

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
