"""Replays of a time range (POST /v1/webhooks/{id}/replay): every event of the tenant created in the range
that matches the webhook now is delivered again, read back from ``triggers.events.v1`` (the record of what
was accepted, for as long as Kafka keeps it; events of a webhook's disabled days included), except events
deleted since.

A replay is a row in Postgres. Any webhooks process takes a pending one (``SKIP LOCKED``), holds it while it
reads, and saves the offsets it reached after every batch; if the process dies, another one carries on
from there once the hold lapses. Rescheduling is idempotent: the delivery of an event to a webhook has one
id, so a replay never makes two of it, and its ``webhook-id`` stays what the receiver saw before."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from triggers_common.jobs import Periodic
from triggers_common.models import event_record_decoder, parse_timestamp
from triggers_common.runtime import Runtime

from triggers_webhooks import store
from triggers_webhooks.dispatch import delivery_rows, matches

log = logging.getLogger("triggers.webhooks.replay")

POLL_S = 1.0
HOLD = timedelta(seconds=60)
"""A running replay belongs to its process this long after its last progress."""
BATCH = 1000
MAX_TRIES = 5
"""A replay that failed this many times is given up, with the last error."""


class Replays:
    """Runs pending replays, one at a time per process."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._poll = Periodic("webhook-replays", POLL_S, self.run_pending)
        # A record's timestamp is taken when it is produced, a little after its event's created_at (at most
        # the send timeout): read that much past ``until``, then keep the events created before it.
        self._skew = timedelta(seconds=rt.settings.send_timeout_s + 5)

    async def start(self) -> None:
        await self._poll.start()

    async def stop(self) -> None:
        await self._poll.stop()

    async def run_pending(self) -> None:
        while (replay := await store.claim_replay(self._rt.pool, HOLD)) is not None:
            try:
                await self.run(replay)
            except Exception as exc:  # taken up again once its hold lapses, from the offsets it reached
                log.exception("replay failed", extra={"replay_id": str(replay.replay_id), "try": replay.tries})
                if replay.tries >= MAX_TRIES:
                    await store.finish_replay(self._rt.pool, replay.replay_id, f"{type(exc).__name__}: {exc}"[:500])

    async def run(self, replay: store.Replay) -> None:
        pool = self._rt.pool
        hook = await store.get_webhook(pool, replay.tenant_id, replay.webhook_id)
        if hook is None:  # deleted meanwhile (its replays went with it)
            return
        subscription = store.Subscription(hook.webhook_id, replay.tenant_id, hook.events, hook.sources)
        tenant_key = replay.tenant_id.encode()
        topic = self._rt.settings.events_topic
        consumer = AIOKafkaConsumer(
            topic,  # with no group, the consumer gets every partition of the topic
            bootstrap_servers=self._rt.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # what a 503 refused was aborted and is not replayed
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = sorted(consumer.assignment())
            if not tps:
                raise RuntimeError(f"topic {topic} has no partitions")
            end = await self._end_offsets(consumer, tps, replay)
            remaining: set[TopicPartition] = set()
            starts = await consumer.offsets_for_times({tp: _ms(replay.since) for tp in tps})
            positions: dict[str, int] = {}
            for tp in tps:
                found = starts[tp]
                start = replay.positions.get(str(tp.partition), found.offset if found is not None else end[tp])
                positions[str(tp.partition)] = min(start, end[tp])
                if start < end[tp]:
                    consumer.seek(tp, start)
                    remaining.add(tp)
            read = 0
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=BATCH)
                rows: list[store.NewDelivery] = []
                for tp, records in batches.items():
                    read += len(records)
                    for record in records:
                        if record.offset >= end[tp]:
                            break
                        if record.key != tenant_key:
                            continue
                        try:
                            event = event_record_decoder.decode(record.value)
                        except Exception:  # noqa: S112 - the live consumer dead-lettered it already
                            continue
                        if event.tenant_id != replay.tenant_id:
                            continue
                        if not replay.since <= parse_timestamp(event.created_at) < replay.until:
                            continue
                        if matches(subscription, event.event_type, event.source):
                            rows.extend(delivery_rows(event, [subscription]))
                for tp in list(remaining):
                    reached = min(await consumer.position(tp), end[tp])
                    positions[str(tp.partition)] = reached
                    if reached >= end[tp]:
                        remaining.discard(tp)
                if rows:  # a deleted event is gone from replays too
                    deleted = await store.deleted_events(pool, replay.tenant_id, [r.event_id for r in rows])
                    rows = [r for r in rows if r.event_id not in deleted]
                scheduled = await store.schedule_deliveries(pool, rows, again=True) if rows else 0
                await store.replay_progress(pool, replay.replay_id, positions, scheduled, HOLD)
            await store.finish_replay(pool, replay.replay_id)
            log.info(
                "replay completed",
                extra={"replay_id": str(replay.replay_id), "records_read": read, "partitions": len(tps)},
            )
        finally:
            await consumer.stop()

    async def _end_offsets(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], replay: store.Replay
    ) -> dict[TopicPartition, int]:
        """Per partition, the offset to stop before: the first record produced after the range (and its
        skew), or the end of the log as it is now."""
        after = await consumer.offsets_for_times({tp: _ms(replay.until + self._skew) for tp in tps})
        log_end = await consumer.end_offsets(tps)
        return {tp: after[tp].offset if after[tp] is not None else log_end[tp] for tp in tps}


def _ms(at: datetime) -> int:
    """Kafka's timestamp of ``at``; record timestamps start at the epoch."""
    return max(0, int(at.timestamp() * 1000))
