"""The status relay: moves the outbox of event status transitions to ``triggers.event-status.v1``.

Every ack, delete, quarantine, redrive and purge writes its outbox row in the statement that makes it (the
delete of an event still in flight: in the transaction that writes the event when it arrives), so a
transition is published if and only if it committed. The relay deletes a batch of rows and produces them in
one transaction that commits only after the broker acked them all: if Kafka fails, the rows stay and go out
later. At-least-once: a crash between the ack and the commit sends a batch again, so readers treat a repeated
``(event_id, status, at)`` as one. Records are keyed by tenant id, like the events topic. Every inbox process
runs a relay, but an advisory lock lets only one publish at a time, in outbox order, so the transitions of
one event reach the topic in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import msgspec
from triggers_common.errors import ServiceUnavailable
from triggers_common.models import EventStatusRecord, format_timestamp
from triggers_common.runtime import Runtime

from triggers_inbox import store

log = logging.getLogger("triggers.inbox.status")

BATCH = 1000
IDLE_POLL_S = 0.2
"""How often an idle relay looks for new rows: the longest a transition waits before it is published."""
_HEADERS = [("content-type", b"application/json")]


def to_record(change: store.StatusChange) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    value = EventStatusRecord(
        event_id=str(change.event_id), tenant_id=change.tenant_id, status=change.status, at=format_timestamp(change.at)
    )
    return change.tenant_id.encode(), msgspec.json.encode(value), _HEADERS


class StatusRelay:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="inbox-status-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def relay_once(self) -> int:
        """Publish one batch of the outbox; how many records went out."""
        async with self._rt.pool.acquire() as conn, conn.transaction():
            changes = await store.take_status_changes(conn, BATCH)
            if changes:
                await self._rt.producer.send_many(self._rt.settings.status_topic, [to_record(c) for c in changes])
        return len(changes)

    async def _loop(self) -> None:
        delay = IDLE_POLL_S
        while True:
            try:
                if await self.relay_once() == BATCH:
                    continue  # more are waiting
                delay = IDLE_POLL_S
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ServiceUnavailable, TimeoutError) as exc:
                log.warning("status relay failed; the rows stay and are retried", extra={"error": repr(exc)})
                delay = min(max(delay * 2, 0.5), 10.0)
            except Exception:  # a bug must not end the relay for good: the rows stay and are retried
                log.exception("status relay failed; the rows stay and are retried")
                delay = min(max(delay * 2, 0.5), 10.0)
            await asyncio.sleep(delay)
