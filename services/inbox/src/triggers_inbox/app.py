"""The inbox component: the Kafka -> Postgres consumer and the inbox HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from importlib.resources import files

from triggers_common.http import Component
from triggers_common.runtime import Runtime

from triggers_inbox.arrivals import Arrivals
from triggers_inbox.consumer import create_consumer
from triggers_inbox.routes import build_routes


def create_component(rt: Runtime) -> Component:
    arrivals = Arrivals(rt.settings.database_url)
    consumer = create_consumer(rt)
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        await arrivals.start()
        task = asyncio.create_task(consumer.run_forever(), name="inbox-consumer")

    async def stop() -> None:
        await consumer.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        await arrivals.stop()

    return Component(
        name="inbox",
        routes=build_routes(rt, arrivals),
        migrations=files("triggers_inbox") / "migrations",
        start=start,
        stop=stop,
    )
