"""Opaque page cursors (inbox, webhooks): the keyset position (time, id), signed for the tenant, so a tampered
one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec

from triggers_common.errors import InvalidParameter
from triggers_common.openapi import Param

PAGE_PARAMS = (
    Param("limit", "query", "Page size, 1..100 (default 50)", {"type": "integer", "minimum": 1, "maximum": 100}),
    Param("cursor", "query", "next_cursor of the previous page (opaque; a tampered one is 422)"),
)
"""The query parameters of every cursor-paged list, for its OpenAPI description."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, tenant_id: str, body: bytes) -> bytes:
    return hmac.new(secret, tenant_id.encode() + b"\n" + body, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(secret: bytes, tenant_id: str, created_at: datetime, event_id: uuid.UUID) -> str:
    """The cursor of the position after ``(created_at, event_id)``."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    body = msgspec.json.encode([micros, event_id.hex])
    return f"{_b64(body)}.{_b64(_mac(secret, tenant_id, body))}"


def page_after(secret: bytes, tenant_id: str, cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The position a page starts after: none without a cursor, else what :func:`decode_cursor` says."""
    return decode_cursor(secret, tenant_id, cursor) if cursor else None


def decode_cursor(secret: bytes, tenant_id: str, cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor points after; 422 if it was not issued to this tenant or was altered."""
    try:
        body_text, mac_text = cursor.split(".", 1)
        body = _unb64(body_text)
        if not hmac.compare_digest(_unb64(mac_text), _mac(secret, tenant_id, body)):
            raise ValueError("signature mismatch")
        micros, event_hex = msgspec.json.decode(body, type=tuple[int, str])
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(hex=event_hex)
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidParameter.field("query.cursor", "Invalid or tampered cursor", "Invalid cursor") from exc


class Pagination(msgspec.Struct):
    """The ``pagination`` object of every paged list."""

    limit: int
    next_cursor: str | None


MAX_PAGE = 100
DEFAULT_PAGE = 50
T = TypeVar("T")


def page_limit(raw: str | None) -> int:
    """The ``limit`` query parameter of a paged list: 1..100, 50 when absent; 422 otherwise."""
    if raw is None:
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidParameter.field("query.limit", f"Must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def page_of(
    rows: list[T], limit: int, secret: bytes, tenant_id: str, position: Callable[[T], tuple[datetime, uuid.UUID]]
) -> tuple[list[T], str | None]:
    """A page from ``limit + 1`` rows read: the first ``limit``, and the cursor after the last of them (its
    ``position``) if there is more."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(secret, tenant_id, *position(rows[limit - 1]))
