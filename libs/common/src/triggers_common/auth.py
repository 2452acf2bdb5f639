"""API keys: creation, hashed storage, and the per-process lookup cache every service authenticates with."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from triggers_common.db import Conn, Listener
from triggers_common.errors import Forbidden, ServiceUnavailable, Unauthorized
from triggers_common.settings import DEV_API_KEY, DEV_TENANT, Settings

log = logging.getLogger("triggers.auth")

SCOPES = ("events:write", "events:read", "webhooks", "analytics", "admin")
DEFAULT_SCOPES = ("events:write", "events:read", "webhooks", "analytics")
DEV_KEY_ID = "key_dev"
DEV_RATE_LIMIT = 1_000_000
KEYS_CHANNEL = "triggers_keys"
"""NOTIFY'd in the transaction of every key or tenant change: every replica's cache forgets what it knew."""
_NEGATIVE_TTL_S = 1.0
STALE_LIMIT_S = 60.0
"""While Postgres is unreachable, a key seen before keeps working on its last known state this long at most."""
_MAX_CACHED_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's public id, its tenant, what it may do and from where."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]
    rate_limit: int | None = None
    tenant_rate_limit: int | None = None
    allowed_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    signing_secret: str | None = None
    require_signature: bool = False
    expires_at: datetime | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"API key lacks the '{scope}' scope", {"required_scope": scope})


def hash_key(key: str) -> bytes:
    """Keys are 256-bit random strings, so one SHA-256 makes a stolen table useless and lookups O(1)."""
    return hashlib.sha256(key.encode()).digest()


def generate_key() -> str:
    return "tr_" + secrets.token_urlsafe(32)


class CreatedKey(msgspec.Struct, frozen=True):
    key_id: str
    tenant_id: str
    key: str
    scopes: list[str]


async def create_key(
    conn: Conn,
    tenant_id: str,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    name: str = "",
    *,
    rate_limit: int | None = None,
    allowed_ips: Iterable[str] | None = None,
    signing_secret: str | None = None,
    require_signature: bool = False,
    expires_at: datetime | None = None,
    actor: str = "cli",
) -> CreatedKey:
    """Create the tenant if needed and a new key for it; the key text exists only in the return value."""
    scopes = check_scopes(scopes)
    key = generate_key()
    key_id = new_key_id()
    async with conn.transaction():
        await conn.execute("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id)
        await conn.execute(
            """INSERT INTO api_keys (key_id, tenant_id, key_hash, name, scopes, rate_limit, allowed_ips,
                                     signing_secret, require_signature, lineage_id, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::text[]::cidr[], $8, $9, $1, $10)""",
            key_id,
            tenant_id,
            hash_key(key),
            name,
            scopes,
            rate_limit,
            list(allowed_ips) if allowed_ips is not None else None,
            signing_secret,
            require_signature,
            expires_at,
        )
        changes = {"name": name, "scopes": scopes, "rate_limit": rate_limit, "allowed_ips": allowed_ips}
        await audit(conn, tenant_id, key_id, "created", actor, changes)
    return CreatedKey(key_id=key_id, tenant_id=tenant_id, key=key, scopes=scopes)


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, each once, in order; ValueError names any unknown one."""
    scopes = list(dict.fromkeys(scopes))
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    return scopes


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


async def audit(conn: Conn, tenant_id: str, key_id: str, action: str, actor: str, changes: object) -> None:
    """Record a key change (never a key or a secret in ``changes``) and tell every replica's cache."""
    await conn.execute(
        "INSERT INTO key_audit (tenant_id, key_id, action, actor, changes) VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        key_id,
        action,
        actor,
        msgspec.json.encode(changes).decode(),  # text: any connection's jsonb codec takes it
    )
    await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, key_id)


async def set_tenant_rate_limit(conn: Conn, tenant_id: str, per_minute: int | None) -> None:
    """Create the tenant if needed and set its cap across all its keys (None: the configured default)."""
    await conn.execute(
        """INSERT INTO tenants (tenant_id, rate_limit) VALUES ($1, $2)
           ON CONFLICT (tenant_id) DO UPDATE SET rate_limit = EXCLUDED.rate_limit""",
        tenant_id,
        per_minute,
    )
    await conn.execute("SELECT pg_notify($1, '')", KEYS_CHANNEL)


