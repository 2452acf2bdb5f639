"""The inbox over HTTP: every filter against a brute-force reference, long polling, bulk ack and delete."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from triggers_common.auth import create_key

from tests.support import event

pytestmark = pytest.mark.e2e

PRIORITIES = (None, "low", "normal", "high")


def dataset() -> list[dict[str, Any]]:
    """24 events spread over every filter's values; ``n`` is sometimes the number 5, sometimes the string "5"."""
    items = []
    for i in range(24):
        metadata: dict[str, Any] = {"region": "eu" if i < 12 else "us", "n": [5, "5", i, str(i), None][i % 5]}
        if PRIORITIES[i % 4] is not None:
            metadata["priority"] = PRIORITIES[i % 4]
        items.append(event(source="ab"[i % 2], event_type="xyz"[i % 3], payload={"i": i}, metadata=metadata))
    return items


def matches(stored: dict[str, Any], params: dict[str, str]) -> bool:
    """The reference: what GET /v1/inbox must return, computed by hand."""
    md = stored["metadata"]
    if "source" in params and stored["source"] != params["source"]:
        return False
    if "event_type" in params and stored["event_type"] != params["event_type"]:
        return False
    if "priority" in params and md.get("priority", "normal") != params["priority"]:
        return False
    if "created_after" in params and stored["created_at"] < params["created_after"]:  # same format: sortable
        return False
    if "created_before" in params and stored["created_at"] > params["created_before"]:
        return False
    if "metadata_key" in params:
        value, wanted = md.get(params["metadata_key"], ...), params["metadata_value"]
        if not (value == wanted or (type(value) in (int, float) and str(value) == wanted)):
            return False
    return True


