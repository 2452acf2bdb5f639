"""POST /v1/events: authenticate, validate, produce to Kafka, answer 201 once the broker acked."""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.types import ControllerRouterHandler
from prometheus_client import Counter, Histogram
from triggers_common.http import encode, header, json_response, request_id
from triggers_common.models import NULL, EventRecord, format_timestamp, new_event_id
from triggers_common.runtime import Runtime

from triggers_ingest.validation import NewEvent, parse_event, require_json

INGESTED = Counter("triggers_ingest_events_total", "Events accepted (answered 201)")
INGEST_SECONDS = Histogram(
    "triggers_ingest_request_seconds",
    "POST /v1/events latency, successful requests",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_JSON_HEADER = b"application/json"


class Accepted(msgspec.Struct):
    event_id: str
    created_at: str
    status: str
    message: str
    request_id: str


def traceparent(scope: Any) -> bytes:
    """W3C trace context for the Kafka record: the caller's trace continues, or a new one starts."""
    incoming = header(scope, b"traceparent")
    span = os.urandom(8).hex()
    if incoming and len(incoming) == 55 and incoming[2] == "-":
        return f"00-{incoming[3:35]}-{span}-{incoming[53:55]}".encode()
    return f"00-{os.urandom(16).hex()}-{span}-00".encode()


def to_record(event: NewEvent, tenant_id: str) -> tuple[EventRecord, list[tuple[str, bytes]]]:
    """The Kafka record for an accepted event, with CloudEvents binary-mode headers."""
    event_id, created = new_event_id()
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


def build_routes(rt: Runtime) -> list[ControllerRouterHandler]:
    settings = rt.settings
    topic = settings.events_topic

    @post(
        "/v1/events",
        status_code=201,
        tags=["events"],
        summary="Ingest one event",
        description="201 means durable: the event is in Kafka with acks=all. 503 if the broker cannot take it "
        "within the send timeout.",
        request_max_body_size=settings.max_payload_bytes + 64 * 1024,
    )
    async def ingest_event(request: Request[Any, Any, Any]) -> Response[bytes]:
        started = time.perf_counter()
        principal = await rt.access.check(request, "events:write")
        require_json(header(request.scope, b"content-type"))
        event = parse_event(await request.body(), settings.max_payload_bytes)
        record, headers = to_record(event, principal.tenant_id)
        headers.append(("traceparent", traceparent(request.scope)))
        await rt.producer.send(topic, encode(record), key=principal.tenant_id.encode(), headers=headers)
        INGESTED.inc()
        body = Accepted(
            record.event_id, record.created_at, "pending", "Event ingested successfully", request_id(request)
        )
        INGEST_SECONDS.observe(time.perf_counter() - started)
        return json_response(encode(body), 201)

    return [ingest_event]
