"""The inbox consumer against the real broker and database: crash safety, poison records, the contract."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from triggers_common.db import Pool
from triggers_common.models import EventRecord, format_timestamp, new_event_id

from tests.support import Server, TcpProxy, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def isolated_env(test_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """The session's database, but a topic and consumer group of this test's own."""
    run = uuid.uuid4().hex[:8]
    env = {
        **test_env,
        "TRIGGERS_EVENTS_TOPIC": f"crash-{run}.events",
        "TRIGGERS_DEADLETTER_TOPIC": f"crash-{run}.deadletter",
        "TRIGGERS_CONSUMER_GROUP_PREFIX": f"crash-{run}",
        "TRIGGERS_INBOX_BATCH_MAX": "200",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=env["TRIGGERS_KAFKA_BOOTSTRAP"])
    await admin.start()
    await admin.create_topics(
        [NewTopic(env["TRIGGERS_EVENTS_TOPIC"], 6, 1), NewTopic(env["TRIGGERS_DEADLETTER_TOPIC"], 1, 1)]
    )
    await admin.close()
    yield env


def record(tenant: str, i: int) -> tuple[str, bytes]:
    event_id, created = new_event_id()
    body = EventRecord(
        event_id=str(event_id),
        created_at=format_timestamp(created),
        source="crash-test",
        event_type="item.made",
        payload=msgspec.Raw(msgspec.json.encode({"i": i, "pad": "x" * 200})),
        tenant_id=tenant,
    )
    return str(event_id), msgspec.json.encode(body)


async def produce(env: dict[str, str], values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=env["TRIGGERS_KAFKA_BOOTSTRAP"], acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(env["TRIGGERS_EVENTS_TOPIC"], v, key=k) for k, v in values]
        for f in futures:
            await f
    finally:
        await producer.stop()


async def count(pool: Pool, tenant: str) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant)
    return n


async def committed_total(env: dict[str, str]) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=env["TRIGGERS_KAFKA_BOOTSTRAP"],
        group_id=f"{env['TRIGGERS_CONSUMER_GROUP_PREFIX']}-inbox",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(6):
            offset = await consumer.committed(TopicPartition(env["TRIGGERS_EVENTS_TOPIC"], partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def test_consumer_killed_mid_stream_loses_and_duplicates_nothing(
    isolated_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tenants = [f"crash-{uuid.uuid4().hex[:6]}-{t}" for t in range(4)]
    total = 40_000
    values: list[tuple[bytes, bytes]] = []
    expected: set[str] = set()
    for i in range(total):
        tenant = tenants[i % len(tenants)]
        event_id, value = record(tenant, i)
        expected.add(event_id)
        values.append((tenant.encode(), value))
    await produce(isolated_env, values)

    async def persisted() -> int:
        return sum([await count(pool, t) for t in tenants])

    logs = tmp_path_factory.mktemp("crash-logs")
    first = await Server(isolated_env, target="inbox", log_dir=logs).start()
    try:
        await wait_until(persisted, timeout=60, interval=0.01, what="the consumer to start writing")
    finally:
        first.kill()
    at_kill = await persisted()
    assert 0 < at_kill < total, "the kill must land mid-stream for this test to mean anything"
    # offsets are committed only after the rows: never more committed than written
    assert await committed_total(isolated_env) <= at_kill

    second = await Server(isolated_env, target="inbox", log_dir=logs).start()
    try:

        async def all_there() -> bool:
            return await persisted() >= total

        await wait_until(all_there, timeout=120, interval=0.2, what="the restarted consumer to catch up")
        assert await committed_total(isolated_env) == total
    finally:
        second.stop()

    rows = await pool.fetch(
        "SELECT event_id::text AS id, count(*) OVER (PARTITION BY event_id) AS n FROM events WHERE tenant_id = ANY($1)",
        tenants,
    )
    assert len(rows) == total
    assert {r["id"] for r in rows} == expected
    assert all(r["n"] == 1 for r in rows)


async def test_poison_records_go_to_the_dead_letter_topic(
    isolated_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tenant = f"poison-{uuid.uuid4().hex[:6]}"
    good_before, before = record(tenant, 1)
    good_after, after = record(tenant, 2)
    _, nul_metadata = record(tenant, 3)
    nul_metadata = nul_metadata.replace(b'"metadata":null', b'"metadata":{"k":"\\u0000"}')
    _, bad_utf8 = record(tenant, 4)
    bad_utf8 = bad_utf8.replace(b'"pad":"x', b'"pad":"\xff\xfe')
    poison = [
        b"not json",
        b'{"event_id": "x"}',
        msgspec.json.encode({"tenant_id": tenant, "payload": []}),
        nul_metadata,  # decodes fine, but Postgres refuses it: it must not block the partition
        bad_utf8,
    ]
    key = tenant.encode()
    await produce(isolated_env, [(key, before), *((key, p) for p in poison), (key, after)])

    server = await Server(isolated_env, target="inbox", log_dir=tmp_path_factory.mktemp("poison-logs")).start()
    try:

        async def both_good() -> bool:
            return await count(pool, tenant) == 2

        await wait_until(both_good, timeout=60, what="the good records around the poison ones")
    finally:
        server.stop()
    ids = {r["id"] for r in await pool.fetch("SELECT event_id::text AS id FROM events WHERE tenant_id = $1", tenant)}
    assert ids == {good_before, good_after}

    consumer = AIOKafkaConsumer(
        isolated_env["TRIGGERS_DEADLETTER_TOPIC"],
        bootstrap_servers=isolated_env["TRIGGERS_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        dead: list[tuple[bytes, dict[str, bytes]]] = []

        async def all_dead() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            dead.extend((m.value, dict(m.headers)) for msgs in batch.values() for m in msgs)
            return len(dead) >= len(poison)

        await wait_until(all_dead, timeout=30, what="every poison record dead-lettered")
    finally:
        await consumer.stop()
    assert sorted(value for value, _ in dead) == sorted(poison)
    assert all(headers["error"] and headers["source_topic"] for _, headers in dead)


async def test_postgres_outage_pauses_the_consumer_which_commits_nothing_and_catches_up(
    isolated_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    database = urlsplit(isolated_env["TRIGGERS_DATABASE_URL"])
    assert database.hostname and database.port
    proxy = await TcpProxy(database.hostname, database.port).start()
    env = {
        **isolated_env,
        "TRIGGERS_DATABASE_URL": database._replace(
            netloc=database.netloc.replace(f"{database.hostname}:{database.port}", f"127.0.0.1:{proxy.port}")
        ).geturl(),
    }
    tenant = f"outage-{uuid.uuid4().hex[:6]}"
    batches = [[record(tenant, i) for i in range(n, n + 500)] for n in (0, 500)]
    server = await Server(env, target="inbox", log_dir=tmp_path_factory.mktemp("outage-logs")).start()
    try:
        await produce(isolated_env, [(tenant.encode(), value) for _, value in batches[0]])

        async def persisted(n: int) -> bool:
            return await count(pool, tenant) == n  # read past the proxy, straight from Postgres

        await wait_until(lambda: persisted(500), timeout=60, what="the first 500 events")
        await proxy.cut()
        await produce(isolated_env, [(tenant.encode(), value) for _, value in batches[1]])

        async def retrying() -> bool:
            return "handle failed" in server.log_tail(200)

        await wait_until(retrying, timeout=60, what="the consumer to fail writing and retry")
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/health/ready")).status_code == 503
        assert await count(pool, tenant) == 500
        assert await committed_total(isolated_env) == 500, "nothing committed that was not written"

        await proxy.restore()
        await wait_until(lambda: persisted(1000), timeout=60, what="the consumer to catch up after the outage")
        assert await committed_total(isolated_env) == 1000
    finally:
        server.stop()
        await proxy.cut()
    ids = {r["event_id"] for r in await pool.fetch("SELECT event_id::text FROM events WHERE tenant_id = $1", tenant)}
    assert ids == {event_id for batch in batches for event_id, _ in batch}
