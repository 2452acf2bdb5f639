"""The webhooks component: subscriptions over HTTP, and signed test deliveries. Event deliveries (the consumer
and dispatcher) are not built yet: a subscription is stored, validated and listed, but events are not sent."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component
from triggers_common.runtime import Runtime

from triggers_webhooks.deliver import DeliveryClient
from triggers_webhooks.routes import build_routes


def create_component(rt: Runtime) -> Component:
    client = DeliveryClient(rt.settings.private_webhooks_allowed)
    return Component(
        name="webhooks",
        routes=build_routes(rt, client),
        migrations=files("triggers_webhooks") / "migrations",
        start=client.start,
        stop=client.stop,
    )