async def sync_dev_key(conn: Conn, dev_mode: bool) -> None:
    """The dev key exists (for tenant ``dev``) in dev mode, and is revoked whenever dev mode is off."""
    if dev_mode:
        async with conn.transaction():
            # Limits high enough that local tools and test suites never trip them; keys made for testing
            # limits are created with their own.
            await set_tenant_rate_limit(conn, DEV_TENANT, DEV_RATE_LIMIT)
            await conn.execute(
                """INSERT INTO api_keys (key_id, tenant_id, key_hash, name, scopes, rate_limit, lineage_id)
                   VALUES ($1, $2, $3, 'development key', $4, $5, $1)
                   ON CONFLICT (key_id) DO UPDATE SET status = 'active', revoked_at = NULL, expires_at = NULL,
                                                      rate_limit = EXCLUDED.rate_limit""",
                DEV_KEY_ID,
                DEV_TENANT,
                hash_key(DEV_API_KEY),
                list(SCOPES),
                DEV_RATE_LIMIT,
            )
    else:
        await conn.execute(
            "UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE key_id = $1 AND status <> 'revoked'",
            DEV_KEY_ID,
        )
    await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, DEV_KEY_ID)


_LOOKUP = """
SELECT k.key_id, k.tenant_id, k.scopes, k.rate_limit, t.rate_limit AS tenant_rate_limit, k.allowed_ips,
       k.signing_secret, k.require_signature, k.expires_at
FROM api_keys k JOIN tenants t USING (tenant_id)
WHERE k.key_hash = $1 AND k.status IN ('active', 'rotating') AND (k.expires_at IS NULL OR k.expires_at > now())
"""


class KeyCache:
    """Resolves API keys to principals with one Postgres read per key per ``key_cache_ttl_s``.

    Every key or tenant change NOTIFYs ``KEYS_CHANNEL`` in its transaction, and the cache then forgets
    everything: a revocation takes effect on every replica as soon as it commits. The TTL is the backstop for
    a notification lost while the listener reconnects. Concurrent lookups of one key share a single query.
    If Postgres is unreachable, a key seen before keeps working on its last known state (until it expires);
    an unknown key gets 503, never a guess.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        # digest -> (principal or None for unknown, fresh until, read at): monotonic seconds
        self._entries: dict[bytes, tuple[Principal | None, float, float]] = {}
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._generation = 0
        """Bumped by every change notification: a read that began before it is not cached."""
        self._listener = Listener(settings.database_url, KEYS_CHANNEL, self._changed)

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _changed(self, _payload: str | None) -> None:
        self._generation += 1
        self._entries.clear()
        self._inflight.clear()  # later lookups read afresh; those already waiting get the read they joined

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("Missing X-API-Key header")
        if not self._settings.dev_mode and hmac.compare_digest(key.encode(), DEV_API_KEY.encode()):
            raise Unauthorized("Invalid API key")
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > time.monotonic():
            principal = entry[0]
        else:
            principal = await self._refresh(digest, entry)
        if principal is None or (principal.expires_at is not None and principal.expires_at <= datetime.now(UTC)):
            raise Unauthorized("Invalid API key")
        return principal

    async def _refresh(self, digest: bytes, stale: tuple[Principal | None, float, float] | None) -> Principal | None:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        generation, now = self._generation, time.monotonic()
        try:
            principal = await self._load(digest)
            read_at = now
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if stale is not None and stale[0] is not None and now - stale[2] < STALE_LIMIT_S:
                principal, read_at = stale[0], stale[2]
                log.warning("key store unreachable; using the last known key state")
            else:
                future.set_exception(ServiceUnavailable("Key store unavailable, retry later"))
                future.exception()  # retrieved here so an unawaited future does not warn
                raise ServiceUnavailable("Key store unavailable, retry later") from exc
        finally:
            if self._inflight.get(digest) is future:
                del self._inflight[digest]
        if generation == self._generation:  # no change was announced while reading
            if len(self._entries) >= _MAX_CACHED_KEYS:
                self._entries.clear()
            ttl = self._settings.key_cache_ttl_s if principal is not None else _NEGATIVE_TTL_S
            self._entries[digest] = (principal, time.monotonic() + ttl, read_at)
        future.set_result(principal)
        return principal

    async def _load(self, digest: bytes) -> Principal | None:
        async with asyncio.timeout(2.0):
            row = await self._pool.fetchrow(_LOOKUP, digest)
        if row is None:
            return None
        return Principal(
            key_id=row["key_id"],
            tenant_id=row["tenant_id"],
            scopes=frozenset(row["scopes"]),
            rate_limit=row["rate_limit"],
            tenant_rate_limit=row["tenant_rate_limit"],
            allowed_ips=tuple(row["allowed_ips"]) if row["allowed_ips"] is not None else None,
            signing_secret=row["signing_secret"],
            require_signature=row["require_signature"],
            expires_at=row["expires_at"],
        )
