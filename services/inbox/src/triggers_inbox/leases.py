"""Leases and quarantine over HTTP: take events for a while, ack or release them by lease, and look after the
events that were leased too often without an ack. Every statement is scoped to the caller's tenant.

The rules (docs/decisions.md, Inbox):
- A lease hides its events from other leases and from GET /v1/inbox until ``leased_until`` or a release.
- Ack by lease succeeds while the lease still holds the event, even after ``leased_until``, as long as no
  other lease has taken the event since (then 409). Releasing an event ends the lease's hold on it.
- Every lease counts. An event already leased ``max_leases`` times is quarantined by the next lease attempt
  instead of being handed out again; a redrive puts it back with a fresh count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.types import ControllerRouterHandler
from triggers_common.auth import Principal
from triggers_common.cursor import PAGE_PARAMS, Pagination, page_after, page_limit, page_of
from triggers_common.errors import BulkFailure, Conflict, NotFound, TriggersError
from triggers_common.http import decode_body, encode, json_response, request_id, require_json, uuid_param
from triggers_common.models import format_timestamp
from triggers_common.openapi import Doc
from triggers_common.runtime import Runtime

from triggers_inbox import store
from triggers_inbox.arrivals import Arrivals
from triggers_inbox.routes import (
    _MAX_BULK_BODY,
    BULK_IDS_EXAMPLE,
    MAX_WAIT_S,
    AckedItem,
    BulkAcked,
    EventIdsIn,
    EventOut,
    _out,
    event_position,
    inbox_filter,
    parse_event_ids,
)

MAX_LEASE_LIMIT = 100
DEFAULT_LEASE_LIMIT = 10
MAX_LEASE_SECONDS = 3600
DEFAULT_LEASE_SECONDS = 300
_MAX_LEASE_BODY = 16 * 1024

AckItems = Callable[
    [str, list[uuid.UUID | TriggersError], uuid.UUID | None], Awaitable[tuple[list[AckedItem], list[BulkFailure]]]
]


class LeaseIn(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LEASE_LIMIT)] = DEFAULT_LEASE_LIMIT
    lease_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_LEASE_SECONDS)] = DEFAULT_LEASE_SECONDS
    wait: Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT_S)] = 0.0
    source: str | None = None
    event_type: str | None = None
    priority: str | None = None
    created_after: str | None = None
    created_before: str | None = None
    metadata_key: str | None = None
    metadata_value: str | int | float | bool | msgspec.UnsetType | None = msgspec.UNSET


class Lease(msgspec.Struct):
    lease_id: str | None
    """None when nothing matched: no lease was taken."""
    leased_until: str | None
    events: list[EventOut]
    request_id: str


class ReleasedItem(msgspec.Struct):
    event_id: str
    message: str


class Released(msgspec.Struct):
    successful: list[ReleasedItem]
    failed: list[BulkFailure]
    request_id: str


class QuarantinedOut(EventOut):
    lease_count: int
    quarantined_at: str


class QuarantinePage(msgspec.Struct):
    events: list[QuarantinedOut]
    pagination: Pagination
    next_cursor: str | None
    request_id: str


class RedrivenItem(msgspec.Struct):
    event_id: str
    status: str
    message: str


class Redriven(msgspec.Struct):
    successful: list[RedrivenItem]
    failed: list[BulkFailure]
    request_id: str


LEASE_EXAMPLE = {"limit": 10, "lease_seconds": 300, "event_type": "order.created", "wait": 20}
_RELEASED = "Event released"
_REDRIVEN = "Event returned to the inbox"
_decode_lease = msgspec.json.Decoder(LeaseIn).decode


def parse_lease(body: bytes, content_type: str | None) -> tuple[LeaseIn, store.InboxFilter]:
    """A lease request (an empty body takes every default), validated: 400 names the bad field."""
    request = decode_body(_decode_lease, body, content_type) if body.strip() else LeaseIn()
    filters: dict[str, str] = {
        name: value
        for name in ("source", "event_type", "priority", "created_after", "created_before", "metadata_key")
        if (value := getattr(request, name)) is not None
    }
    value = request.metadata_value
    if value is not msgspec.UNSET:
        filters["metadata_value"] = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return request, inbox_filter(filters, "body")


def release_items(body: bytes, content_type: str | None, max_items: int) -> list[uuid.UUID | TriggersError] | None:
    """The ids a release names, or None for all of the lease's events (an empty body, ``{}``, or
    ``"event_ids": null``)."""
    if not body.strip():
        return None
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):  # a malformed body: 400 just below
        envelope = msgspec.json.decode(body)
        if isinstance(envelope, dict) and envelope.get("event_ids") is None:
            require_json(content_type)
            return None
    return parse_event_ids(body, content_type, max_items)


def build_lease_routes(
    rt: Runtime,
    arrivals: Arrivals,
    caller: Callable[[Request[Any, Any, Any]], Awaitable[Principal]],
    ack_items: AckItems,
) -> list[ControllerRouterHandler]:
    settings = rt.settings

    async def held_lease(tenant_id: str, raw_id: str) -> uuid.UUID:
        lease_id = uuid_param(raw_id, "path.lease_id")
        if await store.get_lease(rt.pool, tenant_id, lease_id) is None:
            raise NotFound(f"Lease {lease_id} not found", {"lease_id": str(lease_id)})
        return lease_id

    @post(
        "/v1/inbox/lease",
        status_code=200,
        tags=["leases"],
        summary="Lease the oldest matching pending events for a while",
        description="Leased events are hidden from other leases and from GET /v1/inbox until `leased_until` or a "
        "release. `wait` (0..30 s) long-polls when nothing matches yet. An event already leased `max_leases` times "
        "(default 5) without an ack is quarantined instead of being leased again. Under contention a lease may "
        "hold fewer than `limit` events while more exist: lease again. When nothing matches, `events` is empty "
        "and `lease_id` and `leased_until` are null.",
        request_max_body_size=_MAX_LEASE_BODY,
        opt={"doc": Doc(body=LeaseIn, body_example=LEASE_EXAMPLE, response=Lease, errors=(400, 413, 415))},
    )
    async def lease(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        wanted, where = parse_lease(await request.body(), request.headers.get("content-type"))
        tenant_id = principal.tenant_id
        lease_id = uuid.uuid4()
        deadline = time.monotonic() + wanted.wait
        rows: list[store.EventRow] = []
        leased_until = None
        while True:
            arrived = arrivals.current(tenant_id)
            got, quarantined, until = await store.lease_events(
                rt.query_pool,
                tenant_id,
                where,
                wanted.limit - len(rows),
                lease_id,
                wanted.lease_seconds,
                settings.inbox_max_leases,
            )
            rows += got
            leased_until = leased_until or until  # the first statement's: the earliest of the lease
            if quarantined and len(rows) < wanted.limit:
                continue  # the quarantined ones left room: take the next candidates
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):  # woken by the tenant's arrivals and releases
                await asyncio.wait_for(arrived.wait(), remaining)
        body = Lease(
            str(lease_id) if rows else None,
            format_timestamp(leased_until) if leased_until else None,
            [_out(r) for r in rows],
            request_id(request),
        )
        return json_response(encode(body))

    @post(
        "/v1/inbox/leases/{lease_id:str}/ack",
        status_code=200,
        tags=["leases"],
        summary="Acknowledge events this lease holds (partial success)",
        description="An event counts as held while no other lease has taken it since, even after `leased_until`. "
        "`failed` holds NOT_FOUND (unknown or deleted), CONFLICT (already acknowledged, or not held by this lease: "
        "`details.current_status`) or VALIDATION_ERROR (not a UUID), by index.",
        request_max_body_size=_MAX_BULK_BODY,
        opt={
            "doc": Doc(
                body=EventIdsIn, body_example=BULK_IDS_EXAMPLE, response=BulkAcked, errors=(400, 404, 413, 415, 422)
            )
        },
    )
    async def ack_by_lease(request: Request[Any, Any, Any], lease_id: str) -> Response[bytes]:
        principal = await caller(request)
        lid = await held_lease(principal.tenant_id, lease_id)
        items = parse_event_ids(await request.body(), request.headers.get("content-type"), settings.bulk_max_items)
        successful, failed = await ack_items(principal.tenant_id, items, lid)
        return json_response(encode(BulkAcked(successful, failed, request_id(request))))

    @post(
        "/v1/inbox/leases/{lease_id:str}/release",
        status_code=200,
        tags=["leases"],
        summary="Make this lease's events visible again now (all of them, or those of event_ids)",
        description="`failed` holds NOT_FOUND (not the tenant's event), CONFLICT (not held by this lease: "
        "`details.current_status`) or VALIDATION_ERROR (not a UUID), by index.",
        request_max_body_size=_MAX_BULK_BODY,
        opt={
            "doc": Doc(
                body=EventIdsIn, body_example=BULK_IDS_EXAMPLE, response=Released, errors=(400, 404, 413, 415, 422)
            )
        },
    )
    async def release(request: Request[Any, Any, Any], lease_id: str) -> Response[bytes]:
        principal = await caller(request)
        lid = await held_lease(principal.tenant_id, lease_id)
        items = release_items(await request.body(), request.headers.get("content-type"), settings.bulk_max_items)
        ids = None if items is None else [i for i in items if isinstance(i, uuid.UUID)]
        released, others = await store.release_events(rt.pool, principal.tenant_id, lid, ids)
        if items is None:
            answer = Released([ReleasedItem(str(eid), _RELEASED) for eid in released], [], request_id(request))
            return json_response(encode(answer))
        done = set(released)
        successful: list[ReleasedItem] = []
        failed: list[BulkFailure] = []
        for index, item in enumerate(items):
            if isinstance(item, TriggersError):
                failed.append(BulkFailure.of(index, item))
            elif item in done:
                successful.append(ReleasedItem(str(item), _RELEASED))
                done.discard(item)  # a repeat of the id below is no longer held
            elif item not in released and others.get(item, "deleted") == "deleted":
                failed.append(BulkFailure.of(index, NotFound(f"Event {item} not found", {"event_id": str(item)})))
            else:  # another lease's, acknowledged, quarantined, or released a moment ago by this request
                current = others.get(item, "pending")
                conflict = Conflict(
                    f"Event {item} is not held by lease {lid}",
                    {"event_id": str(item), "lease_id": str(lid), "current_status": current},
                )
                failed.append(BulkFailure.of(index, conflict))
        return json_response(encode(Released(successful, failed, request_id(request))))

    @get(
        "/v1/inbox/quarantine",
        tags=["leases"],
        summary="Quarantined events of the caller's tenant (leased too often without an ack), oldest first",
        opt={
            "doc": Doc(
                params=(*PAGE_PARAMS,),
                response=QuarantinePage,
                errors=(422,),
            )
        },
    )
    async def list_quarantine(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        limit = page_limit(request.query_params.get("limit"))
        after = page_after(settings.cursor_secret, principal.tenant_id, request.query_params.get("cursor"))
        rows = await store.list_quarantined(rt.pool, principal.tenant_id, after, limit + 1)
        rows, next_cursor = page_of(rows, limit, settings.cursor_secret, principal.tenant_id, event_position)
        events = [
            QuarantinedOut(
                **msgspec.structs.asdict(_out(row)),
                lease_count=row.lease_count,
                quarantined_at=format_timestamp(row.quarantined_at),
            )
            for row in rows
        ]
        page = QuarantinePage(events, Pagination(limit, next_cursor), next_cursor, request_id(request))
        return json_response(encode(page))

    @post(
        "/v1/inbox/quarantine/redrive",
        status_code=200,
        tags=["leases"],
        summary="Return quarantined events to the inbox with a fresh lease count (partial success)",
        description="`failed` holds NOT_FOUND (unknown or deleted), CONFLICT (not quarantined: "
        "`details.current_status`) or VALIDATION_ERROR (not a UUID), by index.",
        request_max_body_size=_MAX_BULK_BODY,
        opt={"doc": Doc(body=EventIdsIn, body_example=BULK_IDS_EXAMPLE, response=Redriven, errors=(400, 413, 415))},
    )
    async def redrive(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        items = parse_event_ids(await request.body(), request.headers.get("content-type"), settings.bulk_max_items)
        ids = [i for i in items if isinstance(i, uuid.UUID)]
        outcomes = await store.redrive_events(rt.pool, principal.tenant_id, ids)
        successful: list[RedrivenItem] = []
        failed: list[BulkFailure] = []
        seen: set[uuid.UUID] = set()
        for index, item in enumerate(items):
            outcome = "deleted" if isinstance(item, TriggersError) else outcomes.get(item, "deleted")
            if isinstance(item, TriggersError):
                failed.append(BulkFailure.of(index, item))
            elif outcome == "redriven" and item not in seen:
                successful.append(RedrivenItem(str(item), "pending", _REDRIVEN))
            elif outcome == "deleted":
                failed.append(BulkFailure.of(index, NotFound(f"Event {item} not found", {"event_id": str(item)})))
            else:
                current = "pending" if outcome == "redriven" else outcome
                conflict = Conflict(
                    f"Event {item} is not quarantined", {"event_id": str(item), "current_status": current}
                )
                failed.append(BulkFailure.of(index, conflict))
            if isinstance(item, uuid.UUID):
                seen.add(item)
        return json_response(encode(Redriven(successful, failed, request_id(request))))

    return [lease, ack_by_lease, release, list_quarantine, redrive]
