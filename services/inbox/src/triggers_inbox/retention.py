"""Retention: acknowledged events go after ``inbox_acked_retention_s`` (7 days) from their ack, pending and
quarantined ones and delete markers after ``inbox_pending_retention_s`` (30 days) from their creation, and
expired leases a day after they ended. Small batches with a pause between them, so the API never waits
behind the purge; each purged event gets a 'purged' status record."""

from __future__ import annotations

import logging
from datetime import timedelta

from triggers_common.jobs import Periodic, purge_in_batches
from triggers_common.models import utc_now
from triggers_common.runtime import Runtime

from triggers_inbox import store

log = logging.getLogger("triggers.inbox.retention")

BATCH = 1000
LEASE_GRACE = timedelta(days=1)
"""How long an expired lease can still ack the events no other lease has taken since."""


async def purge(rt: Runtime) -> dict[str, int]:
    """One full retention pass; how many events and leases it removed."""
    s = rt.settings
    now = utc_now()
    acked_before = now - timedelta(seconds=s.inbox_acked_retention_s)
    created_before = now - timedelta(seconds=s.inbox_pending_retention_s)
    removed = {
        "acknowledged": await purge_in_batches(lambda: store.purge_acknowledged(rt.pool, acked_before, BATCH), BATCH),
        "unacknowledged": await purge_in_batches(
            lambda: store.purge_unacknowledged(rt.pool, created_before, BATCH), BATCH
        ),
        "leases": await purge_in_batches(lambda: store.purge_leases(rt.pool, now - LEASE_GRACE, BATCH), BATCH),
    }
    if any(removed.values()):
        log.info("retention purge", extra=removed)
    return removed


def retention_job(rt: Runtime) -> Periodic:
    async def work() -> None:
        await purge(rt)

    return Periodic("inbox-retention", rt.settings.inbox_purge_interval_s, work)
