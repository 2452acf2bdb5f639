"""Wire shapes that cross Kafka (API.md §9), and the id and time formats every service shares."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

PRIORITIES = ("low", "normal", "high")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NULL = msgspec.Raw(b"null")


class EventRecord(msgspec.Struct, kw_only=True):
    """One accepted event on ``triggers.events.v1``: the JSON of ``GET /v1/events/{id}`` plus ``tenant_id``.

    ``payload`` and ``metadata`` stay raw JSON from the client to the reader, so every number and string
    round-trips byte for byte.
    """

    event_id: str
    created_at: str
    source: str
    event_type: str
    payload: msgspec.Raw
    status: str = "pending"
    metadata: msgspec.Raw = NULL
    """``null`` when the client sent none."""
    acknowledged_at: str | None = None
    tenant_id: str


class EventStatusRecord(msgspec.Struct, kw_only=True):
    """One transition on ``triggers.event-status.v1``."""

    event_id: str
    tenant_id: str
    status: str
    """acknowledged, deleted, quarantined, pending (redriven out of quarantine) or purged."""
    at: str


event_record_decoder = msgspec.json.Decoder(EventRecord)
json_encoder = msgspec.json.Encoder()


def format_timestamp(moment: datetime) -> str:
    """RFC 3339, UTC, ``Z``, always with microseconds: ``2026-11-25T18:38:51.123456Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp` (accepts any ISO 8601 instant with an offset)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("timestamp without a UTC offset")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id(now_ns: int | None = None) -> tuple[uuid.UUID, datetime]:
    """A UUIDv7 (RFC 9562) and the instant it encodes, to the microsecond.

    The id's 48-bit millisecond prefix and the returned ``created_at`` come from the same clock reading,
    so ids sort like their creation times.
    """
    ns = time.time_ns() if now_ns is None else now_ns
    ms = ns // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    created = _EPOCH + timedelta(microseconds=ns // 1000)
    return uuid.UUID(int=value), created


def uuid7_time(event_id: uuid.UUID) -> datetime | None:
    """The creation instant encoded in a UUIDv7, or None for any other version."""
    if event_id.version != 7:
        return None
    return _EPOCH + timedelta(milliseconds=event_id.int >> 80)
