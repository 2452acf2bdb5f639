"""API key management over HTTP (API.md section 6): an ``admin`` key manages its own tenant's keys, and only
those. Another tenant's key ids answer 404 like unknown ones. A key's text appears in exactly one response:
the one that created it (create or rotate)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.types import ControllerRouterHandler
from triggers_common import key_admin
from triggers_common.auth import DEFAULT_SCOPES, SCOPES, Principal, check_scopes, create_key
from triggers_common.errors import Conflict, InvalidParameter, NotFound, ValidationFailed
from triggers_common.http import decode_body, encode, json_response, request_id
from triggers_common.key_admin import KeyInfo, KeyStateConflict
from triggers_common.models import format_timestamp
from triggers_common.openapi import Doc, Param
from triggers_common.runtime import Runtime

_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, msgspec.Meta(max_length=100, pattern=_NO_NUL)]
Scopes = Annotated[list[str], msgspec.Meta(min_length=1, max_length=len(SCOPES))]
RateLimit = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
Networks = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=100)]
"""At least one entry: to allow every address, leave it null."""
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern=_NO_NUL)]
MAX_TRANSITION_DAYS = 90
DEFAULT_TRANSITION_DAYS = 7
_DAYS = re.compile(r"^\d{1,3}$")
_KEY_ID = re.compile(r"^key_[0-9a-z_]{1,40}$")


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = ""
    scopes: Scopes = msgspec.field(default_factory=lambda: list(DEFAULT_SCOPES))
    rate_limit: RateLimit | None = None
    allowed_ips: Networks | None = None
    signing_secret: Secret | None = None
    require_signature: bool = False
    tenant: str | None = None
    """The caller's own tenant, or omitted: a key never creates keys for another tenant."""


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; null clears rate_limit, allowed_ips and signing_secret."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    scopes: Scopes | msgspec.UnsetType = msgspec.UNSET
    rate_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    allowed_ips: Networks | msgspec.UnsetType | None = msgspec.UNSET
    signing_secret: Secret | msgspec.UnsetType | None = msgspec.UNSET
    require_signature: bool | msgspec.UnsetType = msgspec.UNSET


class KeyOut(msgspec.Struct):
    key_id: str
    tenant_id: str
    name: str
    scopes: list[str]
    rate_limit: int | None
    allowed_ips: list[str] | None
    require_signature: bool
    has_signing_secret: bool
    status: str
    version: int
    expires_at: str | None
    created_at: str
    updated_at: str
    revoked_at: str | None


class KeyResponse(KeyOut):
    request_id: str


class KeyCreated(KeyOut):
    key: str
    """Shown this once; only its hash is stored."""
    request_id: str


class KeyRotated(KeyOut):
    key: str
    """The new key, shown this once."""
    previous: KeyOut
    """The key it replaces: it keeps working until its expires_at."""
    request_id: str


class KeyList(msgspec.Struct):
    api_keys: list[KeyOut]
    request_id: str


class KeyVersions(msgspec.Struct):
    versions: list[KeyOut]
    request_id: str


class AuditEntryOut(msgspec.Struct):
    id: int
    key_id: str
    action: str
    actor: str
    """The key_id that made the change, or "cli"."""
    changes: msgspec.Raw
    at: str


class AuditLog(msgspec.Struct):
    entries: list[AuditEntryOut]
    next_before: int | None
    """Pass as ``before`` for the next (older) page."""
    request_id: str


