"""The inbox consumer: Kafka ``triggers.events.v1`` -> Postgres, in batches, idempotent by event id."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from aiokafka.structs import ConsumerRecord
from prometheus_client import Histogram
from triggers_common.kafka import BatchConsumer, Rejected
from triggers_common.models import NULL, PRIORITIES, as_utc
from triggers_common.runtime import Runtime
from triggers_common.telemetry import consumer_span_attributes, record_spans

from triggers_inbox.store import NewRow, insert_events


class _RowFields(msgspec.Struct):
    """The fields of an event record (``EventRecord``) that make its inbox row, ids and times decoded as such."""

    event_id: uuid.UUID
    tenant_id: str
    created_at: datetime
    source: str
    event_type: str
    payload: msgspec.Raw
    metadata: msgspec.Raw = NULL


class _Priority(msgspec.Struct):
    """The one metadata key the inbox reads (the others are skipped, not decoded)."""

    priority: Any = None


_decode_row = msgspec.json.Decoder(_RowFields).decode
_decode_priority = msgspec.json.Decoder(_Priority).decode
WRITE_SECONDS = Histogram(
    "triggers_inbox_write_seconds",
    "Time to write one consumed batch to Postgres (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def decode_event(value: bytes) -> NewRow:
    """A Kafka record as an inbox row; anything malformed raises and is dead-lettered by the consumer."""
    record = _decode_row(value)
    priority = "normal"
    metadata: bytes | None = None
    if (raw := bytes(record.metadata)) != b"null":
        metadata = raw
        given = _decode_priority(raw).priority
        if given in PRIORITIES:
            priority = given
    payload = bytes(record.payload)
    if payload[:1] != b"{":
        raise ValueError("payload is not a JSON object")
    return NewRow(
        event_id=record.event_id,
        tenant_id=record.tenant_id,
        created_at=as_utc(record.created_at),
        source=record.source,
        event_type=record.event_type,
        priority=priority,
        payload=payload,
        metadata=metadata,
    )


def create_consumer(rt: Runtime) -> BatchConsumer[NewRow]:
    group = f"{rt.settings.consumer_group_prefix}-inbox"
    topic = rt.settings.events_topic

    def span_attributes(row: NewRow) -> dict[str, Any]:
        return consumer_span_attributes(topic, group, str(row.event_id), row.tenant_id)

    async def persist(batch: list[tuple[ConsumerRecord[Any, Any], NewRow]]) -> Rejected:
        # A span for each sampled record, timed around the write of the whole batch.
        with record_spans(rt.tracer, "inbox persist", batch, span_attributes):
            try:
                started = time.perf_counter()
                async with rt.pool.acquire() as conn, conn.transaction():
                    await insert_events(conn, [row for _, row in batch])
                WRITE_SECONDS.observe(time.perf_counter() - started)
                return []
            except asyncpg.DataError:
                return await persist_one_by_one(batch)

    async def persist_one_by_one(batch: list[tuple[ConsumerRecord[Any, Any], NewRow]]) -> Rejected:
        """A row Postgres refuses as data must not hold back the rest: find it, and hand it back."""
        rejected: Rejected = []
        async with rt.pool.acquire() as conn:
            for record, row in batch:
                try:
                    async with conn.transaction():
                        await insert_events(conn, [row])
                except asyncpg.DataError as exc:
                    rejected.append((record, f"{type(exc).__name__}: {exc}"))
        return rejected

    return BatchConsumer(
        rt.settings,
        rt.producer,
        group=group,
        topic=topic,
        decode=decode_event,
        handle=persist,
        max_records=rt.settings.inbox_batch_max,
    )
