"""Analytics HTTP: event counts per day or hour, a summary, and an export (CSV or JSON). Tenant-scoped.

Dates are UTC days, ``YYYY-MM-DD``, both ends included; the default is the last 7 days (today included), and a
range covers at most 31 days. Events count in the hour they were created in.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.types import ControllerRouterHandler
from triggers_common.auth import Principal
from triggers_common.errors import ValidationFailed
from triggers_common.http import encode, json_response, request_id
from triggers_common.models import utc_now
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime

from triggers_analytics import store
from triggers_analytics.aggregate import percentiles

DEFAULT_DAYS = 7
MAX_DAYS = 31
TOP = 10
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Bucket(msgspec.Struct, omit_defaults=True):
    date: str
    event_count: int
    source_distribution: dict[str, int]
    event_type_distribution: dict[str, int]
    hour: int | None = None
    """0-23 (UTC), hourly metrics only."""


class Metrics(msgspec.Struct):
    metrics: list[Bucket]
    start_date: str
    end_date: str
    metric_type: str
    request_id: str


class SourceCount(msgspec.Struct):
    source: str
    count: int


class TypeCount(msgspec.Struct):
    event_type: str
    count: int


class Latency(msgspec.Struct):
    p50: float | None
    p95: float | None
    p99: float | None


class WebhookOutcomes(msgspec.Struct):
    delivered: int
    failed: int
    retrying: int


class Summary(msgspec.Struct):
    total_events: int
    top_sources: list[SourceCount]
    top_event_types: list[TypeCount]
    acknowledged: int
    pending: int
    ack_latency_ms: Latency
    webhooks: WebhookOutcomes
    start_date: str
    end_date: str
    request_id: str


DATE_PARAMS = (
    Param("start_date", "query", f"First UTC day, YYYY-MM-DD (default: {DEFAULT_DAYS - 1} days before end_date)"),
    Param("end_date", "query", f"Last UTC day, included, YYYY-MM-DD (default: today); at most {MAX_DAYS} days"),
)
METRIC_TYPE = Param(
    "metric_type", "query", "daily (default) or hourly", {"type": "string", "enum": ["daily", "hourly"]}
)
FORMAT = Param("format", "query", "csv (default) or json", {"type": "string", "enum": ["csv", "json"]})


def _day(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed.field(f"query.{name}", "must be a date, YYYY-MM-DD") from None


def date_range(params: Mapping[str, str]) -> tuple[date, date]:
    """The requested days, both included; 400 for a bad date, a reversed range or one over 31 days."""
    end = _day(params, "end_date")
    start = _day(params, "start_date")
    if end is None:
        end = max(utc_now().date(), start or date.min)
    if end >= date.max:  # the range's end is the next day at midnight
        raise ValidationFailed.field("query.end_date", "must be before 9999-12-31")
    if start is None:
        back = timedelta(days=DEFAULT_DAYS - 1)
        start = end - back if end - date.min >= back else date.min
    if start > end:
        raise ValidationFailed.field("query.start_date", "must not be after end_date")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValidationFailed.field("query.end_date", f"the range covers at most {MAX_DAYS} days")
    return start, end


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = params.get(name) or allowed[0]
    if value not in allowed:
        raise ValidationFailed.field(f"query.{name}", f"must be one of: {', '.join(allowed)}")
    return value


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(), UTC), datetime.combine(end + timedelta(days=1), time(), UTC)


def buckets(rows: list[store.HourRow], start: date, end: date, metric_type: str) -> list[Bucket]:
    """One bucket per day (or hour) of the range, in order, empty ones included."""
    hourly = metric_type == "hourly"
    keys: list[tuple[date, int | None]] = []
    day = start
    while day <= end:
        keys += [(day, h) for h in range(24)] if hourly else [(day, None)]
        day += timedelta(days=1)
    sources: dict[tuple[date, int | None], Counter[str]] = {k: Counter() for k in keys}
    types: dict[tuple[date, int | None], Counter[str]] = {k: Counter() for k in keys}
    for row in rows:
        key = (row.hour.date(), row.hour.hour if hourly else None)
        sources[key][row.source] += row.events
        types[key][row.event_type] += row.events
    return [
        Bucket(
            date=day.isoformat(),
            hour=hour,
            event_count=sum(sources[day, hour].values()),
            source_distribution=dict(sources[day, hour].most_common()),
            event_type_distribution=dict(types[day, hour].most_common()),
        )
        for day, hour in keys
    ]


def to_csv(rows: list[Bucket], metric_type: str) -> bytes:
    """RFC 4180 CSV (CRLF, quoted where needed), one row per bucket; the distributions as JSON objects (a cell
    that starts with ``{`` is never read as a formula)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    hour_column = ["hour"] if metric_type == "hourly" else []
    writer.writerow(["date", *hour_column, "event_count", "source_distribution", "event_type_distribution"])
    for b in rows:
        hour = [b.hour] if metric_type == "hourly" else []
        sources, types = encode(b.source_distribution).decode(), encode(b.event_type_distribution).decode()
        writer.writerow([b.date, *hour, b.event_count, sources, types])
    return out.getvalue().encode()


def build_routes(rt: Runtime) -> list[ControllerRouterHandler]:
    async def metrics_of(request: Request[Any, Any, Any], principal: Principal) -> Metrics:
        params = request.query_params
        start, end = date_range(params)
        metric_type = _choice(params, "metric_type", ("daily", "hourly"))
        rows = await store.hourly(rt.query_pool, principal.tenant_id, *_bounds(start, end))
        return Metrics(
            buckets(rows, start, end, metric_type), start.isoformat(), end.isoformat(), metric_type, request_id(request)
        )

    @get(
        "/v1/analytics",
        tags=["analytics"],
        summary="Event counts per day or hour, by source and type",
        opt={"doc": Doc(params=(*DATE_PARAMS, METRIC_TYPE), response=Metrics, errors=(400,))},
    )
    async def analytics(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await rt.access.check(request, "analytics")
        return json_response(encode(await metrics_of(request, principal)))

    @get(
        "/v1/analytics/summary",
        tags=["analytics"],
        summary="Totals of a date range: events, top sources and types, acks, ack latency, webhook outcomes",
        description="`pending` counts the events neither acknowledged nor deleted (quarantined ones included). "
        "Ack latency percentiles are read from a histogram whose buckets are 19 % apart (null without acks). "
        "Webhook figures count the deliveries of the range as they stand now.",
        opt={"doc": Doc(params=DATE_PARAMS, response=Summary, errors=(400,))},
    )
    async def summary(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await rt.access.check(request, "analytics")
        start, end = date_range(request.query_params)
        tenant, (since, until) = principal.tenant_id, _bounds(start, end)
        rows = await store.hourly(rt.query_pool, tenant, since, until)
        acknowledged, deleted = await store.status_totals(rt.query_pool, tenant, since, until)
        latency = percentiles(await store.ack_latency(rt.query_pool, tenant, since, until), (0.5, 0.95, 0.99)) or {}
        delivered, failed, retrying = await store.webhook_outcomes(rt.query_pool, tenant, since, until)
        sources: Counter[str] = Counter()
        types: Counter[str] = Counter()
        for row in rows:
            sources[row.source] += row.events
            types[row.event_type] += row.events
        total = sum(sources.values())
        body = Summary(
            total_events=total,
            top_sources=[SourceCount(s, n) for s, n in sources.most_common(TOP)],
            top_event_types=[TypeCount(t, n) for t, n in types.most_common(TOP)],
            acknowledged=acknowledged,
            pending=max(total - acknowledged - deleted, 0),
            ack_latency_ms=Latency(latency.get(0.5), latency.get(0.95), latency.get(0.99)),
            webhooks=WebhookOutcomes(delivered, failed, retrying),
            start_date=start.isoformat(),
            end_date=end.isoformat(),
            request_id=request_id(request),
        )
        return json_response(encode(body))

    @get(
        "/v1/analytics/export",
        tags=["analytics"],
        summary="The counts of GET /v1/analytics as a file: CSV (one row per bucket) or JSON",
        description="CSV: a header row, then one row per day (or hour); `source_distribution` and "
        "`event_type_distribution` hold JSON objects. Sent as an attachment.",
        opt={"doc": Doc(params=(*DATE_PARAMS, METRIC_TYPE, FORMAT), response=Metrics, errors=(400,))},
    )
    async def export(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await rt.access.check(request, "analytics")
        fmt = _choice(request.query_params, "format", ("csv", "json"))
        body = await metrics_of(request, principal)
        name = f"triggers-analytics-{body.start_date}-{body.end_date}-{body.metric_type}.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if fmt == "json":
            return json_response(encode(body), headers=headers)
        content = to_csv(body.metrics, body.metric_type)
        return Response(content=content, media_type="text/csv; charset=utf-8", headers=headers)

    return [analytics, summary, export]
