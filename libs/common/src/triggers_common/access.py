"""Every authenticated request passes here once: key, signature, IP allowlist, scope, rate limits."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request

from triggers_common.auth import KeyCache, Principal
from triggers_common.errors import Forbidden, TriggersError, ValidationFailed
from triggers_common.http import RATE_LIMIT_HEADERS, api_key, header
from triggers_common.ratelimit import RateLimiter
from triggers_common.settings import Settings
from triggers_common.signing import verify

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RateLimited(TriggersError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"
    default_message = "Rate limit exceeded"


def client_ip(scope: Any, trusted: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The socket peer, unless it is a trusted proxy: then the right-most untrusted ``X-Forwarded-For`` hop."""
    peer = scope.get("client")
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except ValueError:
        return None
    if address is None or not any(address in net for net in trusted):
        return address
    # Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3): a proxy may add its own line
    forwarded = ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for")
    if not forwarded:
        return address
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        try:
            candidate = ipaddress.ip_address(hop)
        except ValueError:
            return None  # a mangled chain is not trusted at all
        if not any(candidate in net for net in trusted):
            return candidate
    return address


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


class Access:
    """Authorizes a request for one scope, or raises the error the client should see."""

    def __init__(self, settings: Settings, keys: KeyCache, limiter: RateLimiter) -> None:
        self._settings = settings
        self._keys = keys
        self._limiter = limiter
        self._trusted = parse_networks(settings.trusted_proxies)

    async def check(self, request: Request[Any, Any, Any], scope: str) -> Principal:
        return await self.authorize(request.scope, scope, request.body)

    async def authorize(self, raw: Any, scope: str, body: bytes | Callable[[], Awaitable[bytes]]) -> Principal:
        """:meth:`check` for an ASGI scope; ``body`` (read only to verify a signature) or how to read it."""
        size = sum(len(name) + len(value) for name, value in raw["headers"])
        if size > self._settings.max_header_bytes:
            raise ValidationFailed(
                "Request headers too large", {"limit_bytes": self._settings.max_header_bytes, "actual_bytes": size}
            )
        principal = await self._keys.authenticate(api_key(raw))
        key_bucket, key_limit = f"key:{principal.key_id}", principal.rate_limit or self._settings.default_rate_limit
        try:
            await self._permit(raw, principal, scope, body)
        except TriggersError:  # refused, yet the key is known: its rate-limit headers, without spending a token
            raw[RATE_LIMIT_HEADERS] = (await self._limiter.peek(key_bucket, key_limit)).headers()
            raise
        await self._limit(raw, key_bucket, key_limit)
        await self._limit(
            raw, f"tenant:{principal.tenant_id}", principal.tenant_rate_limit or self._settings.tenant_rate_limit
        )
        return principal

    async def _permit(
        self, raw: Any, principal: Principal, scope: str, body: bytes | Callable[[], Awaitable[bytes]]
    ) -> None:
        """The key's own conditions: IP allowlist, signature, scope."""
        if principal.allowed_ips is not None:
            ip = client_ip(raw, self._trusted)
            if ip is None or not any(ip in net for net in principal.allowed_ips):
                raise Forbidden("Client IP not allowed for this API key", {"client_ip": str(ip) if ip else None})
        signed = header(raw, b"x-signature")
        if signed is not None or principal.require_signature:
            verify(
                principal.signing_secret,
                raw["method"],
                raw.get("raw_path", raw["path"].encode()).decode("latin-1"),
                raw["query_string"].decode("latin-1"),
                body if isinstance(body, bytes) else await body(),
                header(raw, b"x-signature-timestamp"),
                signed,
            )
        principal.require(scope)

    async def _limit(self, raw: Any, bucket: str, per_minute: int) -> None:
        decision = await self._limiter.take(bucket, per_minute)
        if bucket.startswith("key:") or not decision.allowed:
            raw[RATE_LIMIT_HEADERS] = decision.headers()
        if not decision.allowed:
            raise RateLimited(
                "Rate limit exceeded" if bucket.startswith("key:") else "Tenant rate limit exceeded",
                {"limit": decision.limit, "reset_at": decision.reset_at, "retry_after": decision.retry_after},
                headers={"Retry-After": str(decision.retry_after)},
            )
