"""The inbox component: the Kafka -> Postgres consumer and the inbox HTTP API."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component, register_collector, unregister_collector
from triggers_common.jobs import Periodic
from triggers_common.runtime import Runtime

from triggers_inbox.arrivals import Arrivals
from triggers_inbox.consumer import create_consumer
from triggers_inbox.gauges import InboxGauges
from triggers_inbox.retention import retention_job
from triggers_inbox.routes import build_routes
from triggers_inbox.status import StatusRelay


def create_component(rt: Runtime) -> Component:
    arrivals = Arrivals(rt.settings.database_url)
    consumer = create_consumer(rt)
    relay = StatusRelay(rt)
    gauges = InboxGauges(rt)
    jobs: list[StatusRelay | Periodic] = [relay, retention_job(rt), gauges.job]

    async def start() -> None:
        await arrivals.start()
        await consumer.start()
        for job in jobs:
            await job.start()
        register_collector(gauges)

    async def stop() -> None:
        unregister_collector(gauges)
        for job in reversed(jobs):
            await job.stop()
        await consumer.stop()
        await arrivals.stop()

    return Component(
        name="inbox",
        routes=build_routes(rt, arrivals),
        migrations=files("triggers_inbox") / "migrations",
        start=start,
        stop=stop,
    )
