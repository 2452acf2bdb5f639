"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
DEV_KEY = "test-api-key-12345"
T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def read_topic(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (``(key, json value)``), read until ``done`` says so."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:

        async def complete() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend((m.key, msgspec.json.decode(m.value)) for msgs in batch.values() for m in msgs)
            return done(records)

        await wait_until(complete, timeout=timeout, what=f"the expected records on {topic}")
    finally:
        await consumer.stop()
    return records


async def consumed(bootstrap: str, topic: str, group: str, timeout: float = 30.0) -> None:
    """Wait until consumer group ``group`` has committed everything on ``topic`` so far, i.e. handled it."""
    from aiokafka.admin import AIOKafkaAdminClient

    targets = await _next_offsets(bootstrap, topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def caught_up() -> bool:
            committed = await admin.list_consumer_group_offsets(group)
            return all(committed.get(tp) is not None and committed[tp].offset >= at for tp, at in targets.items())

        await wait_until(caught_up, timeout=timeout, what=f"group {group} to handle {topic}")
    finally:
        await admin.close()


async def _next_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Per partition, the offset after its last committed record: what a group that handled everything commits.

    Not the end offset: events are produced in transactions, so a log ends with a commit or abort marker (an
    offset of its own but no record), after an aborted transaction's records if the last one was refused.
    """
    return {TopicPartition(r.topic, r.partition): r.offset + 1 for r in await committed_records(bootstrap, topic)}


async def committed_records(bootstrap: str, topic: str) -> list[ConsumerRecord[Any, Any]]:
    """Every committed record of ``topic`` so far, in offset order per partition (read_committed, from the
    beginning to the last stable offset)."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",  # the default, "latest", could land after the seek below and skip all
    )
    await reader.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        partitions = list(reader.assignment())  # start() waited for the topic's metadata: every partition
        assert partitions, f"no partitions of {topic}"  # none would read nothing and return at once
        ends = await reader.end_offsets(partitions)  # read_committed: the last stable offsets
        await reader.seek_to_beginning(*partitions)

        async def read_to_end() -> bool:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return all([await reader.position(tp) >= end for tp, end in ends.items()])

        await wait_until(read_to_end, timeout=30, what=f"the end of {topic}")
        return records
    finally:
        await reader.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": "shop", "event_type": "order.created", "payload": {"order_id": 1}}
    body.update(overrides)
    return body


class Server:
    """``triggers run`` as a real process on a free port, with its own log file."""

    def __init__(
        self, env: Mapping[str, str], target: str = "all", log_dir: Path | None = None, workers: int = 1
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = target
        self._env = {**os.environ, **env}
        self._log_path = (log_dir or Path("/tmp")) / f"triggers-{target}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 60.0) -> Server:
        log = self._log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "triggers", "run", "--target", self.target),
                *("--port", str(self.port), "--workers", str(self.workers)),
            ],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:

            async def ready() -> bool:
                if self.process is not None and self.process.poll() is not None:
                    raise AssertionError(f"server exited during start-up:\n{self.log_tail()}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=timeout, interval=0.1, what=f"{self.target} server readiness")
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class TcpProxy:
    """A TCP forwarder in front of a real server (Postgres, say) that a test can cut, closing every
    connection and refusing new ones as an outage would, and restore on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.transport.abort()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records every request and answers with ``status`` after
    ``hang_s``. ``spans`` has each request's webhook-id with when it arrived and when its handling ended
    (answered, or cut off by the sender)."""

    def __init__(self, status: int = 204, hang_s: float = 0.0) -> None:
        self.status = status
        self.hang_s = hang_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrivals: list[float] = []
        """Wall-clock time (time.time()) of each request's arrival, comparable with an event's created_at."""
        self.spans: list[tuple[str, float, float]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        try:
            self.requests.append((dict(request.headers), await request.read()))
            self.arrivals.append(time.time())
            if self.hang_s:
                await asyncio.sleep(self.hang_s)
            return web.Response(status=self.status)
        finally:
            self.spans.append((request.headers.get("webhook-id", ""), arrived, time.monotonic()))

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)  # a hanging handler does not hold up the test
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of a Grafana dashboard, with Grafana's variables replaced
    by what Grafana would send: its ranges by durations, a template variable by its "All" value."""
    dashboard = json.loads(path.read_text())
    values = {f"${v['name']}": v["allValue"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    values |= GRAFANA_RANGES
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in sorted(values, key=len, reverse=True):  # $__rate_interval before $__range
                expr = expr.replace(name, values[name])
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> list[tuple[str, str, str]]:
    """``(group, alert, PromQL)`` for every rule in deploy/prometheus/."""
    return [
        (group["name"], rule["alert"], rule["expr"])
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
