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
    return as_utc(datetime.fromisoformat(text))


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; ValueError if it has no offset, since it then names no instant."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        raise ValueError("timestamp without a UTC offset")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id(now_ns: int | None = None) -> tuple[uuid.UUID, datetime]:
    """A UUIDv7 (RFC 9562) and the instant it encodes, to the microsecond: :func:`new_event_ids` for one."""
    text, created_at = new_event_ids(1, now_ns)[0]
    return uuid.UUID(text), parse_timestamp(created_at)


_clock_second: tuple[int, str] = (-1, "")
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
"""Sets the top two bits of a byte to the RFC 9562 variant, 0b10."""
_HEX3 = [f"{n:03x}" for n in range(1000)]
_DEC3 = [f"{n:03d}" for n in range(1000)]


def new_event_ids(count: int, now_ns: int | None = None) -> list[tuple[str, str]]:
    """``count`` UUIDv7 ids (RFC 9562) as text, each with its creation instant as :func:`format_timestamp`
    writes it: the events of one request, without making UUID and datetime objects.

    One clock reading serves the call; the i-th id is created i microseconds after it, so the ids and instants
    of one request are distinct and sort in the order they were asked for (a bulk request's items). An id
    carries its instant's millisecond in its first 48 bits and the microseconds within it in the 12 bits after
    the version (method 3 of RFC 9562 §6.2), then the variant and 62 random bits. The text is built a
    millisecond at a time: what the ids of one millisecond share is formatted once.
    """
    global _clock_second
    start = (time.time_ns() if now_ns is None else now_ns) // 1000
    random = bytearray(os.urandom(8 * count))
    random[::8] = random[::8].translate(_VARIANT)
    tails = random.hex()
    ids: list[tuple[str, str]] = []
    while (done := len(ids)) < count:
        milli, micro = divmod(start + done, 1000)
        second, milli_in_second = divmod(milli, 1000)
        if _clock_second[0] != second:
            _clock_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        head = f"{milli:012x}"
        id_prefix = f"{head[:8]}-{head[8:]}-7"
        time_prefix = f"{_clock_second[1]}.{milli_in_second:03d}"
        last = min(1000, micro + count - done)
        ids += [
            (f"{id_prefix}{_HEX3[m]}-{tails[t : t + 4]}-{tails[t + 4 : t + 16]}", f"{time_prefix}{_DEC3[m]}Z")
            for m, t in zip(range(micro, last), range(16 * done, 16 * (done + last - micro), 16), strict=True)
        ]
    return ids


def uuid7_time(event_id: uuid.UUID) -> datetime | None:
    """The creation instant encoded in a UUIDv7, or None for any other version."""
    if event_id.version != 7:
        return None
    return _EPOCH + timedelta(milliseconds=event_id.int >> 80)
