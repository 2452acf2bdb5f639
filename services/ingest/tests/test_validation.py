import hashlib

import msgspec
import pytest
from triggers_common.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from triggers_common.http import require_json
from triggers_common.models import new_event_ids
from triggers_ingest.publish import to_record
from triggers_ingest.routes import traceparent
from triggers_ingest.validation import (
    MAX_DECIMAL_PLACES,
    NewEvent,
    body_hash,
    idempotency_header,
    no_idempotency_header,
    parse_bulk,
    parse_event,
    parse_structured_cloudevent,
    request_hash,
)

LIMIT = 409_600


def errors(body: bytes) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(body, LIMIT)
    result: list[dict[str, str]] = caught.value.details["validation_errors"]
    return result


def test_valid_event_is_trimmed_and_compacted() -> None:
    event = parse_event(
        b'{"source":" shop ","event_type":"a.b","payload":{ "x" : 1.0 },"metadata":{"priority":"high"}}', LIMIT
    )
    assert (event.source, event.event_type) == ("shop", "a.b")
    assert event.payload == b'{"x":1.0}'
    assert event.metadata == b'{"priority":"high"}'


def test_null_metadata_and_idempotency_key() -> None:
    assert parse_event(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":null}', LIMIT).metadata is None
    keyed = parse_event(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"idempotency_key":"k1"}}', LIMIT)
    assert keyed.idempotency_key == "k1"


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        (b'{"source":1,"event_type":"t","payload":{"a":1}}', "body.source", "type_error"),
        (b'{"source":"s","event_type":"t","payload":{"a":1},"x":1}', "body.x", "extra_forbidden"),
        (b'{"event_type":"t","payload":{"a":1}}', "body.source", "missing"),
        (b'{"source":"s","event_type":"t","payload":{}}', "body.payload", "value_error"),
        (b'{"source":"s","event_type":"t","payload":[1]}', "body.payload", "type_error"),
        (b'{"source":" ","event_type":"t","payload":{"a":1}}', "body.source", "value_error"),
        (
            b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"priority":"p"}}',
            "body.metadata.priority",
            "value_error",
        ),
        (b"[]", "body", "type_error"),
        (b'{"source":', "body", "json_invalid"),
    ],
)
def test_each_problem_names_its_field(body: bytes, field: str, kind: str) -> None:
    assert [(e["field"], e["type"]) for e in errors(body)] == [(field, kind)]


def test_all_semantic_problems_are_reported_together() -> None:
    found = errors(b'{"source":"","event_type":" ","payload":{},"metadata":{"priority":1,"correlation_id":2}}')
    assert [e["field"] for e in found] == [
        "body.source",
        "body.event_type",
        "body.payload",
        "body.metadata.priority",
        "body.metadata.correlation_id",
    ]


def test_payload_limit_counts_the_compact_encoding() -> None:
    at_limit = b'{"source":"s","event_type":"t","payload":{"b":"' + b"x" * (LIMIT - 8) + b'"}}'
    assert len(parse_event(at_limit, LIMIT).payload) == LIMIT
    with pytest.raises(PayloadTooLarge) as caught:
        parse_event(at_limit.replace(b'"b"', b'"bb"'), LIMIT)
    assert caught.value.details == {"limit_bytes": LIMIT, "actual_bytes": LIMIT + 1}


def test_content_type_must_be_json() -> None:
    require_json("application/json")
    require_json("Application/JSON; charset=utf-8")
    for bad in (None, "text/plain", "application/jsonx"):
        with pytest.raises(UnsupportedMediaType):
            require_json(bad)


def test_record_and_cloudevents_headers() -> None:
    event = parse_event(b'{"source":"s","event_type":"t","payload":{"a":1}}', LIMIT)
    record, headers = to_record(event, "acme", *new_event_ids(1)[0])
    assert record.tenant_id == "acme" and record.status == "pending" and record.acknowledged_at is None
    assert bytes(msgspec.json.encode(record)).count(b'"payload":{"a":1}') == 1
    names = dict(headers)
    assert names["ce_id"] == record.event_id.encode() and names["ce_specversion"] == b"1.0"


