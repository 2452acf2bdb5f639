"""Postgres: the connection pool (JSON passes through as raw bytes), versioned migrations, LISTEN."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable

import asyncpg
import msgspec

from triggers_common.settings import Settings

log = logging.getLogger("triggers.db")
Pool = asyncpg.Pool
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection of its own or one borrowed from the pool: every store function takes either."""
_MIGRATION_LOCK = 0x7472696767657273  # "triggers"
_LISTEN_PING_S = 3.0
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _encode_json(value: bytes | str | msgspec.Raw) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # json and jsonb travel as the client's own bytes, decoded to msgspec.Raw: no parse on the way out.
    await conn.set_type_codec("json", schema="pg_catalog", format="binary", encoder=_encode_json, decoder=msgspec.Raw)
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda v: b"\x01" + _encode_json(v),
        decoder=lambda b: msgspec.Raw(b[1:]),
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query (a round trip on every release): no code here leaves session state
    behind on a pooled connection. LISTEN has its own connection; the migration lock is released in place."""


async def create_pool(
    settings: Settings,
    deadline_s: float = 60.0,
    *,
    durable: bool = True,
    custom_plans: bool = False,
    max_size: int | None = None,
) -> asyncpg.Pool:
    """Open a pool, retrying while Postgres is not reachable yet.

    ``durable=False`` gives connections whose commits return before the WAL reaches disk
    (``synchronous_commit = off``): only for writes whose loss in a Postgres crash does no harm.
    ``custom_plans=True`` plans every statement for its actual parameters instead of reusing a generic plan
    (``plan_cache_mode = force_custom_plan``): for queries whose best index depends on the values.
    """
    server_settings = {} if durable else {"synchronous_commit": "off"}
    if custom_plans:
        server_settings["plan_cache_mode"] = "force_custom_plan"
    deadline = time.monotonic() + deadline_s
    delay = 0.2
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=max_size or settings.db_pool_max,
                server_settings=server_settings,
                command_timeout=settings.db_command_timeout_s,
                init=_init_connection,
                reset=_keep_session,
            )
            return pool
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def migrate(conn: Conn, sources: Iterable[tuple[str, Traversable]]) -> list[str]:
    """Apply every ``NNNN_name.sql`` not applied yet, per component, each file in its own transaction.

    A session advisory lock makes concurrent starts (several replicas) apply each file exactly once.
    Returns the names applied.
    """
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   version integer NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        for component, folder in sources:
            done = {
                r["version"]
                for r in await conn.fetch("SELECT version FROM schema_migrations WHERE component = $1", component)
            }
            files = sorted((f for f in folder.iterdir() if _MIGRATION_FILE.match(f.name)), key=lambda f: f.name)
            for file in files:
                version = int(file.name[:4])
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(file.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                        component,
                        version,
                        file.name,
                    )
                applied.append(f"{component}/{file.name}")
                log.info("migration applied", extra={"migration": f"{component}/{file.name}"})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


async def ping(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """True when Postgres answers a trivial query."""
    try:
        async with asyncio.timeout(timeout_s):
            await pool.fetchval("SELECT 1")
        return True
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


class Listener:
    """LISTENs on one Postgres channel on a connection of its own, reconnecting with backoff forever.

    ``on_notify(payload)`` runs for each notification, and with None after every (re)connect: whatever
    was notified while nobody listened is unknown, so the callback must assume anything changed.
    """

    def __init__(self, dsn: str, channel: str, on_notify: Callable[[str | None], None]) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"listen-{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_notify(payload if isinstance(payload, str) else "")

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(self._channel, self._notified)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                delay = 0.2
                self._on_notify(None)  # anything committed while nobody listened
                while not lost.is_set():  # a connection that died silently is found within seconds
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _LISTEN_PING_S)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=_LISTEN_PING_S)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("listener disconnected; reconnecting in %.1fs", delay, extra={"channel": self._channel})
            except Exception:
                log.exception("listener failed; reconnecting in %.1fs", delay, extra={"channel": self._channel})
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
