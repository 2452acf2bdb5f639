"""Accepting events: idempotency claims, one produce batch per request, and what each event's answer is."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta

import asyncpg
import msgspec
from triggers_common.batching import Coalescer
from triggers_common.errors import Conflict, ServiceUnavailable, TriggersError
from triggers_common.kafka import TransactionalProducer
from triggers_common.models import NULL, EventRecord, format_timestamp, new_event_id
from triggers_common.runtime import Runtime

from triggers_ingest import store
from triggers_ingest.validation import NewEvent, request_hash

_JSON_HEADER = b"application/json"


class IdempotencyKeyReused(TriggersError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "Idempotency key already used with a different request body"


class Accepted(msgspec.Struct, frozen=True):
    event_id: str
    created_at: str
    replayed: bool = False
    """True when this answer repeats an earlier request's (same idempotency key, same body)."""


def to_record(
    event: NewEvent, tenant_id: str, event_id: uuid.UUID, created: datetime
) -> tuple[EventRecord, list[tuple[str, bytes]]]:
    """The Kafka record for an accepted event, with CloudEvents binary-mode headers."""
    created_at = format_timestamp(created)
    record = EventRecord(
        event_id=str(event_id),
        created_at=created_at,
        source=event.source,
        event_type=event.event_type,
        payload=msgspec.Raw(event.payload),
        metadata=msgspec.Raw(event.metadata) if event.metadata is not None else NULL,
        tenant_id=tenant_id,
    )
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", record.event_id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.event_type.encode()),
        ("ce_time", created_at.encode()),
        ("content-type", _JSON_HEADER),
    ]
    return record, headers


class Publisher:
    """Turns validated events into Kafka records, at most one event per idempotency key."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.producer = TransactionalProducer(rt.settings, rt.settings.events_topic, "ingest")
        ttl = timedelta(seconds=rt.settings.idempotency_ttl_s)
        # A claim older than this, still incomplete, belonged to a request that died or got a 503.
        self._stale = timedelta(seconds=rt.settings.send_timeout_s + 2.0)
        # Concurrent requests share one statement for their claims, and one for their completions.
        self._claims: Coalescer[store.Claim, store.KeyRow | None] = Coalescer(
            lambda claims: store.claim_keys(rt.pool, claims, ttl)
        )
        self._completions = Coalescer(self._complete)

    async def publish(
        self, tenant_id: str, events: list[NewEvent], traceparent: bytes
    ) -> list[Accepted | TriggersError]:
        """Produce every new event in one batch and answer for each; 503 for all if Kafka can't take them."""
        ids = [new_event_id() for _ in events]
        bids = [
            store.Claim(tenant_id, event.idempotency_key, request_hash(event), *ids[i])
            for i, event in enumerate(events)
            if event.idempotency_key is not None
        ]
        held = iter(await self._claims.run(bids))
        answers: list[Accepted | TriggersError] = []
        to_send: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
        claimed: list[store.Claim] = []
        bid_of = iter(bids)
        for event, (event_id, created) in zip(events, ids, strict=True):
            if event.idempotency_key is not None:
                outcome = await self._settle(next(bid_of), next(held))
                if not isinstance(outcome, store.Claim):
                    answers.append(outcome)
                    continue
                claimed.append(outcome)
                event_id, created = outcome.event_id, outcome.created_at
            record, headers = to_record(event, tenant_id, event_id, created)
            headers.append(("traceparent", traceparent))
            to_send.append((tenant_id.encode(), msgspec.json.encode(record), headers))
            answers.append(Accepted(record.event_id, record.created_at))
        try:
            if to_send:
                await self.producer.send_many(to_send)
        except ServiceUnavailable:
            if claimed:  # let the client's retry take these keys over at once, with the same event ids
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await store.release_keys(self._rt.pool, claimed)
            raise
        await self._completions.run(claimed)
        return answers

    async def _complete(self, claimed: list[store.Claim]) -> list[None]:
        # Losing this in a Postgres crash is harmless: the claim then looks stale, and a repeat of the request
        # re-sends the same event id, which every consumer dedupes.
        await store.complete_keys(self._rt.relaxed_pool, claimed)
        return [None] * len(claimed)

    async def _settle(self, bid: store.Claim, row: store.KeyRow | None) -> store.Claim | Accepted | TriggersError:
        """The claim to produce under (``bid``, or a stale one taken over), the earlier answer, or the error."""
        if row is not None and row.claimed:
            return bid
        in_flight = Conflict(
            "A request with this idempotency key is in flight",
            {"idempotency_key": bid.key} | ({"event_id": str(row.event_id)} if row is not None else {}),
        )
        if row is None:
            return in_flight
        if row.request_hash != bid.request_hash:
            return IdempotencyKeyReused(details={"idempotency_key": bid.key})
        if row.completed_at is not None:
            return Accepted(str(row.event_id), format_timestamp(row.created_at), replayed=True)
        if row.claimed_at > datetime.now(row.claimed_at.tzinfo) - self._stale:
            return in_flight
        # Its request died or got a 503: send the very same event id again (consumers dedupe by it).
        if await store.take_over_key(self._rt.pool, bid.tenant_id, bid.key, row.claimed_at):
            return msgspec.structs.replace(bid, event_id=row.event_id, created_at=row.created_at)
        return in_flight