def test_traceparent_continues_or_starts_a_trace() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    continued = traceparent({"headers": [(b"traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode())]})
    assert continued.startswith(f"00-{trace}-".encode()) and continued.endswith(b"-01")
    fresh = traceparent({"headers": []})
    assert len(fresh) == 55 and fresh != traceparent({"headers": []})
    for garbage in (
        f"00-{'Z' * 32}-00f067aa0ba902b7-01",  # not hex
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # the all-zero trace id is invalid
        f"ff-{trace}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{trace.upper()}-00f067aa0ba902b7-01",  # upper case is not allowed
        f"00_{trace}_00f067aa0ba902b7_01",
        f"00-{trace}-{'0' * 16}-01",  # so is the all-zero parent id
        f"00-{trace}-00f067aa0ba902b7-01-more",  # version 00 has nothing after the flags
    ):
        started = traceparent({"headers": [(b"traceparent", garbage.encode())]})
        assert trace not in started.decode().lower() and started.endswith(b"-00"), garbage  # a new trace
    # a later version is read by version 00's rules; only the sampled flag goes on
    for incoming, flags in (
        (f"01-{trace}-00f067aa0ba902b7-01-whatever", b"-01"),
        (f"00-{trace}-00f067aa0ba902b7-ff", b"-01"),
        (f"00-{trace}-00f067aa0ba902b7-02", b"-00"),
    ):
        continued = traceparent({"headers": [(b"traceparent", incoming.encode())]})
        assert continued.startswith(f"00-{trace}-".encode()) and continued.endswith(flags), incoming


def test_bulk_items_report_their_index() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(b'{"source":"","event_type":"t","payload":{"a":1}}', LIMIT, "body.items.7")
    assert caught.value.details["validation_errors"][0]["field"] == "body.items.7.source"
    for envelope in (b'{"items":[]}', b'{"items":{}}', b'{"things":[{}]}', b"[]"):
        with pytest.raises(ValidationFailed):
            parse_bulk(envelope, 1000, LIMIT)
    with pytest.raises(ValidationFailed):
        parse_bulk(b'{"items":[' + b",".join([b"{}"] * 3) + b"]}", 2, LIMIT)
    assert len(parse_bulk(b'{"items":[1,{"a":2}]}', 2, LIMIT)) == 2


def test_metadata_must_be_an_object_whose_numbers_a_reader_can_hold() -> None:
    places = f"Number needs more than {MAX_DECIMAL_PLACES} digits after the decimal point"
    cases = {
        b"[1]": ("Expected 'object' or null", "type_error"),
        b'{"x":1e400}': ("Number out of range", "value_error"),
        b'{"x":-1E+309}': ("Number out of range", "value_error"),
        b'{"x":1e-' + b"9" * 5000 + b"}": (places, "value_error"),
        b'{"x":0e1073741823}': ("Number out of range", "value_error"),  # Postgres's own bound on the exponent
        b'{"x":-0E+' + b"9" * 30 + b"}": ("Number out of range", "value_error"),
        b'{"x":[1' + b"0" * 309 + b"]}": ("Number out of range", "value_error"),  # an integer, not a float
        # Postgres's jsonb, where metadata is stored, holds at most 16383 digits after the decimal point: these
        # would be accepted and then refused by the inbox (a double reads the first two as 0.0)
        b'{"x":1e-16384}': (places, "value_error"),
        b'{"x":{"y":[0.0e-16383]}}': (places, "value_error"),
        b'{"x":0.' + b"0" * 16383 + b"1}": (places, "value_error"),
    }
    for metadata, (message, kind) in cases.items():
        with pytest.raises(ValidationFailed) as caught:
            parse_event(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":' + metadata + b"}", LIMIT)
        error = {"field": "body.metadata", "message": message, "type": kind}
        assert caught.value.details["validation_errors"] == [error]
    for fine in (
        b'{"x":0e1073741822,"y":1.5e0' + b"0" * 5000 + b'1,"z":"' + b"9" * 400 + b'"}',
        b'{"x":-1' + b"0" * 308 + b"}",
        b'{"x":1e-16383}',
        b'{"x":0.' + b"0" * 16382 + b"1}",
        b'{"x":1.5e308,"y":-0.0,"z":1' + b"0" * 300 + b"}",
    ):
        assert parse_event(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":' + fine + b"}", LIMIT)


def test_bulk_items_are_checked_like_single_events() -> None:
    items = [
        b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"idempotency_key":"k","priority":"high"}}',
        b'{"source":" ","event_type":"t","payload":{"a":1}}',
        b'{"source":"s","event_type":"t","payload":[1]}',
        b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"priority":"urgent","idempotency_key":7}}',
        b'{"source":"s","event_type":"t","payload":{"big":"' + b"x" * LIMIT + b'"}}',
        b'{ "source" : "s" , "event_type" : "t" , "payload" : { "a" : [ 1 , 2 ] } }',
    ]

    def outcome(result: object) -> object:
        return result.details if isinstance(result, ValidationFailed | PayloadTooLarge) else result

    def expected(item: bytes, index: int) -> object:
        try:
            return parse_event(item, LIMIT, f"body.items.{index}")
        except (ValidationFailed, PayloadTooLarge) as exc:
            return exc.details

    # every item has the shape of an event (decoded in one pass), then one that has not (each item alone)
    for extra in ([], [b'{"source":"s"}', b"[1]"]):
        bulk = b'{"items":[' + b",".join(items + extra) + b"]}"
        results = [outcome(r) for r in parse_bulk(bulk, 1000, LIMIT)]
        assert results == [expected(item, i) for i, item in enumerate(items + extra)]
    assert isinstance(parse_bulk(b'{"items":[' + b",".join(items) + b"]}", 1000, LIMIT)[0], NewEvent)


