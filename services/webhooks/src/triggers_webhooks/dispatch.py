"""From events to deliveries: the consumer matches each event of ``triggers.events.v1`` against the tenant's
active subscriptions and schedules one delivery per match; the dispatcher sends due deliveries, signed, and
schedules retries (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default, ±20 % jitter, ``Retry-After``
honoured). A 410 disables the webhook. Every webhooks process runs both; ``SKIP LOCKED`` and a hold longer
than an attempt keep two dispatchers from sending one attempt twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter as Counter_
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram
from triggers_common.db import Listener
from triggers_common.jobs import Periodic
from triggers_common.kafka import BatchConsumer, Rejected
from triggers_common.models import NULL, EventRecord, event_record_decoder, parse_timestamp
from triggers_common.runtime import Runtime

from triggers_webhooks import signing, store
from triggers_webhooks.deliver import TIMEOUT_S, Attempt, DeliveryBody, DeliveryClient

log = logging.getLogger("triggers.webhooks.dispatch")

DELIVERIES = Counter("triggers_webhook_attempts_total", "Delivery attempts by outcome", ["outcome"])
OUTCOMES = {name: DELIVERIES.labels(name) for name in ("succeeded", "will_retry", "failed", "gone", "webhook_disabled")}
ATTEMPT_SECONDS = Histogram(
    "triggers_webhook_attempt_seconds",
    "Time from sending a delivery to its answer (or error)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
QUEUE_DEPTH = Gauge(
    "triggers_webhook_pending_deliveries", "Deliveries waiting to be sent or retried", multiprocess_mode="mostrecent"
)
OLDEST_DUE = Gauge(
    "triggers_webhook_oldest_due_seconds",
    "How long the oldest due delivery has been waiting to be sent",
    multiprocess_mode="mostrecent",
)
QUEUE_STATS_S = 15.0

HOLD = timedelta(seconds=TIMEOUT_S * 4)
"""How long a claimed delivery belongs to its dispatcher: far longer than one attempt can take."""
IDLE_POLL_S = 0.2
INDEX_REFRESH_S = 5.0
CLOCK_MARGIN = timedelta(seconds=1)


def matches(subscription: store.Subscription, event_type: str, source: str) -> bool:
    if subscription.sources is not None and source not in subscription.sources:
        return False
    for pattern in subscription.events:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class Subscriptions:
    """Every active subscription, by tenant, in memory: reloaded on each change notification and every 5 s,
    and before the consumer handles an event created after the last load (``ensure_fresh``), so an event
    accepted after a webhook was created always finds it."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._by_tenant: dict[str, list[store.Subscription]] = {}
        self._read_at = datetime.min.replace(tzinfo=UTC)
        self._listener = Listener(rt.settings.database_url, store.CHANGES_CHANNEL, self._changed)
        self._refresh = Periodic("webhook-index", INDEX_REFRESH_S, self.load)

    def matching(self, tenant_id: str, event_type: str, source: str) -> list[store.Subscription]:
        return [s for s in self._by_tenant.get(tenant_id, ()) if matches(s, event_type, source)]

    async def load(self) -> None:
        by_tenant: dict[str, list[store.Subscription]] = defaultdict(list)
        subscriptions, read_at = await store.active_subscriptions(self._rt.pool)
        for subscription in subscriptions:
            by_tenant[subscription.tenant_id].append(subscription)
        if read_at >= self._read_at:  # a slower, older load never replaces a newer one
            self._by_tenant, self._read_at = dict(by_tenant), read_at

    async def ensure_fresh(self, newest_event: datetime) -> None:
        """Reload unless the index was read after ``newest_event`` was created (with a margin for the clocks
        of the gateway and the database)."""
        if self._read_at < newest_event + CLOCK_MARGIN:
            await self.load()

    def _changed(self, _payload: str | None) -> None:
        asyncio.get_running_loop().create_task(self.load()).add_done_callback(_log_failure)

    async def start(self) -> None:
        await self.load()  # before any event is consumed
        await self._listener.start()
        await self._refresh.start()

    async def stop(self) -> None:
        await self._refresh.stop()
        await self._listener.stop()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("subscription index reload failed; the next one is at most 5 s away")


def create_consumer(rt: Runtime, subscriptions: Subscriptions) -> BatchConsumer[EventRecord]:
    async def schedule(batch: list[tuple[ConsumerRecord[Any, Any], EventRecord]]) -> Rejected:
        await subscriptions.ensure_fresh(max(parse_timestamp(event.created_at) for _, event in batch))
        rows = []
        for _, event in batch:
            hooks = subscriptions.matching(event.tenant_id, event.event_type, event.source)
            if not hooks:
                continue
            body = msgspec.json.encode(
                DeliveryBody(
                    event.event_id,
                    event.created_at,
                    event.source,
                    event.event_type,
                    event.payload,
                    event.status,
                    event.metadata if event.metadata is not None else NULL,
                    event.acknowledged_at,
                )
            )
            event_id = uuid.UUID(event.event_id)
            for hook in hooks:
                delivery_id = uuid.uuid5(hook.webhook_id, event.event_id)
                rows.append(store.NewDelivery(delivery_id, event.tenant_id, hook.webhook_id, event_id, body))
        if rows:
            await store.insert_deliveries(rt.pool, rows)
        return []

    return BatchConsumer(
        rt.settings,
        rt.producer,
        group=f"{rt.settings.consumer_group_prefix}-webhooks",
        topic=rt.settings.events_topic,
        decode=event_record_decoder.decode,
        handle=schedule,
        max_records=rt.settings.inbox_batch_max,
    )


