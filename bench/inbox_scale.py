"""The inbox at scale, in a database and topics of its own: consumer persistence throughput (a backlog of
pre-produced records), GET /v1/inbox latency with that many pending events for every filter combination,
and lease + ack cycles per second. bench/run.py starts and stops the inbox process; this module does the rest.

Records are spread over ``tenants`` tenants, four sources, five event types, three priorities and two regions
(``metadata.region``), with creation times evenly spread over the last two days.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from triggers_common.auth import create_key, set_tenant_rate_limit
from triggers_common.models import EventRecord, format_timestamp, new_event_id

from bench import loadgen

PARTITIONS = 6
UNLIMITED = 1_000_000_000
SPREAD_NS = 2 * 86_400 * 10**9
SOURCES = ("shop", "billing", "crm", "ads")
TYPES = ("order.created", "order.paid", "user.signup", "invoice.sent", "ad.click")
PRIORITIES = ("low", "normal", "high")
REGIONS = ("eu", "us")
# Every filter of GET /v1/inbox alone, then combined; the window is the last hour (most events match).
FILTERS: dict[str, dict[str, str]] = {
    "none": {},
    "source": {"source": "crm"},
    "event_type": {"event_type": "order.paid"},
    "priority": {"priority": "high"},
    "created_after": {"created_after": "{hour_ago}"},
    "created window": {"created_after": "{day_ago}", "created_before": "{hour_ago}"},
    "metadata": {"metadata_key": "region", "metadata_value": "us"},
    "source+event_type": {"source": "ads", "event_type": "ad.click"},
    "type+priority+metadata": {
        "event_type": "user.signup",
        "priority": "low",
        "metadata_key": "region",
        "metadata_value": "eu",
    },
    "all filters": {
        "source": "billing",
        "event_type": "invoice.sent",
        "priority": "normal",
        "created_after": "{day_ago}",
        "metadata_key": "region",
        "metadata_value": "us",
    },
    "no match": {"source": "shop", "event_type": "never.sent"},  # reads every pending "shop" event of the tenant
}


@dataclass
class Stack:
    admin_url: str
    """The stack's database URL; the bench database is created next to it."""
    bootstrap: str
    run: str

    @property
    def database(self) -> str:
        return f"triggers_bench_inbox_{self.run}"

    @property
    def database_url(self) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{self.database}"))

    @property
    def topics(self) -> dict[str, str]:
        return {
            "TRIGGERS_EVENTS_TOPIC": f"bench-{self.run}.events",
            "TRIGGERS_STATUS_TOPIC": f"bench-{self.run}.event-status",
            "TRIGGERS_DEADLETTER_TOPIC": f"bench-{self.run}.deadletter",
        }

    def env(self) -> dict[str, str]:
        """What the inbox process needs to run on the bench's database and topics."""
        return {
            **self.topics,
            "TRIGGERS_DATABASE_URL": self.database_url,
            "TRIGGERS_KAFKA_BOOTSTRAP": self.bootstrap,
            "TRIGGERS_CONSUMER_GROUP_PREFIX": f"bench-{self.run}",
            "TRIGGERS_DEV_MODE": "true",
        }


def tenant_names(count: int) -> list[str]:
    return [f"bench-inbox-{i:03d}" for i in range(count)]


async def prepare(stack: Stack, events: int, tenants: int) -> dict[str, Any]:
    """Create the database and topics and produce the backlog; how long producing took."""
    admin = await asyncpg.connect(stack.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{stack.database}"')
    finally:
        await admin.close()
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await kafka_admin.start()
    try:
        await kafka_admin.create_topics(
            [NewTopic(stack.topics["TRIGGERS_EVENTS_TOPIC"], PARTITIONS, 1)]
            + [NewTopic(t, 1, 1) for k, t in stack.topics.items() if k != "TRIGGERS_EVENTS_TOPIC"]
        )
    finally:
        await kafka_admin.close()
    started = time.monotonic()
    await produce_backlog(stack, events, tenant_names(tenants))
    return {"events": events, "tenants": tenants, "produce_s": round(time.monotonic() - started, 1)}


async def produce_backlog(stack: Stack, events: int, tenants: list[str]) -> None:
    """``events`` records, a tenant's always on one partition, sent as ready-made batches."""
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=True, compression_type="lz4"
    )
    await producer.start()
    topic = stack.topics["TRIGGERS_EVENTS_TOPIC"]
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # "not leader" retries right after topic creation
    rng = random.Random(7)
    end_ns = time.time_ns()
    step_ns = SPREAD_NS // max(events, 1)
    try:
        batches = {p: producer.create_batch() for p in range(PARTITIONS)}
        pending: list[asyncio.Future[Any]] = []
        for i in range(events):
            t = i % len(tenants)
            event_id, created = new_event_id(end_ns - (events - i) * step_ns)
            metadata = {"region": REGIONS[rng.randrange(2)], "priority": PRIORITIES[rng.randrange(3)]}
            record = EventRecord(
                event_id=str(event_id),
                created_at=format_timestamp(created),
                source=SOURCES[rng.randrange(len(SOURCES))],
                event_type=TYPES[rng.randrange(len(TYPES))],
                payload=msgspec.Raw(b'{"order_id":"ord_%d","amount_cents":4999,"currency":"EUR"}' % i),
                metadata=msgspec.Raw(msgspec.json.encode(metadata)),
                tenant_id=tenants[t],
            )
            partition = t % PARTITIONS
            value = msgspec.json.encode(record)
            if batches[partition].append(key=tenants[t].encode(), value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batches[partition], topic, partition=partition))
                batches[partition] = producer.create_batch()
                batches[partition].append(key=tenants[t].encode(), value=value, timestamp=None)
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def wait_consumed(stack: Stack, events: int, deadline_s: float) -> dict[str, Any]:
    """Wait until every record is a row; the consumer's rate from the rows' own persisted_at span."""
    conn = await asyncpg.connect(stack.database_url)
    started = time.monotonic()
    try:
        while True:
            count = int(await conn.fetchval("SELECT count(*) FROM events"))
            if count >= events or time.monotonic() - started > deadline_s:
                break
            await asyncio.sleep(0.5)
        span = await conn.fetchval("SELECT extract(epoch FROM max(persisted_at) - min(persisted_at)) FROM events")
        # The state autovacuum brings the table to soon after a load this size (statistics, visibility map),
        # so the measurements see a table at rest, not the planner's view from early in the load or a vacuum
        # of 1,000,000 fresh rows competing for the two cores.
        await conn.execute("VACUUM (ANALYZE) events")
    finally:
        await conn.close()
    span_s = float(span or 0.0)
    return {
        "persisted": count,
        "missing": max(events - count, 0),
        "span_s": round(span_s, 2),
        "per_s": round(count / span_s) if span_s > 0 else None,
    }


