"""What other teams read from ``triggers.events.v1``: the exact JSON, the key and the headers (API.md §9)."""

from __future__ import annotations

import re
import uuid

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.support import wait_until

pytestmark = pytest.mark.integration


async def test_event_record_matches_the_contract(
    client: httpx.AsyncClient, tenant_key: str, test_env: dict[str, str]
) -> None:
    trace_id = uuid.uuid4().hex
    raw = (
        b'{"source":"shop","event_type":"order.paid","payload":{"amount":10.10,"n":null},"metadata":{"priority":"low"}}'
    )
    response = await client.post(
        "/v1/events",
        content=raw,
        headers={
            "X-API-Key": tenant_key,
            "Content-Type": "application/json",
            "traceparent": f"00-{trace_id}-{'b' * 16}-01",
        },
    )
    assert response.status_code == 201
    accepted = response.json()
    got = (await client.get(f"/v1/events/{accepted['event_id']}", headers={"X-API-Key": tenant_key})).json()

    consumer = AIOKafkaConsumer(
        test_env["TRIGGERS_EVENTS_TOPIC"],
        bootstrap_servers=test_env["TRIGGERS_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",  # the contract: events are committed in Kafka transactions
    )
    await consumer.start()
    found = []
    try:

        async def seen() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(
                m for msgs in batch.values() for m in msgs if accepted["event_id"].encode() in (m.value or b"")
            )
            return bool(found)

        await wait_until(seen, timeout=30, what="the record on the events topic")
    finally:
        await consumer.stop()

    message = found[0]
    body = msgspec.json.decode(message.value)
    tenant_id = body.pop("tenant_id")
    assert message.key == tenant_id.encode()
    got.pop("request_id")
    assert body == got  # exactly the JSON of GET /v1/events/{id}, plus tenant_id
    assert b'"amount":10.10' in message.value
    headers = dict(message.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == accepted["event_id"].encode()
    assert headers["ce_source"] == b"shop" and headers["ce_type"] == b"order.paid"
    assert headers["ce_time"] == accepted["created_at"].encode()
    assert headers["content-type"] == b"application/json"
    assert re.fullmatch(rf"00-{trace_id}-[0-9a-f]{{16}}-01", headers["traceparent"].decode())


async def test_topics_have_explicit_partitions(test_env: dict[str, str], server_url: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=test_env["TRIGGERS_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        described = await admin.describe_topics(
            [
                test_env["TRIGGERS_EVENTS_TOPIC"],
                test_env["TRIGGERS_STATUS_TOPIC"],
                test_env["TRIGGERS_DEADLETTER_TOPIC"],
            ]
        )
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    assert partitions[test_env["TRIGGERS_EVENTS_TOPIC"]] >= 6
    assert partitions[test_env["TRIGGERS_STATUS_TOPIC"]] >= 1
    assert partitions[test_env["TRIGGERS_DEADLETTER_TOPIC"]] >= 1
