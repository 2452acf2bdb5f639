"""Webhook delivery on a running stack: throughput to a local receiver (a backlog of events, each delivered
once to one webhook), and a healthy endpoint's delivery latency while another webhook of the same tenant
points at an endpoint that accepts connections and never answers.

The receivers run in a process of their own (``python -m bench.webhooks receive PORT [--hang]``) so they do
not share the harness's CPU time: a minimal HTTP/1.1 server that answers 204 at once (or never, with
``--hang``) and records, per delivery, when it arrived and when its event was created (the event id is a
UUIDv7). ``GET /stats`` answers those pairs as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import loadgen

ROOT = Path(__file__).resolve().parent.parent
_EVENT_ID_AT = b'{"event_id":"'


# --- the receiver process -------------------------------------------------------------------------------


class _Receiver(asyncio.Protocol):
    arrivals: list[tuple[float, int]] = []
    hang = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: Any = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            at = head.find(b"content-length:")
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            )
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            if head.startswith(b"get /stats"):
                payload = json.dumps(_Receiver.arrivals).encode()
                self._transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
                continue
            if body.startswith(_EVENT_ID_AT):  # UUIDv7: the first 48 bits are the creation time in ms
                created_ms = int(body[13:21] + body[22:26], 16)
                _Receiver.arrivals.append((time.time(), created_ms))
            if not _Receiver.hang:
                self._transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Receiver, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def receive(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="bench.webhooks receive")
    p.add_argument("port", type=int)
    p.add_argument("--hang", action="store_true", help="accept requests and never answer them")
    args = p.parse_args(argv)
    _Receiver.hang = args.hang
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.port))


# --- the harness side -----------------------------------------------------------------------------------


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


@dataclass
class ReceiverProcess:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def arrivals(self) -> list[tuple[float, int]]:
        status, body = await loadgen.request_once("127.0.0.1", self.port, "GET", "/stats", {})
        if status != 200:
            raise RuntimeError(f"receiver stats answered {status}")
        return [(float(at), int(created)) for at, created in json.loads(body)]


def start_receiver(port: int, hang: bool = False) -> ReceiverProcess:
    cmd = [sys.executable, "-m", "bench.webhooks", "receive", str(port), *(["--hang"] if hang else [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            asyncio.run(ReceiverProcess(port, proc).arrivals())
            return ReceiverProcess(port, proc)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the webhook receiver did not start")


async def _call(url: str, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    status, answer = await loadgen.request_once(*_address(url), method, path, {"X-API-Key": key}, raw)
    return status, json.loads(answer) if answer else None


async def create_webhook(url: str, key: str, target: str) -> str:
    status, body = await _call(url, key, "POST", "/v1/webhooks", {"url": target, "events": ["*"]})
    if status != 201:
        raise RuntimeError(f"creating a webhook to {target} answered {status}: {body} (is the stack in dev mode?)")
    return str(body["webhook_id"])


async def delete_webhook(url: str, key: str, webhook_id: str) -> None:
    await _call(url, key, "DELETE", f"/v1/webhooks/{webhook_id}")


def _event(source: str, seq: int) -> dict[str, Any]:
    return {"source": source, "event_type": "order.created", "payload": {"order_id": f"ord_{seq:09d}", "total": 49.99}}


async def ingest_bulk(url: str, key: str, source: str, events: int, batch: int = 500) -> None:
    """``events`` events in bulk requests of ``batch``, four requests at a time."""
    host, port = _address(url)
    requests = []
    for start in range(0, events, batch):
        items = [_event(source, seq) for seq in range(start, min(start + batch, events))]
        body = json.dumps({"items": items}).encode()
        requests.append(loadgen.build_request(host, port, "/v1/events/bulk", {"X-API-Key": key}, body))
    queue = list(reversed(requests))

    async def worker() -> None:
        connection = loadgen.HttpConnection(host, port)
        try:
            while queue:
                status = await connection.send(queue.pop())
                if status != 201:
                    raise RuntimeError(f"bulk ingest answered {status}")
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(4)))


async def wait_for(receiver: ReceiverProcess, count: int, timeout_s: float) -> list[tuple[float, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await receiver.arrivals()
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.5)


async def webhooks_caught_up(url: str, timeout_s: float) -> float:
    """Wait until the webhooks consumer group has no lag (earlier phases' events are all matched), so its
    backlog does not count against this phase; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        _, body = await loadgen.request_once(*_address(url), "GET", "/metrics", {})
        lag = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("triggers_consumer_lag_records{") and '-webhooks"' in line
        )
        if lag == 0:
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 2)


