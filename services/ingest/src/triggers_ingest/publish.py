"""Accepting events: idempotency claims, one produce batch per request, and what each event's answer is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime, timedelta

import asyncpg
import msgspec
from triggers_common.batching import Coalescer
from triggers_common.errors import Conflict, ServiceUnavailable, TriggersError
from triggers_common.models import NULL, EventRecord, format_timestamp, new_event_ids, parse_timestamp
from triggers_common.runtime import Runtime
from triggers_common.transactions import TransactionalProducer

from triggers_ingest import store
from triggers_ingest.validation import NewEvent, body_hash, request_hash

log = logging.getLogger("triggers.ingest")
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
    event: NewEvent, tenant_id: str, event_id: str, created_at: str
) -> tuple[EventRecord, list[tuple[str, bytes]]]:
    """The Kafka record for an accepted event, with CloudEvents binary-mode headers."""
    record = EventRecord(
        event_id=event_id,
        created_at=created_at,
        source=event.source,
        event_type=event.event_type,
        payload=msgspec.Raw(event.payload),
        metadata=msgspec.Raw(event.metadata) if event.metadata is not None else NULL,
        tenant_id=tenant_id,
    )
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.event_type.encode()),
        ("ce_time", created_at.encode()),
        ("content-type", _JSON_HEADER),
    ]
    return record, headers


COMPLETION_FLUSH_S = 0.02
"""How long a finished claim waits in memory before it is marked done in Postgres with the others."""
REMEMBER_DONE_S = 10.0
"""How long this process answers repeats of a finished claim from memory (well past the write)."""
MAX_UNWRITTEN = 100_000


class Completions:
    """Marks claims done once their events are in Kafka: in this process's memory at once, and in Postgres for
    all of them together every 20 ms, in one statement that does not wait for the disk.

    The request does not wait for that write: it was a statement and a round trip per request, which under
    load cost more CPU than anything else on the keyed path, and it held requests back from the transaction
    groups. Until the write, a repeat on this process is answered from memory (the original event); on
    another replica it gets the 409 "in flight" for those few milliseconds. A write lost in a crash (or while
    Postgres is down) leaves the claim unfinished: a repeat after the stale window re-sends the same event
    id, which every consumer dedupes.
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._unwritten: list[store.Claim] = []
        self._done: dict[tuple[str, str], tuple[store.Claim, float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, claims: list[store.Claim]) -> None:
        if not claims:
            return
        now = time.monotonic()
        for claim in claims:
            self._done.pop((claim.tenant_id, claim.key), None)  # to the end: the dict stays in time order
            self._done[claim.tenant_id, claim.key] = (claim, now)
        self._unwritten.extend(claims)
        self._wake.set()

    def find(self, tenant_id: str, key: str) -> store.Claim | None:
        """The finished claim of ``key``, if this process finished it in the last few seconds."""
        hit = self._done.get((tenant_id, key))
        return hit[0] if hit is not None else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="idempotency-completions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.write()  # what is left, before the process goes

    async def write(self) -> None:
        """Mark everything finished so far as done in Postgres; on failure it stays for the next write."""
        batch, self._unwritten = self._unwritten, []
        if not batch:
            return
        try:
            await store.complete_keys(self._rt.relaxed_pool, batch)
        except BaseException:  # failed, or cancelled at shutdown: keep them for the next write
            self._unwritten[:0] = batch[-MAX_UNWRITTEN:]  # beyond that, claims go stale: still safe
            raise

    async def _loop(self) -> None:
        delay = COMPLETION_FLUSH_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(delay)  # gather what finishes meanwhile into the same statement
            try:
                await self.write()
                delay = COMPLETION_FLUSH_S
            except Exception as exc:  # Postgres away (or a bug): back off, the claims wait in memory
                delay = min(max(delay * 2, 0.5), 10.0)
                log.warning("could not mark idempotency keys done; retrying", extra={"error": repr(exc)})
            if self._unwritten:
                self._wake.set()
            horizon = time.monotonic() - REMEMBER_DONE_S
            while self._done:
                key, (_, at) = next(iter(self._done.items()))  # oldest first: insertion order
                if at > horizon:
                    break
                del self._done[key]


class Publisher:
    """Turns validated events into Kafka records, at most one event per idempotency key."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.producer = TransactionalProducer(rt.settings, rt.settings.events_topic, "ingest")
        ttl = timedelta(seconds=rt.settings.idempotency_ttl_s)
        # A claim older than this, still incomplete, belonged to a request that died or got a 503.
        self._stale = timedelta(seconds=rt.settings.send_timeout_s + 2.0)
        # Concurrent requests share one statement for their claims, one statement at a time: with two in flight
        # each held about 4 claims under load, with one about 7, and Postgres did a fifth fewer commits.
        self._claims: Coalescer[store.Claim, store.KeyRow | None] = Coalescer(
            lambda claims: store.claim_keys(rt.pool, claims, ttl), max_in_flight=1
        )
        self.completions = Completions(rt)

    async def publish(
        self, tenant_id: str, events: list[NewEvent], traceparent: bytes
    ) -> list[Accepted | TriggersError]:
        """Produce every new event in one batch and answer for each; 503 for all if Kafka can't take them."""
        ids = new_event_ids(len(events))
        bids = [
            store.Claim(
                tenant_id,
                event.idempotency_key,
                request_hash(event),
                uuid.UUID(ids[i][0]),
                parse_timestamp(ids[i][1]),
                body_hash(event),
            )
            for i, event in enumerate(events)
            if event.idempotency_key is not None
        ]
        held = iter(await self._claims.run(bids))
        answers: list[Accepted | TriggersError] = []
        to_send: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
        claimed: list[store.Claim] = []
        mine: dict[str, store.Claim] = {}  # the keys this request claimed
        bid_of = iter(bids)
        for event, (event_id, created_at) in zip(events, ids, strict=True):
            if event.idempotency_key is not None:
                bid, row = next(bid_of), next(held)
                first = mine.get(bid.key)
                if first is not None:  # a twin earlier in this bulk request: its answer, not a second event
                    answers.append(self._twin(first, bid))
                    continue
                outcome = await self._settle(bid, row)
                if not isinstance(outcome, store.Claim):
                    answers.append(outcome)
                    continue
                claimed.append(outcome)
                mine[bid.key] = outcome
                if outcome is not bid:  # a stale claim taken over: its event id again
                    event_id, created_at = str(outcome.event_id), format_timestamp(outcome.created_at)
            record, headers = to_record(event, tenant_id, event_id, created_at)
            headers.append(("traceparent", traceparent))
            to_send.append((tenant_id.encode(), msgspec.json.encode(record), headers))
            answers.append(Accepted(event_id, created_at))
        try:
            if to_send:
                await self.producer.send_many(to_send)
        except ServiceUnavailable:
            if claimed:  # let the client's retry take these keys over at once, with the same event ids
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await store.release_keys(self._rt.pool, claimed)
            raise
        self.completions.add(claimed)
        return answers

    @staticmethod
    def _twin(first: store.Claim, bid: store.Claim) -> Accepted | TriggersError:
        """The answer to an item whose key an earlier item of the same request claimed: that item's event (sent
        in the same batch, so it is as durable as the request's answer), or 422 for a different body."""
        if not bid.same_body(first):
            return IdempotencyKeyReused(details={"idempotency_key": bid.key})
        return Accepted(str(first.event_id), format_timestamp(first.created_at), replayed=True)

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
        if not bid.same_body(row):
            return IdempotencyKeyReused(details={"idempotency_key": bid.key})
        if row.completed_at is not None:
            return Accepted(str(row.event_id), format_timestamp(row.created_at), replayed=True)
        done = self.completions.find(bid.tenant_id, bid.key)
        if done is not None and done.event_id == row.event_id:  # finished here, not written yet
            return Accepted(str(done.event_id), format_timestamp(done.created_at), replayed=True)
        if row.claimed_at > datetime.now(row.claimed_at.tzinfo) - self._stale:
            return in_flight
        # Its request died or got a 503: send the very same event id again (consumers dedupe by it).
        if await store.take_over_key(self._rt.pool, bid.tenant_id, bid.key, row.claimed_at):
            return msgspec.structs.replace(bid, event_id=row.event_id, created_at=row.created_at)
        return in_flight
