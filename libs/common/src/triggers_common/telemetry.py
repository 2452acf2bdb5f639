"""Traces: OpenTelemetry from the standard ``OTEL_*`` variables, off unless an exporter is named.

Off, no provider exists and the services create no span at all; the W3C ``traceparent`` still travels from the
request through Kafka and the delivery row to the webhook. On, each service makes a few spans by hand (one per
ingest request, one per sampled record a consumer handles, one per delivery attempt) instead of using the stock
middlewares, which cost a large share of the ingest throughput.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from triggers_common.errors import TriggersError

T = TypeVar("T")
DEFAULT_SAMPLE_RATIO = 0.1
"""Share of new traces kept when ``OTEL_TRACES_SAMPLER`` is not set; a caller's ``traceparent`` decides for its
own trace."""
_PROPAGATOR = TraceContextTextMapPropagator()
_SAMPLED_FLAG_DIGITS: dict[type, Any] = {bytes: b"13579bdfBDF", str: "13579bdfBDF"}
"""Last hex digit of a ``traceparent`` whose flags have the sampled bit."""


def tracer_provider_from_env(service_name: str = "triggers", version: str = "") -> TracerProvider | None:
    """A provider as the ``OTEL_*`` variables describe it, or None (tracing off) unless ``OTEL_TRACES_EXPORTER``
    names an exporter (``otlp``, ``console``) or an OTLP endpoint is set, and ``OTEL_SDK_DISABLED`` is not true.

    ``otlp`` is OTLP over HTTP (protobuf), configured by the exporter's own ``OTEL_EXPORTER_OTLP_*`` variables.
    Without ``OTEL_TRACES_SAMPLER`` the sampler is ``parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG``
    (default 0.1); with it, the SDK reads both. ``OTEL_SERVICE_NAME`` overrides ``service_name``.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = _exporters(env)
    if not exporters:
        return None
    sampler = None  # the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself
    if not env.get("OTEL_TRACES_SAMPLER"):
        ratio = env.get("OTEL_TRACES_SAMPLER_ARG") or str(DEFAULT_SAMPLE_RATIO)
        try:
            sampler = ParentBased(TraceIdRatioBased(float(ratio)))
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={ratio} is not a ratio between 0 and 1") from None
    resource = Resource.create({SERVICE_VERSION: version} if version else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # not named by OTEL_*
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(sampler=sampler, resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* tune it
    return provider


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol not in (None, "", "http/protobuf"):
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; use http/protobuf")
            # Imported only when used: it brings protobuf, which a process without tracing need not load.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name} is not supported; use otlp, console or none")
    return exporters


def traceparent_of(span: Span) -> bytes:
    """The W3C ``traceparent`` that makes the receiver's work a child of ``span``."""
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}".encode()


def remote_parent(traceparent: bytes | str | None) -> Context | None:
    """The context a ``traceparent`` names, or None if there is none or it is not valid."""
    if not traceparent:
        return None
    value = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    context = _PROPAGATOR.extract({"traceparent": value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def valid_traceparent(traceparent: bytes | str | None) -> str | None:
    """``traceparent`` in canonical form if it is a valid one, else None (a caller's garbage goes no further)."""
    context = remote_parent(traceparent)
    return None if context is None else traceparent_of(trace.get_current_span(context)).decode()


def sampled_parent(traceparent: bytes | str | None) -> Context | None:
    """The context a ``traceparent`` names if it is sampled, else None: unsampled work gets no span."""
    if not traceparent or traceparent[-1] not in _SAMPLED_FLAG_DIGITS[type(traceparent)]:
        return None  # the sampled bit (the flags' lowest) is off: skip parsing, the common case when sampling
    context = remote_parent(traceparent)
    if context is None or not trace.get_current_span(context).get_span_context().trace_flags.sampled:
        return None
    return context


def kafka_traceparent(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    """The ``traceparent`` header of a Kafka record."""
    for key, value in headers or ():
        if key == "traceparent":
            return value
    return None


@contextlib.contextmanager
def server_span(tracer: Tracer, method: str, route: str, scope: Any) -> Iterator[Span]:
    """One SERVER span for an HTTP request, continuing the caller's ``traceparent``; ended on exit with the
    status code (an error status for 5xx only)."""
    incoming = None
    for key, value in scope["headers"]:
        if key == b"traceparent":
            incoming = value
            break
    span = tracer.start_span(
        f"{method} {route}",
        remote_parent(incoming),
        SpanKind.SERVER,
        {"http.request.method": method, "http.route": route, "url.scheme": scope.get("scheme", "http")},
    )
    try:
        yield span
    except TriggersError as exc:
        span.set_attribute("http.response.status_code", exc.status_code)
        if exc.status_code >= 500:
            span.set_status(StatusCode.ERROR, exc.code)
            span.set_attribute("error.type", exc.code)
        raise
    except BaseException as exc:
        span.set_attribute("http.response.status_code", 500)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(StatusCode.ERROR)
        raise
    finally:
        span.end()


def consumer_span_attributes(topic: str, group: str, event_id: str, tenant_id: str) -> dict[str, Any]:
    """The attributes of a consumer's span for one event record (OpenTelemetry messaging conventions)."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.message.id": event_id,
        "triggers.event_id": event_id,
        "triggers.tenant_id": tenant_id,
    }


@contextlib.contextmanager
def record_spans(
    tracer: Tracer | None,
    name: str,
    items: Iterable[tuple[Any, T]],
    attributes: Callable[[T], Attributes],
) -> Iterator[list[tuple[Span, T]]]:
    """A CONSUMER span named ``name`` for each Kafka record of ``items`` (``(record, value)``) whose
    ``traceparent`` is sampled, as its child, open while the block runs; none without a tracer. A batch holds
    many traces, so the cost follows the sampling rate."""
    if tracer is None:
        yield []
        return
    spans = [
        (tracer.start_span(name, parent, SpanKind.CONSUMER, attributes(value)), value)
        for record, value in items
        if (parent := sampled_parent(kafka_traceparent(record.headers))) is not None
    ]
    try:
        yield spans
    except BaseException as exc:
        for span, _ in spans:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(StatusCode.ERROR)
        raise
    finally:
        for span, _ in spans:
            span.end()
