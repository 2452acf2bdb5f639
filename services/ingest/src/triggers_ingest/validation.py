"""Turns a request body into a validated event, or an error that says exactly which field is wrong."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from triggers_common.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from triggers_common.http import media_type, utf8
from triggers_common.models import PRIORITIES

T = TypeVar("T")
MAX_NAME = 100
MAX_IDEMPOTENCY_KEY = 255
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects in ``payload`` or ``metadata``."""
MAX_METADATA_BYTES = 65_536
"""Largest ``metadata``, compact. With the payload's limit it keeps a record well inside the broker's largest
message (1 MiB): a bigger one was refused by the broker, and answered 503, as if Kafka were down."""


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    event_type: str
    payload: msgspec.Raw
    metadata: msgspec.Raw = msgspec.Raw(b"null")


class NewEvent(msgspec.Struct, frozen=True):
    """A valid event as the client sent it: names trimmed, ``payload``/``metadata`` compact raw JSON."""

    source: str
    event_type: str
    payload: bytes
    metadata: bytes | None
    idempotency_key: str | None


MAX_DECIMAL_PLACES = 16383
"""Most digits after the decimal point a number in ``metadata`` may need: what Postgres's jsonb, where metadata is
stored, can hold (``1e-16384`` or ``0.0e-16383`` overflow it)."""


MAX_EXPONENT = 1_073_741_822
"""The largest exponent Postgres's numeric input takes, even for zero (``0e1073741823`` overflows it)."""


def _metadata_number(text: str) -> float:
    """A non-integer number of ``metadata``, as written; refused unless every reader can hold it (a double) and
    jsonb can store it, so that no event is accepted and then refused by the inbox."""
    mantissa, _, exponent = text.lower().partition("e")
    digits = exponent.lstrip("+-").lstrip("0")
    power = int(digits or "0") if len(digits) <= 10 else 2 * MAX_EXPONENT  # more digits: beyond every limit
    power = -power if exponent.startswith("-") else power
    if power > MAX_EXPONENT:
        raise ValueError("Number out of range")
    if len(mantissa.partition(".")[2]) - power > MAX_DECIMAL_PLACES:
        raise ValueError(f"Number needs more than {MAX_DECIMAL_PLACES} digits after the decimal point")
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number out of range")
    return value


_LONG_INTEGER = re.compile(rb"\d{309}")
"""Digits enough for an integer beyond a double's range (which msgspec decodes as an int, not through the hook)."""


def _beyond_double(value: Any) -> bool:
    """Whether ``value`` (decoded JSON) holds an integer no double can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and abs(item) > sys.float_info.max:
            return True
    return False


_decode_body = msgspec.json.Decoder(_Body).decode
_decode_object = msgspec.json.Decoder(dict[str, Any], float_hook=_metadata_number).decode
_AT = re.compile(r" - at `\$(.*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.+)`")
_MISSING = re.compile(r"^Object missing required field `(.+)`")


def _malformed(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"JSON nested deeper than {MAX_DEPTH} levels"
    if isinstance(exc, UnicodeDecodeError):
        return "Body is not valid UTF-8"
    return f"Malformed JSON: {exc}"


_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""A ``\\u0000`` escape in JSON text: after an even run of backslashes (``\\\\u0000`` is a backslash, then text)."""
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(document: bytes) -> int:
    """How deeply arrays and objects nest in a valid JSON document (brackets inside strings don't count)."""
    if document.count(b"[") + document.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    brackets = _STRING.sub(b"", document).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_DEPTH_STEP[b] for b in brackets))


def _decode(decode: Callable[[bytes], T], body: bytes, at: str = "body") -> T:
    """Decode ``body`` as JSON of the expected shape, or raise 400 saying what is wrong and where."""
    try:
        body.decode()  # msgspec lets invalid UTF-8 through inside raw values; Postgres would not
        return decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationFailed.of([describe_validation_error(exc, at)]) from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise ValidationFailed.of(
            [_error(at, _malformed(exc), "json_invalid")], "Request body is not valid JSON"
        ) from exc


