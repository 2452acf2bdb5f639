import uuid
from datetime import UTC, datetime

import pytest
from triggers_common.cursor import decode_cursor, encode_cursor
from triggers_common.errors import InvalidParameter

SECRET = b"k" * 32


def test_cursor_round_trips_for_its_tenant() -> None:
    at, event_id = datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=UTC), uuid.uuid4()
    cursor = encode_cursor(SECRET, "acme", at, event_id)
    assert decode_cursor(SECRET, "acme", cursor) == (at, event_id)


@pytest.mark.parametrize("mutate", [lambda c: c[:-1], lambda c: "x" + c, lambda c: c.replace(".", ""), lambda c: ""])
def test_tampered_cursor_is_refused(mutate: object) -> None:
    cursor = encode_cursor(SECRET, "acme", datetime.now(UTC), uuid.uuid4())
    with pytest.raises(InvalidParameter):
        decode_cursor(SECRET, "acme", mutate(cursor))  # type: ignore[operator]


def test_cursor_of_another_tenant_or_secret_is_refused() -> None:
    cursor = encode_cursor(SECRET, "acme", datetime.now(UTC), uuid.uuid4())
    with pytest.raises(InvalidParameter):
        decode_cursor(SECRET, "other", cursor)
    with pytest.raises(InvalidParameter):
        decode_cursor(b"another secret", "acme", cursor)
