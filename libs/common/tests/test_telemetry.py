"""Tracing is configured by the standard OTEL_* variables: off by default, OTLP over HTTP when asked for,
parent-based ratio sampling unless another sampler is named."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind
from triggers_common.telemetry import sampled_parent, tracer_provider_from_env, valid_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_off_unless_an_exporter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracer_provider_from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracer_provider_from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracer_provider_from_env() is not None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracer_provider_from_env() is None


def test_unknown_exporter_protocol_or_ratio_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        tracer_provider_from_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="http/protobuf"):
        tracer_provider_from_env()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "half")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG=half"):
        tracer_provider_from_env()


def test_sampler_is_parent_based_ratio_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    default = tracer_provider_from_env()
    assert default is not None
    assert default.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.1}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    ratio = tracer_provider_from_env()
    assert ratio is not None
    assert ratio.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    off = tracer_provider_from_env()
    assert off is not None and off.sampler.get_description() == "AlwaysOffSampler"
    for provider in (default, ratio, off):
        provider.shutdown()


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP collector that records each export request."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    server.shutdown()
    server.server_close()


def test_otlp_endpoint_alone_turns_tracing_on_and_spans_reach_it(
    monkeypatch: pytest.MonkeyPatch, collector: tuple[str, list[tuple[str, bytes]]]
) -> None:
    endpoint, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    provider = tracer_provider_from_env("triggers-ingest", "1.2.3")
    assert provider is not None
    provider.get_tracer("test").start_span("POST /v1/events", kind=SpanKind.SERVER).end()
    provider.shutdown()  # flushes the batch
    [(path, body)] = received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert (resource["service.name"], resource["service.version"]) == ("triggers-ingest", "1.2.3")
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["POST /v1/events"]


def test_service_name_comes_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    provider = tracer_provider_from_env("triggers-ingest")
    assert provider is not None and provider.resource.attributes["service.name"] == "gateway-eu"
    provider.shutdown()


def test_only_valid_sampled_trace_contexts_get_spans() -> None:
    assert sampled_parent(f"00-{TRACE}-b7ad6b7169203331-01".encode()) is not None
    assert sampled_parent(f"00-{TRACE}-b7ad6b7169203331-00".encode()) is None
    assert sampled_parent(None) is None
    assert valid_traceparent(f"00-{TRACE}-b7ad6b7169203331-00".encode()) == f"00-{TRACE}-b7ad6b7169203331-00"
    assert valid_traceparent(b"00-" + b"z" * 32 + b"-b7ad6b7169203331-01") is None
    assert valid_traceparent(f"00-{'0' * 32}-b7ad6b7169203331-01") is None
