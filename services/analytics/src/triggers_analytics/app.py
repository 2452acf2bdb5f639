"""The analytics component: two consumers that keep hourly aggregates, a purge job, and the analytics API."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from importlib.resources import files

from triggers_common.http import Component
from triggers_common.jobs import Periodic, purge_in_batches
from triggers_common.models import utc_now
from triggers_common.runtime import Runtime

from triggers_analytics import store
from triggers_analytics.consumer import create_consumers
from triggers_analytics.routes import build_routes

log = logging.getLogger("triggers.analytics")

PURGE_BATCH = 1000


def first_id_of(moment: datetime) -> uuid.UUID:
    """A bound below every UUIDv7 created at or after ``moment``, above every earlier one."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)


async def purge(rt: Runtime) -> dict[str, int]:
    """Forget the event ids no replay can bring back (see ``analytics_dedupe_window_s``); the counts stay."""
    s, now = rt.settings, utc_now()
    counted_before = first_id_of(now - timedelta(seconds=s.analytics_dedupe_window_s))
    # An event's last transition comes at most when the inbox purges it (acked: up to its pending retention
    # plus its acked retention after creation); the window covers a replay of the status topic after that.
    last_transition = s.inbox_pending_retention_s + s.inbox_acked_retention_s
    states_before = first_id_of(now - timedelta(seconds=s.analytics_dedupe_window_s + last_transition))
    removed = {
        "counted": await purge_in_batches(
            lambda: store.purge_before(rt.pool, "analytics_counted", counted_before, PURGE_BATCH), PURGE_BATCH
        ),
        "states": await purge_in_batches(
            lambda: store.purge_before(rt.pool, "analytics_event_status", states_before, PURGE_BATCH), PURGE_BATCH
        ),
    }
    if any(removed.values()):
        log.info("analytics purge", extra=removed)
    return removed


def create_component(rt: Runtime) -> Component:
    consumers = create_consumers(rt)
    purge_job = Periodic("analytics-purge", rt.settings.analytics_purge_interval_s, lambda: purge(rt))

    async def start() -> None:
        for consumer in consumers:
            await consumer.start()
        await purge_job.start()

    async def stop() -> None:
        await purge_job.stop()
        for consumer in consumers:
            await consumer.stop()

    return Component(
        name="analytics",
        routes=build_routes(rt),
        migrations=files("triggers_analytics") / "migrations",
        start=start,
        stop=stop,
    )
