"""Managing API keys: list, get, change, revoke, rotate, versions and the audit log, for the HTTP API and the
CLI alike. Every statement that takes a tenant is scoped to it; every change is audited and NOTIFYs every
replica's key cache in its own transaction (``auth.audit``). No key text ever leaves ``auth.create_key``
and ``rotate_key``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from triggers_common.auth import CreatedKey, audit, generate_key, hash_key, new_key_id
from triggers_common.db import Conn


class KeyInfo(msgspec.Struct, frozen=True):
    """What may be shown about a key: never the key, never its signing secret."""

    key_id: str
    tenant_id: str
    name: str
    scopes: list[str]
    rate_limit: int | None
    allowed_ips: list[str] | None
    require_signature: bool
    has_signing_secret: bool
    status: str
    """active, rotating (replaced; works until expires_at), revoked or expired."""
    version: int
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None


class AuditEntry(msgspec.Struct, frozen=True):
    id: int
    key_id: str
    action: str
    actor: str
    changes: msgspec.Raw
    at: datetime


class KeyStateConflict(ValueError):
    """The key is not in a state that allows this (e.g. rotating a revoked key)."""


class SignatureNeedsSecret(ValueError):
    """require_signature without a signing_secret: the key could never be used."""


_INFO = """key_id, tenant_id, name, scopes, rate_limit, allowed_ips::text[] AS allowed_ips, require_signature,
           signing_secret IS NOT NULL AS has_signing_secret,
           CASE WHEN status IN ('active', 'rotating') AND expires_at <= now() THEN 'expired' ELSE status END
             AS status,
           version, expires_at, created_at, updated_at, revoked_at"""
EDITABLE = ("name", "scopes", "rate_limit", "allowed_ips", "signing_secret", "require_signature")


def _info(record: Any) -> KeyInfo:
    return KeyInfo(*record.values())


def check_networks(networks: Iterable[str]) -> list[str]:
    """IPs and CIDRs, v4 or v6, as Postgres will store them; ValueError names the first bad one."""
    checked = []
    for text in networks:
        try:
            if "%" in text:  # an IPv6 zone id: meaningless off the host, and Postgres refuses it
                raise ValueError
            checked.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {text!r}") from None
    return checked


async def list_keys(conn: Conn, tenant_id: str) -> list[KeyInfo]:
    records = await conn.fetch(f"SELECT {_INFO} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at", tenant_id)
    return [_info(r) for r in records]


async def get_key(conn: Conn, tenant_id: str | None, key_id: str) -> KeyInfo | None:
    """The key, if it belongs to ``tenant_id`` (None: any tenant, for operators)."""
    record = await conn.fetchrow(
        f"SELECT {_INFO} FROM api_keys WHERE key_id = $1 AND ($2::text IS NULL OR tenant_id = $2)", key_id, tenant_id
    )
    return None if record is None else _info(record)


async def update_key(conn: Conn, tenant_id: str, key_id: str, changes: Mapping[str, Any], actor: str) -> KeyInfo | None:
    """Change the given fields (of ``EDITABLE``; None clears an optional one) of a live key of the tenant, and
    of its other live versions (a rotating predecessor must not keep wider rights). None if there is no such
    key; KeyStateConflict if it is revoked or expired; SignatureNeedsSecret if it would require a signature
    without a secret."""
    fields = [name for name in EDITABLE if name in changes]
    async with conn.transaction():
        current = await get_key(conn, tenant_id, key_id)
        if current is None:
            return None
        if current.status in ("revoked", "expired"):
            raise KeyStateConflict(f"Key {key_id} is {current.status}")
        if fields:
            sets = ", ".join(
                f"{name} = ${i}::text[]::cidr[]" if name == "allowed_ips" else f"{name} = ${i}"
                for i, name in enumerate(fields, start=3)
            )
            try:
                records = await conn.fetch(
                    f"""UPDATE api_keys SET {sets}, updated_at = now()
                        WHERE tenant_id = $2 AND status <> 'revoked'
                          AND lineage_id = (SELECT lineage_id FROM api_keys WHERE key_id = $1 AND tenant_id = $2)
                        RETURNING {_INFO}""",
                    key_id,
                    tenant_id,
                    *(changes[name] for name in fields),
                )
            except asyncpg.CheckViolationError:
                raise SignatureNeedsSecret("require_signature needs a signing_secret") from None
            current = next(_info(r) for r in records if r["key_id"] == key_id)
            shown = {n: ("changed" if n == "signing_secret" and changes[n] else changes[n]) for n in fields}
            await audit(conn, tenant_id, key_id, "updated", actor, shown)
    return current


async def revoke_key(conn: Conn, tenant_id: str | None, key_id: str, actor: str) -> KeyInfo | None:
    """Revoke the key (of ``tenant_id``; None: any tenant, for operators). Revoking twice changes nothing."""
    async with conn.transaction():
        record = await conn.fetchrow(
            f"""UPDATE api_keys SET status = 'revoked', revoked_at = now(), updated_at = now()
                WHERE key_id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND status <> 'revoked'
                RETURNING {_INFO}""",
            key_id,
            tenant_id,
        )
        if record is None:
            return await get_key(conn, tenant_id, key_id)
        await audit(conn, record["tenant_id"], key_id, "revoked", actor, {})
    return _info(record)


async def rotate_key(
    conn: Conn, tenant_id: str, key_id: str, transition: timedelta, actor: str
) -> tuple[CreatedKey, KeyInfo, KeyInfo] | None:
    """Replace a live key with a new version (same name, scopes and policies). The old one keeps working, as
    'rotating', for ``transition`` (or until it expires anyway, if sooner). The new key, its info and the old
    key's; None if the tenant has no such key; KeyStateConflict if it is not the live, latest version."""
    async with conn.transaction():
        old = await conn.fetchrow(
            """SELECT lineage_id, version, expires_at <= now() AS expired, status,
                      version = (SELECT max(version) FROM api_keys v WHERE v.lineage_id = k.lineage_id) AS latest
               FROM api_keys k WHERE key_id = $1 AND tenant_id = $2 FOR UPDATE""",
            key_id,
            tenant_id,
        )
        if old is None:
            return None
        if old["status"] == "revoked" or old["expired"]:
            raise KeyStateConflict(f"Key {key_id} is {'revoked' if old['status'] == 'revoked' else 'expired'}")
        if old["status"] == "rotating" or not old["latest"]:  # (a concurrent rotation committed first)
            raise KeyStateConflict(f"Key {key_id} was already rotated; rotate its latest version")
        key, new_id = generate_key(), new_key_id()
        try:
            new = await conn.fetchrow(
                f"""INSERT INTO api_keys (key_id, tenant_id, key_hash, name, scopes, rate_limit, allowed_ips,
                                      signing_secret, require_signature, lineage_id, version)
                SELECT $1, tenant_id, $2, name, scopes, rate_limit, allowed_ips, signing_secret,
                       require_signature, lineage_id, version + 1
                FROM api_keys WHERE key_id = $3
                RETURNING {_INFO}""",
                new_id,
                hash_key(key),
                key_id,
            )
        except asyncpg.UniqueViolationError:  # the next version exists: another rotation won
            raise KeyStateConflict(f"Key {key_id} was already rotated; rotate its latest version") from None
        previous = await conn.fetchrow(
            f"""UPDATE api_keys SET status = 'rotating', updated_at = now(),
                       expires_at = least(coalesce(expires_at, 'infinity'), now() + $2::interval)
                WHERE key_id = $1 RETURNING {_INFO}""",
            key_id,
            transition,
        )
        assert new is not None and previous is not None
        await audit(conn, tenant_id, key_id, "rotated", actor, {"replaced_by": new_id})
        await audit(conn, tenant_id, new_id, "created", actor, {"rotated_from": key_id})
    created = CreatedKey(key_id=new_id, tenant_id=tenant_id, key=key, scopes=list(new["scopes"]))
    return created, _info(new), _info(previous)


async def key_versions(conn: Conn, tenant_id: str, key_id: str) -> list[KeyInfo] | None:
    """Every version of the key's lineage, oldest first; None if the tenant has no such key."""
    records = await conn.fetch(
        f"""SELECT {_INFO} FROM api_keys
            WHERE tenant_id = $2 AND lineage_id = (SELECT lineage_id FROM api_keys WHERE key_id = $1 AND tenant_id = $2)
            ORDER BY version""",
        key_id,
        tenant_id,
    )
    return [_info(r) for r in records] or None


async def audit_log(conn: Conn, tenant_id: str, limit: int, before: int | None) -> list[AuditEntry]:
    """The tenant's key changes, newest first, older than entry ``before`` if given."""
    records = await conn.fetch(
        """SELECT id, key_id, action, actor, changes, at FROM key_audit
           WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3""",
        tenant_id,
        before,
        limit,
    )
    return [AuditEntry(*r.values()) for r in records]
