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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from triggers_common.batching import Coalescer
from triggers_common.db import Listener
from triggers_common.jobs import Periodic
from triggers_common.kafka import BatchConsumer, Rejected
from triggers_common.models import NULL, EventRecord, event_record_decoder
from triggers_common.runtime import Runtime
from triggers_common.telemetry import (
    consumer_span_attributes,
    kafka_traceparent,
    record_spans,
    sampled_parent,
    traceparent_of,
    valid_traceparent,
)

from triggers_webhooks import signing, store
from triggers_webhooks.deliver import Attempt, DeliveryBody, DeliveryClient

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
OPEN_BREAKERS = Gauge(
    "triggers_webhook_open_breakers",
    "Webhooks whose circuit breaker holds their deliveries back (open, or its one probe in flight)",
    multiprocess_mode="livesum",
)
QUEUE_STATS_S = 15.0

IDLE_POLL_S = 0.2
CLAIM_LINGER_S = 0.003
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
    """Every active subscription, by tenant, in memory: read whole on each change notification and every 5 s,
    and brought up to date (only what changed) before the consumer handles an event created after the last
    read (``ensure_fresh``), so an event accepted after a webhook was created always finds it."""

    CHANGE_MARGIN = timedelta(seconds=10)
    """Changes are read from this long before the last read: a change committed late has an earlier time."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._by_id: dict[uuid.UUID, store.Subscription] = {}
        self._by_tenant: dict[str, list[store.Subscription]] = {}
        self.tenant_keys: frozenset[bytes] = frozenset()
        """Kafka record keys (tenant ids) of the tenants with an active subscription."""
        self._read_at = datetime.min.replace(tzinfo=UTC)
        self._listener = Listener(rt.settings.database_url, store.CHANGES_CHANNEL, self._changed)
        self._refresh = Periodic("webhook-index", INDEX_REFRESH_S, self.load)

    def matching(self, tenant_id: str, event_type: str, source: str) -> list[store.Subscription]:
        return [s for s in self._by_tenant.get(tenant_id, ()) if matches(s, event_type, source)]

    async def load(self) -> None:
        subscriptions, read_at = await store.active_subscriptions(self._rt.pool)
        if read_at >= self._read_at:  # a slower, older load never replaces a newer one
            self._by_id = {s.webhook_id: s for s in subscriptions}
            self._index(read_at)

    async def ensure_fresh(self, newest_event: datetime) -> None:
        """Catch up on changes unless the index was read after ``newest_event`` was created (with a margin for
        the clocks of the gateway and the database)."""
        if self._read_at >= newest_event + CLOCK_MARGIN:
            return
        changes, read_at = await store.changed_subscriptions(self._rt.pool, self._read_at - self.CHANGE_MARGIN)
        if read_at < self._read_at:
            return
        if not changes:
            self._read_at = read_at
            return
        for subscription, active in changes:
            if active:
                self._by_id[subscription.webhook_id] = subscription
            else:
                self._by_id.pop(subscription.webhook_id, None)
        self._index(read_at)

    def _index(self, read_at: datetime) -> None:
        by_tenant: dict[str, list[store.Subscription]] = defaultdict(list)
        for subscription in self._by_id.values():
            by_tenant[subscription.tenant_id].append(subscription)
        self._by_tenant, self._read_at = dict(by_tenant), read_at
        self.tenant_keys = frozenset(tenant.encode() for tenant in by_tenant)

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


def delivery_rows(
    event: EventRecord, hooks: list[store.Subscription], traceparent: bytes | None = None
) -> list[store.NewDelivery]:
    """One delivery of ``event`` per webhook: its id is derived from both, and its body is what gets signed.
    ``traceparent``, the event's trace context, is kept for the attempts to continue."""
    if not hooks:
        return []
    trace = valid_traceparent(traceparent)
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
    return [
        store.NewDelivery(
            uuid.uuid5(hook.webhook_id, event.event_id), event.tenant_id, hook.webhook_id, event_id, body, trace
        )
        for hook in hooks
    ]


