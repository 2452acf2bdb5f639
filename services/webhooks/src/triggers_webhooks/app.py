"""The webhooks component: subscriptions over HTTP. Deliveries (the consumer and dispatcher) are not built
yet: a subscription is stored, validated and listed, but nothing is sent to it."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component
from triggers_common.runtime import Runtime

from triggers_webhooks.routes import build_routes


def create_component(rt: Runtime) -> Component:
    return Component(
        name="webhooks",
        routes=build_routes(rt),
        migrations=files("triggers_webhooks") / "migrations",
    )
