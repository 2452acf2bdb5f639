"""Idempotency keys (one event per key, across replicas) and the bulk endpoint's partial success."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import msgspec
import pytest

from tests.support import Server, event, wait_until

pytestmark = pytest.mark.e2e


async def pending(client: httpx.AsyncClient, key: str) -> list[dict[str, object]]:
    events: list[dict[str, object]] = (
        await client.get("/v1/inbox", params={"limit": "100"}, headers={"X-API-Key": key})
    ).json()["events"]
    return events


async def visible(client: httpx.AsyncClient, key: str, event_id: str) -> None:
    assert (await client.get(f"/v1/events/{event_id}", headers={"X-API-Key": key})).status_code == 200


async def test_same_key_same_body_replays_the_original(client: httpx.AsyncClient, tenant_key: str) -> None:
    auth = {"X-API-Key": tenant_key}
    first = await client.post("/v1/events", json=event(metadata={"idempotency_key": "order-1"}), headers=auth)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # same body, different JSON spelling: still the same request
    raw = b'{ "payload": {"order_id": 1}, "event_type": "order.created", "source": "shop",\n'
    raw += b' "metadata": {"idempotency_key": "order-1"} }'
    again = await client.post("/v1/events", content=raw, headers={**auth, "Content-Type": "application/json"})
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert (again.json()["event_id"], again.json()["created_at"]) == (
        first.json()["event_id"],
        first.json()["created_at"],
    )

    via_header = {**auth, "Idempotency-Key": "order-2"}
    a = await client.post("/v1/events", json=event(payload={"n": 2}), headers=via_header)
    b = await client.post("/v1/events", json=event(payload={"n": 2}), headers=via_header)
    assert a.status_code == b.status_code == 201 and a.json()["event_id"] == b.json()["event_id"]
    assert b.headers["idempotent-replayed"] == "true"

    marker = await client.post("/v1/events", json=event(payload={"marker": True}), headers=auth)
    await visible(client, tenant_key, marker.json()["event_id"])
    ids = [e["event_id"] for e in await pending(client, tenant_key)]
    assert ids == [first.json()["event_id"], a.json()["event_id"], marker.json()["event_id"]]


async def test_the_same_body_spelled_another_way_is_a_repeat(client: httpx.AsyncClient, tenant_key: str) -> None:
    headers = {"X-API-Key": tenant_key, "Content-Type": "application/json"}
    first = b'{"source":"shop","event_type":"t","payload":{"a":1,"b":{"c":"\xc3\xa9","d":[1.5]}},'
    first += b'"metadata":{"idempotency_key":"spelled","x":{"p":1,"q":2}}}'
    again = b'{"source":"shop","event_type":"t","payload":{"b":{"d":[1.5],"c":"\\u00e9"},"\\u0061":1},'
    again += b'"metadata":{"x":{"q":2,"p":1},"idempotency_key":"spelled"}}'
    a = await client.post("/v1/events", content=first, headers=headers)
    b = await client.post("/v1/events", content=again, headers=headers)
    assert a.status_code == b.status_code == 201, b.text
    assert b.json()["event_id"] == a.json()["event_id"] and b.headers["idempotent-replayed"] == "true"

    # a key sent as UTF-8 in the header is the same key as in the body
    utf8 = {**headers, "Idempotency-Key": "заказ-7".encode()}
    body = msgspec.json.encode(event(payload={"n": 7}, metadata={"idempotency_key": "заказ-7"}))
    c = await client.post("/v1/events", content=body, headers=utf8)
    d = await client.post("/v1/events", content=body, headers=utf8)
    assert c.status_code == 201, c.text  # not 400 "differs from metadata.idempotency_key"
    assert d.status_code == 201 and d.json()["event_id"] == c.json()["event_id"]

    marker = await client.post("/v1/events", json=event(payload={"marker": True}), headers={"X-API-Key": tenant_key})
    await visible(client, tenant_key, marker.json()["event_id"])
    assert [e["event_id"] for e in await pending(client, tenant_key)] == [
        a.json()["event_id"],
        c.json()["event_id"],
        marker.json()["event_id"],
    ]


async def test_same_key_different_body_is_422(client: httpx.AsyncClient, tenant_key: str) -> None:
    auth = {"X-API-Key": tenant_key, "Idempotency-Key": "k"}
    assert (await client.post("/v1/events", json=event(payload={"v": 1}), headers=auth)).status_code == 201
    reused = await client.post("/v1/events", json=event(payload={"v": 2}), headers=auth)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert reused.json()["error"]["details"] == {"idempotency_key": "k"}


async def test_keys_are_per_tenant(client: httpx.AsyncClient, tenant_key: str) -> None:
    shared = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    mine = await client.post("/v1/events", json=event(), headers={**shared, "X-API-Key": tenant_key})
    theirs = await client.post("/v1/events", json=event(payload={"other": 1}), headers=shared)  # dev tenant
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["event_id"] != theirs.json()["event_id"] and "idempotent-replayed" not in theirs.headers


async def test_concurrent_requests_on_two_replicas_make_one_event(replicas: list[Server], tenant_key: str) -> None:
    body = msgspec.json.encode(event(payload={"race": True}, metadata={"idempotency_key": "race-1"}))
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in replicas]
    headers = {"X-API-Key": tenant_key, "Content-Type": "application/json"}
    try:
        responses = await asyncio.gather(
            *(clients[i % 2].post("/v1/events", content=body, headers=headers) for i in range(30))
        )
    finally:
        for c in clients:
            await c.aclose()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1
    winners = {r.json()["event_id"] for r in responses if r.status_code == 201}
    assert len(winners) == 1
    for loser in (r for r in responses if r.status_code == 409):
        assert loser.json()["error"]["code"] == "CONFLICT"
        assert loser.json()["error"]["details"]["event_id"] in winners


async def test_a_repeat_on_another_replica_gets_the_original_answer(replicas: list[Server], tenant_key: str) -> None:
    """A finished key is marked done in Postgres a few milliseconds after its 201 (with the other keys finished
    meanwhile): until then another replica answers 409 "in flight", then the original event, never a new one."""
    body = msgspec.json.encode(event(payload={"hop": True}, metadata={"idempotency_key": f"hop-{uuid.uuid4()}"}))
    headers = {"X-API-Key": tenant_key, "Content-Type": "application/json"}
    first_replica, other = (httpx.AsyncClient(base_url=s.url, timeout=30) for s in replicas)
    try:
        first = await first_replica.post("/v1/events", content=body, headers=headers)
        assert first.status_code == 201
        answers = []

        async def replayed() -> bool:
            answer = await other.post("/v1/events", content=body, headers=headers)
            answers.append(answer)
            return answer.status_code == 201

        await wait_until(replayed, timeout=5, what="the other replica to answer the repeat")
    finally:
        await first_replica.aclose()
        await other.aclose()
    assert all(a.status_code == 409 for a in answers[:-1])
    assert answers[-1].headers["idempotent-replayed"] == "true"
    assert answers[-1].json()["event_id"] == first.json()["event_id"]


async def test_bulk_partial_success(client: httpx.AsyncClient, tenant_key: str) -> None:
    items = [
        event(payload={"i": 0}),
        event(source=" "),
        event(payload={"i": 2}, metadata={"idempotency_key": "bulk-2"}),
        {"source": "s"},
        event(payload={"blob": "x" * 409_600}),
        event(payload={"i": 5}),
        "DEEP",  # nested 2,000 levels: more than the JSON decoder itself goes, still this item's failure alone
    ]
    deep = b'{"source":"s","event_type":"t","payload":{"x":' + b"[" * 2000 + b"]" * 2000 + b"}}"
    raw = msgspec.json.encode({"items": items}).replace(b'"DEEP"', deep)
    response = await client.post(
        "/v1/events/bulk", content=raw, headers={"X-API-Key": tenant_key, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["successful"]) == 3 and body["request_id"] == response.headers["x-request-id"]
    assert [f["index"] for f in body["failed"]] == [1, 3, 4, 6]
    assert body["failed"][3]["error"]["details"]["validation_errors"][0]["field"] == "body.items.6"
    assert body["failed"][0]["error"]["code"] == "VALIDATION_ERROR"
    assert body["failed"][0]["error"]["details"]["validation_errors"][0]["field"] == "body.items.1.source"
    assert body["failed"][1]["error"]["details"]["validation_errors"][0]["field"] == "body.items.3.event_type"
    assert body["failed"][2]["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert all(s["status"] == "pending" and s["message"] == "Event ingested successfully" for s in body["successful"])

    await visible(client, tenant_key, body["successful"][-1]["event_id"])
    stored = await pending(client, tenant_key)
    assert [e["payload"] for e in stored] == [{"i": 0}, {"i": 2}, {"i": 5}]

    # the keyed item is replayed on a resend; the others are new events
    again = (await client.post("/v1/events/bulk", json={"items": [items[2]]}, headers={"X-API-Key": tenant_key})).json()
    assert again["successful"][0]["event_id"] == body["successful"][1]["event_id"]
    assert again["successful"][0]["replayed"] is True


async def test_bulk_envelope_errors(client: httpx.AsyncClient) -> None:
    for envelope in ({"items": []}, {"items": "x"}, {"records": [event()]}, [event()]):
        response = await client.post("/v1/events/bulk", json=envelope)
        assert response.status_code == 400 and response.json()["error"]["code"] == "VALIDATION_ERROR"
    too_many = await client.post("/v1/events/bulk", json={"items": [event()] * 1001})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["details"]["validation_errors"][0]["field"] == "body.items"
    huge = (
        b'{"items":['
        + b",".join([b'{"source":"s","event_type":"t","payload":{"b":"' + b"x" * 300_000 + b'"}}'] * 36)
        + b"]}"
    )
    assert len(huge) > 10 * 1024 * 1024
    over = await client.post("/v1/events/bulk", content=huge, headers={"Content-Type": "application/json"})
    assert over.status_code == 413 and over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert (
        await client.post("/v1/events/bulk", content=b"{", headers={"Content-Type": "application/json"})
    ).status_code == 400
    assert (
        await client.post("/v1/events/bulk", content=b"{}", headers={"Content-Type": "text/plain"})
    ).status_code == 415
    # keys are per item: a key for the whole request would go unused, so it is refused, not ignored
    keyed = await client.post("/v1/events/bulk", json={"items": [event()]}, headers={"Idempotency-Key": "whole"})
    assert keyed.status_code == 400
    assert keyed.json()["error"]["details"]["validation_errors"][0]["field"] == "header.Idempotency-Key"


async def test_bulk_keys_new_repeated_replayed_and_reused(client: httpx.AsyncClient, tenant_key: str) -> None:
    auth = {"X-API-Key": tenant_key}
    tag = uuid.uuid4().hex
    done = event(payload={"n": "done"}, metadata={"idempotency_key": f"done-{tag}"})
    first = await client.post("/v1/events", json=done, headers=auth)
    assert first.status_code == 201
    items = [
        event(payload={"n": 0}, metadata={"idempotency_key": f"new-{tag}"}),
        done,
        event(payload={"n": "other"}, metadata={"idempotency_key": f"done-{tag}"}),
        event(payload={"n": 0}, metadata={"idempotency_key": f"new-{tag}"}),
        event(payload={"n": 4}, metadata={"idempotency_key": f"also-new-{tag}"}),
        event(payload={"n": 5}, metadata={"idempotency_key": f"new-{tag}"}),
    ]
    response = await client.post("/v1/events/bulk", json={"items": items}, headers=auth)
    assert response.status_code == 201, response.text
    body = response.json()
    new, replayed, twin, also_new = body["successful"]  # items 0, 1, 3 and 4, in order
    assert replayed["event_id"] == first.json()["event_id"] and replayed["replayed"] is True
    assert new["replayed"] is False and also_new["replayed"] is False
    # item 3 repeats item 0 (same key, same body): item 0's event, not a second one
    assert (twin["event_id"], twin["created_at"], twin["replayed"]) == (new["event_id"], new["created_at"], True)
    failed = {f["index"]: f["error"] for f in body["failed"]}
    assert sorted(failed) == [2, 5]
    assert failed[2]["code"] == failed[5]["code"] == "IDEMPOTENCY_KEY_REUSED"

    await visible(client, tenant_key, also_new["event_id"])
    stored = {e["event_id"]: e["payload"] for e in await pending(client, tenant_key)}  # the tenant is the test's own
    assert stored == {
        first.json()["event_id"]: {"n": "done"},
        new["event_id"]: {"n": 0},
        also_new["event_id"]: {"n": 4},
    }
