"""Open-loop, fixed-rate HTTP/1.1 load generator on raw asyncio streams.

Requests are scheduled at fixed intervals from the start time, whatever the server does; a pool of keep-alive
connections, each with one request in flight, takes them from a queue. Latency is measured from each request's
*scheduled* send time, so a server stall shows up as the queueing it causes (no coordinated omission).
Times come from time.perf_counter(): uvloop's loop.time() is cached per loop iteration, in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

RequestBody = Callable[[int], bytes]


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence, or None if empty."""
    if not sorted_values:
        return None
    rank = max(int(-(-pct * len(sorted_values) // 100)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class FixedRateResult:
    """What one fixed-rate run measured; latencies in seconds, of 201 responses only."""

    target_rate: float
    duration_s: float
    connections: int
    scheduled: int = 0
    completed: int = 0
    ok: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        """Requests that did not get a 201: other statuses, socket errors, timeouts, never sent."""
        return self.scheduled - self.ok

    @property
    def achieved_rate(self) -> float:
        """201 responses per second of wall time, from the first scheduled send to the last response."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends pre-built requests and reads the status of each response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect (again) if not connected."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, request: bytes) -> int:
        """Send one complete request and return the response's status code, having read its whole body."""
        return (await self.exchange(request))[0]

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one complete request; the response's status code and body."""
        await self.open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        status, keep_alive, body = await read_response(self._reader)
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        """Drop the connection; the next send reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """Read one response (status line, headers, body by Content-Length or chunks): status, keep-alive, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length = 0
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
    if chunked:
        body = await _read_chunks(reader)
    else:
        body = await reader.readexactly(length) if length else b""
    return status, keep_alive, body


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


async def request_once(
    host: str, port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One request on a connection of its own: the response's status code and body."""
    connection = HttpConnection(host, port)
    try:
        return await connection.exchange(build_request(host, port, path, headers, body, method=method))
    finally:
        connection.close()


def build_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes, method: str = "POST") -> bytes:
    """The bytes of one request (a POST with a JSON body unless told otherwise)."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _schedule(queue: asyncio.Queue[tuple[int, float] | None], start: float, rate: float, total: int) -> None:
    interval = 1.0 / rate
    for seq in range(total):
        at = start + seq * interval
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((seq, at))


async def _work(
    conn: HttpConnection,
    queue: asyncio.Queue[tuple[int, float] | None],
    make_request: Callable[[int], bytes],
    result: FixedRateResult,
    timeout_s: float,
) -> None:
    while (item := await queue.get()) is not None:
        seq, scheduled = item
        request = make_request(seq)
        sent = time.perf_counter()
        result.send_lags.append(sent - scheduled)
        try:
            status = await asyncio.wait_for(conn.send(request), timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            result.failures[type(exc).__name__] += 1
            conn.close()
            continue
        finally:
            queue.task_done()
        result.completed += 1
        if status == 201:
            result.ok += 1
            result.latencies.append(time.perf_counter() - scheduled)
        else:
            result.statuses[str(status)] += 1
    queue.task_done()


async def run_fixed_rate(
    *,
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: RequestBody,
    rate: float,
    duration_s: float,
    connections: int,
    timeout_s: float = 10.0,
    drain_s: float = 30.0,
) -> FixedRateResult:
    """Send ``rate`` requests per second for ``duration_s`` over ``connections`` keep-alive connections.

    ``body(seq)`` gives the JSON body of request number ``seq``. Requests still queued or in flight ``drain_s``
    after the last scheduled send are abandoned and count as errors.
    """
    result = FixedRateResult(target_rate=rate, duration_s=duration_s, connections=connections)
    result.scheduled = int(rate * duration_s)

    def make_request(seq: int) -> bytes:
        return build_request(host, port, path, headers, body(seq))

    pool = [HttpConnection(host, port) for _ in range(connections)]
    await asyncio.gather(*(conn.open() for conn in pool))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    workers = [asyncio.create_task(_work(conn, queue, make_request, result, timeout_s)) for conn in pool]
    start = time.perf_counter() + 0.05
    try:
        await _schedule(queue, start, rate, result.scheduled)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), drain_s)
        result.elapsed_s = time.perf_counter() - start
    finally:
        for _ in workers:
            queue.put_nowait(None)
        _, pending = await asyncio.wait(workers, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for conn in pool:
            conn.close()
    abandoned = result.scheduled - result.completed - sum(result.failures.values())
    if abandoned > 0:
        result.failures["abandoned"] += abandoned
    return result
