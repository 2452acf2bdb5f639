"""How the inbox and analytics consumers read an event record: every field of the row, times in UTC, and the
records they must refuse (which the consumer then dead-letters)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from triggers_analytics.consumer import decode_event as analytics_decode
from triggers_common.models import EventRecord, new_event_ids
from triggers_inbox.consumer import decode_event as inbox_decode

EVENT_ID, CREATED_AT = new_event_ids(1)[0]


def record(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "event_id": EVENT_ID,
        "created_at": CREATED_AT,
        "source": "shop",
        "event_type": "order.created",
        "payload": msgspec.Raw(b'{"id":1,"big":1e400}'),
        "metadata": msgspec.Raw(b'{"priority":"high","region":"eu"}'),
        "tenant_id": "acme",
    }
    return msgspec.json.encode(EventRecord(**(fields | changes)))  # type: ignore[arg-type]


def test_a_record_becomes_its_inbox_row_byte_for_byte() -> None:
    row = inbox_decode(record())
    assert row.event_id == uuid.UUID(EVENT_ID)
    assert row.created_at == datetime.fromisoformat(CREATED_AT) and row.created_at.tzinfo is UTC
    assert (row.tenant_id, row.source, row.event_type, row.priority) == ("acme", "shop", "order.created", "high")
    assert row.payload == b'{"id":1,"big":1e400}'  # kept as sent, never decoded
    assert row.metadata == b'{"priority":"high","region":"eu"}'


@pytest.mark.parametrize(
    ("metadata", "priority", "stored"),
    [
        (b"null", "normal", None),
        (b'{"priority":"low"}', "low", b'{"priority":"low"}'),
        (b'{"priority":"urgent"}', "normal", b'{"priority":"urgent"}'),
        (b'{"priority":null,"x":[1,{"y":2}]}', "normal", b'{"priority":null,"x":[1,{"y":2}]}'),
    ],
)
def test_priority_comes_from_metadata_and_defaults_to_normal(
    metadata: bytes, priority: str, stored: bytes | None
) -> None:
    row = inbox_decode(record(metadata=msgspec.Raw(metadata)))
    assert (row.priority, row.metadata) == (priority, stored)


def test_an_offset_other_than_utc_is_the_same_instant_in_utc() -> None:
    row = inbox_decode(record(created_at="2026-11-27T10:06:25.973650+05:30"))
    assert row.created_at == datetime(2026, 11, 27, 4, 36, 25, 973650, tzinfo=UTC)
    assert row.created_at.tzinfo is UTC
    counted = analytics_decode(record(created_at="2026-11-27T10:06:25.973650+05:30"))
    assert counted.hour == datetime(2026, 11, 27, 4, tzinfo=UTC)  # the UTC hour, not the local one


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b'{"event_id": "x"}',
        record(event_id="not-a-uuid"),
        record(created_at="2026-11-27T10:06:25"),  # no offset: no instant
        record(created_at="yesterday"),
        record(payload=msgspec.Raw(b"[1,2]")),
        record(metadata=msgspec.Raw(b'"a string"')),
        record(source=5),
    ],
)
def test_malformed_records_are_refused(bad: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError, ValueError)):
        inbox_decode(bad)


def test_analytics_counts_an_event_in_the_utc_hour_it_was_created() -> None:
    counted = analytics_decode(record(created_at="2026-11-27T23:59:59.999999Z"))
    assert (counted.event_id, counted.tenant_id, counted.source, counted.event_type) == (
        uuid.UUID(EVENT_ID),
        "acme",
        "shop",
        "order.created",
    )
    assert counted.hour == datetime(2026, 11, 27, 23, tzinfo=UTC)
    with pytest.raises(ValueError):
        analytics_decode(record(created_at="2026-11-27T23:59:59"))
