"""Webhook subscriptions over HTTP (API.md section 4): create, list, get, replace, change, delete, rotate the
secret. Every statement is scoped to the caller's tenant; the secret is shown at creation and rotation only."""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.types import ControllerRouterHandler
from triggers_common.auth import Principal
from triggers_common.cursor import PAGE_PARAMS, Pagination, page_after, page_limit, page_of
from triggers_common.errors import Conflict, InvalidParameter, NotFound, ValidationFailed
from triggers_common.http import decode_body, encode, json_response, request_id, uuid_param
from triggers_common.models import NULL, format_timestamp, new_event_id
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime

from triggers_webhooks import guard, signing, store
from triggers_webhooks.deliver import DeliveryBody, DeliveryClient

SECRET_OVERLAP = timedelta(hours=24)
"""After a rotation, deliveries carry signatures with both secrets this long."""

_NO_NUL = r"^[^\x00]*$"
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=guard.MAX_URL)]
EventPattern = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^(\*|[^\s*\x00]+(\.\*)?)$")]
"""``*`` (every event), an exact event type, or a prefix ending in ``.*`` (``user.*``)."""
Events = Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=100)]
Sources = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_NO_NUL)]],
    msgspec.Meta(min_length=1, max_length=100),
]
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern=_NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=500, pattern=_NO_NUL)]


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Events
    sources: Sources | None = None
    """Only events from these sources (default: any source)."""
    secret: Secret | None = None
    """At least 16 characters; a ``whsec_`` one is generated if absent."""
    description: Description = ""


class WebhookPut(msgspec.Struct, forbid_unknown_fields=True):
    """A full replacement: fields left out take their defaults (the secret is kept)."""

    url: Url
    events: Events
    sources: Sources | None = None
    description: Description = ""
    is_active: bool = True


class WebhookPatch(msgspec.Struct, forbid_unknown_fields=True):
    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    sources: Sources | msgspec.UnsetType | None = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class SecretIn(msgspec.Struct, forbid_unknown_fields=True):
    secret: Secret | None = None


class WebhookOut(msgspec.Struct):
    webhook_id: str
    url: str
    events: list[str]
    sources: list[str] | None
    description: str
    is_active: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str


class WebhookResponse(WebhookOut):
    request_id: str


class WebhookCreated(WebhookOut):
    secret: str
    """Shown here and at rotation only."""
    request_id: str


class WebhookPage(msgspec.Struct):
    webhooks: list[WebhookOut]
    pagination: Pagination
    next_cursor: str | None
    request_id: str


class TestResult(msgspec.Struct):
    webhook_id: str
    status: str
    """success (a 2xx within 15 s) or failed."""
    status_code: int | None
    message: str
    request_id: str


class AttemptOut(msgspec.Struct):
    attempt: int
    at: str
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryOut(msgspec.Struct):
    delivery_id: str
    event_id: str
    status: str
    """pending (due at next_attempt_at), succeeded or failed (retries used up; POST .../retry sends again)."""
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str
    attempt_log: list[AttemptOut]


class DeliveryPage(msgspec.Struct):
    deliveries: list[DeliveryOut]
    pagination: Pagination
    next_cursor: str | None
    request_id: str


class RetryQueued(msgspec.Struct):
    delivery_id: str
    status: str
    message: str
    request_id: str


class ReplayIn(msgspec.Struct, forbid_unknown_fields=True):
    since: Annotated[datetime, msgspec.Meta(tz=True)]
    until: Annotated[datetime, msgspec.Meta(tz=True)]
    """Exclusive; a time in the future counts as now (later events reach the webhook anyway)."""


class ReplayOut(msgspec.Struct):
    replay_id: str
    webhook_id: str
    since: str
    until: str
    status: str
    """pending, running, completed or failed."""
    deliveries_scheduled: int
    """Deliveries made due so far: one per matching event (a delivery being sent right now is left to it)."""
    error: str | None
    created_at: str
    completed_at: str | None
    request_id: str


class SecretRotated(msgspec.Struct):
    webhook_id: str
    secret: str
    previous_secret_expires_at: str
    """Until then deliveries are signed with both the new and the previous secret."""
    request_id: str


WEBHOOK_EXAMPLE = {"url": "https://example.com/hooks/triggers", "events": ["order.*"], "description": "orders"}
_decode_in = msgspec.json.Decoder(WebhookIn).decode
_decode_put = msgspec.json.Decoder(WebhookPut).decode
_decode_patch = msgspec.json.Decoder(WebhookPatch).decode
_decode_secret = msgspec.json.Decoder(SecretIn).decode
_decode_replay = msgspec.json.Decoder(ReplayIn).decode


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_out(hook: store.Webhook) -> WebhookOut:
    fields = msgspec.structs.asdict(hook)
    fields["webhook_id"] = str(hook.webhook_id)
    fields["created_at"] = format_timestamp(hook.created_at)
    fields["updated_at"] = format_timestamp(hook.updated_at)
    return WebhookOut(**fields)


