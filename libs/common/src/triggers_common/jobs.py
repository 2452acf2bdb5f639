"""Background jobs that repeat: retention purges and the like, run by every replica of their component."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger("triggers.jobs")

PURGE_PAUSE_S = 0.05
"""Between two purge batches: the API's statements get the table in between."""


class Periodic:
    """Runs ``work`` about every ``interval_s`` (±10 % jitter, so replicas drift apart) until stopped.

    A failed run is logged and the next one happens on schedule: a database outage never stops the job.
    """

    def __init__(
        self, name: str, interval_s: float, work: Callable[[], Awaitable[object]], *, run_first: bool = False
    ) -> None:
        self.name = name
        self._interval_s = interval_s
        self._work = work
        self._run_first = run_first
        """Run once right at start, then on schedule."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        first = self._run_first
        while True:
            if not first:
                await asyncio.sleep(self._interval_s * random.uniform(0.9, 1.1))
            first = False
            try:
                await self._work()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("job failed; it runs again later", extra={"job": self.name, "error": repr(exc)})


async def purge_in_batches(delete_batch: Callable[[], Awaitable[int]], batch_size: int) -> int:
    """Call ``delete_batch`` (which deletes at most ``batch_size`` rows) until it deletes fewer; the total."""
    total = 0
    while True:
        deleted = await delete_batch()
        total += deleted
        if deleted < batch_size:
            return total
        await asyncio.sleep(PURGE_PAUSE_S)