def test_a_bulk_item_too_deep_for_the_decoder_fails_alone() -> None:
    deep = b'{"source":"s","event_type":"t","payload":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    items = [
        b'{"source":"s","event_type":"t","payload":{"brackets":"[[{{,]]","esc":"\\"]"}}',
        deep,
        b' { "source" : "s", "event_type" : "t", "payload" : { "a" : [ [ 1 ] , { } ] } } ',
        b'{"source":"s"}',
    ]
    results = parse_bulk(b'{ "items" : [' + b",".join(items) + b"] }", 1000, LIMIT)
    assert len(results) == 4
    for index, (result, item) in enumerate(zip(results, items, strict=True)):
        try:
            alone: object = parse_event(item, LIMIT, f"body.items.{index}")
        except ValidationFailed as exc:
            alone = exc.details
        assert (result.details if isinstance(result, ValidationFailed) else result) == alone
    assert isinstance(results[0], NewEvent) and isinstance(results[2], NewEvent)
    message = results[1].details["validation_errors"][0]["message"]  # type: ignore[union-attr]
    assert message == "JSON nested deeper than 64 levels"

    # too deep outside the items, or a body that is not JSON anyway: the whole request is refused, as it is
    # without the deep item
    good = b'{"source":"s","event_type":"t","payload":{"a":1}}'
    for body in (
        b'{"items":[' + deep + b',"x\\\n,' + good + b',"]}',
        b'{"items":[' + deep + b"," + good + b" x]}",
        b'{"items":[' + deep + b"," + good + b'],"items":[1,2]}',
        b'{"items":[' + deep + b"," + good + b",]}",
        b'{"items":[{"source":"s","event_type":"t","payload":{"a":1}}],"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"items":[' + deep + b",," + deep + b"]}",
        b'{"items":[' + deep + b"]",
        b'{"things":[' + deep + b"]}",
    ):
        with pytest.raises(ValidationFailed):
            parse_bulk(body, 1000, LIMIT)
    with pytest.raises(ValidationFailed):
        parse_bulk(b'{"items":[' + b",".join([deep] * 3) + b"]}", 2, LIMIT)


