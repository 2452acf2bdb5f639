"""Signed requests (API.md §7): the canonical string, the client-side signer and the server-side check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from triggers_common.errors import Unauthorized

TOLERANCE_S = 300


def canonical(method: str, path: str, query: str, timestamp: str, body: bytes) -> bytes:
    """``METHOD\\nPATH\\nRAW_QUERY\\nTIMESTAMP\\nhex(sha256(body))``."""
    return "\n".join((method.upper(), path, query, timestamp, hashlib.sha256(body).hexdigest())).encode()


def signature(secret: str, method: str, path: str, query: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), canonical(method, path, query, timestamp, body), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def sign_request(
    secret: str, method: str, path: str, query: str = "", body: bytes = b"", timestamp: int | None = None
) -> dict[str, str]:
    """The headers a client adds to sign a request: ``X-Signature`` and ``X-Signature-Timestamp``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Signature": signature(secret, method, path, query, ts, body), "X-Signature-Timestamp": ts}


def verify(
    secret: str | None,
    method: str,
    path: str,
    query: str,
    body: bytes,
    timestamp: str | None,
    given: str | None,
    now: float | None = None,
) -> None:
    """Raise 401 unless ``given`` signs this exact request within ±300 s. Any doubt fails closed."""
    if not secret:
        raise Unauthorized("Request is signed but the API key has no signing secret")
    if not timestamp or not given:
        raise Unauthorized("Missing X-Signature or X-Signature-Timestamp header")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:  # isdigit alone takes "¹"
        raise Unauthorized("Invalid X-Signature-Timestamp")
    skew = abs((time.time() if now is None else now) - int(timestamp))
    if skew > TOLERANCE_S:
        raise Unauthorized("Request signature timestamp outside the allowed window", {"tolerance_s": TOLERANCE_S})
    expected = signature(secret, method, path, query, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise Unauthorized("Invalid request signature")
