"""The ingest component: the HTTP gateway that makes events durable in Kafka, and API key management."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component
from triggers_common.jobs import Periodic, purge_in_batches
from triggers_common.runtime import Runtime

from triggers_ingest import store
from triggers_ingest.keys import build_key_routes
from triggers_ingest.publish import Publisher
from triggers_ingest.routes import build_routes

PURGE_BATCH = 1000


def create_component(rt: Runtime) -> Component:
    publisher = Publisher(rt)
    purge = Periodic(
        "idempotency-key-purge",
        rt.settings.idempotency_purge_interval_s,
        lambda: purge_in_batches(lambda: store.purge_expired_keys(rt.pool, PURGE_BATCH), PURGE_BATCH),
    )

    async def start() -> None:
        await publisher.producer.start()
        await publisher.completions.start()
        await purge.start()

    async def stop() -> None:
        await purge.stop()
        await publisher.completions.stop()
        await publisher.producer.stop()

    return Component(
        name="ingest",
        routes=[*build_routes(rt, publisher), *build_key_routes(rt)],
        migrations=files("triggers_ingest") / "migrations",
        start=start,
        stop=stop,
    )
