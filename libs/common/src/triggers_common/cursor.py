"""Opaque page cursors (inbox, webhooks): the keyset position (time, id), signed for the tenant, so a tampered
one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from triggers_common.errors import InvalidParameter

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
