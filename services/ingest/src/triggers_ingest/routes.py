"""Ingest HTTP: POST /v1/events and /v1/events/bulk. 201 only once the broker acked every reported event."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

import msgspec
from litestar.types import ControllerRouterHandler
from opentelemetry.trace import Span
from prometheus_client import Counter
from triggers_common.errors import BulkFailure, TriggersError
from triggers_common.http import Answer, direct_post, encode, header, media_type, request_id, require_json
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime
from triggers_common.telemetry import server_span, traceparent_of

from triggers_ingest.publish import Accepted, Publisher
from triggers_ingest.validation import (
    CLOUDEVENTS_JSON,
    NewEvent,
    idempotency_header,
    no_idempotency_header,
    parse_binary_cloudevent,
    parse_bulk,
    parse_event,
    parse_structured_cloudevent,
)

INGESTED = Counter("triggers_ingest_events_total", "Events accepted (answered 201), replays included")
_REPLAYED = {"Idempotent-Replayed": "true"}


class AcceptedBody(msgspec.Struct):
    event_id: str
    created_at: str
    status: str
    message: str
    request_id: str


class BulkSuccess(msgspec.Struct):
    event_id: str
    created_at: str
    status: str
    message: str
    replayed: bool


class BulkBody(msgspec.Struct):
    successful: list[BulkSuccess]
    failed: list[BulkFailure]
    request_id: str


class MetadataIn(msgspec.Struct):
    """Free-form; these keys have a meaning."""

    priority: Literal["low", "normal", "high"] = "normal"
    correlation_id: str | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None


Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event. ``payload`` is any non-empty JSON object (≤ 400 KiB encoded, nested ≤ 64 levels)."""

    source: Name
    event_type: Name
    payload: Annotated[dict[str, Any], msgspec.Meta(min_length=1)]
    metadata: MetadataIn | None = None


class BulkIn(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[EventIn], msgspec.Meta(min_length=1, max_length=1000)]