def test_idempotency_header_and_request_hash() -> None:
    base = parse_event(b'{"source":"s","event_type":"t","payload":{"a":1}}', LIMIT)
    keyed = idempotency_header("k-1", base)
    assert keyed.idempotency_key == "k-1" and idempotency_header(None, base) is base
    with pytest.raises(ValidationFailed):
        idempotency_header("x" * 256, base)
    in_body = parse_event(
        b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"idempotency_key":"a"}}', LIMIT
    )
    with pytest.raises(ValidationFailed):
        idempotency_header("b", in_body)
    spaced = parse_event(b'{ "source":"s", "event_type":"t", "payload": { "a" : 1 } }', LIMIT)
    assert request_hash(spaced) == request_hash(base)
    assert request_hash(parse_event(b'{"source":"s","event_type":"t","payload":{"a":2}}', LIMIT)) != request_hash(base)
    # a key sent in UTF-8 reads as the same key in the body
    utf8 = parse_event(
        '{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"idempotency_key":"ключ"}}'.encode(), LIMIT
    )
    assert idempotency_header("ключ".encode().decode("latin-1"), utf8).idempotency_key == "ключ"
    assert idempotency_header("caf\xe9", base).idempotency_key == "caf\xe9"  # not UTF-8: taken as latin-1
    no_idempotency_header(None)
    with pytest.raises(ValidationFailed):
        no_idempotency_header("k")


def test_cloudevent_attributes_obey_the_metadata_number_rules() -> None:
    base = b'{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"a":1},"ext":'
    for value in (b"1e400", b"1e-16384"):
        with pytest.raises(ValidationFailed) as caught:
            parse_structured_cloudevent(base + value + b"}", LIMIT)
        assert caught.value.details["validation_errors"][0]["field"] == "body.ext"
    assert (
        parse_structured_cloudevent(base + b"1.5}", LIMIT).metadata
        == b'{"idempotency_key":"1","cloudevents":{"ext":1.5}}'
    )


def test_the_same_body_is_the_same_event_however_its_json_is_spelled() -> None:
    def event(payload: bytes, metadata: bytes = b'{"idempotency_key":"k","m":{"b":1,"a":"x"}}') -> NewEvent:
        return parse_event(
            b'{"source":"s","event_type":"t","payload":' + payload + b',"metadata":' + metadata + b"}", LIMIT
        )

    base = event(b'{"a":1,"b":{"c":"\xc3\xa9","d":[1.50,true,null]}}')
    same = [
        event(b'{"b":{"d":[1.50,true,null],"c":"\\u00e9"},"a":1}'),  # keys reordered, the string escaped
        event(
            b'{"\\u0061":1,"b":{"c":"\xc3\xa9","d":[1.50,true,null]}}', b'{"m":{"a":"x","b":1},"idempotency_key":"k"}'
        ),
    ]
    different = [
        event(b'{"a":1,"b":{"c":"\xc3\xa9","d":[1.5,true,null]}}'),  # numbers compare as written
        event(b'{"a":1,"b":{"c":"\xc3\xa9","d":[true,1.50,null]}}'),  # arrays keep their order
        event(b'{"a":1,"b":{"c":"\xc3\xa9","d":[1.50,true,null]}}', b'{"idempotency_key":"k","m":{"b":2,"a":"x"}}'),
    ]
    assert all(body_hash(e) == body_hash(base) for e in same)
    assert all(body_hash(e) != body_hash(base) for e in different)
    # beside it, the previous rule (the compact JSON as sent), which replicas of the previous version compare
    assert all(request_hash(e) != request_hash(base) for e in same)
    assert request_hash(base) == hashlib.sha256(b"\x00".join([b"s", b"t", base.payload, base.metadata or b""])).digest()


def test_nul_characters_are_refused_where_postgres_cannot_store_them() -> None:
    found = errors(
        b'{"source":"a\\u0000b","event_type":"t","payload":{"a":1},"metadata":{"idempotency_key":"k\\u0000"}}'
    )
    assert [e["field"] for e in found] == ["body.source", "body.metadata", "body.metadata.idempotency_key"]
    base = parse_event(b'{"source":"s","event_type":"t","payload":{"a":"\\u0000 is fine here"}}', LIMIT)
    # a backslash then the text "u0000" is no NUL; an escaped backslash then a NUL is one
    text = parse_event(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"x":"\\\\u0000"}}', LIMIT)
    assert text.metadata == b'{"x":"\\\\u0000"}'
    assert errors(b'{"source":"s","event_type":"t","payload":{"a":1},"metadata":{"x":"\\\\\\u0000"}}')[0] == {
        "field": "body.metadata",
        "message": "Must not contain \\u0000",
        "type": "value_error",
    }
    with pytest.raises(ValidationFailed):
        idempotency_header("k\x00", base)