def create_consumer(
    rt: Runtime, subscriptions: Subscriptions, scheduled: Callable[[], None]
) -> BatchConsumer[EventRecord]:
    """The consumer group that turns events into deliveries; ``scheduled`` is called after it made some."""

    async def subscribed(records: list[ConsumerRecord[Any, Any]]) -> list[ConsumerRecord[Any, Any]]:
        """The records of tenants with a subscription (the key is the tenant id): only those are decoded. A
        record's timestamp is taken after its event's creation, so the index is fresh enough for each."""
        await subscriptions.ensure_fresh(datetime.fromtimestamp(max(r.timestamp for r in records) / 1000, UTC))
        return [r for r in records if r.key in subscriptions.tenant_keys]

    group = f"{rt.settings.consumer_group_prefix}-webhooks"
    topic = rt.settings.events_topic

    def span_attributes(event: EventRecord) -> dict[str, Any]:
        return consumer_span_attributes(topic, group, event.event_id, event.tenant_id)

    async def schedule(batch: list[tuple[ConsumerRecord[Any, Any], EventRecord]]) -> Rejected:
        # A span for each sampled record: matching it, and the write of the batch's deliveries.
        with record_spans(rt.tracer, "webhooks schedule", batch, span_attributes) as spans:
            rows = [
                row
                for record, event in batch
                for row in delivery_rows(
                    event,
                    subscriptions.matching(event.tenant_id, event.event_type, event.source),
                    kafka_traceparent(record.headers),
                )
            ]
            if rows:
                await store.schedule_deliveries(rt.pool, rows)
                scheduled()
            if spans:
                per_event = Counter_(str(row.event_id) for row in rows)
                for span, event in spans:
                    span.set_attribute("triggers.deliveries_scheduled", per_event[event.event_id])
        return []

    return BatchConsumer(
        rt.settings,
        rt.producer,
        group=group,
        topic=topic,
        decode=event_record_decoder.decode,
        handle=schedule,
        select=subscribed,
        max_records=rt.settings.inbox_batch_max,
    )


class Breakers:
    """One dispatcher's circuit breakers, one per webhook. After ``failures`` failed attempts in a row the
    webhook's breaker opens: its deliveries stay due, without using up retries, and get no attempt for
    ``cooldown_s``. Then one probe goes out: a success closes the breaker, a failure opens it again for twice
    as long (at most 10 min)."""

    MAX_COOLDOWN_S = 600.0
    FORGET_AFTER_S = 3600.0

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self._threshold = failures
        self._base_cooldown = cooldown_s
        self._failures: Counter_[uuid.UUID] = Counter_()
        self._open_until: dict[uuid.UUID, float] = {}
        """Webhooks whose breaker is not closed, and until when (monotonic) it lets nothing through."""
        self._cooldown: dict[uuid.UUID, float] = {}
        self._probing: set[uuid.UUID] = set()

    def held_back(self) -> list[uuid.UUID]:
        """Webhooks that may get no attempt now: open, or with their one probe in flight."""
        now = time.monotonic()
        held = self._held(now)
        OPEN_BREAKERS.set(len(held))
        for webhook_id in [w for w, until in self._open_until.items() if until < now - self.FORGET_AFTER_S]:
            self.record(webhook_id, ok=True)  # half-open for an hour without a probe: deleted, or idle
        return held

    def _held(self, now: float) -> list[uuid.UUID]:
        return [w for w, until in self._open_until.items() if until > now or w in self._probing]

    def _report(self) -> None:
        """The gauge now, not only at the dispatcher's next claim (an idle one may not claim for a while)."""
        OPEN_BREAKERS.set(len(self._held(time.monotonic())))

    def half_open(self) -> list[uuid.UUID]:
        """Webhooks whose breaker lets one probe through now."""
        now = time.monotonic()
        return [w for w, until in self._open_until.items() if until <= now and w not in self._probing]

    def limit(self, webhook_id: uuid.UUID, default: int) -> int:
        """Attempts the webhook may have in flight: one (the probe) when its breaker is half-open."""
        return 1 if webhook_id in self._open_until else default

    def started(self, webhook_id: uuid.UUID) -> None:
        if webhook_id in self._open_until:
            self._probing.add(webhook_id)

    def record(self, webhook_id: uuid.UUID, ok: bool) -> None:
        if ok:
            self._failures.pop(webhook_id, None)
            self._cooldown.pop(webhook_id, None)
            self._probing.discard(webhook_id)
            if self._open_until.pop(webhook_id, None) is not None:
                self._report()
        elif webhook_id in self._probing:  # the probe failed
            self._probing.discard(webhook_id)
            self._open(webhook_id, min(self._cooldown[webhook_id] * 2, self.MAX_COOLDOWN_S))
        elif webhook_id not in self._open_until:
            self._failures[webhook_id] += 1
            if self._failures[webhook_id] >= self._threshold:
                self._open(webhook_id, self._base_cooldown)

    def _open(self, webhook_id: uuid.UUID, cooldown: float) -> None:
        self._cooldown[webhook_id] = cooldown
        self._open_until[webhook_id] = time.monotonic() + cooldown
        self._report()
        log.warning("circuit breaker open: no attempts for %.0f s", cooldown, extra={"webhook_id": str(webhook_id)})