class CloudEventIn(msgspec.Struct):
    """A CloudEvent 1.0 in structured mode (``application/cloudevents+json``): source, type and data become the
    event's source, event_type and payload, id its idempotency key; every other attribute (subject, time,
    dataschema, extensions: lowercase letters and digits) is kept in ``metadata.cloudevents``."""

    specversion: Literal["1.0"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    source: Name
    type: Name
    data: Annotated[dict[str, Any], msgspec.Meta(min_length=1)]
    time: Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None = None
    subject: str | None = None
    dataschema: str | None = None
    datacontenttype: str | None = None


EXAMPLE_EVENT = {
    "source": "shop",
    "event_type": "order.created",
    "payload": {"order_id": "ord_42", "total": 19.99},
    "metadata": {"priority": "high", "idempotency_key": "order-42-created"},
}
EXAMPLE_CLOUDEVENT = {
    "specversion": "1.0",
    "id": "order-42-created",
    "source": "/shop",
    "type": "order.created",
    "time": "2026-11-25T18:38:51.123456Z",
    "data": {"order_id": "ord_42", "total": 19.99},
}
EXAMPLE_SUCCESS = {
    "event_id": "019ab5d0-7c1e-7a35-b6f4-3c2d8e1f0a9b",
    "created_at": "2026-11-25T18:38:51.123456Z",
    "status": "pending",
    "message": "Event ingested successfully",
}
EXAMPLE_ACCEPTED = {**EXAMPLE_SUCCESS, "request_id": "5f0c6d8e-2a41-4a0e-9a57-0b8f3f7c2d11"}
INGEST_HEADERS = (
    Param("Idempotency-Key", "header", "Alias of metadata.idempotency_key (≤ 255 chars); 24 h per tenant"),
    Param("traceparent", "header", "W3C trace context; carried into the Kafka record"),
)
CLOUDEVENT_HEADERS = (
    Param("ce-specversion", "header", "CloudEvents binary mode (the body is the data): 1.0"),
    Param("ce-id", "header", "CloudEvents binary mode: the event's id, its idempotency key"),
    Param("ce-source", "header", "CloudEvents binary mode: the event's source"),
    Param("ce-type", "header", "CloudEvents binary mode: the event's type (our event_type)"),
    Param("ce-time", "header", "CloudEvents binary mode: RFC 3339, kept in metadata.cloudevents"),
    Param("ce-subject", "header", "CloudEvents binary mode: kept in metadata.cloudevents"),
    Param("ce-dataschema", "header", "CloudEvents binary mode: kept in metadata.cloudevents"),
)
"""Other ``ce-*`` headers are extensions (names of lowercase letters and digits), kept in metadata.cloudevents.
Values are percent-decoded once and must then be UTF-8."""
INGEST_ERROR_NOTES = (
    (409, "CONFLICT: a request with the same idempotency key is in flight (`details.event_id` is its event)"),
    (422, "IDEMPOTENCY_KEY_REUSED: the idempotency key was used with a different body in the last 24 h"),
)


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_NO_TRACE = "0" * 32
_NO_PARENT = "0" * 16


def traceparent(scope: Any) -> bytes:
    """W3C trace context for the Kafka record when tracing is off (no span to name): the caller's trace
    continues, or a new one starts. As W3C Trace Context says, and as OpenTelemetry's propagator does when tracing
    is on: all-zero ids are invalid, a later version is read by version 00's rules, and only the sampled flag
    is carried on."""
    incoming = header(scope, b"traceparent")
    span = os.urandom(8).hex()
    if incoming and (valid := _TRACEPARENT.fullmatch(incoming.strip())):
        version, trace, parent, flags, rest = valid.groups()
        if version != "ff" and trace != _NO_TRACE and parent != _NO_PARENT and (version != "00" or rest is None):
            return f"00-{trace}-{span}-{int(flags, 16) & 1:02x}".encode()
    return f"00-{os.urandom(16).hex()}-{span}-00".encode()  # none, or not valid: a new trace starts (W3C)


def read_event(scope: Any, body: bytes, max_payload_bytes: int) -> NewEvent:
    """The event of a single-event request: plain JSON, or a CloudEvent in structured or binary mode."""
    content_type = header(scope, b"content-type")
    if media_type(content_type) == CLOUDEVENTS_JSON:
        return parse_structured_cloudevent(body, max_payload_bytes)
    if header(scope, b"ce-specversion") is not None:
        if content_type is not None:
            require_json(content_type)
        return parse_binary_cloudevent(scope["headers"], body, max_payload_bytes)
    require_json(content_type)
    return parse_event(body, max_payload_bytes)


def build_routes(rt: Runtime, publisher: Publisher) -> list[ControllerRouterHandler]:
    """The two ingest routes. They are the hottest of all, so they are direct routes (``http.direct_post``):
    each handler gets the ASGI scope and the whole body, and answers status, body and headers."""
    settings = rt.settings
    tracer = rt.tracer
    topic = settings.events_topic

    async def ingest_event(scope: Any, body: bytes) -> Answer:
        if tracer is None:
            return await accept_event(scope, body, traceparent(scope), None)
        with server_span(tracer, "POST", "/v1/events", scope) as span:
            return await accept_event(scope, body, traceparent_of(span), span)

    async def accept_event(scope: Any, body: bytes, trace: bytes, span: Span | None) -> Answer:
        """``trace`` goes into the record; ``span`` (the request's, if traced) gets the tenant and event."""
        principal = await rt.access.authorize(scope, "events:write", body)
        event = read_event(scope, body, settings.max_payload_bytes)
        event = idempotency_header(header(scope, b"idempotency-key"), event)
        (answer,) = await publisher.publish(principal.tenant_id, [event], trace)
        if isinstance(answer, TriggersError):
            raise answer
        if span is not None:
            span.set_attributes(
                {
                    "http.response.status_code": 201,
                    "triggers.tenant_id": principal.tenant_id,
                    "triggers.event_id": answer.event_id,
                    "messaging.destination.name": topic,
                }
            )
        INGESTED.inc()
        accepted = AcceptedBody(
            answer.event_id, answer.created_at, "pending", "Event ingested successfully", request_id(scope)
        )
        return Answer(201, encode(accepted), _REPLAYED if answer.replayed else None)

    async def ingest_bulk(scope: Any, body: bytes) -> Answer:
        if tracer is None:
            return await accept_bulk(scope, body, traceparent(scope), None)
        with server_span(tracer, "POST", "/v1/events/bulk", scope) as span:
            return await accept_bulk(scope, body, traceparent_of(span), span)

    async def accept_bulk(scope: Any, body: bytes, trace: bytes, span: Span | None) -> Answer:
        principal = await rt.access.authorize(scope, "events:write", body)
        require_json(header(scope, b"content-type"))
        no_idempotency_header(header(scope, b"idempotency-key"))
        failed: list[BulkFailure] = []
        valid: list[tuple[int, NewEvent]] = []
        for index, item in enumerate(parse_bulk(body, settings.bulk_max_items, settings.max_payload_bytes)):
            if isinstance(item, NewEvent):
                valid.append((index, item))
            else:
                failed.append(BulkFailure.of(index, item))
        answers = await publisher.publish(principal.tenant_id, [e for _, e in valid], trace)
        successful: list[BulkSuccess] = []
        for (index, _), answer in zip(valid, answers, strict=True):
            if isinstance(answer, Accepted):
                successful.append(
                    BulkSuccess(
                        answer.event_id, answer.created_at, "pending", "Event ingested successfully", answer.replayed
                    )
                )
            else:
                failed.append(BulkFailure.of(index, answer))
        failed.sort(key=lambda f: f.index)
        if span is not None:
            span.set_attributes(
                {
                    "http.response.status_code": 201,
                    "triggers.tenant_id": principal.tenant_id,
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": len(successful),
                }
            )
        INGESTED.inc(len(successful))
        return Answer(201, encode(BulkBody(successful, failed, request_id(scope))))

    return [
        direct_post(
            "/v1/events",
            ingest_event,
            status_code=201,
            tags=["events"],
            summary="Ingest one event (JSON, or a CloudEvent in structured or binary mode)",
            description="201 means durable: the event is in Kafka with acks=all. 503 if the broker cannot take it "
            "within the send timeout. A repeat with the same idempotency key and body answers the original event "
            "with `Idempotent-Replayed: true`.",
            request_max_body_size=settings.max_body_bytes,  # the payload and metadata limits apply, compact
            opt={
                "doc": Doc(
                    body=EventIn,
                    body_example=EXAMPLE_EVENT,
                    other_bodies=(("application/cloudevents+json", CloudEventIn, EXAMPLE_CLOUDEVENT),),
                    params=INGEST_HEADERS + CLOUDEVENT_HEADERS,
                    response=AcceptedBody,
                    response_example=EXAMPLE_ACCEPTED,
                    response_headers=(
                        ("Idempotent-Replayed", "true when this answers a repeat: the original event, nothing new"),
                    ),
                    status=201,
                    errors=(400, 409, 413, 415, 422),
                    error_notes=INGEST_ERROR_NOTES,
                )
            },
        ),
        direct_post(
            "/v1/events/bulk",
            ingest_bulk,
            status_code=201,
            tags=["events"],
            summary="Ingest up to 1,000 events in one request",
            description="Each item is validated alone: valid items are ingested, invalid ones are reported in "
            "`failed` with their index. All accepted items go to Kafka in one batch; 201 once every one is acked, "
            "503 (and nothing accepted) if the broker cannot take them.",
            request_max_body_size=settings.max_body_bytes,
            opt={
                "doc": Doc(
                    body=BulkIn,
                    body_example={"items": [EXAMPLE_EVENT, {**EXAMPLE_EVENT, "metadata": None}]},
                    params=(INGEST_HEADERS[1],),
                    response=BulkBody,
                    response_example={
                        "successful": [{**EXAMPLE_SUCCESS, "replayed": False}],
                        "failed": [
                            {
                                "index": 1,
                                "error": {
                                    "code": "VALIDATION_ERROR",
                                    "message": "Request validation failed",
                                    "details": {
                                        "validation_errors": [
                                            {
                                                "field": "body.items.1.source",
                                                "message": "Must not be blank",
                                                "type": "value_error",
                                            }
                                        ]
                                    },
                                },
                            }
                        ],
                        "request_id": EXAMPLE_ACCEPTED["request_id"],
                    },
                    status=201,
                    errors=(400, 413, 415),
                )
            },
        ),
    ]
