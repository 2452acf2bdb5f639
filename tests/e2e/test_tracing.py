"""End-to-end tracing: one trace from the ingest request through the Kafka record to the inbox write and the
webhook delivery, whose receiver gets a ``traceparent`` of the same trace. The whole stack (``--target all``)
runs in this process, served by uvicorn, so that an in-memory exporter sees its spans; it has a database,
topics and consumer groups of its own, so no other server of the session handles its events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from triggers_common.settings import load_settings

from tests.support import DEV_KEY, Receiver, event, free_port, wait_until
from triggers.server import create_app

pytestmark = [
    pytest.mark.e2e,
    # Building the app in this process shows what `triggers run` does not: the routes' inferred parameter style.
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
async def own_env(test_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """The session's settings with a database, topics and consumer groups of this module's own."""
    run = uuid.uuid4().hex[:8]
    url = urlsplit(test_env["TRIGGERS_DATABASE_URL"])
    database = f"triggers_tracing_{run}"
    admin = await asyncpg.connect(test_env["TRIGGERS_DATABASE_URL"])
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield {
            **test_env,
            "TRIGGERS_DATABASE_URL": urlunsplit(url._replace(path=f"/{database}")),
            "TRIGGERS_EVENTS_TOPIC": f"tracing-{run}.events",
            "TRIGGERS_STATUS_TOPIC": f"tracing-{run}.event-status",
            "TRIGGERS_DEADLETTER_TOPIC": f"tracing-{run}.deadletter",
            "TRIGGERS_CONSUMER_GROUP_PREFIX": f"tracing-{run}",
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], tracer_provider: TracerProvider | None) -> AsyncIterator[httpx.AsyncClient]:
    """``--target all`` in this process on a free port (a client of it with the dev key), until the block ends."""
    app = create_app("all", load_settings(env), tracer_provider)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": DEV_KEY}, timeout=15.0
        ) as client:

            async def ready() -> bool:
                if task.done():
                    raise AssertionError(f"the app stopped during start-up: {task.exception()!r}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=60, interval=0.1, what="the in-process app to be ready")
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def record_traceparents(env: dict[str, str], event_ids: set[str]) -> dict[str, str]:
    """The ``traceparent`` header of each event's Kafka record, by event id."""
    consumer = AIOKafkaConsumer(
        env["TRIGGERS_EVENTS_TOPIC"],
        bootstrap_servers=env["TRIGGERS_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: dict[str, str] = {}
    try:

        async def complete() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    found[headers["ce_id"]] = headers["traceparent"]
            return event_ids <= found.keys()

        await wait_until(complete, what="the events' Kafka records")
    finally:
        await consumer.stop()
    return found


async def subscribe(client: httpx.AsyncClient, url: str) -> None:
    created = await client.post("/v1/webhooks", json={"url": url, "events": ["order.*"]})
    assert created.status_code == 201, created.text


async def post_event(client: httpx.AsyncClient, traceparent: str | None = None) -> str:
    headers = {"traceparent": traceparent} if traceparent else {}
    posted = await client.post("/v1/events", json=event(), headers=headers)
    assert posted.status_code == 201, posted.text
    event_id: str = posted.json()["event_id"]
    return event_id


def delivered(receiver: Receiver) -> dict[str, str]:
    """The ``traceparent`` header each delivered event's webhook request carried (or "" for none)."""
    found = {}
    for headers, body in receiver.requests:
        lowered = {k.lower(): v for k, v in headers.items()}
        found[json.loads(body)["event_id"]] = lowered.get("traceparent", "")
    return found


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


async def test_one_trace_from_the_request_to_the_inbox_and_the_webhook(own_env: dict[str, str]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serving(own_env, provider) as client, Receiver() as receiver:
        await subscribe(client, receiver.url)
        continued = await post_event(client, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
        started = await post_event(client)
        unsampled_trace = uuid.uuid4().hex
        unsampled = await post_event(client, f"00-{unsampled_trace}-{CALLER_SPAN}-00")

        def spans_of(event_id: str) -> dict[str, ReadableSpan]:
            return {
                s.name: s
                for s in exporter.get_finished_spans()
                if s.attributes is not None and s.attributes.get("triggers.event_id") == event_id
            }

        wanted = {"POST /v1/events", "inbox persist", "analytics count", "webhooks schedule", "webhook deliver"}

        async def all_spans() -> bool:
            return all(spans_of(e).keys() >= wanted for e in (continued, started))

        await wait_until(all_spans, what="the spans of both sampled events")

        async def three_delivered() -> bool:
            return len(receiver.requests) >= 3

        await wait_until(three_delivered, what="three deliveries")
        assert (await client.get(f"/v1/events/{unsampled}")).status_code == 200  # the inbox has it too
        records = await record_traceparents(own_env, {continued, started, unsampled})
        receiver_saw = delivered(receiver)

        for event_id in (continued, started):
            spans = spans_of(event_id)
            ingest = spans["POST /v1/events"]
            trace_id, ingest_span = hex_ids(ingest)
            assert ingest.kind is SpanKind.SERVER and ingest.attributes is not None
            assert ingest.attributes["http.response.status_code"] == 201
            assert ingest.attributes["triggers.tenant_id"] == "dev"
            # The record names the ingest span: every consumer's work is its child, in its trace.
            assert ingest.context is not None and ingest.context.trace_flags.sampled
            assert records[event_id] == f"00-{trace_id}-{ingest_span}-{ingest.context.trace_flags:02x}"
            for name, kind in (
                ("inbox persist", SpanKind.CONSUMER),
                ("analytics count", SpanKind.CONSUMER),
                ("webhooks schedule", SpanKind.CONSUMER),
                ("webhook deliver", SpanKind.CLIENT),
            ):
                assert hex_ids(spans[name])[0] == trace_id, name
                assert parent_id(spans[name]) == ingest_span, name
                assert spans[name].kind is kind, name
            deliver = spans["webhook deliver"]
            assert deliver.attributes is not None and deliver.attributes["http.response.status_code"] == 204
            assert deliver.context is not None and deliver.context.trace_flags.sampled
            assert receiver_saw[event_id] == f"00-{trace_id}-{hex_ids(deliver)[1]}-{deliver.context.trace_flags:02x}"

        assert hex_ids(spans_of(continued)["POST /v1/events"])[0] == CALLER_TRACE
        assert parent_id(spans_of(continued)["POST /v1/events"]) == CALLER_SPAN
        assert parent_id(spans_of(started)["POST /v1/events"]) is None  # a trace of its own
        assert hex_ids(spans_of(started)["POST /v1/events"])[0] != CALLER_TRACE

        # A caller that did not sample its trace: no span anywhere, but the trace id still travels.
        assert not [s for s in exporter.get_finished_spans() if hex_ids(s)[0] == unsampled_trace]
        assert records[unsampled].startswith(f"00-{unsampled_trace}-") and records[unsampled].endswith("-00")
        assert receiver_saw[unsampled] == records[unsampled]


async def test_tracing_off_makes_no_span_and_still_carries_the_callers_trace(
    own_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    started: list[str] = []
    start_span = sdk_trace.Tracer.start_span

    def counting(self: sdk_trace.Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        started.append(name)
        return start_span(self, name, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Tracer, "start_span", counting)  # any SDK span made in this process
    async with serving(own_env, None) as client, Receiver() as receiver:
        await subscribe(client, receiver.url)
        event_id = await post_event(client, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")

        async def arrived() -> bool:
            return event_id in delivered(receiver)

        await wait_until(arrived, what="the delivery")
        assert (await client.get(f"/v1/events/{event_id}")).status_code == 200
        record = (await record_traceparents(own_env, {event_id}))[event_id]
    assert started == []
    _, trace_id, span_id, flags = record.split("-")
    assert (trace_id, flags) == (CALLER_TRACE, "01") and span_id != CALLER_SPAN
    assert delivered(receiver)[event_id] == record  # passed on as it came: the receiver continues the trace
