"""Ingest's Kafka transactions against the real broker: what is committed arrives whole and in order, and what
failed before its commit never becomes visible to a read_committed reader."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from triggers_common.settings import Settings
from triggers_common.transactions import TransactionalProducer, _Lane

from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def topic(settings: Settings) -> AsyncIterator[str]:
    """A topic of its own with three partitions, so records spread over several batches and partitions."""
    name = f"test.transactions.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def read_all(settings: Settings, topic: str, isolation: str, until: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` a reader with ``isolation`` sees, once it has seen at least ``until`` of them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            seen.extend(record for records in batch.values() for record in records)
            return len(seen) >= until

        await wait_until(enough, timeout=30, what=f"{until} records ({isolation})")
        seen.extend(record for records in (await consumer.getmany(timeout_ms=500)).values() for record in records)
    finally:
        await consumer.stop()
    return seen


@pytest.mark.parametrize("version", [1, 2])
async def test_concurrent_groups_bigger_than_a_batch_arrive_whole_and_in_order(
    settings: Settings, topic: str, version: int
) -> None:
    producer = TransactionalProducer(settings, topic, "test", version=version)
    await producer.start()
    keys = [f"tenant-{i}".encode() for i in range(8)]
    pad = "x" * 400  # 2,000 records of ~450 bytes per request: several 256 KiB batches per partition
    try:
        await asyncio.gather(
            *(
                producer.send_many(
                    [
                        (keys[n % len(keys)], f"{request}:{n}:{pad}".encode(), [("n", str(n).encode())])
                        for n in range(2_000)
                    ]
                )
                for request in range(4)
            )
        )
    finally:
        await producer.stop()

    got = await read_all(settings, topic, "read_committed", until=8_000)
    assert len(got) == 8_000  # each exactly once
    assert len({record.partition for record in got}) > 1
    for request in range(4):  # per key, in the order sent
        for key in keys:
            ns = [
                int(record.value.split(b":")[1])
                for record in got
                if record.key == key and record.value.startswith(f"{request}:".encode())
            ]
            assert ns == sorted(ns) and len(ns) == 250
    assert all(dict(record.headers)["n"] == record.value.split(b":")[1] for record in got)


@pytest.mark.parametrize("version", [1, 2, None])
async def test_a_transaction_that_never_committed_stays_invisible(
    settings: Settings, topic: str, version: int | None
) -> None:
    lane = _Lane(settings, topic, f"test-lane-{uuid.uuid4().hex[:8]}", version)
    await lane.start(30)
    assert lane.version == (version or 2)  # the local broker is formatted with transactions v2
    try:
        await lane.send([(b"tenant", b"refused", [])])  # appended, then the commit never comes
        lane.forget()  # what a failed group does; the next start aborts the open transaction
        await lane.start(30)
        await lane.send([(b"tenant", b"accepted", [])])
        await lane.commit()
        await lane.send([(b"tenant", b"next", [])])  # a transaction after a commit goes on as well
        await lane.commit()
    finally:
        await lane.close()

    everything = await read_all(settings, topic, "read_uncommitted", until=3)
    assert [r.value for r in everything] == [b"refused", b"accepted", b"next"]  # all reached the log
    committed = await read_all(settings, topic, "read_committed", until=2)
    assert [r.value for r in committed] == [b"accepted", b"next"]
