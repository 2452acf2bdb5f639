"""Inbox depth and oldest-pending age as Prometheus gauges, with bounded cardinality: a ``tenant`` label only
for the ``TOP`` deepest and the ``TOP`` oldest tenants, plus unlabelled totals for all of them. The label is
a keyed hash of the tenant id (``Settings.tenant_label``), because /metrics needs no key.

A periodic job in every process reads the numbers; one of them computes them (one statement over the pending
partial index, ~150 ms with 1,000,000 pending events) and stores them for the others. Scrapes only read the
cached answer, so any process answers a scrape with the same database-wide numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from triggers_common.jobs import Periodic
from triggers_common.models import utc_now
from triggers_common.runtime import Runtime

from triggers_inbox import store

TOP = 10


class InboxGauges(Collector):
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._stats: store.InboxStats | None = None
        self.job = Periodic("inbox-gauges", rt.settings.inbox_stats_interval_s, self.refresh, run_first=True)

    async def refresh(self) -> None:
        interval = self._rt.settings.inbox_stats_interval_s
        self._stats = await store.shared_inbox_stats(self._rt.pool, TOP, interval * 0.9)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats
        if stats is None:
            return
        now = utc_now()

        def age(depth: store.TenantDepth) -> float:
            return (now - depth.oldest).total_seconds() if depth.oldest is not None else 0.0

        depth = GaugeMetricFamily(
            "triggers_inbox_pending_events", f"Pending events of the {TOP} tenants with the most", labels=["tenant"]
        )
        for d in stats.deepest:
            depth.add_metric([self._rt.settings.tenant_label(d.tenant_id)], d.pending)
        oldest = GaugeMetricFamily(
            "triggers_inbox_oldest_pending_age_seconds",
            f"Age of the oldest pending event of the {TOP} tenants with the oldest",
            labels=["tenant"],
        )
        for d in stats.oldest:
            oldest.add_metric([self._rt.settings.tenant_label(d.tenant_id)], age(d))
        yield depth
        yield oldest
        yield GaugeMetricFamily(
            "triggers_inbox_pending_events_all", "Pending events of every tenant", value=stats.total.pending
        )
        yield GaugeMetricFamily(
            "triggers_inbox_oldest_pending_age_all_seconds",
            "Age of the oldest pending event of any tenant (0 when none)",
            value=age(stats.total),
        )
        yield GaugeMetricFamily(
            "triggers_inbox_quarantined_events_all", "Quarantined events of every tenant", value=stats.quarantined
        )