KEY_EXAMPLE = {"name": "billing sync", "scopes": ["events:write", "events:read"], "rate_limit": 600}
PATCH_EXAMPLE = {"scopes": ["events:read"], "allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}
_decode_key = msgspec.json.Decoder(KeyIn).decode
_decode_patch = msgspec.json.Decoder(KeyPatch).decode


def _time(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def key_out(info: KeyInfo) -> KeyOut:
    fields = msgspec.structs.asdict(info)
    for name in ("expires_at", "created_at", "updated_at", "revoked_at"):
        fields[name] = _time(fields[name])
    return KeyOut(**fields)


def key_response(info: KeyInfo, request: Request[Any, Any, Any]) -> Response[bytes]:
    body = KeyResponse(**msgspec.structs.asdict(key_out(info)), request_id=request_id(request))
    return json_response(encode(body))


def _checked(field: str, check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ValidationFailed.field(f"body.{field}", str(exc)) from None


def build_key_routes(rt: Runtime) -> list[ControllerRouterHandler]:
    async def admin(request: Request[Any, Any, Any]) -> Principal:
        return await rt.access.check(request, "admin")

    def missing(key_id: str) -> NotFound:
        return NotFound("API key not found", {"key_id": key_id[:64]})

    def known_form(key_id: str) -> str:
        """A key id as the system makes them; anything else cannot exist (404 without a query)."""
        if not _KEY_ID.match(key_id):
            raise missing(key_id)
        return key_id

    @post(
        "/v1/api-keys",
        status_code=201,
        tags=["api-keys"],
        summary="Create an API key for the caller's tenant (admin); the key is in this response only",
        opt={"doc": Doc(body=KeyIn, body_example=KEY_EXAMPLE, response=KeyCreated, status=201, errors=(400, 404, 415))},
    )
    async def create(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await admin(request)
        wanted = decode_body(_decode_key, await request.body(), request.headers.get("content-type"))
        if wanted.tenant is not None and wanted.tenant != principal.tenant_id:
            raise NotFound(f"Tenant {wanted.tenant} not found", {"tenant": wanted.tenant})
        scopes = _checked("scopes", check_scopes, wanted.scopes)
        networks = _checked("allowed_ips", key_admin.check_networks, wanted.allowed_ips or [])
        if wanted.require_signature and wanted.signing_secret is None:
            raise ValidationFailed.field("body.require_signature", "Needs a signing_secret")
        async with rt.pool.acquire() as conn:
            created = await create_key(
                conn,
                principal.tenant_id,
                scopes,
                wanted.name,
                rate_limit=wanted.rate_limit,
                allowed_ips=networks if wanted.allowed_ips is not None else None,
                signing_secret=wanted.signing_secret,
                require_signature=wanted.require_signature,
                actor=principal.key_id,
            )
            info = await key_admin.get_key(conn, principal.tenant_id, created.key_id)
        assert info is not None
        body = KeyCreated(**msgspec.structs.asdict(key_out(info)), key=created.key, request_id=request_id(request))
        return json_response(encode(body), 201)

    @get(
        "/v1/api-keys",
        tags=["api-keys"],
        summary="The caller's tenant's API keys (admin), oldest first; never the keys themselves",
        opt={"doc": Doc(response=KeyList)},
    )
    async def list_keys(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await admin(request)
        async with rt.pool.acquire() as conn:
            keys = await key_admin.list_keys(conn, principal.tenant_id)
        return json_response(encode(KeyList([key_out(k) for k in keys], request_id(request))))

    @get(
        "/v1/api-keys/{key_id:str}",
        tags=["api-keys"],
        summary="One API key of the caller's tenant (admin)",
        opt={"doc": Doc(response=KeyResponse, errors=(404,))},
    )
    async def get_key(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        principal = await admin(request)
        key_id = known_form(key_id)
        async with rt.pool.acquire() as conn:
            info = await key_admin.get_key(conn, principal.tenant_id, key_id)
        if info is None:
            raise missing(key_id)
        return key_response(info, request)

    @patch(
        "/v1/api-keys/{key_id:str}",
        tags=["api-keys"],
        summary="Change a key's name, scopes, rate limit, IP allowlist or signing policy (admin)",
        description="Only the fields present change; null clears `rate_limit`, `allowed_ips` and `signing_secret`. "
        "Every replica applies the change within moments (409 for a revoked or expired key).",
        opt={"doc": Doc(body=KeyPatch, body_example=PATCH_EXAMPLE, response=KeyResponse, errors=(400, 404, 409, 415))},
    )
    async def change(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        principal = await admin(request)
        key_id = known_form(key_id)
        wanted = decode_body(_decode_patch, await request.body(), request.headers.get("content-type"))
        changes = {k: v for k, v in msgspec.structs.asdict(wanted).items() if v is not msgspec.UNSET}
        if "scopes" in changes:
            changes["scopes"] = _checked("scopes", check_scopes, changes["scopes"])
        if changes.get("allowed_ips") is not None:
            changes["allowed_ips"] = _checked("allowed_ips", key_admin.check_networks, changes["allowed_ips"])
        async with rt.pool.acquire() as conn:
            current = await key_admin.get_key(conn, principal.tenant_id, key_id)
            if current is None:
                raise missing(key_id)
            secret = (
                changes["signing_secret"] is not None if "signing_secret" in changes else current.has_signing_secret
            )
            if changes.get("require_signature", current.require_signature) and not secret:
                raise ValidationFailed.field("body.require_signature", "Needs a signing_secret")
            try:
                info = await key_admin.update_key(conn, principal.tenant_id, key_id, changes, principal.key_id)
            except KeyStateConflict as exc:
                raise Conflict(str(exc), {"key_id": key_id}) from None
            except key_admin.SignatureNeedsSecret as exc:
                raise ValidationFailed.field("body.require_signature", str(exc)) from None
        if info is None:
            raise missing(key_id)
        return key_response(info, request)

    @delete(
        "/v1/api-keys/{key_id:str}",
        status_code=200,
        tags=["api-keys"],
        summary="Revoke a key (admin): every replica refuses it within moments; revoking twice is a no-op",
        opt={"doc": Doc(response=KeyResponse, errors=(404,))},
    )
    async def revoke(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        principal = await admin(request)
        key_id = known_form(key_id)
        async with rt.pool.acquire() as conn:
            info = await key_admin.revoke_key(conn, principal.tenant_id, key_id, principal.key_id)
        if info is None:
            raise missing(key_id)
        return key_response(info, request)

    @post(
        "/v1/api-keys/{key_id:str}/rotate",
        status_code=201,
        tags=["api-keys"],
        summary="Replace a key with a new version (admin); the old one works until its expires_at",
        description="The new key has the same name, scopes and policies. The old key becomes `rotating` and "
        "keeps working for `transition_days` (1..90, default 7). Only the latest live version rotates (409).",
        opt={
            "doc": Doc(
                params=(
                    Param(
                        "transition_days",
                        "query",
                        "Days the old key keeps working (1..90, default 7)",
                        {"type": "integer", "minimum": 1, "maximum": MAX_TRANSITION_DAYS},
                    ),
                ),
                response=KeyRotated,
                status=201,
                errors=(404, 409, 422),
            )
        },
    )
    async def rotate(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        principal = await admin(request)
        key_id = known_form(key_id)
        raw = request.query_params.get("transition_days")
        days = DEFAULT_TRANSITION_DAYS if raw is None else int(raw) if _DAYS.match(raw) else 0
        if not 1 <= days <= MAX_TRANSITION_DAYS:
            raise InvalidParameter.field("query.transition_days", f"Must be an integer from 1 to {MAX_TRANSITION_DAYS}")
        async with rt.pool.acquire() as conn:
            try:
                rotated = await key_admin.rotate_key(
                    conn, principal.tenant_id, key_id, timedelta(days=days), principal.key_id
                )
            except KeyStateConflict as exc:
                raise Conflict(str(exc), {"key_id": key_id}) from None
        if rotated is None:
            raise missing(key_id)
        created, new, previous = rotated
        body = KeyRotated(
            **msgspec.structs.asdict(key_out(new)),
            key=created.key,
            previous=key_out(previous),
            request_id=request_id(request),
        )
        return json_response(encode(body), 201)

    @get(
        "/v1/api-keys/{key_id:str}/versions",
        tags=["api-keys"],
        summary="Every version of a key, oldest first (admin)",
        opt={"doc": Doc(response=KeyVersions, errors=(404,))},
    )
    async def versions(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        principal = await admin(request)
        key_id = known_form(key_id)
        async with rt.pool.acquire() as conn:
            found = await key_admin.key_versions(conn, principal.tenant_id, key_id)
        if found is None:
            raise missing(key_id)
        return json_response(encode(KeyVersions([key_out(k) for k in found], request_id(request))))

    @get(
        "/v1/audit-log",
        tags=["api-keys"],
        summary="Who changed which of the tenant's keys, what and when (admin), newest first",
        opt={
            "doc": Doc(
                params=(
                    Param("limit", "query", "Entries, 1..100 (default 50)", {"type": "integer", "minimum": 1}),
                    Param("before", "query", "next_before of the previous page", {"type": "integer", "minimum": 1}),
                ),
                response=AuditLog,
                errors=(422,),
            )
        },
    )
    async def audit_log(request: Request[Any, Any, Any]) -> Response[bytes]:
        principal = await admin(request)
        limit = _positive(request.query_params.get("limit"), "limit", 50, 100)
        before = _positive(request.query_params.get("before"), "before", None, 2**62)
        async with rt.pool.acquire() as conn:
            entries = await key_admin.audit_log(conn, principal.tenant_id, limit + 1, before)
        more = len(entries) > limit
        entries = entries[:limit]
        out = [AuditEntryOut(e.id, e.key_id, e.action, e.actor, e.changes, format_timestamp(e.at)) for e in entries]
        body = AuditLog(out, entries[-1].id if more else None, request_id(request))
        return json_response(encode(body))

    return [create, list_keys, get_key, change, revoke, rotate, versions, audit_log]


def _positive(raw: str | None, name: str, default: int | None, most: int) -> Any:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not 1 <= int(raw) <= most:
        raise InvalidParameter.field(f"query.{name}", f"Must be an integer from 1 to {most}")
    return int(raw)
