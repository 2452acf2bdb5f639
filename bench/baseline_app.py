"""The "bare" reference for the ingest gateway: Litestar + msgspec + aiokafka and nothing else.

POST /v1/events decodes the body, produces it to Kafka (acks=all, idempotent, as the gateway does), waits for
the ack and answers 201 with a new event id. No auth, metrics, logging config, OpenAPI or record envelope, so
bench/run.py can report the gateway's saturation throughput as a share of this one's. Run it like the gateway:

    TRIGGERS_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python -m uvicorn bench.baseline_app:app \\
        --host 127.0.0.1 --port 8090 --loop uvloop --http httptools --no-access-log --log-level warning

GET /ping answers once the producer is started and the topic (BENCH_BASELINE_TOPIC, default bench.baseline,
6 partitions, RF 1) exists.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from litestar import Litestar, MediaType, Request, Response, get, post

TOPIC = os.environ.get("BENCH_BASELINE_TOPIC", "bench.baseline")
PARTITIONS = 6


class Event(msgspec.Struct):
    source: str
    event_type: str
    payload: dict[str, Any]
    metadata: dict[str, Any] | None = None


class Accepted(msgspec.Struct):
    event_id: str


decoder = msgspec.json.Decoder(Event)
encoder = msgspec.json.Encoder()


def _bootstrap() -> str:
    bootstrap = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise RuntimeError("TRIGGERS_KAFKA_BOOTSTRAP is not set")
    return bootstrap


async def ensure_topic(bootstrap: str) -> None:
    """Create the topic if it is missing (the broker does not auto-create)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if TOPIC not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()


async def start_producer() -> AIOKafkaProducer:
    """The topic, and a started producer that already has its metadata (so the first POST does not wait)."""
    bootstrap = _bootstrap()
    await ensure_topic(bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=256 * 1024,
        compression_type="lz4",
    )
    await producer.start()
    try:
        await producer.partitions_for(TOPIC)
    except BaseException:
        await producer.stop()
        raise
    return producer


@contextlib.asynccontextmanager
async def kafka(app: Litestar) -> AsyncIterator[None]:
    producer = await start_producer()
    try:
        app.state.producer = producer
        yield
    finally:
        await producer.stop()


@post("/v1/events", status_code=201)
async def ingest(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await request.body()
    try:
        decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        return Response(encoder.encode({"error": str(exc)}), status_code=400, media_type=MediaType.JSON)
    producer: AIOKafkaProducer = request.app.state.producer
    await (await producer.send(TOPIC, body))
    return Response(encoder.encode(Accepted(str(uuid.uuid4()))), status_code=201, media_type=MediaType.JSON)


@get("/ping", media_type=MediaType.TEXT)
async def ping() -> str:
    return "ok"


app = Litestar(route_handlers=[ingest, ping], lifespan=[kafka], openapi_config=None, logging_config=None)
