"""Wakes requests waiting for an event that is still between Kafka and Postgres (read-your-writes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from triggers_inbox.store import NOTIFY_CHANNEL

log = logging.getLogger("triggers.inbox.arrivals")


class Arrivals:
    """LISTENs on the inbox channel; every committed consumer batch ends the current wait generation."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._generation = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def current(self) -> asyncio.Event:
        """Take this *before* checking the database, then wait on it: no arrival can slip in between."""
        return self._generation

    def _arrived(self, *_: Any) -> None:
        done, self._generation = self._generation, asyncio.Event()
        done.set()

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
