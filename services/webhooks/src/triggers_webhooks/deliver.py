"""Sending one signed delivery: a pooled aiohttp client whose resolver refuses non-public addresses (unless
allowed), so the address checked is the address connected to, and DNS rebinding gets nowhere. Redirects
are not followed (a 3xx is a failure): they could lead anywhere."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from triggers_webhooks import guard

USER_AGENT = "Triggers-Webhooks/1"


class DeliveryBody(msgspec.Struct):
    """What a delivery carries: the event as GET /v1/events/{id} shows it, without request_id."""

    event_id: str
    created_at: str
    source: str
    event_type: str
    payload: msgspec.Raw
    status: str
    metadata: msgspec.Raw
    acknowledged_at: str | None


class GuardedResolver(AbstractResolver):
    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await asyncio.wait_for(self._inner.resolve(host, port, family), guard.RESOLVE_TIMEOUT_S)
        except TimeoutError:
            raise OSError(f"{host} did not resolve within {guard.RESOLVE_TIMEOUT_S:g} s") from None
        if not self._allow_private:
            for result in results:
                if guard.forbidden(ipaddress.ip_address(result["host"])):
                    raise OSError(f"{host} resolves to a non-public address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt got: a status code, or the error that prevented one."""

    status_code: int | None
    error: str | None
    latency_ms: float
    retry_after: str | None = None
    error_type: str | None = None
    """What kind of error prevented a status code: ``refused``, ``timeout`` or the exception's name."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class DeliveryClient:
    def __init__(self, allow_private: bool, timeout_s: float, connections: int = 200, per_host: int = 20) -> None:
        """``timeout_s``: success is a 2xx within this long (15 s by default, API.md section 4)."""
        self._allow_private = allow_private
        self.timeout_s = timeout_s
        self._connections = connections
        self._per_host = per_host
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._connections,
            limit_per_host=self._per_host,
            resolver=GuardedResolver(self._allow_private),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        """POST ``body`` to ``url``; never raises for anything the receiver or the network does."""
        assert self._session is not None, "delivery client not started"
        started = time.perf_counter()
        try:
            await guard.check_destination(url, self._allow_private)  # IP literals skip the resolver
            async with self._session.post(
                url, data=body, headers={**headers, "Content-Type": "application/json"}, allow_redirects=False
            ) as response:
                await response.content.read(64 * 1024)  # a little of the answer, then let the connection go
                return Attempt(
                    response.status, None, (time.perf_counter() - started) * 1000, response.headers.get("Retry-After")
                )
        except guard.Refused as exc:
            return Attempt(None, f"refused: {exc}", (time.perf_counter() - started) * 1000, error_type="refused")
        except TimeoutError:
            elapsed = (time.perf_counter() - started) * 1000
            return Attempt(None, f"timeout after {self.timeout_s:g} s", elapsed, error_type="timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            name = type(exc).__name__
            return Attempt(None, f"{name}: {exc}"[:500], (time.perf_counter() - started) * 1000, error_type=name)
