"""Every SQL statement of the webhooks service, one function each; all scoped to the caller's tenant."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec


class Webhook(msgspec.Struct, frozen=True):
    webhook_id: uuid.UUID
    url: str
    events: list[str]
    sources: list[str] | None
    description: str
    is_active: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = "webhook_id, url, events, sources, description, is_active, disabled_reason, created_at, updated_at"
EDITABLE = ("url", "events", "sources", "description", "is_active")


def _webhook(record: Any) -> Webhook:
    return Webhook(*record.values())


async def create_webhook(
    pool: asyncpg.Pool,
    tenant_id: str,
    url: str,
    events: list[str],
    sources: list[str] | None,
    description: str,
    secret: str,
) -> Webhook:
    record = await pool.fetchrow(
        f"""INSERT INTO webhooks (webhook_id, tenant_id, url, events, sources, description, secret)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        url,
        events,
        sources,
        description,
        secret,
    )
    return _webhook(record)


async def get_webhook(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> Webhook | None:
    record = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    return None if record is None else _webhook(record)


async def list_webhooks(
    pool: asyncpg.Pool,
    tenant_id: str,
    is_active: bool | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Webhook]:
    """The tenant's webhooks, oldest first, after the keyset position ``after``."""
    records = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM webhooks
            WHERE tenant_id = $1 AND ($2::boolean IS NULL OR is_active = $2)
              AND ($3::timestamptz IS NULL OR (created_at, webhook_id) > ($3, $4))
            ORDER BY created_at, webhook_id LIMIT $5""",
        tenant_id,
        is_active,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_webhook(r) for r in records]


async def update_webhook(
    pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, changes: Mapping[str, Any]
) -> Webhook | None:
    """Set the given fields (of ``EDITABLE``); turning a webhook on again clears why it was disabled."""
    fields = [name for name in EDITABLE if name in changes]
    sets = [f"{name} = ${i}" for i, name in enumerate(fields, start=3)]
    if changes.get("is_active"):
        sets.append("disabled_reason = NULL")
    record = await pool.fetchrow(
        f"""UPDATE webhooks SET {", ".join([*sets, "updated_at = now()"])}
            WHERE webhook_id = $1 AND tenant_id = $2 RETURNING {_COLUMNS}""",
        webhook_id,
        tenant_id,
        *(changes[name] for name in fields),
    )
    return None if record is None else _webhook(record)


async def delete_webhook(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> bool:
    status: str = await pool.execute(
        "DELETE FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2", webhook_id, tenant_id
    )
    return status != "DELETE 0"


async def rotate_secret(
    pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID, secret: str, overlap: timedelta
) -> datetime | None:
    """Sign with ``secret`` from now on, and with the current one too for ``overlap``; when that ends."""
    until: datetime | None = await pool.fetchval(
        """UPDATE webhooks SET previous_secret = secret, previous_secret_until = now() + $3::interval,
                               secret = $4, updated_at = now()
           WHERE webhook_id = $1 AND tenant_id = $2 RETURNING previous_secret_until""",
        webhook_id,
        tenant_id,
        overlap,
        secret,
    )
    return until


async def signing_target(pool: asyncpg.Pool, tenant_id: str, webhook_id: uuid.UUID) -> tuple[str, list[str]] | None:
    """The webhook's URL and the secrets that sign for it now (the current one first)."""
    record = await pool.fetchrow(
        """SELECT url, secret, CASE WHEN previous_secret_until > now() THEN previous_secret END AS previous
           FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2""",
        webhook_id,
        tenant_id,
    )
    if record is None:
        return None
    return record["url"], [record["secret"], *([record["previous"]] if record["previous"] else [])]
