import re
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from triggers_common.errors import ServiceUnavailable, ValidationFailed
from triggers_common.models import (
    EventRecord,
    format_timestamp,
    new_event_id,
    new_event_ids,
    parse_timestamp,
    uuid7_time,
)
from triggers_common.settings import load_settings


def test_event_ids_are_uuid7_carrying_their_creation_time() -> None:
    ns = 1_795_000_000_123_456_789
    event_id, created = new_event_id(ns)
    assert event_id.version == 7 and event_id.variant == uuid.RFC_4122
    assert created == datetime(2026, 11, 18, 11, 6, 40, 123456, tzinfo=UTC)
    assert uuid7_time(event_id) == created.replace(microsecond=123000)
    assert uuid7_time(uuid.uuid4()) is None


def test_event_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_event_id(1_795_000_000_000_000_000 + i * 1_000_000)[0] for i in range(100)]
    assert ids == sorted(ids, key=str)
    assert len({new_event_id()[0] for _ in range(10_000)}) == 10_000


def test_the_ids_of_one_request_sort_in_item_order_with_distinct_instants() -> None:
    ns = 1_795_000_000_123_456_789
    ids = new_event_ids(2500, ns)
    assert ids[0][1] == "2026-11-18T11:06:40.123456Z" and ids[1][1] == "2026-11-18T11:06:40.123457Z"
    assert ids[-1][1] == "2026-11-18T11:06:40.125955Z"
    parsed = [uuid.UUID(text) for text, _ in ids]
    for u, (text, created_at) in zip(parsed, ids, strict=True):
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == text
        created = parse_timestamp(created_at)
        assert uuid7_time(u) == created.replace(microsecond=created.microsecond // 1000 * 1000)
    assert parsed == sorted(parsed, key=str) and [c for _, c in ids] == sorted(c for _, c in ids)
    assert len({c for _, c in ids}) == 2500
    assert len({text for _ in range(2_000) for text, _ in new_event_ids(5, ns)}) == 10_000


def test_the_clock_second_is_formatted_afresh_when_it_changes() -> None:
    for ns in (1_795_000_000_999_999_999, 1_795_000_001_000_000_000, 1_000_000_000, 1_795_000_000_000_000_000):
        created = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
        assert new_event_ids(1, ns)[0][1] == format_timestamp(created)
    ns = 1_795_000_000_999_998_000  # a bulk request's ids across a second's end
    for i, (text, created_at) in enumerate(new_event_ids(3000, ns)):
        created = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000 + i)
        assert created_at == format_timestamp(created)
        assert uuid7_time(uuid.UUID(text)) == created.replace(microsecond=created.microsecond // 1000 * 1000)
        assert int(text[15:18], 16) == created.microsecond % 1000  # the 12 bits after the version


def test_timestamps_are_utc_z_with_microseconds() -> None:
    stamp = format_timestamp(datetime(2026, 11, 25, 18, 38, 51, tzinfo=UTC))
    assert stamp == "2026-11-25T18:38:51.000000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", format_timestamp(datetime.now(UTC)))
    assert parse_timestamp(stamp) == datetime(2026, 11, 25, 18, 38, 51, tzinfo=UTC)
    assert parse_timestamp("2026-11-25T19:38:51+01:00") == datetime(2026, 11, 25, 18, 38, 51, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_timestamp("2026-11-25T18:38:51")


def test_event_record_keeps_raw_json_exactly() -> None:
    record = EventRecord(
        event_id="e",
        created_at="t",
        source="s",
        event_type="x",
        payload=msgspec.Raw(b'{"n":1.50,"big":123456789012345678901234567890}'),
        tenant_id="dev",
    )
    encoded = msgspec.json.encode(record)
    assert b'"payload":{"n":1.50,"big":123456789012345678901234567890}' in encoded
    assert b'"metadata":null' in encoded
    decoded = msgspec.json.decode(encoded, type=EventRecord)
    assert bytes(decoded.payload) == b'{"n":1.50,"big":123456789012345678901234567890}'


def test_settings_from_environment() -> None:
    settings = load_settings(
        {"TRIGGERS_DEV_MODE": "true", "TRIGGERS_SEND_TIMEOUT_S": "2.5", "TRIGGERS_HTTP_PORT": "9000", "OTHER": "x"}
    )
    assert settings.dev_mode is True and settings.send_timeout_s == 2.5 and settings.http_port == 9000
    with pytest.raises(ValueError, match="http_port"):
        load_settings({"TRIGGERS_DEV_MODE": "1", "TRIGGERS_HTTP_PORT": "eighty"})


def test_production_settings_need_a_secret() -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        load_settings({})
    assert load_settings({"TRIGGERS_SECRET_KEY": "s3cret"}).dev_mode is False


def test_errors_carry_status_code_and_headers() -> None:
    err = ValidationFailed.of([{"field": "body.x", "message": "m", "type": "value_error"}])
    assert (err.status_code, err.code) == (400, "VALIDATION_ERROR")
    assert err.details == {"validation_errors": [{"field": "body.x", "message": "m", "type": "value_error"}]}
    unavailable = ServiceUnavailable(retry_after_s=3)
    assert unavailable.status_code == 503 and unavailable.headers == {"Retry-After": "3"}
