"""Where deliveries may go: http(s) URLs whose host resolves only to public addresses (SSRF guard).

Checked when a webhook is created or changed, and again at delivery time after DNS resolution, so a name
that later resolves to a private address (DNS rebinding) is still refused. ``allow_private`` (dev mode, or
``TRIGGERS_WEBHOOKS_ALLOW_PRIVATE``) lets loopback and private receivers through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL = 2048
RESOLVE_TIMEOUT_S = 3.0
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
"""Cloud metadata endpoints (AWS, GCP, Azure use the first; AWS IPv6 the second)."""


class Refused(ValueError):
    """The URL may not receive deliveries; the message says why."""


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an acceptable URL: http or https, a host, no credentials, at most 2,048 chars."""
    if len(url) > MAX_URL:
        raise Refused(f"Must be at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("Not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("Must be an http or https URL")
    if not parts.hostname:
        raise Refused("Must name a host")
    if parts.username is not None or parts.password is not None:
        raise Refused("Must not carry credentials; sign deliveries with the webhook secret instead")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise Refused("Must not contain whitespace or control characters")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for loopback, private, link-local, multicast, reserved, unspecified and metadata addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in METADATA or not address.is_global or address.is_multicast


async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` resolves to; Refused if it does not resolve."""
    try:
        literal = ipaddress.ip_address(host)
        return [literal]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, TimeoutError):
        raise Refused(f"Host {host} does not resolve") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_destination(url: str, allow_private: bool) -> None:
    """Refused if the URL is bad or any address it resolves to is not public. With ``allow_private`` only
    the URL's form is checked: any address will do, and the name is resolved when delivering."""
    host, port = check_url(url)
    if allow_private:
        return
    bad = [a for a in await resolve(host, port) if forbidden(a)]
    if bad:
        raise Refused(f"Resolves to a non-public address ({bad[0]}); deliveries only go to public hosts")
