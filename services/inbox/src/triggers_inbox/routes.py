"""Inbox HTTP: list pending events, get one, ack, delete. Every statement is scoped to the caller's tenant."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.types import ControllerRouterHandler
from prometheus_client import Histogram
from triggers_common.auth import Principal
from triggers_common.cursor import PAGE_PARAMS, Pagination, page_after, page_limit, page_of
from triggers_common.errors import BulkFailure, Conflict, InvalidParameter, NotFound, TriggersError, ValidationFailed
from triggers_common.http import encode, json_response, request_id, require_json, uuid_param
from triggers_common.models import PRIORITIES, format_timestamp, utc_now, uuid7_time
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime

from triggers_inbox import store
from triggers_inbox.arrivals import Arrivals
from triggers_inbox.store import EventRow, InboxFilter

ACK_LATENCY = Histogram(
    "triggers_inbox_ack_latency_seconds",
    "Time from an event's creation to its acknowledgement",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)

MAX_WAIT_S = 30.0
_MAX_FILTER = 100
_MAX_METADATA_VALUE = 1000
_SPACED_OFFSET = re.compile(r"(\d) (\d{2}(?::?\d{2})?)$")  # a "+02:00" offset whose "+" became a space in the URL
# An unknown id is remembered as deleted only if it could still be in flight: a UUIDv7 this recent.
_INFLIGHT_DELETE_HORIZON = timedelta(hours=1)
_MAX_BULK_BODY = 256 * 1024  # 1,000 ids take about 40 KiB


class EventOut(msgspec.Struct):
    event_id: str
    created_at: str
    source: str
    event_type: str
    payload: msgspec.Raw
    status: str
    metadata: msgspec.Raw | None
    acknowledged_at: str | None


class EventResponse(EventOut):
    request_id: str


class InboxPage(msgspec.Struct):
    events: list[EventOut]
    pagination: Pagination
    next_cursor: str | None
    request_id: str


class Acked(msgspec.Struct):
    event_id: str
    status: str
    acknowledged_at: str
    message: str
    request_id: str


class Deleted(msgspec.Struct):
    event_id: str
    message: str
    request_id: str


class AckedItem(msgspec.Struct):
    event_id: str
    status: str
    acknowledged_at: str
    message: str


class DeletedItem(msgspec.Struct):
    event_id: str
    message: str


class BulkAcked(msgspec.Struct):
    successful: list[AckedItem]
    failed: list[BulkFailure]
    request_id: str


class BulkDeleted(msgspec.Struct):
    successful: list[DeletedItem]
    failed: list[BulkFailure]
    request_id: str


class EventIdsIn(msgspec.Struct):
    event_ids: list[str]


BULK_IDS_EXAMPLE = {"event_ids": ["01937f7c-5a3e-7a10-9c2b-3f1e2d4c5b6a", "01937f7c-5a3f-7b20-8d3c-4a2f3e5d6c7b"]}
_ACKED = "Event acknowledged successfully"
_DELETED = "Event deleted successfully"


INBOX_QUERY = (
    *PAGE_PARAMS,
    Param("source", "query", "Only events from this source", {"type": "string", "minLength": 1, "maxLength": 100}),
    Param("event_type", "query", "Only events of this type", {"type": "string", "minLength": 1, "maxLength": 100}),
    Param("priority", "query", "Only events of this priority (no priority is normal)", {"enum": list(PRIORITIES)}),
    Param(
        "created_after",
        "query",
        "Only events created at or after this instant (ISO 8601; no offset means UTC; bad is 400)",
        {"type": "string", "format": "date-time"},
    ),
    Param(
        "created_before",
        "query",
        "Only events created at or before this instant (ISO 8601; no offset means UTC; bad is 400)",
        {"type": "string", "format": "date-time"},
    ),
    Param(
        "metadata_key",
        "query",
        "With metadata_value: only events whose top-level metadata field has this value (both or neither, else 400)",
        {"type": "string", "minLength": 1, "maxLength": 100},
    ),
    Param(
        "metadata_value",
        "query",
        "The value metadata_key must have: a string, or a number, true, false or null written as JSON",
        {"type": "string", "maxLength": 1000},
    ),
    Param(
        "wait",
        "query",
        "Long poll: if nothing matches yet, wait up to this many seconds (0..30) for the first match",
        {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
    ),
)


def _out(row: EventRow) -> EventOut:
    return EventOut(
        event_id=str(row.event_id),
        created_at=format_timestamp(row.created_at),
        source=row.source,
        event_type=row.event_type,
        payload=row.payload,
        status=row.status,
        metadata=msgspec.Raw(msgspec.json.format(row.metadata, indent=-1)) if row.metadata is not None else None,
        acknowledged_at=format_timestamp(row.acknowledged_at) if row.acknowledged_at else None,
    )


def event_position(row: EventRow) -> tuple[datetime, uuid.UUID]:
    return row.created_at, row.event_id


def _bad_value(location: str) -> type[ValidationFailed]:
    """A bad parameter value is 422 in a query string and 400 in a body (API.md section 1)."""
    return InvalidParameter if location == "query" else ValidationFailed


def _filter_value(params: Any, name: str, location: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_FILTER or "\x00" in value:
        raise _bad_value(location).field(f"{location}.{name}", f"Must be 1..{_MAX_FILTER} characters, without NUL")
    return str(value)


def _instant(params: Any, name: str, location: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1+\2", raw.strip()))
        moment = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1..9999
        raise ValidationFailed.field(f"{location}.{name}", "Must be an ISO 8601 instant") from None
    return moment


def _metadata_match(params: Any, location: str) -> tuple[bytes, ...]:
    """The objects an event's metadata must contain one of: the value as a string, and as the JSON scalar it
    spells if it is one (so metadata_value=5 finds both "5" and 5)."""
    key, value = params.get("metadata_key"), params.get("metadata_value")
    if key is None and value is None:
        return ()
    if key is None or value is None:
        raise ValidationFailed.field(f"{location}.metadata_key", "Give metadata_key and metadata_value together")
    if not key or len(key) > _MAX_FILTER or "\x00" in key:
        raise ValidationFailed.field(f"{location}.metadata_key", f"Must be 1..{_MAX_FILTER} characters, without NUL")
    if len(value) > _MAX_METADATA_VALUE or "\x00" in value:
        raise ValidationFailed.field(
            f"{location}.metadata_value", f"Must be at most {_MAX_METADATA_VALUE} characters, without NUL"
        )
    candidates = [msgspec.json.encode({key: value})]
    with contextlib.suppress(msgspec.DecodeError):
        scalar = msgspec.json.decode(value)
        if scalar is None or isinstance(scalar, bool | int | float):
            candidates.append(msgspec.json.encode({key: scalar}))
    return tuple(candidates)


def _wait_seconds(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_S:  # NaN fails this too
        raise InvalidParameter.field("query.wait", f"Must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return seconds


def inbox_filter(params: Any, location: str = "query") -> InboxFilter:
    """The filters of GET /v1/inbox (or of a lease's body), validated. In a query: 422 for a bad value, 400 for
    bad instants or a lone metadata parameter (as the contract says); in a body: 400."""
    priority = params.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise _bad_value(location).field(f"{location}.priority", "Must be one of low, normal, high")
    where = InboxFilter(
        source=_filter_value(params, "source", location),
        event_type=_filter_value(params, "event_type", location),
        priority=priority,
        created_after=_instant(params, "created_after", location),
        created_before=_instant(params, "created_before", location),
        metadata=_metadata_match(params, location),
    )
    if where.created_after and where.created_before and where.created_after > where.created_before:
        raise ValidationFailed.field(f"{location}.created_after", "Is later than created_before")
    return where


def parse_event_ids(body: bytes, content_type: str | None, max_items: int) -> list[uuid.UUID | TriggersError]:
    """The ids of a bulk request, each parsed alone: a bad one is that item's 400, the others go on.
    A malformed envelope (not JSON, no ``event_ids`` list, empty, too long) is a 400 for the whole request."""
    require_json(content_type)
    try:
        envelope = _decode_envelope(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed.field("body", str(exc)) from None
    raw_ids = envelope.get("event_ids") if isinstance(envelope, dict) else None
    if not isinstance(raw_ids, list) or not 1 <= len(raw_ids) <= max_items:
        raise ValidationFailed.field("body.event_ids", f"Must be a list of 1 to {max_items} event ids")
    ids: list[uuid.UUID | TriggersError] = []
    for index, raw in enumerate(raw_ids):
        try:
            if not isinstance(raw, str):
                raise ValueError
            ids.append(uuid.UUID(raw))
        except ValueError:
            ids.append(ValidationFailed.field(f"body.event_ids.{index}", "Must be a UUID"))
    return ids


_decode_envelope = msgspec.json.Decoder(Any).decode


def build_routes(rt: Runtime, arrivals: Arrivals) -> list[ControllerRouterHandler]:
    settings = rt.settings
    window = timedelta(seconds=settings.read_your_writes_window_s)

    async def caller(request: Request[Any, Any, Any]) -> Principal:
        return await rt.access.check(request, "events:read")

    def in_flight(event_id: uuid.UUID) -> bool:
        born = uuid7_time(event_id)
        return born is not None and born >= utc_now() - window

    async def find(tenant_id: str, event_id: uuid.UUID) -> EventRow | None:
        """Read-your-writes: an event the gateway accepted moments ago is waited for, not reported missing."""
        while True:
            arrived = arrivals.current(tenant_id)
            row = await store.get_event(rt.pool, tenant_id, event_id)
            if row is not None or not in_flight(event_id):
                return row
            await _wait(arrived, event_id)

    async def _wait(arrived: asyncio.Event, event_id: uuid.UUID) -> None:
        born = uuid7_time(event_id)
        assert born is not None
        remaining = (min(born + window, utc_now() + window) - utc_now()).total_seconds()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), min(remaining, 1.0))

    def not_found(event_id: uuid.UUID) -> NotFound:
        return NotFound(f"Event {event_id} not found", {"event_id": str(event_id)})

    @get(
        "/v1/inbox",
        tags=["inbox"],
        summary="Pending events of the caller's tenant, oldest first",
        opt={"doc": Doc(params=INBOX_QUERY, response=InboxPage, errors=(400, 422))},
    )
    async def list_inbox(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        params = request.query_params
        limit = page_limit(params.get("limit"))
        where = inbox_filter(params)
        wait = _wait_seconds(params.get("wait"))
        after = page_after(settings.cursor_secret, principal.tenant_id, params.get("cursor"))
        deadline = time.monotonic() + wait
        while True:
            arrived = arrivals.current(principal.tenant_id)
            rows = await store.list_pending(rt.query_pool, principal.tenant_id, where, after, limit + 1)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):  # woken by each of the tenant's arrivals, then look again
                await asyncio.wait_for(arrived.wait(), remaining)
        rows, next_cursor = page_of(rows, limit, settings.cursor_secret, principal.tenant_id, event_position)
        page = InboxPage(
            events=[_out(r) for r in rows],
            pagination=Pagination(limit, next_cursor),
            next_cursor=next_cursor,
            request_id=request_id(request),
        )
        return json_response(encode(page))

    @get(
        "/v1/events/{event_id:str}",
        tags=["events"],
        summary="One event of the caller's tenant",
        opt={"doc": Doc(response=EventResponse, errors=(404, 422))},
    )
    async def get_event(request: Request[Any, Any, Any], event_id: str) -> Response[bytes]:
        principal = await caller(request)
        eid = uuid_param(event_id, "path.event_id")
        row = await find(principal.tenant_id, eid)
        if row is None or row.status == "deleted":
            raise not_found(eid)
        out = _out(row)
        body = EventResponse(**msgspec.structs.asdict(out), request_id=request_id(request))
        return json_response(encode(body))

    def already_acked(event_id: uuid.UUID, acknowledged_at: datetime | None) -> Conflict:
        return Conflict(
            f"Event {event_id} is already acknowledged",
            {
                "event_id": str(event_id),
                "current_status": "acknowledged",
                "acknowledged_at": format_timestamp(acknowledged_at) if acknowledged_at else None,
            },
        )

    def not_held(event_id: uuid.UUID, lease_id: uuid.UUID, status: str) -> Conflict:
        return Conflict(
            f"Event {event_id} is not held by lease {lease_id}",
            {"event_id": str(event_id), "lease_id": str(lease_id), "current_status": status},
        )

    async def ack(
        tenant_id: str, event_ids: list[uuid.UUID], lease_id: uuid.UUID | None = None
    ) -> dict[uuid.UUID, datetime | TriggersError]:
        """Acknowledge each event (only if ``lease_id`` holds it, when given): when, or why not (404, 409).
        Events still in flight are waited for."""
        answers: dict[uuid.UUID, datetime | TriggersError] = {}
        todo = list(dict.fromkeys(event_ids))
        while todo:
            arrived = arrivals.current(tenant_id)
            found = await store.ack_events(rt.pool, tenant_id, todo, lease_id)
            again: list[uuid.UUID] = []
            for eid in todo:
                got = found.get(eid)
                if got is None or got.outcome == "deleted":
                    if got is None and lease_id is None and in_flight(eid):
                        again.append(eid)  # still between Kafka and Postgres
                    else:
                        answers[eid] = not_found(eid)
                elif got.outcome == "acked" and got.acknowledged_at is not None:
                    answers[eid] = got.acknowledged_at
                    ACK_LATENCY.observe((got.acknowledged_at - got.created_at).total_seconds())
                elif got.outcome == "acknowledged":
                    answers[eid] = already_acked(eid, got.acknowledged_at)
                elif lease_id is not None and got.lease_id != lease_id:
                    answers[eid] = not_held(eid, lease_id, got.outcome)
                else:
                    again.append(eid)  # another statement changed it meanwhile: look again
            todo = again
            late = [eid for eid in todo if eid not in found]
            if late:
                await _wait(arrived, max(late, key=lambda eid: eid.int))
        return answers

    async def ack_items(
        tenant_id: str, items: list[uuid.UUID | TriggersError], lease_id: uuid.UUID | None = None
    ) -> tuple[list[AckedItem], list[BulkFailure]]:
        """A bulk ack's ``successful`` and ``failed`` lists (by index), all acked in one statement."""
        answers = await ack(tenant_id, [i for i in items if isinstance(i, uuid.UUID)], lease_id)
        successful: list[AckedItem] = []
        failed: list[BulkFailure] = []
        seen: set[uuid.UUID] = set()
        for index, item in enumerate(items):
            if isinstance(item, TriggersError):
                failed.append(BulkFailure.of(index, item))
                continue
            answer = answers[item]
            if isinstance(answer, datetime) and item in seen:
                answer = already_acked(item, answer)  # the same id again: acknowledged a moment ago, above
            seen.add(item)
            if isinstance(answer, TriggersError):
                failed.append(BulkFailure.of(index, answer))
            else:
                successful.append(AckedItem(str(item), "acknowledged", format_timestamp(answer), _ACKED))
        return successful, failed

    async def delete_many(tenant_id: str, event_ids: list[uuid.UUID]) -> None:
        now = utc_now()
        in_flight_ids = []
        for eid in dict.fromkeys(event_ids):
            born = uuid7_time(eid)
            # An unknown id is remembered as deleted only if it could still be in flight: a recent UUIDv7.
            if born is not None and now - _INFLIGHT_DELETE_HORIZON <= born <= now + window:
                in_flight_ids.append((eid, born))
        await store.delete_events(rt.pool, tenant_id, event_ids, in_flight_ids)

    @post(
        "/v1/events/{event_id:str}/ack",
        status_code=200,
        tags=["events"],
        summary="Acknowledge an event (409 if it already is)",
        opt={"doc": Doc(response=Acked, errors=(404, 409, 422))},
    )
    async def ack_event(request: Request[Any, Any, Any], event_id: str) -> Response[bytes]:
        principal = await caller(request)
        eid = uuid_param(event_id, "path.event_id")
        answer = (await ack(principal.tenant_id, [eid]))[eid]
        if isinstance(answer, TriggersError):
            raise answer
        body = Acked(str(eid), "acknowledged", format_timestamp(answer), _ACKED, request_id(request))
        return json_response(encode(body))

    @delete(
        "/v1/events/{event_id:str}",
        status_code=200,
        tags=["events"],
        summary="Delete an event (idempotent: 200 for unknown ids too)",
        opt={"doc": Doc(response=Deleted, errors=(422,))},
    )
    async def delete_event(request: Request[Any, Any, Any], event_id: str) -> Response[bytes]:
        principal = await caller(request)
        eid = uuid_param(event_id, "path.event_id")
        await delete_many(principal.tenant_id, [eid])
        return json_response(encode(Deleted(str(eid), _DELETED, request_id(request))))

    @post(
        "/v1/events/bulk/ack",
        status_code=200,
        tags=["events"],
        summary="Acknowledge up to 1,000 events in one statement (partial success)",
        description="Each id succeeds or fails alone: `failed` holds NOT_FOUND, CONFLICT (already acknowledged, "
        "also for a repeat of an id earlier in the same request) or VALIDATION_ERROR (not a UUID), by index.",
        request_max_body_size=_MAX_BULK_BODY,
        opt={"doc": Doc(body=EventIdsIn, body_example=BULK_IDS_EXAMPLE, response=BulkAcked, errors=(400, 413, 415))},
    )
    async def bulk_ack(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        items = parse_event_ids(await request.body(), request.headers.get("content-type"), settings.bulk_max_items)
        successful, failed = await ack_items(principal.tenant_id, items)
        return json_response(encode(BulkAcked(successful, failed, request_id(request))))

    @delete(
        "/v1/events/bulk",
        status_code=200,
        tags=["events"],
        summary="Delete up to 1,000 events in one statement (unknown ids count as deleted)",
        request_max_body_size=_MAX_BULK_BODY,
        opt={"doc": Doc(body=EventIdsIn, body_example=BULK_IDS_EXAMPLE, response=BulkDeleted, errors=(400, 413, 415))},
    )
    async def bulk_delete(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        items = parse_event_ids(await request.body(), request.headers.get("content-type"), settings.bulk_max_items)
        await delete_many(principal.tenant_id, [i for i in items if isinstance(i, uuid.UUID)])
        successful = [DeletedItem(str(i), _DELETED) for i in items if isinstance(i, uuid.UUID)]
        failed = [BulkFailure.of(index, i) for index, i in enumerate(items) if isinstance(i, TriggersError)]
        return json_response(encode(BulkDeleted(successful, failed, request_id(request))))

    from triggers_inbox.leases import build_lease_routes  # it builds on this module's parsers and shapes

    return [
        list_inbox,
        get_event,
        ack_event,
        delete_event,
        bulk_ack,
        bulk_delete,
        *build_lease_routes(rt, arrivals, caller, ack_items),
    ]
