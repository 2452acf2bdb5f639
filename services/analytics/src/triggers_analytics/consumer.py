"""The analytics consumers: ``triggers.events.v1`` and ``triggers.event-status.v1`` -> hourly aggregates.

Each reads its topic in its own consumer group and writes one batch in one transaction, before its offsets are
committed. Counts are exact under redelivery, re-sent records and replayed partitions: an event counts once per
id (``analytics_counted``), and a transition counts once per event (``analytics_event_status``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter
from triggers_common.kafka import BatchConsumer, Rejected
from triggers_common.models import EventStatusRecord, as_utc, parse_timestamp, uuid7_time
from triggers_common.runtime import Runtime
from triggers_common.telemetry import consumer_span_attributes, record_spans

from triggers_analytics import store
from triggers_analytics.aggregate import Transition, apply_transitions, hour_of


class _EventFields(msgspec.Struct):
    """The fields of an event record that analytics reads (the payload is skipped, not decoded)."""

    event_id: uuid.UUID
    tenant_id: str
    created_at: datetime
    source: str
    event_type: str


COUNTED = Counter("triggers_analytics_events_total", "Events counted by analytics, each event once")
REPEATS = Counter(
    "triggers_analytics_repeated_records_total",
    "Event records analytics left out because their event was already counted (redeliveries, re-sends, replays)",
)
_decode_event = msgspec.json.Decoder(_EventFields).decode
_decode_status = msgspec.json.Decoder(EventStatusRecord).decode
COUNTED_STATUSES = ("acknowledged", "deleted")


def decode_event(value: bytes) -> store.CountedEvent:
    e = _decode_event(value)
    return store.CountedEvent(e.event_id, e.tenant_id, hour_of(as_utc(e.created_at)), e.source, e.event_type)


def decode_transition(value: bytes) -> Transition | None:
    """An ack or delete; None for the transitions analytics does not count (quarantine, redrive, purge)."""
    record = _decode_status(value)
    if record.status not in COUNTED_STATUSES:
        return None
    event_id = uuid.UUID(record.event_id)
    at = parse_timestamp(record.at)
    created = uuid7_time(event_id) or at  # every event id is a UUIDv7: the id tells when the event was created
    return Transition(
        event_id, record.tenant_id, hour_of(created), record.status, (at - created).total_seconds() * 1000
    )


def create_consumers(rt: Runtime) -> list[BatchConsumer[Any]]:
    """Analytics may lag by half a second: its fetches wait up to 500 ms for 256 KiB, so under load it reads
    fewer, bigger batches and takes less CPU from ingest and the inbox on shared cores."""
    prefix = rt.settings.consumer_group_prefix
    events_group, status_group = f"{prefix}-analytics", f"{prefix}-analytics-status"

    def span_attributes(event: store.CountedEvent) -> dict[str, Any]:
        return consumer_span_attributes(rt.settings.events_topic, events_group, str(event.event_id), event.tenant_id)

    async def count(batch: list[tuple[ConsumerRecord[Any, Any], store.CountedEvent]]) -> Rejected:
        with record_spans(rt.tracer, "analytics count", batch, span_attributes):  # sampled records only
            return await count_batch(batch)

    async def count_batch(batch: list[tuple[ConsumerRecord[Any, Any], store.CountedEvent]]) -> Rejected:
        unique = {event.event_id: event for _, event in batch}
        try:
            async with rt.pool.acquire() as conn, conn.transaction():
                new = await store.count_events(conn, list(unique.values()))
            COUNTED.inc(new)
            REPEATS.inc(len(batch) - new)
            return []
        except asyncpg.DataError:  # a value Postgres refuses must not hold back the rest: find it, hand it back
            rejected: Rejected = []
            async with rt.pool.acquire() as conn:
                for record, event in batch:
                    try:
                        async with conn.transaction():
                            new = await store.count_events(conn, [event])
                        COUNTED.inc(new)
                        REPEATS.inc(1 - new)
                    except asyncpg.DataError as exc:
                        rejected.append((record, f"{type(exc).__name__}: {exc}"))
            return rejected

    async def transitions(batch: list[tuple[ConsumerRecord[Any, Any], Transition | None]]) -> Rejected:
        counted = [t for _, t in batch if t is not None]
        if not counted:
            return []
        async with rt.pool.acquire() as conn, conn.transaction():
            known = await store.lock_event_states(conn, [t.event_id for t in counted])
            await store.save_status_deltas(conn, apply_transitions(known, counted))
        return []

    return [
        BatchConsumer(
            rt.settings,
            rt.producer,
            group=events_group,
            topic=rt.settings.events_topic,
            decode=decode_event,
            handle=count,
            max_wait_ms=500,
            min_bytes=262_144,
        ),
        BatchConsumer(
            rt.settings,
            rt.producer,
            group=status_group,
            topic=rt.settings.status_topic,
            decode=decode_transition,
            handle=transitions,
            max_wait_ms=500,
            min_bytes=262_144,
        ),
    ]