async def create_keys(stack: Stack, tenants: int) -> list[str]:
    conn = await asyncpg.connect(stack.database_url)
    try:  # limits far above what the machine can do (the check itself still runs on every request)
        keys = []
        for name in tenant_names(tenants):
            await set_tenant_rate_limit(conn, name, UNLIMITED)
            keys.append((await create_key(conn, name, rate_limit=UNLIMITED)).key)
        return keys
    finally:
        await conn.close()


def _percentiles(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "p50": round(ms[len(ms) // 2], 2),
        "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max": round(ms[-1], 2),
    }


class Client:
    """A keep-alive HTTP/1.1 connection on raw asyncio streams (bench/loadgen.py): the client costs little
    CPU next to the server, so the numbers are the server's."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        self._host, self._port = parts.hostname, parts.port
        self._conn = loadgen.HttpConnection(self._host, self._port)

    async def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        payload = b"" if body is None else msgspec.json.encode(body)
        request = loadgen.build_request(self._host, self._port, path, {"X-API-Key": key}, payload, method)
        status, answer = await self._conn.exchange(request)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}: {answer[:500]!r}")
        return msgspec.json.decode(answer)

    def close(self) -> None:
        self._conn.close()


async def page_latency(url: str, keys: list[str], per_filter: int) -> dict[str, Any]:
    """GET /v1/inbox (limit 50, one request at a time, a random tenant each) for every filter combination;
    every other request asks for the page after the first one."""
    now = datetime.now(UTC)
    moments = {"hour_ago": (now - timedelta(hours=1)).isoformat(), "day_ago": (now - timedelta(days=1)).isoformat()}
    rng = random.Random(11)
    results: dict[str, Any] = {}
    client = Client(url)
    try:
        for name, template in FILTERS.items():
            params = {k: v.format(**moments) for k, v in template.items()}
            timings: list[float] = []
            matched = 0
            for i in range(per_filter + 5):  # the first five warm the connection pools and caches
                key = rng.choice(keys)
                query = {**params, "limit": "50"}
                if i % 2:
                    first = await client.call("GET", f"/v1/inbox?{urlencode(query)}", key)
                    if first["next_cursor"]:
                        query["cursor"] = first["next_cursor"]
                started = time.perf_counter()
                page = await client.call("GET", f"/v1/inbox?{urlencode(query)}", key)
                elapsed = (time.perf_counter() - started) * 1000
                if i >= 5:
                    timings.append(elapsed)
                    matched += len(page["events"])
            results[name] = {**_percentiles(timings), "requests": len(timings), "events_per_page": matched / per_filter}
    finally:
        client.close()
    worst = max(results.values(), key=lambda r: r["p99"])
    return {"filters": results, "worst_p99_ms": worst["p99"]}


async def lease_ack_cycles(url: str, keys: list[str], workers: int, duration_s: float) -> dict[str, Any]:
    """``workers`` clients, each on its own tenant and connection, looping: lease 10, ack them by lease."""
    acked = cycles = failed = 0
    deadline = time.monotonic() + duration_s

    async def worker(key: str) -> None:
        nonlocal acked, cycles, failed
        client = Client(url)
        try:
            while time.monotonic() < deadline:
                lease = await client.call("POST", "/v1/inbox/lease", key, {"limit": 10, "lease_seconds": 60})
                ids = [e["event_id"] for e in lease["events"]]
                if not ids:
                    return
                done = await client.call("POST", f"/v1/inbox/leases/{lease['lease_id']}/ack", key, {"event_ids": ids})
                acked += len(done["successful"])
                failed += len(done["failed"])
                cycles += 1
        finally:
            client.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(keys[i % len(keys)]) for i in range(workers)))
    elapsed = time.monotonic() - started
    return {
        "workers": workers,
        "seconds": round(elapsed, 1),
        "cycles_per_s": round(cycles / elapsed, 1),
        "events_acked_per_s": round(acked / elapsed),
        "errors": failed,
    }


async def cleanup(stack: Stack) -> None:
    """Drop the bench database and delete its topics."""
    admin = await asyncpg.connect(stack.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')
    finally:
        await admin.close()
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await kafka_admin.start()
    try:
        await kafka_admin.delete_topics(list(stack.topics.values()))
    finally:
        await kafka_admin.close()