def _pct(values: list[float], pct: float) -> float | None:
    found = loadgen.percentile(sorted(values), pct)
    return None if found is None else round(found, 1)


async def throughput(url: str, key: str, receiver: ReceiverProcess, events: int, timeout_s: float) -> dict[str, Any]:
    """Deliveries per second of a backlog: ``events`` events ingested in bulk, one webhook."""
    webhook_id = await create_webhook(url, key, receiver.url)
    try:
        started = time.time()
        await ingest_bulk(url, key, "bench-webhooks", events)
        ingested_s = time.time() - started
        got = await wait_for(receiver, events, timeout_s)
    finally:
        await delete_webhook(url, key, webhook_id)
    arrivals = sorted(at for at, _ in got)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    latencies = [at * 1000 - created for at, created in got]
    return {
        "events": events,
        "delivered": len(got),
        "missing": events - len(got),
        "ingest_s": round(ingested_s, 2),
        "delivery_span_s": round(span, 2),
        "deliveries_per_s": round(len(got) / span, 1) if span else None,
        "first_to_last_from_ingest_start_s": round(arrivals[-1] - started, 2) if arrivals else None,
        "latency_ms": {"p50": _pct(latencies, 50), "p99": _pct(latencies, 99), "max": _pct(latencies, 100)},
    }


async def _latency_at_rate(
    url: str, key: str, receiver: ReceiverProcess, source: str, rate: float, duration_s: float
) -> dict[str, Any]:
    """Events at ``rate`` for ``duration_s``; the receiver's event->delivery latencies of this run."""
    host, port = _address(url)
    before = len(await receiver.arrivals())
    result = await loadgen.run_fixed_rate(
        host=host,
        port=port,
        path="/v1/events",
        headers={"X-API-Key": key},
        body=lambda seq: json.dumps(_event(source, seq)).encode(),
        rate=rate,
        duration_s=duration_s,
        connections=16,
    )
    got = (await wait_for(receiver, before + result.ok, 60))[before:]
    latencies = [at * 1000 - created for at, created in got]
    return {
        "events": result.ok,
        "delivered": len(got),
        "missing": result.ok - len(got),
        "latency_ms": {p: _pct(latencies, q) for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
    }


async def isolation(
    url: str, key: str, healthy: ReceiverProcess, dead: ReceiverProcess, rate: float, duration_s: float
) -> dict[str, Any]:
    """A healthy endpoint's event->delivery latency alone, then while the tenant's other webhook points at an
    endpoint that accepts connections and never answers (each attempt there holds its slot for 15 s)."""
    healthy_id = await create_webhook(url, key, healthy.url)
    dead_id = None
    try:
        alone = await _latency_at_rate(url, key, healthy, "bench-isolation-alone", rate, duration_s)
        dead_id = await create_webhook(url, key, dead.url)
        beside_dead = await _latency_at_rate(url, key, healthy, "bench-isolation-dead", rate, duration_s)
        dead_requests = len(await dead.arrivals())
    finally:
        for webhook_id in (healthy_id, dead_id):
            if webhook_id is not None:
                await delete_webhook(url, key, webhook_id)
    return {
        "rate": rate,
        "duration_s": duration_s,
        "alone": alone,
        "beside_dead": beside_dead,
        "missing": alone["missing"] + beside_dead["missing"],
        "dead_endpoint_requests": dead_requests,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receive":
        receive(sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.webhooks receive PORT [--hang]")
