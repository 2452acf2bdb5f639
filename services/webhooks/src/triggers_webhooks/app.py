"""The webhooks component: subscriptions over HTTP; the consumer that schedules a delivery per matching event
and webhook; the dispatcher that sends them, signed, with retries and a circuit breaker per webhook; and the
worker that runs replays of a time range."""

from __future__ import annotations

from importlib.resources import files

from triggers_common.http import Component
from triggers_common.runtime import Runtime

from triggers_webhooks.deliver import DeliveryClient
from triggers_webhooks.dispatch import Dispatcher, Subscriptions, create_consumer
from triggers_webhooks.replay import Replays
from triggers_webhooks.routes import build_routes


def create_component(rt: Runtime) -> Component:
    client = DeliveryClient(rt.settings.private_webhooks_allowed, rt.settings.webhook_timeout_s)
    subscriptions = Subscriptions(rt)
    dispatcher = Dispatcher(rt, client)
    consumer = create_consumer(rt, subscriptions, dispatcher.wake)
    replays = Replays(rt)

    async def start() -> None:
        await client.start()
        await subscriptions.start()  # loaded before the first event is consumed
        await consumer.start()
        await dispatcher.start()
        await replays.start()

    async def stop() -> None:
        await replays.stop()
        await dispatcher.stop()
        await consumer.stop()
        await subscriptions.stop()
        await client.stop()

    return Component(
        name="webhooks",
        routes=build_routes(rt, client),
        migrations=files("triggers_webhooks") / "migrations",
        start=start,
        stop=stop,
    )
