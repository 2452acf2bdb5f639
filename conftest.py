"""Session fixtures: the real Kafka broker and Postgres, a fresh database and topics per test session, and the
whole stack running as a real process.

Kafka and Postgres come from ``TRIGGERS_KAFKA_BOOTSTRAP``/``TRIGGERS_DATABASE_URL`` when both are set, else
from the project's local stack (``scripts/stack.sh``; stopped again at the end if this session started it),
else from testcontainers when a Docker engine is present.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from triggers_common.auth import create_key
from triggers_common.db import Pool, create_pool, migrate
from triggers_common.runtime import Runtime, migration_sources
from triggers_common.settings import Settings, load_settings

from tests.support import DEV_KEY, ROOT, Server


@dataclass(frozen=True)
class Stack:
    kafka_bootstrap: str
    database_url: str


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / args[0]), *args[1:]], capture_output=True, text=True, check=False)


def _docker_engine() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _local_stack() -> Iterator[Stack]:
    kafka_was_up = _script("kafka.sh", "status").returncode == 0
    postgres_was_up = _script("postgres.sh", "status").returncode == 0
    started = _script("stack.sh", "start")
    if started.returncode != 0:
        raise RuntimeError(f"local stack failed to start:\n{started.stderr}")
    try:
        yield Stack(_script("kafka.sh", "bootstrap").stdout.strip(), _script("postgres.sh", "url").stdout.strip())
    finally:
        if not kafka_was_up:
            _script("kafka.sh", "stop")
        if not postgres_was_up:
            _script("postgres.sh", "stop")


@contextlib.contextmanager
def _containers() -> Iterator[Stack]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as kafka,
        PostgresContainer("postgres:16-alpine", driver=None) as pg,
    ):
        yield Stack(kafka.get_bootstrap_server(), pg.get_connection_url())


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    kafka, database = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP"), os.environ.get("TRIGGERS_DATABASE_URL")
    if kafka and database:
        yield Stack(kafka, database)
        return
    try:
        with _local_stack() as local:
            yield local
            return
    except RuntimeError:
        if not _docker_engine():
            raise
    with _containers() as containers:
        yield containers


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def test_env(stack: Stack) -> AsyncIterator[dict[str, str]]:
    """Environment for one test session: its own database and its own topics and consumer groups."""
    run = uuid.uuid4().hex[:8]
    database = f"triggers_test_{run}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    env = {
        "TRIGGERS_DEV_MODE": "true",
        "TRIGGERS_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TRIGGERS_DATABASE_URL": _with_database(stack.database_url, database),
        "TRIGGERS_EVENTS_TOPIC": f"test-{run}.events",
        "TRIGGERS_STATUS_TOPIC": f"test-{run}.event-status",
        "TRIGGERS_DEADLETTER_TOPIC": f"test-{run}.deadletter",
        "TRIGGERS_CONSUMER_GROUP_PREFIX": f"test-{run}",
        "TRIGGERS_LOG_LEVEL": "INFO",
        "TRIGGERS_INBOX_STATS_INTERVAL_S": "1",  # the inbox gauges refresh fast enough to be tested
        "TRIGGERS_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.4,0.8",  # retries within a test
        "TRIGGERS_WEBHOOK_CONCURRENCY": "40",  # few enough slots for one hanging endpoint to take them all
        "TRIGGERS_WEBHOOK_BREAKER_COOLDOWN_S": "1",  # an open breaker lets a probe through within a test
    }
    try:
        yield env
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    return load_settings(test_env)


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    """A pool on the session's database, migrated like a service start would."""
    from triggers.server import TARGETS

    rt = Runtime(settings)
    db = await create_pool(settings)
    async with db.acquire() as conn:
        await migrate(conn, migration_sources([factory(rt) for factory in TARGETS.values()]))
    yield db
    await db.close()


@pytest.fixture(scope="session")
async def server(
    test_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """The whole stack (``--target all``) as a real process, shared by the end-to-end tests."""
    srv = Server(test_env, log_dir=Path(tmp_path_factory.mktemp("logs")))
    await srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": DEV_KEY}, timeout=15.0) as c:
        yield c


@pytest.fixture
async def tenant_key(pool: Pool) -> str:
    """A key of a brand-new tenant, so a test sees only its own data."""
    async with pool.acquire() as conn:
        created = await create_key(conn, f"t-{uuid.uuid4().hex[:12]}")
    return created.key


@pytest.fixture(scope="session")
def server_url(server: Server) -> str:
    return server.url


@pytest.fixture(scope="session")
async def replicas(
    test_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[Server]]:
    """Two ingest gateways (``--target ingest``) on the session's database; 127.0.0.1 is their trusted proxy."""
    import asyncio

    logs = Path(tmp_path_factory.mktemp("replica-logs"))
    env = {**test_env, "TRIGGERS_TRUSTED_PROXIES": "127.0.0.1/32"}
    servers = [Server(env, target="ingest", log_dir=logs), Server(env, target="ingest", log_dir=logs)]
    await asyncio.gather(*(s.start() for s in servers))
    yield servers
    for s in servers:
        s.stop()