def _error(field: str, message: str, kind: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": kind}


def describe_validation_error(exc: msgspec.ValidationError, prefix: str = "body") -> dict[str, str]:
    """msgspec's message (``Expected `str`, got `int` - at `$.source```) as ``{field, message, type}``."""
    text = str(exc)
    path = ""
    if m := _AT.search(text):
        path = m.group(1)
        text = text[: m.start()]
    field = prefix + re.sub(r"\[(\d+)\]", r".\1", path)
    if m := _UNKNOWN.match(text):
        return _error(f"{field}.{m.group(1)}", f"Unknown field '{m.group(1)}'", "extra_forbidden")
    if m := _MISSING.match(text):
        return _error(f"{field}.{m.group(1)}", "Field required", "missing")
    return _error(field, text.replace("`", "'"), "type_error")


def _name(value: str, at: str, name: str, errors: list[dict[str, str]]) -> str:
    trimmed = value.strip()
    if not trimmed:
        errors.append(_error(f"{at}.{name}", "Must not be blank", "value_error"))
    elif "\x00" in trimmed:  # Postgres text cannot hold NUL; accepting it would lose the event later
        errors.append(_error(f"{at}.{name}", "Must not contain NUL characters", "value_error"))
    elif len(trimmed) > MAX_NAME:
        errors.append(_error(f"{at}.{name}", f"Must be at most {MAX_NAME} characters", "value_error"))
    return trimmed


def _metadata(raw: bytes, errors: list[dict[str, str]], at: str) -> str | None:
    """Checks the known metadata keys; returns the idempotency key if one is given."""
    try:
        metadata = _decode_object(raw)  # all of it: every value must be one a JSON reader can hold
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Expected"):
            errors.append(_error(f"{at}.metadata", "Expected 'object' or null", "type_error"))
        else:  # a number that readers of the inbox and webhooks, or jsonb, could not hold
            errors.append(_error(f"{at}.metadata", _AT.sub("", text), "value_error"))
        return None
    if _LONG_INTEGER.search(raw) and _beyond_double(metadata):
        errors.append(_error(f"{at}.metadata", "Number out of range", "value_error"))
    priority = metadata.get("priority")
    if priority is not None and priority not in PRIORITIES:
        errors.append(_error(f"{at}.metadata.priority", "Must be one of: low, normal, high", "value_error"))
    correlation = metadata.get("correlation_id")
    if correlation is not None and not isinstance(correlation, str):
        errors.append(_error(f"{at}.metadata.correlation_id", "Expected 'str'", "type_error"))
    key = metadata.get("idempotency_key")
    if key is None:
        return None
    if not isinstance(key, str):
        errors.append(_error(f"{at}.metadata.idempotency_key", "Expected 'str'", "type_error"))
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY or "\x00" in key:
        errors.append(
            _error(f"{at}.metadata.idempotency_key", f"Must be 1..{MAX_IDEMPOTENCY_KEY} characters", "value_error")
        )
        return None
    return key


def parse_event(body: bytes, max_payload_bytes: int, at: str = "body") -> NewEvent:
    """Validate one event (API.md §3). Raises 400 with every problem found, or 413 for a big payload.

    ``at`` is where the event sits in the request, for error fields (``body.items.3`` in a bulk request).
    """
    return _event(_decode(_decode_body, body, at), max_payload_bytes, at)


def _event(parsed: _Body, max_payload_bytes: int, at: str) -> NewEvent:
    """The checks of :func:`parse_event` that follow decoding."""
    errors: list[dict[str, str]] = []
    source = _name(parsed.source, at, "source", errors)
    event_type = _name(parsed.event_type, at, "event_type", errors)

    payload = msgspec.json.format(parsed.payload, indent=-1)
    if len(payload) > max_payload_bytes:
        raise PayloadTooLarge(
            f"Payload exceeds {max_payload_bytes} bytes",
            {"limit_bytes": max_payload_bytes, "actual_bytes": len(payload)},
        )
    if payload[:1] != b"{":
        errors.append(_error(f"{at}.payload", "Expected 'object'", "type_error"))
    elif json_depth(payload) > MAX_DEPTH:
        errors.append(_error(f"{at}.payload", f"Nested deeper than {MAX_DEPTH} levels", "value_error"))
    elif payload == b"{}":
        errors.append(_error(f"{at}.payload", "Must not be empty", "value_error"))

    metadata = None
    idempotency_key = None
    compact = msgspec.json.format(parsed.metadata, indent=-1)
    if len(compact) > MAX_METADATA_BYTES:
        raise PayloadTooLarge(
            f"Metadata exceeds {MAX_METADATA_BYTES} bytes",
            {"limit_bytes": MAX_METADATA_BYTES, "actual_bytes": len(compact)},
        )
    if compact != b"null":
        metadata = compact
        if b"\\u0000" in metadata and _NUL.search(metadata):  # jsonb (where metadata is stored) cannot hold NUL
            errors.append(_error(f"{at}.metadata", "Must not contain \\u0000", "value_error"))
        if json_depth(metadata) > MAX_DEPTH:
            errors.append(_error(f"{at}.metadata", f"Nested deeper than {MAX_DEPTH} levels", "value_error"))
        idempotency_key = _metadata(metadata, errors, at)

    if errors:
        raise ValidationFailed.of(errors)
    return NewEvent(source, event_type, payload, metadata, idempotency_key)


def idempotency_header(value: str | None, event: NewEvent) -> NewEvent:
    """Apply the ``Idempotency-Key`` header (an alias of ``metadata.idempotency_key``) to ``event``."""
    if value is None:
        return event
    value = utf8(value)  # a key in UTF-8 reads as the same key in the body
    if not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY or "\x00" in value:
        raise ValidationFailed.of(
            [_error("header.Idempotency-Key", f"Must be 1..{MAX_IDEMPOTENCY_KEY} characters", "value_error")]
        )
    if event.idempotency_key is not None and event.idempotency_key != value:
        raise ValidationFailed.of(
            [_error("header.Idempotency-Key", "Differs from metadata.idempotency_key", "value_error")]
        )
    return msgspec.structs.replace(event, idempotency_key=value)


def no_idempotency_header(value: str | None) -> None:
    """Bulk requests take idempotency keys per item: a header for the whole request would go unused."""
    if value is not None:
        raise ValidationFailed.of(
            [
                _error(
                    "header.Idempotency-Key",
                    "Not accepted on bulk requests; give each item its own metadata.idempotency_key",
                    "value_error",
                )
            ]
        )


def body_hash(event: NewEvent) -> bytes:
    """What "the same body" means for idempotency: the same validated event. How its JSON is spelled does not
    matter (whitespace, the order of object keys, how strings are escaped); numbers compare as written, except
    that the integer ``-0`` is ``0``, and an object with a repeated key counts its last value (as jsonb and most
    JSON readers do)."""
    metadata = _canonical(event.metadata) if event.metadata is not None else b""
    return _digest(event, _canonical(event.payload), metadata)


def request_hash(event: NewEvent) -> bytes:
    """The previous rule, kept beside :func:`body_hash` for replicas of the previous version (a rolling deploy,
    a rollback): the same compact JSON."""
    return _digest(event, event.payload, event.metadata or b"")


def _digest(event: NewEvent, payload: bytes, metadata: bytes) -> bytes:
    parts = (event.source.encode(), event.event_type.encode(), payload, metadata)
    return hashlib.sha256(b"\x00".join(parts)).digest()


_decode_as_written = msgspec.json.Decoder(float_hook=msgspec.Raw).decode


def _canonical(document: bytes) -> bytes:
    """``document`` (valid JSON) with object keys sorted and strings re-escaped one way; numbers as written."""
    try:
        return msgspec.json.encode(_decode_as_written(document), order="sorted")
    except (msgspec.DecodeError, RecursionError):  # e.g. an integer of thousands of digits: compare as sent
        return document


class _Bulk(msgspec.Struct, forbid_unknown_fields=True):
    items: list[msgspec.Raw]


class _WellFormedBulk(msgspec.Struct, forbid_unknown_fields=True):
    items: list[_Body]


_decode_bulk = msgspec.json.Decoder(_Bulk).decode
_decode_well_formed_bulk = msgspec.json.Decoder(_WellFormedBulk).decode


def parse_bulk(
    body: bytes, max_items: int, max_payload_bytes: int
) -> list[NewEvent | ValidationFailed | PayloadTooLarge]:
    """A bulk request (``{"items": [...]}`` with 1..max_items entries): each item's event, or why it is refused.

    Usually every item has the shape of an event, and one decoding of the whole body reads them all. Otherwise
    the envelope is decoded first (its own errors fail the request) and then each item alone, so that one bad
    item does not take the others with it. Either way each item gets the checks of :func:`parse_event`.
    """
    try:
        items: Sequence[_Body | msgspec.Raw] = _decode(_decode_well_formed_bulk, body).items
    except ValidationFailed:  # an item not shaped like an event, or a bad envelope: this tells which
        items = _bulk_items(body)
    if not 1 <= len(items) <= max_items:
        raise ValidationFailed.of([_error("body.items", f"Must hold 1..{max_items} items", "value_error")])
    events: list[NewEvent | ValidationFailed | PayloadTooLarge] = []
    for index, item in enumerate(items):
        at = f"body.items.{index}"
        try:
            parsed = item if isinstance(item, _Body) else _decode(_decode_body, bytes(item), at)
            events.append(_event(parsed, max_payload_bytes, at))
        except (ValidationFailed, PayloadTooLarge) as exc:
            events.append(exc)
    return events


def _bulk_items(body: bytes) -> list[msgspec.Raw]:
    """The items of a bulk body as raw JSON, each to be checked alone, or 400 for a bad envelope.

    An item nested too deep for the decoder (which gives up at about 1,000 levels) would fail the whole body,
    so then the items are found by scanning the body's brackets instead, and the envelope is decoded with
    each item replaced by ``0``: a deep item fails alone, as a 70-level one does.
    """
    try:
        return _decode(_decode_bulk, body).items
    except ValidationFailed as exc:
        if not isinstance(exc.__cause__, RecursionError):
            raise
    spans = _item_spans(body)
    shallow, last = [], 0
    for start, end in spans:
        shallow += [body[last:start], b"0"]
        last = end
    envelope = _decode(_decode_bulk, b"".join([*shallow, body[last:]]))  # still too deep: outside the items
    if [bytes(item) for item in envelope.items] != [b"0"] * len(spans):  # e.g. "items" twice: never guess
        raise ValidationFailed.of([_error("body", "Malformed JSON", "json_invalid")], "Request body is not valid JSON")
    items = [body[start:end] for start, end in spans]
    for item in items:  # each must be JSON, as in one decoding of the body; only a deep one fails alone
        try:
            _decode(_decode_raw, item)
        except ValidationFailed as exc:
            if not isinstance(exc.__cause__, RecursionError):
                raise
    return [msgspec.Raw(item) for item in items]


_decode_raw = msgspec.json.Decoder(msgspec.Raw).decode


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def _item_spans(body: bytes) -> list[tuple[int, int]]:
    """Where the elements of the body's first array at depth 2 (``{"items": [...]}``) start and end, by scanning
    brackets and commas outside strings; empty elements are left out (so the envelope stays malformed)."""
    spans: list[tuple[int, int]] = []
    depth, start = 0, -1
    for token in _TOKEN.finditer(body):
        char = body[token.start()]
        if char in b"[{":
            depth += 1
            if depth == 2 and char == ord("[") and start < 0:
                start = token.end()
        elif char in b"]}":
            if depth == 2 and start >= 0:
                spans.append((start, token.start()))
                break
            depth -= 1
        elif char == ord(",") and depth == 2 and start >= 0:
            spans.append((start, token.start()))
            start = token.end()
    return [(a, b) for a, b in spans if body[a:b].strip()]


CLOUDEVENTS_JSON = "application/cloudevents+json"
_CE_CORE = ("specversion", "id", "source", "type")
_CE_DROPPED = {"data", "data_base64", "datacontenttype"}  # the payload, and its type (always JSON here)
_CE_NAME = re.compile(r"[a-z0-9]+")
"""What a CloudEvents attribute name may be made of (CloudEvents 1.0, "Attribute Naming Convention")."""
_decode_attributes = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_attribute = msgspec.json.Decoder(float_hook=_metadata_number).decode  # kept in metadata.cloudevents


def _cloudevent(attributes: dict[str, Any], data: bytes | None, max_payload_bytes: int, at: str) -> NewEvent:
    """Map a CloudEvent (API.md §3): source←source, event_type←type, payload←data, idempotency_key←id.

    Other attributes (subject, time, extensions) are kept in ``metadata.cloudevents``.
    """
    errors: list[dict[str, str]] = []
    for name in _CE_CORE:
        value = attributes.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(_error(f"{at}.{name}", "Required non-empty string attribute", "missing"))
    if not errors and attributes["specversion"] != "1.0":
        errors.append(_error(f"{at}.specversion", "Only CloudEvents 1.0 is supported", "value_error"))
    if "time" in attributes and not _rfc3339(attributes["time"]):
        errors.append(_error(f"{at}.time", "Must be an RFC 3339 timestamp with an offset", "value_error"))
    datacontenttype = attributes.get("datacontenttype")
    if isinstance(datacontenttype, str) and not media_type(datacontenttype).endswith("json"):
        raise UnsupportedMediaType("CloudEvent data must be JSON", {"datacontenttype": datacontenttype})
    if errors:
        raise ValidationFailed.of(errors)
    extra = {k: v for k, v in attributes.items() if k not in _CE_CORE and k not in _CE_DROPPED}
    metadata = {"idempotency_key": attributes["id"], **({"cloudevents": extra} if extra else {})}
    body = msgspec.json.encode(
        {
            "source": attributes["source"],
            "event_type": attributes["type"],
            "payload": msgspec.Raw(data) if data else None,
            "metadata": metadata,
        }
    )
    try:
        return parse_event(body, max_payload_bytes, at)
    except ValidationFailed as exc:
        for error in exc.details["validation_errors"]:  # name the CloudEvent attribute, not our field
            error["field"] = (
                error["field"].replace(f"{at}.payload", f"{at}.data").replace(f"{at}.event_type", f"{at}.type")
            )
        raise


def _rfc3339(value: Any) -> bool:
    try:
        return isinstance(value, str) and msgspec.convert(value, datetime).tzinfo is not None
    except msgspec.ValidationError:
        return False


def parse_structured_cloudevent(body: bytes, max_payload_bytes: int) -> NewEvent:
    """``Content-Type: application/cloudevents+json``: the whole event in the body."""
    raw = _decode(_decode_attributes, body)
    if "data_base64" in raw:
        raise UnsupportedMediaType("CloudEvent data must be JSON, not data_base64")
    attributes = {k: _decode(_decode_attribute, bytes(v), f"body.{k}") for k, v in raw.items() if k != "data"}
    data = bytes(raw["data"]) if "data" in raw else None
    return _cloudevent(attributes, data, max_payload_bytes, "body")


def parse_binary_cloudevent(headers: list[tuple[bytes, bytes]], body: bytes, max_payload_bytes: int) -> NewEvent:
    """Binary mode: attributes in ``ce-*`` headers, the data (JSON) is the body.

    Each value is percent-decoded once and must then be UTF-8 (CloudEvents HTTP binding 1.0.2, 3.1.3.2); a ``%``
    not followed by two hex digits stays as it is, as senders that do not encode (the Python SDK) write it. An
    attribute given twice, or a name that is not lowercase letters and digits, is a 400: never a guess.
    """
    attributes: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name, value in headers:
        if not name.startswith(b"ce-"):
            continue
        attribute = name[3:].decode("latin-1")
        at = f"header.{attribute}"
        if not _CE_NAME.fullmatch(attribute):
            errors.append(_error(at, "Attribute names are lowercase letters and digits", "value_error"))
        elif attribute in attributes:
            errors.append(_error(at, "Given more than once", "value_error"))
        else:
            try:
                attributes[attribute] = urllib.parse.unquote_to_bytes(value.strip()).decode()
            except UnicodeDecodeError:
                errors.append(_error(at, "Not UTF-8 once percent-decoded", "value_error"))
    if errors:
        raise ValidationFailed.of(errors)
    _decode(msgspec.json.decode, body)
    return _cloudevent(attributes, body, max_payload_bytes, "header")
