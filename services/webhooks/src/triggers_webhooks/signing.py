"""Signing deliveries, per Standard Webhooks and with the legacy ``X-Webhook-*`` headers, always over the
exact bytes sent.

- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, one per live secret
  (space-separated), where the key of a ``whsec_`` secret is the base64 after the prefix, else its UTF-8.
- ``X-Webhook-Signature``: hex HMAC-SHA256 of the body, keyed with the current secret's UTF-8 text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: ``whsec_`` secrets carry base64 bytes, others are their own UTF-8."""
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX) :], validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one delivery; ``secrets[0]`` is the current secret, any others still sign
    during a rotation."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode() for s in secrets
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "X-Webhook-Id": message_id,
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": hmac.new(secrets[0].encode(), body, hashlib.sha256).hexdigest(),
    }
