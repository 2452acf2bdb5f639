"""The arithmetic of analytics: latency buckets and percentiles, transitions counted once, date ranges and
buckets of the API."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from triggers_analytics.aggregate import (
    EventState,
    Transition,
    apply_transitions,
    bucket_bound_ms,
    latency_bucket,
    percentiles,
)
from triggers_analytics.routes import buckets, date_range, to_csv
from triggers_analytics.store import HourRow
from triggers_common.errors import ValidationFailed

HOUR = datetime(2026, 11, 25, 13, tzinfo=UTC)


def test_a_latency_falls_below_its_bucket_bound_and_above_the_previous_one() -> None:
    for ms in (0.2, 1.0, 1.5, 37.0, 999.0, 60_000.0, 3_600_000.0):
        bucket = latency_bucket(ms)
        assert ms < bucket_bound_ms(bucket)
        assert bucket == 0 or ms >= bucket_bound_ms(bucket - 1)
        assert bucket_bound_ms(bucket) <= max(ms, 1.0) * 1.19 + 1e-9


def test_percentiles_are_nearest_rank_over_the_buckets() -> None:
    histogram = {latency_bucket(10.0): 90, latency_bucket(1000.0): 9, latency_bucket(60_000.0): 1}
    p = percentiles(histogram, (0.5, 0.9, 0.95, 0.99, 1.0))
    assert p is not None
    assert p[0.5] == p[0.9] == round(bucket_bound_ms(latency_bucket(10.0)), 1)
    assert p[0.95] == p[0.99] == round(bucket_bound_ms(latency_bucket(1000.0)), 1)
    assert p[1.0] == round(bucket_bound_ms(latency_bucket(60_000.0)), 1)
    assert percentiles({}, (0.5,)) is None


def transition(event_id: uuid.UUID, status: str, latency_ms: float = 50.0) -> Transition:
    return Transition(event_id, "acme", HOUR, status, latency_ms)


def test_each_event_counts_once_whatever_comes_again() -> None:
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    deltas = apply_transitions(
        {d: EventState(acknowledged=True)},
        [
            transition(a, "acknowledged"),
            transition(a, "acknowledged"),  # redelivered
            transition(a, "deleted"),  # deleted after its ack: still acknowledged, not "deleted unacked"
            transition(b, "deleted"),
            transition(b, "acknowledged"),  # cannot happen after a delete; changes nothing if it came
            transition(c, "quarantined"),
            transition(d, "acknowledged"),  # counted in an earlier batch
        ],
    )
    assert deltas.acknowledged == {("acme", HOUR): 1}
    assert deltas.deleted == {("acme", HOUR): 1}
    assert sum(deltas.latency.values()) == 1
    assert deltas.states == {a: EventState(True, True), b: EventState(False, True)}

    again = apply_transitions(deltas.states, [transition(a, "acknowledged"), transition(b, "deleted")])
    assert not again.acknowledged and not again.deleted and not again.states


def test_date_ranges() -> None:
    assert date_range({"start_date": "2026-11-01", "end_date": "2026-11-30"}) == (date(2026, 11, 1), date(2026, 11, 30))
    start, end = date_range({})
    assert (end - start).days == 6 and end == datetime.now(UTC).date()
    assert date_range({"start_date": "2026-11-20", "end_date": "2026-11-20"}) == (date(2026, 11, 20),) * 2
    assert date_range({"end_date": "0001-01-03"}) == (date(1, 1, 1), date(1, 1, 3))  # no overflow at the start
    for params in (
        {"start_date": "2026-11-31"},
        {"start_date": "2026-1-01"},
        {"end_date": " 2026-11-01"},
        {"start_date": "2026-11-02", "end_date": "2026-11-01"},
        {"start_date": "2026-10-01", "end_date": "2026-11-01"},  # 32 days
        {"start_date": "9999-12-31", "end_date": "9999-12-31"},  # the end of the calendar
    ):
        with pytest.raises(ValidationFailed):
            date_range(params)


def test_buckets_cover_every_day_or_hour_and_csv_has_one_row_each() -> None:
    rows = [HourRow(HOUR, "shop", "order.created", 3), HourRow(HOUR, "crm", "user.created", 1)]
    daily = buckets(rows, date(2026, 11, 24), date(2026, 11, 25), "daily")
    assert [(b.date, b.event_count, b.hour) for b in daily] == [("2026-11-24", 0, None), ("2026-11-25", 4, None)]
    assert daily[1].source_distribution == {"shop": 3, "crm": 1}
    hourly = buckets(rows, date(2026, 11, 25), date(2026, 11, 25), "hourly")
    assert len(hourly) == 24 and hourly[13].event_count == 4 and hourly[12].event_count == 0

    lines = to_csv(daily, "daily").decode().split("\r\n")
    assert lines[0] == "date,event_count,source_distribution,event_type_distribution"
    assert lines[2] == '2026-11-25,4,"{""shop"":3,""crm"":1}","{""order.created"":3,""user.created"":1}"'
    assert lines[3] == "" and len(lines) == 4


def test_the_purge_bound_splits_uuid7_ids_at_its_moment() -> None:
    from datetime import timedelta

    from triggers_analytics.app import first_id_of
    from triggers_common.models import new_event_id

    moment = datetime(2026, 11, 18, 6, 30, tzinfo=UTC)
    ns = int(moment.timestamp()) * 1_000_000_000
    before, _ = new_event_id(ns - 1_000_000)  # 1 ms earlier
    at, _ = new_event_id(ns)
    after, _ = new_event_id(ns + int(timedelta(days=1).total_seconds() * 1e9))
    assert before < first_id_of(moment) <= at < after