def _is_active(raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise InvalidParameter.field("query.is_active", "Must be true or false")
    return raw == "true"


def build_routes(rt: Runtime, client: DeliveryClient) -> list[ControllerRouterHandler]:
    settings = rt.settings

    async def caller(request: Request[Any, Any, Any]) -> Principal:
        return await rt.access.check(request, "webhooks")

    async def checked_url(url: str) -> str:
        try:
            await guard.check_destination(url, settings.private_webhooks_allowed)
        except guard.Refused as exc:
            raise ValidationFailed.field("body.url", str(exc)) from None
        return url

    def missing(webhook_id: uuid.UUID) -> NotFound:
        return NotFound(f"Webhook {webhook_id} not found", {"webhook_id": str(webhook_id)})

    def answer(hook: store.Webhook | None, webhook_id: uuid.UUID, request: Request[Any, Any, Any]) -> Response[bytes]:
        if hook is None:
            raise missing(webhook_id)
        body = WebhookResponse(**msgspec.structs.asdict(webhook_out(hook)), request_id=request_id(request))
        return json_response(encode(body))

    @post(
        "/v1/webhooks",
        status_code=201,
        tags=["webhooks"],
        summary="Subscribe a URL to the tenant's events; the secret is in this response only",
        description="`events`: `*`, exact event types, or prefixes like `user.*`. URLs that resolve to loopback, "
        "private, link-local or metadata addresses are refused unless the deployment allows them (dev mode).",
        opt={
            "doc": Doc(
                body=WebhookIn, body_example=WEBHOOK_EXAMPLE, response=WebhookCreated, status=201, errors=(400, 415)
            )
        },
    )
    async def create(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        wanted = decode_body(_decode_in, await request.body(), request.headers.get("content-type"))
        url = await checked_url(wanted.url)
        secret = wanted.secret or new_secret()
        hook = await store.create_webhook(
            rt.pool,
            principal.tenant_id,
            url,
            list(dict.fromkeys(wanted.events)),
            wanted.sources,
            wanted.description,
            secret,
        )
        body = WebhookCreated(
            **msgspec.structs.asdict(webhook_out(hook)), secret=secret, request_id=request_id(request)
        )
        return json_response(encode(body), 201)

    @get(
        "/v1/webhooks",
        tags=["webhooks"],
        summary="The tenant's webhooks, oldest first",
        opt={
            "doc": Doc(
                params=(
                    *PAGE_PARAMS,
                    Param("is_active", "query", "Only active (true) or disabled (false) webhooks", {"type": "boolean"}),
                ),
                response=WebhookPage,
                errors=(422,),
            )
        },
    )
    async def list_webhooks(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await caller(request)
        params = request.query_params
        limit = page_limit(params.get("limit"))
        active = _is_active(params.get("is_active"))
        after = page_after(settings.cursor_secret, principal.tenant_id, params.get("cursor"))
        hooks = await store.list_webhooks(rt.pool, principal.tenant_id, active, after, limit + 1)
        hooks, next_cursor = page_of(
            hooks, limit, settings.cursor_secret, principal.tenant_id, lambda h: (h.created_at, h.webhook_id)
        )
        page = WebhookPage(
            [webhook_out(h) for h in hooks], Pagination(limit, next_cursor), next_cursor, request_id(request)
        )
        return json_response(encode(page))

    @get(
        "/v1/webhooks/{webhook_id:str}",
        tags=["webhooks"],
        summary="One webhook of the tenant",
        opt={"doc": Doc(response=WebhookResponse, errors=(404, 422))},
    )
    async def get_webhook(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        return answer(await store.get_webhook(rt.pool, principal.tenant_id, wid), wid, request)

    @put(
        "/v1/webhooks/{webhook_id:str}",
        tags=["webhooks"],
        summary="Replace a webhook (fields left out take their defaults; the secret is kept)",
        opt={
            "doc": Doc(
                body=WebhookPut, body_example=WEBHOOK_EXAMPLE, response=WebhookResponse, errors=(400, 404, 415, 422)
            )
        },
    )
    async def replace(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        wanted = decode_body(_decode_put, await request.body(), request.headers.get("content-type"))
        changes = msgspec.structs.asdict(wanted)
        changes["url"] = await checked_url(wanted.url)
        changes["events"] = list(dict.fromkeys(wanted.events))
        return answer(await store.update_webhook(rt.pool, principal.tenant_id, wid, changes), wid, request)

    @patch(
        "/v1/webhooks/{webhook_id:str}",
        tags=["webhooks"],
        summary="Change some of a webhook's fields (null clears sources)",
        opt={"doc": Doc(body=WebhookPatch, response=WebhookResponse, errors=(400, 404, 415, 422))},
    )
    async def change(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        wanted = decode_body(_decode_patch, await request.body(), request.headers.get("content-type"))
        changes = {k: v for k, v in msgspec.structs.asdict(wanted).items() if v is not msgspec.UNSET}
        if "url" in changes:
            changes["url"] = await checked_url(changes["url"])
        if "events" in changes:
            changes["events"] = list(dict.fromkeys(changes["events"]))
        return answer(await store.update_webhook(rt.pool, principal.tenant_id, wid, changes), wid, request)

    @delete(
        "/v1/webhooks/{webhook_id:str}",
        status_code=204,
        tags=["webhooks"],
        summary="Delete a webhook",
        opt={"doc": Doc(status=204, errors=(404, 422))},
    )
    async def remove(request: Request[Any, Any, Any], webhook_id: str) -> None:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        if not await store.delete_webhook(rt.pool, principal.tenant_id, wid):
            raise missing(wid)

    @post(
        "/v1/webhooks/{webhook_id:str}/rotate-secret",
        status_code=200,
        tags=["webhooks"],
        summary="Replace the signing secret; the previous one keeps signing alongside for 24 h",
        opt={"doc": Doc(body=SecretIn, response=SecretRotated, errors=(400, 404, 415, 422))},
    )
    async def rotate_secret(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        raw = await request.body()
        wanted = decode_body(_decode_secret, raw, request.headers.get("content-type")) if raw.strip() else SecretIn()
        secret = wanted.secret or new_secret()
        until = await store.rotate_secret(rt.pool, principal.tenant_id, wid, secret, SECRET_OVERLAP)
        if until is None:
            raise missing(wid)
        return json_response(encode(SecretRotated(str(wid), secret, format_timestamp(until), request_id(request))))

    @post(
        "/v1/webhooks/{webhook_id:str}/test",
        status_code=200,
        tags=["webhooks"],
        summary="Send a signed test event (event_type webhook.test) to the webhook now and report the outcome",
        opt={"doc": Doc(response=TestResult, errors=(404, 422))},
    )
    async def test(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        target = await store.signing_target(rt.pool, principal.tenant_id, wid)
        if target is None:
            raise missing(wid)
        url, secrets_now = target
        event_id, created = new_event_id()
        body = encode(  # an event as any delivery carries it (it is not stored)
            DeliveryBody(
                str(event_id),
                format_timestamp(created),
                "triggers",
                "webhook.test",
                msgspec.Raw(b'{"message":"A test delivery from Triggers"}'),
                "pending",
                NULL,
                None,
            )
        )
        message_id = f"msg_test_{event_id.hex}"
        attempt = await client.post(url, body, signing.headers(secrets_now, message_id, int(time.time()), body))
        if attempt.ok:
            message = f"Delivered in {attempt.latency_ms:.0f} ms"
        elif attempt.status_code is not None:
            message = f"The receiver answered {attempt.status_code}"
        else:
            message = attempt.error or "Not delivered"
        result = TestResult(
            str(wid), "success" if attempt.ok else "failed", attempt.status_code, message, request_id(request)
        )
        return json_response(encode(result))

    @get(
        "/v1/webhooks/{webhook_id:str}/deliveries",
        tags=["webhooks"],
        summary="The webhook's deliveries, newest first, each with its attempts",
        opt={
            "doc": Doc(
                params=(
                    *PAGE_PARAMS,
                    Param("status", "query", "Only pending, succeeded or failed deliveries", {"enum": list(_STATUSES)}),
                    Param("event_id", "query", "Only the delivery of this event", {"type": "string", "format": "uuid"}),
                ),
                response=DeliveryPage,
                errors=(404, 422),
            )
        },
    )
    async def deliveries(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        params = request.query_params
        limit = page_limit(params.get("limit"))
        status = params.get("status")
        if status is not None and status not in _STATUSES:
            raise InvalidParameter.field("query.status", "Must be one of pending, succeeded, failed")
        raw_event_id = params.get("event_id")
        event_id = uuid_param(raw_event_id, "query.event_id") if raw_event_id is not None else None
        after = page_after(settings.cursor_secret, principal.tenant_id, params.get("cursor"))
        if await store.get_webhook(rt.pool, principal.tenant_id, wid) is None:
            raise missing(wid)
        rows = await store.list_deliveries(rt.pool, principal.tenant_id, wid, status, event_id, after, limit + 1)
        rows, next_cursor = page_of(
            rows, limit, settings.cursor_secret, principal.tenant_id, lambda r: (r.created_at, r.delivery_id)
        )
        page = DeliveryPage(
            [_delivery_out(r) for r in rows], Pagination(limit, next_cursor), next_cursor, request_id(request)
        )
        return json_response(encode(page))

    @post(
        "/v1/webhooks/{webhook_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=202,
        tags=["webhooks"],
        summary="Send a delivery again now (a failed one too; a succeeded one is left alone)",
        opt={"doc": Doc(response=RetryQueued, status=202, errors=(404, 422))},
    )
    async def retry(request: Request[Any, Any, Any], webhook_id: str, delivery_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        did = uuid_param(delivery_id, "path.delivery_id")
        if not await store.retry_delivery(rt.pool, principal.tenant_id, wid, did):
            raise NotFound(f"Delivery {did} not found", {"delivery_id": str(did)})
        body = RetryQueued(str(did), "pending", "The delivery is due now", request_id(request))
        return json_response(encode(body), 202)

    def replay_answer(replay: store.Replay, request: Request[Any, Any, Any], status: int = 200) -> Response[bytes]:
        body = ReplayOut(
            replay_id=str(replay.replay_id),
            webhook_id=str(replay.webhook_id),
            since=format_timestamp(replay.since),
            until=format_timestamp(replay.until),
            status=replay.status,
            deliveries_scheduled=replay.scheduled,
            error=replay.error,
            created_at=format_timestamp(replay.created_at),
            completed_at=format_timestamp(replay.completed_at) if replay.completed_at else None,
            request_id=request_id(request),
        )
        return json_response(encode(body), status)

    @post(
        "/v1/webhooks/{webhook_id:str}/replay",
        status_code=202,
        tags=["webhooks"],
        summary="Deliver again every past event of a time range that matches the webhook",
        description="Events created in [since, until) that match the webhook's current filters are read back "
        "from the event log (as far back as Kafka retains it), including those of days the webhook was "
        "disabled, and delivered again with their original `webhook-id`. Runs in the background: follow it "
        "with GET .../replays/{replay_id}.",
        opt={
            "doc": Doc(
                body=ReplayIn,
                body_example={"since": "2026-11-25T00:00:00Z", "until": "2026-11-26T00:00:00Z"},
                response=ReplayOut,
                status=202,
                errors=(400, 404, 409, 415, 422),
            )
        },
    )
    async def replay(request: Request[Any, Any, Any], webhook_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        wanted = decode_body(_decode_replay, await request.body(), request.headers.get("content-type"))
        now = datetime.now(UTC)
        if wanted.since > now:
            raise ValidationFailed.field("body.since", "Must not be in the future")
        since = max(wanted.since, _EPOCH)  # the event log holds nothing older
        until = min(wanted.until, now)
        if until <= since:
            raise ValidationFailed.field("body.until", "Must be after since")
        hook = await store.get_webhook(rt.pool, principal.tenant_id, wid)
        if hook is None:
            raise missing(wid)
        if not hook.is_active:
            raise Conflict(
                "The webhook is disabled; enable it (is_active: true) before replaying", {"webhook_id": str(wid)}
            )
        made = await store.create_replay(rt.pool, principal.tenant_id, wid, since, until)
        if made is None:  # deleted in between
            raise missing(wid)
        return replay_answer(made, request, 202)

    @get(
        "/v1/webhooks/{webhook_id:str}/replays/{replay_id:str}",
        tags=["webhooks"],
        summary="How far a replay got",
        opt={"doc": Doc(response=ReplayOut, errors=(404, 422))},
    )
    async def get_replay(request: Request[Any, Any, Any], webhook_id: str, replay_id: str) -> Response[bytes]:
        principal = await caller(request)
        wid = uuid_param(webhook_id, "path.webhook_id")
        rid = uuid_param(replay_id, "path.replay_id")
        found = await store.get_replay(rt.pool, principal.tenant_id, wid, rid)
        if found is None:
            raise NotFound(f"Replay {rid} not found", {"replay_id": str(rid)})
        return replay_answer(found, request)

    return [
        create,
        list_webhooks,
        get_webhook,
        replace,
        change,
        remove,
        rotate_secret,
        test,
        deliveries,
        retry,
        replay,
        get_replay,
    ]


_STATUSES = ("pending", "succeeded", "failed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _delivery_out(row: store.DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        delivery_id=str(row.delivery_id),
        event_id=str(row.event_id),
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=format_timestamp(row.next_attempt_at) if row.next_attempt_at else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=format_timestamp(row.created_at),
        updated_at=format_timestamp(row.updated_at),
        attempt_log=[
            AttemptOut(a.attempt, format_timestamp(a.at), a.status_code, round(a.latency_ms, 1), a.error)
            for a in row.log
        ],
    )