class Dispatcher:
    def __init__(self, rt: Runtime, client: DeliveryClient) -> None:
        self._rt = rt
        self._client = client
        self._retries = rt.settings.webhook_retries
        self._concurrency = rt.settings.webhook_concurrency
        self._per_webhook_limit = rt.settings.webhook_endpoint_concurrency
        self._per_webhook: Counter_[uuid.UUID] = Counter_()
        self._disable_after = timedelta(seconds=rt.settings.webhook_disable_after_s)
        self._queue_stats = Periodic("webhook-queue-stats", QUEUE_STATS_S, self._measure_queue, run_first=True)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")
        await self._queue_stats.start()

    async def _measure_queue(self) -> None:
        depth, oldest = await store.queue_state(self._rt.pool)
        QUEUE_DEPTH.set(depth)
        OLDEST_DUE.set(oldest)

    async def stop(self) -> None:
        await self._queue_stats.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()

    async def _loop(self) -> None:
        while True:
            # Each attempt is a task of its own: a slow endpoint holds its own attempts' slots, never a batch.
            # A webhook with as many attempts in flight as it may have gets no more until one ends.
            free = self._concurrency - len(self._inflight)
            busy = [w for w, n in self._per_webhook.items() if n >= self._per_webhook_limit]
            try:
                due = await store.claim_due(self._rt.pool, free, HOLD, busy) if free > 0 else []
            except Exception:
                log.exception("claiming due deliveries failed")
                due = []
            taken: Counter_[uuid.UUID] = Counter_()
            release = []
            for delivery in due:
                if self._per_webhook[delivery.webhook_id] + taken[delivery.webhook_id] >= self._per_webhook_limit:
                    release.append(delivery.delivery_id)  # more of one webhook than it may have at once
                    continue
                taken[delivery.webhook_id] += 1
                self._start(delivery)
            if release:
                await store.release_claims(self._rt.pool, release)
            if not due:
                await asyncio.sleep(IDLE_POLL_S)

    def _start(self, delivery: store.Due) -> None:
        self._per_webhook[delivery.webhook_id] += 1
        task = asyncio.create_task(self._attempt(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _attempt(self, delivery: store.Due) -> None:
        try:
            await self._send(delivery)
        except Exception:
            log.exception("delivery attempt failed to record", extra={"delivery_id": str(delivery.delivery_id)})
        finally:
            self._per_webhook[delivery.webhook_id] -= 1
            if self._per_webhook[delivery.webhook_id] <= 0:
                del self._per_webhook[delivery.webhook_id]

    async def _send(self, delivery: store.Due) -> None:
        pool = self._rt.pool
        if not delivery.is_active:
            await store.record_attempt(pool, delivery.delivery_id, "failed", None, "webhook disabled", None)
            OUTCOMES["webhook_disabled"].inc()
            return
        message_id = f"msg_{delivery.delivery_id.hex}"
        headers = signing.headers(delivery.secrets, message_id, int(time.time()), delivery.body)
        attempt = await self._client.post(delivery.url, delivery.body, headers)
        ATTEMPT_SECONDS.observe(attempt.latency_ms / 1000)
        await store.webhook_health(pool, delivery.webhook_id, attempt.ok, self._disable_after)
        if attempt.ok:
            OUTCOMES["succeeded"].inc()
            await store.record_attempt(
                pool, delivery.delivery_id, "succeeded", attempt.status_code, None, None, attempt.latency_ms
            )
            return
        error = attempt.error or f"HTTP {attempt.status_code}"
        if attempt.status_code == 410:
            OUTCOMES["gone"].inc()
            await store.disable_webhook(pool, delivery.webhook_id, "the endpoint answered 410 Gone")
            await store.record_attempt(pool, delivery.delivery_id, "failed", 410, error, None, attempt.latency_ms)
            return
        retry_in = self.retry_in(delivery.attempts, attempt)
        status = "failed" if retry_in is None else "pending"
        OUTCOMES["failed" if retry_in is None else "will_retry"].inc()
        await store.record_attempt(
            pool, delivery.delivery_id, status, attempt.status_code, error, retry_in, attempt.latency_ms
        )

    def retry_in(self, attempts_before: int, attempt: Attempt) -> timedelta | None:
        """When to try again after a failed attempt, or None when the schedule is used up."""
        if attempts_before >= len(self._retries):
            return None
        seconds = self._retries[attempts_before] * random.uniform(0.8, 1.2)
        if attempt.status_code in (429, 503) and attempt.retry_after and attempt.retry_after.isdigit():
            seconds = max(seconds, min(float(attempt.retry_after), 86_400.0))
        return timedelta(seconds=seconds)
