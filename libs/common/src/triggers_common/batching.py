"""Group commit for database statements: concurrent callers share one set-based statement."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs the items of concurrent :meth:`run` calls through ``run_batch`` together.

    A call starts a batch at once while fewer than ``max_in_flight`` batches are running; otherwise it waits
    for one to finish, and everything that gathered meanwhile goes in the next batch. So an idle system adds no
    latency, and a busy one spends one statement (one round trip, one commit) on many requests.
    ``run_batch`` must answer one result per item, in order; if it raises, every call in the batch raises.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 1000,
        max_in_flight: int = 2,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: deque[tuple[Sequence[T], asyncio.Future[list[R]]]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, items: Sequence[T]) -> list[R]:
        """The results for ``items``, computed in a batch with whatever other calls are waiting."""
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        while self._waiting and len(self._running) < self._max_in_flight:
            calls: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
            size = 0
            while self._waiting and (not calls or size + len(self._waiting[0][0]) <= self._max_batch):
                call = self._waiting.popleft()
                calls.append(call)
                size += len(call[0])
            task = asyncio.create_task(self._run(calls))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_batches()

    async def _run(self, calls: list[tuple[Sequence[T], asyncio.Future[list[R]]]]) -> None:
        items = [item for call_items, _ in calls for item in call_items]
        try:
            results = await self._run_batch(items)
        except asyncio.CancelledError:  # shutting down
            for _, future in calls:
                future.cancel()
            raise
        except Exception as exc:  # every caller gets the failure, and the coalescer keeps going
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for call_items, future in calls:
            if not future.done():  # the caller may have been cancelled meanwhile
                future.set_result(list(results[start : start + len(call_items)]))
            start += len(call_items)