async def all_pages(client: httpx.AsyncClient, key: str, params: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await client.get(
            "/v1/inbox",
            params={**params, "limit": "5", **({"cursor": cursor} if cursor else {})},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 200, (params, response.text)
        page = response.json()
        if page["next_cursor"]:
            assert len(page["events"]) == 5, "a page is never short while more matches exist"
        events += page["events"]
        cursor = page["next_cursor"]
        if not cursor:
            return events


async def test_every_filter_combination_matches_a_brute_force_reference(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    auth = {"X-API-Key": tenant_key}
    posted = await client.post("/v1/events/bulk", json={"items": dataset()}, headers=auth)
    assert posted.status_code == 201 and len(posted.json()["successful"]) == 24
    assert (
        await client.get(f"/v1/events/{posted.json()['successful'][-1]['event_id']}", headers=auth)
    ).status_code == 200
    stored = await all_pages(client, tenant_key, {})
    assert [e["payload"]["i"] for e in stored] == list(range(24))  # oldest first
    t5, t17 = stored[5]["created_at"], stored[17]["created_at"]

    combos = itertools.product(
        ({}, {"source": "a"}),
        ({}, {"event_type": "x"}),
        ({}, *({"priority": p} for p in PRIORITIES[1:])),
        ({}, {"metadata_key": "region", "metadata_value": "eu"}, {"metadata_key": "n", "metadata_value": "5"}),
        ({}, {"created_after": t5}, {"created_before": t17}, {"created_after": t5, "created_before": t17}),
    )
    checked = 0
    for parts in combos:
        params: dict[str, str] = {k: v for part in parts for k, v in part.items()}
        expected = [e["event_id"] for e in stored if matches(e, params)]
        assert [e["event_id"] for e in await all_pages(client, tenant_key, params)] == expected, params
        checked += 1
    assert checked == 192
    # the boundaries are inclusive, and an offset other than Z is the same instant
    same = await all_pages(client, tenant_key, {"created_after": t5, "created_before": t5})
    assert [e["event_id"] for e in same] == [stored[5]["event_id"]]


async def test_long_poll_returns_as_soon_as_a_matching_event_is_persisted(
    client: httpx.AsyncClient, tenant_key: str, pool: object
) -> None:
    auth = {"X-API-Key": tenant_key}
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        other = (await create_key(conn, f"other-{uuid.uuid4().hex[:6]}")).key

    started = time.monotonic()
    empty = await client.get("/v1/inbox", params={"wait": "1"}, headers=auth)
    assert empty.json()["events"] == [] and time.monotonic() - started >= 1.0

    poll = asyncio.create_task(client.get("/v1/inbox", params={"wait": "20", "source": "late"}, headers=auth))
    # neither another tenant's event nor one that does not match ends the wait
    assert (await client.post("/v1/events", json=event(source="late"), headers={"X-API-Key": other})).status_code == 201
    unmatched = (await client.post("/v1/events", json=event(source="early"), headers=auth)).json()["event_id"]
    assert (await client.get(f"/v1/events/{unmatched}", headers=auth)).status_code == 200
    assert not poll.done()
    created = (await client.post("/v1/events", json=event(source="late"), headers=auth)).json()["event_id"]
    response = await asyncio.wait_for(poll, 20)
    assert [e["event_id"] for e in response.json()["events"]] == [created]
    assert time.monotonic() - started < 15


async def post_ids(client: httpx.AsyncClient, key: str, count: int) -> list[str]:
    items = [event(payload={"i": i}) for i in range(count)]
    response = await client.post("/v1/events/bulk", json={"items": items}, headers={"X-API-Key": key})
    return [s["event_id"] for s in response.json()["successful"]]


async def test_bulk_ack_reports_each_id(client: httpx.AsyncClient, tenant_key: str, pool: object) -> None:
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        other = (await create_key(conn, f"other-{uuid.uuid4().hex[:6]}")).key
    mine, theirs = await post_ids(client, tenant_key, 3), await post_ids(client, other, 1)
    unknown = str(uuid.uuid4())
    ids = [mine[0], mine[1], mine[0], "nope", unknown, theirs[0]]  # right after 201: read-your-writes applies
    response = await client.post("/v1/events/bulk/ack", json={"event_ids": ids}, headers={"X-API-Key": tenant_key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["event_id"] for s in body["successful"]] == mine[:2]
    assert all(s["status"] == "acknowledged" and s["acknowledged_at"] for s in body["successful"])
    failed = {f["index"]: f["error"] for f in body["failed"]}
    assert {i: e["code"] for i, e in failed.items()} == {
        2: "CONFLICT",
        3: "VALIDATION_ERROR",
        4: "NOT_FOUND",
        5: "NOT_FOUND",
    }
    assert failed[2]["details"]["acknowledged_at"] == body["successful"][0]["acknowledged_at"]
    assert failed[3]["details"]["validation_errors"][0]["field"] == "body.event_ids.3"

    inbox = (await client.get("/v1/inbox", headers={"X-API-Key": tenant_key})).json()["events"]
    assert [e["event_id"] for e in inbox] == [mine[2]]
    assert (await client.get(f"/v1/events/{theirs[0]}", headers={"X-API-Key": other})).json()["status"] == "pending"
    again = await client.post("/v1/events/bulk/ack", json={"event_ids": [mine[1]]}, headers={"X-API-Key": tenant_key})
    assert again.json()["failed"][0]["error"]["code"] == "CONFLICT" and again.json()["successful"] == []


async def test_bulk_delete_counts_unknown_ids_as_deleted(
    client: httpx.AsyncClient, tenant_key: str, pool: object
) -> None:
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        other = (await create_key(conn, f"other-{uuid.uuid4().hex[:6]}")).key
    mine, theirs = await post_ids(client, tenant_key, 2), await post_ids(client, other, 1)
    ids = [mine[0], str(uuid.uuid4()), 7, theirs[0]]
    response = await client.request(
        "DELETE", "/v1/events/bulk", json={"event_ids": ids}, headers={"X-API-Key": tenant_key}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["event_id"] for s in body["successful"]] == [mine[0], ids[1], theirs[0]]
    assert [f["index"] for f in body["failed"]] == [2]
    assert (await client.get(f"/v1/events/{mine[0]}", headers={"X-API-Key": tenant_key})).status_code == 404
    assert (await client.get(f"/v1/events/{mine[1]}", headers={"X-API-Key": tenant_key})).status_code == 200
    assert (await client.get(f"/v1/events/{theirs[0]}", headers={"X-API-Key": other})).status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{}", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"event_ids": []}', "application/json", 400),
        (b'{"event_ids": "x"}', "application/json", 400),
        (
            b'{"event_ids": [' + b",".join([b'"00000000-0000-0000-0000-000000000000"'] * 1001) + b"]}",
            "application/json",
            400,
        ),
        (b'{"event_ids": [', "application/json", 400),
        (b'{"event_ids": ["00000000-0000-0000-0000-000000000000"]}', "text/plain", 415),
    ],
)
async def test_bulk_envelope_errors_change_nothing(
    client: httpx.AsyncClient, tenant_key: str, content: bytes, content_type: str, status: int
) -> None:
    mine = await post_ids(client, tenant_key, 1)
    for method, path in (("POST", "/v1/events/bulk/ack"), ("DELETE", "/v1/events/bulk")):
        response = await client.request(
            method, path, content=content, headers={"X-API-Key": tenant_key, "Content-Type": content_type}
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert (await client.get(f"/v1/events/{mine[0]}", headers={"X-API-Key": tenant_key})).json()["status"] == "pending"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"created_after": "yesterday"}, 400, "query.created_after"),
        ({"created_before": "2026-13-01T00:00:00Z"}, 400, "query.created_before"),
        (
            {"created_after": "2026-11-25T10:00:00Z", "created_before": "2026-11-25T09:00:00Z"},
            400,
            "query.created_after",
        ),
        ({"metadata_key": "region"}, 400, "query.metadata_key"),
        ({"metadata_value": "eu"}, 400, "query.metadata_key"),
        ({"priority": "urgent"}, 422, "query.priority"),
        ({"wait": "31"}, 422, "query.wait"),
        ({"wait": "soon"}, 422, "query.wait"),
        ({"created_after": "0001-01-01T00:00:00+01:00"}, 400, "query.created_after"),  # before year 1 in UTC
        ({"limit": "\u00b2"}, 422, "query.limit"),  # a superscript two: a digit to str.isdigit, not to int
    ],
)
async def test_bad_filters(client: httpx.AsyncClient, params: dict[str, str], status: int, field: str) -> None:
    response = await client.get("/v1/inbox", params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["details"]["validation_errors"][0]["field"] == field


async def test_an_offset_other_than_z_is_the_same_instant(client: httpx.AsyncClient, tenant_key: str) -> None:
    created = (await post_ids(client, tenant_key, 1))[0]
    at = (await client.get(f"/v1/events/{created}", headers={"X-API-Key": tenant_key})).json()["created_at"]
    shifted = datetime.fromisoformat(at).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert shifted.endswith("+02:00")
    for spelled in (shifted, shifted.replace("+", " ")):  # an unescaped "+" arrives as a space
        page = await client.get(
            "/v1/inbox", params={"created_after": spelled, "created_before": spelled}, headers={"X-API-Key": tenant_key}
        )
        assert [e["event_id"] for e in page.json()["events"]] == [created], spelled
