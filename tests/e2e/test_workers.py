"""``triggers run --workers N``: each worker listens on its own socket, connections spread over them, a worker
that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, wait_until

pytestmark = pytest.mark.e2e
CONNECTIONS = 64


def _sockets_on(port: int) -> dict[int, str]:
    """Inode -> TCP state ("0A" listening, "01" established) of every local socket on ``port``."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                found[int(fields[9])] = fields[3]
    return found


def _owners(inodes: set[int]) -> dict[int, int]:
    """Inode -> pid of the process holding it."""
    owners: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    owners[int(target[8:-1])] = int(pid)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return owners


def listeners(port: int) -> dict[int, int]:
    """Listening socket inode -> the worker pid serving it."""
    return _owners({inode for inode, state in _sockets_on(port).items() if state == "0A"})


@pytest.fixture
async def workers_server(test_env: dict[str, str], pool: object, tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(test_env, target="ingest", log_dir=tmp_path, workers=2)
    await server.start()

    async def both_listening() -> bool:  # ready means one worker answers; the other may still be starting
        return len(set(listeners(server.port).values())) == 2

    await wait_until(both_listening, timeout=60, interval=0.2, what="both workers listening")
    yield server
    server.stop()


async def test_each_worker_listens_and_connections_spread(workers_server: Server) -> None:
    port = workers_server.port
    assert workers_server.process is not None
    first = listeners(port)
    assert len(first) == 2, "one listening socket per worker"
    assert len(set(first.values())) == 2 and workers_server.process.pid not in first.values()

    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        for c in clients:  # every connection answered: each was accepted by a live worker
            c.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in clients:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        served = {inode for inode, state in _sockets_on(port).items() if state == "01"}
        per_worker = Counter(_owners(served).values())
        assert set(per_worker) == set(first.values())
        # Spread by a hash of the addresses: fewer than 16 of 64 on one side happens about once in 50,000 runs.
        assert min(per_worker.values()) >= 16, per_worker
    finally:
        for c in clients:
            c.close()


async def test_a_dead_worker_is_replaced_and_sigterm_stops_all(workers_server: Server) -> None:
    port = workers_server.port
    process = workers_server.process
    assert process is not None
    before = listeners(port)
    victim, survivor = sorted(before.values())
    os.kill(victim, signal.SIGKILL)

    async with httpx.AsyncClient(base_url=workers_server.url, timeout=5.0) as client:
        for _ in range(20):  # new connections go to the surviving worker meanwhile
            response = await client.get("/health/live", headers={"Connection": "close"})
            assert response.status_code == 200

    async def replaced() -> bool:
        pids = set(listeners(port).values())
        return len(pids) == 2 and survivor in pids and victim not in pids

    await wait_until(replaced, timeout=60, interval=0.2, what="a replacement worker listening")

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert listeners(port) == {}
    assert not Path(f"/proc/{survivor}").exists(), "the parent waits for its workers before it exits"
