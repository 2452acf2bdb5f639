"""CloudEvents in, sent by the official CloudEvents Python SDK, in structured and binary mode."""

from __future__ import annotations

import httpx
import pytest
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent

pytestmark = pytest.mark.e2e


def cloud_event(**attributes: str) -> CloudEvent:
    base = {"type": "com.example.order.created", "source": "/shop/orders", "id": "ce-1", "subject": "order-42"}
    return CloudEvent({**base, **attributes}, {"order_id": 42, "total": 19.99})


@pytest.mark.parametrize("mode", [to_structured, to_binary], ids=["structured", "binary"])
async def test_cloudevent_is_ingested_and_mapped(client: httpx.AsyncClient, tenant_key: str, mode: object) -> None:
    headers, body = mode(cloud_event(id=f"ce-{mode.__name__}"))  # type: ignore[operator]
    response = await client.post("/v1/events", content=body, headers={**headers, "X-API-Key": tenant_key})
    assert response.status_code == 201, response.text
    event = (await client.get(f"/v1/events/{response.json()['event_id']}", headers={"X-API-Key": tenant_key})).json()
    assert event["source"] == "/shop/orders"
    assert event["event_type"] == "com.example.order.created"
    assert event["payload"] == {"order_id": 42, "total": 19.99}
    assert event["metadata"]["idempotency_key"] == f"ce-{mode.__name__}"
    assert event["metadata"]["cloudevents"]["subject"] == "order-42"

    # the CloudEvent id is the idempotency key: the same event sent again is not a second event
    again = await client.post("/v1/events", content=body, headers={**headers, "X-API-Key": tenant_key})
    assert again.json()["event_id"] == response.json()["event_id"]
    assert again.headers["idempotent-replayed"] == "true"


async def test_bad_cloudevents(client: httpx.AsyncClient) -> None:
    structured = {"Content-Type": "application/cloudevents+json"}
    cases = [
        (b'{"specversion":"0.3","id":"1","source":"s","type":"t","data":{"a":1}}', "body.specversion"),
        (b'{"specversion":"1.0","source":"s","type":"t","data":{"a":1}}', "body.id"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"t"}', "body.data"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":" ","data":{"a":1}}', "body.type"),
    ]
    for body, field in cases:
        response = await client.post("/v1/events", content=body, headers=structured)
        assert response.status_code == 400, body
        assert field in {e["field"] for e in response.json()["error"]["details"]["validation_errors"]}
    assert (await client.post("/v1/events", content=b"{", headers=structured)).status_code == 400
    b64 = b'{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAAA"}'
    assert (await client.post("/v1/events", content=b64, headers=structured)).status_code == 415

    binary = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "s"}  # no ce-type
    missing = await client.post("/v1/events", content=b'{"a":1}', headers=binary)
    assert missing.status_code == 400
    assert missing.json()["error"]["details"]["validation_errors"][0]["field"] == "header.type"
    xml = await client.post(
        "/v1/events", content=b"<a/>", headers={**binary, "ce-type": "t", "Content-Type": "application/xml"}
    )
    assert xml.status_code == 415


async def test_binary_mode_headers_are_decoded_as_the_http_binding_says(
    client: httpx.AsyncClient, tenant_key: str
) -> None:
    auth = {"X-API-Key": tenant_key, "Content-Type": "application/json"}
    core = [(b"ce-specversion", b"1.0"), (b"ce-source", b"/sh%C3%B6p"), (b"ce-type", b"order.paid")]

    async def post(*extra: tuple[bytes, bytes]) -> httpx.Response:
        headers = [(k.encode(), v.encode()) for k, v in auth.items()] + core + list(extra)
        return await client.post("/v1/events", content=b'{"n":1}', headers=headers)

    binary = await post((b"ce-id", b"evt%20T"), (b"ce-dataschema", b"https://example.com/s"))
    assert binary.status_code == 201, binary.text
    stored = (await client.get(f"/v1/events/{binary.json()['event_id']}", headers={"X-API-Key": tenant_key})).json()
    assert stored["source"] == "/shöp" and stored["metadata"]["idempotency_key"] == "evt T"
    assert stored["metadata"]["cloudevents"] == {"dataschema": "https://example.com/s"}
    # the same CloudEvent in structured mode is the same event
    structured = b'{"specversion":"1.0","id":"evt T","source":"/sh\\u00f6p","type":"order.paid","data":{"n":1},'
    structured += b'"dataschema":"https://example.com/s"}'
    again = await client.post(
        "/v1/events",
        content=structured,
        headers={"X-API-Key": tenant_key, "Content-Type": "application/cloudevents+json"},
    )
    assert again.status_code == 201 and again.json()["event_id"] == binary.json()["event_id"]

    refused = {
        "header.id": [(b"ce-id", b"evt-\xff")],  # not UTF-8: refused, never replaced by U+FFFD
        "header.time": [(b"ce-id", b"t-1"), (b"ce-time", b"yesterday")],
        "header.my_ext": [(b"ce-id", b"t-2"), (b"ce-my_ext", b"x")],
        "header.source": [(b"ce-id", b"t-3"), (b"ce-source", b"/other")],  # given twice
    }
    for field, extra in refused.items():
        response = await post(*extra)
        assert response.status_code == 400, field
        assert field in {e["field"] for e in response.json()["error"]["details"]["validation_errors"]}
    late = b'{"specversion":"1.0","id":"t-4","source":"s","type":"t","time":"2026-13-45T99:00:00Z","data":{"a":1}}'
    bad_time = await client.post(
        "/v1/events", content=late, headers={"X-API-Key": tenant_key, "Content-Type": "application/cloudevents+json"}
    )
    assert bad_time.status_code == 400
    inbox = (await client.get("/v1/inbox", headers={"X-API-Key": tenant_key})).json()["events"]
    assert [e["event_id"] for e in inbox] == [binary.json()["event_id"]]  # the refusals changed nothing
