"""Kafka stops: ingest answers 503 within the send timeout, never hangs, and recovers by itself."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Server, event, wait_until

pytestmark = pytest.mark.e2e
SEND_TIMEOUT_S = 2.0


class Broker:
    """A broker of its own (own folder and ports), so stopping it disturbs no other test."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "KAFKA_HOME": str(home)}

    def _run(self, command: str) -> str:
        done = subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), command], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    @property
    def bootstrap(self) -> str:
        return self._run("bootstrap")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("kafka"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
async def outage_server(
    broker: Broker, test_env: dict[str, str], pool: object, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    env = {**test_env, "TRIGGERS_KAFKA_BOOTSTRAP": broker.bootstrap, "TRIGGERS_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S)}
    server = Server(env, log_dir=tmp_path_factory.mktemp("outage-logs"))
    await server.start()
    yield server
    server.stop()


async def test_kafka_down_gives_503_then_recovers(broker: Broker, outage_server: Server, tenant_key: str) -> None:
    async with httpx.AsyncClient(base_url=outage_server.url, headers={"X-API-Key": tenant_key}, timeout=30) as c:
        before = await c.post("/v1/events", json=event(payload={"phase": "before"}))
        assert before.status_code == 201

        broker.stop()
        started = time.monotonic()
        down = await c.post("/v1/events", json=event(payload={"phase": "down"}))
        elapsed = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert int(down.headers["retry-after"]) >= 1
        assert elapsed < SEND_TIMEOUT_S + 2.0, f"503 took {elapsed:.1f}s"
        ready = await c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False
        keyed = {"Idempotency-Key": f"outage-{uuid.uuid4()}"}
        failed = await c.post("/v1/events", json=event(payload={"phase": "keyed"}), headers=keyed)
        assert failed.status_code == 503

        broker.start()

        async def accepted() -> httpx.Response | None:
            response = await c.post("/v1/events", json=event(payload={"phase": "after"}))
            assert response.status_code in (201, 503), response.text
            return response if response.status_code == 201 else None

        after = await wait_until(accepted, timeout=90, interval=0.5, what="ingest to recover")
        # the inbox consumer recovered too: the event reaches Postgres, and so did the one from before
        got = await c.get(f"/v1/events/{after.json()['event_id']}")
        assert got.status_code == 200, got.text
        assert (await c.get(f"/v1/events/{before.json()['event_id']}")).status_code == 200
        assert (await c.get("/health/ready")).status_code == 200

        # the client's retry of the keyed request is safe: one event, whatever became of the 503'd attempt
        retried = await c.post("/v1/events", json=event(payload={"phase": "keyed"}), headers=keyed)
        assert retried.status_code == 201, retried.text
        assert (await c.get(f"/v1/events/{retried.json()['event_id']}")).status_code == 200
        again = await c.post("/v1/events", json=event(payload={"phase": "keyed"}), headers=keyed)
        assert again.json()["event_id"] == retried.json()["event_id"]
        assert again.headers["idempotent-replayed"] == "true"
        inbox = (await c.get("/v1/inbox", params={"limit": "100"})).json()["events"]
        assert sum(e["payload"] == {"phase": "keyed"} for e in inbox) == 1
        # what was answered 503 and never retried does not show up later
        marker = await c.post("/v1/events", json=event(payload={"phase": "marker"}))
        assert (await c.get(f"/v1/events/{marker.json()['event_id']}")).status_code == 200
        phases = [e["payload"]["phase"] for e in (await c.get("/v1/inbox", params={"limit": "100"})).json()["events"]]
        assert "down" not in phases
        assert phases[0] == "before" and phases[-1] == "marker"
