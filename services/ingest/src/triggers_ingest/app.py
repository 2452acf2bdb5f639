"""The ingest component: the HTTP gateway that makes events durable in Kafka."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component
from triggers_common.runtime import Runtime

from triggers_ingest.publish import Publisher
from triggers_ingest.routes import build_routes


def create_component(rt: Runtime) -> Component:
    publisher = Publisher(rt)
    return Component(
        name="ingest",
        routes=build_routes(rt, publisher),
        migrations=files("triggers_ingest") / "migrations",
        start=publisher.producer.start,
        stop=publisher.producer.stop,
    )
