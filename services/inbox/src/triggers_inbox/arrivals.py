"""Wakes requests waiting for an event that is still between Kafka and Postgres (read-your-writes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from triggers_inbox.store import NOTIFY_CHANNEL, decode_tenants

log = logging.getLogger("triggers.inbox.arrivals")


class Arrivals:
    """LISTENs on the inbox channel. Each committed consumer batch notifies with the tenants it wrote (or
    with nothing, meaning "anyone"), and ends those tenants' current wait generation."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._generations: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def current(self, tenant_id: str) -> asyncio.Event:
        """Take this *before* checking the database, then wait on it: no arrival can slip in between."""
        generation = self._generations.get(tenant_id)
        if generation is None:
            generation = self._generations[tenant_id] = asyncio.Event()
        return generation

    def _arrived(self, _conn: Any = None, _pid: int = 0, _channel: str = "", payload: object = "") -> None:
        tenants = decode_tenants(payload if isinstance(payload, str) else "")
        if tenants is None:
            woken, self._generations = list(self._generations.values()), {}
        else:
            woken = [g for g in (self._generations.pop(t, None) for t in tenants) if g is not None]
        for generation in woken:
            generation.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="inbox-arrivals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(NOTIFY_CHANNEL, self._arrived)
                delay = 0.2
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                self._arrived()  # anything committed while we were not listening
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("inbox listener disconnected; reconnecting in %.1fs", delay)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
