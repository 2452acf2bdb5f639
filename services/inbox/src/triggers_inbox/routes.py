"""Inbox HTTP: list pending events, get one, ack, delete. Every statement is scoped to the caller's tenant."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.types import ControllerRouterHandler
from triggers_common.auth import Principal
from triggers_common.errors import Conflict, InvalidParameter, NotFound
from triggers_common.http import encode, json_response, request_id
from triggers_common.models import format_timestamp, utc_now, uuid7_time
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime

from triggers_inbox import store
from triggers_inbox.arrivals import Arrivals
from triggers_inbox.cursor import decode_cursor, encode_cursor
from triggers_inbox.store import EventRow, InboxFilter

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
_MAX_FILTER = 100
# An unknown id is remembered as deleted only if it could still be in flight: a UUIDv7 this recent.
_INFLIGHT_DELETE_HORIZON = timedelta(hours=1)


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


class Pagination(msgspec.Struct):
    limit: int
    next_cursor: str | None


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


INBOX_QUERY = (
    Param("limit", "query", "Page size, 1..100 (default 50)", {"type": "integer", "minimum": 1, "maximum": 100}),
    Param("cursor", "query", "next_cursor of the previous page (opaque; a tampered one is 422)"),
    Param("source", "query", "Only events from this source", {"type": "string", "minLength": 1, "maxLength": 100}),
    Param("event_type", "query", "Only events of this type", {"type": "string", "minLength": 1, "maxLength": 100}),
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


def _bad_param(field: str, message: str) -> InvalidParameter:
    return InvalidParameter.of([{"field": field, "message": message, "type": "value_error"}])


def parse_event_id(raw: str) -> uuid.UUID:
    try:
        event_id = uuid.UUID(raw)
    except ValueError:
        raise _bad_param("path.event_id", "Must be a UUID") from None
    return event_id


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad_param("query.limit", f"Must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _filter_value(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_FILTER or "\x00" in value:
        raise _bad_param(f"query.{name}", f"Must be 1..{_MAX_FILTER} characters, without NUL")
    return str(value)


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
            arrived = arrivals.current()
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
        opt={"doc": Doc(params=INBOX_QUERY, response=InboxPage, errors=(422,))},
    )
    async def list_inbox(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        params = request.query_params
        limit = _limit(params.get("limit"))
        where = InboxFilter(source=_filter_value(params, "source"), event_type=_filter_value(params, "event_type"))
        cursor = params.get("cursor")
        after = decode_cursor(settings.cursor_secret, principal.tenant_id, cursor) if cursor else None
        rows = await store.list_pending(rt.pool, principal.tenant_id, where, after, limit + 1)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(settings.cursor_secret, principal.tenant_id, last.created_at, last.event_id)
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
        eid = parse_event_id(event_id)
        row = await find(principal.tenant_id, eid)
        if row is None or row.status == "deleted":
            raise not_found(eid)
        out = _out(row)
        body = EventResponse(**msgspec.structs.asdict(out), request_id=request_id(request))
        return json_response(encode(body))

    @post(
        "/v1/events/{event_id:str}/ack",
        status_code=200,
        tags=["events"],
        summary="Acknowledge an event (409 if it already is)",
        opt={"doc": Doc(response=Acked, errors=(404, 409, 422))},
    )
    async def ack_event(request: Request[Any, Any, Any], event_id: str) -> Response[bytes]:
        principal = await caller(request)
        eid = parse_event_id(event_id)
        while True:
            arrived = arrivals.current()
            acked_at = await store.ack_event(rt.pool, principal.tenant_id, eid)
            if acked_at is not None:
                break
            state = await store.event_state(rt.pool, principal.tenant_id, eid)
            if state is not None and state[0] == "acknowledged":
                raise Conflict(
                    f"Event {eid} is already acknowledged",
                    {
                        "event_id": str(eid),
                        "current_status": "acknowledged",
                        "acknowledged_at": format_timestamp(state[1]) if state[1] else None,
                    },
                )
            if state is None and in_flight(eid):
                await _wait(arrived, eid)
            elif state is None or state[0] == "deleted":
                raise not_found(eid)
            # still 'pending': it arrived between the two statements, so the ack is simply tried again
        body = Acked(
            str(eid),
            "acknowledged",
            format_timestamp(acked_at),
            "Event acknowledged successfully",
            request_id(request),
        )
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
        eid = parse_event_id(event_id)
        born = uuid7_time(eid)
        if born is not None and utc_now() - _INFLIGHT_DELETE_HORIZON <= born <= utc_now() + window:
            await store.delete_inflight_event(rt.pool, principal.tenant_id, eid, born)
        else:
            await store.delete_event(rt.pool, principal.tenant_id, eid)
        body = Deleted(str(eid), "Event deleted successfully", request_id(request))
        return json_response(encode(body))

    return [list_inbox, get_event, ack_event, delete_event]