class _Result(msgspec.Struct, frozen=True):
    outcome: store.Outcome
    webhook_id: uuid.UUID
    reached: bool | None
    """Whether the endpoint answered 2xx (None: no attempt was made, e.g. the webhook is disabled)."""


class Dispatcher:
    def __init__(self, rt: Runtime, client: DeliveryClient) -> None:
        settings = rt.settings
        self._rt = rt
        self._client = client
        self._tracer = rt.tracer
        self._retries = settings.webhook_retries
        self._concurrency = settings.webhook_concurrency
        self._per_webhook_limit = settings.webhook_endpoint_concurrency
        self._per_webhook: Counter_[uuid.UUID] = Counter_()
        self._breakers = Breakers(settings.webhook_breaker_failures, settings.webhook_breaker_cooldown_s)
        self._hold = timedelta(seconds=client.timeout_s * 4)  # far longer than one attempt can take
        self._disable_after = timedelta(seconds=settings.webhook_disable_after_s)
        # Concurrent attempts' outcomes are written together: one statement for many deliveries.
        self._results: Coalescer[_Result, None] = Coalescer(self._write_results)
        self._queue_stats = Periodic("webhook-queue-stats", QUEUE_STATS_S, self._measure_queue, run_first=True)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._due = asyncio.Event()

    def wake(self) -> None:
        """Deliveries may be due now: look at once instead of at the next poll."""
        self._due.set()

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

    def _room(self) -> dict[uuid.UUID, int]:
        """How many more attempts each webhook with some in flight, or a breaker not closed, may have now."""
        room = {w: self._breakers.limit(w, self._per_webhook_limit) - n for w, n in self._per_webhook.items()}
        for webhook_id in self._breakers.held_back():
            room[webhook_id] = 0
        for webhook_id in self._breakers.half_open():
            room.setdefault(webhook_id, 1)
        return room

    async def _loop(self) -> None:
        while True:
            # Each attempt is a task of its own: a slow endpoint holds its own attempts' slots, never a batch.
            # A webhook with as many attempts in flight as it may have, or an open breaker, gets none now.
            free = self._concurrency - len(self._inflight)
            try:
                due = (
                    await store.claim_due(self._rt.pool, free, self._hold, self._per_webhook_limit, self._room())
                    if free > 0
                    else []
                )
            except Exception:
                log.exception("claiming due deliveries failed")
                due = []
            for delivery in due:
                self._start(delivery)
            if not due:  # until an attempt ends, a delivery is scheduled, or the next poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), IDLE_POLL_S)
                self._due.clear()
            if self._inflight:  # busy: let a few more slots free up, so one claim fills several
                await asyncio.sleep(CLAIM_LINGER_S)

    def _start(self, delivery: store.Due) -> None:
        self._per_webhook[delivery.webhook_id] += 1
        self._breakers.started(delivery.webhook_id)
        task = asyncio.create_task(self._attempt(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _attempt(self, delivery: store.Due) -> None:
        try:
            try:
                result = await self._send(delivery)
            finally:  # the endpoint's slot is free once it answered; the outcome is written after
                self._per_webhook[delivery.webhook_id] -= 1
                if self._per_webhook[delivery.webhook_id] <= 0:
                    del self._per_webhook[delivery.webhook_id]
                self._due.set()
            await self._results.run([result])
        except Exception:
            log.exception("delivery attempt failed to record", extra={"delivery_id": str(delivery.delivery_id)})

    async def _send(self, delivery: store.Due) -> _Result:
        """Send one attempt; its outcome, to be written."""
        if not delivery.is_active:
            self._breakers.record(delivery.webhook_id, ok=True)  # no attempt: a probe in flight must not hang on
            OUTCOMES["webhook_disabled"].inc()
            outcome = store.Outcome(delivery.delivery_id, "failed", None, "webhook disabled", None)
            return _Result(outcome, delivery.webhook_id, None)
        message_id = f"msg_{delivery.delivery_id.hex}"
        headers = signing.headers(delivery.secrets, message_id, int(time.time()), delivery.body)
        attempt = await self._post(delivery, headers)
        ATTEMPT_SECONDS.observe(attempt.latency_ms / 1000)
        self._breakers.record(delivery.webhook_id, attempt.ok)
        if attempt.ok:
            OUTCOMES["succeeded"].inc()
            outcome = store.Outcome(
                delivery.delivery_id, "succeeded", attempt.status_code, None, None, attempt.latency_ms
            )
            return _Result(outcome, delivery.webhook_id, True)
        error = attempt.error or f"HTTP {attempt.status_code}"
        if attempt.status_code == 410:
            OUTCOMES["gone"].inc()
            await store.disable_webhook(self._rt.pool, delivery.webhook_id, "the endpoint answered 410 Gone")
            outcome = store.Outcome(delivery.delivery_id, "failed", 410, error, None, attempt.latency_ms)
            return _Result(outcome, delivery.webhook_id, False)
        retry_in = self.retry_in(delivery.attempts, attempt)
        OUTCOMES["failed" if retry_in is None else "will_retry"].inc()
        outcome = store.Outcome(
            delivery.delivery_id,
            "failed" if retry_in is None else "pending",
            attempt.status_code,
            error,
            retry_in,
            attempt.latency_ms,
        )
        return _Result(outcome, delivery.webhook_id, False)

    async def _post(self, delivery: store.Due, headers: dict[str, str]) -> Attempt:
        """Send one attempt. If the event's trace is sampled, the attempt is a CLIENT span in it, which the
        receiver's ``traceparent`` names; otherwise the receiver gets the event's ``traceparent`` as it is."""
        parent = sampled_parent(delivery.traceparent) if self._tracer is not None else None
        if self._tracer is None or parent is None:
            if delivery.traceparent is not None:
                headers["traceparent"] = delivery.traceparent
            return await self._client.post(delivery.url, delivery.body, headers)
        url = urlsplit(delivery.url)  # never the whole URL: its path or query may hold the receiver's token
        span = self._tracer.start_span(
            "webhook deliver",
            parent,
            SpanKind.CLIENT,
            {
                "http.request.method": "POST",
                "url.scheme": url.scheme,
                "server.address": url.hostname or "",
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                "triggers.webhook_id": str(delivery.webhook_id),
                "triggers.delivery_id": str(delivery.delivery_id),
                "triggers.event_id": str(delivery.event_id),
                "triggers.tenant_id": delivery.tenant_id,
            },
        )
        if delivery.attempts:
            span.set_attribute("http.request.resend_count", delivery.attempts)
        try:
            headers["traceparent"] = traceparent_of(span).decode()
            attempt = await self._client.post(delivery.url, delivery.body, headers)
            if attempt.status_code is not None:
                span.set_attribute("http.response.status_code", attempt.status_code)
            if not attempt.ok:
                span.set_attribute("error.type", attempt.error_type or str(attempt.status_code))
                span.set_status(StatusCode.ERROR)
            return attempt
        finally:
            span.end()

    async def _write_results(self, results: list[_Result]) -> list[None]:
        # Without waiting for the disk: an outcome lost in a database crash leaves its delivery claimed, and it
        # is sent again (same webhook-id) once the hold lapses, which at-least-once delivery allows.
        await store.record_outcomes(self._rt.relaxed_pool, [r.outcome for r in results])
        succeeded = {r.webhook_id for r in results if r.reached}
        failed = {r.webhook_id for r in results if r.reached is False} - succeeded
        await store.webhooks_health(self._rt.pool, list(succeeded), list(failed), self._disable_after)
        return [None] * len(results)

    def retry_in(self, attempts_before: int, attempt: Attempt) -> timedelta | None:
        """When to try again after a failed attempt, or None when the schedule is used up."""
        if attempts_before >= len(self._retries):
            return None
        seconds = self._retries[attempts_before] * random.uniform(0.8, 1.2)
        after = attempt.retry_after
        if attempt.status_code in (429, 503) and after and after.isascii() and after.isdigit():  # not "¹"
            seconds = max(seconds, min(float(after), 86_400.0))
        return timedelta(seconds=seconds)
